"""Machine identity (issue 15, item 1): ``shm``/``sage_queue`` descriptors,
SageQueue pickles and SageQueueRefs record the machine they were made on;
a process on another machine (simulated with ``SAGE_QUEUE_HOST_ID``) gets
``QueueUnavailableError`` naming both machines, and nothing is created in
/dev/shm. Descriptors, pickles and references written by 1.0 (no identity)
still resolve. Every "other machine" here is a real process: a spawned pool
worker or a fresh interpreter."""

from __future__ import annotations

import base64
import json
import multiprocessing as mp
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest

from sage_queue import SageQueue, SageQueueRef, destroy_queue
from sage_queue.descriptor import QueueDescriptor, resolve_descriptor
from sage_queue.errors import QueueUnavailableError
from sage_queue.hostid import BOOT_ID_PATH, HOST_ID_ENV, host_id
from sage_queue.queue import _reattach

import _descriptor_workers as workers
from conftest import SHM, child_env, run_python, unique_name

OTHER = "t15-another-machine"


def exists(name: str) -> bool:
    return (SHM / f"sage_ringbuf_{name}").exists()


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[ProcessPoolExecutor]:
    """A spawned worker process that plays another machine."""
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=workers.set_host_id,
                             initargs=(OTHER,)) as pool:
        yield pool


@pytest.fixture
def names(request: pytest.FixtureRequest) -> Callable[[], str]:
    made: List[str] = []

    def make() -> str:
        made.append(unique_name("mid"))
        return made[-1]

    def cleanup() -> None:
        for name in made:
            destroy_queue(name)

    request.addfinalizer(cleanup)
    return make


def describe(queue_type: str, name: str) -> QueueDescriptor:
    if queue_type == "shm":
        return QueueDescriptor.create_shm_queue(name, name, 1 << 16)
    return QueueDescriptor.create_sage_queue(name, 1 << 16)


def assert_names_both_machines(message: str) -> None:
    assert repr(host_id()) in message and repr(OTHER) in message, message
    assert "nothing was opened or created" in message and "create_auto_queue" in message


def test_host_id_is_the_boot_id_unless_overridden() -> None:
    boot_id = Path(BOOT_ID_PATH).read_text().strip()
    assert boot_id
    result = run_python("from sage_queue.hostid import host_id; print(host_id())", env=child_env(**{HOST_ID_ENV: ""}))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == boot_id
    result = run_python("from sage_queue.hostid import host_id; print(host_id())", env=child_env(**{HOST_ID_ENV: OTHER}))
    assert result.stdout.strip() == OTHER


@pytest.mark.parametrize("queue_type", ["shm", "sage_queue"])
def test_descriptor_json_refused_on_another_machine(queue_type: str, names: Callable[[], str],
                                                    elsewhere: ProcessPoolExecutor) -> None:
    name = names()
    desc = describe(queue_type, name)
    assert desc.metadata["host_id"] == host_id() and desc.metadata["host_name"]
    text = desc.to_json()
    assert QueueDescriptor.from_json(text).metadata["host_id"] == host_id()
    # A spawned process on "another machine": refused, nothing created.
    with pytest.raises(QueueUnavailableError) as info:
        elsewhere.submit(workers.resolve_only, text).result(timeout=120)
    assert_names_both_machines(str(info.value))
    assert not exists(desc.metadata.get("shm_name") or desc.metadata["queue_name"])
    # A fresh interpreter, the JSON on its command line: the same.
    code = ("import sys\nfrom sage_queue.descriptor import resolve_descriptor\n"
            "from sage_queue.errors import QueueUnavailableError\n"
            "try:\n    resolve_descriptor(sys.argv[1])\nexcept QueueUnavailableError as e:\n    print(e)\n"
            "else:\n    sys.exit('resolved on another machine')\n")
    result = run_python_args(code, [text], HOST_ID_ENV, OTHER)
    assert result.returncode == 0, result.stderr + result.stdout
    assert_names_both_machines(result.stdout)
    assert not exists(desc.metadata.get("shm_name") or desc.metadata["queue_name"])
    # The same machine (same identity, set explicitly) reaches the queue.
    q: Any = resolve_descriptor(text)
    try:
        result = run_python_args("import sys\nfrom sage_queue.descriptor import resolve_descriptor\n"
                                 "q = resolve_descriptor(sys.argv[1]); q.put('same machine'); q.close()\n",
                                 [text], HOST_ID_ENV, host_id())
        assert result.returncode == 0, result.stderr
        assert q.get(timeout=60) == "same machine"
    finally:
        q.close()


