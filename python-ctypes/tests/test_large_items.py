"""Items larger than the ring, with default arguments (issue 14, item 1).

An item whose pickle is larger than the ring travels in a shared-memory
object of its own (``/dev/shm/sage_ringbuf_<queue>..<id>``) named by a small
descriptor in the ring. put/get, put_nowait/get_nowait, put_many/get_many
between processes under fork and spawn; /dev/shm entries are counted before
and after (nothing left behind); ``MessageTooLargeError`` only when the side
object cannot be written (a file size limit stands in for a full /dev/shm);
a SIGKILLed producer's orphan is reclaimed by the queue's next user; the
legacy wrapper's get does not crash on a descriptor: it keeps waiting."""

from __future__ import annotations

import ctypes
import io
import multiprocessing as mp
import os
import signal
import struct
import time
from typing import Any, Callable, List

import _large_workers
import pytest
from test_legacy_wrapper_smoke import load_legacy_lib

from sage_queue import MessageTooLargeError, SageQueue, admin, cli

from conftest import SHM


def side_objects(q: SageQueue) -> List[str]:
    return sorted(p.name for p in SHM.glob(f"sage_ringbuf_{q.name}..*"))


def shm_entries(q: SageQueue) -> List[str]:
    """The queue's object and its side objects."""
    return sorted(p.name for p in SHM.glob(f"sage_ringbuf_{q.name}*"))


