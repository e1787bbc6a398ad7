"""The ``rpc`` queue type: queues served by a ``multiprocessing.managers``
server on loopback, guarded by an auth key.

The server is started and stopped explicitly::

    server = start_rpc_queue_server()            # 127.0.0.1, a free port, a random key
    desc = server.descriptor("jobs", maxsize=0)  # or QueueDescriptor.create_rpc_queue(...)
    ...                                          # resolve desc in any process
    server.stop()

It runs as a child process (``python -m sage_queue.transport_rpc``: a fresh
interpreter, so it inherits no threads or locks of its parent, Ray's
included, and unlike a ``multiprocessing`` spawn child it never re-imports
the parent's ``__main__``). The child holds every queue, ``queue.Queue``
objects created on demand per ``queue_id``, holding items as the pickles
clients made of them: the server never unpickles (imports) user classes.

The auth key reaches the child through its stdin, never its command line
or environment (both are visible to other users in ``ps``/``/proc``).
Stdin stays open for the server's lifetime: when it closes (``stop()``, or
the parent died, however abruptly) the server shuts down, so no server
outlives its owner.

Clients connect with the key (``multiprocessing``'s HMAC challenge: the key
never crosses the socket) and call the queue's methods through a proxy.
The key travels in descriptor metadata (hex): whoever has the descriptor's
JSON can use the server. ``repr()`` of descriptors and servers hides it,
and this module never logs it. Non-loopback hosts are refused unless
``allow_remote=True``: the protocol is pickle, so the key is all that
stands between the network and code execution in the server process.
"""

from __future__ import annotations

import ipaddress
import multiprocessing
import os
import pickle
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.managers import BaseManager, BaseProxy
from typing import Any, Dict, Iterable, List, Optional, Tuple, cast

from ._lib import ENV_VAR, LIBRARY_PATH
from ._undelivered import decode_each
from .descriptor import QueueDescriptor, metadata_value
from .errors import QueueAuthenticationError, QueueUnavailableError
from .transport_base import QueueAdapter, check_timeout

__all__ = ["RpcQueue", "RpcQueueServer", "start_rpc_queue_server", "rpc_metadata", "AUTHKEY_BYTES"]

#: Length of generated auth keys (256 bits: not guessable).
AUTHKEY_BYTES = 32
_FACTORY = "QueueDescriptor.create_rpc_queue(host, port, queue_id, authkey=...) or server.descriptor(queue_id)"
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_EXPOSED = ("put", "get", "qsize", "empty", "full", "put_many", "get_many")


# ---------------------------------------------------------------- server process side


class _ServedQueue(queue.Queue):  # type: ignore[type-arg]
    """A server-side queue with batch calls (one round trip per batch).
    It holds the pickles clients send, opaque bytes to the server."""

    def put_many(self, items: List[Any], block: bool = True, timeout: Optional[float] = None) -> int:
        for done, item in enumerate(items):
            try:
                self.put(item, block, timeout)
            except queue.Full as full:
                full.items_put = done  # type: ignore[attr-defined]
                raise
        return len(items)

    def get_many(self, max_items: int, block: bool = True, timeout: Optional[float] = None) -> List[Any]:
        items = [self.get(block, timeout)]
        while len(items) < max_items:
            try:
                items.append(self.get_nowait())
            except queue.Empty:
                break
        return items


# Lives in the server process only.
_served_lock = threading.Lock()
_served: Dict[str, _ServedQueue] = {}


def _serve_queue(queue_id: str, maxsize: int = 0) -> _ServedQueue:
    """Server side of ``get_queue``: the queue ``queue_id``, created on first use."""
    with _served_lock:
        q = _served.get(queue_id)
        if q is None:
            q = _served[queue_id] = _ServedQueue(maxsize)
        return q


class _QueueProxy(BaseProxy):
    """Client side of a served queue."""

    _exposed_ = _EXPOSED

    def _call(self, method: str, args: Tuple[Any, ...] = ()) -> Any:
        # (typeshed declares _callmethod as returning None.)
        call: Any = self._callmethod
        return call(method, args)

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        self._call("put", (item, block, timeout))

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        return self._call("get", (block, timeout))

    def qsize(self) -> int:
        return self._call("qsize")  # type: ignore[no-any-return]

    def empty(self) -> bool:
        return self._call("empty")  # type: ignore[no-any-return]

    def full(self) -> bool:
        return self._call("full")  # type: ignore[no-any-return]

    def put_many(self, items: List[Any], block: bool = True, timeout: Optional[float] = None) -> int:
        return self._call("put_many", (items, block, timeout))  # type: ignore[no-any-return]

    def get_many(self, max_items: int, block: bool = True, timeout: Optional[float] = None) -> List[Any]:
        return self._call("get_many", (max_items, block, timeout))  # type: ignore[no-any-return]


class _ServerManager(BaseManager):
    """The manager whose server process holds the queues."""


