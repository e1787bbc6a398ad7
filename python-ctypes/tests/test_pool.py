"""The queue's pool from Python: items larger than the ring go into side
objects the queue keeps for reuse (``..p<k>``), and the consumer receives
their buffers without a copy, lent until the last view of them is gone.
Between processes (fork and spawn), with received arrays kept alive (the
pool's slots busy, later items in one-shot objects), arrays outliving their
queue, and a consumer SIGKILLed while holding one (its slot freed by gc)."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import signal
from typing import Any, Callable, Dict, List, Tuple

import _large_workers
import numpy as np
import pytest

from sage_queue import SageQueue, _lib, destroy_queue, received_in_place

from conftest import SHM


def side_objects(name: str) -> Tuple[List[str], List[str]]:
    """The queue's pool slots and its one-shot side objects now."""
    ids = sorted(p.name.split("..", 1)[1] for p in SHM.glob(f"sage_ringbuf_{name}..*"))
    return [i for i in ids if i.startswith("p")], [i for i in ids if not i.startswith("p")]


def reclaim(name: str) -> int:
    """``ring_buffer_reclaim`` (what ``sage-queue gc`` calls): orphans freed."""
    return int(_lib.reclaim(name.encode()))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_arrays_between_processes_reuse_the_pool(make_queue: Callable[..., SageQueue], method: str) -> None:
    q = make_queue(pool=True)  # the default 1 MiB ring: each array goes out of line
    count = 40
    ctx: Any = mp.get_context(method)
    child = ctx.Process(target=_large_workers.put_arrays, args=(q, count))
    child.start()
    for i in range(count):
        a = q.get(timeout=60)
        assert a.shape == (256, 1024) and a.dtype == np.float32
        assert received_in_place(a) and float(a[0, 0]) == i and float(a[-1, -1]) == i
        del a
    child.join(30)
    assert child.exitcode == 0
    slots, one_shot = side_objects(q.name)
    assert 1 <= len(slots) <= 8 and one_shot == [], (slots, one_shot)
    assert reclaim(q.name) == 0, "nothing orphaned"
    assert side_objects(q.name) == ([], []), "free slots given back"


