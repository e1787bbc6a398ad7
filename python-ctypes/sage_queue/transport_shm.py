"""The ``shm`` and ``sage_queue`` queue types: a ``SageQueue`` (this
library's shared-memory queue) reached by name.

``shm`` descriptors name the queue explicitly (``metadata["shm_name"]``);
``sage_queue`` descriptors carry the name derived from their ``queue_id``
(``metadata["queue_name"]``, see ``descriptor.sage_queue_name``). Both open
the queue, or create it with a ring of ``metadata["maxsize"]`` bytes.

The resolved object *is* a ``SageQueue`` (a subclass), so nothing stands
between SAGE operators and the C library on the hot path, and the whole
SageQueue API (``put_many``, ``shutdown``, ``task_done``...) is there.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

from . import _lib
from .descriptor import DEFAULT_SHM_MAXSIZE, QueueDescriptor, metadata_value, resolve_descriptor
from .errors import InvalidNameError
from .hostid import check_same_host, host_id, host_name
from .queue import SageQueue, _check_maxsize, _encode_name

__all__ = ["DescribedSageQueue", "check_name", "check_maxsize", "is_valid_name", "host_metadata", "MAX_NAME_BYTES"]

#: Longest queue name in bytes (the C name field holds it and a NUL).
MAX_NAME_BYTES = _lib.MAX_NAME_LEN - 1


def check_name(name: object) -> None:
    """``InvalidNameError`` (or ``TypeError``) unless ``name`` is a valid
    queue name (for the descriptor factories)."""
    _encode_name(name)


def check_maxsize(maxsize: object) -> int:
    """The ring size in bytes ``maxsize`` asks for (0: the default)."""
    return _check_maxsize(maxsize)


def is_valid_name(name: str) -> bool:
    """Whether the C library accepts ``name`` as a queue name."""
    try:
        raw = _encode_name(name)
    except InvalidNameError:
        return False
    return bool(_lib.check_name(raw) == 0)


def host_metadata() -> Dict[str, str]:
    """The metadata that ties a descriptor to this machine: ``host_id``
    (``sage_queue.hostid.host_id()``) and ``host_name`` (for messages)."""
    return {"host_id": host_id(), "host_name": host_name()}


def check_descriptor_host(descriptor: QueueDescriptor) -> None:
    """``QueueUnavailableError`` naming both machines if ``descriptor``
    was made on another machine; descriptors without ``host_id`` (1.0)
    pass."""
    recorded = descriptor.metadata.get("host_id")
    name = descriptor.metadata.get("host_name")
    check_same_host(
        recorded if isinstance(recorded, str) else None,
        f"{descriptor.queue_type} queue {descriptor.queue_id!r}",
        name if isinstance(name, str) else None,
    )


#: queue_type -> (metadata key of the SageQueue name, factory to mention).
_NAME_KEYS = {
    "shm": ("shm_name", "QueueDescriptor.create_shm_queue(queue_id, shm_name, maxsize)"),
    "sage_queue": ("queue_name", "QueueDescriptor.create_sage_queue(queue_id, maxsize)"),
    "auto": ("queue_name", "QueueDescriptor.create_auto_queue(queue_id, maxsize)"),
}


class DescribedSageQueue(SageQueue):
    """A SageQueue opened (or created) from an ``shm`` or ``sage_queue``
    descriptor; ``.descriptor`` is that descriptor, and pickling sends it
    rather than the handle."""

    #: None only on objects made by SageQueue.open() on this class, which
    #: then behave as a plain SageQueue.
    descriptor: Optional[QueueDescriptor] = None

    def __init__(self, descriptor: QueueDescriptor) -> None:
        key, factory = _NAME_KEYS.get(descriptor.queue_type, _NAME_KEYS["shm"])
        name = metadata_value(descriptor, key, str, factory)
        maxsize = metadata_value(descriptor, "maxsize", int, factory, default=DEFAULT_SHM_MAXSIZE)
        auto_cleanup = metadata_value(descriptor, "auto_cleanup", bool, factory, default=False)
        metadata_value(descriptor, "host_id", str, factory, default=None)  # a string when present
        # Before anything is opened or created: elsewhere the name is another queue.
        check_descriptor_host(descriptor)
        super().__init__(name, maxsize, auto_cleanup)
        self.descriptor = descriptor

    @property
    def queue_id(self) -> str:
        """The descriptor's ``queue_id`` (the queue's name without one)."""
        return self.descriptor.queue_id if self.descriptor is not None else self.name

    def __reduce__(self) -> Tuple[Callable[..., Any], Tuple[Any, ...]]:
        if self.descriptor is None:
            return super().__reduce__()
        if self._handle is None:
            raise self._closed_error()
        descriptor = self.descriptor
        if "host_id" not in descriptor.metadata:
            # A 1.0 descriptor: this queue is open here, so it lives here.
            descriptor = QueueDescriptor(descriptor.queue_id, descriptor.queue_type,
                                         {**descriptor.metadata, **host_metadata()}, descriptor.created_timestamp)
        return (resolve_descriptor, (descriptor,))

    def __repr__(self) -> str:
        if self.descriptor is None:
            return super().__repr__()
        return f"<DescribedSageQueue {self.descriptor.queue_type} {self.queue_id!r} -> {super().__repr__()}>"
