"""Ray support: SageQueue with Ray, and the ``ray_queue``/``ray_actor`` queue types.

**SageQueue on Ray.** A ``SageQueue`` (and a ``SageQueueRef``) pickles by
name, so passing one to a Ray task or actor on the same node (as an argument,
in an object, through ``ray.put``) reattaches the worker to the same
shared-memory queue; both sides can put and get. Ray workers must be able to
load the library: they inherit the driver's environment when ``ray.init()``
starts the cluster; otherwise pass ``runtime_env=sage_queue.ray_support.
runtime_env()`` to ``ray.init``. Shared memory does not cross machines (a
pickled SageQueue says so on another machine: ``sage_queue.hostid``): for a
pipeline spread over several nodes use ``auto`` descriptors (shared memory
on the queue's machine, batches through a bridge actor elsewhere:
``sage_queue.ray_bridge``), or ``ray_queue``, ``ray_actor`` or ``rpc``.

**``ray_queue``**: a ``ray.util.queue.Queue`` whose actor is *named*
(``sage_queue.ray_queue.<queue_id>`` in a recorded namespace), so any
process of the cluster reaches it from the descriptor with ``ray.get_actor``
(a ``ray.util.queue.Queue`` on its own is an anonymous actor handle that
cannot be described by a name). Its actor is ``ray.util.queue``'s own plus
batch calls (:class:`BatchQueueActor`): ``put_many``/``get_many`` cross in
one Ray call per batch, waiting inside the actor (``ray_actor`` likewise).

**``ray_actor``**: queue ``queue_id`` inside a named actor that may hold
many queues. :class:`QueueHolder` is that actor (an asyncio actor: a
blocked ``get`` does not block ``put``); ``create_ray_actor_queue`` starts
one under the given name if none exists. A user's own actor works too if it
offers QueueHolder's methods.

Both kinds of actor are owned by the process that created them (it keeps
their handles; they die with it, or at :func:`destroy_ray_queue`) unless
created ``detached=True`` (then they live until :func:`destroy_ray_queue`
or the cluster ends). They reserve no CPU
(``num_cpus=0``), so they never starve the pipeline's own actors.

This module imports Ray; ``sage_queue.descriptor`` imports it only when a
Ray queue type is used.
"""

from __future__ import annotations

import asyncio
import os
import threading
from queue import Empty, Full
from typing import Any, Dict, Iterable, List, Optional, Tuple

import ray
from ray.util.queue import Queue as _RayUtilQueue
from ray.util.queue import _QueueActor as _RayQueueActor

from ._lib import ENV_VAR, LIBRARY_PATH
from .descriptor import QueueDescriptor, metadata_value
from .errors import QueueUnavailableError
from .transport_base import QueueAdapter, check_timeout

__all__ = [
    "RayQueue",
    "RayActorQueue",
    "QueueHolder",
    "start_queue_holder",
    "destroy_ray_queue",
    "create_ray_queue_actor",
    "ensure_holder_queue",
    "require_ray",
    "runtime_env",
    "RAY_QUEUE_ACTOR_PREFIX",
]

#: Ray actor name of the ``ray_queue`` queue ``queue_id``: this + queue_id.
RAY_QUEUE_ACTOR_PREFIX = "sage_queue.ray_queue."
_RAY_QUEUE_FACTORY = "QueueDescriptor.create_ray_queue(queue_id, maxsize)"
_RAY_ACTOR_FACTORY = "QueueDescriptor.create_ray_actor_queue(queue_id, actor_name)"


# ---------------------------------------------------------------- Ray helpers


def require_ray(what: str) -> None:
    """``QueueUnavailableError`` unless Ray is initialised in this process."""
    if not ray.is_initialized():
        raise QueueUnavailableError(
            f"{what} needs Ray in this process: call ray.init() first (ray.init(address='auto') joins a "
            "running cluster; inside Ray tasks and actors it is already initialised)"
        )


def _namespace(namespace: Optional[str]) -> str:
    return namespace or ray.get_runtime_context().namespace


