"""Ray, for real: SageQueue and SageQueueRef in Ray tasks and actors (both
directions), a producers -> workers -> sink pipeline of actors moving
100,000 messages with exact count and checksum, and the Ray descriptor
types (ray_queue, ray_actor; sage_queue too) resolved from JSON in other
Ray workers and in another driver process.

Ray starts once for this module (slow on 2 cores) and stops at its end, so
tests in later modules that fork do not inherit Ray's threads."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, List, cast

import pytest

from sage_queue import SageQueue, destroy_queue
from sage_queue.descriptor import QueueDescriptor, resolve_descriptor
from sage_queue.errors import QueueUnavailableError

from conftest import PACKAGE_ROOT, RUN_PREFIX, SHM, child_env, unique_name

TESTS_DIR = Path(__file__).resolve().parent
PIPELINE_PRODUCERS = 2
PIPELINE_WORKERS = 2
PER_PRODUCER = 50_000
BATCH = 1000
WAIT = 300  # seconds: generous bound on any ray.get


@pytest.fixture(scope="module")
def ray_session() -> Iterator[Any]:
    """A local Ray cluster for this module: ray.init(num_cpus=2,
    include_dashboard=False). Workers inherit the environment, which gets
    the in-tree package and this directory (for _ray_workers) on PYTHONPATH."""
    import ray

    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), str(TESTS_DIR), saved]))
    try:
        context = ray.init(num_cpus=2, include_dashboard=False, namespace=f"sage_queue_tests_{RUN_PREFIX}",
                           object_store_memory=100 * 1024 * 1024, logging_level=logging.WARNING)
        try:
            yield context
        finally:
            ray.shutdown()
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


@pytest.fixture
def workers(ray_session: Any) -> Any:
    import _ray_workers

    return _ray_workers


@pytest.fixture
def actors(request: pytest.FixtureRequest, ray_session: Any) -> List[Any]:
    """Actors to kill after the test (their worker processes close their queues)."""
    import ray

    started: List[Any] = []
    request.addfinalizer(lambda: [ray.kill(a) for a in started])
    return started


# ---------------------------------------------------------------- SageQueue over Ray


def test_sage_queue_and_ref_in_tasks_both_directions(make_queue: Callable[..., SageQueue], workers: Any) -> None:
    import ray

    q = make_queue(1 << 16)
    # Worker -> driver: the task reattaches by name and puts.
    task_pid = ray.get(workers.put_range.remote(q, 0, 500), timeout=WAIT)
    assert task_pid != os.getpid()
    assert q.get_many(1000, timeout=60) == list(range(500))
    # Driver -> worker: the driver puts, the task gets.
    pending = workers.take.remote(q, 300)
    q.put_many(range(1000, 1300))
    pid, items = ray.get(pending, timeout=WAIT)
    assert pid != os.getpid() and items == list(range(1000, 1300))
    # A SageQueueRef travels too (and through the object store).
    ref = q.get_reference()
    ray.get(workers.put_via_ref.remote(ray.put(ref), ["r1", {"r": 2}]), timeout=WAIT)
    assert [q.get(timeout=60), q.get(timeout=60)] == ["r1", {"r": 2}]
    assert q.qsize() == 0


def test_items_larger_than_the_ring_in_tasks(make_queue: Callable[..., SageQueue], workers: Any) -> None:
    """Default arguments (a 1 MiB ring), items of up to 3 MiB, both
    directions; nothing left in /dev/shm."""
    import _large_workers
    import ray

    q = make_queue()
    before = sorted(p.name for p in SHM.glob(f"sage_ringbuf_{q.name}*"))
    assert ray.get(workers.put_large.remote(q, 0, 12), timeout=WAIT) != os.getpid()
    got: List[Any] = []
    while len(got) < 12:
        got.extend(q.get_many(12, timeout=60))
    assert got == [_large_workers.large_item(i) for i in range(12)]
    pending = workers.take.remote(q, 8)
    for i in range(100, 108):
        q.put(_large_workers.large_item(i))
    pid, items = ray.get(pending, timeout=WAIT)
    assert pid != os.getpid() and items == [_large_workers.large_item(i) for i in range(100, 108)]
    assert sorted(p.name for p in SHM.glob(f"sage_ringbuf_{q.name}*")) == before


def test_sage_queue_in_an_actor_both_directions(make_queue: Callable[..., SageQueue], workers: Any,
                                                actors: List[Any]) -> None:
    import ray

    source, sink, extra = make_queue(1 << 16), make_queue(1 << 16), make_queue(4096)
    relay = workers.Relay.remote(source, sink)  # queues as constructor arguments
    actors.append(relay)
    assert ray.get(relay.pid.remote(), timeout=WAIT) != os.getpid()
    done = relay.relay.remote(200)
    source.put_many(range(200))
    assert ray.get(done, timeout=WAIT) == 200
    assert [sink.get(timeout=60) for _ in range(200)] == [("relayed", i) for i in range(200)]
    # A queue as a method argument.
    assert ray.get(relay.put_into.remote(extra, ["x", "y"]), timeout=WAIT) == extra.name
    assert extra.get_many(10, timeout=60) == ["x", "y"]
    ray.get(relay.close.remote(), timeout=WAIT)


def test_pipeline_of_actors_moves_100k_messages_exactly(make_queue: Callable[..., SageQueue], workers: Any,
                                                         actors: List[Any]) -> None:
    """producers -> workers -> sink, all Ray actors, over two SageQueues with
    put_many/get_many; shutdown() ends each stage once drained."""
    import ray

    work, results = make_queue(1 << 20), make_queue(1 << 20)
    producers = [workers.Producer.remote(work, p, PER_PRODUCER, BATCH) for p in range(PIPELINE_PRODUCERS)]
    stage = [workers.Worker.remote(work, results, BATCH) for _ in range(PIPELINE_WORKERS)]
    sink = workers.Sink.remote(results, 2 * BATCH)
    actors.extend(producers + stage + [sink])

    sink_done = sink.run.remote()
    stage_done = [w.run.remote() for w in stage]
    produced = ray.get([p.run.remote() for p in producers], timeout=WAIT)
    work.shutdown()  # workers drain what is left, then get ShutDown
    processed = ray.get(stage_done, timeout=WAIT)
    results.shutdown()
    count, total, squares = ray.get(sink_done, timeout=WAIT)

    expected = [workers.transform(workers.item_value(p, s))
                for p in range(PIPELINE_PRODUCERS) for s in range(PER_PRODUCER)]
    assert sum(produced) == PIPELINE_PRODUCERS * PER_PRODUCER == 100_000
    assert sum(processed) == 100_000 and count == 100_000
    assert total == sum(expected) and squares == sum(v * v for v in expected)
    assert work.qsize() == 0 and results.qsize() == 0


# ---------------------------------------------------------------- descriptors over Ray


@pytest.fixture
def describe(request: pytest.FixtureRequest, ray_session: Any) -> Callable[..., QueueDescriptor]:
    """describe(queue_type, maxsize=1000) -> a descriptor of a fresh queue;
    its actor is killed (or its shared-memory queue destroyed) after the test."""
    from sage_queue.ray_support import destroy_ray_queue

    made: List[QueueDescriptor] = []

    def make(queue_type: str, maxsize: int = 1000) -> QueueDescriptor:
        queue_id = unique_name(queue_type[:4])
        if queue_type == "ray_queue":
            desc = QueueDescriptor.create_ray_queue(queue_id, maxsize=maxsize)
        elif queue_type == "ray_actor":
            desc = QueueDescriptor.create_ray_actor_queue(queue_id, f"holder_{queue_id}", maxsize=maxsize)
        elif queue_type == "sage_queue":
            desc = QueueDescriptor.create_sage_queue(queue_id, 1 << 16)
        else:
            raise AssertionError(queue_type)
        made.append(desc)
        return desc

    def cleanup() -> None:
        for desc in made:
            if desc.queue_type == "sage_queue":
                destroy_queue(desc.metadata["queue_name"])
            else:
                destroy_ray_queue(desc, kill_actor=True)

    request.addfinalizer(cleanup)
    return make


@pytest.mark.parametrize("queue_type", ["ray_queue", "ray_actor", "sage_queue"])
def test_descriptor_json_resolves_in_other_ray_workers(queue_type: str, describe: Callable[[str], QueueDescriptor],
                                                      workers: Any, actors: List[Any]) -> None:
    import ray

    desc = describe(queue_type)
    text = desc.to_json()
    here: Any = resolve_descriptor(QueueDescriptor.from_json(text))
    try:
        # A task resolves the JSON and puts; the driver gets.
        task_pid = ray.get(workers.resolve_and_put.remote(text, list(range(20))), timeout=WAIT)
        assert task_pid != os.getpid()
        assert [here.get(timeout=60) for _ in range(20)] == list(range(20))
        # The driver puts; an actor that resolved the JSON gets.
        user = workers.DescriptorUser.remote(text)
        actors.append(user)
        assert ray.get(user.pid.remote(), timeout=WAIT) != os.getpid()
        here.put_many([{"n": i} for i in range(10)])
        assert ray.get(user.get.remote(10), timeout=WAIT) == [{"n": i} for i in range(10)]
        # The actor puts, the driver gets in a batch.
        assert ray.get(user.put.remote(["a", "b", "c"]), timeout=WAIT) == 3
        got: List[Any] = []
        while len(got) < 3:
            got.extend(here.get_many(3, timeout=60))
        assert got == ["a", "b", "c"] and here.qsize() == 0 and here.empty()
        ray.get(user.close.remote(), timeout=WAIT)
    finally:
        getattr(here, "close", lambda: None)()


@pytest.mark.parametrize("queue_type", ["ray_queue", "ray_actor"])
def test_ray_queue_semantics(queue_type: str, describe: Callable[..., QueueDescriptor]) -> None:
    import queue as stdlib_queue

    desc = describe(queue_type, maxsize=50)
    q: Any = resolve_descriptor(desc)
    assert desc.metadata["namespace"] == f"sage_queue_tests_{RUN_PREFIX}" and desc.metadata["maxsize"] == 50
    assert q.put_many(range(50)) == 50
    assert q.full() and q.qsize() == 50
    with pytest.raises(stdlib_queue.Full):
        q.put("one too many", timeout=0.05)
    with pytest.raises(stdlib_queue.Full):
        q.put_nowait("one too many")
    with pytest.raises(stdlib_queue.Full) as partial:
        q.put_many(["x"], timeout=0.05)
    assert partial.value.items_put == 0  # type: ignore[attr-defined]
    assert q.get_many(2000) == list(range(50))
    with pytest.raises(stdlib_queue.Empty):
        q.get(timeout=0.05)
    with pytest.raises(stdlib_queue.Empty):
        q.get_nowait()
    with pytest.raises(ValueError, match="non-negative"):
        q.put(1, timeout=-1)
    # Describing the same queue_id again reaches the same queue.
    again = QueueDescriptor.create_ray_queue(desc.queue_id) if queue_type == "ray_queue" else \
        QueueDescriptor.create_ray_actor_queue(desc.queue_id, desc.metadata["actor_name"])
    q.put("shared")
    assert resolve_descriptor(again).get(timeout=60) == "shared"


@pytest.mark.parametrize("queue_type", ["ray_queue", "ray_actor"])
def test_ray_batches_take_one_ray_call_each(queue_type: str, describe: Callable[..., QueueDescriptor],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """put_many/get_many cross in one Ray call per batch (counted at
    ray.get, which every call of the transport goes through), waits
    included, in order, and a partial batch reports items_put."""
    import queue as stdlib_queue
    import threading

    import ray

    desc = describe(queue_type, maxsize=1500)
    q: Any = resolve_descriptor(desc)
    calls: List[int] = []  # ray.get calls of this thread
    real_get = ray.get
    me = threading.get_ident()

    def counting_get(*args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == me:
            calls.append(1)
        return real_get(*args, **kwargs)

    monkeypatch.setattr(ray, "get", counting_get)  # the module ray_support calls through
    assert q.put_many(range(1000)) == 1000 and len(calls) == 1
    assert q.get_many(600) == list(range(600)) and len(calls) == 2
    assert q.get_many(1000, timeout=60) == list(range(600, 1000)) and len(calls) == 3
    # A blocking get_many waits in the actor for the first item: still one call.
    later = threading.Timer(0.3, lambda: cast(Any, resolve_descriptor(desc)).put_many(["late", "later"]))
    later.start()
    got = q.get_many(10, timeout=60)
    later.join()
    assert len(calls) == 4
    got += [] if len(got) == 2 else q.get_many(10, timeout=60)
    assert got == ["late", "later"]
    calls.clear()
    with pytest.raises(stdlib_queue.Full) as partial:
        q.put_many(range(2000), timeout=0.2)
    assert partial.value.items_put == 1500 and len(calls) == 1  # type: ignore[attr-defined]
    assert q.get_many(2000) == list(range(1500)) and len(calls) == 2
    with pytest.raises(stdlib_queue.Empty):
        q.get_many(5, block=False)


def test_ray_queue_made_by_plain_ray_util_queue_still_batches(ray_session: Any) -> None:
    """A ray_queue actor made by ray.util.queue itself (as sage_queue 1.0
    did) lacks the batch calls: put_many/get_many fall back to item calls."""
    import ray
    from ray.util.queue import Queue

    from sage_queue.ray_support import RAY_QUEUE_ACTOR_PREFIX

    queue_id = unique_name("old")
    namespace = ray.get_runtime_context().namespace
    old = Queue(0, actor_options={"name": RAY_QUEUE_ACTOR_PREFIX + queue_id, "namespace": namespace, "num_cpus": 0})
    handle: Any = old.actor
    try:
        desc = QueueDescriptor(queue_id, "ray_queue", {"actor_name": RAY_QUEUE_ACTOR_PREFIX + queue_id,
                                                       "namespace": namespace, "maxsize": 0})
        q: Any = resolve_descriptor(desc)
        assert not hasattr(handle, "put_batch")
        assert q.put_many(range(30)) == 30
        assert q.get_many(20) == list(range(20)) and q.get_many(20, timeout=5) == list(range(20, 30))
    finally:
        ray.kill(handle)


def test_ray_descriptors_resolve_in_another_driver(ray_session: Any,
                                                   describe: Callable[..., QueueDescriptor]) -> None:
    """Another process joins the cluster (in another namespace) and finds
    the queues by the name and namespace recorded in their descriptors; the
    detached queues it creates outlive it and are found from here."""
    from sage_queue.ray_support import destroy_ray_queue

    descs = [describe("ray_queue"), describe("ray_actor")]
    detached_id = unique_name("det")
    code = (
        "import json, sys, ray\n"
        "ray.init(address=sys.argv[1], namespace='some_other_namespace', logging_level='WARNING')\n"
        "from sage_queue.descriptor import QueueDescriptor, resolve_descriptor\n"
        "for text in json.loads(sys.argv[2]):\n"
        "    q = resolve_descriptor(text)\n"
        "    q.put(('from another driver', q.get(timeout=60)))\n"
        "made = [QueueDescriptor.create_ray_queue(sys.argv[3], detached=True),\n"
        "        QueueDescriptor.create_ray_actor_queue(sys.argv[3], sys.argv[3] + '_holder', detached=True)]\n"
        "for desc in made:\n"
        "    resolve_descriptor(desc).put('left behind')\n"
        "print(json.dumps([desc.to_json() for desc in made]), flush=True)\n"
    )
    queues = [resolve_descriptor(d) for d in descs]
    for i, q in enumerate(queues):
        q.put(i)
    result = subprocess.run(
        [sys.executable, "-c", code, ray_session.address_info["address"], json.dumps([d.to_json() for d in descs]),
         detached_id],
        env=child_env(), capture_output=True, text=True, timeout=WAIT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    detached = [QueueDescriptor.from_json(text) for text in json.loads(result.stdout.strip().splitlines()[-1])]
    try:
        assert [q.get(timeout=60) for q in queues] == [("from another driver", 0), ("from another driver", 1)]
        # That driver has exited; its detached queues live on.
        for desc in detached:
            assert desc.metadata["namespace"] == "some_other_namespace" and desc.metadata["detached"] is True
            assert resolve_descriptor(desc).get(timeout=60) == "left behind"
    finally:
        for desc in detached:
            destroy_ray_queue(desc, kill_actor=True)


def test_gone_actors_give_clear_errors(describe: Callable[[str], QueueDescriptor], workers: Any) -> None:
    import ray

    from sage_queue.ray_support import destroy_ray_queue

    for queue_type in ("ray_queue", "ray_actor"):
        desc = describe(queue_type)
        resolve_descriptor(desc).put(1)
        destroy_ray_queue(desc, kill_actor=True)
        with pytest.raises(QueueUnavailableError) as info:
            resolve_descriptor(desc)
        message = str(info.value)
        assert desc.metadata["actor_name"] in message and "detached=True" in message
        # In a worker too, with the same exception.
        with pytest.raises(QueueUnavailableError):
            ray.get(workers.resolve_and_put.remote(desc.to_json(), [1]), timeout=WAIT)
    # A ray_actor queue dropped from a live holder is recreated, empty, on use.
    desc = describe("ray_actor")
    q: Any = resolve_descriptor(desc)
    q.put("lost")
    destroy_ray_queue(desc)
    assert resolve_descriptor(desc).qsize() == 0


# ---------------------------------------------------------------- the auto type (one node)

OTHER_HOST = "t15-other-machine"


@pytest.fixture
def auto_desc(request: pytest.FixtureRequest, ray_session: Any) -> Callable[..., QueueDescriptor]:
    """auto_desc(maxsize=1 << 20, **kwargs) -> an ``auto`` descriptor (its
    bridge started); bridge and queue removed after the test."""
    from sage_queue.transport_auto import destroy_auto_queue

    made: List[QueueDescriptor] = []

    def make(maxsize: int = 1 << 20, **kwargs: Any) -> QueueDescriptor:
        made.append(QueueDescriptor.create_auto_queue(unique_name("auto"), maxsize, **kwargs))
        return made[-1]

    def cleanup() -> None:
        for desc in made:
            destroy_auto_queue(desc)

    request.addfinalizer(cleanup)
    return make


def test_auto_is_the_shared_memory_queue_on_its_machine(auto_desc: Callable[..., QueueDescriptor]) -> None:
    from sage_queue.hostid import host_id
    from sage_queue.transport_shm import DescribedSageQueue

    desc = auto_desc()
    meta = desc.metadata
    assert meta["host_id"] == host_id() and meta["bridge_name"].startswith("sage_queue.auto_bridge.")
    assert meta["node_id"] and meta["batch_size"] == 512
    q: Any = resolve_descriptor(QueueDescriptor.from_json(desc.to_json()))
    try:
        assert type(q) is DescribedSageQueue and q.name == meta["queue_name"]
        q.put("here")
        with SageQueue.open(meta["queue_name"]) as plain:
            assert plain.get(timeout=60) == "here"
    finally:
        q.close()


def test_auto_endpoint_semantics(auto_desc: Callable[..., QueueDescriptor], monkeypatch: pytest.MonkeyPatch) -> None:
    """This process plays another machine (the bridge keeps the real
    identity): the descriptor resolves to the Ray endpoint, which behaves as
    a queue: order, batches, timeouts, Full, ShutDown, qsize."""
    import queue as stdlib_queue

    from sage_queue import ShutDown
    from sage_queue.ray_bridge import RemoteAutoQueue

    desc = auto_desc(maxsize=4096, batch_size=8)
    local: Any = resolve_descriptor(desc)  # the SageQueue, resolved with this machine's identity
    monkeypatch.setenv("SAGE_QUEUE_HOST_ID", OTHER_HOST)
    remote: Any = resolve_descriptor(desc.to_json())
    try:
        assert isinstance(remote, RemoteAutoQueue)
        with pytest.raises(ValueError, match="more times than this endpoint"):
            remote.task_done()  # it returned no item yet
        with pytest.raises(AttributeError, match="task_done/join"):
            remote.attached_processes()  # a SageQueue's, not offered here
        for i in range(20):  # buffered; batches of 8 go at once, the rest within the flush delay
            remote.put(i)
        got: List[Any] = []
        while len(got) < 20:
            got.extend(local.get_many(100, timeout=60))
        assert got == list(range(20))
        remote.put_many(range(100, 110))
        got = []
        while len(got) < 10:
            got.extend(local.get_many(100, timeout=60))
        assert got == list(range(100, 110))
        local.put_many(["a", "b", "c"])
        assert remote.qsize() == 3 and not remote.empty()
        assert remote.get(timeout=60) == "a" and remote.get_many(5) == ["b", "c"]
        assert remote.qsize() == 0 and remote.empty()
        with pytest.raises(stdlib_queue.Empty):
            remote.get(timeout=0.1)
        with pytest.raises(stdlib_queue.Empty):
            remote.get_nowait()
        with pytest.raises(ValueError, match="non-negative"):
            remote.get(timeout=-1)
        # A ring of 4096 bytes: a bounded put fails, the item is not kept.
        with pytest.raises(stdlib_queue.Full) as partial:
            remote.put_many([b"x" * 500] * 20, timeout=0.2)
        went = partial.value.items_put  # type: ignore[attr-defined]
        assert 0 < went < 20
        with pytest.raises(stdlib_queue.Full):
            remote.put_nowait(b"y" * 500)
        assert local.get_many(100) == [b"x" * 500] * went and local.qsize() == 0
        remote.put("last")
        remote.shutdown()
        assert local.get(timeout=60) == "last"
        with pytest.raises(ShutDown):
            remote.get(timeout=60)
        with pytest.raises(ShutDown):
            remote.put_many([1], timeout=5)
    finally:
        remote.close()
        local.close()


class Gone:
    """An item whose class the remote endpoint will not find (removed
    from this module while it is queued)."""

    def __init__(self, value: Any) -> None:
        self.value = value


def test_auto_endpoint_unpickling_failures_lose_nothing(auto_desc: Callable[..., QueueDescriptor],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An item the remote endpoint cannot unpickle: its exception carries
    the rest of what the endpoint had taken (items_received,
    payloads_left), in get_many and get."""
    desc = auto_desc()
    local: Any = resolve_descriptor(desc)
    monkeypatch.setenv("SAGE_QUEUE_HOST_ID", OTHER_HOST)
    remote: Any = resolve_descriptor(desc.to_json())
    try:
        local.put_many([1, Gone(2), 3, Gone(4)])
        with monkeypatch.context() as patch:
            patch.delattr(sys.modules[__name__], "Gone")
            with pytest.raises(AttributeError) as many:
                remote.get_many(3, timeout=60)  # prefetches the four, returns at most three
            with pytest.raises(AttributeError) as one:
                remote.get(timeout=60)
        assert cast(Any, many.value).items_received == [1]
        left = [pickle.loads(p) for p in cast(Any, many.value).payloads_left]
        assert [type(x).__name__ for x in left] == ["Gone", "int"] and left[0].value == 2 and left[1] == 3
        assert cast(Any, one.value).items_received == []
        assert [pickle.loads(p).value for p in cast(Any, one.value).payloads_left] == [4]
        assert local.qsize() == 0
    finally:
        remote.close()
        local.close()


