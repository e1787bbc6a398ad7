"""shutdown() as Python 3.13's queue.Queue.shutdown, and task_done()/join()
within a process and across processes."""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time
from typing import Callable, List

import pytest

from sage_queue import SageQueue, ShutDown, open_queue

import _workers


def test_put_after_shutdown_raises(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    q.shutdown()
    assert q.is_shutdown
    for op in (lambda: q.put(1), lambda: q.put_nowait(1), lambda: q.put(1, timeout=1),
               lambda: q.put_bytes(b"x"), lambda: q.put_many([1, 2])):
        with pytest.raises(ShutDown):
            op()
    assert q.qsize() == 0


def test_get_drains_then_raises(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    q.put_many([1, 2, 3, 4])
    q.shutdown()
    assert q.get() == 1
    assert q.get_nowait() == 2
    assert q.get_many(5) == [3, 4]
    for op in (q.get, q.get_nowait, lambda: q.get(timeout=5), q.get_bytes, lambda: q.get_many(3)):
        with pytest.raises(ShutDown):
            op()


def test_shutdown_seen_by_other_handles(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    other = open_queue(q.name)
    try:
        q.put("left")
        q.shutdown()
        assert other.is_shutdown
        with pytest.raises(ShutDown):
            other.put("more")
        assert other.get() == "left"
        with pytest.raises(ShutDown):
            other.get()
    finally:
        other.close()


def test_shutdown_wakes_blocked_getters_and_putters(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(1024)
    full = make_queue(1024)
    full.put_bytes(b"x" * full.max_message_size)
    outcomes: List[str] = []

    def blocked(op: Callable[[], object]) -> None:
        try:
            op()
            outcomes.append("returned")
        except ShutDown:
            outcomes.append("ShutDown")

    threads = [threading.Thread(target=blocked, args=(q.get,)) for _ in range(3)]
    threads.append(threading.Thread(target=blocked, args=(lambda: full.put("y"),)))
    for t in threads:
        t.start()
    time.sleep(0.3)  # let them block
    q.shutdown()
    full.shutdown()
    for t in threads:
        t.join(30)
    assert outcomes == ["ShutDown"] * 4


def test_shutdown_immediate_discards_and_unblocks_join(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    q.put_many(range(5))
    assert q.get() == 0
    q.task_done()
    assert q.unfinished_tasks == 4
    joined = threading.Event()
    def join_then_set() -> None:
        q.join()
        joined.set()

    t = threading.Thread(target=join_then_set)
    t.start()
    time.sleep(0.2)
    assert not joined.is_set()
    q.shutdown(immediate=True)
    t.join(30)
    assert joined.is_set()
    assert q.qsize() == 0 and q.unfinished_tasks == 0
    with pytest.raises(ShutDown):
        q.get()
    with pytest.raises(ShutDown):
        q.put(1)
    q.shutdown()  # again: harmless


def test_task_done_and_join(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    assert q.join(timeout=0) is True  # nothing put yet
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()
    q.put_many(["a", "b"])
    assert q.unfinished_tasks == 2
    assert q.join(timeout=0.1) is False
    q.get()
    q.task_done()
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()  # only one was received
    q.get()
    q.task_done()
    assert q.join(timeout=0) is True
    q.join()
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()


def test_join_across_processes(make_queue: Callable[..., SageQueue]) -> None:
    ctx = mp.get_context("spawn")
    q = make_queue()
    n = 200
    workers = [ctx.Process(target=_workers.work_and_mark_done, args=(q, n // 2)) for _ in range(2)]
    for w in workers:
        w.start()
    q.put_many(range(n))
    assert q.join(timeout=120) is True
    assert q.unfinished_tasks == 0
    assert q.get_stats()["tasks_done"] == n
    for w in workers:
        w.join(60)
        assert w.exitcode == 0


def test_shutdown_across_processes(make_queue: Callable[..., SageQueue]) -> None:
    """Consumers in other processes drain what is left and stop on ShutDown."""
    ctx = mp.get_context("fork")
    q = make_queue(1 << 16)
    results = make_queue()
    consumers = [ctx.Process(target=_workers.consumer_process, args=(q, results)) for _ in range(2)]
    for c in consumers:
        c.start()
    _workers.produce(q, 0, 500)
    q.shutdown()
    reports = [results.get(timeout=60) for _ in consumers]
    for c in consumers:
        c.join(60)
        assert c.exitcode == 0
    assert sum(r[1] for r in reports) == 500
    assert sum(r[2] for r in reports) == _workers.expected_checksum(1, 500)
    with pytest.raises(queue.Empty):
        results.get_nowait()
