"""Gets that take messages from the queue and then fail to unpickle one:
the exception carries what the call took and could not return, so that
nothing is lost (``items_received``, ``payloads_left``)."""

from __future__ import annotations

import pickle
from typing import Any, Callable, List, Optional, Sequence

#: How a queue's raw message becomes its item again.
QUEUE_DECODE = "the queue's decode(payload)"


def keep_undelivered(exc: BaseException, received: List[Any], left: Sequence[Any], decode: str = QUEUE_DECODE) -> None:
    """Attaches to ``exc``, raised while unpickling messages a get already
    took from the queue, what that call took and cannot return:
    ``exc.items_received`` (the items unpickled before the failing one) and
    ``exc.payloads_left`` (the raw messages, as bytes: the failing one
    first, then the rest of the batch). ``decode`` names the call that
    turns one back into its item."""
    payloads = [bytes(p) for p in left]
    try:
        exc.items_received = received  # type: ignore[attr-defined]
        exc.payloads_left = payloads  # type: ignore[attr-defined]
    except AttributeError:  # an exception type without a __dict__: at least say so
        pass
    if not hasattr(exc, "add_note"):  # Python < 3.11
        return
    exc.add_note(
        f"sage_queue: this get had taken {len(payloads)} message(s) from the queue that it could not "
        f"return; none is lost: the {len(received)} item(s) unpickled before are in exc.items_received, "
        f"and the raw messages (this one first) in exc.payloads_left: {decode} of each gives its item "
        "once the cause is fixed"
    )


def decode_each(
    payloads: Sequence[Any],
    decode: Callable[[Any], Any] = pickle.loads,
    into: Optional[List[Any]] = None,
    how: str = "pickle.loads(payload)",
) -> List[Any]:
    """``decode`` of each payload (messages a get took), in order, appended
    to ``into`` (items the call already has; a new list by default), which
    it returns. If one fails, its exception carries ``into`` and the
    payloads from the failing one on (``keep_undelivered``); ``how`` names
    ``decode`` for its note."""
    items: List[Any] = [] if into is None else into
    start = len(items)
    try:
        for payload in payloads:
            items.append(decode(payload))
    except Exception as exc:
        keep_undelivered(exc, items, payloads[len(items) - start :], how)
        raise
    return items
