"""sage_queue.descriptor in one process: the descriptor's fields and round
trips, the registry, the QueueLike protocol, factories and helpers, and the
errors for malformed input, unknown types and missing metadata. (Other
processes: test_descriptor_processes.py; Ray types: test_ray.py.)"""

from __future__ import annotations

import copy
import json
import os
import pickle
import queue
import threading
from typing import Any, Callable, Dict, List, cast

import pytest

import sage_queue
from sage_queue import SageQueue, destroy_queue
from sage_queue import descriptor as D
from sage_queue.descriptor import (
    DEFAULT_SHM_MAXSIZE,
    QueueDescriptor,
    QueueLike,
    attach_to_shm_queue,
    get_local_queue,
    get_registered_queue_types,
    get_sage_queue,
    register_queue_implementation,
    resolve_descriptor,
    sage_queue_name,
    unregister_queue_implementation,
)
from sage_queue.errors import (
    DescriptorError,
    InvalidNameError,
    LocalQueueProcessError,
    MalformedDescriptorError,
    MissingMetadataError,
    UnknownQueueTypeError,
)
from sage_queue.hostid import host_id, host_name
from sage_queue.transport_local import forget_local_queue

from conftest import run_python, unique_name

BUILTINS = ["auto", "local", "ray_actor", "ray_queue", "rpc", "sage_queue", "shm"]


@pytest.fixture
def local_id(request: pytest.FixtureRequest) -> str:
    """A local queue id forgotten after the test."""
    queue_id = unique_name("loc")
    request.addfinalizer(lambda: forget_local_queue(queue_id))
    return queue_id


@pytest.fixture
def sage_desc(request: pytest.FixtureRequest) -> Callable[..., QueueDescriptor]:
    """Factory of sage_queue descriptors whose queues are destroyed afterwards."""
    names: List[str] = []

    def make(maxsize: int = 1 << 16, **kwargs: Any) -> QueueDescriptor:
        desc = QueueDescriptor.create_sage_queue(unique_name("sd"), maxsize, **kwargs)
        names.append(desc.metadata["queue_name"])
        return desc

    def destroy_all() -> None:

        for n in names:

            destroy_queue(n)


    request.addfinalizer(destroy_all)
    return make


# ---------------------------------------------------------------- the descriptor


def test_fields_defaults_and_equality() -> None:
    desc = QueueDescriptor("q1", "shm", {"shm_name": "x"}, 123.5)
    assert (desc.queue_id, desc.queue_type, desc.metadata, desc.created_timestamp) == ("q1", "shm", {"shm_name": "x"}, 123.5)
    assert desc == QueueDescriptor("q1", "shm", {"shm_name": "x"}, 123.5)
    assert desc != QueueDescriptor("q1", "shm", {"shm_name": "y"}, 123.5)
    assert desc != QueueDescriptor("q1", "shm", {"shm_name": "x"}, 124.0)
    assert desc != "q1"
    fresh = QueueDescriptor("q2", "local")
    assert fresh.metadata == {} and isinstance(fresh.created_timestamp, float) and fresh.created_timestamp > 1e9
    # Positional and keyword forms, as SAGE calls it.
    assert QueueDescriptor(queue_id="a", queue_type="b", metadata=None, created_timestamp=None).metadata == {}


def test_is_a_dataclass_as_in_sage() -> None:
    import dataclasses

    desc = QueueDescriptor("q1", "shm", {"shm_name": "x"}, 1.0)
    assert [f.name for f in dataclasses.fields(desc)] == ["queue_id", "queue_type", "metadata", "created_timestamp"]
    assert dataclasses.asdict(desc) == desc.to_dict()
    with pytest.raises(TypeError):
        hash(desc)  # mutable: unhashable, as a dataclass with eq


def test_metadata_is_copied() -> None:
    meta = {"k": 1}
    desc = QueueDescriptor("q", "t", meta, 1.0)
    meta["k"] = 2
    assert desc.metadata == {"k": 1}
    as_dict = desc.to_dict()
    as_dict["metadata"]["k"] = 3
    assert desc.metadata == {"k": 1}


