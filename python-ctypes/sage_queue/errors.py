"""Exceptions raised by ``sage_queue``.

``queue.Empty`` and ``queue.Full`` (from the standard library) report an empty
or full queue exactly as ``queue.Queue`` does; ``ShutDown`` reports a queue
that was shut down (it *is* ``queue.ShutDown`` on Python 3.13+). Everything
else derives from :class:`SageQueueError`; where a standard exception fits
too (``ValueError``, ``FileNotFoundError``, ``PermissionError``, ``OSError``)
the class derives from it as well, so generic handlers keep working.

Every message says what happened and what to do about it.
"""

from __future__ import annotations

import queue as _stdlib_queue
from typing import Optional

__all__ = [
    "ShutDown",
    "SageQueueError",
    "InvalidArgumentError",
    "InvalidNameError",
    "QueueNotFoundError",
    "QueueExistsError",
    "QueuePermissionError",
    "NoSpaceError",
    "IncompatibleQueueError",
    "CorruptQueueError",
    "MessageTooLargeError",
    "BufferTooSmallError",
    "ClosedQueueError",
    "SystemCallError",
    "InternalError",
    "FramingError",
    "DescriptorError",
    "MalformedDescriptorError",
    "UnknownQueueTypeError",
    "MissingMetadataError",
    "LocalQueueProcessError",
    "QueueUnavailableError",
    "QueueAuthenticationError",
]

if hasattr(_stdlib_queue, "ShutDown"):  # Python 3.13+
    ShutDown = _stdlib_queue.ShutDown
else:

    class ShutDown(Exception):  # type: ignore[no-redef]
        """Raised when put/get with shut-down queue (as Python 3.13's queue.ShutDown)."""


class SageQueueError(Exception):
    """Base class of every sage_queue failure other than Empty/Full/ShutDown.

    ``code`` is the libring_buffer status code (``RB_ERR_*``, negative) when
    the failure came from the C library, else None.
    """

    code: Optional[int] = None


class InvalidArgumentError(SageQueueError, ValueError):
    """An argument the C library rejected (RB_ERR_INVALID_ARG)."""


class InvalidNameError(SageQueueError, ValueError):
    """The queue name is empty, 64 bytes or longer, or contains '/', '..', NUL
    or a control character (RB_ERR_INVALID_NAME)."""


class QueueNotFoundError(SageQueueError, FileNotFoundError):
    """No queue of that name exists (RB_ERR_NOT_FOUND)."""


class QueueExistsError(SageQueueError, FileExistsError):
    """A queue of that name exists already and an exclusive create was asked
    (RB_ERR_EXISTS)."""


class QueuePermissionError(SageQueueError, PermissionError):
    """The queue belongs to another user or its mode forbids access
    (RB_ERR_PERMISSION)."""


class NoSpaceError(SageQueueError, OSError):
    """Shared memory (/dev/shm) is full (RB_ERR_NO_SPACE)."""


class IncompatibleQueueError(SageQueueError):
    """The object is not a queue this library can use, or the operation needs a
    newer layout than the queue has (RB_ERR_INCOMPATIBLE)."""


class CorruptQueueError(SageQueueError):
    """The queue's shared state is inconsistent (RB_ERR_CORRUPT)."""


class MessageTooLargeError(SageQueueError, ValueError):
    """The item could not be sent (RB_ERR_TOO_LARGE): it is larger than the
    ring and /dev/shm has no room for it out of line (or it is 4 GiB or
    more, or the queue is a legacy object). Nothing was written; the queue is
    still usable."""


class BufferTooSmallError(SageQueueError):
    """A receive buffer was too small for the next message
    (RB_ERR_BUFFER_TOO_SMALL); sage_queue normally retries with a bigger one."""


class ClosedQueueError(SageQueueError, ValueError):
    """The SageQueue object was closed; open the queue again to use it."""


class SystemCallError(SageQueueError, OSError):
    """A system call inside libring_buffer failed (RB_ERR_SYSTEM); ``errno``
    holds the reason."""


class InternalError(SageQueueError):
    """libring_buffer caught an internal panic (RB_ERR_PANIC): a bug."""


class FramingError(SageQueueError):
    """A legacy raw read would have split or merged messages
    (RB_ERR_FRAMING): another consumer took the message whose length was
    peeked. Nothing was consumed; peek again and retry."""


# ---------------------------------------------------------------- descriptors
# Failures of sage_queue.descriptor (queues described by a QueueDescriptor,
# of any transport). They carry no C status code.


class DescriptorError(SageQueueError, ValueError):
    """A queue descriptor that cannot be used as given (base class of the
    descriptor errors below)."""


class MalformedDescriptorError(DescriptorError):
    """Text or a dict that is not a valid descriptor: bad JSON, missing or
    mistyped fields, metadata that cannot be written as JSON."""


class UnknownQueueTypeError(DescriptorError):
    """No implementation is registered for the descriptor's ``queue_type``
    (in this process: register it with ``register_queue_implementation``)."""


class MissingMetadataError(DescriptorError):
    """The descriptor lacks a metadata key its queue type needs, or the
    value has the wrong type."""


class LocalQueueProcessError(DescriptorError):
    """A ``local`` queue (an in-process ``queue.Queue``) was resolved in a
    process other than the one that created it; local queues do not cross
    processes."""


class QueueUnavailableError(SageQueueError, ConnectionError):
    """The queue's home cannot be reached: its RPC server is not running,
    its Ray actor is gone, or Ray is not initialised in this process."""


class QueueAuthenticationError(QueueUnavailableError, PermissionError):
    """An RPC queue server refused the descriptor's auth key."""

