"""Machine identity: which machine a shared-memory queue lives on.

A ``SageQueue`` is a name in this machine's ``/dev/shm``; the same name on
another machine is another queue (or none). Descriptors, pickles and
references of shared-memory queues therefore record the identity of the
machine that made them, and refuse to open anything on a different one
(instead of silently creating an empty queue there).

The identity is the kernel's boot id (``/proc/sys/kernel/random/boot_id``,
random per boot, the same for every process and container sharing the
kernel, hence the same ``/dev/shm``), unless the environment variable
``SAGE_QUEUE_HOST_ID`` sets one (tests that simulate two machines on one,
containers with a private ``/dev/shm``).
"""

from __future__ import annotations

import os
import socket
from typing import Optional

from .errors import QueueUnavailableError

__all__ = ["HOST_ID_ENV", "BOOT_ID_PATH", "host_id", "host_name", "check_same_host"]

#: Environment variable that overrides the machine identity.
HOST_ID_ENV = "SAGE_QUEUE_HOST_ID"
#: Where Linux publishes the boot id.
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"

_boot_id: Optional[str] = None


def _read_boot_id() -> str:
    global _boot_id
    if _boot_id is None:
        try:
            with open(BOOT_ID_PATH, encoding="ascii") as f:
                value = f.read().strip()
        except OSError:
            value = ""
        # Without /proc (unusual), the host name is the best identity left.
        _boot_id = value or f"host:{socket.gethostname()}"
    return _boot_id


def host_id() -> str:
    """This machine's identity: ``$SAGE_QUEUE_HOST_ID`` if set and not
    empty, else the kernel's boot id. Read on every call for the variable
    (cheap), so a test may change it; the boot id is read once."""
    override = os.environ.get(HOST_ID_ENV, "").strip()
    return override or _read_boot_id()


def host_name() -> str:
    """This machine's host name (for messages: ids are not readable)."""
    return socket.gethostname()


def check_same_host(recorded: Optional[str], what: str, recorded_name: Optional[str] = None) -> None:
    """``QueueUnavailableError`` naming both machines if ``recorded`` (the
    identity stored in a descriptor, pickle or reference) is not this
    machine's. ``None`` (written by 1.0, which recorded none) passes: such
    queues resolve as before."""
    if recorded is None:
        return
    here = host_id()
    if recorded == here:
        return
    there = f"machine {recorded!r}" + (f" (host {recorded_name!r})" if recorded_name else "")
    raise QueueUnavailableError(
        f"{what} lives in the shared memory of {there}, but this process runs on machine {here!r} "
        f"(host {host_name()!r}): shared memory does not cross machines, and nothing was opened or created "
        f"here. Use the queue on its own machine, or describe it with QueueDescriptor.create_auto_queue() "
        f"(Ray) or another network transport (ray_queue, ray_actor, rpc). The identity is the kernel boot id, "
        f"or ${HOST_ID_ENV} when set"
    )