class _ClientManager(BaseManager):
    """The manager clients connect with (no server of its own)."""


_ServerManager.register("get_queue", callable=_serve_queue, proxytype=_QueueProxy, exposed=_EXPOSED)
_ClientManager.register("get_queue", proxytype=_QueueProxy, exposed=_EXPOSED)


# ---------------------------------------------------------------- server handle

_servers_lock = threading.Lock()
#: (host, port) -> server started by this process (for create_rpc_queue's key).
_servers: Dict[Tuple[str, int], "RpcQueueServer"] = {}


def _check_host(host: str, allow_remote: bool) -> None:
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a host name or IP address, not {host!r}")
    if allow_remote:
        return
    try:
        address = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot resolve host {host!r}: {exc}") from None
    if not address.is_loopback:
        raise ValueError(
            f"refusing to serve queues on {host!r} ({address}), which is not a loopback address: the "
            "manager protocol is pickle, guarded only by the auth key. Use 127.0.0.1, or pass "
            "allow_remote=True on a trusted network"
        )


def _check_port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int between 0 and 65535, not {port!r}")
    return port


class RpcQueueServer:
    """A running RPC queue server (see the module docstring). ``host`` and
    ``port`` are where it listens; ``authkey`` is its key (bytes; not shown by
    ``repr``). ``stop()`` shuts it down and with it every queue it holds."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, authkey: Optional[bytes] = None,
                 *, allow_remote: bool = False) -> None:
        _check_host(host, allow_remote)
        _check_port(port)
        if authkey is None:
            authkey = secrets.token_bytes(AUTHKEY_BYTES)
        elif not isinstance(authkey, bytes) or len(authkey) < 16:
            raise ValueError("authkey must be bytes, at least 16 of them (default: 32 random bytes)")
        self._authkey = authkey
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH", "")]))
        env[ENV_VAR] = LIBRARY_PATH  # the same library as this process
        self._process = subprocess.Popen(
            [sys.executable, "-m", "sage_queue.transport_rpc", host, str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        try:
            self._process.stdin.write(authkey.hex().encode() + b"\n")
            self._process.stdin.flush()
            # The child answers with the address it bound (port 0: its choice).
            line = self._process.stdout.readline().decode().split()
        except BrokenPipeError:
            line = []
        if len(line) != 2:
            self._process.stdin.close()
            code = self._process.wait()
            raise QueueUnavailableError(
                f"the RPC queue server for {host}:{port} did not start (exit status {code}; its error is on "
                "stderr): is the port in use?"
            )
        self._process.stdout.close()
        self.host: str = host
        self.port: int = int(line[1])
        self._stopped = False
        with _servers_lock:
            _servers[(self.host, self.port)] = self

    @property
    def authkey(self) -> bytes:
        """The server's auth key (a secret: whoever has it can use the queues)."""
        return self._authkey

    @property
    def pid(self) -> int:
        """The server process's pid."""
        return self._process.pid

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process.poll() is None

    def descriptor(self, queue_id: Optional[str] = None, maxsize: int = 0) -> QueueDescriptor:
        """A descriptor of queue ``queue_id`` (at most ``maxsize`` items) on this server."""
        return QueueDescriptor.create_rpc_queue(self.host, self.port, queue_id, authkey=self._authkey,
                                                maxsize=maxsize)

    def stop(self, timeout: float = 10.0) -> None:
        """Shuts the server down and waits for it (idempotent); its queues
        are gone, and clients get connection errors."""
        if self._stopped:
            return
        self._stopped = True
        with _servers_lock:
            if _servers.get((self.host, self.port)) is self:
                del _servers[(self.host, self.port)]
        assert self._process.stdin is not None
        try:
            self._process.stdin.close()  # EOF: the server's signal to stop
        except BrokenPipeError:
            pass
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __del__(self) -> None:
        # Not stop(): the EOF when the pipe is collected stops it anyway.
        pass

    def __enter__(self) -> "RpcQueueServer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else f"pid {self.pid}"
        return f"<RpcQueueServer {self.host}:{self.port} {state} authkey=***>"


def start_rpc_queue_server(host: str = "127.0.0.1", port: int = 0, authkey: Optional[bytes] = None,
                           *, allow_remote: bool = False) -> RpcQueueServer:
    """Starts an RPC queue server and returns it (see :class:`RpcQueueServer`)."""
    return RpcQueueServer(host, port, authkey, allow_remote=allow_remote)


def rpc_metadata(host: str, port: int, queue_id: str, authkey: Optional[bytes], maxsize: int) -> Dict[str, Any]:
    """Metadata of an ``rpc`` descriptor: where the server is and its key
    (``authkey``, or that of the server this process started at host:port)."""
    port = _check_port(port)
    if authkey is None:
        with _servers_lock:
            server = _servers.get((host, port))
        if server is None:
            raise ValueError(
                f"rpc queue {queue_id!r}: no auth key for the server at {host}:{port}. Pass authkey= (the "
                "server's .authkey), or describe the queue with server.descriptor(queue_id) in the process "
                "that started the server"
            )
        authkey = server.authkey
    if not isinstance(authkey, bytes) or not authkey:
        raise ValueError("authkey must be non-empty bytes")
    return {"host": host, "port": port, "authkey": authkey.hex(), "maxsize": maxsize}


