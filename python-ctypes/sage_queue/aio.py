"""asyncio for ``SageQueue``: awaitable, cancellation-safe operations.

``SageQueue.get_async``, ``put_async``, ``get_many_async``,
``put_many_async``, ``join_async`` and ``async for item in q`` are the
functions of this module (the methods are these functions).

How it works, and why it is safe to cancel:

* **Nothing is taken while waiting.** A coroutine first tries its
  operation once (timeout 0) on the loop's thread. If it cannot complete,
  the coroutine registers a future with the queue's *hub* and awaits it.
  A waiter thread of the hub blocks in ``ring_buffer_wait_readable`` (or
  ``_wait_writable``, or ``ring_buffer_join``), which wait on the queue's
  futexes without consuming or reserving anything, with the GIL released;
  when the queue becomes ready it wakes every registered future through
  ``loop.call_soon_threadsafe``. Each coroutine then tries once more on
  the loop's thread. So an item is only ever taken (or put) by a
  synchronous call inside the coroutine, never while it is suspended: a
  task cancelled at its ``await`` (directly, by ``wait_for``, by a task
  group) has taken nothing and put nothing. ``put_async`` either put the
  whole item (it returned) or nothing (it raised, ``CancelledError``
  included). ``put_many_async`` puts in order; if it is interrupted after
  putting some items, the exception (``CancelledError``, ``queue.Full``)
  carries ``items_put``: the first ``items_put`` items were put, the rest
  were not.
* **Races are retried.** Readiness is a snapshot: another consumer (in any
  process) may take the message first; the coroutine then finds nothing
  and waits again.
* **Prompt.** A call that finds nothing (no room) first waits up to
  ``SPIN`` (50 us) in the C wait on the loop's thread, as the blocking
  calls spin briefly before they sleep: a peer process often answers
  within microseconds, and the hand-off through a waiter thread and the
  loop's self-pipe costs tens of them.
* **No polling, no blocked loop.** Waiter threads sleep in the kernel; one
  per queue object, process and kind of wait (readable, writable, join),
  started on demand, shared by every coroutine (of any event loop) waiting
  on that queue object. Their C calls last at most ``WAIT_SLICE`` seconds,
  so ``close()`` is prompt; a thread exits once it has had nobody to serve
  for ``IDLE_LINGER`` seconds, and at ``close()``. They are daemon threads.
* **Same exceptions as the blocking calls:** ``queue.Empty`` and
  ``queue.Full`` on timeout, ``ShutDown``, ``MessageTooLargeError``,
  ``ClosedQueueError`` (also for coroutines waiting when the queue object
  is closed), ...

Limits: a coroutine's try-once call runs on the loop's thread, and like
every try-once call it may wait up to 100 ms for a lock held by a peer that
is stopped (SIGSTOP, debugger) inside an operation on the same side. A
writer waiting for room waits for the smallest item any coroutine waits to
put; an item smaller still that starts waiting meanwhile is woken by the
next change of room or at the end of the current slice (``WAIT_SLICE``).
"""

from __future__ import annotations

import array
import asyncio
import ctypes
import itertools
import os
import threading
from queue import Empty
from typing import Any, AsyncIterator, Callable, Dict, Iterable, List, Optional, Tuple

from . import _lib, _oob
from ._status import (
    RB_ERR_EMPTY,
    RB_ERR_FULL,
    RB_ERR_INVALID_ARG,
    RB_ERR_SHUTDOWN,
    RB_ERR_TIMEOUT,
    RB_OK,
)
from ._undelivered import QUEUE_DECODE, decode_each
from .errors import ShutDown

__all__ = [
    "get_async",
    "put_async",
    "get_many_async",
    "put_many_async",
    "join_async",
    "QueueAsyncIterator",
    "WAIT_SLICE",
    "IDLE_LINGER",
    "SPIN",
]