def test_default_queue_carries_items_of_any_size(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()  # default arguments: a 1 MiB ring
    assert q.maxsize == 1 << 20
    before = shm_entries(q)
    items = [_large_workers.large_item(i) for i in range(12)]
    for item in items:
        q.put(item)
    assert len(side_objects(q)) == 9  # three of every four are larger than the ring
    assert q.qsize() == 12
    assert [q.get() for _ in items] == items
    q.put_nowait(items[2])
    assert q.get_nowait() == items[2]
    assert q.put_many(items) == 12
    got: List[Any] = []
    while len(got) < 12:
        got.extend(q.get_many(5))
    assert got == items
    # Exactly around the ring's limit, raw bytes.
    for size in range(q.max_message_size - 2, q.max_message_size + 3):
        q.put_bytes(b"z" * size)
        assert q.get_bytes() == b"z" * size
    assert shm_entries(q) == before, "side objects left behind"


def test_large_items_are_mapped_not_copied_into_new_buffers(make_queue: Callable[..., SageQueue]) -> None:
    """An item that went out of line arrives as its side object, mapped
    (ring_buffer_get_msg_fd): no buffer is allocated for it and the thread's
    receive buffer stays as it was. (Items in the ring larger than the
    buffer grow it: test_queue_basic.test_messages_larger_than_receive_buffer.)"""
    q = make_queue()
    big = b"q" * (3 << 20)
    q.put(big)
    assert q.get() == big
    rx = q._tls.rx
    assert rx.cap == q.maxsize
    for _ in range(3):
        q.put(big)
        assert q.get() == big
        q.put_bytes(big)
        assert q.get_bytes() == big
        assert q._tls.rx is rx and rx.cap == q.maxsize


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("batch", [0, 3], ids=["put-get", "put_many-get_many"])
def test_large_items_between_processes(method: str, batch: int, make_queue: Callable[..., SageQueue]) -> None:
    ctx: Any = mp.get_context(method)
    q = make_queue()
    before = shm_entries(q)
    producers = [ctx.Process(target=_large_workers.produce, args=(q, p * 100, 24, batch)) for p in range(2)]
    for p in producers:
        p.start()
    got: List[Any] = []
    while len(got) < 48:
        if batch:
            got.extend(q.get_many(batch, timeout=60))
        else:
            got.append(q.get(timeout=60))
    for p in producers:
        p.join(60)
        assert p.exitcode == 0
    want = [_large_workers.large_item(p * 100 + i) for p in range(2) for i in range(24)]
    key = repr
    assert sorted(got, key=key) == sorted(want, key=key)
    # Each producer's items in its order.
    for p in range(2):
        mine = [g for g in got if g in want[p * 24 : p * 24 + 24]]
        assert mine == want[p * 24 : p * 24 + 24]
    assert shm_entries(q) == before


def test_too_large_only_when_dev_shm_cannot_hold_it(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    results = make_queue()
    child = mp.get_context("fork").Process(target=_large_workers.put_with_file_size_limit, args=(q, results))
    child.start()
    report = results.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0
    assert report[0][0] == "put" and "/dev/shm" in report[0][1] and "nothing was written" in report[0][1]
    assert report[1][0] == "put_many" and report[1][1] == 1, report
    assert "1 of 3 items were put" in report[1][2]
    assert q.get(timeout=5) == b"small"
    assert q.get(timeout=5) == b"c" * (512 << 10)
    assert q.qsize() == 0
    assert side_objects(q) == []


def test_killed_producer_leaves_an_orphan_the_next_user_reclaims(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(1024)  # a small ring: the producer soon waits for room
    child = mp.get_context("fork").Process(target=_large_workers.put_forever, args=(q,))
    child.start()
    deadline = time.monotonic() + 30
    # Wait until the ring is full of descriptors and one more object is made.
    while len(side_objects(q)) <= q.qsize() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    queued = q.qsize()
    assert queued > 0
    assert len(side_objects(q)) == queued + 1, "the one it was about to publish"
    again = SageQueue(q.name)  # the next user
    assert len(side_objects(q)) == queued
    again.close()
    for i in range(queued):
        assert q.get(timeout=5) == bytes([i % 256]) * (1 << 20)
    assert side_objects(q) == []


def test_legacy_wrapper_get_waits_on_a_descriptor(make_queue: Callable[..., SageQueue]) -> None:
    """The legacy wrapper's get (peek 4, wait for 4 + L readable, read) sees
    a length of 2 GiB or more that never becomes readable: it keeps waiting,
    as on an empty queue, and consumes nothing; SageQueue then gets the item."""
    q = make_queue()
    item = b"L" * 2_000_000  # larger than the default 1 MiB ring
    q.put_bytes(item)
    lib = load_legacy_lib()
    rb = lib.ring_buffer_open(q.name.encode())
    assert rb
    try:
        header = ctypes.create_string_buffer(4)
        assert lib.ring_buffer_peek(rb, header, 4) == 4
        (length,) = struct.unpack("<I", header.raw)
        assert length >= 1 << 31
        assert lib.ring_buffer_available_read(rb) < 4 + length
        # A raw read of the prefix is refused (-1), nothing consumed.
        assert lib.ring_buffer_read(rb, header, 4) == -1
    finally:
        lib.ring_buffer_close(rb)
    assert q.get_bytes(timeout=5) == item
    assert side_objects(q) == []


def _cli(*argv: str) -> str:
    out = io.StringIO()
    assert cli.main(list(argv), out=out) == 0
    return out.getvalue()


def test_list_shows_side_objects_with_their_queue_and_gc_reclaims_orphans(
    make_queue: Callable[..., SageQueue],
) -> None:
    q = make_queue(1024)
    q.put_bytes(b"s" * 300_000)  # queued, out of line
    listed = {i.name: i for i in admin.scan_queues(q.name)}
    assert list(listed) == [q.name], "a side object is not listed as a queue of its own"
    assert listed[q.name].side_objects == 1 and listed[q.name].side_bytes == 300_000
    assert "+1 side object" in _cli("list", "--prefix", q.name)
    assert admin.split_side_object(side_objects(q)[0][len("sage_ringbuf_"):])[0] == q.name  # type: ignore[index]
    # A queued item is not garbage.
    assert admin.collect_garbage(q.name).side_objects_removed == {}
    assert len(side_objects(q)) == 1
    # A producer killed while waiting for room leaves an orphan: gc removes it.
    child = mp.get_context("fork").Process(target=_large_workers.put_forever, args=(q,))
    child.start()
    deadline = time.monotonic() + 30
    while len(side_objects(q)) <= q.qsize() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    queued = q.qsize()
    assert len(side_objects(q)) == queued + 1
    text = _cli("gc", "--prefix", q.name)
    assert f"removed 1 side object of {q.name}" in text, text
    assert len(side_objects(q)) == queued
    # The queue object gone behind the library's back: its side objects are
    # listed as "gone" and gc removes them (nobody holds them).
    q.close()
    os.unlink(SHM / f"sage_ringbuf_{q.name}")
    listed = {i.name: i for i in admin.scan_queues(q.name)}
    assert listed[q.name].status == "gone" and listed[q.name].side_objects == queued
    assert "gone" in _cli("list", "--prefix", q.name)
    assert admin.collect_garbage(q.name).side_objects_removed == {q.name: queued}
    assert side_objects(q) == []


def test_items_of_4_gib_or_more_are_refused_not_cut_short(make_queue: Callable[..., SageQueue]) -> None:
    # Message lengths are 32-bit in the C calls, and ctypes passes a larger
    # length modulo 2^32 without a word: a 4 GiB + 1 KiB array went out as a
    # 1 KiB message, which no consumer could read back (the item was lost).
    # Every put refuses such an item up front, and the queue is untouched.
    # (np.zeros maps zero pages lazily: nothing here touches 4 GiB.)
    import numpy as np

    q = make_queue()
    huge = np.zeros((1 << 32) + 1024, np.uint8)
    import asyncio

    for put in (q.put, q.put_nowait, lambda item: q.put(item, timeout=1), lambda item: q.put_many([item]),
                lambda item: q.put_bytes(memoryview(item)), lambda item: asyncio.run(q.put_async(item)),
                lambda item: asyncio.run(q.put_many_async([item]))):
        with pytest.raises(MessageTooLargeError, match="4 GiB or more"):
            put(huge)
    assert q.qsize() == 0
    assert side_objects(q) == []
    q.put(huge[:1024])  # the queue still works, and the array can be resized again
    assert (q.get() == 0).all()
    huge.resize(16, refcheck=False)


def _put_after_a_get(name: str) -> None:
    """A consumer in another process: takes one item, then leaves."""
    q = SageQueue(name)
    q.get()
    q.close()


def test_out_of_line_items_queued_are_bounded_like_a_full_ring(make_queue: Callable[..., SageQueue]) -> None:
    """Items that go out of line take a few bytes of the ring each, so a
    full ring alone never stopped their producer: 300 arrays of 1 MiB went
    into a 1 MiB queue nobody read, 302 MiB of /dev/shm, and the ring had
    room for about 17,000. Now the out-of-line bytes queued stay within
    128 MiB (or one item alone): past them, put waits as for a full ring,
    put_nowait raises queue.Full, and nothing is written to /dev/shm.
    Items a consumer has taken do not count, even while it holds them."""
    import queue

    import numpy as np

    q = make_queue()
    item = np.zeros(32 << 17)  # 32 MiB (its pickle a little more)
    for _ in range(3):
        q.put_nowait(item)  # 96 MiB and a little
    with pytest.raises(queue.Full):
        q.put_nowait(item)  # a fourth would pass 128 MiB
    with pytest.raises(queue.Full):
        q.put(item, timeout=0.2)
    with pytest.raises(queue.Full) as full:
        q.put_many([item], block=False)
    assert full.value.items_put == 0  # type: ignore[attr-defined]
    assert q.qsize() == 3 and len(side_objects(q)) <= 3 + 1  # the pool's, or one-shot objects

    # Taken and still held (zero-copy arrays) do not count.
    held = [q.get(), q.get(), q.get()]
    assert q.qsize() == 0
    for _ in range(3):
        q.put_nowait(item)
    assert all(a.shape == item.shape for a in held)

    # A put blocked on the budget goes ahead once a consumer in another
    # process takes an item.
    consumer = mp.get_context("fork").Process(target=_put_after_a_get, args=(q.name,))
    start = time.monotonic()
    timer = __import__("threading").Timer(0.3, consumer.start)
    timer.start()
    try:
        q.put(item, timeout=30)
    finally:
        timer.join()
        consumer.join(30)
    assert consumer.exitcode == 0 and time.monotonic() - start >= 0.3
    assert q.qsize() == 3

    # One item alone may pass the budget.
    while q.qsize():
        q.get()
    del held
    big = np.zeros(129 << 17)  # 129 MiB
    q.put_nowait(big)
    assert q.get().nbytes == big.nbytes
