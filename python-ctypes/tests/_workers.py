"""Functions run in child processes by the tests (importable by name, as
spawn and forkserver need). Queues arrive pickled by name, or inherited
under fork."""

from __future__ import annotations

import os
from typing import Dict, List, Tuple

from sage_queue import SageQueue, ShutDown

PAYLOAD = b"p" * 100


def item_value(producer: int, seq: int) -> int:
    """What the checksum adds up for one item."""
    return producer * 1_000_003 + seq


def expected_checksum(producers: int, per_producer: int) -> int:
    return sum(item_value(p, s) for p in range(producers) for s in range(per_producer))


def produce(q: SageQueue, producer: int, count: int, batch: int = 0) -> int:
    """Puts (producer, seq, payload) for seq in range(count)."""
    if batch:
        for start in range(0, count, batch):
            q.put_many([(producer, s, PAYLOAD) for s in range(start, min(count, start + batch))])
    else:
        for seq in range(count):
            q.put((producer, seq, PAYLOAD))
    return count


def consume_until_shutdown(q: SageQueue, batch: int = 0) -> Tuple[int, int, bool]:
    """Gets until the queue is shut down and drained. Returns (count,
    checksum, every producer's items arrived in order)."""
    count = checksum = 0
    last_seq: Dict[int, int] = {}
    in_order = True
    try:
        while True:
            items = q.get_many(batch) if batch else [q.get()]
            for producer, seq, payload in items:
                if seq <= last_seq.get(producer, -1) or payload != PAYLOAD:
                    in_order = False
                last_seq[producer] = seq
                count += 1
                checksum += item_value(producer, seq)
    except ShutDown:
        pass
    return count, checksum, in_order


def consumer_process(q: SageQueue, results: SageQueue, batch: int = 0) -> None:
    results.put((os.getpid(),) + consume_until_shutdown(q, batch))


def producer_process(q: SageQueue, producer: int, count: int, batch: int = 0) -> None:
    produce(q, producer, count, batch)


def put_items(q: SageQueue, items: List[object]) -> None:
    for item in items:
        q.put(item)


def get_items(q: SageQueue, count: int, results: SageQueue) -> None:
    results.put([q.get(timeout=60) for _ in range(count)])


def report_qsize(q: SageQueue, results: SageQueue) -> None:
    results.put(q.qsize())


def work_and_mark_done(q: SageQueue, count: int) -> None:
    """Consumer for join(): takes count items and marks each done."""
    for _ in range(count):
        q.get(timeout=60)
        q.task_done()


def open_ref_and_put(ref: object, item: object) -> None:
    q = ref.get_queue()  # type: ignore[attr-defined]
    try:
        q.put(item)
    finally:
        q.close()


def use_inherited(q: SageQueue) -> None:
    """Fork only: uses the parent's open SageQueue object as is."""
    q.put(("child", os.getpid(), q.get(timeout=60)))


def pool_task_identity(q: SageQueue) -> Tuple[str, int]:
    return q.name, q.maxsize
