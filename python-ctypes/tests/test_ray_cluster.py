"""The ``auto`` type on a real two-node Ray cluster on this machine
(``ray.cluster_utils.Cluster``): the head node holds the queue (this
driver, the bridge); actors on the second node run with another
``SAGE_QUEUE_HOST_ID``, so for them the queue is on another machine and
they reach it through the bridge. Items move both ways with exact counts
and per-producer order; then the bridge is killed mid-stream and both
remote sides get ``QueueUnavailableError`` instead of hanging.

Small on purpose (2 cores shared): one CPU per node, small object stores,
actors reserving no CPU."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterator, List, Tuple, cast

import pytest

from sage_queue.descriptor import QueueDescriptor, resolve_descriptor
from sage_queue.hostid import host_id
from sage_queue.transport_auto import destroy_auto_queue

from conftest import PACKAGE_ROOT, RUN_PREFIX, unique_name

TESTS_DIR = Path(__file__).resolve().parent
OTHER_HOST = "t15-second-node-machine"
WAIT = 300
STORE = 80 * 1024 * 1024


@pytest.fixture(scope="module")
def cluster() -> Iterator[Tuple[Any, str, str, Any]]:
    """(cluster, head node id, second node id, second node), with this
    driver connected. Node deaths are detected within about two seconds."""
    import ray
    from ray.cluster_utils import Cluster

    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), str(TESTS_DIR), saved]))
    c: Any = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": STORE,
                                                      "include_dashboard": False,
                                                      "_system_config": {"health_check_period_ms": 500,
                                                                         "health_check_failure_threshold": 4}})
    try:
        second = c.add_node(num_cpus=1, object_store_memory=STORE)
        ray.init(address=c.address, namespace=f"sage_queue_cluster_{RUN_PREFIX}", logging_level=logging.WARNING)
        try:
            c.wait_for_nodes()
            head_id = ray.get_runtime_context().get_node_id()
            assert second.node_id != head_id
            yield c, head_id, second.node_id, second
        finally:
            ray.shutdown()
    finally:
        c.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def second_node_options(cluster: Tuple[Any, str, str, Any]) -> Any:
    """Actor options: on the second node, as another machine."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(cluster[2], soft=False),
            "runtime_env": {"env_vars": {"SAGE_QUEUE_HOST_ID": OTHER_HOST}}}


def on_second_node(cluster: Tuple[Any, str, str, Any], desc: QueueDescriptor, count: int) -> List[Any]:
    """``count`` AutoUser actors on the second node, as another machine."""
    import _ray_workers

    options = second_node_options(cluster)
    user: Any = _ray_workers.AutoUser
    return [user.options(**options).remote(desc.to_json()) for _ in range(count)]


@pytest.fixture
def auto_queue(cluster: Tuple[Any, str, str, Any]) -> Iterator[QueueDescriptor]:
    desc = QueueDescriptor.create_auto_queue(unique_name("cl"), 1 << 20, batch_size=256)
    try:
        yield desc
    finally:
        destroy_auto_queue(desc)


def test_both_ways_between_two_nodes(cluster: Tuple[Any, str, str, Any], auto_queue: QueueDescriptor) -> None:
    import ray

    desc = auto_queue
    bridge = ray.get_actor(desc.metadata["bridge_name"], namespace=desc.metadata["bridge_namespace"])
    bridge_node: Any = ray.get(bridge.node_id.remote(), timeout=WAIT)
    assert bridge_node == cluster[1] == desc.metadata["node_id"]
    assert ray.get(bridge.host.remote(), timeout=WAIT) == host_id() != OTHER_HOST
    local: Any = resolve_descriptor(desc)
    users = on_second_node(cluster, desc, 4)
    try:
        kinds = ray.get([u.kind.remote() for u in users], timeout=WAIT)
        assert kinds == [("RemoteAutoQueue", OTHER_HOST, cluster[2])] * 4
        # Second node -> head: two producers (put, put_many), exact and in order.
        per = 5000
        done = [users[0].produce.remote(0, per), users[1].produce.remote(1, per, 300)]
        got: List[Any] = []
        while len(got) < 2 * per:
            got.extend(local.get_many(2000, timeout=60))
        assert ray.get(done, timeout=WAIT) == [per, per]
        assert sorted(got) == [(p, s) for p in (0, 1) for s in range(per)]
        for p in (0, 1):
            assert [s for q, s in got if q == p] == list(range(per))
        # Head -> second node: two consumers share the stream exactly once.
        consumed = [users[2].consume.remote(3000), users[3].consume.remote(3000)]
        local.put_many([(7, s) for s in range(6000)])
        parts = ray.get(consumed, timeout=WAIT)
        assert sorted(parts[0] + parts[1]) == [(7, s) for s in range(6000)]
        for part in parts:
            assert part == sorted(part)  # each consumer sees the producer's order
        assert local.qsize() == 0
        ray.get([u.close.remote() for u in users], timeout=WAIT)
    finally:
        for u in users:
            ray.kill(u)
        local.close()


