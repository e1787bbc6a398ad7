"""Pickle protocol 5 out-of-band buffers (issue 14, items 2 and 6): numpy
arrays of several dtypes and shapes (0-d, non-contiguous, Fortran order),
bytes, bytearray, PickleBuffer and nested objects holding arrays, smaller
and larger than the ring, between processes, with default arguments.

The producer hands the pickle and each buffer to ``ring_buffer_put_msgv``,
which writes them once into shared memory; a consumer maps an item that
went out of line and unpickles it with views of that private mapping as the
buffers: the arrays it gets are backed by the mapping (no copy) and stay
valid after the queue is closed and removed (the arrays own the mapping).
Items that travel inside the ring get copies of their buffers (the receive
buffer is reused)."""

from __future__ import annotations

import gc
import multiprocessing as mp
import pickle
import sys
import threading
import tracemalloc
from typing import Any, Callable, List

import numpy as np
import pytest

from sage_queue import DEFAULT_MAXSIZE, SageQueue, destroy_queue, received_in_place
from sage_queue._oob import LARGE

from conftest import SHM


def side_objects(q: SageQueue) -> List[str]:
    return sorted(p.name for p in SHM.glob(f"sage_ringbuf_{q.name}..*"))


def arrays() -> List[Any]:
    rng = np.random.default_rng(14)
    big = rng.standard_normal((512, 300))  # 1.2 MB of float64: larger than the default ring
    return [
        np.arange(10, dtype=np.int32),
        np.float64(3.5),  # a numpy scalar
        np.array(7, dtype=np.int64),  # 0-d
        np.zeros((0, 3)),
        rng.integers(0, 255, (300, 301), dtype=np.uint8),  # 90 KB: in the default 1 MiB ring
        big,
        np.asfortranarray(big[:200]),
        big[::3, ::2],  # non-contiguous: pickled in band
        (rng.standard_normal(5000) + 1j).astype(np.complex64),
        rng.standard_normal((64, 64, 8)).astype(np.float32) > 0,  # bool, 3-d
        np.array(["a", "bb", "ccc"]),
    ]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(a, np.generic):
        return type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def backed_by_mapping(a: np.ndarray) -> bool:
    """Whether the array's memory is shared memory lent by the queue (no copy)."""
    return received_in_place(a)


