"""sage_queue: a cross-process MPMC message queue in POSIX shared memory.

Pure Python (ctypes) over libring_buffer. The API follows ``queue.Queue``::

    from sage_queue import SageQueue

    q = SageQueue("jobs", maxsize=1 << 20)   # opens or creates; ring bytes
    q.put({"id": 1})                          # any picklable object
    item = q.get(timeout=5)                   # queue.Empty on timeout
    q.close()                                 # q.destroy() removes it

A ``SageQueue`` pickles by name, so it can be handed to ``multiprocessing``
workers (fork, spawn, forkserver), ``ProcessPoolExecutor`` tasks and Ray
tasks and actors on the same machine (elsewhere it refuses, naming both
machines; ``QueueDescriptor.create_auto_queue`` reaches other nodes).

Also here: ``sage_queue.descriptor`` (serialisable descriptions of queues of
any transport: local, shm, sage_queue, rpc, ray_queue, ray_actor, auto),
``sage_queue.ray_support`` and the command line tool ``python -m
sage_queue`` (``sage-queue``: list, stat, watch, rm, gc).

The library is loaded from ``$RING_BUFFER_LIB``, this package's directory
(where ``pip install`` builds it), then the system search path.
"""

from __future__ import annotations

from queue import Empty, Full

from . import errors
from ._lib import LIBRARY_PATH, LIBRARY_VERSION
from ._oob import received_in_place
from ._status import EXCEPTION_BY_CODE, Status
from ._version import __version__
from .errors import *  # noqa: F401,F403 (the names in errors.__all__)
from .queue import (
    DEFAULT_MAXSIZE,
    WAIT_SLICE,
    SageQueue,
    create_queue,
    destroy_queue,
    list_queues,
    open_queue,
    remove_if_unused,
)
from .ref import SageQueueRef

__all__ = [
    "SageQueue",
    "SageQueueRef",
    "create_queue",
    "open_queue",
    "destroy_queue",
    "remove_if_unused",
    "list_queues",
    "received_in_place",
    "Empty",
    "Full",
]
__all__ += errors.__all__  # ShutDown, SageQueueError and every exception derived from it
__all__ += [
    "Status",
    "EXCEPTION_BY_CODE",
    "DEFAULT_MAXSIZE",
    "WAIT_SLICE",
    "LIBRARY_PATH",
    "LIBRARY_VERSION",
    "__version__",
]