def runtime_env() -> Dict[str, Any]:
    """A Ray ``runtime_env`` under which workers load the same libring_buffer
    as this process and can import this ``sage_queue`` (for clusters that do
    not inherit the driver's environment)."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH", "")]))
    return {"env_vars": {ENV_VAR: LIBRARY_PATH, "PYTHONPATH": path}}


# Ray destroys an owned (non-detached) actor as soon as its creator holds no
# handle to it, name or not: the creating process keeps the original handle
# here until destroy_ray_queue() or its own exit.
_owned_lock = threading.Lock()
_owned_handles: Dict[Tuple[str, str], Any] = {}


def _keep_owned(namespace: str, name: str, handle: Any, detached: bool) -> None:
    if not detached:
        with _owned_lock:
            _owned_handles.setdefault((namespace, name), handle)


def _actor_options(name: str, namespace: str, detached: bool) -> Dict[str, Any]:
    options: Dict[str, Any] = {"name": name, "namespace": namespace, "get_if_exists": True, "num_cpus": 0}
    if detached:
        options["lifetime"] = "detached"
    return options


def _lookup(desc: QueueDescriptor, name: str, namespace: str) -> Any:
    require_ray(f"{desc.queue_type} queue {desc.queue_id!r}")
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        raise QueueUnavailableError(
            f"{desc.queue_type} queue {desc.queue_id!r}: no Ray actor named {name!r} in namespace "
            f"{namespace!r}. It was never created in this cluster, or it died with the process that created "
            "it (create it with detached=True to outlive its creator), or it was destroyed"
        ) from None


# ---------------------------------------------------------------- batches in an actor


async def _put_batch(q: "asyncio.Queue[Any]", items: List[Any], block: bool, timeout: Optional[float]) -> int:
    """Puts ``items`` in order into ``q`` (inside an actor), waiting up to
    ``timeout`` in all for room; returns how many went in."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    for done, item in enumerate(items):
        try:
            q.put_nowait(item)
            continue
        except asyncio.QueueFull:
            if not block:
                return done
        remaining = None if deadline is None else max(0.0, deadline - loop.time())
        try:
            await asyncio.wait_for(q.put(item), remaining)
        except asyncio.TimeoutError:
            return done
    return len(items)


async def _get_batch(q: "asyncio.Queue[Any]", max_items: int, block: bool, timeout: Optional[float]) -> List[Any]:
    """Waits up to ``timeout`` for one item of ``q`` (inside an actor), then
    takes up to ``max_items`` in all without waiting; [] if none came."""
    if not block:
        if q.empty():
            return []
        items = [q.get_nowait()]
    else:
        try:
            # A cancelled Queue.get loses nothing: the timeout is safe.
            items = [await asyncio.wait_for(q.get(), timeout)]
        except asyncio.TimeoutError:
            return []
    while len(items) < max_items and not q.empty():
        items.append(q.get_nowait())
    return items


class BatchQueueActor(_RayQueueActor):
    """The actor of a ``ray_queue`` queue: ``ray.util.queue``'s own actor
    (so a ``ray.util.queue.Queue`` works over it unchanged) plus one call
    per batch in each direction, waiting inside the actor."""

    async def put_batch(self, items: List[Any], block: bool = True, timeout: Optional[float] = None) -> int:
        """Puts ``items`` in order; how many went in within ``timeout``."""
        return await _put_batch(self.queue, items, block, timeout)

    async def get_batch(self, max_items: int, block: bool = True, timeout: Optional[float] = None) -> List[Any]:
        """Up to ``max_items`` items, waiting up to ``timeout`` for the first."""
        return await _get_batch(self.queue, max_items, block, timeout)


_RemoteBatchQueueActor = ray.remote(BatchQueueActor)


# ---------------------------------------------------------------- ray_queue


def create_ray_queue_actor(queue_id: str, maxsize: int, namespace: Optional[str], detached: bool) -> Dict[str, Any]:
    """Creates (or finds) the named actor of ``ray_queue`` ``queue_id``;
    returns the descriptor metadata."""
    require_ray(f"ray_queue {queue_id!r}")
    ns = _namespace(namespace)
    name = RAY_QUEUE_ACTOR_PREFIX + queue_id
    # get_if_exists: describing the same queue_id twice gives the same queue.
    handle = _RemoteBatchQueueActor.options(**_actor_options(name, ns, detached)).remote(maxsize)
    _keep_owned(ns, name, handle, detached)
    return {"actor_name": name, "namespace": ns, "maxsize": maxsize, "detached": bool(detached)}



def _named_actor(descriptor: QueueDescriptor, factory: str) -> Tuple[Any, int]:
    """The named actor a Ray descriptor points at (from its ``actor_name``
    and ``namespace``) and its ``maxsize``; ``factory`` names the call that
    makes such descriptors, for the error message when metadata is missing."""
    name = metadata_value(descriptor, "actor_name", str, factory)
    namespace = metadata_value(descriptor, "namespace", str, factory)
    maxsize = metadata_value(descriptor, "maxsize", int, factory, default=0)
    return _lookup(descriptor, name, namespace), maxsize

