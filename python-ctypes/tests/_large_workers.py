"""Process bodies for test_large_items (importable, so spawn can run them)."""

from __future__ import annotations

import resource
import signal
from typing import Any, List

from sage_queue import MessageTooLargeError, SageQueue


def large_item(i: int) -> Any:
    """Item ``i``: small ones, and ones larger than the default 1 MiB ring."""
    kind = i % 4
    if kind == 0:
        return ("small", i)
    if kind == 1:
        return {"i": i, "doc": f"{i}:" + "x" * (1_100_000 + i), "tags": list(range(i % 50))}
    if kind == 2:
        return bytes([i % 251]) * (3 << 20) + i.to_bytes(4, "little")
    return [bytes([i % 7]) * 1_200_000, i, "y" * 3000]


def produce(q: SageQueue, start: int, count: int, batch: int) -> None:
    """Puts items start..start+count with put (batch 0) or put_many."""
    if batch == 0:
        for i in range(start, start + count):
            q.put(large_item(i))
    else:
        for at in range(start, start + count, batch):
            q.put_many([large_item(i) for i in range(at, min(at + batch, start + count))])
    q.close()


def put_forever(q: SageQueue) -> None:
    """Puts 1 MiB items until killed (blocks once the ring is full)."""
    i = 0
    while True:
        q.put(bytes([i % 256]) * (1 << 20))
        i += 1


def put_with_file_size_limit(q: SageQueue, results: "SageQueue") -> None:
    """With a 1 MiB file size limit (as a full /dev/shm would), a 2 MiB item
    fails with MessageTooLargeError and a 512 KiB one goes through."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    report: List[Any] = []
    try:
        q.put(b"a" * (2 << 20))
        report.append("put went through")
    except MessageTooLargeError as e:
        report.append(("put", str(e)))
    try:
        q.put_many([b"small", b"b" * (2 << 20), b"never"])
        report.append("put_many went through")
    except MessageTooLargeError as e:
        report.append(("put_many", getattr(e, "items_put", None), str(e)))
    q.put(b"c" * (512 << 10))
    results.put(report)
    q.close()
    results.close()


def put_arrays(q: SageQueue, count: int) -> None:
    """Puts ``count`` 1 MiB float32 arrays, array ``i`` full of ``i``."""
    import numpy as np

    for i in range(count):
        q.put(np.full((256, 1024), i, dtype=np.float32))
    q.close()


def hold_one_item(q: SageQueue, ready: Any) -> None:
    """Gets one item, keeps it (its slot lent), says so, and waits to be
    killed."""
    item = q.get(timeout=30)
    ready.set()
    signal.pause()
    del item


def put_medium_arrays(q: SageQueue, nbytes: List[int]) -> None:
    """Puts one float64 array of each size in ``nbytes``, array ``i`` full of
    ``i``."""
    import numpy as np

    for i, n in enumerate(nbytes):
        q.put(np.full(n // 8, float(i)))
    q.close()
