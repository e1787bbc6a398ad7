"""Inspecting and cleaning up the queues of a machine (what the CLI shows).

Every queue is an object ``/dev/shm/sage_ringbuf_<name>``. What can be told
about one, from the cheapest and always available to the richest:

* ``lstat``: size, owner, mode, age (also for objects we cannot open);
* ``/proc/locks``: the live processes attached to it. Each open handle holds
  a shared ``flock`` on the object, which the kernel drops when the process
  dies, so this is liveness, not a counter; read here directly, it needs no
  handle (and so never counts us) and works for other users' objects too;
* the 200-byte header (read-only ``pread``, no handle, no lock): creator
  pid and layout version, when its magic says it is a queue;
* opening it (``SageQueue.open``): every statistic. Opening attaches us
  (our own ``flock``) until we close, so we always close, and our own pid is
  left out of the attached processes we report.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat as stat_module
import struct
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Set, Tuple

from . import _lib
from .errors import (
    CorruptQueueError,
    IncompatibleQueueError,
    InvalidNameError,
    QueueNotFoundError,
    QueuePermissionError,
    SageQueueError,
)
from .queue import SHM_DIR, SageQueue, _encode_name

__all__ = [
    "OBJECT_PREFIX",
    "QueueInfo",
    "GcReport",
    "object_path",
    "list_objects",
    "inspect_queue",
    "scan_queues",
    "queue_stats",
    "remove_queue",
    "collect_garbage",
    "lock_holders",
    "pid_alive",
]

#: File name prefix of queue objects in /dev/shm.
OBJECT_PREFIX = "sage_ringbuf_"
_MAGIC = 0x53414745424C4B52
_HEADER = struct.Struct("<QIIQQ")  # magic, version, buffer_size, head, tail
_CREATOR_PID = struct.Struct("<i")
_CREATOR_PID_OFFSET = 152
_HEADER_SIZE = 200

LockTable = Dict[Tuple[int, int, int], Set[int]]


@dataclass
class QueueInfo:
    """What is known about one queue object. ``status``: ``ok``, ``legacy``
    (opened; a version-1 object of the legacy C library), or why it could
    not be opened: ``foreign`` (another user's), ``denied``, ``corrupt``,
    ``incompatible`` (not a queue of a known layout), ``bad-name``,
    ``not-a-queue`` (not a regular file), ``error``; ``detail`` says more.
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

    def to_dict(self) -> Dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "removed": list(self.removed),
            "kept": [{"name": n, "reason": r, "attached_pids": p} for n, r, p in self.kept],
        }


# ---------------------------------------------------------------- primitives


def object_path(name: str) -> str:
    """Path of the object of queue ``name``."""
    return os.path.join(SHM_DIR, OBJECT_PREFIX + name)


def list_objects(prefix: str = "") -> List[str]:
    """Names of the queue objects in /dev/shm whose name starts with ``prefix``, sorted."""
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    wanted = OBJECT_PREFIX + prefix
    return sorted(e[len(OBJECT_PREFIX):] for e in entries if e.startswith(wanted) and len(e) > len(OBJECT_PREFIX))


def read_lock_table() -> Optional[LockTable]:
    """``flock`` holders by (major, minor, inode), from /proc/locks (None if
    unreadable). Lines read ``N: FLOCK ADVISORY READ <pid> <maj>:<min>:<ino> 0
    EOF`` (device numbers in hex); waiters (``N: -> FLOCK ...``) hold nothing."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    table: LockTable = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            pid = int(fields[4])
            major, minor, ino = fields[5].split(":")
            key = (int(major, 16), int(minor, 16), int(ino))
        except ValueError:
            continue
        table.setdefault(key, set()).add(pid)
    return table


def lock_holders(st: os.stat_result, table: Optional[LockTable] = None) -> Optional[List[int]]:
    """Pids of the live processes other than this one that hold the object
    ``st`` open (sorted), or None if /proc/locks cannot be read."""
    if table is None:
        table = read_lock_table()
        if table is None:
            return None
    pids = table.get((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino), set())
    me = os.getpid()
    return sorted(p for p in pids if p != me)


def pid_alive(pid: int) -> Optional[bool]:
    """Whether process ``pid`` exists (None if ``pid`` is not a real pid)."""
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    return True


def _read_header(path: str) -> Optional[Tuple[int, int, int]]:
    """(version, buffer_size, creator_pid) from the object's header if it
    carries the queue magic; None if unreadable or not a queue."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = os.pread(fd, _HEADER_SIZE, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(raw) < _HEADER_SIZE:
        return None
    magic, version, buffer_size, _head, _tail = _HEADER.unpack_from(raw)
    if magic != _MAGIC:
        return None
    (creator,) = _CREATOR_PID.unpack_from(raw, _CREATOR_PID_OFFSET)
    return version, buffer_size, creator


