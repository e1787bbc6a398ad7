"""Queue descriptors: one serialisable description for queues of any transport.

SAGE operators run as threads, processes and Ray actors; they hand each other
queues as :class:`QueueDescriptor` objects (or their JSON), and each side
turns a descriptor back into a live queue with :func:`resolve_descriptor`::

    from sage_queue.descriptor import QueueDescriptor, resolve_descriptor

    desc = QueueDescriptor.create_sage_queue("jobs")   # shared memory
    text = desc.to_json()                              # send it anywhere
    q = resolve_descriptor(QueueDescriptor.from_json(text))
    q.put({"id": 1}); q.get()

Built-in queue types (each a real implementation, imported only when used):

============== =================================================== ==========================
type           what resolves                                       reaches
============== =================================================== ==========================
``local``      an in-process ``queue.Queue`` (one per queue_id)    threads of the creating
                                                                   process only
``shm``        ``SageQueue`` (libring_buffer) named ``shm_name``   processes on this machine
``sage_queue`` ``SageQueue`` named after ``queue_id``              processes on this machine
``ray_queue``  ``ray.util.queue.Queue`` behind a named Ray actor   every worker of the cluster
``ray_actor``  a queue inside a named Ray actor                    every worker of the cluster
``rpc``        a ``multiprocessing.managers`` server on loopback   processes that hold the
               with an auth key (``start_rpc_queue_server``)       descriptor (auth key)
``auto``       ``SageQueue`` on its machine; elsewhere a Ray       every node of the Ray
               endpoint through a bridge actor (``ray_bridge``)    cluster
============== =================================================== ==========================

``maxsize`` means what the transport means by it: ring **bytes** for ``shm``,
``sage_queue`` and ``auto`` (default :data:`DEFAULT_SHM_MAXSIZE`, 1 MiB; rounded up to a
power of two, at least 1024), **items** for ``local``, ``ray_queue``,
``ray_actor`` and ``rpc`` (0: unbounded).

``shm`` and ``sage_queue`` descriptors record the machine they were made on
(``metadata["host_id"]``, see ``sage_queue.hostid``; ``host_name`` for
messages): resolved on another machine they raise ``QueueUnavailableError``
naming both and create nothing, since the same name there is another queue.
Descriptors written by 1.0 (no ``host_id``) resolve anywhere, as before.

The JSON of an ``rpc`` descriptor contains its server's auth key: treat it as
a secret (``repr()`` of a descriptor hides it, the JSON cannot).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Protocol,
    Tuple,
    Type,
    TypeVar,
    Union,
    runtime_checkable,
)

from .errors import (
    MalformedDescriptorError,
    MissingMetadataError,
    UnknownQueueTypeError,
)

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "QueueDescriptor",
    "QueueLike",
    "register_queue_implementation",
    "unregister_queue_implementation",
    "get_registered_queue_types",
    "get_queue_implementation",
    "resolve_descriptor",
    "get_local_queue",
    "attach_to_shm_queue",
    "get_sage_queue",
    "get_ray_queue",
    "get_ray_actor_queue",
    "get_rpc_queue",
    "start_rpc_queue_server",
    "QueueServer",
    "sage_queue_name",
    "BUILTIN_QUEUE_TYPES",
    "DEFAULT_SHM_MAXSIZE",
    "SECRET_METADATA_KEYS",
]

#: Ring size in bytes of ``shm``/``sage_queue`` descriptors when none is given:
#: SageQueue's own default (``sage_queue.queue.DEFAULT_MAXSIZE``, which this
#: module cannot import: it imports only ``errors``), 1 MiB.
DEFAULT_SHM_MAXSIZE = 1 << 20

#: Metadata keys whose values ``repr()`` hides (they grant access).
SECRET_METADATA_KEYS = frozenset({"authkey"})

#: Built-in queue types and where their implementation lives ("module:class",
#: imported on first use so that, e.g., Ray is only imported for Ray types).
#: This module is the model and the registry: it imports no transport. The
#: transports import it, and are found here by name, like any plug-in (the
#: factories below that need a transport's help reach it the same way).
_BUILTIN_IMPLEMENTATIONS: Dict[str, str] = {
    "local": "sage_queue.transport_local:LocalQueue",
    "shm": "sage_queue.transport_shm:DescribedSageQueue",
    "sage_queue": "sage_queue.transport_shm:DescribedSageQueue",
    "ray_queue": "sage_queue.ray_support:RayQueue",
    "ray_actor": "sage_queue.ray_support:RayActorQueue",
    "rpc": "sage_queue.transport_rpc:RpcQueue",
    "auto": "sage_queue.transport_auto:resolve_auto",
}
BUILTIN_QUEUE_TYPES: Tuple[str, ...] = tuple(_BUILTIN_IMPLEMENTATIONS)

_FIELDS = ("queue_id", "queue_type", "metadata", "created_timestamp")


# ---------------------------------------------------------------- protocol


@runtime_checkable
class QueueLike(Protocol):
    """What every resolved queue offers: the core of ``queue.Queue``, with
    its signatures and exceptions (``queue.Empty``, ``queue.Full``)."""

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Puts ``item``; ``queue.Full`` if no room in time."""
        ...

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Removes and returns an item; ``queue.Empty`` if none in time."""
        ...

    def empty(self) -> bool:
        """Whether no item is queued (a snapshot)."""
        ...

    def qsize(self) -> int:
        """Items queued (a snapshot)."""
        ...


# ---------------------------------------------------------------- descriptor

_D = TypeVar("_D", bound="QueueDescriptor")


def _check_text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise MalformedDescriptorError(f"descriptor field {field!r} must be a string, not {type(value).__name__}")
    if not value:
        raise MalformedDescriptorError(f"descriptor field {field!r} must not be empty")
    return value


def _check_items(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, not {value}")
    return value


def _new_id(queue_type: str) -> str:
    return f"{queue_type}_{uuid.uuid4().hex[:12]}"


# A dataclass (as SAGE's own descriptor was: dataclasses.asdict/fields work)
# with a validating __init__, our __eq__ and a repr that hides secrets.
@dataclass(init=False, repr=False)
class QueueDescriptor:
    """A serialisable description of a queue: which transport (``queue_type``),
    which queue (``queue_id``), what the transport needs to reach it
    (``metadata``, JSON-compatible values) and when it was described
    (``created_timestamp``, seconds since the epoch; now by default).

    Descriptors compare equal when all four fields are equal; they pickle,
    and round-trip through :meth:`to_json`/:meth:`from_json` and
    :meth:`to_dict`/:meth:`from_dict`. :func:`resolve_descriptor` (or
    :meth:`resolve`) turns one into a live queue in any process the
    transport reaches.
    """

    queue_id: str
    queue_type: str
    metadata: Dict[str, Any]
    created_timestamp: float

    def __init__(
        self,
        queue_id: str,
        queue_type: str,
        metadata: Optional[Mapping[str, Any]] = None,
        created_timestamp: Optional[float] = None,
    ) -> None:
        self.queue_id = _check_text(queue_id, "queue_id")
        self.queue_type = _check_text(queue_type, "queue_type")
        if metadata is None:
            metadata = {}
        elif not isinstance(metadata, Mapping):
            raise MalformedDescriptorError(
                f"descriptor field 'metadata' must be a dict (or None), not {type(metadata).__name__}"
            )
        # A copy: the caller's dict stays theirs.
        self.metadata = dict(metadata)
        if created_timestamp is None:
            created_timestamp = time.time()
        elif isinstance(created_timestamp, bool) or not isinstance(created_timestamp, (int, float)) \
                or not math.isfinite(created_timestamp):
            raise MalformedDescriptorError(
                f"descriptor field 'created_timestamp' must be a finite number of seconds (or None), "
                f"not {created_timestamp!r}"
            )
        self.created_timestamp = float(created_timestamp)

    # ------------------------------------------------------------ serialisation

    def to_dict(self) -> Dict[str, Any]:
        """The four fields as a plain dict (``metadata`` copied)."""
        return {
            "queue_id": self.queue_id,
            "queue_type": self.queue_type,
            "metadata": dict(self.metadata),
            "created_timestamp": self.created_timestamp,
        }

    @classmethod
    def from_dict(cls: Type[_D], data: Mapping[str, Any]) -> _D:
        """A descriptor from :meth:`to_dict`'s output. Keys other than the four
        fields are ignored (descriptors written by a newer version still
        load); missing or mistyped fields raise ``MalformedDescriptorError``."""
        if not isinstance(data, Mapping):
            raise MalformedDescriptorError(
                f"a queue descriptor must be a dict (JSON object), not {type(data).__name__}; "
                "build it with QueueDescriptor.to_dict() or to_json()"
            )
        missing = [field for field in ("queue_id", "queue_type") if field not in data]
        if missing:
            raise MalformedDescriptorError(
                f"queue descriptor lacks {', '.join(repr(m) for m in missing)} "
                f"(it has {sorted(map(str, data))}); build it with QueueDescriptor.to_dict() or to_json()"
            )
        return cls(data["queue_id"], data["queue_type"], data.get("metadata"), data.get("created_timestamp"))

    def to_json(self) -> str:
        """The descriptor as a JSON object (send it to any process or store it).
        ``MalformedDescriptorError`` if a metadata value is not JSON
        (str, int, float, bool, None, lists and dicts of them)."""
        try:
            return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            bad = [key for key, value in self.metadata.items() if not _is_json(value)]
            raise MalformedDescriptorError(
                f"descriptor {self.queue_id!r} cannot be written as JSON: metadata "
                f"{', '.join(repr(b) for b in bad) or ''} holds a value JSON cannot represent ({exc}); "
                "keep metadata to str, int, float, bool, None, lists and dicts"
            ) from None

    @classmethod
    def from_json(cls: Type[_D], text: Union[str, bytes, bytearray]) -> _D:
        """A descriptor from :meth:`to_json`'s output; ``MalformedDescriptorError``
        for anything else (invalid JSON, not an object, missing fields)."""
        if not isinstance(text, (str, bytes, bytearray)):
            raise MalformedDescriptorError(
                f"from_json() needs the JSON text (str or bytes), not {type(text).__name__}; "
                "for a dict use QueueDescriptor.from_dict()"
            )
        try:
            data = json.loads(text)
        except ValueError as exc:  # JSONDecodeError and bad UTF-8
            raise MalformedDescriptorError(
                f"not a queue descriptor: invalid JSON ({exc}); pass the text QueueDescriptor.to_json() produced"
            ) from None
        return cls.from_dict(data)

    # ------------------------------------------------------------ behaviour

    def resolve(self) -> QueueLike:
        """``resolve_descriptor(self)``: the live queue this describes."""
        return resolve_descriptor(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QueueDescriptor):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in _FIELDS)

    # Mutable (metadata is a dict), so unhashable, as a dataclass with eq.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = {k: ("***" if k in SECRET_METADATA_KEYS else v) for k, v in self.metadata.items()}
        return (
            f"QueueDescriptor(queue_id={self.queue_id!r}, queue_type={self.queue_type!r}, "
            f"metadata={shown!r}, created_timestamp={self.created_timestamp!r})"
        )

    # ------------------------------------------------------------ factories

    @classmethod
    def create_local_queue(cls: Type[_D], queue_id: Optional[str] = None, maxsize: int = 0) -> _D:
        """A ``local`` queue: a ``queue.Queue`` of at most ``maxsize`` items (0:
        unbounded) in this process, shared by its threads. It records this
        process's pid; resolving it elsewhere raises ``LocalQueueProcessError``."""
        return cls(
            queue_id or _new_id("local"),
            "local",
            {"maxsize": _check_items(maxsize, "maxsize"), "creator_pid": os.getpid()},
        )

    @classmethod
    def create_shm_queue(
        cls: Type[_D],
        queue_id: Optional[str],
        shm_name: str,
        maxsize: int = DEFAULT_SHM_MAXSIZE,
        *,
        auto_cleanup: bool = False,
    ) -> _D:
        """A ``shm`` queue: the SageQueue named ``shm_name`` (object
        ``/dev/shm/sage_ringbuf_<shm_name>``), opened or created with a ring
        of ``maxsize`` bytes when resolved. ``auto_cleanup``: handles
        resolved from it remove the queue when they close and no other live
        process has it open."""
        shm = _transport("shm")
        shm.check_name(shm_name)  # InvalidNameError now rather than at resolution
        return cls(
            queue_id or _new_id("shm"),
            "shm",
            {"shm_name": shm_name, "maxsize": shm.check_maxsize(maxsize), "auto_cleanup": bool(auto_cleanup),
             **shm.host_metadata()},
        )

    @classmethod
    def create_sage_queue(
        cls: Type[_D],
        queue_id: Optional[str] = None,
        maxsize: int = DEFAULT_SHM_MAXSIZE,
        *,
        auto_cleanup: bool = False,
        namespace: Optional[str] = None,
    ) -> _D:
        """A ``sage_queue`` queue: a SageQueue whose name is derived from
        ``queue_id`` (and ``namespace``) by :func:`sage_queue_name`, so every
        process asking for the same id gets the same queue. ``maxsize`` is
        the ring size in bytes; ``auto_cleanup`` as for ``create_shm_queue``."""
        queue_id = queue_id or _new_id("sage")
        return cls(
            queue_id,
            "sage_queue",
            {
                "queue_name": sage_queue_name(queue_id, namespace),
                "maxsize": _transport("sage_queue").check_maxsize(maxsize),
                "auto_cleanup": bool(auto_cleanup),
                "namespace": namespace,
                **_transport("sage_queue").host_metadata(),
            },
        )

    @classmethod
    def create_ray_queue(
        cls: Type[_D],
        queue_id: Optional[str] = None,
        maxsize: int = 0,
        *,
        namespace: Optional[str] = None,
        detached: bool = False,
    ) -> _D:
        """A ``ray_queue`` queue: creates (or finds) a ``ray.util.queue.Queue``
        of at most ``maxsize`` items whose actor is named after ``queue_id``
        in the Ray ``namespace`` (default: this job's), so any worker of the
        cluster resolves it with ``ray.get_actor``. Ray must be initialised.
        The actor lives as long as this process (its owner) unless
        ``detached``; ``ray_support.destroy_ray_queue`` removes it."""
        queue_id = queue_id or _new_id("ray_queue")
        metadata = _transport("ray_queue").create_ray_queue_actor(queue_id, _check_items(maxsize, "maxsize"), namespace, detached)
        return cls(queue_id, "ray_queue", metadata)

    @classmethod
    def create_ray_actor_queue(
        cls: Type[_D],
        queue_id: Optional[str],
        actor_name: str,
        maxsize: int = 0,
        *,
        namespace: Optional[str] = None,
        detached: bool = False,
    ) -> _D:
        """A ``ray_actor`` queue: queue ``queue_id`` (at most ``maxsize`` items)
        inside the named Ray actor ``actor_name``. If no such actor exists,
        a ``ray_support.QueueHolder`` actor is created under that name
        (owned by this process, or ``detached``); an existing actor must
        offer QueueHolder's methods. Ray must be initialised."""
        queue_id = queue_id or _new_id("ray_actor")
        metadata = _transport("ray_actor").ensure_holder_queue(
            queue_id, _check_text(actor_name, "actor_name"), _check_items(maxsize, "maxsize"), namespace, detached
        )
        return cls(queue_id, "ray_actor", metadata)

    @classmethod
    def create_auto_queue(
        cls: Type[_D],
        queue_id: Optional[str] = None,
        maxsize: int = DEFAULT_SHM_MAXSIZE,
        *,
        namespace: Optional[str] = None,
        batch_size: int = 512,
        flush_delay: float = 0.005,
        detached: bool = False,
    ) -> _D:
        """An ``auto`` queue: the SageQueue named after ``queue_id`` (as
        ``create_sage_queue``; ring of ``maxsize`` bytes) on this machine,
        which is what it resolves to here; from any other node of the Ray
        cluster it resolves to an endpoint that reaches it through a bridge
        actor pinned to this node, moving up to ``batch_size`` items per Ray
        call (remote puts wait at most ``flush_delay`` seconds in a buffer).
        The bridge is started now if Ray is initialised (owned by this
        process, or ``detached``); without Ray the queue is reachable from
        this machine only. See ``sage_queue.ray_bridge``."""
        queue_id = queue_id or _new_id("auto")
        metadata = _transport("auto").auto_metadata(queue_id, maxsize, namespace, batch_size, flush_delay, detached)
        return cls(queue_id, "auto", metadata)

    @classmethod
    def create_rpc_queue(
        cls: Type[_D],
        host: str,
        port: int,
        queue_id: Optional[str] = None,
        *,
        authkey: Optional[bytes] = None,
        maxsize: int = 0,
    ) -> _D:
        """An ``rpc`` queue: queue ``queue_id`` (at most ``maxsize`` items) on
        the RPC queue server at ``host:port``. The auth key is ``authkey``,
        or that of the server this process started there with
        :func:`start_rpc_queue_server`; it travels in the metadata (hex)."""
        queue_id = queue_id or _new_id("rpc")
        metadata = _transport("rpc").rpc_metadata(host, port, queue_id, authkey, _check_items(maxsize, "maxsize"))
        return cls(queue_id, "rpc", metadata)


