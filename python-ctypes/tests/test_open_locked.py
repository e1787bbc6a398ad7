"""Opening a queue whose object another process holds under an exclusive
``flock`` (issue 9, item 4). ``SageQueue(name)`` used to wait in the kernel
for ever, deaf to Ctrl-C. Now the wait is bounded (a clear ``TimeoutError``)
and Ctrl-C interrupts it; an object of another user is refused at once."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from typing import Iterator

import pytest

from sage_queue import QueuePermissionError, SageQueue, open_queue

from conftest import SHM, child_env, interrupt, reaped

TRY_OPEN = r"""
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from sage_queue import SageQueue
print("opening", flush=True)
try:
    while True:  # an application that insists: only Ctrl-C stops it
        try:
            SageQueue(sys.argv[1])
        except TimeoutError:
            pass
except KeyboardInterrupt:
    print("interrupted", flush=True)
    raise
"""


@pytest.fixture
def locked(qname: str) -> Iterator[str]:
    """Queue ``qname``, its object held under LOCK_EX by this process
    through a descriptor of its own (what a foreign tool would do)."""
    SageQueue(qname, 4096).close()
    fd = os.open(SHM / f"sage_ringbuf_{qname}", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield qname
    finally:
        os.close(fd)


def test_open_gives_up_with_a_clear_error(locked: str) -> None:
    with pytest.raises(TimeoutError, match="exclusive lock"):
        SageQueue(locked)
    with pytest.raises(TimeoutError, match="exclusive lock"):
        open_queue(locked)


def test_ctrl_c_interrupts_an_open(locked: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", TRY_OPEN, locked], env=child_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with reaped(child):
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "opening"
        time.sleep(0.5)  # inside the bounded wait of an open, most likely
        out, err, _ = interrupt(child, timeout=30)
    assert "interrupted" in out and "KeyboardInterrupt" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's object takes root (chown)")
def test_foreign_object_is_refused_at_once(qname: str) -> None:
    SageQueue(qname, 4096, mode=0o666).close()
    path = SHM / f"sage_ringbuf_{qname}"
    os.chown(path, 65534, 65534)
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(QueuePermissionError):
            SageQueue(qname)
    finally:
        os.close(fd)
