"""A get that takes messages and then fails to unpickle one loses none:
the exception carries the items unpickled before it (``items_received``)
and the raw messages it could not return (``payloads_left``, the failing
one first), and ``SageQueue.decode`` turns each back into its item.

The failure is the common one: the consumer cannot find the item's class
(here it is removed from this module while the item is queued)."""

from __future__ import annotations

import asyncio
import pickle
import sys
from typing import Any, Callable, List, cast

import numpy as np
import pytest

from sage_queue import SageQueue
from sage_queue.descriptor import resolve_descriptor, start_rpc_queue_server

from conftest import unique_name

ME = sys.modules[__name__]


class Gone:
    """An item whose class the consumer will not find."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return type(other).__name__ == "Gone" and getattr(other, "value", None) == self.value


class Here:
    """An item the consumer finds, pickled as long as a ``Gone`` of the same
    value (a class name of the same length, in the same module)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return type(other) is Here and other.value == self.value


def without_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(ME, "Gone")


def check_carried(exc: BaseException, received: List[Any], left: List[Any], q: SageQueue) -> None:
    """What ``exc`` carries: ``received``, and payloads that decode (with
    Gone back) to ``left``; its note says where they are."""
    assert cast(Any, exc).items_received == received
    payloads = cast(Any, exc).payloads_left
    assert all(type(p) is bytes for p in payloads)
    decoded = [q.decode(p) for p in payloads]
    assert len(decoded) == len(left)
    for got, want in zip(decoded, left):
        if isinstance(want, np.ndarray):
            assert isinstance(got, np.ndarray) and got.dtype == want.dtype and np.array_equal(got, want)
        else:
            assert got == want
    notes = "".join(getattr(exc, "__notes__", []))
    if sys.version_info >= (3, 11):
        assert "payloads_left" in notes and "items_received" in notes and "none is lost" in notes


def test_get_many_failing_midway_returns_the_batch_through_the_exception(
        make_queue: Callable[..., SageQueue], monkeypatch: pytest.MonkeyPatch) -> None:
    q = make_queue()
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    sent: List[Any] = [1, "two", Gone(3), array, {"five": 5}, b"six"]
    q.put_many(sent)
    with monkeypatch.context() as patch:
        without_gone(patch)
        with pytest.raises(AttributeError, match="Gone") as info:
            q.get_many(100, timeout=10)
    assert q.qsize() == 0  # taken, and carried by the exception
    check_carried(info.value, [1, "two"], sent[2:], q)


def test_get_many_failing_midway_in_a_batch_of_one_length(
        make_queue: Callable[..., SageQueue], monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch whose payloads are all of one length is cut by slices made
    once per length (see ``queue._uniform_slices``): a failure there carries
    the batch the same way."""
    q = make_queue()
    sent: List[Any] = [Here(k) for k in range(12)]
    sent[7] = Gone(7)
    assert len({len(pickle.dumps(item, pickle.HIGHEST_PROTOCOL)) for item in sent}) == 1
    q.put_many(sent)
    with monkeypatch.context() as patch:
        without_gone(patch)
        with pytest.raises(AttributeError, match="Gone") as info:
            q.get_many(100, timeout=10)
    assert q.qsize() == 0
    check_carried(info.value, sent[:7], sent[7:], q)


def test_get_many_failing_after_an_out_of_band_item(
        make_queue: Callable[..., SageQueue], monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch holds an item with out-of-band buffers before the failing
    one (the loop that reads those fails later)."""
    q = make_queue()
    sent: List[Any] = [np.ones(5, dtype=np.int64), Gone("x"), 7]
    q.put_many(sent)
    with monkeypatch.context() as patch:
        without_gone(patch)
        with pytest.raises(AttributeError) as info:
            q.get_many(10, timeout=10)
    received = cast(Any, info.value).items_received
    assert len(received) == 1 and np.array_equal(received[0], sent[0])
    check_carried(info.value, received, sent[1:], q)


def test_get_carries_its_item_in_the_ring_and_out_of_line(
        make_queue: Callable[..., SageQueue], monkeypatch: pytest.MonkeyPatch) -> None:
    q = make_queue(64 * 1024)
    small, large = Gone("small"), Gone(b"L" * (256 * 1024))  # the second is larger than the ring
    for item in (small, large):
        q.put(item)
        with monkeypatch.context() as patch:
            without_gone(patch)
            with pytest.raises(AttributeError) as info:
                q.get(timeout=10)
        check_carried(info.value, [], [item], q)
    assert q.qsize() == 0


def test_custom_loads_failures_carry_the_messages(make_queue: Callable[..., SageQueue]) -> None:
    def loads(data: bytes) -> Any:
        item = pickle.loads(data)
        if item == "bad":
            raise ValueError("refused")
        return item

    q = make_queue(dumps=pickle.dumps, loads=loads)
    q.put_many(["a", "bad", "c"])
    with pytest.raises(ValueError, match="refused") as info:
        q.get_many(10, timeout=10)
    assert cast(Any, info.value).items_received == ["a"]
    assert [pickle.loads(p) for p in cast(Any, info.value).payloads_left] == ["bad", "c"]
    q.put("bad")
    with pytest.raises(ValueError, match="refused") as info:
        q.get(timeout=10)
    assert [pickle.loads(p) for p in cast(Any, info.value).payloads_left] == ["bad"]


def test_get_async_carries_its_item(make_queue: Callable[..., SageQueue], monkeypatch: pytest.MonkeyPatch) -> None:
    q = make_queue()
    q.put(Gone(42))
    with monkeypatch.context() as patch:
        without_gone(patch)
        with pytest.raises(AttributeError) as info:
            asyncio.run(asyncio.wait_for(q.get_async(timeout=10), 60))
    check_carried(info.value, [], [Gone(42)], q)


def test_decode_reads_raw_messages_as_get_would(make_queue: Callable[..., SageQueue]) -> None:
    q = make_queue()
    array = np.arange(6).reshape(2, 3)[:, ::2]  # not contiguous
    q.put_many([{"k": [1, 2]}, array])
    first, second = (q.decode(p) for p in q.get_many_bytes(10, timeout=10))
    assert first == {"k": [1, 2]} and np.array_equal(second, array)


def test_rpc_queue_unpickling_failures_lose_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rpc type's get/get_many unpickle in the caller: the same."""
    server = start_rpc_queue_server()
    try:
        q: Any = resolve_descriptor(server.descriptor(unique_name("rpcu")))
        q.put_many([1, Gone(2), 3, Gone(4)])
        with monkeypatch.context() as patch:
            without_gone(patch)
            with pytest.raises(AttributeError) as many:
                q.get_many(3, timeout=60)
            with pytest.raises(AttributeError) as one:
                q.get(timeout=60)
        assert cast(Any, many.value).items_received == [1]
        assert [pickle.loads(p) for p in cast(Any, many.value).payloads_left] == [Gone(2), 3]
        assert cast(Any, one.value).items_received == []
        assert [pickle.loads(p) for p in cast(Any, one.value).payloads_left] == [Gone(4)]
        assert q.qsize() == 0
    finally:
        server.stop()