def _is_json(value: object) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


# ---------------------------------------------------------------- sage_queue names

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def sage_queue_name(queue_id: str, namespace: Optional[str] = None) -> str:
    """The SageQueue name of the ``sage_queue`` queue ``queue_id``
    (in ``namespace``): ``"<namespace>.<queue_id>"`` or ``queue_id`` when
    that is a valid name (the C library's rule, ``ring_buffer_check_name``:
    1..63 bytes, no ``/``, ``..`` or control characters); otherwise a
    readable, sanitised prefix plus a hash of the full id (the same in
    every process)."""
    wanted = f"{namespace}.{queue_id}" if namespace else queue_id
    if _transport("sage_queue").is_valid_name(wanted):
        return wanted
    raw = wanted.encode("utf-8", "surrogateescape")
    digest = hashlib.blake2b(raw, digest_size=8).hexdigest()
    longest: int = _transport("sage_queue").MAX_NAME_BYTES
    readable = _NAME_UNSAFE.sub("_", wanted).replace("..", "_")[: longest - len(digest) - 1]
    return f"{readable}-{digest}"


# ---------------------------------------------------------------- registry


def _transport(queue_type: str) -> "ModuleType":
    """The module of the built-in transport of ``queue_type`` (imported on
    first use, as for resolution)."""
    module_name, _, _attr = _BUILTIN_IMPLEMENTATIONS[queue_type].partition(":")
    return importlib.import_module(module_name)


