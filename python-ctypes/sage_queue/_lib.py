"""Finding and loading ``libring_buffer.so``, and the C signatures we use.

Every C function this package calls is declared here with its ``argtypes``
and ``restype`` (ctypes would otherwise guess ``int`` for everything and
silently truncate pointers and 64-bit values). The rest of the package calls
only the module-level function objects defined at the bottom.

Where the library comes from, in order (the first one that loads wins):

1. ``$RING_BUFFER_LIB`` (a path to the ``.so``);
2. ``libring_buffer.so`` in this package's directory (``pip install`` builds
   it there from the Rust crate; ``make`` refreshes the editable install's);
3. the system search path (``libring_buffer.so.1`` via ``dlopen``, then
   ``ctypes.util.find_library("ring_buffer")``, e.g. after ``make install``).

Nothing here knows where a source tree is: an installed package depends on
no path into a repository.

Every declaration below (constants, structs, prototypes) is checked field by
field against ``include/ring_buffer.h`` by ``tests/test_header_drift.py``.

If none loads, importing ``sage_queue`` raises one ``ImportError`` naming
every candidate and why it failed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import warnings
from ctypes import (
    POINTER,
    Structure,
    c_bool,
    c_char,
    c_char_p,
    c_double,
    c_int,
    c_int32,
    c_int64,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

__all__ = [
    "LIBRARY_PATH",
    "LIBRARY_VERSION",
    "ENV_VAR",
    "SONAME",
    "RB_CREATE_EXCLUSIVE",
    "RB_OPEN_ALLOW_FOREIGN_OWNER",
    "RB_OPEN_NO_POOL",
    "RB_OPEN_POOL_MEDIUM",
    "RB_WAIT_FOREVER",
    "RB_NO_WAIT",
    "MAX_NAME_LEN",
    "RING_BUFFER_MIN_SIZE",
    "RING_BUFFER_MAX_SIZE",
    "RING_BUFFER_FRAME_PREFIX",
    "RING_BUFFER_POOLED_FROM",
    "RingBufferStats",
    "RingBufferStatsEx",
    "RingBufferRef",
    "RingBufferInfo",
    "OBJECT_DIR",
    "OBJECT_PREFIX",
]

#: Environment variable naming the library file to load first.
ENV_VAR = "RING_BUFFER_LIB"
#: The library's soname (what ``make install`` puts on the system path).
SONAME = "libring_buffer.so.1"
#: File name of the library inside the package.
LIB_FILE = "libring_buffer.so"

# Constants of include/ring_buffer.h.
RB_CREATE_EXCLUSIVE = 1
RB_OPEN_ALLOW_FOREIGN_OWNER = 2
RB_OPEN_NO_POOL = 4
RB_OPEN_POOL_MEDIUM = 8
RB_WAIT_FOREVER = -1
RB_NO_WAIT = 0
MAX_NAME_LEN = 64
RING_BUFFER_MIN_SIZE = 1024
RING_BUFFER_MAX_SIZE = 2**31
RING_BUFFER_FRAME_PREFIX = 4
RING_BUFFER_POOLED_FROM = 65536

# A function that only a library of this project exports (not the legacy C
# ring_buffer.so, which has the same file name on some systems).
_REQUIRED_SYMBOL = "ring_buffer_put_packed"


# ---------------------------------------------------------------- structs


class RingBufferStats(Structure):
    """``ring_buffer_stats_t`` (legacy statistics, 48 bytes)."""

    _fields_ = [
        ("buffer_size", c_uint32),
        ("available_read", c_uint32),
        ("available_write", c_uint32),
        ("readers", c_uint32),
        ("writers", c_uint32),
        ("ref_count", c_uint32),
        ("total_bytes_written", c_uint64),
        ("total_bytes_read", c_uint64),
        ("utilization", c_double),
    ]


class RingBufferStatsEx(Structure):
    """``ring_buffer_stats_ex_t``: the legacy statistics plus this library's."""

    _fields_ = RingBufferStats._fields_ + [
        ("version", c_uint32),
        ("attached_processes", c_uint32),
        ("messages_in", c_uint64),
        ("messages_out", c_uint64),
        ("messages_queued", c_uint64),
        ("sleeping_producers", c_uint32),
        ("sleeping_consumers", c_uint32),
        ("producer_waits", c_uint64),
        ("consumer_waits", c_uint64),
        ("wakeups", c_uint64),
        ("owner_died_recoveries", c_uint64),
        ("high_water_bytes", c_uint64),
        ("tasks_done", c_uint64),
        ("shutdown", c_uint32),
        ("reserved", c_uint32),
    ]