def test_arrays_kept_alive_keep_their_slots(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(1024, pool=True)
    items = [np.arange(i, i + 50_000, dtype=np.int64) for i in range(11)]
    for item in items:
        q.put(item)
    assert side_objects(q.name)[0] == [f"p{k}" for k in range(8)]
    assert len(side_objects(q.name)[1]) == 3, "8 slots, then objects of their own"
    got = [q.get(timeout=10) for _ in items]
    assert all(np.array_equal(a, b) for a, b in zip(items, got))
    assert all(received_in_place(a) for a in got)
    # Held: writable, theirs alone, and not reused.
    got[0][:] = -1
    q.put(np.zeros(50_000, dtype=np.int64))
    assert len(side_objects(q.name)[1]) == 1, "every slot still lent"
    assert np.array_equal(got[1], items[1])
    assert not np.any(q.get(timeout=10))
    del got
    gc.collect()
    q.put(items[5])
    assert side_objects(q.name) == ([f"p{k}" for k in range(8)], []), "slots free again"
    assert np.array_equal(q.get(timeout=10), items[5])


def test_received_arrays_outlive_their_queue(make_queue: Callable[..., SageQueue]) -> None:
    """An array lent from a slot stays whole after its queue is removed:
    the slot's name goes with the queue's (its lease holds no ``flock`` to
    keep it), its memory with the array."""
    q = make_queue(1024, pool=True)
    q.put(np.arange(100_000, dtype=np.float64))
    a = q.get(timeout=10)
    name = q.name
    slot = os.stat(SHM / f"sage_ringbuf_{name}..p0").st_ino
    q.close()
    destroy_queue(name)
    assert side_objects(name) == ([], []), "the queue is gone: so is its slot's name"
    assert slot in _open_inodes(), "lent: mapped until the array goes"
    assert float(a.sum()) == float(np.arange(100_000, dtype=np.float64).sum())
    del a
    gc.collect()
    assert slot not in _open_inodes()


def test_a_consumer_killed_holding_an_item_loses_only_it(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue(1024, pool=True)
    q.put(np.full(100_000, 1.0))
    q.put(np.full(100_000, 2.0))
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=_large_workers.hold_one_item, args=(q, ready))
    child.start()
    assert ready.wait(30)
    assert child.pid is not None
    assert reclaim(q.name) == 0, "a live consumer's: kept"
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    assert reclaim(q.name) == 1, "its slot freed"
    b = q.get(timeout=10)
    assert received_in_place(b) and float(b[0]) == 2.0
    del b
    assert reclaim(q.name) == 0
    assert side_objects(q.name) == ([], [])


def test_pool_is_a_bool(make_queue: Callable[..., SageQueue]) -> None:
    with pytest.raises(TypeError, match="pool must be True or False"):
        make_queue(pool=1)


def test_async_calls_use_the_pool(make_queue: Callable[..., SageQueue]) -> None:
    """put_async/get_async and put_many_async carry arrays larger than the
    ring through the pool's slots and lend them to the receiver, as the
    blocking calls do."""
    import asyncio

    q = make_queue(1024, pool=True)
    arrays = [np.full(40_000, float(i)) for i in range(12)]

    async def main() -> None:
        await q.put_async(arrays[0])
        got = await q.get_async(timeout=30)
        assert received_in_place(got) and np.array_equal(got, arrays[0])
        assert await q.put_many_async(arrays[1:]) == 11
        rest = [await q.get_async(timeout=30) for _ in range(11)]
        assert all(received_in_place(a) and np.array_equal(a, b) for a, b in zip(rest, arrays[1:]))

    asyncio.run(asyncio.wait_for(main(), 60))
    slots, one_shot = side_objects(q.name)
    assert 1 <= len(slots) <= 8 and one_shot == []
    assert reclaim(q.name) == 0


#: Sizes of medium arrays (RING_BUFFER_POOLED_FROM bytes or more, that fit
#: in the default 1 MiB ring), and one just below.
MEDIUM = [_lib.RING_BUFFER_POOLED_FROM, 256 << 10, 512 << 10, 1000 << 10]
BELOW = _lib.RING_BUFFER_POOLED_FROM - 4096


def test_medium_arrays_are_lent_from_the_pool(make_queue: Callable[..., SageQueue]) -> None:
    """Arrays that fit in the ring but are RING_BUFFER_POOLED_FROM bytes or
    more travel in a slot too, and arrive without a copy, from another
    process. (Before, they went through the ring and were copied out twice:
    512 KiB arrays in the default 1 MiB ring moved at ~4k items/s, 1 -> 1
    process, against 51-54k through the pool.) Shorter ones, and those of a
    producer with ``pool=False``, still go through the ring."""
    q = make_queue(pool=True)  # the default 1 MiB ring
    assert q.maxsize == 1 << 20
    sizes = MEDIUM + [BELOW]
    child = mp.get_context("fork").Process(target=_large_workers.put_medium_arrays, args=(q, sizes))
    child.start()
    got = [q.get(timeout=60) for _ in sizes]
    child.join(30)
    assert child.exitcode == 0
    for i, (a, n) in enumerate(zip(got, sizes)):
        assert a.nbytes == n and float(a[0]) == i and float(a[-1]) == i
    assert [received_in_place(a) for a in got] == [True] * len(MEDIUM) + [False]
    slots, one_shot = side_objects(q.name)
    assert len(slots) == len(MEDIUM) and one_shot == [], (slots, one_shot)
    del got, a
    gc.collect()
    no_pool = SageQueue(q.name, pool=False)
    try:
        no_pool.put(np.full(MEDIUM[1] // 8, 7.0))
        b = q.get(timeout=10)
        assert not received_in_place(b) and float(b[-1]) == 7.0
    finally:
        no_pool.close()
    assert reclaim(q.name) == 0, "nothing orphaned"


def test_every_get_lends_medium_items(make_queue: Callable[..., SageQueue]) -> None:
    """get with a timeout, get_nowait and get_async lend a medium item as get
    does (their first call offers less than RING_BUFFER_POOLED_FROM bytes of
    the thread's buffer, then borrows); get_many copies it out of its slot,
    and a plain item (bytes) is unpickled from where it lies."""
    import asyncio

    q = make_queue(pool=True)
    item = np.arange(MEDIUM[1] // 8, dtype=np.float64)
    gets: Dict[str, Callable[[], Any]] = {
        "get": q.get,
        "get(timeout)": lambda: q.get(timeout=10),
        "get_nowait": q.get_nowait,
        "get_async": lambda: asyncio.run(q.get_async(timeout=10)),
    }
    for what, get in gets.items():
        q.put(item)
        got = get()
        assert received_in_place(got) and np.array_equal(got, item), what
        del got
    # Items in the ring after lent ones (the next get asks for a lease
    # first, then takes them from the ring), and lent ones again.
    for small in ("tiny", b"x" * 1000, "tiny"):
        q.put(small)
        assert q.get(timeout=10) == small
    q.put(item)
    q.put("tiny")
    got = q.get()
    assert received_in_place(got) and np.array_equal(got, item) and q.get() == "tiny"
    del got
    q.put(item)
    (many,) = q.get_many(4, timeout=10)
    assert not received_in_place(many) and np.array_equal(many, item)
    q.put(b"x" * (300 << 10))
    assert q.get() == b"x" * (300 << 10)
    assert reclaim(q.name) == 0


def _explode(data: bytes) -> Any:
    raise RuntimeError(f"cannot rebuild {len(data)} bytes here")


class _Unloadable:
    """Pickles (in band, 200 KB: lent from a slot) and fails to unpickle."""

    def __reduce__(self) -> Tuple[Any, Tuple[bytes]]:
        return _explode, (b"u" * 200_000,)


def test_lent_arrays_of_a_kind_seen_are_rebuilt_from_their_prefix(
    make_queue: Callable[..., SageQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A get after a lent item asks for a lease first and rebuilds an array
    whose message starts as one already rebuilt (the same dtype, shape and
    writability) from that prefix, without parsing the message again
    (_oob.loads runs once per kind). Other lent messages (several buffers,
    bytes, a plain pickle, an array of another layout) take the general
    path, and one that fails to unpickle is carried by its exception."""
    from sage_queue import _oob

    parsed: List[int] = []
    general = _oob.loads

    def counted(payload: memoryview, owned: bool) -> Any:
        parsed.append(len(payload))
        return general(payload, owned)

    monkeypatch.setattr(_oob, "loads", counted)
    q = make_queue(pool=True)
    frozen = np.arange(200_000, dtype=np.uint8)
    frozen.flags.writeable = False
    kinds: List[Any] = [
        np.full(16_384, 1.5),  # 128 KiB of float64
        np.arange(256 * 128, dtype=np.int32).reshape(256, 128),
        frozen,
        {"a": np.full(10_000, 2.0), "b": np.full(10_000, 3.0)},  # two buffers
        b"v" * 300_000,  # one buffer, not an array
        np.asfortranarray(np.arange(20_000.0).reshape(100, 200)),
    ]
    for round_ in range(3):
        for item in kinds:
            # One at a time, let go of at once: a slot for each.
            q.put(item)
            got = q.get(timeout=10)
            assert same_item(got, item), (round_, item)
            if isinstance(item, np.ndarray):
                assert received_in_place(got) and got.flags.writeable == item.flags.writeable
            del got
    # The first message of each out-of-band kind (the bytes' is a plain
    # pickle), then only the kinds not rebuilt from a prefix: the dict's
    # (two buffers) and the F-order array's.
    assert len(parsed) == 5 + 2 * 2, parsed
    q.put(np.full(16_384, 4.0))
    q.put(_Unloadable())
    assert float(q.get(timeout=10)[0]) == 4.0
    with pytest.raises(RuntimeError, match="cannot rebuild") as info:
        q.get(timeout=10)
    left = info.value.payloads_left  # type: ignore[attr-defined]
    assert len(left) == 1 and len(left[0]) > 200_000
    assert q.qsize() == 0


def same_item(a: Any, b: Any) -> bool:
    if isinstance(b, np.ndarray):
        return type(a) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(b, dict):
        return a.keys() == b.keys() and all(same_item(a[k], b[k]) for k in b)
    return bool(a == b)


def test_get_many_lends_medium_items_after_the_first(make_queue: Callable[..., SageQueue]) -> None:
    """get_many copies the medium items of its first batch out of their
    slots; once it has seen one, it takes them one per call, lent as get
    lends them (before: 16-18k items/s at 128 KiB, 1 -> 1 process, against
    ~90k), and goes back to batches at the first item from the ring."""
    q = make_queue(pool=True)
    # 128 KiB each: 8 in the slots (a first batch takes 7, as many as the
    # thread's 1 MiB buffer holds), then 2 in the ring.
    arrays = [np.full(MEDIUM[0] // 8 * 2, float(i)) for i in range(10)]
    for a in arrays:
        q.put(a)
    first = q.get_many(8, timeout=10)
    assert len(first) > 1 and not any(received_in_place(a) for a in first)
    second = q.get_many(8, timeout=10)
    assert len(second) == 1 and received_in_place(second[0])
    got = first + second
    while len(got) < len(arrays):
        got += q.get_many(8, timeout=10)
    assert all(np.array_equal(a, b) for a, b in zip(got, arrays))
    small = [f"item {i}" for i in range(20)]
    q.put_many(small)
    calls: List[int] = []
    while sum(calls) < len(small):
        calls.append(len(q.get_many(8, timeout=10)))
    assert calls[0] == 1 and max(calls) == 8, calls
    assert reclaim(q.name) == 0


def _open_inodes() -> List[int]:
    """Inodes of the files this process has open (descriptors, O_PATH ones
    included) or mapped."""
    inodes = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            inodes.append(os.stat(f"/proc/self/fd/{fd}").st_ino)
        except OSError:
            pass  # the listing's own descriptor, closed since
    with open("/proc/self/maps") as maps:
        inodes += [int(line.split()[4]) for line in maps if len(line.split()) > 4]
    return inodes


def test_a_lent_item_keeps_no_hold_on_its_queue(make_queue: Callable[..., SageQueue]) -> None:
    """An array lent from the pool outlives its queue's handle and name
    without keeping the queue object open (its memory goes with the last
    handle, whatever the ring's size), and its slot goes when it does."""
    q = make_queue(pool=True)
    ring = os.stat(SHM / f"sage_ringbuf_{q.name}").st_ino
    q.put(np.arange(100_000, dtype=np.float64))
    a = q.get(timeout=10)
    assert received_in_place(a)
    slot = os.stat(SHM / f"sage_ringbuf_{q.name}..p0").st_ino
    q.close()
    destroy_queue(q.name)
    assert ring not in _open_inodes()
    assert side_objects(q.name) == ([], [])
    assert float(a[-1]) == 99_999.0
    del a
    gc.collect()
    assert slot not in _open_inodes()
