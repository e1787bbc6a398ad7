"""The ``auto`` queue type: shared memory on its machine, Ray past it.

``QueueDescriptor.create_auto_queue(queue_id, maxsize)`` describes a
``SageQueue`` (named as a ``sage_queue`` queue would be) on the machine that
made the descriptor, and, when Ray is initialised there, starts a bridge
actor pinned to that machine's Ray node (``sage_queue.ray_bridge``).
Resolved on the same machine (same ``sage_queue.hostid.host_id()``), the
descriptor is the ``SageQueue`` itself: nothing in between. Resolved on any
other node of the Ray cluster, it is a ``ray_bridge.RemoteAutoQueue``, an
endpoint with the same API that moves items through the bridge in batches.

This module imports no Ray: only the remote path does (``ray_bridge``).
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Optional

from .descriptor import QueueDescriptor, metadata_value, sage_queue_name
from .hostid import host_id
from .queue import destroy_queue
from .transport_shm import DescribedSageQueue, check_maxsize, host_metadata

__all__ = ["resolve_auto", "auto_metadata", "destroy_auto_queue", "DEFAULT_BATCH", "DEFAULT_FLUSH_DELAY"]

#: Items per bridge call (both directions) when the descriptor says none.
DEFAULT_BATCH = 512
#: Longest a remote producer holds a put item before sending it (seconds).
DEFAULT_FLUSH_DELAY = 0.005

_FACTORY = "QueueDescriptor.create_auto_queue(queue_id, maxsize)"


def _ray_ready() -> bool:
    """Whether this process has initialised Ray (without importing it)."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def auto_metadata(queue_id: str, maxsize: int, namespace: Optional[str], batch_size: int, flush_delay: float,
                  detached: bool) -> Dict[str, Any]:
    """Metadata of an ``auto`` descriptor; starts its bridge actor when Ray
    is initialised in this process (else the queue is reachable from this
    machine only, and remote resolution says why)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, not {batch_size!r}")
    if isinstance(flush_delay, bool) or not isinstance(flush_delay, (int, float)) or not 0 <= flush_delay <= 60:
        raise ValueError(f"flush_delay must be a number of seconds between 0 and 60, not {flush_delay!r}")
    metadata: Dict[str, Any] = {
        "queue_name": sage_queue_name(queue_id, namespace),
        "maxsize": check_maxsize(maxsize),
        "auto_cleanup": False,
        "namespace": namespace,
        "batch_size": batch_size,
        "flush_delay": float(flush_delay),
        **host_metadata(),
    }
    if _ray_ready():
        from . import ray_bridge

        metadata.update(ray_bridge.start_bridge(metadata["queue_name"], metadata["maxsize"], detached))
    return metadata


def resolve_auto(descriptor: QueueDescriptor) -> Any:
    """The queue an ``auto`` descriptor names: the ``SageQueue`` on its own
    machine, a Ray endpoint through the bridge anywhere else."""
    recorded = metadata_value(descriptor, "host_id", str, _FACTORY)
    if recorded == host_id():
        return DescribedSageQueue(descriptor)
    from . import ray_bridge

    return ray_bridge.RemoteAutoQueue(descriptor)


def destroy_auto_queue(descriptor: QueueDescriptor) -> None:
    """Stops the bridge actor (if any, and if Ray is initialised here) and
    removes the shared-memory queue (on its own machine)."""
    if descriptor.metadata.get("bridge_name") and _ray_ready():
        from . import ray_bridge

        ray_bridge.stop_bridge(descriptor)
    if descriptor.metadata.get("host_id") == host_id():
        destroy_queue(metadata_value(descriptor, "queue_name", str, _FACTORY))