class RingBufferRef(Structure):
    """``ring_buffer_ref_t`` (76 bytes): what ``ring_buffer_get_ref`` returns."""

    _fields_ = [
        ("name", c_char * MAX_NAME_LEN),
        ("size", c_uint32),
        ("auto_cleanup", c_bool),
        ("creator_pid", c_int),
    ]


class RingBufferInfo(Structure):
    """``ring_buffer_info_t``: what ``ring_buffer_inspect`` learns about a
    queue object without attaching to it."""

    _fields_ = [
        ("object_size", c_uint64),
        ("modified_ns", c_int64),
        ("owner_uid", c_uint32),
        ("mode", c_uint32),
        ("header_status", c_int),
        ("version", c_uint32),
        ("buffer_size", c_uint32),
        ("creator_pid", c_int),
        ("head", c_uint64),
        ("tail", c_uint64),
        ("attached_processes", c_uint32),
        ("creator_alive", c_int32),
    ]


class RingBufferGetArgs(Structure):
    """``ring_buffer_get_args_t``: ``ring_buffer_get_msg``'s arguments in one
    struct, which a receiving thread fills once (``ring_buffer_get_msg_args``
    then costs ctypes one argument instead of five and an output)."""

    _fields_ = [
        ("rb", c_void_p),
        ("buf", c_void_p),
        ("cap", c_uint32),
        ("needed", c_uint32),
        ("timeout_ns", c_int64),
    ]


class RingBufferPutArgs(Structure):
    """``ring_buffer_put_args_t``: the arguments of ``ring_buffer_put_msg``
    that stay the same from put to put (``ring_buffer_put_msg_args``)."""

    _fields_ = [
        ("rb", c_void_p),
        ("timeout_ns", c_int64),
    ]


# Cheap guards at import (tests/test_header_drift.py checks every field's
# offset against the compiled header): a mismatch would corrupt memory.
assert ctypes.sizeof(RingBufferStats) == 48
assert ctypes.sizeof(RingBufferRef) == 76
assert ctypes.sizeof(RingBufferStatsEx) == 144
assert ctypes.sizeof(RingBufferInfo) == 64
assert ctypes.sizeof(RingBufferGetArgs) == 32
assert ctypes.sizeof(RingBufferPutArgs) == 16


# ---------------------------------------------------------------- loading


def _package_candidate() -> Path:
    return Path(__file__).resolve().parent / LIB_FILE


def _env_candidate() -> Optional[str]:
    return os.environ.get(ENV_VAR) or None


def _find_library_candidate() -> Optional[str]:
    # Runs ldconfig/gcc: only reached when every cheaper candidate failed.
    return ctypes.util.find_library("ring_buffer")


#: (description, how to get what to dlopen) in search order; a getter that
#: returns None means "nothing to try there".
_CANDIDATES: List[Tuple[str, Callable[[], Optional[str]]]] = [
    (f"${ENV_VAR}", _env_candidate),
    ("package directory", lambda: str(_package_candidate())),
    ("system search path (dlopen)", lambda: SONAME),
    ("ctypes.util.find_library('ring_buffer')", _find_library_candidate),
]


