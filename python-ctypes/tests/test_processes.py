"""Many processes on one queue: every start method, ProcessPoolExecutor,
inherited handles under fork, exact cross-process qsize, pickling by name."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, List, Tuple

import pytest

from sage_queue import SageQueue

import _workers

PRODUCERS = 3
CONSUMERS = 3
PER_PRODUCER = 1500


def _check_reports(reports: List[Tuple[Any, ...]], producers: int, per_producer: int) -> None:
    total = sum(r[-3] for r in reports)
    checksum = sum(r[-2] for r in reports)
    assert total == producers * per_producer, f"lost or duplicated: {total}"
    assert checksum == _workers.expected_checksum(producers, per_producer)
    assert all(r[-1] for r in reports), "a producer's items arrived out of order"


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize("batch", [0, 32], ids=["put-get", "put_many-get_many"])
def test_start_methods_many_producers_and_consumers(
    method: str, batch: int, make_queue: Callable[..., SageQueue]
) -> None:
    ctx: Any = mp.get_context(method)
    q = make_queue(1 << 14)  # small ring: producers have to wait for room
    results = make_queue()
    consumers = [ctx.Process(target=_workers.consumer_process, args=(q, results, batch)) for _ in range(CONSUMERS)]
    producers = [ctx.Process(target=_workers.producer_process, args=(q, p, PER_PRODUCER, batch))
                 for p in range(PRODUCERS)]
    for proc in consumers + producers:
        proc.start()
    try:
        for proc in producers:
            proc.join(120)
            assert proc.exitcode == 0
        q.shutdown()  # consumers drain what is left, then stop
        reports = [results.get(timeout=120) for _ in consumers]
    finally:
        q.shutdown(immediate=True)
        for proc in consumers + producers:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    assert all(proc.exitcode == 0 for proc in consumers)
    assert len({r[0] for r in reports}) == CONSUMERS
    _check_reports(reports, PRODUCERS, PER_PRODUCER)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_process_pool_executor(method: str, make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(1 << 14)
    with ProcessPoolExecutor(max_workers=PRODUCERS + CONSUMERS, mp_context=mp.get_context(method)) as pool:
        assert pool.submit(_workers.pool_task_identity, q).result(120) == (q.name, q.maxsize)
        consumers = [pool.submit(_workers.consume_until_shutdown, q) for _ in range(CONSUMERS)]
        producers = [pool.submit(_workers.produce, q, p, PER_PRODUCER) for p in range(PRODUCERS)]
        try:
            assert [f.result(120) for f in producers] == [PER_PRODUCER] * PRODUCERS
            q.shutdown()
            reports = [f.result(120) for f in consumers]
        finally:
            q.shutdown(immediate=True)
    _check_reports(reports, PRODUCERS, PER_PRODUCER)


def test_forked_child_uses_inherited_object(make_queue: Callable[..., SageQueue]) -> None:
    ctx = mp.get_context("fork")
    q = make_queue()
    q.put("from parent")
    child = ctx.Process(target=_workers.use_inherited, args=(q,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    tag, pid, echoed = q.get(timeout=10)
    assert (tag, echoed) == ("child", "from parent") and pid == child.pid
    q.put("parent still works")
    assert q.get() == "parent still works"


def test_qsize_exact_across_processes(make_queue: Callable[..., SageQueue]) -> None:
    ctx = mp.get_context("spawn")
    q = make_queue()
    results = make_queue()
    writer = ctx.Process(target=_workers.put_items, args=(q, list(range(37))))
    writer.start()
    writer.join(60)
    assert writer.exitcode == 0
    assert q.qsize() == 37
    reader = ctx.Process(target=_workers.get_items, args=(q, 12, results))
    reader.start()
    assert results.get(timeout=60) == list(range(12))
    reader.join(60)
    assert q.qsize() == 25
    probe = ctx.Process(target=_workers.report_qsize, args=(q, results))
    probe.start()
    assert results.get(timeout=60) == 25
    probe.join(60)


def test_reference_in_child(make_queue: Callable[..., SageQueue]) -> None:
    ctx = mp.get_context("spawn")
    q = make_queue()
    ref = q.get_reference()
    child = ctx.Process(target=_workers.open_ref_and_put, args=(ref, {"hello": "from ref"}))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert q.get(timeout=10) == {"hello": "from ref"}


def test_pickles_by_name_not_handle(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(2048, auto_cleanup=False)
    data = pickle.dumps(q)
    assert q.name.encode() in data
    assert len(data) < 300  # a name and a few flags, never the ring


def test_threads_share_one_queue(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(1 << 14)
    out: List[Tuple[Any, ...]] = []
    lock = threading.Lock()

    def consume() -> None:
        report = _workers.consume_until_shutdown(q)
        with lock:
            out.append(report)

    consumers = [threading.Thread(target=consume) for _ in range(3)]
    producers = [threading.Thread(target=_workers.produce, args=(q, p, 1000, 16 if p % 2 else 0))
                 for p in range(4)]
    for t in consumers + producers:
        t.start()
    for t in producers:
        t.join(120)
    q.shutdown()
    for t in consumers:
        t.join(120)
    _check_reports(out, 4, 1000)
