"""``SageQueue``: a cross-process MPMC queue in POSIX shared memory.

The queue itself lives in libring_buffer (a shared-memory ring with robust
locks and futex waits); this module turns Python objects into framed
messages (pickle by default) and maps the C status codes to the exceptions
``queue.Queue`` users expect.

Design notes (why the code looks the way it does):

* **One ctypes call per put/get** when the operation succeeds at once: no
  ``msg_count``/``available_write`` probes, no per-call buffer allocation
  (each thread keeps one receive buffer, see ``_Receiver``), argtypes
  declared once in ``_lib``.
* **Blocking stays interruptible.** A C call that sleeps in a futex does not
  return to Python when SIGINT arrives, so waits are done in slices of
  ``WAIT_SLICE`` seconds: each slice is one C call that sleeps until a message
  (or room) arrives or the slice ends; between slices Python runs its signal
  handlers (Ctrl-C → ``KeyboardInterrupt``) and re-checks the deadline. There
  is no sleep-polling: a message arriving mid-slice wakes the caller at once.
* **One decision after a failed call.** Every operation (put, get, the
  batch calls, join, shutdown's drain) loops the same way: call, and on a
  failure ask ``SageQueue._retry`` what the status means for this kind of
  operation: wait one more slice, or raise (``queue.Empty``/``queue.Full``
  with the legacy wrapper's texts, ``ShutDown``, ``MessageTooLargeError``,
  the code's own exception). A try-once call waits at most 100 ms for a lock
  held by another process (a stopped peer) and then answers TIMEOUT, which
  for a try means empty or full.
* **Closed queues:** ``close()`` sets the handle to None, so the hot path
  passes NULL to C, which answers ``RB_ERR_INVALID_ARG``; only that slow path
  checks whether the queue was closed. No extra check costs the hot path.
"""

from __future__ import annotations

import array
import ctypes
import itertools
import operator
import os
import pickle
import threading
import time
from ctypes import c_uint32, c_uint64, c_void_p
from dataclasses import dataclass
from queue import Empty, Full
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from . import _lib, _oob, aio
from ._status import (
    RB_ERR_BUFFER_TOO_SMALL,
    RB_ERR_EMPTY,
    RB_ERR_FULL,
    RB_ERR_INVALID_ARG,
    RB_ERR_SHUTDOWN,
    RB_ERR_TIMEOUT,
    RB_ERR_TOO_LARGE,
    RB_OK,
    error_for,
)
from ._undelivered import QUEUE_DECODE, decode_each, keep_undelivered
from .errors import (
    ClosedQueueError,
    InvalidNameError,
    MessageTooLargeError,
    ShutDown,
)
from .hostid import check_same_host, host_id, host_name

# What a failed call is part of, for SageQueue._retry.
_GET, _PUT, _JOIN = 0, 1, 2
#: The legacy wrapper's exception texts, which SAGE's consumer loops test.
EMPTY_TRY = "Queue is empty"
EMPTY_TIMED_OUT = "Get operation timed out"
FULL_TRY = "Queue is full"
FULL_TIMED_OUT = "Put operation timed out"
#: Most messages one get_many call takes (its length array is allocated for
#: what can arrive, never for an unbounded max_items).
MAX_BATCH = 1 << 16

__all__ = [
    "SageQueue",
    "SageQueueRef",
    "create_queue",
    "open_queue",
    "destroy_queue",
    "remove_if_unused",
    "list_queues",
    "SHM_DIR",
    "DEFAULT_MAXSIZE",
    "WAIT_SLICE",
    "MAX_BATCH",
    "Dumps",
    "Loads",
]

#: Where POSIX shared-memory objects appear on Linux (the library says).
SHM_DIR = _lib.OBJECT_DIR
#: Ring size in bytes when ``maxsize`` is 0. The legacy wrapper made 64 KiB
#: rings; 1 MiB (as SAGE's later wrapper, and the shm/sage_queue
#: descriptors' DEFAULT_SHM_MAXSIZE) streams small items in batches faster
#: between processes, and larger rings gain nothing measurable
#: (examples/ring_size_cost.py; issue 14).
DEFAULT_MAXSIZE = 1 << 20
#: Longest single C wait, in seconds: bounds how long Ctrl-C can go unnoticed.
WAIT_SLICE = 0.1
#: Largest per-thread receive buffer allocated up front; rarer, larger
#: messages are received into a buffer of their exact size.
MAX_DEFAULT_BUFFER = 1 << 20
#: A thread's receive buffer grows to take an item larger than it (and is
#: kept for the next ones) up to this many bytes; a larger item arrives into
#: a buffer of its own.
MAX_KEPT_BUFFER = 64 << 20
#: Serialised items of this many bytes or more cannot be sent (the C API's
#: lengths are 32-bit).
_MAX_ITEM = 1 << 32

Dumps = Callable[[Any], bytes]
Loads = Callable[[bytes], Any]
NameLike = Union[str, bytes]

_SLICE_NS = int(WAIT_SLICE * 1e9)
# Ready-made ctypes arguments for the hot paths: ctypes passes an instance of
# the declared type through as is, while an int must first be converted into
# a new one (measured: ~0.05 us per argument, a quarter of a get's overhead).
_SLICE_ARG = ctypes.c_int64(_SLICE_NS)
#: The same for put's message lengths below this (made on first use, never
#: changed, so threads share them): converting an int costs ctypes ~0.07 us,
#: about 5 % of a small put.
_LENGTH_ARGS_MAX = 4096
_LENGTH_ARGS: List[Optional[c_uint32]] = [None] * _LENGTH_ARGS_MAX
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_FRAME = _lib.RING_BUFFER_FRAME_PREFIX
_pickle_dumps = pickle.dumps
_pickle_loads = pickle.loads
_monotonic = time.monotonic
_put_msg = _lib.put_msg
_put_msg_args = _lib.put_msg_args
_get_msg = _lib.get_msg
_get_msg_args = _lib.get_msg_args
_get_msg_lease = _lib.get_msg_lease
_Pieces = _oob.Pieces
_array_pieces = _oob.array_pieces
_array_vectors = _oob.array_vectors
#: What ``_array_vectors`` returns: (holder, addresses, lengths, entry).
_ArrayVectors = Tuple[Any, Any, Any, Any]
_dumps_large = _oob.dumps_large
_LARGE = _oob.LARGE
# Items the hot paths pickle at once: nothing out of band comes of them
# (str, bytes and bytearray only when shorter than _LARGE: see
# SageQueue._pieces).
_PLAIN = frozenset({bytes, str, bytearray, int, float, bool, type(None)})
_SIZED = frozenset({bytes, str, bytearray})
_loads_any = _oob.loads_any
_loads_lent = _oob.loads_lent
_oob_loads = _oob.loads
_has_magic = _oob.has_magic
_lent = _oob.lent
_NEGATIVE_TIMEOUT = "'timeout' must be a non-negative number"


# put_many puts batches of plain items, and of numpy arrays, this large (on
# average) one at a time (see SageQueue._put_each).
_EACH_FROM = 32 << 10


def _one_at_a_time(items: List[Any], kinds: Set[type], plain_bytes: Optional[int]) -> bool:
    """Whether ``put_many`` (and ``sage_queue.aio``'s) puts ``items``, whose
    types are ``kinds``, one at a time, each as soon as it is made
    (``SageQueue._put_each``): when none can fail to serialise (all of plain
    types, or all numpy arrays that hold no Python objects) and they are
    ``_EACH_FROM`` bytes or more on average (str counted by characters).
    ``plain_bytes`` is ``_plain_bytes(items, kinds)``, which the caller
    needs anyway."""
    if plain_bytes is not None:
        size: Optional[int] = plain_bytes
    elif kinds <= _PLAIN:  # plain, some of them large
        size = sum(len(i) for i in items if type(i) in _SIZED)
    else:
        size = _oob.arrays_nbytes(items, kinds)
    return bool(items) and size is not None and size >= _EACH_FROM * len(items)


#: Items of this many bytes or more may have come out of line, from a pool
#: slot (``RING_BUFFER_POOLED_FROM``); a ``get_many`` batch of at most
#: ``_FEW`` items is looked at for one (a longer batch is mostly small ones).
_POOLED_FROM = _lib.RING_BUFFER_POOLED_FROM
_FEW = 16


def _plain_bytes(items: List[Any], kinds: Set[type]) -> Optional[int]:
    """If every item (whose types are ``kinds``) is pickled at once by
    ``put`` (see ``_PLAIN``: of plain types only, the sized ones shorter
    than ``_LARGE``), the total length of the sized ones (str counted by
    characters); otherwise None."""
    if not kinds <= _PLAIN:
        return None
    if kinds.isdisjoint(_SIZED):
        return 0
    total: int = sum(map(len, items)) if kinds <= _SIZED else sum(len(i) for i in items if type(i) in _SIZED)
    # No item is longer than all of them together: only a batch of _LARGE
    # or more can hold a large item (one pass fewer for the common case).
    if total >= _LARGE and max(len(i) for i in items if type(i) in _SIZED) >= _LARGE:
        return None
    return total