def test_bridge_killed_mid_stream(cluster: Tuple[Any, str, str, Any], auto_queue: QueueDescriptor) -> None:
    """A producer and a consumer on the second node stream through the
    bridge; the bridge is killed: both get QueueUnavailableError (no hang),
    nothing is duplicated or reordered, and at most a few batches (the
    producer's buffer, the bridge's batch) are lost."""
    import time

    import ray

    desc = auto_queue
    batch = desc.metadata["batch_size"]
    local: Any = resolve_descriptor(desc)
    producer, consumer = on_second_node(cluster, desc, 2)
    try:
        ray.get([producer.kind.remote(), consumer.kind.remote()], timeout=WAIT)
        received_ref = consumer.consume_until_error.remote()
        produced_ref = producer.produce_until_error.remote(3, 10_000_000)
        # Let the stream run, then kill the bridge.
        bridge = ray.get_actor(desc.metadata["bridge_name"], namespace=desc.metadata["bridge_namespace"])
        deadline = time.monotonic() + 120
        while cast(int, ray.get(bridge.qsize.remote(), timeout=WAIT)) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        ray.kill(bridge, no_restart=True)
        (received, consumer_error), (produced, producer_error) = ray.get([received_ref, produced_ref], timeout=WAIT)
        assert consumer_error.startswith("QueueUnavailableError") and "bridge" in consumer_error, consumer_error
        assert producer_error.startswith("QueueUnavailableError") and "bridge" in producer_error, producer_error
        left = local.get_many(1_000_000, block=False) if local.qsize() else []
        seqs = [s for _, s in received + left]
        assert len(received) > 0 and 0 < produced < 10_000_000
        assert len(set(seqs)) == len(seqs)  # nothing twice
        assert [s for _, s in received] == sorted(s for _, s in received)  # producer's order
        assert set(seqs) <= set(range(produced + 1))
        lost = produced - len(seqs)
        assert lost <= 3 * batch, (produced, len(received), len(left))
        print(f"bridge killed: produced {produced}, received {len(received)}, left {len(left)}, lost {lost}")
        # A new resolution there says the bridge is gone (the actor's
        # constructor raised it); the queue itself lives on here.
        with pytest.raises(ray.exceptions.RayActorError) as info:
            ray.get(on_second_node(cluster, desc, 1)[0].kind.remote(), timeout=WAIT)
        assert "QueueUnavailableError" in str(info.value) and "is gone" in str(info.value)
        local.put("still here")
        assert local.get(timeout=60) == "still here"
    finally:
        ray.kill(producer)
        ray.kill(consumer)
        local.close()


def test_a_remote_consumer_that_closes_puts_back_what_it_prefetched(
        cluster: Tuple[Any, str, str, Any], auto_queue: QueueDescriptor) -> None:
    """A remote consumer's first get prefetches a batch; close() puts back
    the items it did not return: none is lost, and their gets are marked
    done (each item counts once in unfinished_tasks)."""
    import ray

    local: Any = resolve_descriptor(auto_queue)
    [user] = on_second_node(cluster, auto_queue, 1)
    try:
        local.put_many(list(range(1000)))
        assert ray.get(user.get_then_close.remote(3), timeout=WAIT) == [0, 1, 2]
        rest: List[Any] = []
        while len(rest) < 997:
            rest.extend(local.get_many(1000, timeout=10))
        assert sorted(rest) == list(range(3, 1000))
        assert local.qsize() == 0
        assert local.unfinished_tasks == 1000
    finally:
        ray.kill(user)
        local.close()


