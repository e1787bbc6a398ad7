"""Inspecting and cleaning up the queues of a machine (what the CLI shows).

Every queue is an object ``<dir>/<prefix><name>`` (``/dev/shm/sage_ringbuf_<name>``;
both from the C library). The C library tells everything about one; this
module only asks and formats:

* ``ring_buffer_inspect``: size, owner, mode, age, the header's fields
  (layout version, ring size, creator pid) and whether the creator lives,
  and the live processes attached to it, all without attaching (no handle,
  no lock: it never counts us and works for other users' objects too).
  Attachment is liveness, not a counter: each open handle holds a shared
  ``flock`` the kernel drops when the process dies;
* ``ring_buffer_attached_pids``: who those processes are;
* opening it (``SageQueue.open``): every statistic. Opening attaches us
  (our own ``flock``) until we close, so we always close, and our own pid is
  left out of the attached processes we report;
* side objects: an item larger than its queue's ring travels in an object
  of its own, ``<prefix><queue>..<id>`` (queue names may not contain ``..``,
  so the queue is what precedes the last ``..``; the id holds no dot). They
  are listed with their queue (``side_objects``, ``side_bytes``), and
  ``ring_buffer_reclaim`` removes those of dead processes (what ``gc`` runs).
"""

from __future__ import annotations

import ctypes
import errno
import os
import pwd
import re
import stat as stat_module
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from . import _lib
from ._status import Status, error_for, strerror
from .errors import (
    CorruptQueueError,
    IncompatibleQueueError,
    InvalidNameError,
    QueueNotFoundError,
    QueuePermissionError,
    SageQueueError,
)
from .queue import SageQueue, _encode_name

__all__ = [
    "OBJECT_PREFIX",
    "QueueInfo",
    "GcReport",
    "object_path",
    "list_objects",
    "list_side_objects",
    "split_side_object",
    "inspect_queue",
    "scan_queues",
    "queue_stats",
    "remove_queue",
    "collect_garbage",
    "lock_holders",
]

#: File name prefix of queue objects in their directory (the library's).
OBJECT_PREFIX = _lib.OBJECT_PREFIX
#: Directory of the queue objects (the library's).
OBJECT_DIR = _lib.OBJECT_DIR


@dataclass
class QueueInfo:
    """What is known about one queue object. ``status``: ``ok``, ``legacy``
    (opened; a version-1 object of the legacy C library), or why it could
    not be opened: ``foreign`` (another user's), ``denied``, ``corrupt``,
    ``incompatible`` (not a queue of a known layout), ``bad-name``,
    ``not-a-queue`` (not a regular file), ``error``, ``gone`` (no queue
    object, only side objects left: ``gc`` removes them); ``detail`` says
    more.
    Fields that could not be learnt are None."""

    name: str
    path: str
    status: str = "ok"
    detail: str = ""
    object_bytes: Optional[int] = None
    owner_uid: Optional[int] = None
    owner: Optional[str] = None
    mode: Optional[str] = None
    modified: Optional[float] = None
    layout_version: Optional[int] = None
    ring_bytes: Optional[int] = None
    fill_percent: Optional[float] = None
    messages: Optional[int] = None
    attached: Optional[int] = None
    attached_pids: List[int] = field(default_factory=list)
    creator_pid: Optional[int] = None
    creator_alive: Optional[bool] = None
    #: Side objects of this queue (items larger than its ring, queued or
    #: orphaned) and their bytes.
    side_objects: int = 0
    side_bytes: int = 0

    @property
    def opened(self) -> bool:
        """Whether the queue could be opened (statistics are known)."""
        return self.status in ("ok", "legacy")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class GcReport:
    """What ``collect_garbage`` did: ``removed`` names, and ``kept`` as
    (name, reason, attached pids)."""

    removed: List[str] = field(default_factory=list)
    kept: List[Tuple[str, str, List[int]]] = field(default_factory=list)
    dry_run: bool = False
    #: Queue name -> side objects of dead processes removed (not in a dry run).
    side_objects_removed: Dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "side_objects_removed": dict(self.side_objects_removed),
            "removed": list(self.removed),
            "kept": [{"name": n, "reason": r, "attached_pids": p} for n, r, p in self.kept],
        }


# ---------------------------------------------------------------- the library's answers


