"""SIGKILL chaos through Python's default path for medium items: a
``SageQueue`` with default arguments puts arrays of 64 KiB up to its ring's
size into the slots of the queue's pool and lends them to its consumers,
with small items through the ring and a few larger than the ring among
them. Producers (``put`` and ``put_many``) and consumers (``get`` and
``get_many``, some keeping a few lent arrays alive) are killed at random
instants and replaced, as tests/large_chaos.rs does for the C core.

Asserts: nothing duplicated or corrupted, per-stream order kept by every
consumer, every confirmed item delivered except what the killed consumers
had taken and not recorded (one item per ``get`` consumer's death, one batch
per ``get_many`` consumer's), and afterwards nothing left in /dev/shm of the
queue's pool once ``gc`` has run."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from sage_queue import SageQueue, ShutDown, _lib, received_in_place

from conftest import SHM

STREAMS = 1000
PER_STREAM = 1500
PRODUCERS = 2
CONSUMERS = 2
RUN_S = 3.0
BATCH = 4  # put_many producers confirm every BATCH items
GET_MANY = 8  # items a get_many consumer asks for at once


def _mix(x: int) -> int:
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & (2**64 - 1)
    return x ^ (x >> 33)


def item(s: int, seq: int) -> Any:
    """Item ``seq`` of stream ``s``: one in four a small tuple (the ring),
    one in twenty an array larger than the 1 MiB ring, the rest medium
    arrays of 64 KiB to 512 KiB (the pool, lent). Arrays are int64: [s,
    seq, then a value that follows from them]."""
    h = _mix(s * PER_STREAM + seq)
    if h % 4 == 0:
        return ("small", s, seq, bytes([h % 251]) * (h % 2000))
    n = (1_100_000 if h % 20 == 1 else 65_536 + h % (448 << 10)) // 8
    a = np.full(n, h % 1_000_003, dtype=np.int64)
    a[0], a[1] = s, seq
    return a


def check(got: Any) -> Tuple[int, int, bool]:
    """(stream, seq, whether the item is exactly ``item(stream, seq)``)."""
    if isinstance(got, tuple):
        s, seq = got[1], got[2]
        return s, seq, got == item(s, seq)
    s, seq = int(got[0]), int(got[1])
    if not (0 <= s < STREAMS and 0 <= seq < PER_STREAM):
        return s, seq, False
    want = item(s, seq)
    return s, seq, isinstance(want, np.ndarray) and got.shape == want.shape and bool(np.array_equal(got, want))


class Board:
    """What the processes record, in shared memory: per item how many times
    it was received, per stream how many items were put, and the errors."""

    def __init__(self) -> None:
        ctx = mp.get_context("fork")
        self.seen: Any = ctx.RawArray("b", STREAMS * PER_STREAM)
        self.confirmed: Any = ctx.RawArray("q", STREAMS)
        self.errors: Any = ctx.RawArray("q", 2)  # [corrupt, reordered]


def producer(name: str, board: Board, s: int) -> None:
    q = SageQueue(name)
    if s % 2 == 0:
        for seq in range(PER_STREAM):
            q.put(item(s, seq))
            board.confirmed[s] = seq + 1
    else:
        for at in range(0, PER_STREAM, BATCH):
            q.put_many([item(s, seq) for seq in range(at, at + BATCH)])
            board.confirmed[s] = at + BATCH
    os._exit(0)


def consumer(name: str, board: Board, k: int) -> None:
    q = SageQueue(name)
    last: Dict[int, int] = {}
    kept: List[Any] = []  # some consumers keep lent arrays alive a while

    def record(got: Any) -> None:
        s, seq, ok = check(got)
        if not ok:
            board.errors[0] += 1
            return
        if seq <= last.get(s, -1):
            board.errors[1] += 1
        last[s] = seq
        board.seen[s * PER_STREAM + seq] += 1
        if k % 3 == 2 and isinstance(got, np.ndarray) and received_in_place(got):
            kept.append(got)
            del kept[:-3]

    try:
        while True:
            if k % 2 == 0:
                record(q.get(timeout=30))
            else:
                for got in q.get_many(GET_MANY, timeout=30):
                    record(got)
    except ShutDown:
        os._exit(0)


def _fork(target: Callable[..., None], *args: Any) -> Any:
    p = mp.get_context("fork").Process(target=target, args=args)
    p.start()
    return p


def _kill(p: Any) -> None:
    """SIGKILL, unless it ended already (a producer whose stream is done)."""
    if p.exitcode is None:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # ended and reaped just now
    p.join(10)


def pool_objects(name: str) -> List[str]:
    return sorted(p.name for p in SHM.glob(f"sage_ringbuf_{name}..*"))


def test_random_kills_with_medium_items_lose_at_most_the_consumers_own_items(
    make_queue: Callable[..., SageQueue],
) -> None:
    q = make_queue(pool=True)  # SageQueue's defaults: a 1 MiB ring, medium items pooled
    board = Board()
    rng = random.Random(int(os.environ.get("RB_CHAOS_SEED", "14"), 0))  # as tests/chaos.rs
    streams = iter(range(STREAMS))
    producers = [_fork(producer, q.name, board, next(streams)) for _ in range(PRODUCERS)]
    consumers = [_fork(consumer, q.name, board, k) for k in range(CONSUMERS)]
    consumer_kinds = list(range(CONSUMERS))  # each one's k (see consumer)
    started_consumers = CONSUMERS
    consumer_kills = 0
    may_lose = 0  # what the killed consumers may have taken unrecorded
    started = time.monotonic()
    try:
        while time.monotonic() - started < RUN_S:
            time.sleep(rng.uniform(0.005, 0.045))
            for i, p in enumerate(producers):
                if not p.is_alive():  # its stream is done: a new one
                    producers[i] = _fork(producer, q.name, board, next(streams))
            victim = rng.randrange(PRODUCERS + CONSUMERS)
            if victim < PRODUCERS:
                _kill(producers[victim])
                producers[victim] = _fork(producer, q.name, board, next(streams))
            else:
                _kill(consumers[victim - PRODUCERS])
                consumer_kills += 1
                may_lose += 1 if consumer_kinds[victim - PRODUCERS] % 2 == 0 else GET_MANY
                consumer_kinds[victim - PRODUCERS] = started_consumers
                consumers[victim - PRODUCERS] = _fork(consumer, q.name, board, started_consumers)
                started_consumers += 1
        for p in producers:
            _kill(p)
        # Orphans of killed producers go; then the consumers drain the rest.
        _lib.reclaim(q.name.encode())
        deadline = time.monotonic() + 60
        while q.qsize() > 0:
            assert time.monotonic() < deadline, "consumers stalled"
            time.sleep(0.005)
        q.shutdown()
        for p in consumers:
            p.join(30)
            assert p.exitcode == 0, p.exitcode
    finally:
        for p in producers + consumers:
            if p.is_alive():
                _kill(p)
    assert board.errors[0] == 0, "corrupt items"
    assert board.errors[1] == 0, "reordered items"
    used = next(streams)
    seen = np.frombuffer(board.seen, dtype=np.int8).reshape(STREAMS, PER_STREAM)[:used]
    assert int(seen.max()) <= 1, "an item delivered twice"
    confirmed = np.frombuffer(board.confirmed, dtype=np.int64)[:used]
    missing = sum(int((seen[s, : confirmed[s]] == 0).sum()) for s in range(used))
    delivered = int(seen.sum())
    assert delivered > 1000, f"the run moved too little to mean anything: {delivered}"
    assert missing <= may_lose, f"{missing} confirmed items lost, {consumer_kills} consumer deaths (at most {may_lose})"
    # Slots of consumers killed holding lent arrays, then nothing at all.
    _lib.reclaim(q.name.encode())
    assert pool_objects(q.name) == [], "side objects left behind"
    print(f"medium chaos: {delivered} delivered, {consumer_kills} consumer kills, {missing} lost, {used} streams")