_registry_lock = threading.Lock()
#: queue_type -> implementation (a class, or "module:attr" until first use).
_registry: Dict[str, Union[str, Callable[[QueueDescriptor], Any]]] = dict(_BUILTIN_IMPLEMENTATIONS)


def register_queue_implementation(queue_type: str, cls: Callable[[QueueDescriptor], Any]) -> None:
    """Makes ``resolve_descriptor`` build queues of ``queue_type`` as
    ``cls(descriptor)`` in this process (replacing any implementation
    registered before, built-ins included). The result must offer
    ``QueueLike``'s methods."""
    _check_text(queue_type, "queue_type")
    if not callable(cls):
        raise TypeError(f"the implementation of queue type {queue_type!r} must be a class (or callable), "
                        f"called as cls(descriptor); got {cls!r}")
    with _registry_lock:
        _registry[queue_type] = cls


def unregister_queue_implementation(queue_type: str) -> None:
    """Forgets the implementation registered for ``queue_type``; a built-in
    type gets its built-in implementation back. No error if none."""
    with _registry_lock:
        if queue_type in _BUILTIN_IMPLEMENTATIONS:
            _registry[queue_type] = _BUILTIN_IMPLEMENTATIONS[queue_type]
        else:
            _registry.pop(queue_type, None)


