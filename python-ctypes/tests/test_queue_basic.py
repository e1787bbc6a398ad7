"""SageQueue in one process: the queue.Queue API, bytes, batches, codecs,
state, statistics, references, lifetime."""

from __future__ import annotations

import pickle
import queue
import threading
import time
from typing import Any, Callable, List

import pytest

import sage_queue
from sage_queue import (
    DEFAULT_MAXSIZE,
    SageQueue,
    SageQueueRef,
    create_queue,
    destroy_queue,
    open_queue,
)
from sage_queue.descriptor import DEFAULT_SHM_MAXSIZE

from conftest import SHM, logged


def test_put_get_fifo_and_types(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    items = [1, "two", b"three", {"four": [4]}, (5.0, None), list(range(100))]
    for item in items:
        q.put(item)
    assert q.qsize() == len(items)
    assert [q.get() for _ in items] == items
    assert q.empty()


def test_default_size_and_rounding(make_queue: Callable[..., SageQueue]) -> None:
    # 1 MiB (issue 14: a 64 KiB default was the slow path for batches of
    # small items; examples/ring_size_cost.py measures it).
    assert make_queue().maxsize == DEFAULT_MAXSIZE == 1 << 20
    assert DEFAULT_SHM_MAXSIZE == DEFAULT_MAXSIZE  # shm/sage_queue descriptors: the same default
    assert make_queue(0).maxsize == 1 << 20
    assert make_queue(1).maxsize == 1024
    assert make_queue(5000).maxsize == 8192
    q = make_queue(4096)
    assert q.max_message_size == 4096 - 1 - 4


def test_nowait_and_empty(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(block=False)
    q.put_nowait("x")
    assert q.get_nowait() == "x"


def test_get_timeout_waits_at_least_the_timeout(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    for timeout in (0.05, 0.25):  # below and above the wait slice
        t0 = time.monotonic()
        with pytest.raises(queue.Empty):
            q.get(timeout=timeout)
        assert time.monotonic() - t0 >= timeout
    with pytest.raises(queue.Empty):
        q.get(timeout=0)


def test_infinite_timeout(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    q.put("x", timeout=float("inf"))
    assert q.get(timeout=float("inf")) == "x"
    q.put("y")
    assert q.get_many(5, timeout=float("inf")) == ["y"]


def test_put_timeout_on_full_queue(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(1024)
    q.put_bytes(b"x" * q.max_message_size)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(1)
    with pytest.raises(queue.Full):
        q.put(1, block=False)
    for timeout in (0.05, 0.25):
        t0 = time.monotonic()
        with pytest.raises(queue.Full):
            q.put(1, timeout=timeout)
        assert time.monotonic() - t0 >= timeout
    with pytest.raises(queue.Full):
        q.put(1, timeout=0)
    assert q.qsize() == 1


def test_negative_timeout_is_value_error(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    q.put(1)
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)
    with pytest.raises(ValueError, match="non-negative"):
        q.put(2, timeout=-0.5)
    with pytest.raises(ValueError):
        q.get_many(3, timeout=-1)
    with pytest.raises(ValueError):
        q.put_many([1], timeout=-1)
    with pytest.raises(ValueError):
        q.join(timeout=-1)
    # As queue.Queue: with block=False the timeout is ignored.
    assert q.get(block=False, timeout=-1) == 1
    q.put(3, block=False, timeout=-1)
    assert q.qsize() == 1


def test_blocked_get_wakes_on_put(make_queue: Callable[..., SageQueue]) -> None:
    import threading

    q = make_queue()
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=30)))
    t.start()
    time.sleep(0.3)  # let it block for a few wait slices
    q.put("late")
    t.join(30)
    assert got == ["late"]


def test_put_bytes_get_bytes_no_pickle(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    q.put_bytes(b"raw\x00bytes")
    q.put_bytes(bytearray(b"from bytearray"))
    q.put_bytes(memoryview(b"from memoryview"))
    q.put_bytes(b"")
    assert q.get_bytes() == b"raw\x00bytes"
    assert q.get_bytes() == b"from bytearray"
    assert q.get_bytes(timeout=1) == b"from memoryview"
    assert q.get_bytes(block=False) == b""
    with pytest.raises(queue.Empty):
        q.get_bytes(block=False)
    # Raw bytes and pickles share the framing: a pickled put reads back raw.
    q.put("s")
    assert pickle.loads(q.get_bytes()) == "s"


def test_put_many_get_many_order_and_counts(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(1 << 16)
    items = [(i, "x" * (i % 50)) for i in range(3000)]  # larger than the ring
    import threading

    received: List[Any] = []

    def consume() -> None:
        while len(received) < len(items):
            received.extend(q.get_many(100, timeout=30))

    t = threading.Thread(target=consume)
    t.start()
    assert q.put_many(items) == len(items)
    t.join(60)
    assert received == items


def test_get_many_of_items_of_one_length(make_queue: Callable[..., SageQueue]) -> None:
    """Batches whose payloads are all of one length are cut with slices kept
    per length (``queue._uniform_slices``): every item arrives whole and in
    order, whether the batch is shorter than the kept list (cut from it),
    longer (the list grows), of a new length once more lengths than are
    kept were seen (the cache starts again), or too short or too long to
    use them."""
    from sage_queue import queue as queue_module

    q = make_queue(1 << 20)
    first = queue_module._UNIFORM_FROM
    longest = queue_module._UNIFORM_TO
    lengths = range(10, 10 + queue_module._UNIFORM_LENGTHS + 3)
    counts = [first, first - 1, 3 * first, 300, first + 1, longest, longest + 5]
    for n, length in enumerate(lengths):
        for count in counts if n < 2 else counts[:1]:
            items = [bytes([(n + k) % 256]) * length for k in range(count)]
            assert len({len(pickle.dumps(i, pickle.HIGHEST_PROTOCOL)) for i in items}) == 1
            assert q.put_many(items) == count
            received: List[Any] = []
            while len(received) < count:
                received += q.get_many(count, timeout=10)
            assert received == items, (length, count)
            if first <= count <= longest:  # went the way under test
                assert len(pickle.dumps(items[0], pickle.HIGHEST_PROTOCOL)) in queue_module._uniform
    assert len(queue_module._uniform) <= queue_module._UNIFORM_LENGTHS
    # One length apart in the middle: the plain loop.
    items = [b"a" * 100] * 20
    items[10] = b"b" * 101
    q.put_many(items)
    assert q.get_many(100, timeout=10) == items


def test_put_many_of_plain_items_from_any_iterable(make_queue: Callable[..., SageQueue]) -> None:
    # put_many pickles a batch of plain items (bytes, str, numbers, ...) in one
    # comprehension and packs it without the out-of-band bookkeeping; a batch
    # with anything else, or with a str/bytes of 192 KiB or more, takes the
    # general path. Every mix, from a generator too, arrives whole and in order.
    q = make_queue(1 << 16)
    plain = [b"b", "s", 1, 2.5, True, None, bytearray(b"ba"), b"x" * 100_000]  # the last is larger than the ring
    general = [("a", "tuple"), "y" * (200 << 10), b"z" * (300 << 10)]
    for batch in (plain, plain + general, general[:1] + plain):
        assert q.put_many(item for item in batch) == len(batch)
        received: List[Any] = []
        while len(received) < len(batch):
            received.extend(q.get_many(len(batch), timeout=10))
        assert received == batch
    assert q.qsize() == 0


def test_put_many_of_plain_items_beyond_the_ring(make_queue: Callable[..., SageQueue]) -> None:
    # A plain batch whose pickles together exceed what one message may hold
    # (each fits): put in several calls, whole and in order, whether or not
    # one of them goes out of line; get_many cuts and unpickles each.
    q = make_queue(1 << 16)
    small = [bytes([i % 251]) * 1000 for i in range(300)]  # ~300 kB in all
    for batch in (small, small[:100] + [b"L" * 100_000] + small[100:]):
        received: List[Any] = []

        def consume(into: List[Any], n: int) -> None:
            while len(into) < n:
                into.extend(q.get_many(64, timeout=30))

        t = threading.Thread(target=consume, args=(received, len(batch)))
        t.start()
        assert q.put_many(batch) == len(batch)
        t.join(60)
        assert received == batch
    assert q.qsize() == 0


def _mid_sized_items(kind: str) -> List[Any]:
    """Six items of 40 kB: bytes, or float64 numpy arrays."""
    if kind == "bytes":
        return [bytes([i]) * 40_000 for i in range(6)]
    import numpy as np

    return [np.full(5000, float(i)) for i in range(6)]


def _same(got: Any, sent: Any) -> bool:
    return bool((got == sent).all()) if hasattr(sent, "dtype") else bool(got == sent)


@pytest.mark.parametrize("kind", ["bytes", "numpy"])
def test_put_many_of_mid_sized_items_counts_what_went_in(kind: str, make_queue: Callable[..., SageQueue]) -> None:
    # Plain items and numpy arrays of 32 KiB and more (on average) are put
    # one at a time, as put does: they still arrive in order, and a batch
    # that stops part-way says how many went in.
    q = make_queue(1 << 16)  # room for one 40 kB item at a time
    items = _mid_sized_items(kind)
    with pytest.raises(queue.Full) as info:
        q.put_many(items, block=False)
    assert info.value.items_put == 1  # type: ignore[attr-defined]
    with pytest.raises(queue.Full) as info:
        q.put_many(items[1:], timeout=0.05)
    assert info.value.items_put == 0  # type: ignore[attr-defined]
    assert _same(q.get(), items[0])

    received: List[Any] = []

    def consume() -> None:
        while len(received) < len(items):
            received.append(q.get(timeout=30))

    t = threading.Thread(target=consume)
    t.start()
    assert q.put_many(iter(items)) == len(items)
    t.join(60)
    assert len(received) == len(items) and all(map(_same, received, items))
    q.put(b"last")
    q.shutdown()
    with pytest.raises(sage_queue.ShutDown) as shut:
        q.put_many(items)
    assert shut.value.items_put == 0


def test_put_many_of_large_items_puts_each_as_soon_as_it_is_made(
    make_queue: Callable[..., SageQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Items that cannot fail to serialise (numpy arrays without objects;
    # plain items, some large) and are large on average go in one at a
    # time, each put as soon as it is made. Made all first, a batch kept a
    # consumer that had taken the previous one waiting past its patience:
    # it slept once per batch (1 -> 1, 64 KiB arrays: 105k items/s against
    # put's 235k).
    import numpy as np

    import sage_queue.queue as sq
    from sage_queue import _lib

    log: List[str] = []
    for name in ("_array_vectors", "_array_pieces", "_dumps_large"):
        monkeypatch.setattr(sq, name, logged(log, "made", getattr(sq, name)))
    monkeypatch.setattr(_lib, "put_msgv", logged(log, "put", _lib.put_msgv))
    q = make_queue()
    arrays = [np.full(8192, float(i)) for i in range(4)]
    big = [b"B" * (200 << 10), b"C" * (200 << 10), "small", 7]
    for batch, sent in ((arrays, 4), (arrays, 4), (big, 2)):
        log.clear()
        assert q.put_many(batch) == len(batch)
        assert log == ["made", "put"] * sent
        received = [q.get(timeout=10) for _ in batch]
        for got, item in zip(received, batch):
            assert (got == item).all() if isinstance(item, np.ndarray) else got == item
        del received
    assert q.qsize() == 0


def test_get_many_bounds(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    assert q.put_many([]) == 0
    q.put_many(range(10))
    assert q.get_many(3) == [0, 1, 2]
    assert q.get_many(100) == list(range(3, 10))
    with pytest.raises(queue.Empty):
        q.get_many(5, block=False)
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get_many(5, timeout=0.2)
    assert time.monotonic() - t0 >= 0.2
    with pytest.raises(ValueError):
        q.get_many(0)
    with pytest.raises(TypeError):
        q.get_many(2.5)  # type: ignore[arg-type]


def test_get_many_stops_at_receive_buffer(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(1 << 16, buffer_size=2048)
    q.put_many_bytes([b"a" * 1000] * 5)
    first = q.get_many_bytes(10)
    assert 1 <= len(first) <= 2
    rest: List[Any] = []
    while len(first) + len(rest) < 5:
        rest.extend(q.get_many_bytes(10, timeout=1))
    assert first + rest == [b"a" * 1000] * 5


def test_messages_larger_than_receive_buffer(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(1 << 16, buffer_size=64)
    big = b"b" * 10_000
    q.put(big)
    q.put_bytes(big)
    q.put(big)
    q.put("small")
    assert q.get() == big
    assert q.get_bytes() == big
    # The first get grew this thread's buffer and kept it: get_many now
    # takes the big one and the small one together.
    assert q.get_many(5) == [big, "small"]
    q.put(b"c" * 40_000)
    q.put("after")
    assert q.get_many(5) == [b"c" * 40_000]  # larger than the kept buffer: alone
    assert q.get_many(5) == ["after"]


def test_put_many_partial_full_reports_count(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(1024)
    payloads = [b"p" * 200] * 10  # about 4 fit in 1 KiB
    with pytest.raises(queue.Full) as info:
        q.put_many_bytes(payloads, block=False)
    put = info.value.items_put  # type: ignore[attr-defined]
    assert 1 <= put < 10
    assert q.qsize() == put
    with pytest.raises(queue.Full) as info:
        q.put_many_bytes(payloads, timeout=0.1)
    assert info.value.items_put == 0  # type: ignore[attr-defined]


def test_custom_codec(make_queue: Callable[..., SageQueue]) -> None:
    import json

    q = make_queue(dumps=lambda o: json.dumps(o).encode(), loads=lambda b: json.loads(b))
    q.put({"a": [1, 2]})
    q.put_many([1, "two"])
    assert q.get_bytes() == b'{"a": [1, 2]}'
    assert q.get_many(2) == [1, "two"]
    ident = make_queue(dumps=bytes, loads=lambda b: b)
    ident.put(b"abc")
    ident.put(b"defg")
    first = ident.get()
    ident.get()
    assert first == b"abc"  # a copy: not overwritten by the next get
    with pytest.raises(TypeError):
        make_queue(dumps="not callable")
    as_bytearray = make_queue(dumps=lambda o: bytearray(pickle.dumps(o)))
    as_bytearray.put("ba")
    as_bytearray.put_many(["bb"])
    assert as_bytearray.get_many(2) == ["ba", "bb"]
    as_text = make_queue(dumps=str)
    with pytest.raises(TypeError, match="dumps needs bytes"):
        as_text.put(1)
    with pytest.raises(TypeError, match="dumps needs bytes"):
        as_text.put_many([1])
    assert as_text.qsize() == 0


class TaggedQueue(SageQueue):
    pass


def test_subclass_pickles_as_itself(make_queue: Callable[..., SageQueue], qname: str) -> None:
    q = TaggedQueue(qname)
    try:
        again = pickle.loads(pickle.dumps(q))
        assert type(again) is TaggedQueue
        again.close()
    finally:
        q.close()


def test_qsize_empty_full(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(1024)
    assert q.qsize() == 0 and q.empty() and not q.full()
    q.put_many_bytes([b"x"] * 7)
    assert q.qsize() == 7 and not q.empty()
    q.get_many_bytes(3)
    assert q.qsize() == 4


def test_stats_keys(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(4096)
    q.put_bytes(b"12345")
    stats = q.get_stats()
    legacy = {"buffer_size", "available_read", "available_write", "readers", "writers", "ref_count",
              "total_bytes_written", "total_bytes_read", "utilization"}
    extended = {"version", "attached_processes", "messages_in", "messages_out", "messages_queued",
                "sleeping_producers", "sleeping_consumers", "producer_waits", "consumer_waits", "wakeups",
                "owner_died_recoveries", "high_water_bytes", "tasks_done", "shutdown", "reserved"}
    assert legacy | extended | {"message_count"} == set(stats)
    assert stats["buffer_size"] == 4096
    assert stats["available_read"] == 9
    assert stats["available_write"] == 4096 - 9 - 1
    assert stats["total_bytes_written"] == 9
    assert stats["message_count"] == stats["messages_queued"] == 1
    assert stats["version"] == 2
    assert stats["attached_processes"] == 1
    assert stats["utilization"] == pytest.approx(9 / 4096)
    q.reset_stats()
    assert q.get_stats()["total_bytes_written"] == 0
    assert q.get_stats()["message_count"] == 1  # reset touches counters, not messages


def test_reference_and_pickling(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(2048)
    ref = q.get_reference()
    assert isinstance(ref, SageQueueRef)
    assert ref.name == q.name and ref.size == 2048
    assert ref.auto_cleanup is False
    import os

    assert ref.creator_pid == os.getpid()
    assert q.get_stats()["ref_count"] == 2  # get_reference increments it, as legacy
    ref2 = pickle.loads(pickle.dumps(ref))
    assert ref2 == ref
    q2 = ref2.get_queue()
    try:
        q2.put("via ref")
        assert q.get() == "via ref"
    finally:
        q2.close()
    q3 = pickle.loads(pickle.dumps(q))
    try:
        assert q3.name == q.name and q3 is not q
        q3.put("via pickle")
        assert q.get() == "via pickle"
    finally:
        q3.close()


def test_context_manager_close_idempotent(qname: str) -> None:
    with SageQueue(qname) as q:
        q.put(1)
    assert q.closed
    q.close()
    q.close()
    with SageQueue(qname) as again:  # the queue itself stayed
        assert again.get() == 1
    assert "closed" in repr(q)


def test_open_or_create_and_exclusive(qname: str) -> None:
    with SageQueue(qname, 4096) as a, SageQueue(qname, 1 << 20) as b:
        assert b.maxsize == 4096  # existing queue: size ignored
        a.put("shared")
        assert b.get() == "shared"
        with pytest.raises(sage_queue.QueueExistsError):
            SageQueue(qname, exclusive=True)
        with pytest.raises(FileExistsError):
            SageQueue(qname, exclusive=True)


def test_module_functions(qname: str) -> None:
    with pytest.raises(sage_queue.QueueNotFoundError):
        open_queue(qname)
    with pytest.raises(FileNotFoundError):
        open_queue(qname)
    q = create_queue(qname, 2048)
    try:
        assert (SHM / f"sage_ringbuf_{qname}").exists()
        assert (SHM / f"sage_ringbuf_{qname}").stat().st_mode & 0o777 == 0o600
        with open_queue(qname) as other:
            other.put(5)
        assert q.get() == 5
    finally:
        q.close()
    destroy_queue(qname)
    assert not (SHM / f"sage_ringbuf_{qname}").exists()
    destroy_queue(qname)  # no error when it is already gone


def test_destroy_removes_name(qname: str) -> None:
    q = SageQueue(qname)
    other = open_queue(qname)
    try:
        q.destroy()
        assert q.closed
        assert not (SHM / f"sage_ringbuf_{qname}").exists()
        other.put("still works")  # open handles keep working
        assert other.get() == "still works"
    finally:
        other.close()


def test_auto_cleanup(qname: str) -> None:
    a = SageQueue(qname, auto_cleanup=True)
    b = open_queue(qname)
    a.close()  # b still has it open: stays
    assert (SHM / f"sage_ringbuf_{qname}").exists()
    b.close()  # b has no auto_cleanup: stays
    assert (SHM / f"sage_ringbuf_{qname}").exists()
    c = SageQueue(qname, auto_cleanup=True)
    c.close()  # last one out with auto_cleanup: removed
    assert not (SHM / f"sage_ringbuf_{qname}").exists()


def test_del_closes_quietly(qname: str) -> None:
    import gc

    q = SageQueue(qname, auto_cleanup=True)
    del q
    gc.collect()
    assert not (SHM / f"sage_ringbuf_{qname}").exists()


def test_mode_and_misc(qname: str) -> None:
    with SageQueue(qname, mode=0o640) as q:
        assert (SHM / f"sage_ringbuf_{qname}").stat().st_mode & 0o777 == 0o640
        assert q.attached_processes() == 1
        assert q.layout_version == 2
        assert not q.is_shutdown
        assert q.name in repr(q)
    with pytest.raises(ValueError):
        SageQueue(qname, mode=0o1777)


def test_bytes_name(qname: str) -> None:
    with SageQueue(qname.encode()) as q:
        assert q.name == qname
        q.put(1)
    with open_queue(qname) as q:
        assert q.get() == 1


def test_remove_if_unused_and_list_queues(qname: str) -> None:
    from sage_queue import list_queues, remove_if_unused

    with pytest.raises(sage_queue.QueueNotFoundError):
        remove_if_unused(qname)
    q = SageQueue(qname)
    assert qname in list_queues()
    assert remove_if_unused(qname) is False  # we have it open
    q.close()
    assert remove_if_unused(qname) is True
    assert qname not in list_queues()