def test_arrays_of_every_kind_round_trip(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    for item in arrays():
        q.put(item)
        assert same(item, q.get(timeout=10)), item
        q.put_nowait(item)
        assert same(item, q.get_nowait()), item
    assert side_objects(q) == []


def test_batches_and_nested_objects(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    items: List[Any] = [
        {"doc": "text", "emb": np.ones(384, dtype=np.float32), "chunks": [np.arange(100000), b"raw" * 10]},
        pickle.PickleBuffer(bytearray(b"x" * 200_000)),
        bytearray(b"y" * 100),
        "small",
    ] + arrays()
    # More than the default ring holds at once: put from a thread.
    putter = threading.Thread(target=q.put_many, args=(items,))
    putter.start()
    got: List[Any] = []
    while len(got) < len(items):
        got.extend(q.get_many(100, timeout=10))
    putter.join(10)
    assert same(items[0], got[0])
    assert bytes(got[1]) == b"x" * 200_000  # a PickleBuffer comes back as its buffer
    assert got[2] == bytearray(b"y" * 100) and got[3] == "small"
    for want, have in zip(items[4:], got[4:]):
        assert same(want, have)
    assert side_objects(q) == []


def test_large_arrays_are_not_copied_and_outlive_the_queue(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    big = np.arange(4 << 20, dtype=np.float64)  # 32 MiB
    q.put(big)
    q.put({"a": big[: 1 << 20], "b": big[1 << 20 : 2 << 20]})
    first = q.get(timeout=10)
    second = q.get(timeout=10)
    assert backed_by_mapping(first) and first.flags.writeable
    assert backed_by_mapping(second["a"]) and backed_by_mapping(second["b"])
    q.close()
    destroy_queue(q.name)
    assert side_objects(q) == []
    # Still valid, and private: writing does not touch anything shared.
    assert np.array_equal(first, big) and first[123] == 123.0
    first[0] = -1.0
    assert np.array_equal(second["b"], big[1 << 20 : 2 << 20])


def _produce_arrays(q: SageQueue, count: int) -> None:
    for i in range(count):
        q.put({"i": i, "a": np.full((256, 1024), i, dtype=np.float32)})  # 1 MiB
    q.close()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_arrays_between_processes(method: str, make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    ctx: Any = mp.get_context(method)
    child = ctx.Process(target=_produce_arrays, args=(q, 20))
    child.start()
    for i in range(20):
        item = q.get(timeout=60)
        assert item["i"] == i and item["a"].shape == (256, 1024) and (item["a"] == i).all()
        assert backed_by_mapping(item["a"])
    child.join(60)
    assert child.exitcode == 0
    assert side_objects(q) == []


# ---------------------------------------------------------------- bytes (issue 14, item 2)


def bytes_items() -> List[Any]:
    """bytes of every size around the limits (LARGE: from there the producer
    does not copy them; the default ring: from there they go out of line),
    alone and inside containers."""
    sizes = [0, 1, 494, LARGE - 1, LARGE, 300_000, DEFAULT_MAXSIZE - 100, DEFAULT_MAXSIZE, 3 << 20]
    blobs = [bytes([n % 251]) * n for n in sizes]
    return blobs + [
        {"doc": "text", "blob": blobs[-1], "small": blobs[2], "n": 7},
        [blobs[4], (blobs[5], "x"), np.arange(3)],
        ("mixed", blobs[-1], np.ones(1 << 18)),  # bytes and an out-of-band array in one item
        bytearray(blobs[2]),
        bytearray(blobs[-1]),
    ]


def test_bytes_of_every_size_round_trip(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    items = bytes_items()
    for item in items:
        q.put(item)
        assert same(item, q.get(timeout=10))
        q.put_nowait(item)
        assert same(item, q.get_nowait())
    got: List[Any] = []
    putter = threading.Thread(target=q.put_many, args=(items,))  # more than the ring holds
    putter.start()
    while len(got) < len(items):
        got.extend(q.get_many(100, timeout=10))
    putter.join(10)
    assert all(same(a, b) for a, b in zip(items, got)) and len(got) == len(items)
    assert all(type(g) is bytes for g in got[:9])
    assert type(got[-1]) is bytearray and type(got[-2]) is bytearray
    assert side_objects(q) == []


def allocated_while(action: Callable[[], Any]) -> int:
    """Peak bytes that Python allocated during ``action()``."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_large_bytes_are_written_once_by_the_producer(make_queue: Callable[..., SageQueue]) -> None:
    """A large bytes object (alone or in a container) goes from the
    producer's memory straight into shared memory: the put allocates next
    to nothing (pickle.dumps would make a 32 MiB copy first). A bytes object
    owns its memory, so the consumer's get makes exactly the one copy that
    builds it (from the mapped side object)."""
    q = make_queue()
    q.put("warm-up")
    assert q.get() == "warm-up"  # the thread's receive buffer exists: not counted below
    big = bytes(range(256)) * (1 << 17)  # 32 MiB
    assert allocated_while(lambda: q.put(big)) < 1 << 20
    got: List[Any] = []
    peak = allocated_while(lambda: got.append(q.get(timeout=10)))
    assert got[0] == big and type(got[0]) is bytes
    assert peak < len(big) + (1 << 20), "more than one copy on the way to the consumer's bytes"
    got.clear()
    # In a container: the first large one teaches the queue that this
    # producer sends large items (see SageQueue._pieces), the next ones
    # are not copied.
    doc = {"id": 1, "blob": big, "parts": [big[:LARGE], "text"]}
    for _ in range(3):
        q.put(doc)
        assert same(q.get(timeout=10), doc)
    assert allocated_while(lambda: q.put(doc)) < 1 << 20
    assert same(q.get(timeout=10), doc)
    # (Three: out-of-line items queued hold at most 128 MiB.)
    assert allocated_while(lambda: q.put_many([doc, big, doc])) < 1 << 20
    assert all(same(q.get(timeout=10), want) for want in (doc, big, doc))
    assert side_objects(q) == []


def test_a_large_pickle_buffer_arrives_as_a_view_of_the_mapping(make_queue: Callable[..., SageQueue]) -> None:
    """The zero-copy way to receive raw bytes: wrapped in a PickleBuffer,
    they arrive as a memoryview of the item's mapped side object."""
    q = make_queue()
    for raw in (bytearray(b"w" * (4 << 20)), b"r" * (4 << 20)):
        q.put(pickle.PickleBuffer(raw))
        got = q.get(timeout=10)
        assert isinstance(got, memoryview) and received_in_place(got)
        assert got.tobytes() == raw and got.readonly is isinstance(raw, bytes)
    assert side_objects(q) == []


def test_bytes_addresses_are_where_ctypes_finds_them() -> None:
    """Pieces take a bytes object's address from its id (CPython's layout,
    checked at import); the same as ctypes' own cast, for every size."""
    from sage_queue import _oob

    for b in (b"a", b"xy" * 7, bytes(range(256)) * 300, pickle.dumps(list(range(100)))):
        assert _oob._bytes_address(b) == _oob._cast_address(b)


class _SubArray(np.ndarray):
    """An ndarray subclass (module level: pickled by reference)."""


def _message(pieces: Any) -> bytes:
    """The bytes a message of ``pieces`` holds (what put_msgv writes)."""
    import ctypes

    try:
        return b"".join(ctypes.string_at(a, n) for a, n in zip(pieces.addresses, pieces.lengths))
    finally:
        pieces.release()


def test_arrays_made_from_a_remembered_prefix_are_the_generic_message() -> None:
    """``array_pieces`` reuses the header and pickle of the first array of
    each dtype, shape and writability: every message it makes, the first and
    the reused ones, is byte for byte the generic path's (``Pieces`` of
    ``pickle.dumps``), and it declines (None) the arrays it does not cover."""
    from sage_queue import _oob

    rng = np.random.default_rng(7)
    readonly = np.arange(4096, dtype=np.int16)
    readonly.flags.writeable = False
    covered: List[Any] = [
        np.arange(10, dtype=np.int32),
        np.array(7, dtype=np.int64),  # 0-d
        rng.standard_normal((512, 300)),
        rng.integers(0, 255, (300, 301), dtype=np.uint8),
        (rng.standard_normal(5000) + 1j).astype(np.complex64),
        rng.standard_normal((64, 64, 8)).astype(np.float32) > 0,
        readonly,
        np.arange(4096, dtype=np.int16),  # the same kind, writable
        np.arange(10, dtype=np.uint32),  # the same shape, another dtype
    ]
    for round_ in range(2):  # made, then from the remembered prefix
        for item in covered:
            buffers: List[pickle.PickleBuffer] = []
            data = pickle.dumps(item, _oob.PROTOCOL, buffer_callback=buffers.append)
            generic = _message(_oob.Pieces([data], buffers))
            fast = _oob.array_pieces(item, type(item))
            assert fast is not None, (round_, item.dtype, item.shape)
            assert (fast.nbytes, fast.inband) == (len(generic), len(data))
            assert _message(fast) == generic, (round_, item.dtype, item.shape)
            # The consumer: unpickled the first time, then rebuilt from the
            # remembered layout; the same array either way.
            for owned in (True, False):
                got = _oob.loads(memoryview(bytearray(generic)), owned=owned)
                assert same(item, got) and got.flags.writeable == item.flags.writeable
                assert got.flags.c_contiguous and got.base is not None
            assert _oob._ARRAY_LAYOUTS[data][1:] == (item.dtype, item.shape, not item.flags.writeable)

    big = rng.standard_normal((64, 64))
    declined: List[Any] = [
        np.asfortranarray(big),  # F order
        big[::2, ::3],  # not contiguous
        big.view(_SubArray),  # a subclass pickles its own way
        np.array([{"a": 1}, None], dtype=object),
        np.zeros(3, dtype=[("x", "<i4"), ("y", "<f8")]),  # structured
        np.arange(5, dtype=">i4"),  # not the native byte order: not built in
        np.zeros((0, 3)),  # no data
    ]
    for k, item in enumerate(declined):
        assert _oob.array_pieces(item, type(item)) is None, (item.dtype, item.shape)
        buffers = []
        data = pickle.dumps(item, _oob.PROTOCOL, buffer_callback=buffers.append)
        if buffers:
            message = _message(_oob.Pieces([data], buffers))
            for _ in range(2):
                assert same(item, _oob.loads(memoryview(bytearray(message)), owned=True))
        if k < 5:  # the consumer unpickles these every time (see array_layout)
            assert not _oob._ARRAY_LAYOUTS.get(data)
    buffers = []
    data = pickle.dumps(pickle.PickleBuffer(bytearray(b"z" * 1000)), _oob.PROTOCOL, buffer_callback=buffers.append)
    message = _message(_oob.Pieces([data], buffers))
    assert bytes(_oob.loads(memoryview(bytearray(message)), owned=True)) == b"z" * 1000
    assert _oob._ARRAY_LAYOUTS.get(data) is False
    assert _oob.array_pieces([1, 2], list) is None
    assert _oob.array_pieces(np.float64(3.5), np.float64) is None  # a scalar


def test_remembered_array_prefixes_are_bounded(make_queue: Callable[..., SageQueue]) -> None:
    """Arrays of ever new shapes do not grow the remembered prefixes without
    bound, and each still arrives intact."""
    from sage_queue import _oob

    q = make_queue()
    for n in range(1, 2 * _oob._REMEMBERED_MAX + 2):
        item = np.full(n, n, dtype=np.int32)
        q.put(item)
        assert same(item, q.get(timeout=10))
        assert len(_oob._ARRAY_PREFIXES) <= _oob._REMEMBERED_MAX


def test_a_put_array_is_let_go_of(make_queue: Callable[..., SageQueue]) -> None:
    """After put returns, the queue holds no export of the array's memory:
    numpy may resize it in place (it refuses while anything references
    the array), writable or not, sent whole or in a batch."""
    q = make_queue()
    for writable in (True, False):
        for put in (q.put, lambda item: q.put_many([item])):
            item = np.arange(70000, dtype=np.float64)
            item.flags.writeable = writable
            put(item)
            item.flags.writeable = True
            item.resize(10)  # refcheck: ValueError if still referenced
            got = q.get(timeout=10)
            assert got.shape == (70000,) and got[69999] == 69999.0
    # Released pieces let go at once, even while they are still referenced.
    from sage_queue import _oob

    for writable in (True, False):
        item = np.arange(70000, dtype=np.float64)
        item.flags.writeable = writable
        pieces = _oob.array_pieces(item, np.ndarray)
        assert pieces is not None
        pieces.release()
        item.flags.writeable = True
        item.resize(10)
        del pieces


def test_a_pickle_is_judged_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The consumer looks at each pickle once: one that is not rebuilt from
    a layout (here an F-order array's) is not pickled again at every
    message to find that out."""
    from sage_queue import _oob

    calls: List[bytes] = []
    judge = _oob.array_layout

    def counted(item: Any, key: bytes) -> Any:
        calls.append(key)
        return judge(item, key)

    monkeypatch.setattr(_oob, "array_layout", counted)
    item = np.asfortranarray(np.arange(12.0).reshape(3, 4) + 0.25)
    buffers: List[pickle.PickleBuffer] = []
    data = pickle.dumps(item, _oob.PROTOCOL, buffer_callback=buffers.append)
    message = _message(_oob.Pieces([data], buffers))
    for _ in range(3):
        assert same(item, _oob.loads(memoryview(bytearray(message)), owned=True))
    assert calls == [data]


def test_a_stream_of_arrays_is_not_tried_as_pickles(
    make_queue: Callable[..., SageQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A get that receives an array message in the ring reads its magic
    first when the thread's last message was one too, instead of letting
    pickle.loads fail on it first (~1.5 us of a 64 KiB array's ~7 us get).
    A plain pickle in between is still read, and the next array too."""
    from sage_queue import queue as queue_module

    tried: List[int] = []
    plain_loads = queue_module._pickle_loads

    def counted(data: Any) -> Any:
        tried.append(len(data))
        return plain_loads(data)

    monkeypatch.setattr(queue_module, "_pickle_loads", counted)
    q = make_queue()
    arrays = [np.full((8, 16), float(k)) for k in range(5)]
    sent: List[Any] = [*arrays, "between", arrays[0], arrays[1]]
    for item in sent:
        q.put(item)
    got = [q.get() for _ in sent]
    assert all(same(a, b) for a, b in zip(got, sent) if isinstance(a, np.ndarray))
    assert got[5] == "between"
    # Tried as pickles: the first array, the str (after its magic check)
    # and the first array after it; not the other four arrays.
    assert len(tried) == 3, tried


def test_put_sends_a_known_kind_of_array_without_pieces(
    make_queue: Callable[..., SageQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``put`` sends a writable C-contiguous array of a dtype and shape it
    has seen straight from a remembered prefix (``array_vectors``, no
    ``Pieces``): the same message as the general path, and the array is let
    go of after the put, also after a put that failed while its exception
    is kept. Arrays of that dtype and shape that are read-only, F-ordered
    or strided take the general path, and every one arrives whole."""
    import queue as std_queue

    from sage_queue import _oob
    from sage_queue import queue as queue_module

    general: List[int] = []
    array_pieces = queue_module._array_pieces

    def counted(item: Any, kind: type) -> Any:
        general.append(1)
        return array_pieces(item, kind)

    monkeypatch.setattr(queue_module, "_array_pieces", counted)
    q = make_queue(1 << 16)  # 16 KiB arrays travel in the ring
    first = np.arange(2048.0).reshape(16, 128)
    q.put(first)
    assert len(general) == 1  # the first of its kind makes the prefix
    second = first + 0.5
    q.put(second)
    assert len(general) == 1, "a known kind of array took the general path"
    assert same(q.get(timeout=10), first) and same(q.get(timeout=10), second)
    # Byte for byte the general path's message.
    buffers: List[pickle.PickleBuffer] = []
    data = pickle.dumps(second, _oob.PROTOCOL, buffer_callback=buffers.append)
    q.put(second)
    assert q.get_bytes(timeout=10) == _message(_oob.Pieces([data], buffers))

    read_only = second.copy()
    read_only.flags.writeable = False
    others = [read_only, np.asfortranarray(second), np.arange(4096.0).reshape(16, 256)[:, ::2]]
    for other in others:
        before = len(general)
        q.put(other)
        assert len(general) == before + 1
        assert same(q.get(timeout=10), other)

    # Let go of after the put, and after a put that found the ring full.
    item = np.arange(2048.0).reshape(16, 128).copy()  # owns its memory
    q.put(item)
    item.resize((16, 64), refcheck=True)  # ValueError if anything still references it
    q.get(timeout=10)
    for _ in range(3):
        q.put(first)
    item = np.arange(2048.0).reshape(16, 128).copy()
    before = sys.getrefcount(item)
    with pytest.raises(std_queue.Full) as full:
        q.put(item, timeout=0.01)
    # The kept exception's traceback keeps put's frame, which refers to the
    # item: one reference more, not two (the export's holder would be the
    # second: it refers to the array through the buffer it exports).
    assert sys.getrefcount(item) == before + 1
    del full
    gc.collect()  # the traceback's frames may sit in a cycle
    item.resize((16, 64), refcheck=True)
    assert len(general) == 1 + len(others)
    for _ in range(3):
        assert same(q.get(timeout=10), first)
