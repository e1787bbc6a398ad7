"""The hot path: one C call per put and per get (and per batch) when the
operation succeeds at once, and no per-call allocation of receive buffers."""

from __future__ import annotations

import ctypes
import threading
from typing import Any, Callable, List, Tuple

import pytest

import sage_queue.queue as queue_module
from sage_queue import ClosedQueueError, SageQueue, _lib

from conftest import CFuncPtr


@pytest.fixture
def c_calls(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """Records the name of every libring_buffer function called."""
    calls: List[str] = []

    def counting(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            calls.append(name)
            return fn(*args)

        return wrapper

    for name, fn in list(vars(_lib).items()):
        if isinstance(fn, CFuncPtr):
            monkeypatch.setattr(_lib, name, counting(name, fn))
    for alias, name in (("_put_msg", "put_msg"), ("_get_msg", "get_msg"), ("_put_msg_args", "put_msg_args"),
                        ("_get_msg_args", "get_msg_args")):
        monkeypatch.setattr(queue_module, alias, counting(name, getattr(queue_module, alias)))
    return calls


def test_one_c_call_per_operation(make_queue: Callable[..., SageQueue], c_calls: List[str]) -> None:
    q = make_queue(1 << 16)
    cases: List[Tuple[Callable[[], object], List[str]]] = [
        (lambda: q.put("a"), ["put_msg_args"]),
        (lambda: q.get(), ["get_msg_args"]),
        (lambda: q.put("b", timeout=5), ["put_msg"]),
        (lambda: q.get(timeout=5), ["get_msg"]),
        (lambda: q.put_nowait("c"), ["put_msg"]),
        (lambda: q.get_nowait(), ["get_msg"]),
        # The raw-bytes calls take the same one-argument calls as put/get.
        (lambda: q.put_bytes(b"d"), ["put_msg_args"]),
        (lambda: q.get_bytes(), ["get_msg_args"]),
        (lambda: q.put_bytes(b"e", timeout=5), ["put_msg"]),
        (lambda: q.get_bytes(timeout=5), ["get_msg"]),
        (lambda: q.put_many(range(100)), ["put_packed"]),
        (lambda: q.get_many(100), ["get_many"]),
    ]
    for operation, expected in cases:
        c_calls.clear()
        operation()
        assert c_calls == expected


def test_receive_buffer_is_per_thread_and_reused(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    q.put_many(range(4))
    q.get()
    mine = q._receiver()
    q.get()
    q.get_many(1)
    assert q._receiver() is mine
    theirs: List[object] = []
    def get_then_record() -> None:
        q.get()
        theirs.append(q._receiver())

    t = threading.Thread(target=get_then_record)
    t.start()
    t.join(30)
    assert theirs and theirs[0] is not mine
    assert mine.cap == q.maxsize  # one message always fits: no retry needed


def test_large_gets_allocate_no_buffer_per_item(
    make_queue: Callable[..., SageQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Receiving 50 large items (issue 14, item 4): items in the ring larger
    than the thread's buffer grow it once and it is kept; items that went
    out of line arrive mapped, with no buffer; past MAX_KEPT_BUFFER an item
    gets a buffer of its own and the thread's buffer stays within the
    bound."""
    made: List[int] = []
    real = ctypes.create_string_buffer

    def counting(init: Any, size: Any = None) -> Any:
        made.append(init if isinstance(init, int) else len(init))
        return real(init) if size is None else real(init, size)

    monkeypatch.setattr(ctypes, "create_string_buffer", counting)
    q = make_queue(4 << 20, buffer_size=64 << 10)
    q.put("warm-up")
    assert q.get() == "warm-up" and made == [64 << 10]
    made.clear()
    in_ring, out_of_line = b"r" * (300 << 10), b"o" * (6 << 20)
    for i in range(50):
        item = [in_ring, out_of_line][i % 2]
        q.put(item)
        assert q.get(timeout=10) == item
        q.put_bytes(item)
        assert q.get_bytes(timeout=10) == item
        q.put_many([item, i])
        got = q.get_many(2, timeout=10)
        if len(got) == 1:  # a large item comes alone
            got += q.get_many(2, timeout=10)
        assert got == [item, i]
    assert made == [512 << 10], "one growth (to the next power of two), kept for every later item"
    rx = q._receiver()
    assert rx.cap == 512 << 10
    # Bounded: past MAX_KEPT_BUFFER each such item has a buffer of its own.
    monkeypatch.setattr(queue_module, "MAX_KEPT_BUFFER", 256 << 10)
    made.clear()
    big = b"b" * (1 << 20)
    fresh = make_queue(4 << 20, buffer_size=64 << 10)
    for _ in range(3):
        fresh.put_bytes(big)
        assert fresh.get_bytes(timeout=10) == big
    assert made[0] == 64 << 10 and made[1:] == [1 << 20] * 3
    assert fresh._receiver().cap == 64 << 10


def test_a_closed_queue_never_reaches_a_later_handle(make_queue: Callable[..., SageQueue]) -> None:
    # The blocking put and get pass their handle inside a struct made once
    # (ring_buffer_put_args_t, ring_buffer_get_args_t). The allocator gives a
    # queue opened after a close the same handle address: the closed
    # object's structs must not reach it (before they were cleared at close,
    # the closed queue's put went into the new queue and its get took the
    # new queue's item).
    first = make_queue()
    first.put("warm")  # this thread's receive buffer, with its struct
    assert first.get() == "warm"
    old_address = first._handle.value if first._handle is not None else None
    first.close()
    second = make_queue()
    assert second._handle is not None and second._handle.value == old_address, \
        "the allocator did not reuse the address: this test proves nothing here"
    second.put("second's")
    for call in (lambda: first.put("stray"), first.get, lambda: first.get(timeout=0.05)):
        with pytest.raises(ClosedQueueError):
            call()
    assert second.qsize() == 1 and second.get() == "second's"
