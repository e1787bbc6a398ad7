"""Ray tasks and actors used by test_ray.py. They live in an importable
module (the test session puts this directory on the workers' PYTHONPATH) so
that Ray ships them by reference. Every one reserves no CPU: the cluster has
two, and the pipeline alone runs five actors."""

from __future__ import annotations

import os
from typing import Any, List, Tuple

import ray

from sage_queue import SageQueue, SageQueueRef, ShutDown
from sage_queue.descriptor import resolve_descriptor


def item_value(producer: int, seq: int) -> int:
    return producer * 1_000_000 + seq


def transform(value: int) -> int:
    """What a pipeline worker does to each item."""
    return 3 * value + 1


# ---------------------------------------------------------------- SageQueue in tasks


@ray.remote(num_cpus=0)
def put_range(q: SageQueue, start: int, count: int) -> int:
    q.put_many(range(start, start + count))
    return os.getpid()


@ray.remote(num_cpus=0)
def take(q: SageQueue, count: int) -> Tuple[int, List[Any]]:
    items: List[Any] = []
    while len(items) < count:
        items.extend(q.get_many(count - len(items), timeout=60))
    return os.getpid(), items


@ray.remote(num_cpus=0)
def put_large(q: SageQueue, start: int, count: int) -> int:
    """Items larger than the ring (test_large_items' items): half with
    put_many, half with put."""
    import _large_workers

    half = start + count // 2
    q.put_many([_large_workers.large_item(i) for i in range(start, half)])
    for i in range(half, start + count):
        q.put(_large_workers.large_item(i))
    return os.getpid()


@ray.remote(num_cpus=0)
def put_via_ref(ref: SageQueueRef, items: List[Any]) -> int:
    q = ref.get_queue()
    try:
        for item in items:
            q.put(item, timeout=60)
    finally:
        q.close()
    return os.getpid()


@ray.remote(num_cpus=0)
class Relay:
    """Holds two SageQueues received at construction; also takes queues as
    method arguments."""

    def __init__(self, source: SageQueue, sink: SageQueue) -> None:
        self.source = source
        self.sink = sink

    def pid(self) -> int:
        return os.getpid()

    def relay(self, count: int) -> int:
        for _ in range(count):
            self.sink.put(("relayed", self.source.get(timeout=60)), timeout=60)
        return count

    def put_into(self, q: SageQueue, items: List[Any]) -> str:
        q.put_many(items, timeout=60)
        return q.name

    def close(self) -> None:
        self.source.close()
        self.sink.close()


# ---------------------------------------------------------------- the pipeline


@ray.remote(num_cpus=0)
class Producer:
    def __init__(self, q: SageQueue, index: int, count: int, batch: int) -> None:
        self.q, self.index, self.count, self.batch = q, index, count, batch

    def run(self) -> int:
        for start in range(0, self.count, self.batch):
            stop = min(self.count, start + self.batch)
            self.q.put_many([item_value(self.index, s) for s in range(start, stop)])
        return self.count


@ray.remote(num_cpus=0)
class Worker:
    def __init__(self, source: SageQueue, sink: SageQueue, batch: int) -> None:
        self.source, self.sink, self.batch = source, sink, batch

    def run(self) -> int:
        done = 0
        try:
            while True:
                items = self.source.get_many(self.batch)
                self.sink.put_many([transform(v) for v in items])
                done += len(items)
        except ShutDown:  # the driver shut the queue down and it is drained
            return done


@ray.remote(num_cpus=0)
class Sink:
    def __init__(self, q: SageQueue, batch: int) -> None:
        self.q, self.batch = q, batch

    def run(self) -> Tuple[int, int, int]:
        count = total = squares = 0
        try:
            while True:
                for value in self.q.get_many(self.batch):
                    count += 1
                    total += value
                    squares += value * value
        except ShutDown:
            return count, total, squares


# ---------------------------------------------------------------- descriptors


@ray.remote(num_cpus=0)
def resolve_and_put(desc_json: str, items: List[Any]) -> int:
    q: Any = resolve_descriptor(desc_json)
    try:
        for item in items:
            q.put(item, timeout=60)
    finally:
        getattr(q, "close", lambda: None)()
    return os.getpid()


@ray.remote(num_cpus=0)
class DescriptorUser:
    """Resolves a descriptor once, in its own worker process."""

    def __init__(self, desc_json: str) -> None:
        self.q: Any = resolve_descriptor(desc_json)

    def pid(self) -> int:
        return os.getpid()

    def get(self, count: int) -> List[Any]:
        return [self.q.get(timeout=60) for _ in range(count)]

    def put(self, items: List[Any]) -> int:
        return int(self.q.put_many(items, timeout=60))

    def close(self) -> None:
        getattr(self.q, "close", lambda: None)()