def test_auto_from_other_machines_actors(auto_desc: Callable[..., QueueDescriptor], workers: Any,
                                         actors: List[Any]) -> None:
    """Actors started with another SAGE_QUEUE_HOST_ID reach the queue
    through the bridge, both ways, exact counts and order per producer."""
    import ray

    desc = auto_desc()
    local: Any = resolve_descriptor(desc)
    env = {"env_vars": {"SAGE_QUEUE_HOST_ID": OTHER_HOST}}
    users = [workers.AutoUser.options(runtime_env=env).remote(desc.to_json()) for _ in range(3)]
    actors.extend(users)
    try:
        kinds = ray.get([u.kind.remote() for u in users], timeout=WAIT)
        assert {k[:2] for k in kinds} == {("RemoteAutoQueue", OTHER_HOST)}
        # Remote producers (put and put_many) -> the local consumer.
        done = [users[0].produce.remote(0, 3000), users[1].produce.remote(1, 3000, 100)]
        got: List[Any] = []
        while len(got) < 6000:
            got.extend(local.get_many(1000, timeout=60))
        assert ray.get(done, timeout=WAIT) == [3000, 3000]
        for p in (0, 1):
            assert [s for q, s in got if q == p] == list(range(3000))
        # Local producer -> a remote consumer.
        pending = users[2].consume.remote(5000)
        local.put_many([(9, s) for s in range(5000)])
        assert ray.get(pending, timeout=WAIT) == [(9, s) for s in range(5000)]
        assert local.qsize() == 0
        ray.get([u.close.remote() for u in users], timeout=WAIT)
    finally:
        local.close()


