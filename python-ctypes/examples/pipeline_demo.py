#!/usr/bin/env python3
"""A multi-process pipeline over SageQueue, next to the same pipeline over
multiprocessing.Queue.

    producers (P processes) --> work queue --> workers (W processes)
                                                   |
                                 sink (1 process) <-- sink queue

Each producer puts its share of the messages (a dict with a 256-byte
payload); each worker takes messages, computes a digest and forwards a
result; the sink counts what arrives and checks it: exact count, checksum of
(producer, sequence), every digest, and per-producer order per worker.

Measured for both queue types in this one run, with the same shape and the
same message count:

* messages/s through the whole pipeline (first put to last get at the sink);
* put->get round trip through the idle pipeline: the main process puts a
  probe on the work queue, a worker forwards it, the sink sends it back to
  the main process (three hops); median and p99 over many probes.

A last stage passes numpy arrays larger than the ring (4 MiB float32
arrays through a SageQueue with default arguments, a 1 MiB ring) from one
process to another, next to multiprocessing.Queue: items/s, whether every
array arrived intact, and how many arrived without a copy (backed by their
mapped side object).

Run: `make demo` (or python python-ctypes/examples/pipeline_demo.py
[--messages N] [--producers P] [--workers W] [--arrays N]). Ctrl-C stops it
cleanly and leaves nothing in /dev/shm.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import signal
import statistics
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

# In-tree use without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sage_queue import SageQueue, destroy_queue  # noqa: E402

CTX = mp.get_context("spawn")  # both pipelines: the queues travel pickled
PAYLOAD = bytes(range(256))
DIGEST = zlib.crc32(PAYLOAD)
STOP = None  # sentinel; each worker forwards one to the sink when it stops
PROBE = "probe"


# ---------------------------------------------------------------- stages


def _quiet_children() -> None:
    # Ctrl-C goes to the whole process group: the main process handles it
    # and stops the children, which should not print tracebacks of their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def producer(work: Any, index: int, count: int, start: Any) -> None:
    _quiet_children()
    put = work.put
    clock = time.monotonic_ns
    start.wait()
    for seq in range(count):
        put({"producer": index, "seq": seq, "t": clock(), "payload": PAYLOAD})


def worker(work: Any, sink: Any) -> None:
    _quiet_children()
    get, put = work.get, sink.put
    while True:
        msg = get()
        if msg is STOP:
            put(STOP)
            return
        if msg == PROBE:
            put(PROBE)
            continue
        put((msg["producer"], msg["seq"], msg["t"], zlib.crc32(msg["payload"]), os.getpid()))


def sink_stage(sink: Any, replies: Any, workers: int, progress: Any, total: int) -> None:
    _quiet_children()
    get = sink.get
    count = checksum = bad_digests = out_of_order = 0
    last: Dict[Tuple[int, int], int] = {}  # (worker pid, producer) -> last seq
    latencies: List[int] = []
    first_get = last_get = 0
    stopped = 0
    clock = time.monotonic_ns
    while stopped < workers:
        item = get()
        now = clock()
        if item is STOP:
            stopped += 1
            continue
        if item == PROBE:
            replies.put(PROBE)
            continue
        producer_index, seq, stamp, digest, wpid = item
        if count == 0:
            first_get = now
        last_get = now
        count += 1
        checksum += producer_index * 1_000_003 + seq
        bad_digests += digest != DIGEST
        key = (wpid, producer_index)
        out_of_order += seq <= last.get(key, -1)
        last[key] = seq
        latencies.append(now - stamp)
        if count % 2000 == 0 or count == total:
            progress.value = count
    replies.put({"count": count, "checksum": checksum, "bad_digests": bad_digests,
                 "out_of_order": out_of_order, "first_get": first_get, "last_get": last_get,
                 "latency_median": statistics.median(latencies) if latencies else 0.0,
                 "latency_p99": sorted(latencies)[int(len(latencies) * 0.99)] if latencies else 0.0})


# ---------------------------------------------------------------- arrays larger than the ring

ARRAY_SHAPE = (1024, 1024)  # float32: 4 MiB, 4 times the default ring


def array_producer(q: Any, count: int) -> None:
    _quiet_children()
    import numpy as np

    for i in range(count):
        q.put(np.full(ARRAY_SHAPE, i, dtype=np.float32))
    q.put(STOP)


def _mapped(array: Any) -> bool:
    """Whether the array is a view of the queue's shared memory (no copy)."""
    from sage_queue import received_in_place

    return received_in_place(array)