def test_json_and_dict_round_trips() -> None:
    desc = QueueDescriptor("jobs", "sage_queue", {"queue_name": "jobs", "maxsize": 4096, "nested": {"a": [1, 2.5, None, True]}})
    text = desc.to_json()
    assert json.loads(text) == desc.to_dict()
    assert set(desc.to_dict()) == {"queue_id", "queue_type", "metadata", "created_timestamp"}
    assert QueueDescriptor.from_json(text) == desc
    assert QueueDescriptor.from_json(text.encode()) == desc
    assert QueueDescriptor.from_dict(desc.to_dict()) == desc
    # Timestamps survive exactly (JSON floats round-trip).
    assert QueueDescriptor.from_json(text).created_timestamp == desc.created_timestamp
    # Unknown keys (a newer writer) are ignored; a missing metadata is {}.
    assert QueueDescriptor.from_dict({**desc.to_dict(), "future_field": 1}) == desc
    assert QueueDescriptor.from_dict({"queue_id": "a", "queue_type": "local"}).metadata == {}


def test_pickle_and_copy() -> None:
    desc = QueueDescriptor("jobs", "shm", {"shm_name": "jobs", "maxsize": 1024}, 5.0)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert pickle.loads(pickle.dumps(desc, protocol)) == desc
    assert copy.deepcopy(desc) == desc and copy.copy(desc) == desc


def test_repr_hides_secrets() -> None:
    desc = QueueDescriptor("r", "rpc", {"host": "127.0.0.1", "port": 1, "authkey": "ab" * 32}, 1.0)
    text = repr(desc)
    assert "ab" * 32 not in text and "***" in text and "127.0.0.1" in text
    assert "ab" * 32 in desc.to_json()  # the JSON must carry it to work elsewhere


@pytest.mark.parametrize("text, fragment", [
    ("{", "invalid JSON"),
    ("", "invalid JSON"),
    (b"\xff\xfe", "invalid JSON"),
    ("[1, 2]", "must be a dict"),
    ("null", "must be a dict"),
    ('{"queue_type": "shm"}', "lacks 'queue_id'"),
    ('{"queue_id": "a"}', "lacks 'queue_type'"),
    ('{"queue_id": 5, "queue_type": "shm"}', "'queue_id' must be a string"),
    ('{"queue_id": "", "queue_type": "shm"}', "must not be empty"),
    ('{"queue_id": "a", "queue_type": "shm", "metadata": [1]}', "'metadata' must be a dict"),
    ('{"queue_id": "a", "queue_type": "shm", "created_timestamp": "now"}', "created_timestamp"),
])
def test_malformed_json_is_refused_clearly(text: Any, fragment: str) -> None:
    with pytest.raises(MalformedDescriptorError, match=fragment) as info:
        QueueDescriptor.from_json(text)
    assert isinstance(info.value, DescriptorError) and isinstance(info.value, ValueError)
    assert isinstance(info.value, sage_queue.SageQueueError)
    with pytest.raises(MalformedDescriptorError):
        resolve_descriptor(text if isinstance(text, (str, bytes)) else str(text))