def _load() -> Tuple[ctypes.CDLL, str]:
    failures: List[str] = []
    env_failure: Optional[str] = None
    for label, get_target in _CANDIDATES:
        is_env = label.startswith("$")
        target = get_target()
        if target is None:
            failures.append(f"  {label}: {'not set' if is_env else 'nothing found'}")
            continue
        why: Optional[str] = None
        if os.sep in target and not os.path.exists(target):
            why = "no such file"
        else:
            try:
                # use_errno: RB_ERR_SYSTEM keeps the failing call's errno,
                # which ctypes.get_errno() then reads unclobbered by Python.
                lib = ctypes.CDLL(target, use_errno=True)
            except OSError as exc:
                why = str(exc)
            else:
                if not hasattr(lib, _REQUIRED_SYMBOL):
                    why = (
                        f"loads, but lacks {_REQUIRED_SYMBOL} "
                        "(the legacy C ring_buffer.so, or an old build?)"
                    )
        if why is not None:
            failures.append(f"  {label}: {target}: {why}")
            if is_env:
                env_failure = f"{target}: {why}"
            continue
        if env_failure is not None:
            # The user asked for a specific file: say loudly that we did not
            # use it rather than silently running another build.
            warnings.warn(
                f"sage_queue: ${ENV_VAR} could not be loaded ({env_failure}); "
                f"using {target} instead",
                RuntimeWarning,
                stacklevel=2,
            )
        return lib, _loaded_path(lib, target)
    raise ImportError(
        "sage_queue cannot load libring_buffer; tried, in order:\n"
        + "\n".join(failures)
        + "\nInstall the package with pip (`pip install ./python-ctypes` builds the "
        f"library from the Rust crate, a wheel carries it), set ${ENV_VAR} to the path "
        "of a libring_buffer.so, or install the library system-wide (`make install`)."
    )


def _loaded_path(lib: ctypes.CDLL, target: str) -> str:
    """The file a loaded library came from (resolves sonames via dladdr)."""
    if os.sep in target:
        return os.path.abspath(target)
    try:
        libdl = ctypes.CDLL(None)

        class _DlInfo(Structure):
            _fields_ = [
                ("dli_fname", c_char_p),
                ("dli_fbase", c_void_p),
                ("dli_sname", c_char_p),
                ("dli_saddr", c_void_p),
            ]

        dladdr = libdl.dladdr
        dladdr.argtypes = [c_void_p, POINTER(_DlInfo)]
        dladdr.restype = c_int
        info = _DlInfo()
        addr = ctypes.cast(getattr(lib, _REQUIRED_SYMBOL), c_void_p).value
        if dladdr(addr, ctypes.byref(info)) and info.dli_fname:
            return os.fsdecode(info.dli_fname)
    except (OSError, AttributeError):
        pass
    return target


_lib, LIBRARY_PATH = _load()


def _declare(name: str, restype: Any, argtypes: List[Any]) -> Callable[..., Any]:
    try:
        fn = getattr(_lib, name)
    except AttributeError:
        # An older build than this package (a system-wide install, a stale
        # $RING_BUFFER_LIB): say so rather than fail on a missing attribute.
        raise ImportError(
            f"sage_queue: {LIBRARY_PATH} lacks {name}: the library is older than this package; "
            f"install the library built from the same sources (or unset ${ENV_VAR})"
        ) from None
    fn.restype = restype
    fn.argtypes = argtypes
    return fn  # type: ignore[no-any-return]


# ---------------------------------------------------------------- signatures
# Handles are passed as c_void_p (None is NULL); names as NUL-terminated
# bytes. Timeouts are int64 nanoseconds: 0 try once, < 0 forever, > 0
# bounded.
#
# The message functions take their buffer and output pointers as c_void_p
# and are called with plain int addresses (ctypes.addressof) or bytes: that
# converts several times faster than a POINTER(c_uint32) argtype with a
# pointer object (measured: ~1 us per call less), and the ABI is the same.

strerror = _declare("ring_buffer_strerror", c_char_p, [c_int])
last_error = _declare("ring_buffer_last_error", c_int, [])
version = _declare("ring_buffer_version", c_char_p, [])

create_ex = _declare("ring_buffer_create_ex", c_void_p, [c_char_p, c_uint32, c_uint32, c_uint32])
open_ex = _declare("ring_buffer_open_ex", c_void_p, [c_char_p, c_uint32])
close = _declare("ring_buffer_close", None, [c_void_p])
destroy = _declare("ring_buffer_destroy", None, [c_char_p])
remove_if_unused = _declare("ring_buffer_remove_if_unused", c_int, [c_char_p])
close_remove_if_unused = _declare("ring_buffer_close_remove_if_unused", c_int, [c_void_p])
attached_processes = _declare("ring_buffer_attached_processes", c_int, [c_void_p])