def run_arrays(backend: "Backend", count: int) -> Dict[str, Any]:
    q = backend.make("arrays")
    proc = CTX.Process(target=array_producer, args=(q, count), name="array-producer")
    proc.start()
    problems: List[str] = []
    mapped = 0
    try:
        first = q.get(timeout=120)
        started = time.perf_counter()
        items = [first]
        for _ in range(count - 1):
            items.append(q.get(timeout=120))
            if len(items) > 4:
                items.pop(0)  # keep a few alive, as a consumer would
            mapped += _mapped(items[-1])
            last = items[-1]
            if last.shape != ARRAY_SHAPE or last[0, 0] != last[-1, -1]:
                problems.append("a damaged array")
        elapsed = time.perf_counter() - started
        if q.get(timeout=120) is not STOP:
            problems.append("missing end marker")
        proc.join(60)
        if proc.exitcode != 0:
            problems.append(f"producer exited with {proc.exitcode}")
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        backend.remove(q)
    rate = (count - 1) / elapsed if elapsed > 0 else 0.0
    print(f"  {backend.label:<22} {count:,} arrays of {ARRAY_SHAPE[0] * ARRAY_SHAPE[1] * 4 >> 20} MiB: "
          f"{rate:,.0f} arrays/s, {mapped:,} without a copy", flush=True)
    return {"rate": rate, "mapped": mapped, "problems": problems}


# ---------------------------------------------------------------- one pipeline


class Backend:
    """How one queue type is made and torn down."""

    def __init__(self, label: str, make: Callable[[str], Any], remove: Callable[[Any], None]) -> None:
        self.label, self.make, self.remove = label, make, remove


def sage_backend(run_id: str, ring_bytes: int) -> Backend:
    def make(tag: str) -> SageQueue:
        # auto_cleanup: whichever process closes it last removes it.
        return SageQueue(f"demo_{run_id}_{tag}", ring_bytes, auto_cleanup=True)

    def remove(q: SageQueue) -> None:
        q.destroy()

    return Backend("SageQueue", make, remove)


def mp_backend() -> Backend:
    def remove(q: Any) -> None:
        q.close()
        q.cancel_join_thread()

    return Backend("multiprocessing.Queue", lambda tag: CTX.Queue(), remove)