def object_path(name: str) -> str:
    """Path of the object of queue ``name``."""
    return os.path.join(OBJECT_DIR, OBJECT_PREFIX + name)


#: ``<queue>..<id>``: the queue is what precedes the last ``..`` (the id has
#: no dot), as the library names side objects.
_SIDE_OBJECT = re.compile(r"(?P<queue>.+)\.\.(?P<id>[A-Za-z0-9_]{1,48})", re.DOTALL)


def split_side_object(entry: str) -> Optional[Tuple[str, str]]:
    """``(queue, id)`` if ``entry`` (a name after the object prefix) is a
    side object's, else None."""
    m = _SIDE_OBJECT.fullmatch(entry)
    if m is None or _library_name(m.group("queue")) is None:
        return None
    return m.group("queue"), m.group("id")


def _entries(prefix: str) -> List[str]:
    try:
        entries = os.listdir(OBJECT_DIR)
    except FileNotFoundError:
        return []
    wanted = OBJECT_PREFIX + prefix
    return sorted(e[len(OBJECT_PREFIX):] for e in entries if e.startswith(wanted) and len(e) > len(OBJECT_PREFIX))


def list_objects(prefix: str = "") -> List[str]:
    """Names of the queue objects whose name starts with ``prefix``, sorted
    (side objects left out: see ``list_side_objects``)."""
    return [e for e in _entries(prefix) if split_side_object(e) is None]


def list_side_objects(prefix: str = "") -> Dict[str, List[str]]:
    """The side objects of the queues whose name starts with ``prefix``:
    queue name -> paths, sorted."""
    found: Dict[str, List[str]] = {}
    for entry in _entries(prefix):
        split = split_side_object(entry)
        if split is not None:
            found.setdefault(split[0], []).append(os.path.join(OBJECT_DIR, OBJECT_PREFIX + entry))
    return found


def _add_side_objects(info: QueueInfo, paths: List[str]) -> None:
    for path in paths:
        try:
            info.side_bytes += os.lstat(path).st_size
        except FileNotFoundError:  # consumed meanwhile
            continue
        info.side_objects += 1


def _library_name(name: str) -> Optional[bytes]:
    """``name`` as the library takes it, or None if it is not a valid queue
    name (an object someone else made under our prefix)."""
    try:
        raw = _encode_name(name)
    except InvalidNameError:
        return None
    return raw if _lib.check_name(raw) == Status.RB_OK else None


def _not_found(name: str) -> QueueNotFoundError:
    return QueueNotFoundError(f"no queue named {name!r} (no {object_path(name)})")


def _inspect(name: str, raw: bytes) -> "_lib.RingBufferInfo":
    """``ring_buffer_inspect`` of ``name``; QueueNotFoundError if no object."""
    info = _lib.RingBufferInfo()
    rc = _lib.inspect(raw, ctypes.byref(info))
    if rc == Status.RB_ERR_NOT_FOUND:
        raise _not_found(name)
    if rc != Status.RB_OK:
        raise error_for(rc, f"cannot inspect queue {name!r}")
    return info


def lock_holders(name: str) -> Optional[List[int]]:
    """Pids of the live processes other than this one that have queue
    ``name`` open (sorted); None if the library cannot tell (a name it does
    not accept). QueueNotFoundError if there is no such object."""
    raw = _library_name(name)
    if raw is None:
        return None
    capacity = 64
    while True:
        pids = (ctypes.c_int * capacity)()
        count = _lib.attached_pids(raw, pids, capacity)
        if count == Status.RB_ERR_NOT_FOUND:
            raise _not_found(name)
        if count < 0:
            raise error_for(count, f"cannot list the processes attached to queue {name!r}")
        if count <= capacity:
            me = os.getpid()
            return [pid for pid in pids[:count] if pid != me]
        capacity = count  # more came meanwhile: ask again with room for all


def _owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# ---------------------------------------------------------------- inspection


