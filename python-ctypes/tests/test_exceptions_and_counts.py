"""Answers that used to be wrong (issue 9, items 6-9): ``ShutDown`` that
interrupts a ``put_many`` says how many items went in; ``get_many`` sizes
its buffers by what can arrive, not by ``max_items``; ``Empty``/``Full``
carry the legacy wrapper's texts, which SAGE's loops test; and a failing
count is an exception, never a plausible number."""

from __future__ import annotations

import queue
import threading
import tracemalloc
from typing import Callable, List

import pytest

from sage_queue import ClosedQueueError, CorruptQueueError, IncompatibleQueueError, SageQueue, ShutDown
from sage_queue.queue import MAX_BATCH

from conftest import SHM

# ---------------------------------------------------------------- item 6


def test_put_many_cut_short_by_shutdown_says_how_many(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(4096)
    items = [b"i" * 100] * 2000
    got: List[bytes] = []
    outcome: List[BaseException] = []

    def producer() -> None:
        try:
            q.put_many(items)
        except ShutDown as exc:
            outcome.append(exc)

    t = threading.Thread(target=producer)
    t.start()
    # Let a few hundred items through, then shut down mid-stream.
    while len(got) < 300:
        got.extend(q.get_many(50, timeout=10))
    q.shutdown()
    t.join(30)
    assert not t.is_alive()
    while True:
        try:
            got.extend(q.get_many(100, block=False))
        except (queue.Empty, ShutDown):
            break
    assert outcome, "put_many finished before the shutdown; the test needs a slower consumer"
    exc = outcome[0]
    assert exc.items_put == len(got)  # type: ignore[attr-defined]
    assert 300 <= exc.items_put < len(items)  # type: ignore[attr-defined]
    assert f"put {len(got)} of {len(items)} items" in str(exc)


# ---------------------------------------------------------------- item 7


def test_get_many_allocates_for_what_can_arrive(make_queue: Callable[..., SageQueue]) -> None:
    max_items = 10**8  # 400 MB of lengths if sized by max_items
    q = make_queue()
    q.put_many([41, 42])
    assert q.get() == 41  # the thread's receive buffer exists: not counted below
    tracemalloc.start()
    try:
        assert q.get_many(max_items) == [42]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The length array is bounded by the ring (1 MiB holds < 256Ki frames)
    # and by MAX_BATCH.
    assert peak < 1 << 20, f"get_many({max_items}) allocated {peak} bytes for one item"
    assert MAX_BATCH >= 1 << 16


def test_get_many_still_takes_everything_a_big_ring_holds(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(1 << 20)
    q.put_many_bytes([b""] * 5000)
    assert len(q.get_many_bytes(10**9)) == 5000


# ---------------------------------------------------------------- item 8


def test_empty_and_full_carry_the_legacy_texts(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(1024)
    with pytest.raises(queue.Empty) as e:
        q.get_nowait()
    assert str(e.value) == "Queue is empty"
    with pytest.raises(queue.Empty) as e:
        q.get(timeout=0.05)
    assert str(e.value) == "Get operation timed out"
    with pytest.raises(queue.Empty) as e:
        q.get_many(3, timeout=0.05)
    assert str(e.value) == "Get operation timed out"
    with pytest.raises(queue.Empty) as e:
        q.get_bytes(block=False)
    assert str(e.value) == "Queue is empty"
    q.put_bytes(b"x" * 900)
    with pytest.raises(queue.Full) as f:
        q.put_nowait(b"y" * 200)
    assert str(f.value) == "Queue is full"
    with pytest.raises(queue.Full) as f:
        q.put(b"y" * 200, timeout=0.05)
    assert str(f.value) == "Put operation timed out"
    with pytest.raises(queue.Full) as f:
        q.put_many([b"y" * 200], timeout=0.05)
    assert str(f.value).startswith("Put operation timed out")


# ---------------------------------------------------------------- item 9


def test_counts_of_a_corrupt_queue_raise(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(4096)
    q.put("a")
    # A neighbour writes the consumed-message count past the published one.
    ext = (200 + 4096 + 63) & ~63
    with open(SHM / f"sage_ringbuf_{q.name}", "r+b") as f:
        f.seek(ext + 256 + 48)
        f.write((7).to_bytes(8, "little"))
    with pytest.raises(CorruptQueueError):
        q.qsize()
    with pytest.raises(CorruptQueueError):
        q.empty()
    with pytest.raises(CorruptQueueError):
        q.get_stats()


def test_unfinished_tasks_of_a_legacy_queue_raise(qname: str) -> None:
    path = SHM / f"sage_ringbuf_{qname}"
    header = bytearray(200)
    header[0:8] = (0x53414745424C4B52).to_bytes(8, "little")
    header[8:12] = (1).to_bytes(4, "little")
    header[12:16] = (1024).to_bytes(4, "little")
    with open(path, "xb") as f:
        f.write(bytes(header) + bytes(1024))
    path.chmod(0o600)
    q = SageQueue.open(qname)
    try:
        assert q.layout_version == 1
        with pytest.raises(IncompatibleQueueError):
            _ = q.unfinished_tasks
        assert q.qsize() == 0
        assert q.full() is False
    finally:
        q.close()


def test_counts_of_a_closed_queue_raise(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(1024)
    q.close()
    for probe in (q.qsize, q.full, q.empty, lambda: q.unfinished_tasks):
        with pytest.raises(ClosedQueueError):
            probe()
