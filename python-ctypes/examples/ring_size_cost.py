#!/usr/bin/env python3
"""Small items against the ring size (issue 14, item 4): which default ring
is not the slow path.

One producer process -> one consumer process (fork), ``--messages`` items
whose pickles are 512 bytes, through SageQueues whose rings are 64 KiB (the
1.0 default), 1 MiB and 4 MiB (and SageQueue's current default, whatever it
is), with put/get and with put_many/get_many (batches of 256). The ring
sizes run interleaved, ``--rounds`` times; the best round of each counts
(the machine may be shared: the best round is the least disturbed).

Run: ``make venv lib`` then
``RING_BUFFER_LIB=build/libring_buffer.so .venv/bin/python python-ctypes/examples/ring_size_cost.py``
[--messages N] [--rounds R].
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

# In-tree use without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sage_queue import DEFAULT_MAXSIZE, SageQueue, destroy_queue  # noqa: E402

PAYLOAD = b"x" * 494  # its pickle is 512 bytes
assert len(pickle.dumps(PAYLOAD, pickle.HIGHEST_PROTOCOL)) == 512
BATCH = 256
CTX = mp.get_context("fork")
SIZES = sorted({64 << 10, 1 << 20, 4 << 20, DEFAULT_MAXSIZE})


def _produce(q: SageQueue, n: int, batched: bool, start: Any) -> None:
    start.wait()
    if batched:
        batch = [PAYLOAD] * BATCH
        for _ in range(n // BATCH):
            q.put_many(batch)
    else:
        put = q.put
        for _ in range(n):
            put(PAYLOAD)
    q.put(None)


def _consume(q: SageQueue, n: int, batched: bool, result: Any) -> None:
    count = 0
    if batched:
        while True:
            items = q.get_many(BATCH)
            count += len(items)
            if items[-1] is None:
                count -= 1
                break
    else:
        get = q.get
        while get() is not None:
            count += 1
    result.put((count, time.monotonic()))


def items_per_second(ring: int, n: int, batched: bool) -> float:
    name = f"ring_size_cost_{os.getpid()}"
    q = SageQueue(name, ring)
    try:
        start, result = CTX.Event(), CTX.SimpleQueue()
        consumer = CTX.Process(target=_consume, args=(q, n, batched, result))
        producer = CTX.Process(target=_produce, args=(q, n, batched, start))
        consumer.start()
        producer.start()
        time.sleep(0.2)  # both up and waiting before the clock starts
        t0 = time.monotonic()
        start.set()
        count, t1 = result.get()
        producer.join()
        consumer.join()
        if count != n:
            raise SystemExit(f"lost items: {count} of {n}")
        return n / (t1 - t0)
    finally:
        q.close()
        destroy_queue(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.messages // BATCH * BATCH
    rates: Dict[Tuple[int, bool], List[float]] = {}
    for _ in range(args.rounds):
        for batched in (False, True):
            for ring in SIZES:
                rates.setdefault((ring, batched), []).append(items_per_second(ring, n, batched))
    best = {key: max(values) for key, values in rates.items()}
    median = {key: statistics.median(values) for key, values in rates.items()}
    print(f"1 -> 1 process, {n} items of 512 B (pickled), best of {args.rounds} rounds; "
          f"default ring {DEFAULT_MAXSIZE} bytes")
    rows: List[str] = [f"{'ring':>10} {'put/get items/s':>16} {'put_many/get_many':>18}   (median of the rounds)"]
    for ring in SIZES:
        mark = " (default)" if ring == DEFAULT_MAXSIZE else ""
        rows.append(f"{ring:>10} {best[ring, False]:>16,.0f} {best[ring, True]:>18,.0f}   "
                    f"({median[ring, False]:,.0f} / {median[ring, True]:,.0f}){mark}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