def get_registered_queue_types() -> List[str]:
    """Every queue type ``resolve_descriptor`` can build in this process, sorted."""
    with _registry_lock:
        return sorted(_registry)


def get_queue_implementation(queue_type: str) -> Callable[[QueueDescriptor], Any]:
    """The class registered for ``queue_type`` (importing a built-in one on
    first use); ``UnknownQueueTypeError`` if none."""
    with _registry_lock:
        impl = _registry.get(queue_type)
    if impl is None:
        raise UnknownQueueTypeError(
            f"unknown queue type {queue_type!r}: this process knows {', '.join(get_registered_queue_types())}; "
            f"register an implementation first with "
            f"sage_queue.descriptor.register_queue_implementation({queue_type!r}, cls)"
        )
    if isinstance(impl, str):
        module_name, _, attr = impl.partition(":")
        loaded = getattr(importlib.import_module(module_name), attr)
        with _registry_lock:
            # Unless someone registered another meanwhile.
            if _registry.get(queue_type) == impl:
                _registry[queue_type] = loaded
        return loaded  # type: ignore[no-any-return]
    return impl


def resolve_descriptor(desc: Union[QueueDescriptor, Mapping[str, Any], str, bytes]) -> QueueLike:
    """The live queue ``desc`` describes, built by its type's implementation
    as ``cls(descriptor)``. ``desc`` may also be a dict (``to_dict``) or the
    JSON text (``to_json``). Raises ``UnknownQueueTypeError``,
    ``MissingMetadataError``, ``LocalQueueProcessError``,
    ``QueueUnavailableError`` or the transport's own errors."""
    if isinstance(desc, (str, bytes, bytearray)):
        desc = QueueDescriptor.from_json(desc)
    elif isinstance(desc, Mapping):
        desc = QueueDescriptor.from_dict(desc)
    elif not isinstance(desc, QueueDescriptor):
        raise TypeError(f"resolve_descriptor() needs a QueueDescriptor (or its dict or JSON), "
                        f"not {type(desc).__name__}")
    impl = get_queue_implementation(desc.queue_type)
    queue = impl(desc)
    if not isinstance(queue, QueueLike):
        raise TypeError(
            f"the implementation {impl!r} of queue type {desc.queue_type!r} built {type(queue).__name__}, "
            "which lacks put/get/empty/qsize (the QueueLike protocol)"
        )
    return queue


