#!/usr/bin/env python3
"""What SageQueue adds to a put+get in one process (issue 14, item 5).

For each item, two loops move it through the same queue, in one process:

* raw: what a caller of the C library pays at least: ``pickle.dumps``,
  ``ring_buffer_put_msg``, ``ring_buffer_get_msg`` (through ctypes, with
  ready-made arguments into a preallocated buffer) and ``pickle.loads``;
* SageQueue: ``q.put(item)`` then ``q.get()``.

It prints the cost per put+get of each (microseconds, the minimum over
``--repeat`` runs: the machine may be shared, and the minimum is the run
least disturbed) and the ratio; the target is at most 1.3x.

Run: ``make venv lib`` then
``RING_BUFFER_LIB=build/libring_buffer.so .venv/bin/python python-ctypes/examples/hot_path_cost.py``
[--number N] [--repeat R] [--ring BYTES].
"""

from __future__ import annotations

import argparse
import ctypes
import os
import pickle
import sys
import timeit
from pathlib import Path
from typing import Any, Callable, List, Tuple

# In-tree use without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sage_queue import SageQueue, _lib, destroy_queue  # noqa: E402

ITEMS: List[Tuple[str, Any]] = [
    ("512 B pickle (bytes)", b"x" * 494),
    ("small int", 42),
    ("small str", "hello, world"),
    ("small dict", {"id": 7, "text": "a short document", "score": 0.5}),
]
assert len(pickle.dumps(ITEMS[0][1], pickle.HIGHEST_PROTOCOL)) == 512


def raw_loop(handle: int, item: Any, cap: int) -> Callable[[], None]:
    """put+get through the bare C calls, nothing else (the floor)."""
    dumps, loads, protocol = pickle.dumps, pickle.loads, pickle.HIGHEST_PROTOCOL
    put_msg, get_msg = _lib.put_msg, _lib.get_msg
    buf = ctypes.create_string_buffer(cap)
    view = memoryview(buf)
    length = ctypes.c_uint32()
    h = ctypes.c_void_p(handle)
    addr, cap_arg = ctypes.c_void_p(ctypes.addressof(buf)), ctypes.c_uint32(cap)
    length_arg = ctypes.c_void_p(ctypes.addressof(length))
    no_wait = ctypes.c_int64(0)

    def once() -> None:
        data = dumps(item, protocol)
        if put_msg(h, data, len(data), no_wait):
            raise RuntimeError("put_msg failed")
        if get_msg(h, addr, cap_arg, length_arg, no_wait):
            raise RuntimeError("get_msg failed")
        loads(view[: length.value])

    return once


def queue_loop(q: SageQueue, item: Any) -> Callable[[], None]:
    put, get = q.put, q.get

    def once() -> None:
        put(item)
        get()

    return once


def best(fn: Callable[[], None], number: int, repeat: int) -> float:
    """Microseconds per call, minimum over ``repeat`` runs of ``number``."""
    loop = "for _ in r: f()"
    timer = timeit.Timer(loop, globals={"f": fn, "r": range(number)})
    return min(timer.repeat(repeat, 1)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=20_000, help="put+get per run")
    parser.add_argument("--repeat", type=int, default=40, help="runs per loop (the minimum counts)")
    parser.add_argument("--ring", type=int, default=0, help="ring bytes (0: SageQueue's default)")
    args = parser.parse_args()
    name = f"hot_path_cost_{os.getpid()}"
    q = SageQueue(name, args.ring)
    try:
        handle = q._handle.value if q._handle is not None else 0
        print(f"in-process put+get, ring {q.maxsize} bytes, min of {args.repeat} x {args.number}")
        print(f"{'item':<22} {'raw us':>8} {'SageQueue us':>13} {'ratio':>6}")
        for label, item in ITEMS:
            raw_fn, queue_fn = raw_loop(handle, item, q.maxsize), queue_loop(q, item)
            raw_fn(), queue_fn()  # warm up (and the thread's receive buffer)
            raw = queue_cost = float("inf")
            # Interleaved run by run, so that both see the same machine.
            for _ in range(args.repeat):
                raw = min(raw, best(raw_fn, args.number, 1))
                queue_cost = min(queue_cost, best(queue_fn, args.number, 1))
            print(f"{label:<22} {raw:8.3f} {queue_cost:13.3f} {queue_cost / raw:6.2f}x")
    finally:
        q.close()
        destroy_queue(name)


if __name__ == "__main__":
    main()
