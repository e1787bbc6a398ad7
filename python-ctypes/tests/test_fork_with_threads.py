"""A process forked while other threads are inside library calls (issue 9,
item 3): the fork start method, Python 3.11's default on Linux. The child
used to hang for ever in create/open/close when a thread of the parent held
the library's handle-registry lock at the instant of the fork. Here threads
create, use and close queues without pause while the main thread forks 150
children, each of which must create, use, close and remove a queue of its
own."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from typing import List

from sage_queue import SageQueue, _lib, destroy_queue

from conftest import SHM, unique_name

CHILDREN = 150
CHILD_LIMIT_S = 3.0


def _churn(name: str, stop: threading.Event, rounds: List[int]) -> None:
    # The calls that do little but take the library's handle registry lock
    # (a count: its read lock; closing a pointer that is no handle: its write
    # lock), straight through ctypes, which releases the GIL around each: a
    # thread can be inside one at the instant the main thread forks.
    with SageQueue(name, 1024) as q:
        handle = q._handle
        not_a_handle = ctypes.c_void_p(0x1000)
        count, close = _lib.msg_count, _lib.close
        while not stop.is_set():
            for _ in range(100):
                count(handle)
                close(not_a_handle)
            rounds[0] += 1


def _child(prefix: str) -> int:
    name = f"{prefix}{os.getpid()}"
    with SageQueue(name, 1024, exclusive=True) as q:
        q.put({"pid": os.getpid()})
        with SageQueue.open(name) as again:
            if again.get(timeout=5) != {"pid": os.getpid()}:
                return 3
    destroy_queue(name)
    return 0


def test_children_forked_amid_calls_work() -> None:
    stop = threading.Event()
    rounds = [0]
    names = [unique_name("fkt"), unique_name("fkt")]
    threads = [threading.Thread(target=_churn, args=(n, stop, rounds), daemon=True) for n in names]
    child_prefix = unique_name("fkc") + "_"
    for t in threads:
        t.start()
    hung, failed = 0, 0
    try:
        for _ in range(CHILDREN):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    # A hung child dies of SIGALRM (not a Python handler
                    # such as pytest-timeout's, which a thread stuck in C
                    # would never run).
                    signal.signal(signal.SIGALRM, signal.SIG_DFL)
                    signal.alarm(int(CHILD_LIMIT_S))
                    code = _child(child_prefix)
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM:
                hung += 1
            elif os.waitstatus_to_exitcode(status) != 0:
                failed += 1
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        for name in names:
            destroy_queue(name)
        for left in SHM.glob(f"sage_ringbuf_{child_prefix}*"):
            left.unlink()
    assert rounds[0] > 0
    assert (hung, failed) == (0, 0), f"{hung} of {CHILDREN} children hung, {failed} failed"