#: Longest single C wait of a waiter thread, in seconds: bounds how long
#: ``close()`` waits for the hub's threads.
WAIT_SLICE = 0.1
#: How long an idle waiter thread stays for the next waiter before exiting.
IDLE_LINGER = 1.0
#: How long a coroutine that found nothing (no room) waits on the loop's
#: thread, in a C wait (spin, then futex), before it hands the wait to a
#: waiter thread, in seconds: a peer process often answers within
#: microseconds, and the hand-off through a thread and the loop's
#: self-pipe costs tens of them (measured on a 2-core machine: a round
#: trip with another process of 4.6-7.5 us with it, 100-150 us without).
#: This is the longest a waiting call holds the loop's thread.
SPIN = 50e-6

_SLICE_NS = int(WAIT_SLICE * 1e9)
_SPIN_NS = int(SPIN * 1e9)
_NEGATIVE_TIMEOUT = "'timeout' must be a non-negative number (seconds) or None"

# The functions below take the SageQueue as ``q: Any``: sage_queue.queue
# imports this module (its methods are these functions), so this one cannot
# import it back, not even for type checking (the package has no import
# cycles). What they use of it: the blocking calls, its handle and codec,
# and _retry with the operation kinds _AIO_GET/_AIO_PUT it exposes.

# The kinds of wait, each served by its own thread.
_READ, _WRITE, _JOIN = "readable", "writable", "join"


# ---------------------------------------------------------------- the hub


def _wait_readable(handle: int, _arg: int) -> int:
    return int(_lib.wait_readable(handle, _SLICE_NS))


def _wait_writable(handle: int, length: int) -> int:
    return int(_lib.wait_writable(handle, length, _SLICE_NS))


def _wait_join(handle: int, _arg: int) -> int:
    return int(_lib.join(handle, _SLICE_NS))


_C_WAIT: Dict[str, Callable[[int, int], int]] = {
    _READ: _wait_readable,
    _WRITE: _wait_writable,
    _JOIN: _wait_join,
}

#: One registration: the future's loop and the wait's argument (a length).
_Entry = Tuple[asyncio.AbstractEventLoop, int]


class _Hub:
    """The waiter threads of one queue object in one process, and the
    futures waiting on them. Futures are created and awaited on their
    loops; the threads only wake them (``call_soon_threadsafe``)."""

    def __init__(self, handle: int) -> None:
        self.pid = os.getpid()
        self._handle = handle
        self._cond = threading.Condition(threading.Lock())
        self._pending: Dict[str, Dict["asyncio.Future[int]", _Entry]] = {k: {} for k in _C_WAIT}
        self._threads: Dict[str, threading.Thread] = {}
        self._closed = False

    def register(self, kind: str, arg: int) -> "asyncio.Future[int]":
        """A future (of the running loop) that gets the C wait's status once
        the queue may be ready; already done (RB_ERR_INVALID_ARG) if the
        hub is closed."""
        loop = asyncio.get_running_loop()
        fut: "asyncio.Future[int]" = loop.create_future()
        with self._cond:
            if self._closed:
                fut.set_result(RB_ERR_INVALID_ARG)
                return fut
            self._pending[kind][fut] = (loop, arg)
            if kind in self._threads:
                self._cond.notify_all()
            else:
                thread = threading.Thread(
                    target=self._serve, args=(kind,), name=f"sage_queue-aio-{kind}", daemon=True
                )
                self._threads[kind] = thread
                thread.start()
        return fut

    def forget(self, kind: str, fut: "asyncio.Future[int]") -> None:
        with self._cond:
            self._pending[kind].pop(fut, None)

    def _serve(self, kind: str) -> None:
        """A waiter thread: sleeps in the C wait while anybody waits, wakes
        every waiting future when the wait ends other than by its slice."""
        c_wait = _C_WAIT[kind]
        pending = self._pending[kind]
        while True:
            with self._cond:
                while not pending and not self._closed:
                    if not self._cond.wait(IDLE_LINGER) and not pending:
                        break
                # Waits of loops closed without cancelling them (loop.stop)
                # can never be resumed: drop them, or they would keep this
                # thread waiting for nobody.
                for fut in [f for f, (loop, _) in pending.items() if loop.is_closed()]:
                    del pending[fut]
                if self._closed or not pending:
                    del self._threads[kind]
                    return
                arg = min(entry[1] for entry in pending.values())
            rc = c_wait(self._handle, arg)  # GIL released by ctypes
            if rc == RB_ERR_TIMEOUT:
                continue
            with self._cond:
                woken = list(pending.items())
                pending.clear()
            _wake(woken, rc)

    def close(self) -> None:
        """Wakes every waiting future (their coroutines find the queue
        closed) and waits for the threads to leave their C calls (at most
        one slice), so the handle can be closed after this returns."""
        with self._cond:
            self._closed = True
            woken = [item for pending in self._pending.values() for item in pending.items()]
            for pending in self._pending.values():
                pending.clear()
            threads = list(self._threads.values())
            self._cond.notify_all()
        _wake(woken, RB_ERR_INVALID_ARG)
        current = threading.current_thread()
        for thread in threads:
            if thread is not current:
                # Their C calls end within a slice (no locks are taken in
                # them); the bound only guards against the unforeseen.
                thread.join(10.0)