def test_from_json_and_from_dict_type_errors() -> None:
    with pytest.raises(MalformedDescriptorError, match="from_dict"):
        QueueDescriptor.from_json({"queue_id": "a"})  # type: ignore[arg-type]
    with pytest.raises(MalformedDescriptorError, match="must be a dict"):
        QueueDescriptor.from_dict("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="QueueDescriptor"):
        resolve_descriptor(42)  # type: ignore[arg-type]


def test_metadata_that_is_not_json_is_reported_by_key() -> None:
    desc = QueueDescriptor("q", "local", {"fine": 1, "bad": object(), "nan": float("nan")})
    with pytest.raises(MalformedDescriptorError, match="'bad'.*'nan'|'nan'.*'bad'"):
        desc.to_json()
    assert pickle.loads(pickle.dumps(QueueDescriptor("q", "local", {"t": (1, 2)}))).metadata == {"t": (1, 2)}


# ---------------------------------------------------------------- registry


def test_builtin_types_are_registered() -> None:
    assert get_registered_queue_types() == BUILTINS
    assert D.BUILTIN_QUEUE_TYPES == ("local", "shm", "sage_queue", "ray_queue", "ray_actor", "rpc", "auto")


def test_unknown_type_says_what_to_do() -> None:
    desc = QueueDescriptor("q", "kafka", {})
    with pytest.raises(UnknownQueueTypeError) as info:
        resolve_descriptor(desc)
    message = str(info.value)
    assert "'kafka'" in message and "register_queue_implementation" in message
    for known in BUILTINS:
        assert known in message


class _ListQueue:
    """A registered implementation: built as cls(descriptor)."""

    built: List[QueueDescriptor] = []

    def __init__(self, descriptor: QueueDescriptor) -> None:
        self.descriptor = descriptor
        self.items: List[Any] = []
        _ListQueue.built.append(descriptor)

    def put(self, item: Any, block: bool = True, timeout: Any = None) -> None:
        self.items.append(item)

    def get(self, block: bool = True, timeout: Any = None) -> Any:
        if not self.items:
            raise queue.Empty
        return self.items.pop(0)

    def empty(self) -> bool:
        return not self.items

    def qsize(self) -> int:
        return len(self.items)


def test_register_resolve_unregister() -> None:
    register_queue_implementation("test_list", _ListQueue)
    try:
        assert "test_list" in get_registered_queue_types()
        desc = QueueDescriptor("lq", "test_list", {"x": 1})
        q: Any = resolve_descriptor(desc.to_json())
        assert isinstance(q, _ListQueue) and q.descriptor == desc and _ListQueue.built[-1] == desc
        q.put(1)
        assert q.qsize() == 1 and q.get() == 1 and q.empty()
        assert D.get_queue_implementation("test_list") is _ListQueue
    finally:
        unregister_queue_implementation("test_list")
    assert "test_list" not in get_registered_queue_types()
    with pytest.raises(UnknownQueueTypeError):
        resolve_descriptor(QueueDescriptor("lq", "test_list"))
    unregister_queue_implementation("never_registered")  # no error


def test_builtin_can_be_overridden_and_restored(local_id: str) -> None:
    register_queue_implementation("local", _ListQueue)
    try:
        assert isinstance(resolve_descriptor(QueueDescriptor.create_local_queue(local_id)), _ListQueue)
    finally:
        unregister_queue_implementation("local")
    assert type(resolve_descriptor(QueueDescriptor.create_local_queue(local_id))).__name__ == "LocalQueue"


def test_register_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="cls\\(descriptor\\)"):
        register_queue_implementation("x", 42)  # type: ignore[arg-type]
    with pytest.raises(MalformedDescriptorError):
        register_queue_implementation("", _ListQueue)
    register_queue_implementation("not_a_queue", lambda desc: object())
    try:
        with pytest.raises(TypeError, match="QueueLike"):
            resolve_descriptor(QueueDescriptor("q", "not_a_queue"))
    finally:
        unregister_queue_implementation("not_a_queue")


def test_queue_like_protocol() -> None:
    assert isinstance(queue.Queue(), QueueLike)
    assert isinstance(_ListQueue(QueueDescriptor("a", "b")), QueueLike)
    assert not isinstance(object(), QueueLike)
    assert not isinstance([], QueueLike)
    import inspect

    for name, params in {"put": ["self", "item", "block", "timeout"], "get": ["self", "block", "timeout"],
                         "empty": ["self"], "qsize": ["self"]}.items():
        signature = inspect.signature(getattr(QueueLike, name))
        assert list(signature.parameters) == params
        stdlib = inspect.signature(getattr(queue.Queue, name)).parameters
        assert [(p.name, p.default, p.kind) for p in signature.parameters.values()] == \
            [(p.name, p.default, p.kind) for p in stdlib.values()]


# ---------------------------------------------------------------- local


def test_local_queue_is_shared_by_threads(local_id: str) -> None:
    desc = QueueDescriptor.create_local_queue(local_id, maxsize=3)
    assert desc.queue_type == "local" and desc.metadata == {"maxsize": 3, "creator_pid": os.getpid()}
    a: Any = resolve_descriptor(desc)
    b: Any = resolve_descriptor(QueueDescriptor.from_json(desc.to_json()))
    assert isinstance(cast(object, a), QueueLike) and a.queue is b.queue and isinstance(a.queue, queue.Queue)
    assert cast(Any, get_local_queue(local_id)).queue is a.queue
    got: List[int] = []
    consumer = threading.Thread(target=lambda: got.extend(b.get(timeout=30) for _ in range(10)))
    consumer.start()
    for i in range(10):
        a.put(i, timeout=30)
    consumer.join(30)
    assert got == list(range(10))
    # maxsize 3 items: the fourth put is Full.
    a.put_many([1, 2, 3])
    assert a.full() and a.qsize() == 3 and not a.empty()
    with pytest.raises(queue.Full) as full:
        a.put_many([4], block=False)
    assert full.value.items_put == 0  # type: ignore[attr-defined]
    with pytest.raises(queue.Full):
        a.put(4, timeout=0.01)
    assert a.get_many(10) == [1, 2, 3]
    with pytest.raises(queue.Empty):
        a.get_nowait()
    with pytest.raises(ValueError, match="non-negative"):
        a.get(timeout=-1)