class RayQueue(QueueAdapter):
    """A ``ray_queue`` queue: the ``ray.util.queue.Queue`` (``.queue``) over the
    descriptor's named actor. Empty/Full are Ray's subclasses of
    ``queue.Empty``/``queue.Full``."""

    queue_type = "ray_queue"

    def __init__(self, descriptor: QueueDescriptor) -> None:
        super().__init__(descriptor)
        handle, maxsize = _named_actor(descriptor, _RAY_QUEUE_FACTORY)
        # A Queue over the existing actor (its constructor would start a new one).
        q = _RayUtilQueue.__new__(_RayUtilQueue)
        q.maxsize = maxsize
        q.actor = handle
        self._queue = q

    def put_many(self, items: Iterable[Any], block: bool = True, timeout: Optional[float] = None) -> int:
        """Puts every item, in order, in one actor call (the wait for room
        happens in the actor); ``queue.Full`` (with ``items_put``) if they did
        not all fit in time."""
        batch = list(items)
        try:
            method = self._queue.actor.put_batch
        except AttributeError:  # an actor made by plain ray.util.queue
            return super().put_many(batch, block, timeout)
        done = int(ray.get(method.remote(batch, block, check_timeout(block, timeout))))
        return _check_put(done, len(batch))

    def get_many(self, max_items: int, block: bool = True, timeout: Optional[float] = None) -> List[Any]:
        """Up to ``max_items`` items (at least one) in one actor call."""
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, not {max_items}")
        try:
            method = self._queue.actor.get_batch
        except AttributeError:  # an actor made by plain ray.util.queue
            return super().get_many(max_items, block, timeout)
        items = ray.get(method.remote(max_items, block, check_timeout(block, timeout)))
        if not items:
            raise Empty
        return list(items)


def _check_put(done: int, count: int) -> int:
    """``done`` if all ``count`` items went in, else ``queue.Full`` carrying
    ``items_put`` (as ``SageQueue.put_many``)."""
    if done < count:
        full = Full(f"put {done} of {count} items before the queue stayed full")
        full.items_put = done  # type: ignore[attr-defined]
        raise full
    return done


# ---------------------------------------------------------------- ray_actor


