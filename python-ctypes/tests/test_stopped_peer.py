"""Try-once calls while a stopped process holds the queue's lock (issue 9,
item 5). The library's try-once waits at most 100 ms for a lock held by
another process, then answers RB_ERR_TIMEOUT; ``get_nowait``/``put_nowait``
used to surface that as ``builtins.TimeoutError``. They must raise
``queue.Empty``/``queue.Full``, as documented, and
``shutdown(immediate=True)`` must not fail either.

A real process is stopped (SIGSTOP) at random instants while it streams
1 MiB messages, until it is caught holding the reader lock and then the
writer lock."""

from __future__ import annotations

import ctypes
import os
import queue
import random
import signal
import subprocess
import sys
import time
from typing import Callable, Iterator, Tuple

import pytest

from sage_queue import SageQueue, _lib
from sage_queue._status import Status

from conftest import child_env

# pool=False: its 1 MiB messages go through the ring, copied under the
# locks (from the pool, a medium message would hold the writer lock only
# for its descriptor).
STREAM = r"""
import sys
from sage_queue import open_queue
q = open_queue(sys.argv[1], pool=False)
payload = b"s" * (1 << 20)
print("streaming", flush=True)
while True:
    q.put_bytes(payload)
    q.get_bytes()
"""


def _held(q: SageQueue, side: str) -> bool:
    """Whether a try-once call on ``side`` finds its lock held (TIMEOUT).
    The probes never take a message from the stream: a 0-byte buffer cannot
    receive the streamer's 1 MiB message, and a probe message too large to
    fit beside one is taken back at once if it went in."""
    handle = q._handle
    length = ctypes.c_uint32()
    if side == "reader":
        rc = _lib.get_msg(handle, None, 0, ctypes.byref(length), 0)
        assert rc in (Status.RB_ERR_TIMEOUT, Status.RB_ERR_EMPTY, Status.RB_ERR_BUFFER_TOO_SMALL), rc
    else:
        probe = b"w" * (q.max_message_size - 8)
        rc = _lib.put_msg(handle, probe, len(probe), 0)
        if rc == Status.RB_OK:
            # The ring was empty: the streamer's next put waits for room, so
            # the probe is the one message queued. Take it back.
            buf = ctypes.create_string_buffer(len(probe))
            assert _lib.get_msg(handle, buf, len(buf), ctypes.byref(length), 5_000_000_000) == Status.RB_OK
            assert length.value == len(probe)
        assert rc in (Status.RB_OK, Status.RB_ERR_TIMEOUT, Status.RB_ERR_FULL), rc
    return bool(rc == Status.RB_ERR_TIMEOUT)


@pytest.fixture
def streamer(make_queue: Callable[..., SageQueue]) -> Iterator[Tuple[SageQueue, "subprocess.Popen[str]"]]:
    # Ring 2 MiB: one 1 MiB message fits, a second does not, so the probe
    # put can only ever find the ring full or its lock held.
    q = make_queue(1 << 21)
    child = subprocess.Popen([sys.executable, "-c", STREAM, q.name], env=child_env(),
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "streaming"
        yield q, child
    finally:
        child.kill()
        child.wait()


def _stop_holding(q: SageQueue, child: "subprocess.Popen[str]", side: str) -> None:
    rng = random.Random(side)
    for _ in range(400):
        time.sleep(rng.uniform(0.0005, 0.005))
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(0.01)  # let the stop land
        if _held(q, side):
            return
        os.kill(child.pid, signal.SIGCONT)
    pytest.fail(f"never caught the streamer holding the {side} lock")


def test_nowait_calls_say_empty_and_full(streamer: Tuple[SageQueue, "subprocess.Popen[str]"]) -> None:
    q, child = streamer
    _stop_holding(q, child, "reader")
    with pytest.raises(queue.Empty, match="^Queue is empty$"):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(block=False)
    with pytest.raises(queue.Empty):
        q.get_many(5, block=False)
    with pytest.raises(queue.Empty, match="^Get operation timed out$"):
        q.get(timeout=0.3)
    os.kill(child.pid, signal.SIGCONT)

    _stop_holding(q, child, "writer")
    with pytest.raises(queue.Full, match="^Queue is full$"):
        q.put_nowait("x")
    with pytest.raises(queue.Full) as full:
        q.put_many(["x", "y"], block=False)
    assert full.value.items_put == 0  # type: ignore[attr-defined]
    with pytest.raises(queue.Full, match="^Put operation timed out$"):
        q.put("x", timeout=0.3)
    os.kill(child.pid, signal.SIGCONT)

    _stop_holding(q, child, "reader")
    q.shutdown(immediate=True)  # the drain leaves what the stopped reader holds back
    assert q.is_shutdown
