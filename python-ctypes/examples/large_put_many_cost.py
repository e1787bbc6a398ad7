#!/usr/bin/env python3
"""put_many against put for large items (issue 14, item 4).

One producer process -> one consumer process (fork), a SageQueue with
default arguments, ``--megabytes`` MiB in total per case of items of 64 KiB
to 16 MiB (numpy arrays and bytes), smaller and larger than the ring. The
producer sends them with ``put`` one by one, or with ``put_many`` in
batches of ``--batch``; the consumer takes them with ``get`` and checks each
(size and first byte). The two ways run back to back, in turns first,
``--rounds`` times; printed are the best round of each, the medians, and the
median of each round's put_many/put ratio (the machine may be shared, and
its speed drifts between rounds).

Run: ``make venv lib`` then
``RING_BUFFER_LIB=build/libring_buffer.so .venv/bin/python python-ctypes/examples/large_put_many_cost.py``
[--megabytes M] [--batch B] [--rounds R].
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

# In-tree use without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sage_queue import SageQueue, destroy_queue  # noqa: E402

CTX = mp.get_context("fork")
SIZES = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20]
KINDS = ("numpy", "bytes")


def make_item(kind: str, size: int, i: int) -> Any:
    if kind == "numpy":
        return np.full(size, i % 251, dtype=np.uint8)
    return bytes([i % 251]) * size


def _produce(q: SageQueue, kind: str, size: int, count: int, batch: int, pool: int, start: Any) -> None:
    # The same pool of distinct items for put and put_many (a smaller pool
    # would stay in the CPU's caches and favour one of them).
    items = [make_item(kind, size, i) for i in range(min(count, pool))]
    start.wait()
    sent = 0
    while sent < count:
        if batch:
            take = min(batch, count - sent)
            q.put_many([items[(sent + j) % len(items)] for j in range(take)])
            sent += take
        else:
            q.put(items[sent % len(items)])
            sent += 1
    q.close()


def _consume(q: SageQueue, size: int, count: int, result: Any) -> None:
    for _ in range(count):
        item = q.get()
        if len(item) != size:
            raise SystemExit(f"item of {len(item)} bytes, expected {size}")
    result.put(time.monotonic())


def items_per_second(kind: str, size: int, count: int, batch: int, pool: int) -> float:
    name = f"large_put_many_{os.getpid()}"
    q = SageQueue(name)
    try:
        start, result = CTX.Event(), CTX.SimpleQueue()
        consumer = CTX.Process(target=_consume, args=(q, size, count, result))
        producer = CTX.Process(target=_produce, args=(q, kind, size, count, batch, pool, start))
        consumer.start()
        producer.start()
        time.sleep(0.3)  # both up (and the producer's items made) before the clock starts
        t0 = time.monotonic()
        start.set()
        t1 = result.get()
        producer.join()
        consumer.join()
        if producer.exitcode or consumer.exitcode:
            raise SystemExit("a process failed")
        return count / (t1 - t0)
    finally:
        q.close()
        destroy_queue(name)


def in_process(kinds: List[str], sizes: List[int], batch: int, rounds: int) -> None:
    """The producer's own cost per item, put against put_many, in one
    process (no consumer to wait for: less noise on a shared machine). A
    ring of 64 MiB carries every item inside it; one of 64 KiB sends every
    item out of line."""
    print(f"in one process, microseconds per item put (best of {rounds}); put_many in batches of {batch}")
    print(f"{'kind':<6} {'item bytes':>11} {'ring':>9} {'put us':>9} {'put_many us':>12} {'put/put_many':>13}")
    for ring in (64 << 20, 64 << 10):
        name = f"large_put_many_{os.getpid()}"
        q = SageQueue(name, ring)
        try:
            for kind in kinds:
                for size in sizes:
                    if ring > size and size * batch > ring // 2:
                        continue  # a batch would not fit: the put would wait for ever
                    items = [make_item(kind, size, i) for i in range(batch)]
                    single = many = float("inf")
                    for _ in range(rounds):
                        t0 = time.perf_counter()
                        for item in items:
                            q.put(item)
                        single = min(single, (time.perf_counter() - t0) / batch)
                        q.get_many_bytes(batch)  # raw: drains without building the items
                        while q.qsize():
                            q.get_many_bytes(batch)
                        t0 = time.perf_counter()
                        q.put_many(items)
                        many = min(many, (time.perf_counter() - t0) / batch)
                        while q.qsize():
                            q.get_many_bytes(batch)
                    print(f"{kind:<6} {size:>11} {ring:>9} {single * 1e6:>9.1f} {many * 1e6:>12.1f} "
                          f"{single / many:>12.2f}x")
        finally:
            q.close()
            destroy_queue(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=256, help="MiB moved per case")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="*", default=SIZES, help="item bytes")
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS)
    parser.add_argument("--in-process", action="store_true", help="measure the producer's cost in one process")
    args = parser.parse_args()
    if args.in_process:
        in_process(args.kinds, args.sizes, args.batch, args.rounds)
        return
    rates: Dict[Tuple[str, int, int], List[float]] = {}
    for r in range(args.rounds):
        for kind in args.kinds:
            for size in args.sizes:
                count = max(args.megabytes * (1 << 20) // size, 16)
                # Back to back, in turns first: the machine's speed drifts,
                # so each round's pair is compared with itself (below).
                for batch in (0, args.batch) if r % 2 == 0 else (args.batch, 0):
                    rate = items_per_second(kind, size, count, batch, 2 * args.batch)
                    rates.setdefault((kind, size, batch), []).append(rate)
    best = {key: max(values) for key, values in rates.items()}
    median = {key: statistics.median(values) for key, values in rates.items()}
    print(f"1 -> 1 process, default SageQueue, best of {args.rounds} rounds; put_many in batches of {args.batch}")
    print(f"{'kind':<6} {'item bytes':>11} {'put items/s':>12} {'put_many items/s':>17} {'ratio':>6}"
          "   (medians: put, put_many, ratio)   per round: median put_many/put, rounds >= 1")
    for kind in args.kinds:
        for size in args.sizes:
            single, many = best[kind, size, 0], best[kind, size, args.batch]
            mid_single, mid_many = median[kind, size, 0], median[kind, size, args.batch]
            # Each round's put_many against the put run next to it: the
            # robust figure on a machine whose speed changes between rounds.
            pairs = [m / p for p, m in zip(rates[kind, size, 0], rates[kind, size, args.batch])]
            print(f"{kind:<6} {size:>11} {single:>12,.0f} {many:>17,.0f} {many / single:>5.2f}x"
                  f"   ({mid_single:,.0f}, {mid_many:,.0f}, {mid_many / mid_single:.2f}x)"
                  f"   {statistics.median(pairs):.2f}x, {sum(x >= 1 for x in pairs)} of {len(pairs)}")


if __name__ == "__main__":
    main()