def _owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# ---------------------------------------------------------------- inspection


def inspect_queue(name: str, table: Optional[LockTable] = None, *, open_queue: bool = True) -> QueueInfo:
    """Everything that can be learnt about queue ``name`` (see the module
    docstring); ``QueueNotFoundError`` if there is no such object."""
    path = object_path(name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise QueueNotFoundError(f"no queue named {name!r} (no {path})") from None
    info = QueueInfo(
        name=name,
        path=path,
        object_bytes=st.st_size,
        owner_uid=st.st_uid,
        owner=_owner_name(st.st_uid),
        mode=f"{stat_module.S_IMODE(st.st_mode):04o}",
        modified=st.st_mtime,
    )
    holders = lock_holders(st, table)
    if holders is not None:
        info.attached_pids = holders
        info.attached = len(holders)
    if not stat_module.S_ISREG(st.st_mode):
        info.status, info.detail = "not-a-queue", "not a regular file"
        return info
    header = _read_header(path)
    if header is not None:
        info.layout_version, info.ring_bytes, creator = header
        if creator > 0:
            info.creator_pid = creator
            info.creator_alive = pid_alive(creator)
    if open_queue:
        _add_stats(info, st)
    return info


def _add_stats(info: QueueInfo, st: os.stat_result) -> None:
    """Opens the queue for its statistics (and closes it), or records why it
    could not be opened in ``info.status``/``info.detail``."""
    try:
        q = SageQueue.open(info.name)
    except QueuePermissionError as exc:
        foreign = st.st_uid != os.geteuid()
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
    if info.attached is None:  # no /proc/locks: the library's count, less us
        info.attached = max(0, int(stats["attached_processes"]) - 1)


def scan_queues(prefix: str = "", *, open_queues: bool = True) -> List[QueueInfo]:
    """``inspect_queue`` for every queue object whose name starts with ``prefix``."""
    table = read_lock_table()
    infos = []
    for name in list_objects(prefix):
        try:
            infos.append(inspect_queue(name, table, open_queue=open_queues))
        except QueueNotFoundError:  # removed meanwhile
            continue
    return infos


def queue_stats(name: str) -> Dict[str, Any]:
    """Every key of ``SageQueue.get_stats()`` for queue ``name``, plus
    ``name``, ``status`` (``ok``, ``legacy``, ``corrupt``), ``detail``, ``owner``, ``owner_uid``, ``mode``,
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
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise QueueNotFoundError(f"no queue named {name!r} (no {path})") from None
    holders = lock_holders(st) or []
    try:
        raw = _encode_name(name)
    except InvalidNameError:
        raw = None
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
                    f"cannot remove queue {name!r}: permission denied (it belongs to {_owner_name(st.st_uid)})"
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
    ``dry_run`` only reports."""
    report = GcReport(dry_run=dry_run)
    table = read_lock_table()
    me = os.geteuid()
    for name in list_objects(prefix):
        path = object_path(name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        holders = lock_holders(st, table) or []
        if st.st_uid != me and not all_users:
            report.kept.append((name, f"owned by {_owner_name(st.st_uid)} (--all-users to include it)", holders))
            continue
        if dry_run:
            if holders:
                report.kept.append((name, _in_use(holders), holders))
            else:
                report.removed.append(name)
            continue
        try:
            raw = _encode_name(name)
        except InvalidNameError:
            report.kept.append((name, f"name not valid for a queue: remove it by hand ({path})", holders))
            continue
        rc = _lib.remove_if_unused(raw)
        if rc == 1:
            report.removed.append(name)
        elif rc == 0:
            # In use: look again, the holders may have changed meanwhile.
            now = lock_holders(st) or holders
            report.kept.append((name, _in_use(now), now))
        elif rc == -3:  # RB_ERR_NOT_FOUND: removed meanwhile
            continue
        else:
            from ._status import strerror

            report.kept.append((name, f"cannot remove: {strerror(rc)}", holders))
    return report


def _in_use(holders: List[int]) -> str:
    n = len(holders)
    pids = ", ".join(map(str, holders))
    return f"in use by {n} live process{'es' if n != 1 else ''} ({pids})" if n else "in use"
