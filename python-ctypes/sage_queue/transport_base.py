"""Common base of the built-in queue implementations that wrap another queue
object (``local``, ``ray_queue``, ``ray_actor``, ``rpc``).

A wrapper is built as ``cls(descriptor)``, offers ``QueueLike`` plus
``put_nowait``/``get_nowait``/``full`` and batch calls, forwards any other
attribute to the wrapped object (``.queue``), and pickles as its descriptor:
unpickled in another process it resolves the descriptor there, so it reaches
the same queue wherever the transport reaches (and fails clearly where it
does not).
"""

from __future__ import annotations

import math
import time
from queue import Empty, Full
from typing import Any, Callable, Iterable, List, Optional, Tuple

from .descriptor import QueueDescriptor, resolve_descriptor

__all__ = ["QueueAdapter"]

_NEGATIVE_TIMEOUT = "'timeout' must be a non-negative number"


def check_timeout(block: bool, timeout: Optional[float]) -> Optional[float]:
    """``timeout`` validated as ``queue.Queue`` does (ValueError if negative);
    an infinite one becomes None (wait for ever), which every transport
    understands (``queue.Queue`` overflows on ``inf``)."""
    if block and timeout is not None:
        if timeout < 0:
            raise ValueError(_NEGATIVE_TIMEOUT)
        if math.isinf(timeout):
            return None
    return timeout


class QueueAdapter:
    """Base of the wrapping implementations. Subclasses set ``self._queue``
    in ``__init__`` (after calling this one) and may override any method."""

    #: The transport's name (the descriptor's ``queue_type``).
    queue_type = "?"

    def __init__(self, descriptor: QueueDescriptor) -> None:
        self.descriptor = descriptor
        self._queue: Any = None

    @property
    def queue_id(self) -> str:
        """The descriptor's ``queue_id``."""
        return self.descriptor.queue_id

    @property
    def queue(self) -> Any:
        """The wrapped queue object (``queue.Queue``, Ray queue, proxy...)."""
        return self._queue

    # ------------------------------------------------------------ QueueLike

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """As ``queue.Queue.put``."""
        self._queue.put(item, block, check_timeout(block, timeout))

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """As ``queue.Queue.get``."""
        return self._queue.get(block, check_timeout(block, timeout))

    def empty(self) -> bool:
        """Whether no item is queued (a snapshot)."""
        return bool(self._queue.empty())

    def qsize(self) -> int:
        """Items queued (a snapshot)."""
        return int(self._queue.qsize())

    def full(self) -> bool:
        """Whether no item fits now (a snapshot)."""
        return bool(self._queue.full())

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``."""
        self.put(item, False)

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(False)

    # ------------------------------------------------------------ batches

    def put_many(self, items: Iterable[Any], block: bool = True, timeout: Optional[float] = None) -> int:
        """Puts every item, in order, within one overall ``timeout``; returns
        the count. On ``queue.Full``, its ``items_put`` says how many went in
        (as ``SageQueue.put_many``). Transports with a cheaper batch call
        override this."""
        deadline = _deadline(block, timeout)
        done = 0
        for item in items:
            try:
                self.put(item, block, _remaining(deadline))
            except Full as full:
                full.items_put = done  # type: ignore[attr-defined]
                raise
            done += 1
        return done

    def get_many(self, max_items: int, block: bool = True, timeout: Optional[float] = None) -> List[Any]:
        """Waits for one item as ``get`` does, then takes up to ``max_items``
        in all without waiting more."""
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, not {max_items}")
        items = [self.get(block, timeout)]
        while len(items) < max_items:
            try:
                items.append(self.get(False))
            except Empty:
                break
        return items

    # ------------------------------------------------------------ asyncio

    # The wrapped queues (queue.Queue, Ray queues, a manager's proxy) have no
    # wait that leaves the item in place: an awaitable get would have to take
    # the item in a thread or an actor call that a cancellation cannot stop,
    # and lose it. Say so, instead of forwarding to an unsafe look-alike
    # (ray.util.queue.Queue has a get_async that loses items on cancel).

    def _no_async(self, what: str) -> NotImplementedError:
        return NotImplementedError(
            f"{what} is not available on a {self.queue_type!r} queue: that transport cannot wait for an item "
            "without taking it, so an awaited call could lose items when cancelled. Awaitable, "
            "cancellation-safe calls (get_async, put_async, get_many_async, put_many_async, join_async, "
            "async for) exist on shared-memory queues: descriptors of type 'shm' or 'sage_queue' (SageQueue)."
        )

    async def get_async(self, timeout: Optional[float] = None) -> Any:
        """Not available here (see ``_no_async``)."""
        raise self._no_async("get_async")

    async def put_async(self, item: Any, timeout: Optional[float] = None) -> None:
        """Not available here (see ``_no_async``)."""
        raise self._no_async("put_async")

    async def get_many_async(self, max_items: int, timeout: Optional[float] = None) -> List[Any]:
        """Not available here (see ``_no_async``)."""
        raise self._no_async("get_many_async")

    async def put_many_async(self, items: Iterable[Any], timeout: Optional[float] = None) -> int:
        """Not available here (see ``_no_async``)."""
        raise self._no_async("put_many_async")

    async def join_async(self, timeout: Optional[float] = None) -> bool:
        """Not available here (see ``_no_async``)."""
        raise self._no_async("join_async")

    def __aiter__(self) -> Any:
        raise self._no_async("async for")

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Releases this handle's resources (the queue itself stays)."""

    def __enter__(self) -> "QueueAdapter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> Tuple[Callable[..., Any], Tuple[Any, ...]]:
        # By descriptor: the receiving process resolves it for itself.
        return (resolve_descriptor, (self.descriptor,))

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes this class lacks: forward the wrapped
        # queue's extras (task_done, shutdown, ...). Private names are not
        # forwarded, which also keeps a half-built object from recursing.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._queue, name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.queue_type} {self.queue_id!r}>"


def _deadline(block: bool, timeout: Optional[float]) -> Optional[float]:
    check_timeout(block, timeout)
    if not block or timeout is None:
        return None
    return time.monotonic() + timeout


def _remaining(deadline: Optional[float]) -> Optional[float]:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())