put_msg = _declare("ring_buffer_put_msg", c_int, [c_void_p, c_void_p, c_uint32, c_int64])
put_msg_args = _declare("ring_buffer_put_msg_args", c_int, [c_void_p, c_void_p, c_uint32])
get_msg = _declare("ring_buffer_get_msg", c_int, [c_void_p, c_void_p, c_uint32, c_void_p, c_int64])
get_msg_args = _declare("ring_buffer_get_msg_args", c_int64, [c_void_p])
put_msgv = _declare("ring_buffer_put_msgv", c_int, [c_void_p, c_void_p, c_void_p, c_uint32, c_int64])
get_msg_fd = _declare("ring_buffer_get_msg_fd", c_int, [c_void_p, c_void_p, c_uint32, c_void_p, c_void_p, c_int64])
get_msg_lease = _declare(
    "ring_buffer_get_msg_lease", c_int, [c_void_p, c_void_p, c_uint32, c_void_p, c_void_p, c_void_p, c_int64]
)
lease_release = _declare("ring_buffer_lease_release", c_int, [c_void_p])
put_packed = _declare("ring_buffer_put_packed", c_int, [c_void_p, c_void_p, c_void_p, c_uint32, c_int64])
get_many = _declare(
    "ring_buffer_get_many", c_int, [c_void_p, c_void_p, c_uint32, c_void_p, c_uint32, c_int64]
)
# Waits that consume and reserve nothing (the asyncio layer's waiter threads).
wait_readable = _declare("ring_buffer_wait_readable", c_int, [c_void_p, c_int64])
wait_writable = _declare("ring_buffer_wait_writable", c_int, [c_void_p, c_uint32, c_int64])

msg_count = _declare("ring_buffer_msg_count", c_uint64, [c_void_p])
available_write = _declare("ring_buffer_available_write", c_uint32, [c_void_p])
msg_count_checked = _declare("ring_buffer_msg_count_checked", c_int, [c_void_p, POINTER(c_uint64)])
available_write_checked = _declare("ring_buffer_available_write_checked", c_int, [c_void_p, POINTER(c_uint32)])
get_stats_ex = _declare("ring_buffer_get_stats_ex", None, [c_void_p, POINTER(RingBufferStatsEx)])
get_stats_ex_checked = _declare(
    "ring_buffer_get_stats_ex_checked", c_int, [c_void_p, POINTER(RingBufferStatsEx)]
)
reset_stats = _declare("ring_buffer_reset_stats", None, [c_void_p])

shutdown = _declare("ring_buffer_shutdown", c_int, [c_void_p])
is_shutdown = _declare("ring_buffer_is_shutdown", c_int, [c_void_p])
task_done = _declare("ring_buffer_task_done", c_int, [c_void_p])
join = _declare("ring_buffer_join", c_int, [c_void_p, c_int64])
unfinished_tasks = _declare("ring_buffer_unfinished_tasks", c_uint64, [c_void_p])
unfinished_tasks_checked = _declare("ring_buffer_unfinished_tasks_checked", c_int, [c_void_p, POINTER(c_uint64)])

get_ref = _declare("ring_buffer_get_ref", POINTER(RingBufferRef), [c_void_p])
release_ref = _declare("ring_buffer_release_ref", None, [POINTER(RingBufferRef)])

# Looking at queues from outside (admin.py), without attaching.
check_name = _declare("ring_buffer_check_name", c_int, [c_char_p])
object_dir = _declare("ring_buffer_object_dir", c_char_p, [])
object_prefix = _declare("ring_buffer_object_prefix", c_char_p, [])
inspect = _declare("ring_buffer_inspect", c_int, [c_char_p, POINTER(RingBufferInfo)])
attached_pids = _declare("ring_buffer_attached_pids", c_int, [c_char_p, POINTER(c_int), c_uint32])
reclaim = _declare("ring_buffer_reclaim", c_int, [c_char_p])

#: Version string of the loaded library, e.g. "1.0.0".
LIBRARY_VERSION: str = (version() or b"?").decode("ascii", "replace")
#: Directory of the queue objects ("/dev/shm"), from the library.
OBJECT_DIR: str = object_dir().decode()
#: File-name prefix of every queue object in OBJECT_DIR ("sage_ringbuf_"), from the library.
OBJECT_PREFIX: str = object_prefix().decode()
