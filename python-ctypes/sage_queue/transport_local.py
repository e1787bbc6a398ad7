"""The ``local`` queue type: a ``queue.Queue`` living in one process.

Each process keeps one ``queue.Queue`` per ``queue_id``, so every thread of
the process that resolves the same id shares it. Such a queue cannot leave
its process (a copy in a forked child, or a fresh one in a spawned process,
would silently be a *different* queue), so a descriptor records the pid of
the process that created it and resolving it anywhere else fails with
``LocalQueueProcessError``.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Dict

from .descriptor import QueueDescriptor, metadata_value
from .errors import LocalQueueProcessError
from .transport_base import QueueAdapter

__all__ = ["LocalQueue", "forget_local_queue"]

_FACTORY = "QueueDescriptor.create_local_queue(queue_id, maxsize)"

_lock = threading.Lock()
#: queue_id -> this process's queue. Keyed by pid as well, so a forked child
#: never picks up its parent's (copied) queue under the same id.
_queues: Dict[str, "queue.Queue[object]"] = {}
_owner_pid = os.getpid()


def _queue_for(queue_id: str, maxsize: int) -> "queue.Queue[object]":
    global _owner_pid
    with _lock:
        if _owner_pid != os.getpid():  # forked child: the copies are not ours
            _queues.clear()
            _owner_pid = os.getpid()
        q = _queues.get(queue_id)
        if q is None:
            q = _queues[queue_id] = queue.Queue(maxsize)
        return q


def forget_local_queue(queue_id: str) -> bool:
    """Drops this process's ``local`` queue ``queue_id`` (handles already
    resolved keep the old one). True if there was one."""
    with _lock:
        return _queues.pop(queue_id, None) is not None


class LocalQueue(QueueAdapter):
    """A ``local`` queue: this process's ``queue.Queue`` for the descriptor's
    ``queue_id`` (created on first use with ``metadata["maxsize"]`` items)."""

    queue_type = "local"

    def __init__(self, descriptor: QueueDescriptor) -> None:
        super().__init__(descriptor)
        creator = metadata_value(descriptor, "creator_pid", int, _FACTORY)
        maxsize = metadata_value(descriptor, "maxsize", int, _FACTORY, default=0)
        here = os.getpid()
        if creator != here:
            raise LocalQueueProcessError(
                f"local queue {descriptor.queue_id!r} lives in process {creator}, and this is process {here}: "
                "local queues (an in-process queue.Queue) do not cross processes. To share a queue between "
                "processes use 'sage_queue' or 'shm' (same machine, shared memory), 'rpc' (a queue server), "
                "or 'ray_queue'/'ray_actor' (a Ray cluster)"
            )
        self._queue = _queue_for(descriptor.queue_id, maxsize)