def test_task_done_and_join_across_nodes(cluster: Tuple[Any, str, str, Any], auto_queue: QueueDescriptor) -> None:
    """task_done() on the second node counts on the queue's machine (sent
    by the flusher without another call); more marks than items returned
    there is a ValueError; join() waits on either side for the other's
    marks, with a timeout that returns False."""
    import time

    import ray

    local: Any = resolve_descriptor(auto_queue)
    consumer, producer = on_second_node(cluster, auto_queue, 2)
    try:
        local.put_many(list(range(100)))
        assert sorted(ray.get(consumer.consume.remote(100), timeout=WAIT)) == list(range(100))
        assert local.join(timeout=0.2) is False
        assert ray.get(consumer.mark_done.remote(60), timeout=WAIT) == (60, "")
        deadline = time.monotonic() + 60
        while local.unfinished_tasks != 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert local.unfinished_tasks == 40
        assert ray.get(consumer.unfinished.remote(), timeout=WAIT) == 40
        marked, error = ray.get(consumer.mark_done.remote(41), timeout=WAIT)
        assert marked == 40 and error.startswith("ValueError: task_done() called more times"), error
        assert local.join(timeout=60) is True
        # The other way: a remote producer's join waits for this consumer.
        joined = producer.put_and_join.remote(list(range(50)), 120)
        got: List[Any] = []
        while len(got) < 50:
            got.extend(local.get_many(50, timeout=60))
        assert sorted(got) == list(range(50))
        ready, _ = ray.wait([joined], timeout=0.5)
        assert not ready, "join returned before the items were marked done"
        for _ in got:
            local.task_done()
        assert ray.get(joined, timeout=WAIT) is True
        assert ray.get(producer.put_and_join.remote(["x"], 0.3), timeout=WAIT) is False
        assert local.get(timeout=60) == "x"
        local.task_done()
        assert ray.get(producer.join.remote(60), timeout=WAIT) is True
        ray.get([consumer.close.remote(), producer.close.remote()], timeout=WAIT)
        assert local.unfinished_tasks == 0
    finally:
        ray.kill(consumer)
        ray.kill(producer)
        local.close()


def test_second_nodes_queue_from_the_head_and_node_death(cluster: Tuple[Any, str, str, Any]) -> None:
    """The other way round: a queue made on the second node ("another
    machine", bridge pinned there) is reached from this driver through the
    bridge, both ways, exactly; then the second node dies and the driver's
    blocked get and its put both end in QueueUnavailableError. Last in the
    module: the node stays dead."""
    import threading

    import ray

    from sage_queue import destroy_queue
    from sage_queue.errors import QueueUnavailableError
    from sage_queue.ray_bridge import RemoteAutoQueue

    import _ray_workers

    owner_class: Any = _ray_workers.AutoOwner
    owner = owner_class.options(**second_node_options(cluster)).remote(unique_name("nd"), 64)
    text, owner_kind = ray.get(owner.descriptor.remote(), timeout=WAIT)
    desc = QueueDescriptor.from_json(text)
    try:
        assert owner_kind == "DescribedSageQueue" and desc.metadata["host_id"] == OTHER_HOST
        assert desc.metadata["node_id"] == cluster[2]
        remote: Any = resolve_descriptor(text)
        assert isinstance(remote, RemoteAutoQueue)
        assert ray.get(owner.put_range.remote(1000), timeout=WAIT) == 1000
        got: List[Any] = []
        while len(got) < 1000:
            got.extend(remote.get_many(1000, timeout=60))
        assert got == list(range(1000))
        taken = owner.take.remote(500)
        for i in range(500):
            remote.put(("head", i))
        remote.flush()
        assert ray.get(taken, timeout=WAIT) == [("head", i) for i in range(500)]
        # A get blocked for ever, then the node goes.
        outcome: List[BaseException] = []

        def blocked_get() -> None:
            try:
                remote.get()
            except BaseException as exc:  # reported to the test
                outcome.append(exc)

        waiter = threading.Thread(target=blocked_get, daemon=True)
        waiter.start()
        cluster[0].remove_node(cluster[3], allow_graceful=False)
        waiter.join(120)
        assert not waiter.is_alive(), "a get through a dead node's bridge hung"
        assert len(outcome) == 1 and isinstance(outcome[0], QueueUnavailableError), outcome
        assert "bridge" in str(outcome[0])
        with pytest.raises(QueueUnavailableError):
            remote.put("after", timeout=5)
        with pytest.raises(QueueUnavailableError):
            resolve_descriptor(text)
    finally:
        destroy_queue(desc.metadata["queue_name"])  # the dead node's queue, still in this machine's /dev/shm
