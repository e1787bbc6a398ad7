"""libring_buffer status codes and their mapping to Python exceptions.

The mapping is keyed by the integer codes of ``include/ring_buffer.h``
(``RB_OK`` = 0 … ``RB_ERR_FRAMING`` = -17), which never change. ``Empty``,
``Full`` and ``Timeout`` depend on the operation (a timed-out get is
``queue.Empty``, a timed-out put ``queue.Full``), so callers handle those
three themselves before calling :func:`error_for`.
"""

from __future__ import annotations

import ctypes
import enum
import os
import queue as _stdlib_queue
from typing import Dict, Optional, Type

from . import _lib
from .errors import (
    BufferTooSmallError,
    CorruptQueueError,
    FramingError,
    IncompatibleQueueError,
    InternalError,
    InvalidArgumentError,
    InvalidNameError,
    MessageTooLargeError,
    NoSpaceError,
    QueueExistsError,
    QueueNotFoundError,
    QueuePermissionError,
    SageQueueError,
    ShutDown,
    SystemCallError,
)

__all__ = ["Status", "EXCEPTION_BY_CODE", "error_for", "strerror"]


class Status(enum.IntEnum):
    """``ring_buffer_status_t``: fixed values, part of the ABI."""

    RB_OK = 0
    RB_ERR_INVALID_ARG = -1
    RB_ERR_INVALID_NAME = -2
    RB_ERR_NOT_FOUND = -3
    RB_ERR_EXISTS = -4
    RB_ERR_PERMISSION = -5
    RB_ERR_NO_SPACE = -6
    RB_ERR_INCOMPATIBLE = -7
    RB_ERR_CORRUPT = -8
    RB_ERR_EMPTY = -9
    RB_ERR_FULL = -10
    RB_ERR_TIMEOUT = -11
    RB_ERR_TOO_LARGE = -12
    RB_ERR_BUFFER_TOO_SMALL = -13
    RB_ERR_SHUTDOWN = -14
    RB_ERR_SYSTEM = -15
    RB_ERR_PANIC = -16
    RB_ERR_FRAMING = -17


# Plain ints for the hot paths (an IntEnum compare costs more than an int's),
# taken from the enum so each value is written once.
RB_OK = int(Status.RB_OK)
RB_ERR_INVALID_ARG = int(Status.RB_ERR_INVALID_ARG)
RB_ERR_EMPTY = int(Status.RB_ERR_EMPTY)
RB_ERR_FULL = int(Status.RB_ERR_FULL)
RB_ERR_TIMEOUT = int(Status.RB_ERR_TIMEOUT)
RB_ERR_TOO_LARGE = int(Status.RB_ERR_TOO_LARGE)
RB_ERR_BUFFER_TOO_SMALL = int(Status.RB_ERR_BUFFER_TOO_SMALL)
RB_ERR_SHUTDOWN = int(Status.RB_ERR_SHUTDOWN)

#: Exception class for each code. Empty/Full/Timeout are listed with their
#: usual meaning; operations that wait map Timeout to Empty or Full.
EXCEPTION_BY_CODE: Dict[int, Type[BaseException]] = {
    -1: InvalidArgumentError,
    -2: InvalidNameError,
    -3: QueueNotFoundError,
    -4: QueueExistsError,
    -5: QueuePermissionError,
    -6: NoSpaceError,
    -7: IncompatibleQueueError,
    -8: CorruptQueueError,
    -9: _stdlib_queue.Empty,
    -10: _stdlib_queue.Full,
    -11: TimeoutError,
    -12: MessageTooLargeError,
    -13: BufferTooSmallError,
    -14: ShutDown,
    -15: SystemCallError,
    -16: InternalError,
    -17: FramingError,
}


#: What to do, where the C library's text does not say it already.
ADVICE: Dict[int, str] = {
    -7: "check the name; if it is a stale object of another program or version, "
        "remove it with sage_queue.destroy_queue(name)",
    -15: "limits on shared memory (/dev/shm size) or on open files are the usual cause",
}


def strerror(code: int) -> str:
    """The C library's text for a status code (what went wrong, what to do)."""
    text = _lib.strerror(code)
    return text.decode("utf-8", "replace") if text else f"unknown status code {code}"


def error_for(code: int, context: str, *, errno_value: Optional[int] = None) -> BaseException:
    """The exception to raise for a failing status ``code``.

    ``context`` says what was attempted (e.g. "put on queue 'jobs'"); the C
    library's advice follows it. For RB_ERR_SYSTEM, pass the errno captured
    right after the failing call (``ctypes.get_errno()``).
    """
    cls = EXCEPTION_BY_CODE.get(code, SageQueueError)
    message = f"{context}: {strerror(code)}"
    err = 0
    if code == Status.RB_ERR_SYSTEM:
        err = errno_value if errno_value is not None else ctypes.get_errno()
        if err:
            message += f" [errno {err}: {os.strerror(err)}]"
    if code in ADVICE:
        message += f"; {ADVICE[code]}"
    exc: BaseException
    if code == Status.RB_ERR_SYSTEM:
        exc = cls(message)
        if isinstance(exc, OSError):
            # errno only: setting strerror too would make str() drop our text.
            exc.errno = err or None
    else:
        exc = cls(message)
    if isinstance(exc, SageQueueError):
        exc.code = code
    return exc