#: A batch of ``_UNIFORM_FROM`` to ``_UNIFORM_TO`` payloads all of one
#: length (records of one shape: numbers, fixed-length bytes, dicts whose
#: values keep their sizes) is cut with slices made once for that length
#: (``_uniform_slices``), not with two additions and a new slice object per
#: item: 512-byte pickles decode ~12 % faster. Other batches take the plain
#: loop, after one comparison of their lengths (~0.2 us a batch).
_UNIFORM_FROM = 8
_UNIFORM_TO = 1024
#: Lengths whose slices are kept; past this many the cache starts again (so
#: it holds at most 16 x 1024 slices, ~1 MiB).
_UNIFORM_LENGTHS = 16
_uniform: Dict[int, List[slice]] = {}


def _uniform_slices(size: int, count: int) -> List[slice]:
    """The first ``count`` (at most ``_UNIFORM_TO``) of the slices that cut
    payloads ``size`` bytes long out of a view where they lie back to back."""
    cuts = _uniform.get(size, [])
    if len(cuts) < count:
        if not cuts and len(_uniform) >= _UNIFORM_LENGTHS:
            _uniform.clear()
        # Grown by doubling: a miss costs about what the plain loop's slices
        # would have (one slice per item), never a whole list up front. A
        # new list, not extended in place: a thread that grows it at the
        # same time keeps the one it made.
        more = range(len(cuts), min(max(count, 2 * len(cuts)), _UNIFORM_TO))
        cuts = _uniform[size] = cuts + [slice(k * size, (k + 1) * size) for k in more]
    return cuts[:count]


def _cut(view: memoryview, sizes: Sequence[int]) -> List[memoryview]:
    """Views of the payloads ``sizes`` long that lie back to back in ``view``."""
    out = []
    at = 0
    for size in sizes:
        out.append(view[at : at + size])
        at += size
    return out


# ---------------------------------------------------------------- arguments


def _encode_name(name: object) -> bytes:
    """The queue name as the C library wants it, with clear errors.

    The C library validates names too (it is the authority); these checks
    only give better messages, and catch NUL, which ctypes would silently
    treat as the end of the string.
    """
    if isinstance(name, str):
        try:
            raw = name.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise InvalidNameError(f"invalid queue name {name!r}: {exc}") from None
    elif isinstance(name, (bytes, bytearray)):
        raw = bytes(name)
    else:
        raise TypeError(f"queue name must be str or bytes, not {type(name).__name__}")
    rule = "use 1 to 63 bytes without '/', '..', NUL or control characters"
    if not raw:
        raise InvalidNameError(f"invalid queue name {name!r}: it is empty; {rule}")
    if len(raw) >= _lib.MAX_NAME_LEN:
        raise InvalidNameError(
            f"invalid queue name {name!r}: it is {len(raw)} bytes long; {rule}"
        )
    if b"/" in raw or b"\0" in raw:
        raise InvalidNameError(f"invalid queue name {name!r}: {rule}")
    return raw


def _decode_name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _check_maxsize(maxsize: object) -> int:
    """Ring size in bytes for ``maxsize`` (0 → DEFAULT_MAXSIZE)."""
    if isinstance(maxsize, bool) or not hasattr(type(maxsize), "__index__"):
        raise TypeError(f"maxsize must be an int (ring size in bytes), not {type(maxsize).__name__}")
    size = operator.index(maxsize)  # type: ignore[arg-type]
    if size < 0:
        raise ValueError(f"maxsize must be >= 0 (ring size in bytes; 0 means {DEFAULT_MAXSIZE}), not {size}")
    if size > _lib.RING_BUFFER_MAX_SIZE:
        raise ValueError(f"maxsize {size} is too large: a queue holds at most {_lib.RING_BUFFER_MAX_SIZE} bytes (2 GiB)")
    return size or DEFAULT_MAXSIZE


def _as_bytes(data: object, what: str) -> bytes:
    """``data`` as bytes (a copy of a bytearray or memoryview); TypeError for
    anything that is not a bytes-like object, str included."""
    if type(data) is bytes:
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} needs bytes, bytearray or memoryview, not {type(data).__name__}")


def _check_codec(dumps: object, loads: object) -> None:
    if dumps is not None and not callable(dumps):
        raise TypeError(f"dumps must be callable (object -> bytes), not {type(dumps).__name__}")
    if loads is not None and not callable(loads):
        raise TypeError(f"loads must be callable (bytes -> object), not {type(loads).__name__}")


def _check_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    count = operator.index(value)  # type: ignore[arg-type]
    if count < 1:
        raise ValueError(f"{what} must be >= 1, not {count}")
    return min(count, 0xFFFFFFFF)


def _first_wait(block: bool, timeout: Optional[float]) -> Tuple[int, Optional[float]]:
    """(nanoseconds for the first C call, absolute deadline or None)."""
    if not block:
        return 0, None
    if timeout is None:
        return _SLICE_NS, None
    if timeout < 0:
        raise ValueError(_NEGATIVE_TIMEOUT)
    # min() before int(): a timeout of float("inf") waits for ever.
    return int(min(timeout, WAIT_SLICE) * 1e9), _monotonic() + timeout


def _next_wait(deadline: Optional[float]) -> int:
    """Nanoseconds for the next slice, or -1 when the deadline has passed."""
    if deadline is None:
        return _SLICE_NS
    remaining = deadline - _monotonic()
    if remaining <= 0:
        return -1
    return int(min(remaining, WAIT_SLICE) * 1e9) or 1


# ---------------------------------------------------------------- buffers


def _first_cap(cap: int) -> int:
    """The bytes a get's first C call offers of a receive buffer of ``cap``:
    less than ``RING_BUFFER_POOLED_FROM``. A message that long may sit in a
    slot of the queue's pool, which the first call would copy out of the
    slot (system calls included) for ``loads`` to copy again; refused
    (``RB_ERR_BUFFER_TOO_SMALL``, nothing taken), it is asked for with
    ``ring_buffer_get_msg_lease``, which lends it where it lies (numpy
    arrays are built on it) or copies it into the buffer if it is in the
    ring. One more call for messages of 64 KiB and more."""
    return min(cap, _POOLED_FROM - 1)


def _taken(rx: "_Receiver", view: memoryview) -> memoryview:
    """What a ``ring_buffer_get_msg_lease`` call that returned ``RB_OK`` took
    into ``rx``'s out-parameters: a view of the bytes lent where they lie
    (the item went out of line; the lease ends with the last view of it), or
    of the message it copied into ``view``'s buffer (from the ring). Sets
    ``rx``'s lent mode to match (see ``_Receiver.expect_lent``)."""
    lease = rx.lease.value
    if lease:
        if not rx.hot[7]:
            rx.expect_lent(True)
        return _lent(rx.data.value or 0, rx.length.value, lease)
    if rx.hot[7]:
        rx.expect_lent(False)
    return view[: rx.length.value]


class _Receiver:
    """One thread's receive buffer: reused for every get, never reallocated
    on the hot path. The C calls get plain addresses (``addr``,
    ``length_addr``, ``lens_addr``, or the same as ready-made ctypes
    arguments), the cheapest for ctypes to convert; the ctypes objects they
    point into live as long as this. ``view`` is a memoryview of ``buf``."""

    __slots__ = (
        "buf", "addr", "cap", "view", "length", "length_addr", "lens", "lens_addr", "lens_cap",
        "addr_arg", "cap_arg", "length_arg", "hot", "data", "data_addr", "lease", "lease_addr", "args",
    )

    def __init__(self, cap: int, handle: Optional[c_void_p]) -> None:
        self.buf = ctypes.create_string_buffer(cap)
        self.addr = ctypes.addressof(self.buf)
        self.cap = cap
        # What a get's first call offers (see _first_cap).
        first = _first_cap(cap)
        # Not .cast("B"): pickle.loads takes a slice of the plain view ~25%
        # faster (measured), and both hold the same bytes.
        self.view = memoryview(self.buf)
        self.length = c_uint32()
        self.length_addr = ctypes.addressof(self.length)
        self.lens = array.array("I")
        self.lens_addr = 0
        self.lens_cap = 0
        self.data = c_void_p()
        self.data_addr = ctypes.addressof(self.data)
        self.lease = c_void_p()
        self.lease_addr = ctypes.addressof(self.lease)
        # The same values as ready-made ctypes arguments (see _SLICE_ARG).
        self.addr_arg = c_void_p(self.addr)
        self.cap_arg = c_uint32(first)
        self.length_arg = c_void_p(self.length_addr)
        # A blocking get's arguments in one struct (ring_buffer_get_msg_args:
        # one argument for ctypes to convert instead of five, and the length
        # as the result; ~0.33 us less per get).
        self.args = _lib.RingBufferGetArgs(handle.value if handle is not None else None, self.addr, first, 0, _SLICE_NS)
        args_arg = c_void_p(ctypes.addressof(self.args))
        # What get() needs, in one tuple: unpacking it costs less than five
        # attribute loads on the hot path. The last two: whether the last
        # message this buffer received carried out-of-band buffers, and
        # whether the last one was lent (see get).
        self.hot = (args_arg, self.addr_arg, self.cap_arg, self.length_arg, self.view, self.length, False, False)

    def expect_out_of_band(self, expected: bool) -> None:
        """Sets the 7th element of ``hot``."""
        self.hot = self.hot[:6] + (expected,) + self.hot[7:]

    def expect_lent(self, expected: bool) -> None:
        """Sets the last element of ``hot``: a get asks for a lease first
        (one call instead of two for a stream of items that go out of
        line)."""
        if self.hot[7] is not expected:
            self.hot = self.hot[:7] + (expected,)

    def lens_for(self, count: int) -> "array.array[int]":
        """A uint32 array of at least ``count`` elements (grows, never shrinks)."""
        if self.lens_cap < count:
            self.lens_cap = max(count, 64)
            self.lens = array.array("I", bytes(4 * self.lens_cap))
            self.lens_addr = self.lens.buffer_info()[0]
        return self.lens


