#!/usr/bin/env python3
"""Items/s against item size: SageQueue and the alternatives, side by side.

One producer process -> one consumer process, in the same run on the same
machine, for each item size:

  * 512-byte pickles (a bytes object whose pickle is 512 bytes);
  * numpy float64 arrays of 64 KiB, 256 KiB, 1 MiB, 16 MiB and 64 MiB (2-D,
    128 columns).

Contenders (each as its users would call it):

  * SageQueue with default arguments (``SageQueue(name)``: default ring
    size, default codec), ``put``/``get``; and ``put_many``/``get_many``
    (batches of 256) for the 512-byte pickles;
  * ``multiprocessing.Queue`` (the baseline of every ratio);
  * ``multiprocessing.Pipe`` (``send``/``recv``);
  * ``faster_fifo.Queue`` (its ring sized to hold a few items);
  * iceoryx2's Python binding, publish-subscribe over a slice of bytes as its
    examples do it: the publisher loans a sample, writes the item's bytes into
    it (a numpy array's data; a pickle's bytes) and sends it; the subscriber
    receives the sample and takes a zero-copy view of it (``np.frombuffer`` of
    the payload's memoryview; ``pickle.loads`` of it) -- and, as a second
    row, copies the array out. Lossless: safe overflow off, the publisher's
    default backpressure (retry until delivered), a subscriber buffer of 64
    samples (16 at 64 MiB) -- with its default of 2 it is several times
    slower here -- and the subscriber polls ``receive()`` in a loop, yielding
    the CPU between empty polls (its fastest way to wait; it keeps a CPU
    busy). Dtype and shape are known to both sides (no header travels with
    the array). Its files go under a prefix and a root directory of the run's
    own, removed afterwards.

Every consumer receives usable objects: each item's shape (length) and a
stamp (its first element, which tells the 4 source items apart and so checks
their order) are checked as it arrives, and three items (the first,
the middle and the last) are kept and compared by CRC-32 of their bytes with
the producer's after the clock stops. items/s is the number of items over the
time from the producer's start to the consumer's receipt of the last one.
Before the clock starts, each pair moves a warm-up of the same items through
the same channel (a tenth of the run, at most 64 MiB of them, at least one),
so that one-time set-up is not counted as throughput, for any contender:
iceoryx2 makes its data segment before it sends, SageQueue makes the
shared-memory slots of its pool (which then stay) as its first large items
need them, mp.Queue starts its feeder thread on the first put, and every
channel's memory is touched for the first time.

The targets of issue 14 (item 7) are marked met or not met: 512 B pickles
>= 3.5x mp.Queue with put/get and >= 10x with put_many/get_many; 1 MiB and
16 MiB arrays >= 15x mp.Queue and >= 0.8x iceoryx2 (zero-copy view).

Run: make bench-sizes (part of make bench), or
RING_BUFFER_LIB=build/libring_buffer.so .venv/bin/python bench/bench_sizes.py
[--quick] [--runs N] [--sizes 512,64K,256K,1M,16M,64M] [--plot PATH].
--runs N repeats the whole measurement N times and prints each run's ratios
and their median (the table and the plot show medians). The plot (log-log
items/s against item size) goes to docs/bench_sizes.png unless --plot says
otherwise.
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing as mp
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import zlib
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

# In-tree use without installing the package.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python-ctypes"))

from sage_queue import SageQueue, destroy_queue  # noqa: E402

try:
    import faster_fifo  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - pinned in requirements-dev.txt
    faster_fifo = None

try:
    import iceoryx2 as iox2  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - pinned in requirements-dev.txt
    iox2 = None

CTX = mp.get_context("fork")  # the cheapest start; every contender gets it
BATCH = 256
VARIANTS = 4  # distinct source items, sent in turn (checked by their stamp)
RUN_TIMEOUT = 300.0  # seconds one producer/consumer pair may take at most
WARMUP_BYTES = 64 << 20  # at most this many bytes of items warm a channel up
DEFAULT_PLOT = REPO / "docs" / "bench_sizes.png"


# ---------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Size:
    """One item size: a label, its bytes, and how many items each class of
    contender moves per run (full run, --quick run)."""

    label: str
    nbytes: int
    #: items per run for the shared-memory contenders (SageQueue, iceoryx2)
    fast: int
    #: items per run for the copying ones (mp.Queue, mp.Pipe, faster-fifo)
    slow: int
    quick_fast: int
    quick_slow: int

    @property
    def is_pickle(self) -> bool:
        return self.nbytes == 512

    def count(self, fast: bool, quick: bool) -> int:
        if quick:
            return self.quick_fast if fast else self.quick_slow
        return self.fast if fast else self.slow


SIZES: Dict[str, Size] = {
    s.label: s
    for s in (
        # At least ~0.3 s per contender on the 2-core development machine,
        # most 0.5-6 s: a run of every size in about 45 s. Shorter runs of the
        # fastest contenders (0.1-0.2 s) left a ratio at the machine's
        # passing mood: 1 MiB SageQueue / iceoryx2 gave 0.70-1.01x over
        # thirteen runs of 5,000 items, 0.84-0.96x over fourteen of 15,000.
        Size("512", 512, 600_000, 100_000, 5_000, 2_000),
        Size("64K", 64 << 10, 80_000, 10_000, 1_000, 300),
        Size("256K", 256 << 10, 30_000, 2_500, 400, 100),
        Size("1M", 1 << 20, 15_000, 600, 200, 40),
        Size("16M", 16 << 20, 300, 24, 20, 6),
        Size("64M", 64 << 20, 20, 6, 4, 3),
    )
}
SIZE_NAMES = {"512": "512 B", "64K": "64 KiB", "256K": "256 KiB", "1M": "1 MiB", "16M": "16 MiB", "64M": "64 MiB"}
COLUMNS = 128  # arrays are (rows, 128) float64


class Items:
    """The VARIANTS source items of one size and what the consumer checks:
    each item's stamp (item i is variant i % VARIANTS) and the CRC-32 of each
    variant's bytes."""

    def __init__(self, size: Size) -> None:
        self.size = size
        self.items: List[Any] = []
        self.stamps: List[Any] = []
        self.crcs: List[int] = []
        rng = np.random.default_rng(14)
        for k in range(VARIANTS):
            if size.is_pickle:
                item: Any = bytes([97 + k]) * 494
                assert len(pickle.dumps(item, pickle.HIGHEST_PROTOCOL)) == 512
                self.stamps.append(97 + k)
                self.crcs.append(zlib.crc32(item))
            else:
                item = rng.standard_normal((size.nbytes // (8 * COLUMNS), COLUMNS))
                item[0, 0] = float(k)
                self.stamps.append(float(k))
                self.crcs.append(zlib.crc32(item.data))
            self.items.append(item)
        #: Items 0, 1, 2, ... back to back (512-byte pickles): the bytes of a
        #: batch from any start.
        self._bytes_run = b"".join(self.items * (BATCH // VARIANTS + 2)) if size.is_pickle else b""
        if not size.is_pickle:
            self.shape = self.items[0].shape
            self.dtype = self.items[0].dtype

    def check_one(self, item: Any, i: int) -> None:
        """Every item, as it arrives: type, shape and stamp (cheap)."""
        if self.size.is_pickle:
            if len(item) != 494 or item[0] != self.stamps[i % VARIANTS]:
                raise AssertionError(f"item {i}: wrong 512-byte pickle")
        elif item.shape != self.shape or item[0, 0] != self.stamps[i % VARIANTS]:
            raise AssertionError(f"item {i}: not the array sent (shape {item.shape}, stamp {item[0, 0]})")

    def check_batch(self, batch: List[Any], i: int) -> None:
        """``check_one`` of items i, i + 1, ... (a get_many batch), for
        512-byte pickles in a few C-level passes over the batch, as a batch
        consumer would check them: every item's length and all its bytes
        (the batch joined, against the items sent from that start)."""
        if self.size.is_pickle:
            try:
                joined = b"".join(batch)
            except TypeError:
                joined = None  # not all bytes: found below
            if (joined is not None and set(map(len, batch)) <= {494}
                    and self._bytes_run.startswith(joined, (i % VARIANTS) * 494)):
                return
            for k, item in enumerate(batch):  # which one, and why
                if item != self.items[(i + k) % VARIANTS]:
                    raise AssertionError(f"item {i + k}: wrong 512-byte pickle")
            raise AssertionError(f"items {i}..{i + len(batch) - 1}: a batch longer than was sent")
        for k, item in enumerate(batch):
            self.check_one(item, i + k)

    def check_end(self, last: Any, kept: Dict[int, Any]) -> None:
        """After the clock: the end marker came last, the kept items are whole."""
        if last is not None:
            raise AssertionError("more items than were sent")
        for i, item in kept.items():
            self.check_full(item, i)

    def check_full(self, item: Any, i: int) -> None:
        """A kept item, after the clock: dtype and the CRC-32 of its bytes."""
        if self.size.is_pickle:
            if not isinstance(item, bytes):
                raise AssertionError(f"item {i}: a {type(item).__name__}, not bytes")
            data: Any = item
        else:
            if not isinstance(item, np.ndarray) or item.dtype != self.dtype or item.shape != self.shape:
                raise AssertionError(f"item {i}: not a {self.dtype} array of shape {self.shape}: {item!r:.80}")
            data = np.ascontiguousarray(item).data
        if zlib.crc32(data) != self.crcs[i % VARIANTS]:
            raise AssertionError(f"item {i}: checksum differs from the item sent")


def _kept(n: int) -> Tuple[int, ...]:
    return tuple(sorted({0, n // 2, n - 1}))


def warmup_count(size: Size, n: int) -> int:
    """Items of the untimed warm-up before a run of n items: a tenth of
    the run, at most WARMUP_BYTES of them, at least one."""
    return max(1, min(n // 10, WARMUP_BYTES // size.nbytes))


def send_warm_then_run(send: Callable[[int], None], warm: int, n: int, start: Any) -> None:
    """A producer's two passes: ``send(count)`` sends items 0 .. count - 1.
    The warm-up's, then, once ``start`` is set (the clock starts), the run's."""
    send(warm)
    start.wait()
    send(n)


def warm_then_run(take: Callable[[int, Tuple[int, ...]], Dict[int, Any]], warm: int, n: int,
                  warmed: Any) -> Dict[int, Any]:
    """A consumer's two passes: ``take(count, keep)`` takes and checks
    items 0 .. count - 1 and returns those of ``keep``. The warm-up's (none
    kept), ``warmed`` set (the clock starts), then the run's, whose kept
    items it returns."""
    take(warm, ())
    warmed.set()
    return take(n, _kept(n))


# ---------------------------------------------------------------- contenders
# A contender makes a channel in the parent (before the fork), and gives the
# producer and the consumer (forked processes) their loops. The producer
# first sends `warm` items (items 0, 1, ... as the run will), then waits for
# `start` and sends the run's n; the consumer takes and checks the warm-up
# items, sets `warmed` (the parent starts the clock after it), then takes the
# run's items and returns its finish time. It raises on any wrong item.


class Contender:
    label = ""
    fast = False  # a shared-memory contender (more items per run)

    def supports(self, size: Size) -> bool:
        return True

    def open(self, size: Size, name: str) -> None:
        """Creates the channel (in the parent)."""

    def prepare_consumer(self) -> None:
        """Consumer's set-up before the producer may start (its process)."""

    def produce(self, items: Items, n: int, warm: int, start: Any) -> None:
        raise NotImplementedError

    def consume(self, items: Items, n: int, warm: int, warmed: Any) -> float:
        raise NotImplementedError

    def close(self) -> None:
        """Removes the channel (in the parent, also after a failure)."""


class _PutGet(Contender):
    """A channel with a put(item) and a get() call, None closing the stream:
    by default the put and get of the queue `open` stores in `self.q`."""

    q: Any

    def put_fn(self) -> Callable[[Any], None]:
        put: Callable[[Any], None] = self.q.put
        return put

    def get_fn(self) -> Callable[[], Any]:
        get: Callable[[], Any] = self.q.get
        return get

    def produce(self, items: Items, n: int, warm: int, start: Any) -> None:
        put, pool = self.put_fn(), items.items

        def send(count: int) -> None:  # items 0, 1, ... (count - 1)
            for i in range(count):
                put(pool[i % VARIANTS])

        send_warm_then_run(send, warm, n, start)
        put(None)

    def consume(self, items: Items, n: int, warm: int, warmed: Any) -> float:
        get, check = self.get_fn(), items.check_one

        def take(count: int, keep: Tuple[int, ...]) -> Dict[int, Any]:
            kept = {}
            for i in range(count):
                item = get()
                check(item, i)
                if i in keep:
                    kept[i] = item
            return kept

        kept = warm_then_run(take, warm, n, warmed)
        t_end = time.monotonic()
        items.check_end(get(), kept)
        return t_end


class SageQueuePutGet(_PutGet):
    label = "SageQueue put/get"
    fast = True

    def open(self, size: Size, name: str) -> None:
        self.name = name
        self.q = SageQueue(name)  # default arguments: what users get

    def close(self) -> None:
        self.q.close()
        destroy_queue(self.name)


class SageQueueMany(SageQueuePutGet):
    label = f"SageQueue put_many/get_many ({BATCH})"

    def supports(self, size: Size) -> bool:
        return size.is_pickle

    def produce(self, items: Items, n: int, warm: int, start: Any) -> None:
        put_many, pool = self.q.put_many, items.items
        batch = [pool[i % VARIANTS] for i in range(BATCH)]  # BATCH is a multiple of VARIANTS

        def send(count: int) -> None:  # items 0, 1, ... (count - 1)
            left = count
            while left > 0:
                take = min(left, BATCH)
                put_many(batch if take == BATCH else batch[:take])
                left -= take

        send_warm_then_run(send, warm, n, start)
        self.q.put(None)

    def consume(self, items: Items, n: int, warm: int, warmed: Any) -> float:
        get_many, check = self.q.get_many, items.check_batch

        def take(count: int, keep: Tuple[int, ...]) -> Dict[int, Any]:
            kept = {}
            i = 0
            while i < count:
                batch = get_many(min(BATCH, count - i))
                check(batch, i)
                for k in keep:
                    if i <= k < i + len(batch):
                        kept[k] = batch[k - i]
                i += len(batch)
            return kept

        kept = warm_then_run(take, warm, n, warmed)
        t_end = time.monotonic()
        items.check_end(self.q.get(), kept)
        return t_end


class MpQueue(_PutGet):
    label = "multiprocessing.Queue"

    def open(self, size: Size, name: str) -> None:
        self.q = CTX.Queue()

    def close(self) -> None:
        self.q.close()


class MpPipe(_PutGet):
    label = "multiprocessing.Pipe"

    def open(self, size: Size, name: str) -> None:
        self.rx, self.tx = CTX.Pipe(duplex=False)

    def put_fn(self) -> Callable[[Any], None]:
        return self.tx.send

    def get_fn(self) -> Callable[[], Any]:
        return self.rx.recv

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


class FasterFifo(_PutGet):
    label = "faster_fifo.Queue"

    def open(self, size: Size, name: str) -> None:
        # Room for a few items (its default of 1 MB holds no 1 MiB array).
        self.q = faster_fifo.Queue(max_size_bytes=max(4 << 20, 4 * (size.nbytes + 4096)))

    def put_fn(self) -> Callable[[Any], None]:
        put = self.q.put
        return lambda item: put(item, timeout=RUN_TIMEOUT)

    def get_fn(self) -> Callable[[], Any]:
        get = self.q.get
        return lambda: get(timeout=RUN_TIMEOUT)

    def close(self) -> None:
        self.q.close()


class Iceoryx2(Contender):
    """Publish-subscribe over ``Slice[c_uint8]``: loan, write, send; receive
    and view (or copy out). A sample of another length ends the stream."""

    fast = True

    def __init__(self, copy_out: bool) -> None:
        self.copy_out = copy_out
        self.label = "iceoryx2 copy out" if copy_out else "iceoryx2 zero-copy view"

    def open(self, size: Size, name: str) -> None:
        # Its files go under our own prefix and root directory, removed by close().
        self.root = tempfile.mkdtemp(prefix=f"{name}_iox2_root_")
        self.prefix = f"{name}_iox2_"
        self.service_name = name
        self.nbytes = 512 if size.is_pickle else size.nbytes
        self.buffer = 16 if size.nbytes >= 64 << 20 else 64
        self.done = CTX.Event()  # the subscriber has taken everything

    def _service(self) -> Tuple[Any, Any]:
        iox2.set_log_level(iox2.LogLevel.Error)
        config = iox2.config.default()
        config.global_cfg.prefix = iox2.FileName.new(self.prefix)
        config.global_cfg.root_path = iox2.Path.new(self.root + "/")
        node = iox2.NodeBuilder.new().config(config).create(iox2.ServiceType.Ipc)
        service = (
            node.service_builder(iox2.ServiceName.new(self.service_name))
            .publish_subscribe(iox2.Slice[ctypes.c_uint8])
            .enable_safe_overflow(False)
            .subscriber_max_buffer_size(self.buffer)
            .subscriber_max_borrowed_samples(8)  # the 3 kept + the current one
            .open_or_create()
        )
        return node, service

    def produce(self, items: Items, n: int, warm: int, start: Any) -> None:
        node, service = self._service()
        publisher = (service.publisher_builder().initial_max_slice_len(self.nbytes)
                     .allocation_strategy(iox2.AllocationStrategy.PowerOfTwo).create())
        # Connected to the subscriber, and given the time it had before the
        # warm-up existed (the clock's start came 0.2 s or more after its
        # making), before it sends: a publisher that sent right after it was
        # made lost samples now and then (the subscriber then waited for
        # ever for the warm-up's last ones).
        publisher.update_connections()
        time.sleep(0.2)
        # The bytes to write: a pickle's, or an array's data (held by items).
        sources: List[Any] = ([pickle.dumps(item, pickle.HIGHEST_PROTOCOL) for item in items.items]
                              if items.size.is_pickle else items.items)
        addresses: List[int] = [
            (ctypes.cast(ctypes.c_char_p(s), ctypes.c_void_p).value or 0) if isinstance(s, bytes) else s.ctypes.data
            for s in sources]
        nbytes, memmove, loan = self.nbytes, ctypes.memmove, publisher.loan_slice_uninit

        def send(count: int) -> None:  # items 0, 1, ... (count - 1)
            for i in range(count):
                sample = loan(nbytes)
                memmove(sample.payload_ptr, addresses[i % VARIANTS], nbytes)
                sample.assume_init().send()

        send_warm_then_run(send, warm, n, start)
        loan(1).assume_init().send()  # the end
        # The publisher (and its data segment) lives until the subscriber is done.
        if not self.done.wait(RUN_TIMEOUT):
            raise RuntimeError("the subscriber did not finish")
        publisher.delete()
        del service, node

    def prepare_consumer(self) -> None:
        # Subscribed before the producer may send: nothing is lost.
        self.node, self.service = self._service()
        self.subscriber = self.service.subscriber_builder().create()

    def consume(self, items: Items, n: int, warm: int, warmed: Any) -> float:
        subscriber = self.subscriber
        receive, check = subscriber.receive, items.check_one
        pickled, copy_out, nbytes, yield_cpu = items.size.is_pickle, self.copy_out, self.nbytes, os.sched_yield
        if not pickled:
            dtype, shape = items.dtype, items.shape

        def take(count: int, keep: Tuple[int, ...]) -> Dict[int, Any]:
            kept = {}
            for i in range(count):
                sample = receive()
                while sample is None:
                    yield_cpu()  # a no-op on an idle machine, fair on a busy one
                    sample = receive()
                payload = sample.payload()
                if payload.len() != nbytes:
                    raise AssertionError(f"item {i}: a sample of {payload.len()} bytes")
                view = payload.as_memory_view()
                if pickled:
                    item = pickle.loads(bytes(view) if copy_out else view)
                else:
                    item = np.frombuffer(view, dtype).reshape(shape)
                    if copy_out:
                        item = item.copy()
                check(item, i)
                if i in keep:
                    kept[i] = (item, sample)  # a view lives as long as its sample
            return kept

        kept = warm_then_run(take, warm, n, warmed)
        t_end = time.monotonic()
        sample = receive()
        while sample is None:
            sample = receive()
        if sample.payload().len() != 1:
            raise AssertionError("more items than were sent")
        for i in kept:
            items.check_full(kept[i][0], i)
        # Every sample (and view of one) let go before the subscriber goes.
        kept.clear()
        del sample
        subscriber.delete()
        self.done.set()
        return t_end

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        for entry in Path("/dev/shm").glob(f"{self.prefix}*"):
            entry.unlink(missing_ok=True)


def contenders() -> List[Contender]:
    found: List[Contender] = [SageQueuePutGet(), SageQueueMany(), MpQueue(), MpPipe()]
    if faster_fifo is not None:
        found.append(FasterFifo())
    if iox2 is not None:
        found += [Iceoryx2(copy_out=False), Iceoryx2(copy_out=True)]
    return found


# ---------------------------------------------------------------- one run


def _consumer_main(c: Contender, items: Items, n: int, warm: int, ready: Any, warmed: Any, out: Connection) -> None:
    try:
        c.prepare_consumer()
        ready.set()
        out.send(("ok", c.consume(items, n, warm, warmed)))
    except BaseException:
        out.send(("error", traceback.format_exc()))


def _producer_main(c: Contender, items: Items, n: int, warm: int, ready: Any, start: Any, out: Connection) -> None:
    try:
        ready.wait()
        c.produce(items, n, warm, start)
        out.send(("ok", 0.0))
    except BaseException:
        out.send(("error", traceback.format_exc()))


def run_pair(c: Contender, items: Items, n: int, name: str) -> float:
    """Items/s of one producer -> consumer run of n items (after an untimed
    warm-up, see warmup_count)."""
    c.open(items.size, name)
    procs: List[Any] = []
    warm = warmup_count(items.size, n)
    try:
        ready, warmed, start = CTX.Event(), CTX.Event(), CTX.Event()
        cons_rx, cons_tx = CTX.Pipe(duplex=False)
        prod_rx, prod_tx = CTX.Pipe(duplex=False)
        procs = [CTX.Process(target=_consumer_main, args=(c, items, n, warm, ready, warmed, cons_tx)),
                 CTX.Process(target=_producer_main, args=(c, items, n, warm, ready, start, prod_tx))]
        for p in procs:
            p.start()
        if not ready.wait(60):
            raise RuntimeError(f"{c.label}: the consumer did not start")
        deadline = time.monotonic() + RUN_TIMEOUT
        while not warmed.wait(0.1):
            for rx in (cons_rx, prod_rx):  # neither side ends before the clock, unless it failed
                if rx.poll():
                    raise RuntimeError(f"{c.label}, {SIZE_NAMES[items.size.label]} failed in the warm-up:\n"
                                       f"{rx.recv()[1]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{c.label}: the warm-up did not finish in {RUN_TIMEOUT:.0f} s")
        time.sleep(0.2)  # both processes warmed up and waiting before the clock starts
        t0 = time.monotonic()
        start.set()
        results: List[Tuple[str, Any]] = []
        for rx in (cons_rx, prod_rx):
            if not rx.poll(RUN_TIMEOUT):
                raise RuntimeError(f"{c.label}, {SIZE_NAMES[items.size.label]}: no result after {RUN_TIMEOUT:.0f} s")
            results.append(rx.recv())
        for status, value in results:
            if status != "ok":
                raise RuntimeError(f"{c.label}, {SIZE_NAMES[items.size.label]} failed:\n{value}")
        for p in procs:
            p.join(60)
        t_end: float = results[0][1]
        return n / (t_end - t0)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        c.close()


Rates = Dict[Tuple[str, str], float]  # (contender label, size label) -> items/s


def measure(sizes: Sequence[Size], quick: bool, prefix: str, run_no: int) -> Rates:
    rates: Rates = {}
    for size in sizes:
        items = Items(size)
        for k, c in enumerate(contenders()):
            if not c.supports(size):
                continue
            n = size.count(c.fast, quick)
            rate = run_pair(c, items, n, f"{prefix}{run_no}_{size.label}_{k}")
            rates[(c.label, size.label)] = rate
            print(f"  run {run_no + 1}, {SIZE_NAMES[size.label]:>6}: {c.label:<34} {n:>8,} items "
                  f"{rate:>12,.1f} items/s", flush=True)
    return rates


# ---------------------------------------------------------------- report

BASE = MpQueue.label
SAGE = SageQueuePutGet.label
MANY = SageQueueMany.label
IOX_VIEW = "iceoryx2 zero-copy view"


@dataclass(frozen=True)
class Target:
    text: str
    size: str
    over: str  # the contender it is a ratio against
    label: str  # the contender measured
    at_least: float


TARGETS = [
    Target("512 B pickles, put/get >= 3.5x mp.Queue", "512", BASE, SAGE, 3.5),
    Target("512 B pickles, put_many/get_many >= 10x mp.Queue", "512", BASE, MANY, 10.0),
    Target("1 MiB arrays >= 15x mp.Queue", "1M", BASE, SAGE, 15.0),
    Target("1 MiB arrays >= 0.8x iceoryx2 zero-copy", "1M", IOX_VIEW, SAGE, 0.8),
    Target("16 MiB arrays >= 15x mp.Queue", "16M", BASE, SAGE, 15.0),
    Target("16 MiB arrays >= 0.8x iceoryx2 zero-copy", "16M", IOX_VIEW, SAGE, 0.8),
]


def _ratio(rates: Rates, t: Target) -> Optional[float]:
    a, b = rates.get((t.label, t.size)), rates.get((t.over, t.size))
    return None if a is None or not b else a / b


def median_rates(runs: List[Rates]) -> Rates:
    keys = {k for r in runs for k in r}
    return {k: statistics.median(r[k] for r in runs if k in r) for k in keys}


def print_report(runs: List[Rates], sizes: Sequence[Size], quick: bool) -> Rates:
    med = median_rates(runs)
    labels = [c.label for c in contenders()]
    title = "medians of the runs' rates and of their ratios" if len(runs) > 1 else "one run"
    print()
    print(f"items/s ({title}; in brackets: ratio to multiprocessing.Queue at the same size)")
    print(f"{'contender':<34}" + "".join(f"{SIZE_NAMES[s.label]:>22}" for s in sizes))
    for label in labels:
        cells = []
        for s in sizes:
            rate = med.get((label, s.label))
            ratios = [r[(label, s.label)] / r[(BASE, s.label)] for r in runs
                      if (label, s.label) in r and r.get((BASE, s.label))]
            cells.append("-" if rate is None else
                         f"{rate:,.0f} ({statistics.median(ratios):.2f}x)" if ratios else f"{rate:,.0f}")
        if any(c != "-" for c in cells):
            print(f"{label:<34}" + "".join(f"{c:>22}" for c in cells))
    print("items per run: " + "; ".join(
        f"{SIZE_NAMES[s.label]} {s.count(True, quick):,} (SageQueue, iceoryx2) / "
        f"{s.count(False, quick):,} (mp.Queue, mp.Pipe, faster_fifo)" for s in sizes))

    present = [t for t in TARGETS if _ratio(med, t) is not None]
    if len(runs) > 1 and present:
        print()
        print("target ratios, run by run, and their median")
        print(f"{'target':<50}" + "".join(f"{'run ' + str(i + 1):>9}" for i in range(len(runs))) + f"{'median':>9}")
        for t in present:
            each = [_ratio(r, t) for r in runs]
            vals = [v for v in each if v is not None]
            print(f"{t.text:<50}" + "".join("-".rjust(9) if v is None else f"{v:>8.2f}x" for v in each)
                  + f"{statistics.median(vals):>8.2f}x")
    print()
    print("targets (issue 14, item 7)" + (", on the median of the run-by-run ratios:" if len(runs) > 1 else ":"))
    for t in TARGETS:
        vals = [v for v in (_ratio(r, t) for r in runs) if v is not None]
        if not vals:
            print(f"  {t.text:<50}  not measured (size or contender not in this run)")
            continue
        v = statistics.median(vals)
        print(f"  {t.text:<50} {v:6.2f}x  {'met' if v >= t.at_least else 'NOT MET'}")
    return med


def write_plot(med: Rates, sizes: Sequence[Size], path: Path, note: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    markers = "os^vDxP*"
    for k, c in enumerate(contenders()):
        points = [(s.nbytes, med[(c.label, s.label)]) for s in sizes if (c.label, s.label) in med]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker=markers[k % len(markers)], label=c.label,
                    linewidth=2.4 if c.label == SAGE else 1.4)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks([s.nbytes for s in sizes], [SIZE_NAMES[s.label] for s in sizes])
    ax.set_xlabel("item size (512 B: pickled bytes; larger: numpy float64 arrays)")
    ax.set_ylabel("items/s, 1 producer -> 1 consumer process")
    ax.set_title("libring_buffer SageQueue (default arguments) against the alternatives")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.005, note, fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    print(f"plot written to {path}")


# ---------------------------------------------------------------- main


def _parse_sizes(text: str) -> List[Size]:
    labels = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in labels if s not in SIZES]
    if unknown or not labels:
        raise argparse.ArgumentTypeError(f"sizes must be a comma-separated subset of {','.join(SIZES)}, not {text!r}")
    return [SIZES[s] for s in SIZES if s in labels]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few items per run (a smoke run; noisy figures)")
    parser.add_argument("--runs", type=int, default=1, help="repeat the whole measurement N times (median reported)")
    parser.add_argument("--sizes", type=_parse_sizes, default=list(SIZES.values()),
                        help=f"comma-separated item sizes out of {','.join(SIZES)} (default: all)")
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help=f"PNG to write (default: {DEFAULT_PLOT})")
    parser.add_argument("--prefix", default=f"bench_sizes_{os.getpid()}_",
                        help="prefix of the queue and shared-memory names this run creates")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    sizes: List[Size] = args.sizes
    missing = [m for m, mod in (("faster_fifo", faster_fifo), ("iceoryx2", iox2)) if mod is None]
    if missing:
        print(f"warning: {', '.join(missing)} not installed (make venv installs them): their rows are missing")

    load = os.getloadavg()[0]
    print(f"sage_queue size benchmark: 1 producer -> 1 consumer process; {os.cpu_count()} CPUs, "
          f"load average {load:.2f}; {args.runs} run(s){' (--quick)' if args.quick else ''}")
    started = time.monotonic()
    runs = [measure(sizes, args.quick, args.prefix, r) for r in range(args.runs)]
    med = print_report(runs, sizes, args.quick)
    took = time.monotonic() - started
    print(f"took {took:.0f} s; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after")
    note = (f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, load {load:.1f}; "
            f"{'median of ' + str(args.runs) + ' runs' if args.runs > 1 else 'one run'}"
            f"{', --quick' if args.quick else ''}; make bench-sizes")
    write_plot(med, sizes, args.plot, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