def run_python_args(code: str, args: List[str], key: str, value: str) -> Any:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code, *args], env=child_env(**{key: value}),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kind", ["SageQueue", "DescribedSageQueue", "SageQueueRef"])
def test_pickles_and_refs_refused_on_another_machine(kind: str, names: Callable[[], str],
                                                     elsewhere: ProcessPoolExecutor) -> None:
    name = names()
    q: Any = SageQueue(name, 1 << 16) if kind != "DescribedSageQueue" else resolve_descriptor(describe("shm", name))
    try:
        obj = q.get_reference() if kind == "SageQueueRef" else q
        if kind == "SageQueueRef":
            assert obj.host_id == host_id()
        data = pickle.dumps(obj)
        q.destroy()  # the name is gone here: a fresh open elsewhere would have to create it
        status, message = elsewhere.submit(workers.unpickle_and_put, data, "x").result(timeout=120)
        assert status == "QueueUnavailableError", (status, message)
        assert_names_both_machines(message)
        assert not exists(name)
    finally:
        q.close()


def test_a_pickle_reaches_the_queue_on_the_same_machine(make_queue: Callable[..., SageQueue]) -> None:
    """Positive control: a fresh interpreter with this machine's identity
    unpickles the queue and its reference and puts through both."""
    q = make_queue(1 << 16)
    blobs = [base64.b64encode(pickle.dumps(o)).decode() for o in (q, q.get_reference())]
    code = ("import base64, pickle, sys\nfrom sage_queue import SageQueueRef\n"
            "for i, b in enumerate(sys.argv[1:]):\n"
            "    o = pickle.loads(base64.b64decode(b))\n"
            "    o = o.get_queue() if isinstance(o, SageQueueRef) else o\n"
            "    o.put(i); o.close()\n")
    result = run_python_args(code, blobs, HOST_ID_ENV, host_id())
    assert result.returncode == 0, result.stderr
    assert q.get_many(5, timeout=60) == [0, 1]


class _Legacy:
    """Pickles as a 1.0 SageQueue did: _reattach with six arguments."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self) -> Any:
        return (_reattach, (SageQueue, self.name, False, None, None, None))


def test_one_point_oh_descriptors_pickles_and_refs_still_resolve(names: Callable[[], str],
                                                                 elsewhere: ProcessPoolExecutor) -> None:
    """Written without identity: resolved as before, on any machine."""
    name = names()
    old = describe("sage_queue", name).to_dict()
    for key in ("host_id", "host_name"):
        del old["metadata"][key]
    q: Any = resolve_descriptor(json.dumps(old))
    try:
        elsewhere.submit(workers.resolve_and_put_json, json.dumps(old), "json").result(timeout=120)
        status, _ = elsewhere.submit(workers.unpickle_and_put, pickle.dumps(_Legacy(name)), "pickle").result(120)
        assert status == "ok"
        ref = SageQueueRef(name=name, size=1 << 16)  # as 1.0 made them
        status, _ = elsewhere.submit(workers.unpickle_and_put, pickle.dumps(ref), "ref").result(timeout=120)
        assert status == "ok"
        assert q.get_many(5, timeout=60) == ["json", "pickle", "ref"]
        # A resolved 1.0 descriptor pickles with this machine's identity.
        again = pickle.loads(pickle.dumps(q))
        assert again.descriptor.metadata["host_id"] == host_id()
        again.close()
        status, message = elsewhere.submit(workers.unpickle_and_put, pickle.dumps(q), "x").result(timeout=120)
        assert status == "QueueUnavailableError", message
    finally:
        q.close()


def test_auto_without_ray_is_this_machines_queue(names: Callable[[], str], monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``auto`` descriptor made without Ray is the SageQueue here and,
    elsewhere, a clear QueueUnavailableError (no bridge to reach it)."""
    from sage_queue.transport_shm import DescribedSageQueue

    name = names()
    desc = QueueDescriptor.create_auto_queue(name, 1 << 16)
    assert "bridge_name" not in desc.metadata and desc.metadata["host_id"] == host_id()
    q: Any = resolve_descriptor(desc.to_json())
    try:
        assert type(q) is DescribedSageQueue and q.name == name
        q.put("auto")
        assert q.get(timeout=60) == "auto"
    finally:
        q.close()
    monkeypatch.setenv(HOST_ID_ENV, OTHER)
    with pytest.raises(QueueUnavailableError, match="described without Ray.*ray.init"):
        resolve_descriptor(desc.to_json())