def test_auto_remote_producer_flushes_at_exit(ray_session: Any, auto_desc: Callable[..., QueueDescriptor]) -> None:
    """A driver on "another machine" puts and exits without flush() or
    close(): its buffered items still arrive (the exit flush)."""
    desc = auto_desc(batch_size=10_000, flush_delay=60)  # nothing would go before exit otherwise
    local: Any = resolve_descriptor(desc)
    code = (
        "import sys, ray\n"
        "ray.init(address=sys.argv[1], logging_level='WARNING')\n"
        "from sage_queue.descriptor import resolve_descriptor\n"
        "q = resolve_descriptor(sys.argv[2])\n"
        "assert type(q).__name__ == 'RemoteAutoQueue', type(q)\n"
        "for i in range(100):\n"
        "    q.put(('exit', i))\n"
    )
    try:
        result = subprocess.run([sys.executable, "-c", code, ray_session.address_info["address"], desc.to_json()],
                                env=child_env(SAGE_QUEUE_HOST_ID=OTHER_HOST), capture_output=True, text=True,
                                timeout=WAIT)
        assert result.returncode == 0, result.stderr[-3000:]
        assert local.get_many(1000, block=False) == [("exit", i) for i in range(100)]
    finally:
        local.close()


# ---------------------------------------------------------------- asyncio in Ray