def test_local_descriptor_from_another_pid_is_refused(local_id: str) -> None:
    desc = QueueDescriptor.create_local_queue(local_id)
    desc.metadata["creator_pid"] = os.getpid() + 1_000_000
    with pytest.raises(LocalQueueProcessError) as info:
        resolve_descriptor(desc)
    message = str(info.value)
    assert "do not cross processes" in message and str(os.getpid()) in message
    for suggested in ("sage_queue", "shm", "rpc", "ray_queue", "ray_actor"):
        assert suggested in message


def test_local_queue_pickles_as_its_descriptor(local_id: str) -> None:
    q: Any = get_local_queue(local_id)
    q.put("x")
    again = pickle.loads(pickle.dumps(q))  # same process: the same queue
    assert again.queue is q.queue and again.get_nowait() == "x"


# ---------------------------------------------------------------- missing metadata


@pytest.mark.parametrize("queue_type, metadata, key", [
    ("local", {"maxsize": 0}, "creator_pid"),
    ("shm", {"maxsize": 1024}, "shm_name"),
    ("sage_queue", {}, "queue_name"),
    ("rpc", {"port": 1, "authkey": "00"}, "host"),
    ("rpc", {"host": "127.0.0.1", "authkey": "00"}, "port"),
    ("rpc", {"host": "127.0.0.1", "port": 1}, "authkey"),
    ("shm", {"shm_name": 5}, "shm_name"),
    ("local", {"creator_pid": "me"}, "creator_pid"),
])
def test_missing_or_mistyped_metadata(queue_type: str, metadata: Dict[str, Any], key: str) -> None:
    with pytest.raises(MissingMetadataError) as info:
        resolve_descriptor(QueueDescriptor("q", queue_type, metadata))
    message = str(info.value)
    assert repr(key) in message and "create_" in message  # names the factory to use


# ---------------------------------------------------------------- shm / sage_queue


def test_sage_queue_descriptor_resolves_to_a_sage_queue(sage_desc: Callable[..., QueueDescriptor]) -> None:
    desc = sage_desc(maxsize=8192)
    assert desc.metadata["queue_name"] == desc.queue_id and desc.metadata["maxsize"] == 8192
    q: Any = resolve_descriptor(desc)
    other: Any = resolve_descriptor(desc.to_json())
    try:
        assert isinstance(cast(object, q), SageQueue) and isinstance(cast(object, q), QueueLike) and q.maxsize == 8192
        assert q.descriptor == desc and q.queue_id == desc.queue_id
        q.put_many(range(100))
        assert other.qsize() == 100 and other.get_many(1000) == list(range(100))
        # Pickles as its descriptor, and comes back as the same queue.
        q.put("via pickle")
        clone = pickle.loads(pickle.dumps(q))
        assert type(clone) is type(q) and clone.descriptor == desc and clone.get(timeout=5) == "via pickle"
        clone.close()
    finally:
        q.close()
        other.close()


def test_shm_descriptor_and_helpers(qname: str) -> None:
    desc = QueueDescriptor.create_shm_queue("stage1", qname, 4096)
    assert desc.metadata == {"shm_name": qname, "maxsize": 4096, "auto_cleanup": False, "host_id": host_id(),
                             "host_name": host_name()}
    with SageQueue(qname, 4096) as plain:
        plain.put("from a plain SageQueue")
        q: Any = resolve_descriptor(desc)
        assert q.get(timeout=5) == "from a plain SageQueue"
        attached: Any = attach_to_shm_queue("stage1", qname)
        attached.put(1)
        assert plain.get(timeout=5) == 1
        for handle in (q, attached):
            handle.close()
    assert QueueDescriptor.create_shm_queue(None, qname).metadata["maxsize"] == DEFAULT_SHM_MAXSIZE
    with pytest.raises(InvalidNameError):
        QueueDescriptor.create_shm_queue("q", "a/b")
    with pytest.raises(ValueError):
        QueueDescriptor.create_shm_queue("q", qname, -1)