def _wake(woken: List[Tuple["asyncio.Future[int]", _Entry]], rc: int) -> None:
    by_loop: Dict[asyncio.AbstractEventLoop, List["asyncio.Future[int]"]] = {}
    for fut, (loop, _arg) in woken:
        by_loop.setdefault(loop, []).append(fut)
    for loop, futs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, futs, rc)
        except RuntimeError:  # that loop is closed: nobody awaits there any more
            pass


def _resolve(futs: List["asyncio.Future[int]"], rc: int) -> None:
    for fut in futs:
        if not fut.done():  # cancelled, or expired, meanwhile
            fut.set_result(rc)


def _hub(q: Any) -> _Hub:
    hub: Optional[_Hub] = q.__dict__.get("_aio_hub")
    if hub is None or hub.pid != os.getpid():  # none yet, or inherited through fork
        handle = q._live_handle().value or 0
        with q._close_lock:
            if q._handle is None:  # closed meanwhile
                raise q._closed_error()
            hub = q.__dict__.get("_aio_hub")
            if hub is None or hub.pid != os.getpid():
                hub = q.__dict__["_aio_hub"] = _Hub(handle)
    return hub


def close_hub(q: Any) -> None:
    """Called by ``SageQueue.close()`` before it closes the handle (a hub
    inherited through fork is left alone: its threads are not in this
    process, and its lock may have been held by one of them)."""
    hub: Optional[_Hub] = q.__dict__.get("_aio_hub")
    if hub is not None and hub.pid == os.getpid():
        hub.close()


def _expire(fut: "asyncio.Future[int]") -> None:
    if not fut.done():
        fut.set_result(RB_ERR_TIMEOUT)


async def _wait(q: Any, kind: str, arg: int, deadline: Optional[float]) -> int:
    """Waits until the queue may be ready for ``kind``: the C wait's status,
    or RB_ERR_TIMEOUT once ``deadline`` (loop time; None: none) passed."""
    loop = asyncio.get_running_loop()
    hub = _hub(q)
    fut = hub.register(kind, arg)
    timer = None if deadline is None else loop.call_at(deadline, _expire, fut)
    try:
        return await fut
    finally:
        # Also on cancellation: nothing was taken, only the registration goes.
        if timer is not None:
            timer.cancel()
        hub.forget(kind, fut)


# ---------------------------------------------------------------- arguments


