"""The Ray half of the ``auto`` queue type: a bridge actor on the queue's
node, and the endpoint other nodes use (``RemoteAutoQueue``).

**Bridge.** :class:`AutoBridge` runs on the Ray node of the machine that
holds the shared-memory queue (node affinity, not soft: it never runs
elsewhere; ``max_restarts=0``: a dead bridge stays dead and says so). It
holds a ``SageQueue`` and moves raw pickles in and out in batches, so it
needs none of the items' classes. It is a threaded actor: blocked gets and
puts of several endpoints wait side by side.

**Endpoint.** A remote producer's ``put`` pickles the item into a local
buffer; the buffer goes to the bridge in one call when it holds
``batch_size`` items, or ``flush_delay`` seconds after its first item (a
background thread), or at ``flush()``/``close()``/``get``/``qsize``. Order
per producer is kept (one flush at a time). A remote consumer's ``get``
fetches up to ``batch_size`` items in one call and serves the following
gets from them (prefetch); ``close()`` puts back the prefetched items it
did not return (at the queue's end: they are behind items put since).
``task_done()`` marks one of the items the endpoint returned; the flusher
sends the marks ``flush_delay`` after the first, as it sends puts, and
``join()``, ``unfinished_tasks``, ``flush()`` and ``close()`` send them
first.

**What can be lost** (everything else is delivered exactly once while every
process lives): a remote consumer that dies loses the items it prefetched
and had not returned yet (one batch at most); a remote producer that dies
loses what it had buffered and not flushed (one batch at most; ``flush()``
before exiting); if the bridge dies (or its node), the batch in its hands
is lost, and every endpoint's next call (and the flusher) raises
``QueueUnavailableError`` instead of hanging. Processes on the queue's own
machine use the ``SageQueue`` directly and are not affected by the bridge.
"""

from __future__ import annotations

import atexit
import collections
import pickle
import sys
import threading
import time
import weakref
from queue import Empty, Full
from typing import Any, Deque, Dict, Iterable, List, Optional, Tuple

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ._undelivered import decode_each
from .descriptor import QueueDescriptor, metadata_value
from .errors import QueueUnavailableError, ShutDown
from .hostid import check_same_host, host_id
from .queue import SageQueue
from .transport_base import QueueAdapter, check_timeout

__all__ = ["AutoBridge", "RemoteAutoQueue", "start_bridge", "stop_bridge", "BRIDGE_PREFIX"]

#: Ray actor name of the bridge of SageQueue ``name`` on machine ``host``: prefix + "name@host".
BRIDGE_PREFIX = "sage_queue.auto_bridge."
_FACTORY = "QueueDescriptor.create_auto_queue(queue_id, maxsize)"
_PROTOCOL = pickle.HIGHEST_PROTOCOL
#: Longest single wait inside the bridge: an endpoint that waits for ever
#: calls again, so a bridge thread never stays blocked for a dead caller.
_SLICE = 1.0
#: Bridge calls served at once (blocked gets of many endpoints).
_BRIDGE_CONCURRENCY = 64

_OK, _FULL, _EMPTY, _SHUTDOWN = "ok", "full", "empty", "shutdown"



def _slice_wait(block: bool, deadline: Optional[float]) -> float:
    """Seconds the next bridge call may wait: 0 for a try, one slice at most
    (so a dead bridge is noticed between slices), never past ``deadline``."""
    if not block:
        return 0.0
    if deadline is None:
        return _SLICE
    return max(0.0, min(_SLICE, deadline - time.monotonic()))

