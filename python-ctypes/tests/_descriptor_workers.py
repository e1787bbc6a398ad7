"""Functions run in spawned processes by test_descriptor_processes.py
(importable by name, as spawn needs). Descriptors arrive as JSON text or as
pickled queues (which pickle as their descriptor)."""

from __future__ import annotations

import os
from typing import Any, List, Tuple

from sage_queue.descriptor import QueueDescriptor, resolve_descriptor


def _close(q: Any) -> None:
    close = getattr(q, "close", None)
    if close is not None:
        close()


def relay(in_json: str, out_json: str, count: int) -> Tuple[int, str]:
    """Gets ``count`` items from the first queue and puts ``(pid, item * 2)``
    on the second (batches and single calls mixed). Returns (pid, the type
    name of what the descriptors resolved to)."""
    source: Any = resolve_descriptor(QueueDescriptor.from_json(in_json))
    sink: Any = resolve_descriptor(out_json)  # plain JSON text is accepted too
    try:
        taken = 0
        while taken < count:
            items = source.get_many(count - taken, timeout=60) if taken % 2 else [source.get(timeout=60)]
            sink.put_many([(os.getpid(), item * 2) for item in items], timeout=60)
            taken += len(items)
        return os.getpid(), type(source).__name__
    finally:
        _close(source)
        _close(sink)


def put_from_pickled_queue(q: Any, items: List[Any]) -> int:
    """Receives a resolved queue object (pickled as its descriptor) and puts."""
    try:
        for item in items:
            q.put(item, timeout=60)
        return os.getpid()
    finally:
        _close(q)


def resolve_only(desc_json: str) -> str:
    """Resolves a descriptor (the test expects an error)."""
    q: Any = resolve_descriptor(desc_json)
    _close(q)
    return type(q).__name__


def set_host_id(value: str) -> None:
    """Pool initializer: this worker process plays another machine."""
    os.environ["SAGE_QUEUE_HOST_ID"] = value


def unpickle_and_put(data: bytes, item: Any) -> Tuple[str, str]:
    """Unpickles a queue (or SageQueueRef) and puts ``item``; returns
    ("ok", pid) or (exception class name, message)."""
    import pickle

    from sage_queue import SageQueueRef

    try:
        obj = pickle.loads(data)
        q = obj.get_queue() if isinstance(obj, SageQueueRef) else obj
        try:
            q.put(item, timeout=60)
        finally:
            _close(q)
    except Exception as exc:  # the test inspects what was raised
        return type(exc).__name__, str(exc)
    return "ok", str(os.getpid())


def resolve_and_put_json(desc_json: str, item: Any) -> int:
    """Resolves a descriptor's JSON and puts ``item``."""
    q: Any = resolve_descriptor(desc_json)
    try:
        q.put(item, timeout=60)
    finally:
        _close(q)
    return os.getpid()