def _deadline(timeout: Optional[float]) -> Optional[float]:
    """Loop-time deadline for ``timeout`` seconds (None: wait for ever)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if timeout < 0:
        raise ValueError(_NEGATIVE_TIMEOUT)
    if timeout == float("inf"):
        return None
    return asyncio.get_running_loop().time() + timeout


def _expired(deadline: Optional[float]) -> bool:
    return deadline is not None and asyncio.get_running_loop().time() >= deadline


# ---------------------------------------------------------------- get


async def get_async(q: Any, timeout: Optional[float] = None) -> Any:
    """Removes and returns an item, awaiting one as ``get`` blocks for one.

    ``timeout`` None waits as long as it takes, a number at most that many
    seconds (then ``queue.Empty``; 0 tries once). After ``shutdown()``,
    returns what is left, then raises ``ShutDown``. Cancelling the awaiting
    task takes nothing from the queue: the item is only taken when the
    coroutine resumes."""
    return await _get(q, timeout, lambda: _try_get(q), "get_async")


async def get_many_async(q: Any, max_items: int, timeout: Optional[float] = None) -> List[Any]:
    """``get_many`` awaited: waits for one item as ``get_async`` does, then
    returns up to ``max_items`` (at least one) taken in one C call."""
    def take() -> Any:
        try:
            return q.get_many(max_items, False)
        except Empty:
            return _NOTHING

    return await _get(q, timeout, take, "get_many_async")  # type: ignore[no-any-return]


#: What a try-once get returns when nothing is queued (cheaper than raising
#: and catching Empty on the path every waiting get takes).
_NOTHING = object()


def _try_get(q: Any) -> Any:
    """``q.get(False)``, returning ``_NOTHING`` instead of raising Empty."""
    rx = q._receiver()
    rc = _lib.get_msg(q._handle, rx.addr, rx.cap_arg, rx.length_addr, 0)
    if rc == RB_OK:
        payload = rx.view[: rx.length.value]
        # pickle copies what it keeps (an item with out-of-band buffers gets
        # copies of them); a custom loads gets a copy. Taken from the queue:
        # a failure's exception carries it (not lost).
        return decode_each([payload], q.decode, how=QUEUE_DECODE)[0]
    if rc == RB_ERR_EMPTY:
        return _NOTHING
    # Anything else (a message larger than the buffer, shutdown, a closed
    # queue, an error) as get() handles it; nothing was consumed.
    return q.get(False)


async def _get(q: Any, timeout: Optional[float], take: Callable[[], Any], what: str) -> Any:
    deadline = _deadline(timeout)
    spun = False  # once per round: a spin that saw readiness is not repeated
    while True:
        try:
            item = take()
        except TimeoutError:
            # Another consumer held the lock for the whole grace of a
            # try-once call; wait and try again, as get() does.
            item = _NOTHING
        if item is not _NOTHING:
            return item
        if _expired(deadline):  # timeout 0 (try once), or time is up
            _timed_out(q, q._AIO_GET, what)
        if not spun and _lib.wait_readable(q._handle, _SPIN_NS) != RB_ERR_TIMEOUT:
            spun = True  # ready (or failed): the next try takes (or reports) it
            continue
        spun = False
        rc = await _wait(q, _READ, 0, deadline)
        if rc == RB_ERR_TIMEOUT and _expired(deadline):
            item = take()  # a last try
            if item is _NOTHING:
                _timed_out(q, q._AIO_GET, what)
            return item
        if rc not in (RB_OK, RB_ERR_TIMEOUT, RB_ERR_SHUTDOWN):
            # The wait failed (closed, corrupt...): the try says how, as the
            # blocking call would; if it finds nothing, report the wait's.
            item = take()
            if item is _NOTHING:
                raise q._error(rc, what)
            return item


# ---------------------------------------------------------------- put


async def put_async(q: Any, item: Any, timeout: Optional[float] = None) -> None:
    """Puts ``item``, awaiting room as ``put`` blocks for it.

    ``timeout`` None waits as long as it takes, a number at most that many
    seconds (then ``queue.Full``; 0 tries once). The item is serialised
    first (a pickling error leaves the queue untouched); an item that can
    never fit raises ``MessageTooLargeError`` at once; ``ShutDown`` after
    ``shutdown()``. The put itself is one C call when the coroutine runs:
    if ``put_async`` returned, the whole item was put; if it raised
    (``CancelledError`` included), nothing was."""
    data = q._payload(item)
    try:
        # Out-of-band buffers or large bytes (see _oob) come as pieces:
        # written once, straight into shared memory, as put() writes them.
        await _put_one(q, data, None if type(data) is bytes else data.vectors(), timeout)
    finally:
        _oob.release_all([data])


async def _put_one(q: Any, data: Any, vectors: Optional[Tuple[Any, Any, int]], timeout: Optional[float]) -> None:
    """Puts one message: ``data`` (bytes) by put_msg, or its pieces
    (``vectors``) by put_msgv, awaiting room."""
    size = len(data)
    q._check_sendable(size, "put_async")
    deadline = _deadline(timeout)
    spun = False
    while True:
        if vectors is None:
            rc = _lib.put_msg(q._handle, data, size, 0)
        else:
            rc = _lib.put_msgv(q._handle, vectors[0], vectors[1], vectors[2], 0)
        if rc == RB_OK:
            return
        _check_put(q, rc, size, "put_async", deadline)
        if not spun and _lib.wait_writable(q._handle, size, _SPIN_NS) != RB_ERR_TIMEOUT:
            spun = True
            continue
        spun = False
        _check_wait(q, await _wait(q, _WRITE, size, deadline), "put_async")


def _check_put(q: Any, rc: int, size: int, what: str, deadline: Optional[float],
               done: int = 0, count: int = 0) -> None:
    """After a try-once put that put nothing: returns if waiting for room
    makes sense, raises what the blocking put would otherwise (its texts,
    and ``items_put`` on ``Full``/``ShutDown``: ``done`` of ``count``)."""
    if rc == RB_ERR_FULL or rc == RB_ERR_TIMEOUT:
        # TIMEOUT: another producer held the lock for the whole grace of a
        # try-once call; wait and try again, as put() does.
        if not _expired(deadline):
            return
        rc = RB_ERR_TIMEOUT
    q._retry(rc, q._AIO_PUT, True, _PASSED, what, size=size, done=done, count=count)


#: A deadline that has passed, for SageQueue._retry (monotonic seconds).
_PASSED = float("-inf")


def _timed_out(q: Any, kind: int, what: str) -> None:
    """Raises what the blocking call raises when its timeout passed."""
    q._retry(RB_ERR_TIMEOUT, kind, True, _PASSED, what)


def _check_wait(q: Any, rc: int, what: str) -> None:
    """After a wait for room: raises a failed wait (corrupt, ...) at once,
    so that a wait that keeps failing cannot make the coroutine spin.
    Shutdown and closing are left to the next try, which reports them as
    the blocking put would."""
    if rc not in (RB_OK, RB_ERR_TIMEOUT, RB_ERR_SHUTDOWN, RB_ERR_INVALID_ARG):
        raise q._error(rc, what)


async def put_many_async(q: Any, items: Iterable[Any], timeout: Optional[float] = None) -> int:
    """``put_many`` awaited: puts every item in order, as many per C call as
    fit, awaiting room in between; returns how many (all). Every item is
    serialised and size-checked before anything is put, except in batches
    that ``put_many`` puts one at a time (items that cannot fail to
    serialise, 32 KiB or more on average), each put as soon as it is made
    (a size check can then stop it part-way). If it ends early
    (``queue.Full`` at the timeout, ``CancelledError``, ``ShutDown``...),
    the exception's ``items_put`` says how many of the first items were put
    (the rest were not)."""
    if type(items) is not list:
        items = list(items)
    if q._puts_each(items):
        return await _put_each(q, items, timeout)
    payloads: List[Any] = []
    try:
        for item in items:
            payloads.append(q._payload(item))
        return await _put_payloads(q, payloads, timeout)
    finally:
        _oob.release_all(payloads)


async def _put_each(q: Any, items: List[Any], timeout: Optional[float]) -> int:
    """``put_many_async`` of items that cannot fail to serialise, large on
    average (``SageQueue._puts_each``): each made and put in turn, as
    ``put_many`` puts them. Made all first, a batch of 64 KiB arrays kept
    the consumer waiting long enough to sleep once per batch (1 -> 1,
    batches of 16: 106k items/s, against 150k with ``put_async``)."""
    count = len(items)
    deadline = _deadline(timeout)
    done = 0
    try:
        for item in items:
            payload = q._payload(item)
            try:
                size = len(payload)
                q._check_sendable(size, "put_many_async")
                spun = False
                while True:
                    if type(payload) is bytes:
                        rc = _lib.put_msg(q._handle, payload, size, 0)
                    else:
                        rc = _lib.put_msgv(q._handle, *payload.vectors(), 0)
                    if rc == RB_OK:
                        break
                    spun = await _await_room(q, rc, size, deadline, done, count, spun)
            finally:
                _oob.release_all([payload])
            done += 1
    except BaseException as exc:
        exc.items_put = done  # type: ignore[attr-defined]
        raise
    return count


async def _put_payloads(q: Any, payloads: List[Any], timeout: Optional[float]) -> int:
    count = len(payloads)
    if count == 0:
        return 0
    q._check_sendable(max(map(len, payloads)), "put_many_async")
    sizes = array.array("I", map(len, payloads))
    # Pieces (out-of-band buffers, large bytes) go one put_msgv each.
    inline = [type(p) is bytes for p in payloads]
    deadline = _deadline(timeout)
    # The bytes back to back, as put_many does: one bytes object and a
    # uint32 array, walked by address (no copies).
    joined = b"".join(p for p, byte in zip(payloads, inline) if byte)
    base = ctypes.cast(ctypes.c_char_p(joined), ctypes.c_void_p).value or 0
    lens_base = sizes.buffer_info()[0]
    offsets = [0, *itertools.accumulate(size if byte else 0 for size, byte in zip(sizes, inline))]
    done = 0
    spun = False
    try:
        while done < count:
            if inline[done]:
                batch = _fitting(sizes, inline, done, q.maxsize)
                rc = _lib.put_packed(q._handle, base + offsets[done], lens_base + 4 * done, batch, 0)
            else:
                rc = _lib.put_msgv(q._handle, *payloads[done].vectors(), 0)
                if rc == RB_OK:
                    rc = 1
            if rc > 0:
                done += rc
                continue
            spun = await _await_room(q, rc, sizes[done], deadline, done, count, spun)
    except BaseException as exc:
        exc.items_put = done  # type: ignore[attr-defined]
        raise
    finally:
        del joined  # kept alive until here: the C calls read its bytes
    return count


async def _await_room(
    q: Any, rc: int, size: int, deadline: Optional[float], done: int, count: int, spun: bool
) -> bool:
    """After a try-once put of ``size`` bytes that put nothing (``rc``):
    raises as ``put_many`` would (``done`` of ``count`` items put), or waits
    until there may be room: in a short C wait on the loop's thread, unless
    the previous wait (``spun``) was one and found nothing, then through a
    waiter thread. Returns whether this wait was the short one."""
    _check_put(q, rc, size, "put_many_async", deadline, done, count)
    if not spun and _lib.wait_writable(q._handle, size, _SPIN_NS) != RB_ERR_TIMEOUT:
        return True
    _check_wait(q, await _wait(q, _WRITE, size, deadline), "put_many_async")
    return False


def _fitting(sizes: "array.array[int]", inline: List[bool], start: int, ring: int) -> int:
    """How many payloads from ``start`` could fit in an empty ring of
    ``ring`` bytes at best (at least one), stopping before pieces: a bigger
    batch could never go in whole, and its byte total must stay below
    4 GiB."""
    total = n = 0
    for at in range(start, len(sizes)):
        total += sizes[at] + _lib.RING_BUFFER_FRAME_PREFIX
        if n and (total >= ring or not inline[at]):
            break
        n += 1
    return n


# ---------------------------------------------------------------- join


async def join_async(q: Any, timeout: Optional[float] = None) -> bool:
    """``join`` awaited: waits until every item ever put (by any process)
    was marked done with ``task_done()``. Returns True, or False if
    ``timeout`` seconds passed first. Cancelling it changes nothing."""
    deadline = _deadline(timeout)
    while True:
        rc = _lib.join(q._handle, 0)
        if rc == RB_OK:
            return True
        if rc != RB_ERR_TIMEOUT:
            raise q._error(rc, "join_async")
        if _expired(deadline):
            return False
        rc = await _wait(q, _JOIN, 0, deadline)
        if rc == RB_OK:
            return True  # the waiter saw every task done


# ---------------------------------------------------------------- async for


class QueueAsyncIterator:
    """``async for item in q``: ``get_async()`` until the queue is shut down
    and drained (then the loop ends; other errors propagate)."""

    def __init__(self, q: Any) -> None:
        self._q = q

    def __aiter__(self) -> "QueueAsyncIterator":
        return self

    async def __anext__(self) -> Any:
        try:
            return await get_async(self._q)
        except ShutDown:
            raise StopAsyncIteration from None


def aiter_queue(q: Any) -> AsyncIterator[Any]:
    """``SageQueue.__aiter__``."""
    return QueueAsyncIterator(q)