class AutoBridge:
    """The bridge actor: the shared-memory queue ``queue_name`` of this
    machine, reached in batches of raw pickles. Results are (status, value)
    pairs rather than exceptions (no unwrapping of Ray's errors)."""

    def __init__(self, queue_name: str, maxsize: int, expected_host: str) -> None:
        # Pinned to the queue's node, so this holds unless identities were
        # configured inconsistently: then refuse rather than bridge another queue.
        check_same_host(expected_host, f"the bridge of queue {queue_name!r}")
        self._queue = SageQueue(queue_name, maxsize)

    def host(self) -> str:
        """The machine identity seen by the bridge."""
        return host_id()

    def node_id(self) -> str:
        """The Ray node the bridge runs on."""
        return str(ray.get_runtime_context().get_node_id())

    def put_batch(self, payloads: List[bytes], block: bool, timeout: Optional[float]) -> Tuple[str, int]:
        try:
            return _OK, self._queue.put_many_bytes(payloads, block, timeout)
        except Full as full:
            return _FULL, int(getattr(full, "items_put", 0))
        except ShutDown as down:
            return _SHUTDOWN, int(getattr(down, "items_put", 0))

    def get_batch(self, max_items: int, block: bool, timeout: Optional[float]) -> Tuple[str, List[bytes]]:
        try:
            return _OK, self._queue.get_many_bytes(max_items, block, timeout)
        except Empty:
            return _EMPTY, []
        except ShutDown:
            return _SHUTDOWN, []

    def qsize(self) -> int:
        return self._queue.qsize()

    def task_done_batch(self, count: int) -> int:
        """Marks ``count`` items done; returns how many were (fewer when
        there were fewer unfinished: task_done() called too many times)."""
        for done in range(count):
            try:
                self._queue.task_done()
            except ValueError:
                return done
        return count

    def join(self, timeout: float) -> bool:
        """``SageQueue.join(timeout)``: whether every item put was marked done."""
        return self._queue.join(timeout)

    def unfinished_tasks(self) -> int:
        return self._queue.unfinished_tasks

    def full(self) -> bool:
        return self._queue.full()

    def shutdown(self, immediate: bool = False) -> None:
        self._queue.shutdown(immediate)

    def close(self) -> None:
        self._queue.close()


_RemoteBridge = ray.remote(AutoBridge)
# The creating process keeps the handle of an owned (non-detached) bridge:
# Ray destroys an owned actor once its creator holds no handle.
_owned: Dict[Tuple[str, str], Any] = {}
_owned_lock = threading.Lock()


def start_bridge(queue_name: str, maxsize: int, detached: bool) -> Dict[str, Any]:
    """Starts (or finds) the bridge of ``queue_name`` on this process's Ray
    node; returns the descriptor metadata that names it."""
    me = host_id()
    name = f"{BRIDGE_PREFIX}{queue_name}@{me}"
    context = ray.get_runtime_context()
    node_id = context.get_node_id()
    namespace = context.namespace
    options: Dict[str, Any] = {
        "name": name, "namespace": namespace, "get_if_exists": True, "num_cpus": 0, "max_restarts": 0,
        "max_concurrency": _BRIDGE_CONCURRENCY,
        "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
    }
    if detached:
        options["lifetime"] = "detached"
    handle: Any = _RemoteBridge.options(**options).remote(queue_name, maxsize, me)
    # Started and serving before the descriptor leaves this process.
    ray.get(handle.host.remote())
    if not detached:
        with _owned_lock:
            _owned.setdefault((namespace, name), handle)
    return {"bridge_name": name, "bridge_namespace": namespace, "node_id": node_id, "detached": bool(detached)}


def stop_bridge(descriptor: QueueDescriptor) -> None:
    """Kills the bridge of an ``auto`` queue (no error if it is gone)."""
    name = metadata_value(descriptor, "bridge_name", str, _FACTORY)
    namespace = metadata_value(descriptor, "bridge_namespace", str, _FACTORY)
    with _owned_lock:
        _owned.pop((namespace, name), None)
    try:
        handle = ray.get_actor(name, namespace=namespace)
    except ValueError:
        return
    ray.kill(handle, no_restart=True)