def test_async_actor_consumes_while_the_driver_produces(make_queue: Callable[..., SageQueue], workers: Any,
                                                        actors: List[Any]) -> None:
    """An async Ray actor awaits get_many_async / async for on a SageQueue
    while the driver produces; its event loop keeps answering other calls
    meanwhile, and a Ray cancellation of an awaiting call loses nothing."""
    import ray

    q = make_queue(1 << 16)
    consumer = workers.AsyncConsumer.remote(q)
    actors.append(consumer)
    n = 5000
    pending = consumer.consume.remote(n)
    # The actor's loop is free while consume() awaits an empty queue.
    for _ in range(3):
        assert ray.get(consumer.progress.remote(), timeout=WAIT) == 0
    assert ray.get(consumer.pending_aio_threads.remote(), timeout=WAIT) == ["sage_queue-aio-readable"]
    for start in range(0, n, 500):
        q.put_many(range(start, start + 500))
    pid, items = ray.get(pending, timeout=WAIT)
    assert pid != os.getpid() and items == list(range(n))

    # Cancelling an awaiting actor call takes nothing from the queue.
    waiting = consumer.consume.remote(n + 1)
    assert ray.get(consumer.progress.remote(), timeout=WAIT) == n
    ray.cancel(waiting)
    with pytest.raises((ray.exceptions.TaskCancelledError, ray.exceptions.RayTaskError)):
        ray.get(waiting, timeout=WAIT)
    q.put("after")
    assert q.get(timeout=60) == "after"

    # async for ends at shutdown, after everything the driver put.
    until = consumer.consume_until_shutdown.remote()
    q.put_many(["x", "y", "z"])
    q.shutdown()
    assert ray.get(until, timeout=WAIT)[n:] == ["x", "y", "z"]