# ---------------------------------------------------------------- the queue


class SageQueue:
    """A named queue in POSIX shared memory, shared by any number of processes
    and threads (multi-producer, multi-consumer), with ``queue.Queue``'s API.

    ``SageQueue(name, maxsize)`` opens the queue ``name`` or creates it with a
    ring of ``maxsize`` bytes (rounded up to a power of two, at least 1024;
    0 means ``DEFAULT_MAXSIZE``, 1 MiB; ignored when the queue exists). Items are pickled
    (``pickle.HIGHEST_PROTOCOL``) unless ``dumps``/``loads`` are given. Items
    of any size go through: one whose serialised form is larger than the
    ring (``max_message_size``) travels in a slot of the queue's pool,
    shared-memory objects the queue keeps for reuse
    (``/dev/shm/sage_ringbuf_<name>..p<k>``, up to 8 of them, 128 MiB in
    all, removed with the queue or by ``sage-queue gc`` while free), or,
    when the pool has no room or ``pool=False``, in an object of its own
    (``..x<id>``, removed when it is received); only a small descriptor goes
    through the ring. So does one of 64 KiB (``RING_BUFFER_POOLED_FROM``)
    or more that fits in the ring, when a slot is free (else through the
    ring): its consumer then copies nothing out of the ring. A handle
    opened with ``pool=False`` never puts items into slots (it still
    receives those others put there). A consumer
    receives such an item without a copy: numpy arrays and other
    out-of-band buffers are views of the shared memory, lent to them until
    the last of them is gone (see ``received_in_place``); keeping many of
    them alive keeps pool slots busy, and later items then take objects of
    their own.

    ``auto_cleanup=True`` removes the queue when this object is closed and no
    other live process has it open. ``exclusive=True`` fails with
    ``QueueExistsError`` if the queue exists. ``mode`` sets the permission
    bits of a new queue (0600 by default). ``buffer_size`` is the size of
    each thread's receive buffer (default: the ring size, at most 1 MiB); it
    grows to take larger items and is kept, up to ``MAX_KEPT_BUFFER`` bytes
    (larger items arrive into a buffer of their own).

    A SageQueue pickles by name: sent to another process (multiprocessing
    under any start method, ``ProcessPoolExecutor``), it reattaches to the
    same queue there. A forked child may also keep using an inherited object.
    """

    name: str
    maxsize: int
    auto_cleanup: bool

    def __init__(
        self,
        name: NameLike,
        maxsize: int = 0,
        auto_cleanup: bool = False,
        *,
        dumps: Optional[Dumps] = None,
        loads: Optional[Loads] = None,
        buffer_size: Optional[int] = None,
        exclusive: bool = False,
        mode: int = 0o600,
        pool: bool = True,
    ) -> None:
        # Every argument is checked before the queue is created or opened.
        raw = _encode_name(name)
        size = _check_maxsize(maxsize)
        _check_codec(dumps, loads)
        if buffer_size is not None:
            _check_count(buffer_size, "buffer_size")
        if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o777:
            raise ValueError(f"mode must be permission bits between 0 and 0o777, not {mode!r}")
        flags = (_lib.RB_CREATE_EXCLUSIVE if exclusive else 0) | _pool_flag(pool)
        handle = _lib.create_ex(raw, size, mode, flags)
        if not handle:
            raise _open_error(_lib.last_error(), f"cannot create or open queue {_decode_name(raw)!r}")
        self._attach(raw, handle, auto_cleanup, dumps, loads, buffer_size, pool)

    @classmethod
    def open(
        cls,
        name: NameLike,
        auto_cleanup: bool = False,
        *,
        dumps: Optional[Dumps] = None,
        loads: Optional[Loads] = None,
        buffer_size: Optional[int] = None,
        pool: bool = True,
    ) -> "SageQueue":
        """Opens the existing queue ``name`` (``QueueNotFoundError`` if none);
        the other arguments as for ``SageQueue``."""
        raw = _encode_name(name)
        _check_codec(dumps, loads)
        if buffer_size is not None:
            _check_count(buffer_size, "buffer_size")
        handle = _lib.open_ex(raw, _pool_flag(pool))
        if not handle:
            raise _open_error(_lib.last_error(), f"cannot open queue {_decode_name(raw)!r}")
        self = cls.__new__(cls)
        self._attach(raw, handle, auto_cleanup, dumps, loads, buffer_size, pool)
        return self

    def _attach(
        self,
        raw_name: bytes,
        handle: int,
        auto_cleanup: bool,
        dumps: Optional[Dumps],
        loads: Optional[Loads],
        buffer_size: Optional[int],
        pool: bool,
    ) -> None:
        # Set first, so that close() (and __del__) work if anything below fails.
        self._handle: Optional[c_void_p] = c_void_p(handle)
        # A blocking put's handle and wait in one struct (ring_buffer_put_msg_args:
        # one argument fewer for ctypes to convert); close() clears it.
        self._put_args = _lib.RingBufferPutArgs(handle, _SLICE_NS)
        self._put_args_arg = c_void_p(ctypes.addressof(self._put_args))
        self._pool = bool(pool)
        self._raw_name = raw_name
        self._close_lock = threading.Lock()
        self.name = _decode_name(raw_name)
        self.auto_cleanup = bool(auto_cleanup)
        # None means the default pickle codec, which the hot paths call
        # directly (a partial or wrapper would cost a call per item).
        self._dumps = dumps
        self._loads = loads
        # Whether the last item pickled (not a number or short string) was
        # large: see _pieces.
        self._large = False
        try:
            stats = self._stats_ex()
        except BaseException:
            self.close()
            raise
        #: Ring size in bytes (a power of two; the queue's, if it existed).
        self.maxsize = int(stats.buffer_size)
        #: Largest serialised item that travels inside the ring; larger ones
        #: go out of line (a shared-memory object of their own).
        self.max_message_size = self.maxsize - 1 - _FRAME
        #: Layout version of the queue object (1: legacy C library, 2: this one).
        self.layout_version = int(stats.version)
        if buffer_size is None:
            self._buffer_size = min(self.maxsize, MAX_DEFAULT_BUFFER)
        else:
            self._buffer_size = _check_count(buffer_size, "buffer_size")
        self._buffer_size_arg = buffer_size
        self._tls = threading.local()

    # ------------------------------------------------------------ helpers

    def _receiver(self) -> _Receiver:
        try:
            return self._tls.rx  # type: ignore[no-any-return]
        except AttributeError:
            rx = self._tls.rx = _Receiver(self._buffer_size, self._handle)
            return rx

    def _grow_receiver(self, needed: int) -> _Receiver:
        """This thread's receive buffer, replaced by one of at least
        ``needed`` bytes (the next power of two, at most MAX_KEPT_BUFFER),
        kept for the following gets."""
        cap = min(max(1 << (needed - 1).bit_length(), self._buffer_size), MAX_KEPT_BUFFER)
        rx = self._tls.rx = _Receiver(max(cap, needed), self._handle)
        return rx

    def _live_handle(self) -> c_void_p:
        handle = self._handle
        if handle is None:
            raise self._closed_error()
        return handle

    def _closed_error(self) -> ClosedQueueError:
        return ClosedQueueError(
            f"SageQueue {self.name!r} is closed: open it again (SageQueue(name) or open_queue(name)) to use it"
        )

    def _error(self, code: int, what: str) -> BaseException:
        """The exception for a failed call (closed queue recognised first)."""
        if code == RB_ERR_INVALID_ARG and self._handle is None:
            return self._closed_error()
        if code == RB_ERR_TOO_LARGE:
            return MessageTooLargeError(f"{what} on queue {self.name!r}: {self._too_large_text()}")
        return error_for(code, f"{what} on queue {self.name!r}")

    def _retry(
        self,
        rc: int,
        kind: int,
        block: bool,
        deadline: Optional[float],
        what: str,
        *,
        size: Optional[int] = None,
        done: int = 0,
        count: int = 0,
    ) -> int:
        """The one place that decides what a failed call means, for every
        operation of ``kind`` (_GET, _PUT, _JOIN): returns the nanoseconds the
        next attempt may wait, or raises. (-1 for a join whose deadline
        passed.) ``size`` is the item's for a too-large put; ``done`` of
        ``count`` items went in, for a batch put (``items_put`` on the
        ``Full``/``ShutDown``/``MessageTooLargeError`` raised)."""
        waiting_code = RB_ERR_EMPTY if kind == _GET else RB_ERR_FULL
        if rc == RB_ERR_TIMEOUT or (rc == waiting_code and kind != _JOIN):
            if block:
                wait_ns = _next_wait(deadline)
                if wait_ns >= 0 or kind == _JOIN:
                    return wait_ns
            if kind == _GET:
                raise Empty(EMPTY_TIMED_OUT if block else EMPTY_TRY)
            full = Full(_batch_text(FULL_TIMED_OUT if block else FULL_TRY, done, count))
            full.items_put = done  # type: ignore[attr-defined]
            raise full
        if rc == RB_ERR_SHUTDOWN:
            shut = ShutDown(_batch_text(f"queue {self.name!r} was shut down", done, count))
            if kind == _PUT:
                shut.items_put = done
            raise shut
        if rc == RB_ERR_TOO_LARGE and size is not None:
            too_large = MessageTooLargeError(f"{what} on queue {self.name!r}: {self._too_large_text(size)}"
                                             + (f" ({done} of {count} items were put)" if count else ""))
            if count:
                too_large.items_put = done  # type: ignore[attr-defined]
            raise too_large
        raise self._error(rc, what)

    def _check_sendable(self, size: int, what: str) -> None:
        """MessageTooLargeError for a message of 4 GiB or more: the C calls
        take 32-bit lengths, and ctypes would silently pass one mod 2^32.
        Every put path (here and in sage_queue.aio) passes its messages'
        lengths through this before a C call."""
        if size >= _MAX_ITEM:
            raise MessageTooLargeError(f"{what} on queue {self.name!r}: {self._too_large_text(size)}")

    def _too_large_text(self, size: Optional[int] = None) -> str:
        item = f"the item is {size} bytes serialised" if size is not None else "the item"
        if size is not None and size >= _MAX_ITEM:
            return f"{item}: items of 4 GiB or more cannot be sent; nothing was written. Send smaller items"
        if self.layout_version != 2:
            where = "this queue is a legacy (version 1) object, which carries only items that fit in its ring"
        else:
            where = (
                "it is larger than this queue's ring and /dev/shm has no room for it out of line "
                "(or the queue holds raw legacy byte writes)"
            )
        return (
            f"{item} did not go through: {where} (ring {self.maxsize} bytes, items up to "
            f"{self.max_message_size} bytes inline); nothing was written. Free space in /dev/shm "
            f"(df /dev/shm) or send smaller items"
        )

    def _stats_ex(self) -> _lib.RingBufferStatsEx:
        stats = _lib.RingBufferStatsEx()
        rc = _lib.get_stats_ex_checked(self._live_handle(), ctypes.byref(stats))
        if rc:
            raise self._error(rc, "get_stats")
        return stats

    def _msg_count(self) -> int:
        count = c_uint64()
        rc = _lib.msg_count_checked(self._live_handle(), ctypes.byref(count))
        if rc:
            raise self._error(rc, "qsize")
        return int(count.value)

    # ------------------------------------------------------------ put

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Puts ``item``, waiting for room as ``queue.Queue.put`` does.

        ``block=False`` tries once (``queue.Full`` if no room); ``timeout``
        None waits as long as it takes, a number waits at most that many
        seconds (then ``queue.Full``); a negative timeout is a ValueError.
        Items larger than the ring go out of line, at most 128 MiB of them
        queued (or one alone): past that, put waits as for a full ring.
        Raises ``ShutDown`` after ``shutdown()``, ``MessageTooLargeError``
        (nothing written) for an item larger than the ring that /dev/shm has
        no room for, and the pickling error for an item that cannot be
        serialised (the queue is untouched).
        """
        dumps = self._dumps
        if dumps is None:
            kind = type(item)
            if kind in _PLAIN:
                if kind in _SIZED and len(item) >= _LARGE:
                    self._put_pieces(self._pieces(item), block, timeout, "put")
                    return
                # Nothing out of band can come of these: no buffer_callback
                # (its list and bound method cost ~0.1 us a put).
                data = _pickle_dumps(item, _PROTOCOL)
            elif self._large:
                self._put_pieces(self._pieces(item), block, timeout, "put")
                return
            else:
                vectors = _array_vectors(item, kind)
                if vectors is not None:
                    try:
                        self._put_vectors(vectors[1], vectors[2], block, timeout, "put")
                    finally:
                        # Lets go of the array (an exception's traceback
                        # would keep the holder, and the export, alive).
                        del vectors
                    return
                pieces = _array_pieces(item, kind)
                if pieces is not None:
                    self._put_pieces(pieces, block, timeout, "put")
                    return
                buffers: List[pickle.PickleBuffer] = []
                data = _pickle_dumps(item, _PROTOCOL, buffer_callback=buffers.append)
                if len(data) >= _LARGE:
                    self._large = True
                if buffers:
                    # Out-of-band buffers (numpy arrays...): written once,
                    # straight into shared memory (see _oob).
                    self._put_pieces(_Pieces([data], buffers), block, timeout, "put")
                    return
        else:
            data = dumps(item)
            if type(data) is not bytes:
                data = _as_bytes(data, "dumps")
        size = len(data)
        if block and timeout is None:
            # The common case, with one C call when there is room.
            if size < _LENGTH_ARGS_MAX:
                length = _LENGTH_ARGS[size]
                if length is None:
                    length = _LENGTH_ARGS[size] = c_uint32(size)
                rc = _put_msg_args(self._put_args_arg, data, length)
            else:
                self._check_sendable(size, "put")
                rc = _put_msg_args(self._put_args_arg, data, size)
            if rc:
                self._put_wait(data, rc, True, None, "put")
            return
        self._check_sendable(size, "put")
        wait_ns, deadline = _first_wait(block, timeout)
        rc = _put_msg(self._handle, data, size, wait_ns)
        if rc:
            self._put_wait(data, rc, block, deadline, "put")

    def _put_pieces(self, pieces: _oob.Pieces, block: bool, timeout: Optional[float], what: str) -> None:
        """Puts one message given as pieces (``ring_buffer_put_msgv``)."""
        try:
            self._check_sendable(pieces.nbytes, what)
            parts, lens, count = pieces.vectors()
            self._put_vectors(parts, lens, block, timeout, what, count)
        finally:
            pieces.release()

    def _put_vectors(
        self, parts: Any, lens: Any, block: bool, timeout: Optional[float], what: str, count: int = 2
    ) -> None:
        """``ring_buffer_put_msgv`` of ``count`` parts (C arrays of their
        addresses and lengths), waiting as ``put`` does."""
        if block and timeout is None:
            wait_ns: Any = _SLICE_ARG
            deadline: Optional[float] = None
        else:
            wait_ns, deadline = _first_wait(block, timeout)
        rc = _lib.put_msgv(self._handle, parts, lens, count, wait_ns)
        while rc:
            wait_ns = self._retry(rc, _PUT, block, deadline, what, size=sum(lens))
            rc = _lib.put_msgv(self._handle, parts, lens, count, wait_ns)

    def _payload(self, item: Any) -> Union[bytes, _oob.Pieces]:
        """The message ``put`` sends for ``item``: bytes, or ``Pieces`` (for
        sage_queue.aio; put and put_many do the same inline)."""
        dumps = self._dumps
        if dumps is not None:
            return _as_bytes(dumps(item), "dumps")
        kind = type(item)
        if kind in _PLAIN:
            if kind in _SIZED and len(item) >= _LARGE:
                return self._pieces(item)
            return _pickle_dumps(item, _PROTOCOL)
        if self._large:
            return self._pieces(item)
        pieces = _array_pieces(item, kind)
        if pieces is not None:
            return pieces
        buffers: List[pickle.PickleBuffer] = []
        data = _pickle_dumps(item, _PROTOCOL, buffer_callback=buffers.append)
        if len(data) >= _LARGE:
            self._large = True
        return _Pieces([data], buffers) if buffers else data

    def _pieces(self, item: Any) -> _oob.Pieces:
        """A large item (or one that may be) pickled into pieces by
        ``_oob.dumps_large``, which copies none of its large bytes or str.
        Whether an item that is not a number, str or bytes is large is
        known only once it is pickled; the guess (``_large``) is the
        previous such item's size (producers tend to send items of one
        kind): one pickled as pieces costs ~1 us more than by
        ``pickle.dumps`` when it turns out small, while ``pickle.dumps``
        copies a large one into a growing buffer (~0.8 ms per MiB)."""
        pieces = _dumps_large(item)
        self._large = pieces.inband >= _LARGE
        return pieces

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``."""
        self.put(item, False)

    def put_bytes(self, data: Union[bytes, bytearray, memoryview], block: bool = True, timeout: Optional[float] = None) -> None:
        """Puts raw bytes as one message (no pickling); see ``put``."""
        if type(data) is not bytes:
            if isinstance(data, (bytearray, memoryview)):
                # Before the copy: ctypes would pass the length mod 2^32.
                self._check_sendable(memoryview(data).nbytes, "put_bytes")
            data = _as_bytes(data, "put_bytes")
        size = len(data)
        if block and timeout is None and size < _LENGTH_ARGS_MAX:
            # put's common case (see put): one C call of one converted
            # argument when there is room (the general call below converts
            # four: 1 -> 1 process, 512 bytes, ~10 % more items a second).
            length = _LENGTH_ARGS[size]
            if length is None:
                length = _LENGTH_ARGS[size] = c_uint32(size)
            rc = _put_msg_args(self._put_args_arg, data, length)
            if rc:
                self._put_wait(data, rc, True, None, "put_bytes")
            return
        self._check_sendable(size, "put_bytes")
        wait_ns, deadline = _first_wait(block, timeout)
        rc = _put_msg(self._handle, data, size, wait_ns)
        if rc:
            self._put_wait(data, rc, block, deadline, "put_bytes")

    def _put_wait(self, data: bytes, rc: int, block: bool, deadline: Optional[float], what: str) -> None:
        """The slow path of a put: keeps waiting in slices until it is done,
        the deadline (None: none) passes, or it fails."""
        while rc:
            wait_ns = self._retry(rc, _PUT, block, deadline, what, size=len(data))
            rc = _put_msg(self._handle, data, len(data), wait_ns)
            if rc == RB_OK:
                return

    def put_many(self, items: Iterable[Any], block: bool = True, timeout: Optional[float] = None) -> int:
        """Puts every item of ``items``, in order, in as few C calls as room
        allows (each call puts as many as fit, under one lock, with one
        wake-up). Returns how many were put (all of them).

        Every item is serialised before anything is written, so a pickling
        error leaves the queue untouched. Items larger than the ring go out
        of line, each in its own call; so do batches of 32 KiB and more on
        average of plain items (bytes, str, numbers) or of numpy arrays
        (which cannot fail to pickle), each put as soon as it is made. If
        ``block`` is False or ``timeout`` passes before all are in, raises ``queue.Full`` with ``items_put``
        set on it (the first ``items_put`` items were put, the rest were
        not); ``MessageTooLargeError`` (/dev/shm has no room for an item)
        carries ``items_put`` the same way.
        """
        dumps = self._dumps
        payloads: List[Union[bytes, _oob.Pieces]]
        if dumps is None:
            if type(items) is not list:
                items = list(items)
            kinds = set(map(type, items))
            plain_bytes = _plain_bytes(items, kinds)
            if _one_at_a_time(items, kinds, plain_bytes):
                return self._put_each(items, block, timeout)
            if plain_bytes is not None:
                # Nothing goes out of band: one comprehension, and the
                # packing skips what only out-of-band items need.
                plain: List[bytes] = list(map(_pickle_dumps, items, itertools.repeat(_PROTOCOL, len(items))))
                return self._put_packed(plain, block, timeout, "put_many", plain=True)
            payloads = []
            add = payloads.append
            # put's three paths (see put and _pieces), with one buffer
            # list kept until an item uses it.
            buffers: List[pickle.PickleBuffer] = []
            collect = buffers.append
            try:
                for item in items:
                    kind = type(item)
                    if kind in _PLAIN and (kind not in _SIZED or len(item) < _LARGE):
                        add(_pickle_dumps(item, _PROTOCOL))
                    elif self._large or kind in _PLAIN:
                        add(self._pieces(item))
                    else:
                        pieces = _array_pieces(item, kind)
                        if pieces is not None:
                            add(pieces)
                            continue
                        data = _pickle_dumps(item, _PROTOCOL, buffer_callback=collect)
                        if len(data) >= _LARGE:
                            self._large = True
                        if buffers:
                            add(_Pieces([data], buffers))
                            buffers = []
                            collect = buffers.append
                        else:
                            add(data)
            except BaseException:
                _oob.release_all(payloads)
                raise
        else:
            payloads = [_as_bytes(dumps(item), "dumps") for item in items]
        return self._put_packed(payloads, block, timeout, "put_many")

    def _put_each(self, items: List[Any], block: bool, timeout: Optional[float]) -> int:
        """``put_many`` of items that cannot fail to serialise, of
        ``_EACH_FROM`` bytes and more on average (``_one_at_a_time``): each
        made into its message (``_put_message``) and put as ``put`` does,
        one at a time, so nothing is lost by not serialising the whole batch
        before the first put.
        Plain items: pickling them all first and joining them would copy
        each once more, in fresh memory each batch (measured 1 -> 1 at
        64 KiB: 73k items/s joined, 82k one at a time, 79k with ``put``; at
        16 KiB joining still pays for itself). numpy arrays: while the
        producer made a whole batch's messages, a consumer that had taken
        the previous batch outwaited its patience and slept, once per batch,
        and the producer paid for the wake-up (1 -> 1, 64 KiB float64
        arrays in batches of 16: 105k items/s against 235k with ``put``)."""
        count = len(items)
        wait_ns: Any
        wait_ns, deadline = _first_wait(block, timeout)
        if block and timeout is None:
            wait_ns = _SLICE_ARG  # as put: converted once
        for done, item in enumerate(items):
            message = self._put_message(item)
            try:
                if isinstance(message, bytes):
                    rc = _put_msg(self._handle, message, len(message), wait_ns)
                    while rc:
                        wait_ns = self._retry(
                            rc, _PUT, block, deadline, "put_many", size=len(message), done=done, count=count
                        )
                        rc = _put_msg(self._handle, message, len(message), wait_ns)
                else:
                    if isinstance(message, tuple):
                        # Its kind's first array passed array_pieces' checks,
                        # under 4 GiB included.
                        parts, lens, pieces = message[1], message[2], 2
                    else:
                        parts, lens, pieces = message.vectors()
                        if message.nbytes >= _MAX_ITEM:
                            # (As _check_sendable: ctypes would pass the
                            # length mod 2^32. Raised with the batch's count.)
                            self._retry(RB_ERR_TOO_LARGE, _PUT, block, deadline, "put_many",
                                        size=message.nbytes, done=done, count=count)
                    rc = _lib.put_msgv(self._handle, parts, lens, pieces, wait_ns)
                    while rc:
                        wait_ns = self._retry(rc, _PUT, block, deadline, "put_many",
                                              size=sum(lens[:pieces]), done=done, count=count)
                        rc = _lib.put_msgv(self._handle, parts, lens, pieces, wait_ns)
            finally:
                if type(message) is _Pieces:
                    message.release()
                # Lets go of the array (as put does: an exception's
                # traceback would keep the holder, and the export, alive).
                del message
            if deadline is not None:
                # The next item waits within the same deadline.
                wait_ns = max(_next_wait(deadline), 0)
        return count

    def _puts_each(self, items: List[Any]) -> bool:
        """Whether ``put_many`` puts ``items`` one at a time (for
        ``sage_queue.aio``): with the default codec, as ``_one_at_a_time``
        says."""
        if self._dumps is not None:
            return False
        kinds = set(map(type, items))
        return _one_at_a_time(items, kinds, _plain_bytes(items, kinds))

    def _put_message(self, item: Any) -> Union[bytes, _oob.Pieces, _ArrayVectors]:
        """``put``'s message for ``item`` (``_put_each``): the C call's
        vectors when it is a numpy array that takes put's shortest path
        (``_array_vectors``), else its bytes or pieces."""
        if not self._large:
            vectors = _array_vectors(item, type(item))
            if vectors is not None:
                return vectors
        return self._payload(item)

    def put_many_bytes(
        self, payloads: Iterable[Union[bytes, bytearray, memoryview]], block: bool = True, timeout: Optional[float] = None
    ) -> int:
        """``put_many`` for raw bytes (no pickling)."""
        return self._put_packed(
            [_as_bytes(p, "put_many_bytes") for p in payloads], block, timeout, "put_many_bytes", plain=True
        )

    def _put_packed(
        self,
        payloads: "Sequence[Union[bytes, _oob.Pieces]]",
        block: bool,
        timeout: Optional[float],
        what: str,
        plain: bool = False,
    ) -> int:
        """Puts ``payloads`` in order; ``plain``: all are ``bytes`` (no
        ``Pieces`` to release, none out of band unless longer than the ring)."""
        if plain:
            return self._put_packed_held(payloads, block, timeout, what, plain)
        try:
            return self._put_packed_held(payloads, block, timeout, what, plain)
        finally:
            _oob.release_all(payloads)

    def _put_packed_held(
        self,
        payloads: "Sequence[Union[bytes, _oob.Pieces]]",
        block: bool,
        timeout: Optional[float],
        what: str,
        plain: bool,
    ) -> int:
        count = len(payloads)
        if count == 0:
            return 0
        # Back to back in one bytes object plus a uint32 length array: the
        # layout ring_buffer_put_packed takes, built by C-speed calls only
        # (array.array is ~10x cheaper to fill than a ctypes array). Items
        # larger than the ring go out of line, one put_msg each straight from
        # their own bytes: they are left out of the joined copy.
        inline = self.max_message_size
        joined = b""
        if plain:
            # Plain bytes that fit in the ring together fit one by one: the
            # common batch is joined at once, without a pass for the longest.
            joined = b"".join(payloads)  # type: ignore[arg-type]
        if plain and len(joined) <= inline:
            alone: List[bool] = []
            any_large = False
        else:
            self._check_sendable(max(map(len, payloads)), what)
            alone = [type(p) is not bytes or len(p) > inline for p in payloads]
            any_large = any(alone)
            # Only bytes are not `alone` (so all are bytes when none is).
            if any_large:
                joined = b"".join(p for p, a in zip(payloads, alone) if not a)  # type: ignore[misc]
            elif not plain:
                joined = b"".join(payloads)  # type: ignore[arg-type]
        sizes = array.array("I", map(len, payloads))
        address = ctypes.cast(ctypes.c_char_p(joined), c_void_p).value or 0  # no copy
        lens_base = sizes.buffer_info()[0]
        remaining_bytes = len(joined)
        ring = self.maxsize
        wait_ns, deadline = _first_wait(block, timeout)
        handle = self._handle
        done = 0
        while done < count:
            if any_large and alone[done]:
                one = payloads[done]
                if type(one) is _Pieces:
                    rc = _lib.put_msgv(handle, *one.vectors(), wait_ns)
                else:
                    rc = _put_msg(handle, one, sizes[done], wait_ns)
                if rc == RB_OK:
                    rc = 1
                    sent = 0
            else:
                batch = count - done
                if any_large:
                    batch = _inline_run(sizes, alone, done, ring)
                elif remaining_bytes > ring:
                    # More than the ring holds: offer only what could fit at
                    # best, which also keeps the call's byte total below 4 GiB.
                    batch = max(1, sum(1 for _ in itertools.takewhile(
                        ring.__ge__, itertools.accumulate(sizes[done:]))))
                rc = _lib.put_packed(handle, address, lens_base + 4 * done, batch, wait_ns)
                if rc > 0:
                    sent = sum(sizes[done : done + rc])
            if rc > 0:
                address += sent
                remaining_bytes -= sent
                done += rc
                if done < count and block:
                    # More to go: wait for room again, within the same deadline.
                    wait_ns = max(_next_wait(deadline), 0)
                continue
            wait_ns = self._retry(rc, _PUT, block, deadline, what, size=sizes[done], done=done, count=count)
            handle = self._handle
        del joined  # kept alive until here: the C calls read its bytes
        return count

    # ------------------------------------------------------------ get

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Removes and returns an item, waiting as ``queue.Queue.get`` does.

        ``block=False`` tries once (``queue.Empty`` if none); ``timeout``
        None waits as long as it takes (Ctrl-C still interrupts it), a
        number waits at most that many seconds (then ``queue.Empty``); a
        negative timeout is a ValueError. After ``shutdown()``, gets return
        what is left and then raise ``ShutDown``.
        """
        try:
            rx = self._tls.rx
        except AttributeError:
            rx = self._receiver()
        args, addr, cap, length_ptr, view, length, out_of_band, lent = rx.hot
        if lent:
            # The last item was lent (out of line): so is the next, likely.
            # (An item in the ring clears this, see _get_wait.)
            return self._get_lent(rx, block, timeout)
        if block and timeout is None:
            # The common case, with one C call when a message is there.
            size = _get_msg_args(args)
            if size < 0:
                return self._get_slow(rx, size, True, None, from_args=True)
        else:
            wait_ns, deadline = _first_wait(block, timeout)
            rc = _get_msg(self._handle, addr, cap, length_ptr, wait_ns)
            if rc != RB_OK:
                return self._get_slow(rx, rc, block, deadline)
            size = length.value
        loads = self._loads
        # pickle copies what it keeps, so the reused buffer is safe (an item
        # with out-of-band buffers gets copies of them).
        payload = view[:size]
        try:
            if loads is not None:
                # A custom loads might keep a view of its input: a copy.
                return loads(payload.tobytes())
            if out_of_band:
                # The last message here had out-of-band buffers (numpy
                # arrays...), as the next one likely has: its magic
                # first, not a pickle.loads that fails (~1.5 us).
                if _has_magic(payload):
                    return _oob_loads(payload, False)
                rx.expect_out_of_band(False)
                return _pickle_loads(payload)
            try:
                return _pickle_loads(payload)
            except pickle.UnpicklingError:
                if not _has_magic(payload):
                    raise
            rx.expect_out_of_band(True)
            return _oob_loads(payload, False)
        except Exception as exc:
            # Taken from the queue: the exception carries it (not lost).
            keep_undelivered(exc, [], [payload])
            raise

    def _get_lent(self, rx: _Receiver, block: bool, timeout: Optional[float]) -> Any:
        """``get`` when the last item was lent: asks for a lease first and
        unpickles what it is lent in place, without the general path's
        layers (~0.7 us less of a 64 KiB array's get, measured). Any other
        outcome goes on as ``_get_slow`` does."""
        if block and timeout is None:
            wait_ns: Any = _SLICE_ARG
            deadline: Optional[float] = None
        else:
            wait_ns, deadline = _first_wait(block, timeout)
        rc = _get_msg_lease(self._handle, rx.addr, rx.cap, rx.length_addr, rx.data_addr, rx.lease_addr, wait_ns)
        if rc != RB_OK:
            payload = self._get_wait(rx, rc, block, deadline, "get")
        else:
            payload = _taken(rx, rx.view)
            if rx.hot[7] and self._loads is None:
                try:
                    return _loads_lent(payload)
                except Exception as exc:
                    # Taken from the queue: the exception carries it (not lost).
                    keep_undelivered(exc, [], [payload])
                    raise
        return decode_each([payload], self.decode, how=QUEUE_DECODE)[0]

    def _get_slow(
        self, rx: _Receiver, rc: int, block: bool, deadline: Optional[float], from_args: bool = False
    ) -> Any:
        """``get`` after a first call that did not return a message in the
        thread's buffer (``rc``): waits, grows the buffer, or borrows the
        message where it lies (see ``_get_wait``)."""
        payload = self._get_slow_payload(rx, rc, block, deadline, "get", from_args)
        return decode_each([payload], self.decode, how=QUEUE_DECODE)[0]

    def _get_slow_payload(
        self, rx: _Receiver, rc: int, block: bool, deadline: Optional[float], what: str, from_args: bool
    ) -> memoryview:
        """``_get_wait`` after a first call that failed with ``rc``, which
        was ``ring_buffer_get_msg_args`` if ``from_args``."""
        if from_args and rc == RB_ERR_BUFFER_TOO_SMALL:
            # ring_buffer_get_msg_args said how long in its struct;
            # _get_wait reads it where ring_buffer_get_msg puts it.
            rx.length.value = rx.args.needed
        return self._get_wait(rx, int(rc), block, deadline, what)

    def decode(self, payload: Any) -> Any:
        """The item of a raw message (bytes or a buffer: from ``get_bytes``,
        ``get_many_bytes``, or an exception's ``payloads_left``), as ``get``
        would return it: this queue's ``loads``, or pickle's, reading the
        out-of-band buffers of a message that has them."""
        loads = self._loads
        if loads is not None:
            return loads(bytes(payload))
        return _loads_any(payload if isinstance(payload, memoryview) else memoryview(payload))

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(False)

    def get_bytes(self, block: bool = True, timeout: Optional[float] = None) -> bytes:
        """Removes and returns one message as raw bytes (no unpickling)."""
        rx: _Receiver
        try:
            rx = self._tls.rx
        except AttributeError:
            rx = self._receiver()
        if block and timeout is None:
            # get's common case (see get): one C call of one argument when a
            # message is there, against five converted by the call below.
            size = _get_msg_args(rx.hot[0])
            if size >= 0:
                return rx.view[:size].tobytes()
            return self._get_slow_payload(rx, size, True, None, "get_bytes", from_args=True).tobytes()
        wait_ns, deadline = _first_wait(block, timeout)
        rc = _get_msg(self._handle, rx.addr, rx.cap, rx.length_addr, wait_ns)
        if rc == RB_OK:
            return rx.view[: rx.length.value].tobytes()
        return self._get_wait(rx, rc, block, deadline, "get_bytes").tobytes()

    def _get_wait(self, rx: _Receiver, rc: int, block: bool, deadline: Optional[float], what: str) -> memoryview:
        """The slow path of a get: waits in slices until a message comes, the
        deadline (None: none) passes, or it fails; receives a message larger
        than the thread's buffer into one of its own. Returns the payload (a
        view valid until this thread's next get)."""
        buf, addr, cap, view = rx.buf, rx.addr, rx.cap, rx.view
        asked_for_lease = False
        while True:
            if rc == RB_ERR_BUFFER_TOO_SMALL and not asked_for_lease:
                # Larger than this thread's buffer (nothing was consumed):
                # if it went out of line, get_msg_lease below lends it where
                # it lies, whatever the buffer's size.
                asked_for_lease = True
                wait_ns = max(_next_wait(deadline), 0) if block else 0
            elif rc == RB_ERR_BUFFER_TOO_SMALL:
                # In the ring and larger than this thread's buffer: grow the
                # buffer and keep it for the next ones, or, beyond
                # MAX_KEPT_BUFFER, receive it into one of its own.
                needed = max(rx.length.value, 1)
                if needed <= MAX_KEPT_BUFFER:
                    rx = self._grow_receiver(needed)
                    buf, addr, cap, view = rx.buf, rx.addr, rx.cap, rx.view
                else:
                    cap = needed
                    buf = ctypes.create_string_buffer(cap)
                    addr = ctypes.addressof(buf)
                    view = memoryview(buf)
                wait_ns = max(_next_wait(deadline), 0) if block else 0
            else:
                wait_ns = self._retry(rc, _GET, block, deadline, what)
            # An item that went out of line is lent where it lies (no copy;
            # the lease ends with the last view of it); one in the ring is
            # copied into the buffer.
            rc = _get_msg_lease(self._handle, addr, cap, rx.length_addr, rx.data_addr, rx.lease_addr, wait_ns)
            if rc == RB_OK:
                return _taken(rx, view)

    def get_many(self, max_items: int, block: bool = True, timeout: Optional[float] = None) -> List[Any]:
        """Removes and returns up to ``max_items`` items (at least one), in one
        C call when they are queued; waits for the first as ``get`` does.
        Returns fewer when fewer are queued or when they fill this thread's
        receive buffer (``buffer_size`` bytes). If one item fails to
        unpickle, its exception propagates carrying the rest of the batch
        (taken from the queue already): ``items_received`` (those before
        it) and ``payloads_left`` (raw messages, the failing one first: see
        ``decode``). Items that went out of line (64 KiB and more) come one
        per call, lent where they lie as ``get`` returns them, once this
        thread has received one: a batch would copy each out of its slot
        (and at 128 KiB moved 16-18k items/s, against 75-83k one by one)."""
        if self._receiver().hot[7]:
            # The last item was lent, or a batch held one that may have
            # been: so is the next, likely. (An item from the ring ends it.)
            _check_count(max_items, "max_items")
            return [self.get(block, timeout)]
        view, sizes = self._get_packed(max_items, block, timeout, "get_many")
        if len(sizes) <= _FEW and max(sizes) >= _POOLED_FROM:
            self._receiver().expect_lent(True)
        out: List[Any] = []
        add = out.append
        if self._loads is None:
            # Each payload is unpickled as it is cut from the view: one pass
            # and no list of views (~5 % of a 512-byte get_many).
            at = 0
            try:
                count = len(sizes)
                # (A uint32 array compared whole: one memcmp, where a count
                # or min/max would box every length.)
                if _UNIFORM_FROM <= count <= _UNIFORM_TO and sizes == sizes[:1] * count:
                    for cut in _uniform_slices(sizes[0], count):
                        add(_pickle_loads(view[cut]))
                    return out
                for size in sizes:
                    end = at + size
                    add(_pickle_loads(view[at:end]))
                    at = end
                return out
            except pickle.UnpicklingError:
                pass  # one carries out-of-band buffers (or is broken): the rest below
            except Exception as exc:
                keep_undelivered(exc, out, _cut(view, sizes)[len(out):])
                raise
        return decode_each(_cut(view, sizes)[len(out) :], self.decode, out, QUEUE_DECODE)

    def get_many_bytes(self, max_items: int, block: bool = True, timeout: Optional[float] = None) -> List[bytes]:
        """``get_many`` for raw bytes (no unpickling)."""
        view, sizes = self._get_packed(max_items, block, timeout, "get_many_bytes")
        return [p.tobytes() for p in _cut(view, sizes)]

    def _get_packed(
        self, max_items: int, block: bool, timeout: Optional[float], what: str
    ) -> "Tuple[memoryview, array.array[int]]":
        """The payloads received by one ``ring_buffer_get_many``: back to back
        in a view (valid until this thread's next get), and their lengths (a
        uint32 array)."""
        # A ring of n bytes holds fewer than n / 4 messages (each has a 4-byte
        # prefix), so a larger count could never be filled: the length array
        # is sized by what can arrive, not by what was asked.
        count = min(_check_count(max_items, "max_items"), self.maxsize // _FRAME, MAX_BATCH)
        rx = self._receiver()
        lens = rx.lens_for(count)
        wait_ns, deadline = _first_wait(block, timeout)
        while True:
            rc = _lib.get_many(self._handle, rx.addr, rx.cap, rx.lens_addr, count, wait_ns)
            if rc > 0:
                return rx.view, lens[:rc]
            if rc == RB_ERR_BUFFER_TOO_SMALL:
                # The next message alone exceeds the thread's buffer: take it
                # by itself through the single-message path.
                rx.length.value = lens[0]
                one = self._get_wait(rx, rc, block, deadline, what)
                return one, array.array("I", [len(one)])
            wait_ns = self._retry(rc, _GET, block, deadline, what)

    # ------------------------------------------------------------ asyncio (sage_queue.aio)
    # Awaitable, cancellation-safe versions of the calls above: nothing is
    # taken (or put) while a coroutine is suspended. See sage_queue.aio.

    # aio raises through _retry with these kinds (it cannot import them).
    _AIO_GET, _AIO_PUT = _GET, _PUT
    get_async = aio.get_async
    get_many_async = aio.get_many_async
    put_async = aio.put_async
    put_many_async = aio.put_many_async
    join_async = aio.join_async
    __aiter__ = aio.aiter_queue

    # ------------------------------------------------------------ state

    def qsize(self) -> int:
        """Messages queued now, exact across every process (an error, such as
        ``CorruptQueueError``, is raised, never passed off as a count)."""
        return self._msg_count()

    def empty(self) -> bool:
        """Whether no message is queued (across every process)."""
        return self.qsize() == 0

    def full(self) -> bool:
        """Whether the ring has no room even for the smallest message."""
        room = c_uint32()
        rc = _lib.available_write_checked(self._live_handle(), ctypes.byref(room))
        if rc:
            raise self._error(rc, "full")
        return int(room.value) < _FRAME + 1

    @property
    def closed(self) -> bool:
        """Whether this object was closed (the queue itself may live on)."""
        return self._handle is None

    @property
    def is_shutdown(self) -> bool:
        """Whether ``shutdown()`` was called on the queue (by any process)."""
        rc = _lib.is_shutdown(self._live_handle())
        if rc < 0:
            raise self._error(rc, "is_shutdown")
        return bool(rc == 1)

    @property
    def unfinished_tasks(self) -> int:
        """Messages put and not yet marked done with ``task_done()``
        (``IncompatibleQueueError`` on a legacy queue, which keeps no task
        count)."""
        count = c_uint64()
        rc = _lib.unfinished_tasks_checked(self._live_handle(), ctypes.byref(count))
        if rc:
            raise self._error(rc, "unfinished_tasks")
        return int(count.value)

    def attached_processes(self) -> int:
        """Live processes that have the queue open (kernel ``flock`` liveness)."""
        rc = _lib.attached_processes(self._live_handle())
        if rc < 0:
            raise self._error(rc, "attached_processes")
        return int(rc)

    # ------------------------------------------------------------ shutdown, tasks

    def shutdown(self, immediate: bool = False) -> None:
        """Shuts the queue down for every process, as Python 3.13's
        ``queue.Queue.shutdown``: later puts raise ``ShutDown``; gets return
        what is queued, then raise ``ShutDown``; blocked callers wake up.
        ``immediate=True`` also discards what is queued, marking each
        discarded item done so that ``join()`` returns (what a stopped
        consumer holds the queue's read lock over stays queued: the drain
        never waits for it)."""
        handle = self._live_handle()
        rc = _lib.shutdown(handle)
        if rc < 0:
            raise self._error(rc, "shutdown")
        if not immediate:
            return
        rx = self._receiver()
        buf, addr, cap = rx.buf, rx.addr, rx.cap
        while True:
            rc = _get_msg(handle, addr, cap, rx.length_addr, 0)
            if rc == RB_OK:
                # Fails only if others marked more done than were taken.
                _lib.task_done(handle)
            elif rc == RB_ERR_BUFFER_TOO_SMALL:
                cap = rx.length.value
                buf = ctypes.create_string_buffer(cap)
                addr = ctypes.addressof(buf)
            else:
                try:
                    self._retry(rc, _GET, False, None, "shutdown")
                except (Empty, ShutDown):
                    return

    def task_done(self) -> None:
        """Marks one received item as processed (``queue.Queue.task_done``),
        counted across processes. ValueError if called more times than items
        were received."""
        rc = _lib.task_done(self._live_handle())
        if rc:
            if rc == RB_ERR_INVALID_ARG and self._handle is not None:
                raise ValueError("task_done() called too many times")
            raise self._error(rc, "task_done")

    def join(self, timeout: Optional[float] = None) -> bool:
        """Blocks until every item ever put (by any process) was marked done
        with ``task_done()``. With a ``timeout`` (seconds), returns False if
        it passed first; otherwise returns True. Ctrl-C interrupts it."""
        if timeout is not None and timeout < 0:
            raise ValueError(_NEGATIVE_TIMEOUT)
        deadline = None if timeout is None else _monotonic() + timeout
        wait_ns = _SLICE_NS if timeout is None else int(min(timeout, WAIT_SLICE) * 1e9)
        while True:
            rc = _lib.join(self._live_handle(), wait_ns)
            if rc == RB_OK:
                return True
            wait_ns = self._retry(rc, _JOIN, True, deadline, "join")
            if wait_ns < 0:
                return False

    # ------------------------------------------------------------ info

    def get_reference(self) -> SageQueueRef:
        """A picklable reference to this queue (``SageQueueRef``). As the
        legacy wrapper did, this increments the queue's C reference count."""
        ptr = _lib.get_ref(self._live_handle())
        if not ptr:
            raise self._error(_lib.last_error(), "get_reference")
        try:
            ref = ptr.contents
            name = _decode_name(ref.name)
            size = int(ref.size)
            creator_pid = int(ref.creator_pid)
        finally:
            _lib.release_ref(ptr)
        return SageQueueRef(name=name, size=size, auto_cleanup=self.auto_cleanup, creator_pid=creator_pid,
                            host_id=host_id(), host_name=host_name())

    def get_stats(self) -> Dict[str, Union[int, float]]:
        """Statistics: the legacy keys (buffer_size, available_read,
        available_write, readers, writers, ref_count, total_bytes_written,
        total_bytes_read, utilization), ``message_count``, and every field
        of ``ring_buffer_stats_ex_t`` (version, attached_processes,
        messages_in/out/queued, sleeping producers/consumers, waits,
        wakeups, owner_died_recoveries, high_water_bytes, tasks_done,
        shutdown, reserved)."""
        stats = self._stats_ex()
        result: Dict[str, Union[int, float]] = {
            field[0]: getattr(stats, field[0]) for field in _lib.RingBufferStatsEx._fields_
        }
        result["message_count"] = self._msg_count()
        return result

    def reset_stats(self) -> None:
        """Zeroes the byte totals and the other statistics."""
        _lib.reset_stats(self._live_handle())

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Closes this handle (idempotent). The queue stays for other
        processes, unless ``auto_cleanup`` is set and no live process has it
        open any more, in which case it is removed."""
        lock = getattr(self, "_close_lock", None)
        if lock is None:  # __init__ failed before _attach
            return
        with lock:
            handle, self._handle = self._handle, None
            if handle is None:
                return
            # Receive buffers and the put arguments hold the handle
            # (ring_buffer_get_args_t, ring_buffer_put_args_t): none is used
            # after the close (a later handle may get the same address).
            self._tls = threading.local()
            self._put_args.rb = None
            aio.close_hub(self)  # async waiters' threads leave the handle first
            if self.auto_cleanup:
                # Removes the object this handle opened, never a newer queue
                # that took the name since (a close, then a remove by name,
                # could). A queue still in use elsewhere stays.
                _lib.close_remove_if_unused(handle)
            else:
                _lib.close(handle)

    def destroy(self) -> None:
        """Closes this handle and removes the queue's name: nobody can open it
        any more (processes that have it open keep working until they close)."""
        self.close()
        _lib.destroy(self._raw_name)

    def __enter__(self) -> "SageQueue":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown, half-built object: stay quiet
            pass

    def __reduce__(self) -> Tuple[Callable[..., "SageQueue"], Tuple[Any, ...]]:
        # By name, never by handle: the receiving process opens its own, if
        # it runs on this machine (the identity travels along).
        if self._handle is None:
            raise self._closed_error()
        return (
            _reattach,
            (type(self), self.name, self.auto_cleanup, self._dumps, self._loads, self._buffer_size_arg,
             host_id(), host_name(), self._pool),
        )

    def __repr__(self) -> str:
        state = "closed" if self._handle is None else f"{self.maxsize} bytes"
        return f"<SageQueue {self.name!r} {state}>"


def _batch_text(text: str, done: int, count: int) -> str:
    return f"{text} (put {done} of {count} items)" if count else text


def _open_error(code: int, context: str) -> BaseException:
    if code == RB_ERR_TIMEOUT:
        # Only a foreign or stopped process holds a queue object's exclusive
        # lock for long (this library holds it for a few system calls).
        return TimeoutError(
            f"{context}: another process has held an exclusive lock on it for over a second "
            "(a tool removing it, or a stopped or foreign process); retry later, or remove the "
            "queue with sage_queue.destroy_queue(name) if it is stale"
        )
    return error_for(code, context)


def _inline_run(sizes: "array.array[int]", alone: List[bool], start: int, ring: int) -> int:
    """How many items from ``start`` go in one put_packed call: the run of
    items that travel inside the ring (not ``alone``), no more than the ring
    could hold at best (at least one)."""
    run = total = 0
    for at in range(start, len(sizes)):
        total += sizes[at]
        if alone[at] or (run and total > ring):
            break
        run += 1
    return max(run, 1)




def _suggest_size(needed: int) -> int:
    size = _lib.RING_BUFFER_MIN_SIZE
    while size < needed + _FRAME + 1:
        size *= 2
    return size


def _reattach(
    cls: "type[SageQueue]",
    name: str,
    auto_cleanup: bool,
    dumps: Optional[Dumps],
    loads: Optional[Loads],
    buffer_size: Optional[int],
    machine: Optional[str] = None,
    machine_name: Optional[str] = None,
    pool: bool = True,
) -> SageQueue:
    """Unpickling: opens the queue by name in this process, which must run
    on the machine the pickle was made on (``QueueUnavailableError``
    otherwise). Pickles made by 1.0 carry no machine and open as before."""
    check_same_host(machine, f"queue {name!r}", machine_name)
    return cls.open(name, auto_cleanup, dumps=dumps, loads=loads, buffer_size=buffer_size, pool=pool)


def _pool_flag(pool: bool) -> int:
    """The open flags for a handle with (``True``) or without the queue's
    pool. With it, medium items (``RING_BUFFER_POOLED_FROM`` bytes or more,
    that fit in the ring) go into a free slot too: this package's gets
    borrow them there (see ``_first_cap``) instead of copying them out of
    the ring."""
    if not isinstance(pool, bool):
        raise TypeError(f"pool must be True or False, not {pool!r}")
    return _lib.RB_OPEN_POOL_MEDIUM if pool else _lib.RB_OPEN_NO_POOL


# ---------------------------------------------------------------- module functions


def create_queue(name: NameLike, maxsize: int = 0, **kwargs: Any) -> SageQueue:
    """Creates the queue ``name`` (or opens it if it exists, as the legacy
    wrapper did; pass ``exclusive=True`` to refuse an existing one)."""
    return SageQueue(name, maxsize, **kwargs)


def open_queue(name: NameLike, **kwargs: Any) -> SageQueue:
    """Opens the existing queue ``name`` (``QueueNotFoundError`` if none)."""
    return SageQueue.open(name, **kwargs)


def destroy_queue(name: NameLike) -> None:
    """Removes the queue ``name`` (no error if it does not exist). Processes
    that have it open keep working until they close it."""
    _lib.destroy(_encode_name(name))


def remove_if_unused(name: NameLike) -> bool:
    """Removes the queue ``name`` only if no live process has it open (the
    kernel's ``flock`` liveness, so crashed programs do not count). True if
    it was removed, False if it is in use; ``QueueNotFoundError`` if there
    is no such queue."""
    raw = _encode_name(name)
    rc = _lib.remove_if_unused(raw)
    if rc < 0:
        raise error_for(rc, f"cannot remove queue {_decode_name(raw)!r}")
    return bool(rc == 1)


def list_queues() -> List[str]:
    """Names of the queues that exist on this machine (objects named
    ``sage_ringbuf_<name>`` in /dev/shm), sorted."""

    prefix = _lib.OBJECT_PREFIX
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    return sorted(entry[len(prefix):] for entry in entries if entry.startswith(prefix) and len(entry) > len(prefix))


# Here rather than in ref.py: a reference opens a SageQueue and a SageQueue
# makes references, so the two live in one module (ref.py re-exports it).
@dataclass(frozen=True)
class SageQueueRef:
    """Reference to the queue ``name``: ``size`` is its ring size in bytes,
    ``creator_pid`` the process that created it, ``auto_cleanup`` whether
    queues opened from this reference remove the queue when they close and
    nobody else has it open. ``host_id`` (and ``host_name``) say which
    machine the queue lives on (``sage_queue.hostid``; None in references
    made by 1.0). It holds no handle: it pickles, travels to another
    process and becomes an open ``SageQueue`` there with ``get_queue()``,
    on the same machine only (``QueueUnavailableError`` elsewhere)."""

    name: str
    size: int
    auto_cleanup: bool = False
    creator_pid: int = 0
    host_id: Optional[str] = None
    host_name: Optional[str] = None

    def get_queue(self, **kwargs: Any) -> SageQueue:
        """Opens the queue this reference names (it must exist:
        ``QueueNotFoundError`` otherwise). Keyword arguments (``dumps``,
        ``loads``, ``buffer_size``) go to ``SageQueue.open``."""
        check_same_host(self.host_id, f"queue {self.name!r}", self.host_name)
        kwargs.setdefault("auto_cleanup", self.auto_cleanup)
        return SageQueue.open(self.name, **kwargs)