# ---------------------------------------------------------------- metadata access


def metadata_value(desc: QueueDescriptor, key: str, kind: Union[type, Tuple[type, ...]], factory: str,
                   default: Any = ...) -> Any:
    """``desc.metadata[key]``, checked to be a ``kind``; ``MissingMetadataError``
    naming the ``factory`` that builds complete descriptors otherwise. With a
    ``default``, a missing (or None) value gives the default."""
    value = desc.metadata.get(key)
    if value is None:
        if default is not ...:
            return default
        raise MissingMetadataError(
            f"{desc.queue_type} queue {desc.queue_id!r}: its descriptor has no {key!r} in metadata "
            f"(it has {sorted(desc.metadata)}); build descriptors with {factory}"
        )
    if (isinstance(value, bool) and kind is int) or not isinstance(value, kind):
        raise MissingMetadataError(
            f"{desc.queue_type} queue {desc.queue_id!r}: metadata {key!r} must be "
            f"{getattr(kind, '__name__', kind)}, not {type(value).__name__}; build descriptors with {factory}"
        )
    return value


# ---------------------------------------------------------------- helpers


def get_local_queue(queue_id: Optional[str] = None, maxsize: int = 0) -> QueueLike:
    """This process's ``local`` queue ``queue_id`` (created on first use)."""
    return resolve_descriptor(QueueDescriptor.create_local_queue(queue_id, maxsize))


