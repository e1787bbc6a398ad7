"""Shared fixtures: unique queue names that are always removed, and helpers
to run Python snippets in a fresh interpreter.

Every queue a test creates gets a name from ``qname``/``make_queue``; their
finalizers destroy the queues whether the test passed or not, and the
session ends by checking that no queue with this run's prefix is left in
/dev/shm.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # python-ctypes/
REPO_ROOT = PACKAGE_ROOT.parent
# In-tree import (and for spawned children, which inherit sys.path).
if str(PACKAGE_ROOT) not in sys.path:
    sys.path.insert(0, str(PACKAGE_ROOT))

import sage_queue  # noqa: E402
from sage_queue import SageQueue, destroy_queue  # noqa: E402

#: Prefix of every queue this test run creates (pid + random: unique even
#: when several runs share the machine).
RUN_PREFIX = f"pyt{os.getpid()}{secrets.token_hex(2)}_"
_counter = itertools.count()
SHM = Path("/dev/shm")


def logged(log: List[str], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, which also appends ``name`` to ``log`` whenever it returns
    something other than None (tests of the order of calls)."""

    def call(*args: Any) -> Any:
        out = fn(*args)
        if out is not None:
            log.append(name)
        return out

    return call


def unique_name(tag: str = "q") -> str:
    name = f"{RUN_PREFIX}{tag}{next(_counter)}"
    assert len(name.encode()) < 64
    return name


def shm_leftovers() -> List[str]:
    return sorted(p.name for p in SHM.glob(f"sage_ringbuf_{RUN_PREFIX}*"))


@pytest.fixture(scope="session", autouse=True)
def no_queue_left_behind() -> Iterator[None]:
    yield
    left = shm_leftovers()
    for entry in left:
        if ".." in entry:  # a side object (an item larger than the ring)
            (SHM / entry).unlink(missing_ok=True)
        else:
            destroy_queue(entry[len("sage_ringbuf_"):])
    assert not left, f"tests left queues in /dev/shm: {left}"


@pytest.fixture
def qname(request: pytest.FixtureRequest) -> str:
    """A fresh queue name; the queue (if created) is destroyed afterwards."""
    name = unique_name(request.node.name[:8].replace("[", "").replace("/", ""))
    request.addfinalizer(lambda: destroy_queue(name))
    return name


@pytest.fixture
def make_queue(request: pytest.FixtureRequest) -> Callable[..., SageQueue]:
    """Factory: make_queue(maxsize=0, **kwargs) -> a new SageQueue under a
    unique name, closed and destroyed after the test. Its items larger than
    the ring take one-shot side objects (``pool=False``) unless the test asks
    for the pool: the suites count side objects (test_pool.py covers the
    pool)."""
    made: List[SageQueue] = []

    def factory(maxsize: int = 0, name: Optional[str] = None, **kwargs: Any) -> SageQueue:
        kwargs.setdefault("pool", False)
        q = SageQueue(name or unique_name("m"), maxsize, **kwargs)
        made.append(q)
        return q

    def cleanup() -> None:
        for q in made:
            q.close()
            destroy_queue(q.name)

    request.addfinalizer(cleanup)
    return factory


def child_env(**extra: str) -> Dict[str, str]:
    """Environment for a fresh interpreter that imports the in-tree package."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


#: The class of ctypes' foreign functions (ctypes does not export its name).
CFuncPtr: Any = vars(ctypes)["_CFuncPtr"]


@contextlib.contextmanager
def reaped(child: "subprocess.Popen[str]") -> Iterator["subprocess.Popen[str]"]:
    """Kills and reaps ``child`` on leaving the block if it is still running
    (a failed check must not leave it behind)."""
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def interrupt(child: "subprocess.Popen[str]", timeout: float = 60) -> Tuple[str, str, float]:
    """Sends SIGINT (Ctrl-C) to ``child`` and waits for it to end: its stdout,
    its stderr, and the CLOCK_MONOTONIC time the signal was sent."""
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=timeout)
    return out, err, sent


def run_python(code: str, *, env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None,
               timeout: float = 120) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-c", code], env=env or child_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def built_wheel() -> Path:
    """The wheel ``make wheel`` built: ``make test`` builds it first and names
    its directory in $SAGE_QUEUE_WHEEL_DIR (default: the repository's
    build/wheel). Tests install it rather than building the package again."""
    directory = Path(os.environ.get("SAGE_QUEUE_WHEEL_DIR") or REPO_ROOT / "build" / "wheel")
    wheels = sorted(directory.glob("sage_queue-*.whl"))
    if len(wheels) != 1:
        pytest.fail(f"expected one wheel in {directory}, found {[w.name for w in wheels]}: run `make wheel` "
                    "(make test does) or set SAGE_QUEUE_WHEEL_DIR")
    return wheels[0]


def pip_install_target(tmp_path: Path) -> Path:
    """`pip install --target` of the built wheel into ``tmp_path / "site"``,
    which it returns (no index: nothing is fetched)."""
    site = tmp_path / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--no-index", "--target", str(site), str(built_wheel())],
        capture_output=True, text=True, timeout=300,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return site


@pytest.fixture(scope="session")
def library_path() -> str:
    return sage_queue.LIBRARY_PATH
