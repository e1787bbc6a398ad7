#!/usr/bin/env python3
"""Python benchmark: SageQueue against the usual alternatives, in one run.

Throughput: one producer process -> one consumer process, N messages whose
pickles are 512 bytes, through

  * SageQueue.put / get
  * SageQueue.put_many / get_many (batches of BATCH)
  * multiprocessing.Queue
  * multiprocessing.SimpleQueue
  * faster_fifo.Queue (put / get)

Latency: put->get round trip between two processes (ping-pong: A puts, B
gets and puts back, A gets; the time of that whole cycle), median and p99,
for SageQueue and multiprocessing.Queue; and the same for SageQueue with A
an asyncio coroutine (await put_async, await get_async: the wake-up goes
through sage_queue.aio's waiter thread and the event loop) against B's
blocking calls.

Every figure comes from the same run on the same machine; the ratios are
against multiprocessing.Queue. Targets (DESIGN.md): SageQueue >= 3.5x
mp.Queue messages/s, put_many/get_many >= 8x, round-trip median <= 25 us;
asyncio round-trip median within 2x the blocking one (issue 12).

Run: make bench-python (or RING_BUFFER_LIB=build/libring_buffer.so
.venv/bin/python bench/bench_python.py [--messages N] [--pings N]).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import pickle
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

# In-tree use without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python-ctypes"))

from sage_queue import SageQueue, destroy_queue  # noqa: E402

try:
    import faster_fifo  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - optional
    faster_fifo = None

PAYLOAD = b"x" * 494  # pickle.dumps(PAYLOAD, HIGHEST_PROTOCOL) is 512 bytes
assert len(pickle.dumps(PAYLOAD, pickle.HIGHEST_PROTOCOL)) == 512
BATCH = 256
RING_BYTES = 4 << 20
CTX = mp.get_context("fork")  # the cheapest start; every contender gets it


def _unique(tag: str) -> str:
    return f"bench_py_{os.getpid()}_{tag}"


# ---------------------------------------------------------------- throughput
# Each contender is a (producer, consumer) pair of functions run in two
# processes; the consumer returns (messages, bytes) and its finish time.


def _produce_single(q: Any, n: int, start: Any) -> None:
    put = q.put
    start.wait()
    for _ in range(n):
        put(PAYLOAD)
    put(None)


def _consume_single(q: Any, n: int, result: Any) -> None:
    get = q.get
    count = size = 0
    while True:
        item = get()
        if item is None:
            break
        count += 1
        size += len(item)
    result.put((count, size, time.monotonic()))


def _produce_batched(q: SageQueue, n: int, start: Any) -> None:
    batch = [PAYLOAD] * BATCH
    start.wait()
    left = n
    while left > 0:
        take = min(left, BATCH)
        q.put_many(batch if take == BATCH else batch[:take])
        left -= take
    q.put(None)


def _consume_batched(q: SageQueue, n: int, result: Any) -> None:
    count = size = 0
    done = False
    while not done:
        for item in q.get_many(BATCH):
            if item is None:
                done = True
                break
            count += 1
            size += len(item)
    result.put((count, size, time.monotonic()))


def _produce_ff(q: Any, n: int, start: Any) -> None:
    put = q.put
    start.wait()
    for _ in range(n):
        put(PAYLOAD, timeout=60)
    put(None, timeout=60)


def _consume_ff(q: Any, n: int, result: Any) -> None:
    get = q.get
    count = size = 0
    while True:
        item = get(timeout=60)
        if item is None:
            break
        count += 1
        size += len(item)
    result.put((count, size, time.monotonic()))


def run_throughput(
    make_queue: Callable[[], Tuple[Any, Callable[[], None]]],
    producer: Callable[..., None],
    consumer: Callable[..., None],
    n: int,
) -> float:
    """Messages/s from the producer's start to the consumer's last get."""
    q, cleanup = make_queue()
    try:
        start = CTX.Event()
        result = CTX.SimpleQueue()
        cons = CTX.Process(target=consumer, args=(q, n, result))
        prod = CTX.Process(target=producer, args=(q, n, start))
        cons.start()
        prod.start()
        time.sleep(0.2)  # both processes up and waiting before the clock starts
        t0 = time.monotonic()
        start.set()
        count, size, t1 = result.get()
        prod.join()
        cons.join()
        if count != n or size != n * len(PAYLOAD):
            raise SystemExit(f"lost messages: got {count} of {n} ({size} bytes)")
        return n / (t1 - t0)
    finally:
        cleanup()


def sage_queue_factory() -> Tuple[Any, Callable[[], None]]:
    q = SageQueue(_unique("tp"), RING_BYTES)
    return q, q.destroy


def mp_queue_factory() -> Tuple[Any, Callable[[], None]]:
    q = CTX.Queue()
    return q, q.close


def mp_simple_factory() -> Tuple[Any, Callable[[], None]]:
    q = CTX.SimpleQueue()
    return q, lambda: None


def ff_factory() -> Tuple[Any, Callable[[], None]]:
    q = faster_fifo.Queue(max_size_bytes=RING_BYTES)
    return q, lambda: None


# ---------------------------------------------------------------- latency


def _echo(q_in: Any, q_out: Any, n: int) -> None:
    get, put = q_in.get, q_out.put
    for _ in range(n):
        put(get())


def run_latency(make_pair: Callable[[], Tuple[Any, Any, Callable[[], None]]], n: int) -> List[float]:
    """Round-trip times in seconds of n ping-pongs (after a warm-up)."""
    ping, pong, cleanup = make_pair()
    warm = max(100, n // 10)
    try:
        echo = CTX.Process(target=_echo, args=(ping, pong, warm + n))
        echo.start()
        put, get = ping.put, pong.get
        clock = time.perf_counter
        for i in range(warm):
            put(i)
            get()
        times = []
        for i in range(n):
            t0 = clock()
            put(i)
            get()
            times.append(clock() - t0)
        echo.join()
        return times
    finally:
        cleanup()


def run_latency_async(make_pair: Callable[[], Tuple[Any, Any, Callable[[], None]]], n: int) -> List[float]:
    """run_latency with A an asyncio coroutine: await put_async, await
    get_async (B, the echo, uses the blocking calls)."""
    ping, pong, cleanup = make_pair()
    warm = max(100, n // 10)

    async def pinger() -> List[float]:
        put, get = ping.put_async, pong.get_async
        clock = time.perf_counter
        for i in range(warm):
            await put(i)
            await get()
        times = []
        for i in range(n):
            t0 = clock()
            await put(i)
            await get()
            times.append(clock() - t0)
        return times

    try:
        echo = CTX.Process(target=_echo, args=(ping, pong, warm + n))
        echo.start()
        times = asyncio.run(pinger())
        echo.join()
        return times
    finally:
        cleanup()


def sage_pair() -> Tuple[Any, Any, Callable[[], None]]:
    a, b = SageQueue(_unique("ping"), 1 << 16), SageQueue(_unique("pong"), 1 << 16)

    def cleanup() -> None:
        a.destroy()
        b.destroy()

    return a, b, cleanup


def mp_pair() -> Tuple[Any, Any, Callable[[], None]]:
    a, b = CTX.Queue(), CTX.Queue()

    def cleanup() -> None:
        a.close()
        b.close()

    return a, b, cleanup


def _p99(values: List[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# ---------------------------------------------------------------- main


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000, help="messages per throughput run")
    parser.add_argument("--pings", type=int, default=10_000, help="round trips per latency run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender (best counts)")
    args = parser.parse_args(argv)
    n = args.messages

    contenders: List[Tuple[str, Callable[[], Tuple[Any, Callable[[], None]]], Callable[..., None], Callable[..., None]]] = [
        ("SageQueue put/get", sage_queue_factory, _produce_single, _consume_single),
        (f"SageQueue put_many/get_many ({BATCH})", sage_queue_factory, _produce_batched, _consume_batched),
        ("multiprocessing.Queue", mp_queue_factory, _produce_single, _consume_single),
        ("multiprocessing.SimpleQueue", mp_simple_factory, _produce_single, _consume_single),
    ]
    if faster_fifo is not None:
        contenders.append(("faster_fifo.Queue put/get", ff_factory, _produce_ff, _consume_ff))

    print(f"sage_queue benchmark: 1 producer -> 1 consumer process, {n:,} messages of 512-byte pickles; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"each contender runs {args.repeat} times, interleaved with the others; the best run counts")
    rates: Dict[str, float] = {}
    for round_no in range(args.repeat):
        for label, factory, producer, consumer in contenders:
            rate = run_throughput(factory, producer, consumer, n)
            rates[label] = max(rates.get(label, 0.0), rate)
            print(f"  round {round_no + 1}: {label:<40} {rate:>12,.0f} msg/s", flush=True)

    base = rates["multiprocessing.Queue"]
    print()
    print(f"{'throughput (best run)':<42} {'msg/s':>12} {'vs mp.Queue':>12}")
    for label, rate in rates.items():
        print(f"{label:<42} {rate:>12,.0f} {rate / base:>11.2f}x")

    print()
    print(f"put->get round trip between two processes (ping-pong: A puts, B gets and puts back, A gets), "
          f"{args.pings:,} round trips per run, run with the lowest median counts")
    lat: Dict[str, Tuple[float, float]] = {}
    for _ in range(args.repeat):
        for label, pair, runner in (("SageQueue", sage_pair, run_latency),
                                    ("SageQueue asyncio (put_async/get_async)", sage_pair, run_latency_async),
                                    ("multiprocessing.Queue", mp_pair, run_latency)):
            times = runner(pair, args.pings)
            median, p99 = statistics.median(times) * 1e6, _p99(times) * 1e6
            if label not in lat or median < lat[label][0]:
                lat[label] = (median, p99)
    print(f"{'round trip':<42} {'median us':>12} {'p99 us':>12}")
    for label, (median, p99) in lat.items():
        print(f"{label:<42} {median:>12.1f} {p99:>12.1f}")
    print(f"(load average now {os.getloadavg()[0]:.2f})")

    single = rates["SageQueue put/get"] / base
    many = rates[f"SageQueue put_many/get_many ({BATCH})"] / base
    print()
    print("targets (DESIGN.md):")
    print(f"  SageQueue put/get >= 3.5x mp.Queue:            {single:5.2f}x  {'met' if single >= 3.5 else 'MISSED'}")
    print(f"  SageQueue put_many/get_many >= 8x mp.Queue:    {many:5.2f}x  {'met' if many >= 8 else 'MISSED'}")
    med = lat["SageQueue"][0]
    print(f"  SageQueue round trip median <= 25 us:          {med:5.1f} us  {'met' if med <= 25 else 'MISSED'}")
    ratio = lat["SageQueue asyncio (put_async/get_async)"][0] / med
    print(f"  asyncio round trip median <= 2x the blocking:  {ratio:5.2f}x  {'met' if ratio <= 2 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        # Queues are destroyed by each run; this catches an interrupted one.
        for tag in ("tp", "ping", "pong"):
            destroy_queue(_unique(tag))