def attach_to_shm_queue(queue_id: Optional[str], shm_name: str, maxsize: int = DEFAULT_SHM_MAXSIZE) -> QueueLike:
    """The SageQueue ``shm_name``, opened or created (ring of ``maxsize`` bytes)."""
    return resolve_descriptor(QueueDescriptor.create_shm_queue(queue_id, shm_name, maxsize))


def get_sage_queue(queue_id: Optional[str] = None, maxsize: int = DEFAULT_SHM_MAXSIZE) -> QueueLike:
    """The ``sage_queue`` queue ``queue_id``, opened or created (ring of
    ``maxsize`` bytes); the same queue in every process of this machine."""
    return resolve_descriptor(QueueDescriptor.create_sage_queue(queue_id, maxsize))


def get_ray_queue(queue_id: Optional[str] = None, maxsize: int = 0) -> QueueLike:
    """The ``ray_queue`` queue ``queue_id`` (created if needed; Ray must be initialised)."""
    return resolve_descriptor(QueueDescriptor.create_ray_queue(queue_id, maxsize))


def get_ray_actor_queue(queue_id: Optional[str], actor_name: str, maxsize: int = 0) -> QueueLike:
    """Queue ``queue_id`` in the named Ray actor ``actor_name`` (created if needed)."""
    return resolve_descriptor(QueueDescriptor.create_ray_actor_queue(queue_id, actor_name, maxsize))


def get_rpc_queue(host: str, port: int, queue_id: Optional[str] = None, *,
                  authkey: Optional[bytes] = None) -> QueueLike:
    """Queue ``queue_id`` on the RPC queue server at ``host:port``."""
    return resolve_descriptor(QueueDescriptor.create_rpc_queue(host, port, queue_id, authkey=authkey))


class QueueServer(Protocol):
    """What :func:`start_rpc_queue_server` returns (``transport_rpc.RpcQueueServer``)."""

    @property
    def authkey(self) -> bytes:
        """The server's auth key (a secret)."""
        ...

    @property
    def pid(self) -> int:
        """The server process."""
        ...

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        ...

    def descriptor(self, queue_id: Optional[str] = None, maxsize: int = 0) -> QueueDescriptor:
        """An ``rpc`` descriptor of queue ``queue_id`` on this server."""
        ...

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the server (its queues go with it)."""
        ...


def start_rpc_queue_server(host: str = "127.0.0.1", port: int = 0, authkey: Optional[bytes] = None,
                           **kwargs: Any) -> QueueServer:
    """Starts an RPC queue server (see ``sage_queue.transport_rpc``): a
    ``multiprocessing.managers`` server in a child process, on loopback, with
    ``authkey`` (default: 32 random bytes). ``port`` 0 picks a free port.
    Returns the server; call ``.stop()`` (or use it as a context manager)."""
    server: QueueServer = _transport("rpc").start_rpc_queue_server(host, port, authkey, **kwargs)
    return server
