"""``auto_cleanup`` removes the queue its handle opened, never a newer queue
that took the name since (issue 9, item 1). Closing used to remove whatever
the name denoted at that moment, with its messages."""

from __future__ import annotations

import multiprocessing

from sage_queue import SageQueue, destroy_queue, open_queue

from conftest import SHM


def _exists(name: str) -> bool:
    return (SHM / f"sage_ringbuf_{name}").exists()


def test_old_handle_leaves_the_newer_queue(qname: str) -> None:
    old = SageQueue(qname, 1024, auto_cleanup=True)
    destroy_queue(qname)
    new = SageQueue(qname, 1024)
    new.put_many([1, 2, 3])
    new.close()
    old.close()
    assert _exists(qname), "closing the old handle removed the newer queue"
    with open_queue(qname) as again:
        assert again.get_many(10, timeout=5) == [1, 2, 3]


def test_auto_cleanup_still_removes_its_own_unused_queue(qname: str) -> None:
    q = SageQueue(qname, 1024, auto_cleanup=True)
    q.put("x")
    other = open_queue(qname)
    q.close()
    assert _exists(qname), "another handle still has it open"
    other.close()
    assert _exists(qname)  # the other handle did not ask for cleanup
    last = SageQueue.open(qname, auto_cleanup=True)
    last.close()
    assert not _exists(qname)


def _hold_then_close(name: str, opened: "multiprocessing.synchronize.Event",
                     go: "multiprocessing.synchronize.Event") -> None:
    old = SageQueue.open(name, auto_cleanup=True)
    opened.set()
    assert go.wait(60)
    old.close()


def test_across_processes(qname: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    opened, go = ctx.Event(), ctx.Event()
    SageQueue(qname, 1024).close()
    holder = ctx.Process(target=_hold_then_close, args=(qname, opened, go))
    holder.start()
    try:
        assert opened.wait(60)
        destroy_queue(qname)
        with SageQueue(qname, 1024) as new:
            new.put_many(["a", "b"])
        go.set()
        holder.join(60)
        assert holder.exitcode == 0
    finally:
        if holder.is_alive():
            holder.kill()
    assert _exists(qname), "another process closing an old auto_cleanup handle removed the newer queue"
    with open_queue(qname) as q:
        assert q.get_many(10, timeout=5) == ["a", "b"]