class RemoteAutoQueue(QueueAdapter):
    """An ``auto`` queue resolved away from its machine: ``QueueLike`` (put,
    get, put_many, get_many, qsize, empty, full, the nowait forms,
    timeouts, ``ShutDown``), ``task_done``/``join``, through the bridge,
    in batches (see the module docstring for buffering, prefetch and what
    a death can lose)."""

    queue_type = "auto"

    def __init__(self, descriptor: QueueDescriptor) -> None:
        super().__init__(descriptor)
        where = f"auto queue {descriptor.queue_id!r} (machine {descriptor.metadata.get('host_id')!r}, host " \
                f"{descriptor.metadata.get('host_name')!r})"
        self._where = where
        name = descriptor.metadata.get("bridge_name")
        if not isinstance(name, str):
            raise QueueUnavailableError(
                f"{where} is not on this machine ({host_id()!r}) and has no Ray bridge: it was described "
                "without Ray. Call ray.init() before QueueDescriptor.create_auto_queue() on the queue's machine"
            )
        if not ray.is_initialized():
            raise QueueUnavailableError(
                f"{where} is on another machine: reaching it needs Ray in this process (ray.init(address=...))"
            )
        namespace = metadata_value(descriptor, "bridge_namespace", str, _FACTORY)
        try:
            self._queue = ray.get_actor(name, namespace=namespace)
        except ValueError:
            raise QueueUnavailableError(
                f"{where}: its bridge actor {name!r} (namespace {namespace!r}) is gone: it died with the "
                "process that created the descriptor (pass detached=True to outlive it), its node died, or "
                "it was stopped"
            ) from None
        self._bridge_name = name
        self._batch = metadata_value(descriptor, "batch_size", int, _FACTORY, default=512)
        self._delay = float(metadata_value(descriptor, "flush_delay", (int, float), _FACTORY, default=0.005))
        self._lock = threading.Condition()  # guards _out, _in, _error, _closed
        self._flush_lock = threading.Lock()  # one flush at a time: per-producer order
        self._out: List[bytes] = []  # pickles put here, not yet sent
        self._first_at = 0.0  # when the first of _out or _marks came
        self._in: Deque[bytes] = collections.deque()  # pickles prefetched, not yet returned
        self._returned = 0  # items get/get_many returned, not yet marked by task_done()
        self._marks = 0  # task_done() marks not yet sent to the bridge
        self._mark_error: Optional[ValueError] = None  # marks the bridge refused (sent by the flusher)
        self._error: Optional[QueueUnavailableError] = None
        self._closed = False
        self._flusher: Optional[threading.Thread] = None
        self._call(self._queue.host.remote())  # alive now, or QueueUnavailableError
        _endpoints.add(self)

    # ------------------------------------------------------------ bridge calls

    def _call(self, ref: Any) -> Any:
        try:
            return ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            error = QueueUnavailableError(
                f"{self._where}: its bridge actor {self._bridge_name!r} died or its node is gone "
                f"({type(exc).__name__}); the batch it held is lost. The queue itself lives on its machine; "
                "describe it again there to start a new bridge"
            )
            with self._lock:
                self._error = self._error or error
                self._lock.notify_all()
            raise error from None

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise QueueUnavailableError(f"{self._where}: this endpoint was closed; resolve the descriptor again")

    # ------------------------------------------------------------ producing

    def _send(self, block: bool, timeout: Optional[float]) -> None:
        """Sends what is buffered, in order, within ``timeout`` (None: wait
        for room, in slices). ``queue.Full`` with what stays buffered if it
        did not all go; ``ShutDown`` drops the rest (it can never go)."""
        with self._flush_lock:
            with self._lock:
                batch, self._out = self._out, []
            deadline = None if timeout is None else time.monotonic() + timeout
            sent = 0
            try:
                while sent < len(batch):
                    self._check()
                    wait = _slice_wait(block, deadline)
                    part = batch[sent:sent + self._batch]
                    status, count = self._call(self._queue.put_batch.remote(part, block and wait > 0, wait))
                    sent += count
                    if status == _SHUTDOWN:
                        batch = batch[:sent]
                        raise ShutDown(f"{self._where} was shut down; {sent} buffered items went in")
                    if status == _FULL and (not block or (deadline is not None and time.monotonic() >= deadline)):
                        full = Full(f"{self._where}: the queue stayed full")
                        full.unsent = len(batch) - sent  # type: ignore[attr-defined]
                        raise full
            finally:
                if sent < len(batch):  # back to the front, before anything put since
                    with self._lock:
                        self._out[:0] = batch[sent:]

    def _send_marks(self, raising: bool) -> None:
        """Sends the ``task_done()`` marks made here. If the bridge found
        fewer unfinished items than marks, the ValueError is raised now
        (``raising``) or by this endpoint's next task_done/join/flush."""
        with self._flush_lock:
            with self._lock:
                count, self._marks = self._marks, 0
            if count:
                done = int(self._call(self._queue.task_done_batch.remote(count)))
                if done < count:
                    with self._lock:
                        self._mark_error = ValueError(
                            f"task_done() called too many times: {count - done} marks sent to {self._where} "
                            "found no unfinished item (were its items marked done elsewhere too?)")
        if raising:
            self._raise_mark_error()

    def _raise_mark_error(self) -> None:
        with self._lock:
            error, self._mark_error = self._mark_error, None
        if error is not None:
            raise error

    def _flush_loop(self) -> None:
        """Background: sends buffered puts and marks at most ``flush_delay``
        after the first of them."""
        while True:
            with self._lock:
                while not self._out and not self._marks and not self._closed and self._error is None:
                    self._lock.wait()
                if self._error is not None or (self._closed and not self._out and not self._marks):
                    return
                due = self._first_at + self._delay - time.monotonic()
                if due > 0 and not self._closed:
                    self._lock.wait(due)
                    continue
            try:
                self._send(True, None)
                self._send_marks(False)
            except (QueueUnavailableError, ShutDown):
                return  # recorded (_error) or final; callers see it on their next call

    def _pend(self, payloads: Iterable[bytes] = (), marks: int = 0) -> None:
        """Under the lock: puts and ``task_done()`` marks for the flusher to
        send. The first pending one starts the ``flush_delay`` and wakes the
        flusher, which sleeps while nothing is pending (one wake-up per
        batch)."""
        idle = not self._out and not self._marks
        self._out.extend(payloads)
        self._marks += marks
        if idle:
            self._first_at = time.monotonic()
            self._start_flusher()
            self._lock.notify_all()

    def _start_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_loop, name=f"auto-flush-{self.queue_id}",
                                             daemon=True)
            self._flusher.start()

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Buffers ``item`` for the bridge (sent within ``flush_delay``, or at
        once when ``batch_size`` are buffered). A bounded put (``block=False``
        or a ``timeout``) sends at once and raises ``queue.Full`` if the item
        did not go in (earlier buffered items stay buffered)."""
        timeout = check_timeout(block, timeout)
        payload = pickle.dumps(item, _PROTOCOL)
        with self._lock:
            self._check()
            self._pend([payload])
            count = len(self._out)
        if block and timeout is None:
            if count >= self._batch:
                self._send(True, None)
            return
        try:
            self._send(block, timeout)
        except Full as full:
            self._take_back(full, 1)
            raise

    def put_many(self, items: Iterable[Any], block: bool = True, timeout: Optional[float] = None) -> int:
        """Sends the buffer and ``items``, in order, in batches of
        ``batch_size`` (one bridge call each). ``queue.Full`` with
        ``items_put`` if not all went in time (those that did not are dropped)."""
        timeout = check_timeout(block, timeout)
        payloads = [pickle.dumps(item, _PROTOCOL) for item in items]
        with self._lock:
            self._check()
            self._pend(payloads)
        try:
            self._send(block, timeout)
        except Full as full:
            full.items_put = len(payloads) - self._take_back(full, len(payloads))  # type: ignore[attr-defined]
            raise
        return len(payloads)

    def _take_back(self, full: Full, mine: int) -> int:
        """After a bounded send raised ``full``: removes from the buffer the
        unsent ones among this call's ``mine`` items (the last of the sent
        batch, now at the buffer's front) and returns how many."""
        unsent = int(getattr(full, "unsent", 0))
        dropped = min(unsent, mine)
        with self._lock:
            del self._out[unsent - dropped:unsent]
        return dropped

    def flush(self, timeout: Optional[float] = None) -> None:
        """Sends every buffered item now (waits for room up to ``timeout``),
        then the ``task_done()`` marks made here."""
        self._send(True, check_timeout(True, timeout))
        self._send_marks(True)

    # ------------------------------------------------------------ consuming

    def _fetch(self, wanted: int, block: bool, timeout: Optional[float]) -> None:
        """Fills the prefetch buffer with up to ``wanted`` items (one call per
        slice waited); Empty/ShutDown as ``get``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._check()
            wait = _slice_wait(block, deadline)
            status, payloads = self._call(self._queue.get_batch.remote(wanted, block and wait > 0, wait))
            if payloads:
                self._in.extend(payloads)
                return
            if status == _SHUTDOWN:
                raise ShutDown(f"{self._where} was shut down and is drained")
            if not block or (deadline is not None and time.monotonic() >= deadline):
                raise Empty

    def _prepare_get(self) -> None:
        self._check()
        if self._out:
            self._send(True, None)  # this process's own puts come first

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Removes and returns an item (from the prefetched batch, or fetches
        up to ``batch_size``); ``queue.Empty`` if none in time."""
        timeout = check_timeout(block, timeout)
        if not self._in:
            self._prepare_get()
            self._fetch(self._batch, block, timeout)
        with self._lock:
            payload = self._in.popleft()
            self._returned += 1
        return decode_each([payload])[0]

    def get_many(self, max_items: int, block: bool = True, timeout: Optional[float] = None) -> List[Any]:
        """Up to ``max_items`` items (at least one): prefetched ones first,
        else one bridge call."""
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, not {max_items}")
        timeout = check_timeout(block, timeout)
        if not self._in:
            self._prepare_get()
            self._fetch(max(max_items, self._batch), block, timeout)
        with self._lock:
            payloads = [self._in.popleft() for _ in range(min(max_items, len(self._in)))]
            self._returned += len(payloads)
        return decode_each(payloads)

    # ------------------------------------------------------------ tasks

    def task_done(self) -> None:
        """Marks one item this endpoint returned as processed
        (``queue.Queue.task_done``). The flusher sends it ``flush_delay``
        after the first mark not yet sent; ``join``, ``unfinished_tasks``,
        ``flush`` and ``close`` send the marks first. ValueError if this
        endpoint returned fewer items than it was told are done (stricter
        than ``queue.Queue``, which counts the whole queue's: mark an item
        where it was received)."""
        with self._lock:  # a Condition's RLock: _raise_mark_error takes it again
            self._check()
            self._raise_mark_error()
            if self._returned == 0:
                raise ValueError(f"task_done() called more times than this endpoint of {self._where} returned "
                                 "items (mark each item done in the process that received it)")
            self._returned -= 1
            self._pend(marks=1)

    def join(self, timeout: Optional[float] = None) -> bool:
        """Blocks until every item put (by any process) was marked done, as
        ``SageQueue.join``: True, or False if ``timeout`` (seconds) passed
        first. Sends this endpoint's buffered puts and marks first. Items it
        prefetched and has not returned count as unfinished until ``close()``
        puts them back."""
        timeout = check_timeout(True, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._prepare_get()
        self._send_marks(True)
        while True:
            self._check()
            if self._call(self._queue.join.remote(_slice_wait(True, deadline))):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    @property
    def unfinished_tasks(self) -> int:
        """Items put and not yet marked done, counted on the queue's machine
        (after this endpoint's buffered puts and marks are sent)."""
        self._prepare_get()
        self._send_marks(True)
        return int(self._call(self._queue.unfinished_tasks.remote()))

    # ------------------------------------------------------------ state

    def qsize(self) -> int:
        """Items queued on the queue's machine plus those prefetched here
        (this endpoint's buffered puts are sent first)."""
        self._prepare_get()
        return int(self._call(self._queue.qsize.remote())) + len(self._in)

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        self._check()
        return bool(self._call(self._queue.full.remote()))

    def shutdown(self, immediate: bool = False) -> None:
        """Shuts the queue down for every process (as ``SageQueue.shutdown``)."""
        self._prepare_get()
        self._call(self._queue.shutdown.remote(immediate))

    def close(self, timeout: Optional[float] = None) -> None:
        """Sends what is buffered, then puts back the prefetched items it did
        not return (at the queue's end), waiting up to ``timeout`` for room
        (None: as long as it takes); sends the ``task_done()`` marks made
        here; stops this endpoint's flusher. ``queue.Full`` if items could
        not be sent in time (they are dropped; the endpoint is closed
        anyway)."""
        if self._closed:
            return
        timeout = check_timeout(True, timeout)
        with self._lock:
            # Each prefetched item's get is over: it goes in again as a new
            # item (or is dropped with the rest on Full or ShutDown), so it
            # gets its mark here, sent after it (join never sees it neither
            # done nor queued).
            back = len(self._in)
            self._out.extend(self._in)
            self._in.clear()
        try:
            if self._error is None and self._out:
                self._send(True, timeout)
        finally:
            try:
                if self._error is None:
                    with self._lock:
                        self._marks += back
                    self._send_marks(False)
            finally:
                with self._lock:
                    self._closed = True
                    self._lock.notify_all()
                _endpoints.discard(self)

    def __getattr__(self, name: str) -> Any:
        # Not forwarded to the bridge's actor handle (QueueAdapter forwards
        # to its wrapped queue): an actor method would look like a queue call.
        raise AttributeError(
            f"{type(self).__name__} has no attribute {name!r}: an auto queue reached from another machine "
            "offers put/get (and _nowait), put_many/get_many, qsize/empty/full, task_done/join/unfinished_tasks, "
            "flush, shutdown and close"
        )

    def __repr__(self) -> str:
        return f"<RemoteAutoQueue {self.queue_id!r} via {self._bridge_name!r}>"


#: Open endpoints, flushed when the interpreter exits normally.
_endpoints: "weakref.WeakSet[RemoteAutoQueue]" = weakref.WeakSet()
#: How long the exit flush waits for room in a full queue (an exit never hangs).
EXIT_FLUSH_TIMEOUT = 30.0


@atexit.register
def _flush_all() -> None:
    for endpoint in list(_endpoints):
        pending = len(endpoint._out)
        try:
            endpoint.close(EXIT_FLUSH_TIMEOUT)
        except Exception as exc:  # the process is exiting: say what was lost, do not hang
            sys.stderr.write(f"sage_queue: {endpoint!r}: up to {pending} buffered items not sent at exit "
                             f"({type(exc).__name__}: {exc})\n")
