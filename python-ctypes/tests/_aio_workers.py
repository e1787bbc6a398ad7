"""Child-process code for test_asyncio.py (importable by name, as spawn
needs): paced producers and consumers, and asyncio programs run with
``asyncio.run`` in spawned processes."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from typing import Any, List, Tuple

from sage_queue import SageQueue, ShutDown


def paced_producer(q: SageQueue, count: int, seed: int) -> None:
    """Puts 0..count-1 with short random pauses (0.75 ms on average), so
    that consumers are sometimes waiting and sometimes find items queued."""
    rng = random.Random(seed)
    for i in range(count):
        q.put(i, timeout=60)
        if rng.random() < 0.5:
            time.sleep(rng.random() * 0.003)


def consume_all(q: SageQueue, results: SageQueue) -> None:
    """Gets until shutdown (blocking calls), then reports every item."""
    got: List[int] = []
    try:
        while True:
            got.append(q.get(timeout=60))
            if len(got) % 7 == 0:
                time.sleep(0.001)  # let the producer's ring fill sometimes
    except ShutDown:
        pass
    results.put(got, timeout=60)


def put_after(q: SageQueue, delay: float, item: object) -> None:
    time.sleep(delay)
    q.put(item, timeout=60)


async def _async_consumers(q: SageQueue, results: SageQueue, coroutines: int) -> None:
    async def one(index: int) -> List[int]:
        return [item async for item in q]

    lists = await asyncio.gather(*(one(i) for i in range(coroutines)))
    await results.put_async((os.getpid(), [item for part in lists for item in part]), timeout=60)


def run_async_consumers(q: SageQueue, results: SageQueue, coroutines: int) -> None:
    """``asyncio.run`` in a (spawned) child: several coroutines consume with
    ``async for`` until shutdown; the items go back through ``results``."""
    asyncio.run(_async_consumers(q, results, coroutines))


async def _idle_waiters(q: SageQueue, ready: SageQueue, out: SageQueue) -> None:
    ready.put("starting")  # an open task on `ready` (the parent never marks it done)
    getters = [asyncio.ensure_future(q.get_async()) for _ in range(3)]
    joiner = asyncio.ensure_future(ready.join_async())
    await asyncio.sleep(0.3)  # every waiter registered and asleep in C
    ready.put("waiting")
    done, _ = await asyncio.wait(getters, return_when=asyncio.FIRST_COMPLETED)
    first = done.pop().result()
    assert not joiner.done()
    for task in getters:
        task.cancel()
    joiner.cancel()
    await asyncio.gather(*getters, joiner, return_exceptions=True)
    out.put(first)


def sleep_in_slices(ready: SageQueue, seconds: float) -> None:
    """The idle-CPU test's reference, in a process of its own: two threads
    wait on a ``threading.Event`` (a futex wait with a timeout, as the C
    waits are) in slices of 0.1 s, as two waiter threads do (``aio``'s
    ``WAIT_SLICE``, fixed here: a library that waited in shorter slices is
    what the test is for),
    while the main thread sleeps. What the machine charges it is what it
    charges any process that waits so: this VM at times charges each such
    thread ~0.5 % of a CPU (``time.sleep`` slices about half that). Says
    "sleeping" once its threads run, and ends ``seconds`` later."""
    stop = threading.Event()

    def waiter() -> None:
        while not stop.wait(0.1):
            pass

    threads = [threading.Thread(target=waiter) for _ in range(2)]
    for thread in threads:
        thread.start()
    ready.put("sleeping")
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()


def run_idle_waiters(q: SageQueue, ready: SageQueue, out: SageQueue) -> None:
    """Three ``get_async`` and one ``join_async`` awaiting at once in a child;
    says "waiting" once they are, and reports the first item that arrives."""
    asyncio.run(_idle_waiters(q, ready, out))


def stall_test_peer(q: SageQueue, control: SageQueue, results: SageQueue) -> None:
    """The other process of the loop-stall test, started before the clock
    runs: on "put", puts "hello" 0.3 s later; on "consume", starts
    consuming 0.2 s later (until shutdown), and reports what it got."""
    assert control.get(timeout=60) == "put"
    time.sleep(0.3)
    q.put("hello", timeout=60)
    assert control.get(timeout=60) == "consume"
    time.sleep(0.2)
    consume_all(q, results)


def _own_run_delay() -> float:
    with open("/proc/thread-self/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def stall_reference(conn: Any, cpu: int) -> None:
    """A reference for the loop-stall test, in a process of its own on CPU
    ``cpu``: sleeps 1 ms at a time and records each wake-up that came late
    while this process was not waiting for that CPU either (a stall of the
    machine: the hypervisor taking the CPU away, timers firing late). Sends
    "ready", runs until it receives anything, then sends
    [(start, end, late)], in time.perf_counter() seconds (CLOCK_MONOTONIC,
    the same in every process)."""
    os.sched_setaffinity(0, {cpu})
    stalls: List[Tuple[float, float, float]] = []
    conn.send("ready")
    while not conn.poll():
        start, delay = time.perf_counter(), _own_run_delay()
        time.sleep(0.001)
        end = time.perf_counter()
        late = (end - start) - 0.001 - (_own_run_delay() - delay)
        if late > 0.0005:
            stalls.append((start, end, late))
    conn.send(stalls)
