"""The hot path: one C call per put and per get (and per batch) when the
operation succeeds at once, and no per-call allocation of receive buffers."""

from __future__ import annotations

import threading
from typing import Any, Callable, List, Tuple

import pytest

import sage_queue.queue as queue_module
from sage_queue import SageQueue, _lib

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
    for alias, name in (("_put_msg", "put_msg"), ("_get_msg", "get_msg")):
        monkeypatch.setattr(queue_module, alias, counting(name, getattr(queue_module, alias)))
    return calls


def test_one_c_call_per_operation(make_queue: Callable[..., SageQueue], c_calls: List[str]) -> None:
    q = make_queue(1 << 16)
    cases: List[Tuple[Callable[[], object], List[str]]] = [
        (lambda: q.put("a"), ["put_msg"]),
        (lambda: q.get(), ["get_msg"]),
        (lambda: q.put("b", timeout=5), ["put_msg"]),
        (lambda: q.get(timeout=5), ["get_msg"]),
        (lambda: q.put_nowait("c"), ["put_msg"]),
        (lambda: q.get_nowait(), ["get_msg"]),
        (lambda: q.put_bytes(b"d"), ["put_msg"]),
        (lambda: q.get_bytes(), ["get_msg"]),
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