class QueueHolder:
    """A Ray actor holding named queues (``asyncio.Queue``, bounded by the
    ``maxsize`` given when each is first used). Every method takes the
    ``queue_id`` first; waits happen in the actor, without blocking other
    calls. Results say what happened instead of raising, so callers need not
    unpack Ray's exception wrapping: ``put`` -> bool, ``get`` -> (ok, item),
    ``put_many`` -> how many went in, ``get_many`` -> items (empty: none in
    time)."""

    def __init__(self) -> None:
        self._queues: Dict[str, "asyncio.Queue[Any]"] = {}

    def _queue(self, queue_id: str, maxsize: int = 0) -> "asyncio.Queue[Any]":
        q = self._queues.get(queue_id)
        if q is None:
            q = self._queues[queue_id] = asyncio.Queue(maxsize)
        return q

    async def ensure(self, queue_id: str, maxsize: int = 0) -> int:
        """Creates queue ``queue_id`` if needed; returns its maxsize."""
        return self._queue(queue_id, maxsize).maxsize

    async def put(self, queue_id: str, item: Any, block: bool = True, timeout: Optional[float] = None) -> bool:
        q = self._queue(queue_id)
        if not block:
            try:
                q.put_nowait(item)
            except asyncio.QueueFull:
                return False
            return True
        try:
            await asyncio.wait_for(q.put(item), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def get(self, queue_id: str, block: bool = True, timeout: Optional[float] = None) -> Tuple[bool, Any]:
        q = self._queue(queue_id)
        if not block:
            try:
                return True, q.get_nowait()
            except asyncio.QueueEmpty:
                return False, None
        try:
            # A cancelled Queue.get loses nothing: the timeout is safe.
            return True, await asyncio.wait_for(q.get(), timeout)
        except asyncio.TimeoutError:
            return False, None

    async def put_many(self, queue_id: str, items: List[Any], block: bool = True,
                       timeout: Optional[float] = None) -> int:
        return await _put_batch(self._queue(queue_id), items, block, timeout)

    async def get_many(self, queue_id: str, max_items: int, block: bool = True,
                       timeout: Optional[float] = None) -> List[Any]:
        return await _get_batch(self._queue(queue_id), max_items, block, timeout)

    async def qsize(self, queue_id: str) -> int:
        return self._queue(queue_id).qsize()

    async def empty(self, queue_id: str) -> bool:
        return self._queue(queue_id).empty()

    async def full(self, queue_id: str) -> bool:
        return self._queue(queue_id).full()

    async def queue_ids(self) -> List[str]:
        return sorted(self._queues)

    async def drop(self, queue_id: str) -> bool:
        """Forgets queue ``queue_id`` and what it holds."""
        return self._queues.pop(queue_id, None) is not None


_RemoteQueueHolder = ray.remote(QueueHolder)


def start_queue_holder(actor_name: str, namespace: Optional[str] = None, detached: bool = False) -> Any:
    """The :class:`QueueHolder` actor named ``actor_name`` (started if none)."""
    require_ray(f"queue holder {actor_name!r}")
    ns = _namespace(namespace)
    handle = _RemoteQueueHolder.options(**_actor_options(actor_name, ns, detached)).remote()
    _keep_owned(ns, actor_name, handle, detached)
    return handle


def ensure_holder_queue(queue_id: str, actor_name: str, maxsize: int, namespace: Optional[str],
                        detached: bool) -> Dict[str, Any]:
    """Makes sure actor ``actor_name`` exists (a QueueHolder, started if
    none) and holds queue ``queue_id``; returns the descriptor metadata."""
    require_ray(f"ray_actor queue {queue_id!r}")
    ns = _namespace(namespace)
    try:
        handle = ray.get_actor(actor_name, namespace=ns)
    except ValueError:
        handle = start_queue_holder(actor_name, ns, detached)
    ray.get(handle.ensure.remote(queue_id, maxsize))
    return {"actor_name": actor_name, "namespace": ns, "maxsize": maxsize, "detached": bool(detached)}


class RayActorQueue(QueueAdapter):
    """A ``ray_actor`` queue: queue ``queue_id`` in the descriptor's named
    actor (``.queue`` is the actor handle). Each call is one actor call."""

    queue_type = "ray_actor"

    def __init__(self, descriptor: QueueDescriptor) -> None:
        super().__init__(descriptor)
        self._queue, maxsize = _named_actor(descriptor, _RAY_ACTOR_FACTORY)
        # Recreates the queue (empty) if its actor was restarted meanwhile.
        ray.get(self._queue.ensure.remote(descriptor.queue_id, maxsize))

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """As ``queue.Queue.put`` (the wait happens in the actor)."""
        if not ray.get(self._queue.put.remote(self.queue_id, item, block, check_timeout(block, timeout))):
            raise Full

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """As ``queue.Queue.get`` (the wait happens in the actor)."""
        ok, item = ray.get(self._queue.get.remote(self.queue_id, block, check_timeout(block, timeout)))
        if not ok:
            raise Empty
        return item

    def qsize(self) -> int:
        return int(ray.get(self._queue.qsize.remote(self.queue_id)))

    def empty(self) -> bool:
        return bool(ray.get(self._queue.empty.remote(self.queue_id)))

    def full(self) -> bool:
        return bool(ray.get(self._queue.full.remote(self.queue_id)))

    def put_many(self, items: Iterable[Any], block: bool = True, timeout: Optional[float] = None) -> int:
        """Puts every item, in order, in one actor call; ``queue.Full`` (with
        ``items_put``) if they did not all fit in time."""
        batch = list(items)
        done = int(ray.get(self._queue.put_many.remote(self.queue_id, batch, block, check_timeout(block, timeout))))
        return _check_put(done, len(batch))

    def get_many(self, max_items: int, block: bool = True, timeout: Optional[float] = None) -> List[Any]:
        """Up to ``max_items`` items (at least one) in one actor call."""
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, not {max_items}")
        items = ray.get(self._queue.get_many.remote(self.queue_id, max_items, block, check_timeout(block, timeout)))
        if not items:
            raise Empty
        return list(items)


# ---------------------------------------------------------------- cleanup


def destroy_ray_queue(desc: QueueDescriptor, *, kill_actor: bool = False) -> None:
    """Removes a Ray queue: kills a ``ray_queue``'s actor; drops a
    ``ray_actor`` queue from its actor (and kills that actor too if
    ``kill_actor``). No error if the actor is already gone."""
    name = metadata_value(desc, "actor_name", str, "a Ray queue factory")
    namespace = metadata_value(desc, "namespace", str, "a Ray queue factory")
    require_ray(f"{desc.queue_type} queue {desc.queue_id!r}")
    try:
        handle = ray.get_actor(name, namespace=namespace)
    except ValueError:
        handle = None
    if desc.queue_type == "ray_actor" and not kill_actor:
        if handle is not None:
            ray.get(handle.drop.remote(desc.queue_id))
        return
    with _owned_lock:
        _owned_handles.pop((namespace, name), None)
    if handle is not None:
        ray.kill(handle, no_restart=True)