def inspect_queue(name: str, *, open_queue: bool = True, with_side_objects: bool = True) -> QueueInfo:
    """Everything that can be learnt about queue ``name`` (see the module
    docstring); ``QueueNotFoundError`` if there is no such object."""
    info = QueueInfo(name=name, path=object_path(name))
    if with_side_objects:
        _add_side_objects(info, list_side_objects(name).get(name, []))
    raw = _library_name(name)
    if raw is None:
        # Not a name the library accepts: what the directory entry says.
        try:
            st = os.lstat(info.path)
        except FileNotFoundError:
            raise _not_found(name) from None
        _set_file_facts(info, st.st_size, st.st_uid, st.st_mode, st.st_mtime)
        info.status, info.detail = "bad-name", "name not valid for a queue (too long or bad characters)"
        return info
    found = _inspect(name, raw)
    _set_file_facts(info, found.object_size, found.owner_uid, found.mode, found.modified_ns / 1e9)
    holders = lock_holders(name)
    if holders is not None:
        info.attached_pids = holders
        info.attached = len(holders)
    if found.version:
        info.layout_version = int(found.version)
        info.ring_bytes = int(found.buffer_size)
    if found.creator_pid > 0:
        info.creator_pid = int(found.creator_pid)
        info.creator_alive = {1: True, 0: False}.get(found.creator_alive)
    if not stat_module.S_ISREG(found.mode):
        info.status, info.detail = "not-a-queue", "not a regular file"
        return info
    if open_queue:
        _add_stats(info)
    return info


def _set_file_facts(info: QueueInfo, size: int, uid: int, mode: int, modified: float) -> None:
    info.object_bytes = int(size)
    info.owner_uid = int(uid)
    info.owner = _owner_name(int(uid))
    info.mode = f"{stat_module.S_IMODE(mode):04o}"
    info.modified = modified


def _add_stats(info: QueueInfo) -> None:
    """Opens the queue for its statistics (and closes it), or records why it
    could not be opened in ``info.status``/``info.detail``."""
    try:
        q = SageQueue.open(info.name)
    except QueuePermissionError as exc:
        foreign = info.owner_uid != os.geteuid()
        info.status = "foreign" if foreign else "denied"
        info.detail = f"owned by {info.owner}" if foreign else str(exc)
        return
    except CorruptQueueError as exc:
        info.status, info.detail = "corrupt", str(exc)
        return
    except IncompatibleQueueError:
        info.status = "incompatible"
        info.detail = "not a queue of a known layout (bad magic, version or size)"
        return
    except InvalidNameError:
        info.status, info.detail = "bad-name", "name not valid for a queue (too long or bad characters)"
        return
    except QueueNotFoundError:
        info.status, info.detail = "error", "removed while being inspected"
        return
    except SageQueueError as exc:
        info.status, info.detail = "error", str(exc)
        return
    try:
        stats = q.get_stats()
    except SageQueueError as exc:
        info.status, info.detail = "corrupt" if isinstance(exc, CorruptQueueError) else "error", str(exc)
        return
    finally:
        q.close()
    info.layout_version = int(stats["version"])
    info.ring_bytes = int(stats["buffer_size"])
    info.status = "legacy" if info.layout_version == 1 else "ok"
    if info.status == "legacy":
        info.detail = "legacy layout (version 1): one producer and one consumer only"
    info.fill_percent = round(100.0 * float(stats["utilization"]), 2)
    info.messages = int(stats["message_count"])
    if info.attached is None:  # the library's count, less us
        info.attached = max(0, int(stats["attached_processes"]) - 1)


def scan_queues(prefix: str = "", *, open_queues: bool = True) -> List[QueueInfo]:
    """``inspect_queue`` for every queue object whose name starts with ``prefix``."""
    infos = []
    sides = list_side_objects(prefix)
    for name in list_objects(prefix):
        try:
            info = inspect_queue(name, open_queue=open_queues, with_side_objects=False)
        except QueueNotFoundError:  # removed meanwhile
            continue
        _add_side_objects(info, sides.pop(name, []))
        infos.append(info)
    # Side objects whose queue is gone (a remover or producer that died).
    for name, paths in sides.items():
        info = QueueInfo(name=name, path=object_path(name), status="gone",
                         detail="no queue object; its side objects are left: sage-queue gc removes them")
        _add_side_objects(info, paths)
        infos.append(info)
    return sorted(infos, key=lambda i: i.name)