def run_pipeline(backend: Backend, messages: int, producers: int, workers: int, probes: int) -> Dict[str, Any]:
    work, sink, replies = backend.make("work"), backend.make("sink"), backend.make("replies")
    procs: List[Any] = []
    try:
        start = CTX.Event()
        progress = CTX.Value("q", 0)
        share = [messages // producers + (i < messages % producers) for i in range(producers)]
        procs += [CTX.Process(target=sink_stage, args=(sink, replies, workers, progress, messages), name="sink")]
        procs += [CTX.Process(target=worker, args=(work, sink), name=f"worker{i}") for i in range(workers)]
        prods = [CTX.Process(target=producer, args=(work, i, share[i], start), name=f"producer{i}")
                 for i in range(producers)]
        procs += prods
        for p in procs:
            p.start()

        # Round trips through the idle pipeline first (workers and sink up).
        rtts = []
        for _ in range(max(50, probes // 10)):  # warm-up
            work.put(PROBE)
            replies.get()
        for _ in range(probes):
            t0 = time.perf_counter()
            work.put(PROBE)
            replies.get()
            rtts.append(time.perf_counter() - t0)

        # Then the stream: everyone starts at once. The main process shows
        # progress until the sink reports; once the producers are done it
        # tells each worker to stop.
        t0 = time.monotonic_ns()
        start.set()
        shown = -1
        stopping = False
        report = None
        while report is None:
            try:
                report = replies.get(timeout=0.5)
            except queue.Empty:
                pass
            if not stopping and not any(p.is_alive() for p in prods):
                for _ in range(workers):
                    work.put(STOP)
                stopping = True
            done = progress.value
            if report is None and done != shown:
                print(f"  {backend.label:<22} {done:>9,} / {messages:,} messages at the sink, "
                      f"work queue holds {work.qsize():,}", flush=True)
                shown = done
            if report is None and not all(p.is_alive() or p.exitcode == 0 for p in procs):
                raise SystemExit(f"{backend.label}: a pipeline process failed")
        for p in procs:
            p.join(60)
        print(f"  {backend.label:<22} {report['count']:>9,} / {messages:,} messages at the sink: done", flush=True)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
        for q in (work, sink, replies):
            backend.remove(q)

    expected = sum(p * 1_000_003 + s for p in range(producers) for s in range(share[p]))
    problems = []
    if report["count"] != messages:
        problems.append(f"{report['count']} of {messages} messages arrived")
    if report["checksum"] != expected:
        problems.append("checksum mismatch")
    if report["bad_digests"]:
        problems.append(f"{report['bad_digests']} corrupted payloads")
    if report["out_of_order"]:
        problems.append(f"{report['out_of_order']} out of per-producer order")
    elapsed = (report["last_get"] - t0) / 1e9
    return {
        "rate": messages / elapsed,
        "elapsed": elapsed,
        "rtt_median": statistics.median(rtts) * 1e6,
        "rtt_p99": sorted(rtts)[int(len(rtts) * 0.99)] * 1e6,
        "loaded_median": report["latency_median"] / 1e3,
        "problems": problems,
    }


# ---------------------------------------------------------------- main


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="SageQueue pipeline demo")
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--probes", type=int, default=2_000, help="round trips measured per pipeline")
    parser.add_argument("--ring-bytes", type=int, default=1 << 20, help="SageQueue ring size")
    parser.add_argument("--arrays", type=int, default=200, help="4 MiB numpy arrays in the last stage")
    args = parser.parse_args(argv)
    run_id = f"{os.getpid()}"

    # SIGTERM takes the same clean path as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    print(f"pipeline: {args.producers} producers -> {args.workers} workers -> 1 sink, "
          f"{args.messages:,} messages of {len(PAYLOAD)}-byte payloads, processes started with spawn")
    results: Dict[str, Dict[str, Any]] = {}
    try:
        for backend in (sage_backend(run_id, args.ring_bytes), mp_backend()):
            print(f"\n{backend.label}:")
            results[backend.label] = run_pipeline(backend, args.messages, args.producers, args.workers, args.probes)
        print("\narrays larger than the ring (SageQueue with default arguments: a 1 MiB ring):")
        arrays = {b.label: run_arrays(b, args.arrays) for b in (sage_backend(run_id, 0), mp_backend())}
    except KeyboardInterrupt:
        print("\ninterrupted: stopped every process and removed the queues", file=sys.stderr)
        return 130
    finally:
        for tag in ("work", "sink", "replies", "arrays"):  # in case a run was cut short
            destroy_queue(f"demo_{run_id}_{tag}")

    base = results["multiprocessing.Queue"]
    print()
    print(f"{'queue':<24} {'messages/s':>12} {'vs mp.Queue':>12} {'round trip median':>18} {'p99':>10} "
          f"{'loaded e2e median':>18}  check")
    for label, r in results.items():
        check = "exact count, checksum, order OK" if not r["problems"] else "; ".join(r["problems"])
        print(f"{label:<24} {r['rate']:>12,.0f} {r['rate'] / base['rate']:>11.2f}x {r['rtt_median']:>15.1f} us "
              f"{r['rtt_p99']:>7.1f} us {r['loaded_median']:>15.1f} us  {check}")
    print("\nround trip: main -> worker -> sink -> main through the idle pipeline (3 puts, 3 gets);")
    print("loaded e2e: producer put -> sink get while the stream runs (includes time spent queued).")
    sage_arrays, mp_arrays = arrays["SageQueue"], arrays["multiprocessing.Queue"]
    ratio = sage_arrays["rate"] / mp_arrays["rate"] if mp_arrays["rate"] else 0.0
    check = "intact" if not (sage_arrays["problems"] or mp_arrays["problems"]) else "; ".join(
        sage_arrays["problems"] + mp_arrays["problems"])
    print(f"\n4 MiB numpy arrays: SageQueue {sage_arrays['rate']:,.0f}/s ({ratio:.1f}x mp.Queue, "
          f"{sage_arrays['mapped']:,} without a copy), mp.Queue {mp_arrays['rate']:,.0f}/s: {check}")
    failed = any(r["problems"] for r in results.values()) or check != "intact"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