# ---------------------------------------------------------------- the auto type


@ray.remote(num_cpus=0)
class AutoUser:
    """Resolves an ``auto`` descriptor in its own process (started with
    another SAGE_QUEUE_HOST_ID, it plays another machine) and moves items."""

    def __init__(self, desc_json: str) -> None:
        self.q: Any = resolve_descriptor(desc_json)

    def kind(self) -> Tuple[str, str, str]:
        """(type of the resolved queue, machine identity, Ray node id)."""
        from sage_queue.hostid import host_id

        return type(self.q).__name__, host_id(), ray.get_runtime_context().get_node_id()

    def produce(self, producer: int, count: int, batch: int = 0) -> int:
        """``count`` items (producer, seq): by put, or by put_many of ``batch``."""
        if batch:
            for start in range(0, count, batch):
                self.q.put_many([(producer, s) for s in range(start, min(count, start + batch))])
        else:
            for s in range(count):
                self.q.put((producer, s))
        self.q.flush()
        return count

    def consume(self, count: int, timeout: float = 60) -> List[Any]:
        items: List[Any] = []
        while len(items) < count:
            items.extend(self.q.get_many(count - len(items), timeout=timeout))
        return items

    def consume_until_error(self) -> Tuple[List[Any], str]:
        """Gets until an exception; returns what arrived and the exception's
        class name and message."""
        items: List[Any] = []
        try:
            while True:
                items.extend(self.q.get_many(1000, timeout=120))
        except Exception as exc:
            return items, f"{type(exc).__name__}: {exc}"

    def produce_until_error(self, producer: int, count: int) -> Tuple[int, str]:
        """Puts (producer, seq) one by one; returns how many puts returned
        and the exception that ended it ("" if all did)."""
        s = 0
        try:
            for s in range(count):
                self.q.put((producer, s))
            self.q.flush()
            return count, ""
        except Exception as exc:
            return s, f"{type(exc).__name__}: {exc}"

    def get_then_close(self, count: int) -> List[Any]:
        """``count`` gets (the first prefetches a batch), then close()."""
        items = [self.q.get(timeout=60) for _ in range(count)]
        self.q.close()
        return items

    def mark_done(self, count: int) -> Tuple[int, str]:
        """``count`` task_done() calls: how many returned, and the exception
        that ended them ("" if none did)."""
        for marked in range(count):
            try:
                self.q.task_done()
            except Exception as exc:
                return marked, f"{type(exc).__name__}: {exc}"
        return count, ""

    def unfinished(self) -> int:
        return int(self.q.unfinished_tasks)

    def join(self, timeout: float) -> bool:
        return bool(self.q.join(timeout))

    def put_and_join(self, items: List[Any], timeout: float) -> bool:
        """Puts the items (buffered), then join(timeout)."""
        for item in items:
            self.q.put(item)
        return bool(self.q.join(timeout))

    def close(self) -> None:
        self.q.close()


@ray.remote(num_cpus=0)
class AutoOwner:
    """Creates an ``auto`` queue where it runs (its machine, its node: the
    bridge is pinned there) and uses it as the local SageQueue."""

    def __init__(self, queue_id: str, batch_size: int) -> None:
        from sage_queue.descriptor import QueueDescriptor

        self.desc = QueueDescriptor.create_auto_queue(queue_id, 1 << 20, batch_size=batch_size)
        self.q: Any = resolve_descriptor(self.desc)

    def descriptor(self) -> Tuple[str, str]:
        return self.desc.to_json(), type(self.q).__name__

    def put_range(self, count: int) -> int:
        return int(self.q.put_many(range(count), timeout=60))

    def take(self, count: int) -> List[Any]:
        items: List[Any] = []
        while len(items) < count:
            items.extend(self.q.get_many(count - len(items), timeout=60))
        return items


# ---------------------------------------------------------------- asyncio


@ray.remote(num_cpus=0)
class AsyncConsumer:
    """An async actor: its ``async def`` methods run on the actor's event
    loop, which keeps serving other calls while one awaits the queue."""

    def __init__(self, q: SageQueue) -> None:
        self.q = q
        self.got: List[Any] = []

    async def consume(self, count: int) -> Tuple[int, List[Any]]:
        while len(self.got) < count:
            self.got.extend(await self.q.get_many_async(count - len(self.got), timeout=120))
        return os.getpid(), self.got

    async def consume_until_shutdown(self) -> List[Any]:
        async for item in self.q:
            self.got.append(item)
        return self.got

    async def progress(self) -> int:
        return len(self.got)

    async def pending_aio_threads(self) -> List[str]:
        import threading

        return sorted(t.name for t in threading.enumerate() if t.name.startswith("sage_queue-aio"))