def queue_stats(name: str) -> Dict[str, Any]:
    """Every key of ``SageQueue.get_stats()`` for queue ``name``, plus
    ``name``, ``status`` (``ok``, ``legacy``), ``detail``, ``owner``, ``owner_uid``, ``mode``,
    ``object_bytes``, ``creator_pid``, ``creator_alive``, ``attached_pids``
    and ``fill_percent``. ``attached_processes`` does not count this process.
    Raises the error that kept the queue from opening."""
    info = inspect_queue(name, open_queue=False)
    q = SageQueue.open(name)
    try:
        stats: Dict[str, Any] = dict(q.get_stats())
    finally:
        q.close()
    if info.attached is not None:
        stats["attached_processes"] = info.attached
    else:
        stats["attached_processes"] = max(0, int(stats["attached_processes"]) - 1)
    stats.update(
        name=name,
        status="legacy" if stats["version"] == 1 else "ok",
        detail="",
        owner=info.owner,
        owner_uid=info.owner_uid,
        mode=info.mode,
        object_bytes=info.object_bytes,
        creator_pid=info.creator_pid,
        creator_alive=info.creator_alive,
        attached_pids=info.attached_pids,
        fill_percent=round(100.0 * float(stats["utilization"]), 2),
    )
    return stats


# ---------------------------------------------------------------- removal


def remove_queue(name: str) -> List[int]:
    """Removes queue ``name``'s object (processes that have it open keep
    working until they close it). Returns the pids that still had it open;
    ``QueueNotFoundError`` if there is no such object, ``PermissionError``
    if it cannot be removed."""
    path = object_path(name)
    info = inspect_queue(name, open_queue=False)
    holders = info.attached_pids
    raw = _library_name(name)
    if raw is not None:
        _lib.destroy(raw)
    if os.path.lexists(path):
        # Not a name the library accepts, or its destroy could not unlink:
        # try ourselves, to report the reason.
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise PermissionError(
                    f"cannot remove queue {name!r}: permission denied (it belongs to {info.owner})"
                ) from None
            raise
    return holders


def collect_garbage(prefix: str = "", *, dry_run: bool = False, all_users: bool = False) -> GcReport:
    """Removes every queue object (name starting with ``prefix``) that no live
    process has open, using ``ring_buffer_remove_if_unused`` (the kernel's
    ``flock`` liveness decides, atomically with the removal: a process that
    opens the queue meanwhile keeps it). Objects of crashed programs go;
    queues in use stay. Only this user's objects are considered unless
    ``all_users`` (root could otherwise remove everyone's idle queues).
    Then the side objects (items larger than a ring) of dead processes go:
    ``ring_buffer_reclaim`` for every queue that has any (those of removed
    queues went with them), which also gives back the memory of the free
    slots of a queue's pool (made again when needed; not counted as
    removed). ``dry_run`` only reports (queues)."""
    report = GcReport(dry_run=dry_run)
    me = os.geteuid()
    for name in list_objects(prefix):
        try:
            info = inspect_queue(name, open_queue=False)
        except QueueNotFoundError:
            continue
        holders = info.attached_pids
        if info.owner_uid != me and not all_users:
            report.kept.append((name, f"owned by {info.owner} (--all-users to include it)", holders))
            continue
        raw = _library_name(name)
        if raw is None:
            report.kept.append((name, f"name not valid for a queue: remove it by hand ({info.path})", holders))
            continue
        if dry_run:
            if holders:
                report.kept.append((name, _in_use(holders), holders))
            else:
                report.removed.append(name)
            continue
        rc = _lib.remove_if_unused(raw)
        if rc == 1:
            report.removed.append(name)
        elif rc == 0:
            # In use: look again, the holders may have changed meanwhile.
            try:
                now = lock_holders(name) or holders
            except QueueNotFoundError:
                now = holders
            report.kept.append((name, _in_use(now), now))
        elif rc == Status.RB_ERR_NOT_FOUND:  # removed meanwhile
            continue
        else:
            report.kept.append((name, f"cannot remove: {strerror(rc)}", holders))
    if not dry_run:
        for name in list_side_objects(prefix):
            raw = _library_name(name)
            if raw is None:
                continue
            count = _lib.reclaim(raw)
            if count > 0:
                report.side_objects_removed[name] = int(count)
    return report


def _in_use(holders: List[int]) -> str:
    n = len(holders)
    pids = ", ".join(map(str, holders))
    return f"in use by {n} live process{'es' if n != 1 else ''} ({pids})" if n else "in use"