# ---------------------------------------------------------------- client


class RpcQueue(QueueAdapter):
    """An ``rpc`` queue: a connection to its server and a proxy of the queue.
    Each thread talks to the server over its own connection."""

    queue_type = "rpc"

    def __init__(self, descriptor: QueueDescriptor) -> None:
        super().__init__(descriptor)
        host = metadata_value(descriptor, "host", str, _FACTORY)
        port = metadata_value(descriptor, "port", int, _FACTORY)
        key_hex = metadata_value(descriptor, "authkey", str, _FACTORY)
        maxsize = metadata_value(descriptor, "maxsize", int, _FACTORY, default=0)
        try:
            authkey = bytes.fromhex(key_hex)
        except ValueError:
            raise QueueAuthenticationError(
                f"rpc queue {descriptor.queue_id!r}: metadata 'authkey' is not hex; take descriptors from "
                f"{_FACTORY}"
            ) from None
        where = f"rpc queue {descriptor.queue_id!r} at {host}:{port}"
        manager = _ClientManager(address=(host, port), authkey=authkey)
        try:
            manager.connect()
            self._queue = manager.get_queue(descriptor.queue_id, maxsize)  # type: ignore[attr-defined]
        except multiprocessing.AuthenticationError:
            # Never echo the key: say which server refused it.
            raise QueueAuthenticationError(
                f"{where}: the server refused this descriptor's auth key; take the descriptor from that "
                "server (server.descriptor(queue_id)) or pass its authkey to create_rpc_queue"
            ) from None
        except (ConnectionError, EOFError, OSError) as exc:
            raise QueueUnavailableError(
                f"{where}: cannot reach the server ({type(exc).__name__}: {exc}); is it running? Start it "
                "with sage_queue.descriptor.start_rpc_queue_server() and keep it running while the queue is used"
            ) from None
        self._manager = manager
        self._pid = os.getpid()

    # Items cross as pickles made here: the server stores bytes and needs
    # none of the classes of the items.

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """As ``queue.Queue.put`` (the wait happens in the server)."""
        self._queue.put(pickle.dumps(item, _PROTOCOL), block, check_timeout(block, timeout))

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """As ``queue.Queue.get`` (the wait happens in the server)."""
        return decode_each([self._queue.get(block, check_timeout(block, timeout))])[0]

    def put_many(self, items: Iterable[Any], block: bool = True, timeout: Optional[float] = None) -> int:
        """Puts every item in one round trip (each waits up to ``timeout``)."""
        payloads = [pickle.dumps(item, _PROTOCOL) for item in items]
        return int(self._queue.put_many(payloads, block, check_timeout(block, timeout)))

    def get_many(self, max_items: int, block: bool = True, timeout: Optional[float] = None) -> List[Any]:
        """Up to ``max_items`` items (at least one) in one round trip."""
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, not {max_items}")
        return decode_each(self._queue.get_many(max_items, block, check_timeout(block, timeout)))


# ---------------------------------------------------------------- server process entry point


def _stop_on_eof(stop: threading.Event) -> None:
    """Blocks on stdin until it closes (stop(), or the parent died), then
    sets ``stop``."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        stop.set()


def _serve(host: str, port: int) -> None:
    """Runs in the server process: key from stdin, bound address to stdout,
    then serves until stdin closes or a client sends the manager's
    'shutdown' request. (Not ``Server.serve_forever``, which wakes every
    second to look at its stop event: here the main thread just sleeps on
    the event.)"""
    # Ctrl-C in a terminal reaches the whole process group: let the owner
    # decide (it stops us by closing stdin), as multiprocessing's own
    # manager servers do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    authkey = bytes.fromhex(sys.stdin.buffer.readline().decode().strip())
    server = _ServerManager(address=(host, port), authkey=authkey).get_server()
    stop = threading.Event()
    server.stop_event = stop  # type: ignore[attr-defined]  # what Server.shutdown() sets
    multiprocessing.current_process()._manager_server = server  # type: ignore[attr-defined]
    threading.Thread(target=server.accepter, name="accepter", daemon=True).start()
    threading.Thread(target=_stop_on_eof, args=(stop,), name="stop-on-eof", daemon=True).start()
    bound_host, bound_port = cast(Tuple[str, int], server.address)
    sys.stdout.write(f"{bound_host} {bound_port}\n")
    sys.stdout.flush()
    stop.wait()
    # Connection threads are daemons: they end with the process.
    sys.exit(0)


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
