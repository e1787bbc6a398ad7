"""The unmodified legacy wrapper with several producer and consumer
processes (issue 9, item 2): its ``get()`` is ``peek(4)`` then
``read(4 + L)`` in two calls, so two consumers could peek the same length
and the second read took bytes of the next message(s). Now such a read fails
(-1) without consuming anything, and the wrapper's retry loop peeks again:
every item arrives exactly once, intact.

The calls below are the wrapper's own (declarations from
``test_legacy_wrapper_smoke``, which stands for the old wrapper): put checks
``available_write`` then writes prefix and payload in one
``ring_buffer_write``; get peeks 4 bytes, checks ``available_read``, reads
``4 + L``, and sleeps 1 ms between attempts, as the wrapper did."""

from __future__ import annotations

import ctypes
import multiprocessing
import pickle
import random
import struct
import time
from typing import Any, List, Tuple

from test_legacy_wrapper_smoke import load_legacy_lib

PRODUCERS = 2
CONSUMERS = 3
PER_PRODUCER = 3000
RING = 64 * 1024
WATCHDOG_S = 120.0


def _item(producer: int, seq: int) -> Tuple[int, int, bytes]:
    rng = random.Random(producer * 1_000_003 + seq)
    size = rng.choice([0, 5, 50, 500, 3000, rng.randrange(20_000)])
    return (producer, seq, rng.randbytes(size))


def _wrapper_put(lib: Any, rb: Any, item: Any, deadline: float) -> None:
    data = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    framed = struct.pack("<I", len(data)) + data
    while True:
        if lib.ring_buffer_available_write(rb) >= len(framed):
            if lib.ring_buffer_write(rb, ctypes.c_char_p(framed), len(framed)) == len(framed):
                return
        if time.monotonic() > deadline:
            raise TimeoutError("put: watchdog")
        time.sleep(0.001)


def _wrapper_get(lib: Any, rb: Any, deadline: float) -> Any:
    header = ctypes.create_string_buffer(4)
    while True:
        if lib.ring_buffer_peek(rb, header, 4) == 4:
            (length,) = struct.unpack("<I", header.raw)
            if lib.ring_buffer_available_read(rb) >= 4 + length:
                buf = ctypes.create_string_buffer(4 + length)
                if lib.ring_buffer_read(rb, buf, 4 + length) == 4 + length:
                    return pickle.loads(buf.raw[4:])
        if time.monotonic() > deadline:
            raise TimeoutError("get: watchdog")
        time.sleep(0.001)


def _producer(name: bytes, producer: int) -> None:
    lib = load_legacy_lib()
    rb = lib.ring_buffer_open(name)
    assert rb
    deadline = time.monotonic() + WATCHDOG_S
    for seq in range(PER_PRODUCER):
        _wrapper_put(lib, rb, _item(producer, seq), deadline)
    lib.ring_buffer_close(rb)


def _consumer(name: bytes, results: "multiprocessing.Queue[List[Any]]") -> None:
    lib = load_legacy_lib()
    rb = lib.ring_buffer_open(name)
    assert rb
    deadline = time.monotonic() + WATCHDOG_S
    got: List[Any] = []
    corrupt = 0
    while True:
        try:
            item = _wrapper_get(lib, rb, deadline)
        except pickle.UnpicklingError:
            corrupt += 1
            continue
        if item is None:  # the parent's stop marker, one per consumer
            break
        if not (isinstance(item, tuple) and len(item) == 3 and item == _item(item[0], item[1])):
            corrupt += 1
            continue
        got.append(item[:2])
    lib.ring_buffer_close(rb)
    results.put([got, corrupt])


def test_several_wrapper_consumers_lose_nothing(qname: str) -> None:
    lib = load_legacy_lib()
    name = qname.encode()
    rb = lib.ring_buffer_create(name, RING)
    assert rb
    ctx = multiprocessing.get_context("fork")
    results: "multiprocessing.Queue[List[Any]]" = ctx.Queue()
    producers = [ctx.Process(target=_producer, args=(name, p)) for p in range(PRODUCERS)]
    consumers = [ctx.Process(target=_consumer, args=(name, results)) for _ in range(CONSUMERS)]
    procs = producers + consumers
    try:
        for p in procs:
            p.start()
        for p in producers:
            p.join(WATCHDOG_S)
            assert p.exitcode == 0
        deadline = time.monotonic() + WATCHDOG_S
        for _ in consumers:
            _wrapper_put(lib, rb, None, deadline)
        outcomes = [results.get(timeout=WATCHDOG_S) for _ in consumers]
        for p in consumers:
            p.join(WATCHDOG_S)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        lib.ring_buffer_close(rb)
        lib.ring_buffer_destroy(name)
    received = [tuple(x) for got, _ in outcomes for x in got]
    corrupt = sum(c for _, c in outcomes)
    expected = {(p, s) for p in range(PRODUCERS) for s in range(PER_PRODUCER)}
    assert corrupt == 0
    assert len(received) == len(expected), f"{len(expected) - len(set(received))} lost, " \
        f"{len(received) - len(set(received))} duplicated"
    assert set(received) == expected
    # Each consumer saw each producer's items in order.
    for got, _ in outcomes:
        for which in range(PRODUCERS):
            seqs = [seq for producer, seq in got if producer == which]
            assert seqs == sorted(seqs)
