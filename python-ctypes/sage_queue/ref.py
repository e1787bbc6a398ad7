"""``SageQueueRef``: a small, picklable description of a queue.

A reference names a queue; it holds no handle, so it can be pickled, sent to
another process, stored, and turned back into an open ``SageQueue`` there
with ``get_queue()``. ``SageQueue.get_reference()`` builds one from the C
library's ``ring_buffer_ref_t``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .queue import SageQueue

__all__ = ["SageQueueRef"]


@dataclass(frozen=True)
class SageQueueRef:
    """Reference to the queue ``name``: ``size`` is its ring size in bytes,
    ``creator_pid`` the process that created it, ``auto_cleanup`` whether
    queues opened from this reference remove the queue when they close and
    nobody else has it open."""

    name: str
    size: int
    auto_cleanup: bool = False
    creator_pid: int = 0

    def get_queue(self, **kwargs: Any) -> "SageQueue":
        """Opens the queue this reference names (it must exist:
        ``QueueNotFoundError`` otherwise). Keyword arguments (``dumps``,
        ``loads``, ``buffer_size``) go to ``SageQueue.open``."""
        from .queue import SageQueue

        kwargs.setdefault("auto_cleanup", self.auto_cleanup)
        return SageQueue.open(self.name, **kwargs)
