"""``SageQueueRef``: a small, picklable description of a queue.

A reference names a queue; it holds no handle, so it can be pickled, sent to
another process, stored, and turned back into an open ``SageQueue`` there
with ``get_queue()``. ``SageQueue.get_reference()`` builds one from the C
library's ``ring_buffer_ref_t``. The class is defined in ``queue`` (the two
need each other); this module is its public home.
"""

from __future__ import annotations

from .queue import SageQueueRef

__all__ = ["SageQueueRef"]
