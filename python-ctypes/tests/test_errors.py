"""Bad input and failures: each gives a specific exception with a message
that says what to do, and leaves the queue usable."""

from __future__ import annotations

import pickle
import queue
import re
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest

import sage_queue
from sage_queue import SageQueue, open_queue
from sage_queue._status import EXCEPTION_BY_CODE, Status, error_for

from conftest import REPO_ROOT, SHM

# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name", [123, 1.5, None, ["q"], object()])
def test_name_of_wrong_type(name: object) -> None:
    with pytest.raises(TypeError, match="str or bytes"):
        SageQueue(name)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        open_queue(name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name",
    ["", "a" * 64, "a" * 100, "é" * 32, "with/slash", "/leading", "nul\x00byte", "..", "ctl\x01char"],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(sage_queue.InvalidNameError) as info:
        SageQueue(name)
    assert isinstance(info.value, ValueError)
    assert "63 bytes" in str(info.value)


def test_longest_valid_name(request: pytest.FixtureRequest) -> None:
    from conftest import RUN_PREFIX

    name = (RUN_PREFIX + "x" * 63)[:63]
    request.addfinalizer(lambda: sage_queue.destroy_queue(name))
    with SageQueue(name) as q:
        q.put(1)
        assert q.get() == 1


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize("maxsize", ["1024", 1024.0, None, True, [1]])
def test_maxsize_of_wrong_type(qname: str, maxsize: object) -> None:
    with pytest.raises(TypeError, match="maxsize"):
        SageQueue(qname, maxsize)  # type: ignore[arg-type]
    assert not (SHM / f"sage_ringbuf_{qname}").exists()


@pytest.mark.parametrize("maxsize", [-1, -1024, 2**31 + 1, 2**40])
def test_maxsize_out_of_range(qname: str, maxsize: int) -> None:
    with pytest.raises(ValueError, match="maxsize"):
        SageQueue(qname, maxsize)
    assert not (SHM / f"sage_ringbuf_{qname}").exists()


def test_items_larger_than_the_ring_are_not_too_large(make_queue: Callable[..., SageQueue]) -> None:
    """Larger than the ring is not an error any more (issue 14): such items
    go out of line. MessageTooLargeError comes only when /dev/shm cannot hold
    one (test_large_items.test_too_large_only_when_dev_shm_cannot_hold_it)."""
    q = make_queue(1024)
    q.put("before")
    q.put(b"x" * 2000)
    q.put_bytes(b"x" * 1020)
    assert q.put_many(["ok", b"x" * 5000, "ok"]) == 3
    q.put(b"x" * 2000, block=False)
    assert q.qsize() == 7
    assert [q.get() for _ in range(2)] == ["before", b"x" * 2000]
    assert q.get_bytes() == b"x" * 1020
    assert [q.get() for _ in range(4)] == ["ok", b"x" * 5000, "ok", b"x" * 2000]
    q.put_bytes(b"y" * q.max_message_size)  # the largest that goes inline
    assert q.get_bytes() == b"y" * q.max_message_size
    assert q.qsize() == 0


# ---------------------------------------------------------------- items


class Unpicklable:
    def __reduce__(self) -> Tuple[Any, ...]:
        raise TypeError("cannot pickle this")


def test_unpicklable_items_leave_queue_usable(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    for bad in (lambda: 1, threading.Lock(), Unpicklable()):
        with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
            q.put(bad)
        with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
            q.put_many([1, bad, 2])
    assert q.qsize() == 0
    q.put("fine")
    assert q.get() == "fine"


def test_put_bytes_rejects_non_bytes(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    with pytest.raises(TypeError):
        q.put_bytes("text")  # type: ignore[arg-type]
    assert q.qsize() == 0


# ---------------------------------------------------------------- closed


def test_closed_queue(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    q.put(1)
    q.close()
    operations: List[Callable[[], object]] = [
        lambda: q.put(1), lambda: q.put_nowait(1), lambda: q.get(), lambda: q.get_nowait(),
        lambda: q.get(timeout=1), lambda: q.put(2, timeout=1), lambda: q.put_bytes(b"x"), lambda: q.get_bytes(),
        lambda: q.put_many([1, 2]), lambda: q.get_many(2), lambda: q.qsize(), lambda: q.empty(), lambda: q.full(),
        lambda: q.get_stats(), lambda: q.reset_stats(), lambda: q.get_reference(), lambda: q.shutdown(),
        lambda: q.task_done(), lambda: q.join(), lambda: pickle.dumps(q), lambda: q.is_shutdown,
    ]
    for op in operations:
        with pytest.raises(sage_queue.ClosedQueueError, match="closed") as info:
            op()
        assert isinstance(info.value, ValueError)
    q.close()  # still idempotent
    with open_queue(q.name) as again:  # the queue itself is intact
        assert again.get() == 1


def test_close_while_other_thread_waits(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    errors = []

    def wait() -> None:
        try:
            q.get(timeout=30)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    import time

    time.sleep(0.25)
    q.close()
    t.join(30)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], sage_queue.ClosedQueueError)


# ---------------------------------------------------------------- mapping


def _header_codes() -> Dict[str, int]:
    text = (REPO_ROOT / "include" / "ring_buffer.h").read_text()
    return {name: int(value) for name, value in re.findall(r"^\s*(RB_(?:OK|ERR_\w+)) = (-?\d+),", text, re.M)}


def test_status_codes_match_header() -> None:
    codes = _header_codes()
    assert len(codes) == 18
    assert {s.name: int(s) for s in Status} == codes


def test_every_error_code_maps_to_a_specific_exception() -> None:
    assert set(EXCEPTION_BY_CODE) == {int(s) for s in Status if s != Status.RB_OK}
    expected = {
        Status.RB_ERR_INVALID_ARG: (sage_queue.InvalidArgumentError, ValueError),
        Status.RB_ERR_INVALID_NAME: (sage_queue.InvalidNameError, ValueError),
        Status.RB_ERR_NOT_FOUND: (sage_queue.QueueNotFoundError, FileNotFoundError),
        Status.RB_ERR_EXISTS: (sage_queue.QueueExistsError, FileExistsError),
        Status.RB_ERR_PERMISSION: (sage_queue.QueuePermissionError, PermissionError),
        Status.RB_ERR_NO_SPACE: (sage_queue.NoSpaceError, OSError),
        Status.RB_ERR_INCOMPATIBLE: (sage_queue.IncompatibleQueueError, sage_queue.SageQueueError),
        Status.RB_ERR_CORRUPT: (sage_queue.CorruptQueueError, sage_queue.SageQueueError),
        Status.RB_ERR_EMPTY: (queue.Empty, queue.Empty),
        Status.RB_ERR_FULL: (queue.Full, queue.Full),
        Status.RB_ERR_TOO_LARGE: (sage_queue.MessageTooLargeError, ValueError),
        Status.RB_ERR_BUFFER_TOO_SMALL: (sage_queue.BufferTooSmallError, sage_queue.SageQueueError),
        Status.RB_ERR_SHUTDOWN: (sage_queue.ShutDown, sage_queue.ShutDown),
        Status.RB_ERR_SYSTEM: (sage_queue.SystemCallError, OSError),
        Status.RB_ERR_PANIC: (sage_queue.InternalError, sage_queue.SageQueueError),
        Status.RB_ERR_FRAMING: (sage_queue.FramingError, sage_queue.SageQueueError),
    }
    for status, (cls, also) in expected.items():
        exc = error_for(int(status), "doing something")
        assert type(exc) is cls and isinstance(exc, also), status
        assert str(exc).startswith("doing something: ") and len(str(exc)) > len("doing something: ") + 5
        if isinstance(exc, sage_queue.SageQueueError):
            assert exc.code == int(status)


def test_system_error_keeps_errno() -> None:
    import errno

    exc = error_for(int(Status.RB_ERR_SYSTEM), "open", errno_value=errno.EMFILE)
    assert isinstance(exc, OSError) and exc.errno == errno.EMFILE
    assert "errno 24" in str(exc)


def test_shutdown_is_stdlib_on_313() -> None:
    import sys

    if sys.version_info >= (3, 13):
        assert sage_queue.ShutDown is queue.ShutDown  # type: ignore[attr-defined]
    else:
        assert issubclass(sage_queue.ShutDown, Exception)


def test_not_a_queue_is_incompatible(qname: str) -> None:
    path = SHM / f"sage_ringbuf_{qname}"
    fd = __import__("os").open(path, __import__("os").O_CREAT | __import__("os").O_WRONLY, 0o600)
    try:
        __import__("os").write(fd, b"not a queue" * 100)
    finally:
        __import__("os").close(fd)
    with pytest.raises(sage_queue.IncompatibleQueueError, match=qname):
        open_queue(qname)
    with pytest.raises(sage_queue.IncompatibleQueueError):
        SageQueue(qname)
    assert Path(path).exists()