def test_get_sage_queue_same_id_same_queue(request: pytest.FixtureRequest) -> None:
    queue_id = unique_name("gsq")
    request.addfinalizer(lambda: destroy_queue(queue_id))
    a: Any = get_sage_queue(queue_id, 2048)
    b: Any = get_sage_queue(queue_id)
    try:
        a.put("x")
        assert b.get(timeout=5) == "x" and b.maxsize == 2048  # the existing queue's size
    finally:
        a.close()
        b.close()


def test_sage_queue_auto_cleanup(sage_desc: Callable[..., QueueDescriptor]) -> None:
    desc = sage_desc(auto_cleanup=True)
    q: Any = resolve_descriptor(desc)
    path = f"/dev/shm/sage_ringbuf_{desc.metadata['queue_name']}"
    assert os.path.exists(path)
    q.close()
    assert not os.path.exists(path)


def test_sage_queue_names() -> None:
    assert sage_queue_name("jobs") == "jobs"
    assert sage_queue_name("jobs", "tenant") == "tenant.jobs"
    for awkward in ("a/b", "x" * 80, "a..b", "tab\there", "op/" * 30):
        name = sage_queue_name(awkward)
        assert name == sage_queue_name(awkward)  # deterministic
        assert 0 < len(name.encode()) < 64 and "/" not in name and ".." not in name
        sage_queue.queue._encode_name(name)
    assert sage_queue_name("a/b") != sage_queue_name("a_b")
    long_a, long_b = "p" * 70 + "a", "p" * 70 + "b"
    assert sage_queue_name(long_a) != sage_queue_name(long_b)
    assert QueueDescriptor.create_sage_queue("x", namespace="ns").metadata["queue_name"] == "ns.x"


def test_factories_generate_ids_and_check_sizes(local_id: str) -> None:
    generated = QueueDescriptor.create_local_queue()
    assert generated.queue_id.startswith("local_")
    assert QueueDescriptor.create_local_queue(None).queue_id != generated.queue_id
    with pytest.raises(ValueError):
        QueueDescriptor.create_local_queue(local_id, -1)
    with pytest.raises(TypeError):
        QueueDescriptor.create_local_queue(local_id, "3")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        QueueDescriptor.create_sage_queue("x", 1.5)  # type: ignore[arg-type]


def test_rpc_descriptor_needs_a_key_or_a_local_server() -> None:
    with pytest.raises(ValueError, match="authkey"):
        QueueDescriptor.create_rpc_queue("127.0.0.1", 1, "q")
    desc = QueueDescriptor.create_rpc_queue("127.0.0.1", 1, "q", authkey=b"k" * 32)
    assert desc.metadata["authkey"] == (b"k" * 32).hex() and desc.metadata["port"] == 1
    with pytest.raises(ValueError, match="port"):
        QueueDescriptor.create_rpc_queue("127.0.0.1", 70000, "q", authkey=b"k" * 32)


def test_ray_types_need_ray_initialised() -> None:
    """In a fresh interpreter without ray.init(): a clear error, no cluster
    started behind the user's back."""
    code = (
        "from sage_queue.descriptor import QueueDescriptor, resolve_descriptor\n"
        "from sage_queue.errors import QueueUnavailableError\n"
        "import ray\n"
        "for make in (lambda: QueueDescriptor.create_ray_queue('q'),\n"
        "             lambda: QueueDescriptor.create_ray_actor_queue('q', 'holder'),\n"
        "             lambda: resolve_descriptor(QueueDescriptor('q', 'ray_actor', {'actor_name': 'a', 'namespace': 'n'}))):\n"
        "    try:\n"
        "        make()\n"
        "    except QueueUnavailableError as exc:\n"
        "        assert 'ray.init()' in str(exc), exc\n"
        "    else:\n"
        "        raise SystemExit('no error')\n"
        "assert not ray.is_initialized()\n"
        "print('ok')\n"
    )
    result = run_python(code)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
