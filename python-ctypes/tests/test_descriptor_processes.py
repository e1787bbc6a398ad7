"""Descriptors across processes: a descriptor serialised to JSON (or a
resolved queue pickled) in one process resolves to the same queue in a
spawned process, in both directions, for shm, sage_queue and rpc; a local
descriptor is refused elsewhere with a clear error. Plus the RPC server's
lifecycle and secrecy of its auth key. (Ray types: test_ray.py.)"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import select
import signal
import subprocess
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, cast

import pytest

from sage_queue import destroy_queue
from sage_queue.descriptor import QueueDescriptor, QueueServer, resolve_descriptor, start_rpc_queue_server
from sage_queue.errors import LocalQueueProcessError, QueueAuthenticationError, QueueUnavailableError
from sage_queue.transport_local import forget_local_queue

import _descriptor_workers as workers
from conftest import child_env, unique_name

ITEMS = 500


@pytest.fixture(scope="module")
def spawn_pool() -> Iterator[ProcessPoolExecutor]:
    """Two spawned worker processes shared by the module (spawn is slow)."""
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        yield pool


@pytest.fixture(scope="module")
def rpc_server() -> Iterator[QueueServer]:
    server = start_rpc_queue_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def describe(request: pytest.FixtureRequest, rpc_server: QueueServer) -> Callable[[str], QueueDescriptor]:
    """describe(queue_type) -> a descriptor of a fresh queue of that type;
    its shared-memory queue (if any) is destroyed after the test."""
    names: List[str] = []

    def make(queue_type: str) -> QueueDescriptor:
        queue_id = unique_name(queue_type[:3])
        if queue_type == "shm":
            desc = QueueDescriptor.create_shm_queue(queue_id, unique_name("shm"), 1 << 16)
            names.append(desc.metadata["shm_name"])
        elif queue_type == "sage_queue":
            desc = QueueDescriptor.create_sage_queue(queue_id, 1 << 16)
            names.append(desc.metadata["queue_name"])
        elif queue_type == "rpc":
            desc = rpc_server.descriptor(queue_id)
        else:
            raise AssertionError(queue_type)
        return desc

    def destroy_all() -> None:

        for n in names:

            destroy_queue(n)


    request.addfinalizer(destroy_all)
    return make


def _close(*queues: Any) -> None:
    for q in queues:
        getattr(q, "close", lambda: None)()


@pytest.mark.parametrize("queue_type", ["shm", "sage_queue", "rpc"])
def test_json_descriptor_reaches_the_same_queue_in_a_spawned_process(
    queue_type: str, describe: Callable[[str], QueueDescriptor], spawn_pool: ProcessPoolExecutor
) -> None:
    to_child, from_child = describe(queue_type), describe(queue_type)
    outbox: Any = resolve_descriptor(to_child)
    inbox: Any = resolve_descriptor(from_child.to_json())
    try:
        future = spawn_pool.submit(workers.relay, to_child.to_json(), from_child.to_json(), ITEMS)
        for i in range(ITEMS):  # parent -> child
            outbox.put(i, timeout=60)
        child_pid, child_type = future.result(timeout=120)
        received: List[Any] = []
        while len(received) < ITEMS:  # child -> parent
            received.extend(inbox.get_many(ITEMS, timeout=60))
        assert child_pid != os.getpid() and child_type == type(outbox).__name__
        assert sorted(value for _, value in received) == [2 * i for i in range(ITEMS)]
        assert {pid for pid, _ in received} == {child_pid}
        assert inbox.qsize() == 0 and outbox.qsize() == 0
    finally:
        _close(outbox, inbox)


@pytest.mark.parametrize("queue_type", ["shm", "sage_queue", "rpc"])
def test_resolved_queue_pickles_to_a_spawned_process(
    queue_type: str, describe: Callable[[str], QueueDescriptor], spawn_pool: ProcessPoolExecutor
) -> None:
    q: Any = resolve_descriptor(describe(queue_type))
    try:
        child_pid = spawn_pool.submit(workers.put_from_pickled_queue, q, ["a", {"b": 2}, (3,)]).result(timeout=120)
        assert child_pid != os.getpid()
        assert [q.get(timeout=60) for _ in range(3)] == ["a", {"b": 2}, (3,)]
    finally:
        _close(q)


def test_local_descriptor_is_refused_in_a_spawned_process(spawn_pool: ProcessPoolExecutor) -> None:
    desc = QueueDescriptor.create_local_queue(unique_name("loc"))
    try:
        resolve_descriptor(desc).put("stays here")
        future = spawn_pool.submit(workers.resolve_only, desc.to_json())
        with pytest.raises(LocalQueueProcessError) as info:
            future.result(timeout=120)
        message = str(info.value)
        assert "do not cross processes" in message and f"lives in process {os.getpid()}" in message
        for suggested in ("sage_queue", "shm", "rpc", "ray_queue", "ray_actor"):
            assert suggested in message
        assert cast(Any, resolve_descriptor(desc)).get_nowait() == "stays here"
    finally:
        forget_local_queue(desc.queue_id)


def test_local_descriptor_is_refused_in_a_forked_child() -> None:
    """A forked child has a *copy* of the parent's local queues: resolving
    there must fail rather than silently use the copy."""
    desc = QueueDescriptor.create_local_queue(unique_name("loc"))
    try:
        resolve_descriptor(desc).put(1)
        with mp.get_context("fork").Pool(1) as pool:
            with pytest.raises(LocalQueueProcessError):
                pool.apply(workers.resolve_only, (desc.to_json(),))
    finally:
        forget_local_queue(desc.queue_id)


# ---------------------------------------------------------------- rpc


@dataclass
class OnlyInTheClient:
    """A class the server process never imports: it stores pickles as bytes."""

    value: int


def test_rpc_semantics(rpc_server: QueueServer) -> None:
    bounded: Any = resolve_descriptor(rpc_server.descriptor(unique_name("rpc"), maxsize=2))
    bounded.put(OnlyInTheClient(1))
    bounded.put_nowait(OnlyInTheClient(2))
    assert bounded.full() and bounded.qsize() == 2 and not bounded.empty()
    with pytest.raises(queue.Full):
        bounded.put(3, timeout=0.05)
    with pytest.raises(queue.Full):
        bounded.put_nowait(3)
    assert bounded.get_many(5) == [OnlyInTheClient(1), OnlyInTheClient(2)]
    with pytest.raises(queue.Empty):
        bounded.get(timeout=0.05)
    with pytest.raises(queue.Empty):
        bounded.get_nowait()
    with pytest.raises(ValueError, match="non-negative"):
        bounded.get(timeout=-1)
    assert bounded.put_many(range(2)) == 2
    assert bounded.get(timeout=float("inf")) == 0 and bounded.get() == 1


def test_rpc_queue_is_shared_by_threads_and_handles(rpc_server: QueueServer) -> None:
    desc = rpc_server.descriptor(unique_name("rpc"))
    shared: Any = resolve_descriptor(desc)
    other: Any = resolve_descriptor(desc.to_json())

    def produce(base: int) -> None:
        for i in range(100):
            shared.put(base + i)

    threads = [threading.Thread(target=produce, args=(1000 * t,)) for t in range(4)]
    for t in threads:
        t.start()
    got = [other.get(timeout=60) for _ in range(400)]
    for t in threads:
        t.join(60)
    assert sorted(got) == sorted(1000 * t + i for t in range(4) for i in range(100))


def test_rpc_wrong_key_and_stopped_server() -> None:
    server = start_rpc_queue_server()
    desc = server.descriptor("q")
    try:
        wrong = QueueDescriptor("q", "rpc", {**desc.metadata, "authkey": ("11" * 32)})
        with pytest.raises(QueueAuthenticationError) as info:
            resolve_descriptor(wrong)
        assert "11" * 32 not in str(info.value) and desc.metadata["authkey"] not in str(info.value)
        assert isinstance(info.value, PermissionError)
        resolve_descriptor(desc).put("ok")
        assert server.running
    finally:
        server.stop()
    server.stop()  # idempotent
    assert not server.running
    with pytest.raises(QueueUnavailableError, match="start_rpc_queue_server") as unavailable:
        resolve_descriptor(desc)
    assert isinstance(unavailable.value, ConnectionError)
    assert desc.metadata["authkey"] not in str(unavailable.value)


def test_rpc_refuses_non_loopback_and_weak_keys() -> None:
    for host in ("0.0.0.0", "8.8.8.8"):
        with pytest.raises(ValueError, match="loopback"):
            start_rpc_queue_server(host)
    with pytest.raises(ValueError, match="authkey"):
        start_rpc_queue_server(authkey=b"short")
    with pytest.raises(ValueError, match="port"):
        start_rpc_queue_server(port=-1)


def test_rpc_auth_key_is_not_leaked() -> None:
    server = start_rpc_queue_server()
    try:
        key_hex = server.authkey.hex()
        assert len(server.authkey) == 32
        desc = server.descriptor("q")
        assert key_hex not in repr(server) and key_hex not in repr(desc) and key_hex not in str(desc)
        # Not on the server's command line or in its environment (both
        # readable by other users through ps and /proc).
        for part in ("cmdline", "environ"):
            with open(f"/proc/{server.pid}/{part}", "rb") as f:
                raw = f.read()
            assert key_hex.encode() not in raw and server.authkey not in raw
    finally:
        server.stop()


def _wait_for_exit(pid: int, timeout: float) -> bool:
    """Waits (without polling) until process ``pid``, not our child, exits."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def test_rpc_server_dies_with_its_owner() -> None:
    """The server watches its stdin: when the owner is SIGKILLed, the pipe
    closes and the server exits instead of lingering."""
    code = (
        "import sys\n"
        "from sage_queue.descriptor import start_rpc_queue_server\n"
        "server = start_rpc_queue_server()\n"
        "print(server.pid, server.port, flush=True)\n"
        "sys.stdin.read()\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", code], env=child_env(), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        server_pid, port = map(int, owner.stdout.readline().split())
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(60)
        assert _wait_for_exit(server_pid, 60), "the RPC server outlived its owner"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
