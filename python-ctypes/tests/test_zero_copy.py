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

import mmap
import multiprocessing as mp
import pickle
import threading
from typing import Any, Callable, List

import numpy as np
import pytest

from sage_queue import SageQueue, destroy_queue

from conftest import SHM


def side_objects(q: SageQueue) -> List[str]:
    return sorted(p.name for p in SHM.glob(f"sage_ringbuf_{q.name}..*"))


def arrays() -> List[Any]:
    rng = np.random.default_rng(14)
    big = rng.standard_normal((512, 300))  # 1.2 MB of float64
    return [
        np.arange(10, dtype=np.int32),
        np.float64(3.5),  # a numpy scalar
        np.array(7, dtype=np.int64),  # 0-d
        np.zeros((0, 3)),
        rng.integers(0, 255, (300, 301), dtype=np.uint8),  # 90 KB: larger than the 64 KiB ring
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
    """Whether the array's memory is a mapping of a side object (no copy)."""
    base: Any = a
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


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
