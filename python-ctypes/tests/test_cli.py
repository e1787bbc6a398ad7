"""`python -m sage_queue` (and the `sage-queue` console script), each
subcommand run in a subprocess against real queues: ordinary ones, one held
open by a live process, one whose creator was SIGKILLed, and objects the
CLI cannot open (corrupt, another user's) or that the legacy library made.

Every command here is limited to this test's queues (--prefix or names):
other programs' queues on the machine are never listed, opened or removed.
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, List

import pytest

from sage_queue import SageQueue, ShutDown, destroy_queue
from sage_queue.queue import SHM_DIR

from conftest import child_env, pip_install_target, unique_name

MAGIC = 0x53414745424C4B52

HOLD = r"""
import sys
from sage_queue import SageQueue
q = SageQueue(sys.argv[1], 4096)
q.put("held")
print("ready", flush=True)
sys.stdin.read()
"""


def cli(*args: str, timeout: float = 120) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "sage_queue", *args], env=child_env(),
                          capture_output=True, text=True, timeout=timeout)


def cli_json(*args: str) -> Any:
    result = cli("--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class Holder:
    """A live process that created (or opened) queue ``name`` and keeps it
    open until ``release()``; ``kill()`` SIGKILLs it instead."""

    def __init__(self, name: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD, name], env=child_env(), text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"holder did not start: {line!r}"
        self.pid = self.proc.pid

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(60)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(60)


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A name prefix for this test's objects; all of them are removed afterwards."""
    p = unique_name("cli") + "_"

    def cleanup() -> None:
        for entry in Path(SHM_DIR).glob(f"sage_ringbuf_{p}*"):
            destroy_queue(entry.name[len("sage_ringbuf_"):])
            if os.path.lexists(entry):
                entry.unlink()

    request.addfinalizer(cleanup)
    return p


@pytest.fixture
def holders(request: pytest.FixtureRequest) -> List[Holder]:
    started: List[Holder] = []
    def release_all() -> None:
        for h in started:
            h.release()

    request.addfinalizer(release_all)
    return started


def _raw_object(name: str, data: bytes) -> Path:
    path = Path(SHM_DIR) / f"sage_ringbuf_{name}"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


def _legacy_object(name: str, creator_pid: int) -> Path:
    """An object as the legacy C library made it: version 1, 200-byte
    header, a 1024-byte ring."""
    data = bytearray(200 + 1024)
    struct.pack_into("<QII", data, 0, MAGIC, 1, 1024)
    data[88:88 + len(name)] = name.encode()
    struct.pack_into("<i", data, 152, creator_pid)
    return _raw_object(name, bytes(data))


def _dead_creator_queue(name: str, holders: List[Holder]) -> int:
    holder = Holder(name)
    holders.append(holder)
    holder.kill()
    return holder.pid


# ---------------------------------------------------------------- list


def test_list_every_kind_of_object(prefix: str, holders: List[Holder]) -> None:
    with SageQueue(prefix + "plain", 8192) as q:
        q.put_many(range(100))
    live = Holder(prefix + "live")
    holders.append(live)
    dead_pid = _dead_creator_queue(prefix + "dead", holders)
    _raw_object(prefix + "corrupt", b"\x00garbage" * 153)
    _legacy_object(prefix + "legacy", dead_pid)
    with SageQueue(prefix + "overwritten", 4096) as q:
        q.put("x")
    with open(Path(SHM_DIR) / f"sage_ringbuf_{prefix}overwritten", "r+b") as f:
        # tail (the authoritative one, in the extension block after the data
        # area; the header's at offset 24 is a mirror): now far more bytes
        # than the ring holds
        f.seek(((200 + 4096 + 63) & ~63) + 384)
        f.write(struct.pack("<Q", 10**9))
    foreign = None
    if os.geteuid() == 0:  # only root can give an object to another user
        with SageQueue(prefix + "foreign", 4096):
            pass
        foreign = Path(SHM_DIR) / f"sage_ringbuf_{prefix}foreign"
        os.chown(foreign, 65534, 65534)

    rows = {row["name"]: row for row in cli_json("list", "--prefix", prefix)}
    expected = {"plain", "live", "dead", "corrupt", "legacy", "overwritten"} | ({"foreign"} if foreign else set())
    assert set(rows) == {prefix + n for n in expected}

    plain = rows[prefix + "plain"]
    assert plain["status"] == "ok" and plain["messages"] == 100 and plain["ring_bytes"] == 8192
    assert 0 < plain["fill_percent"] < 100
    # The CLI opened it to read its statistics, but does not count itself.
    assert plain["attached"] == 0 and plain["attached_pids"] == []
    assert plain["creator_pid"] == os.getpid() and plain["creator_alive"] is True
    assert plain["owner_uid"] == os.geteuid() and plain["mode"] == "0600" and plain["layout_version"] == 2

    assert rows[prefix + "live"]["attached"] == 1 and rows[prefix + "live"]["attached_pids"] == [live.pid]
    assert rows[prefix + "live"]["creator_alive"] is True and rows[prefix + "live"]["messages"] == 1
    dead = rows[prefix + "dead"]
    assert dead["creator_pid"] == dead_pid and dead["creator_alive"] is False and dead["attached"] == 0

    corrupt = rows[prefix + "corrupt"]
    assert corrupt["status"] == "incompatible" and corrupt["object_bytes"] == 8 * 153
    assert corrupt["messages"] is None and corrupt["owner_uid"] == os.geteuid() and corrupt["attached"] == 0
    overwritten = rows[prefix + "overwritten"]
    # The library's statistics refuse impossible counters (RB_ERR_CORRUPT).
    assert overwritten["status"] == "corrupt" and "shared state is corrupt" in overwritten["detail"]
    assert overwritten["messages"] is None and overwritten["creator_pid"] == os.getpid()
    legacy = rows[prefix + "legacy"]
    assert legacy["status"] == "legacy" and legacy["layout_version"] == 1 and legacy["messages"] == 0
    assert legacy["ring_bytes"] == 1024 and legacy["creator_pid"] == dead_pid
    if foreign:
        row = rows[prefix + "foreign"]
        assert row["status"] == "foreign" and row["owner_uid"] == 65534 and row["messages"] is None
        assert row["object_bytes"] == foreign.stat().st_size

    # The table shows the same, one line per object under a header.
    table = cli("list", "--prefix", prefix)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "FILL", "MESSAGES", "ATTACHED", "OWNER", "CREATOR", "STATUS"]
    by_name = {line.split()[0]: line for line in lines[1:]}
    assert set(by_name) == set(rows)
    assert by_name[prefix + "plain"].split()[1:5] == ["8K", "11.0%", "100", "0"]
    assert f"{dead_pid} (dead)" in by_name[prefix + "dead"]
    assert f"{os.getpid()} (alive)" in by_name[prefix + "plain"]
    assert "incompatible" in by_name[prefix + "corrupt"] and "legacy" in by_name[prefix + "legacy"]
    assert "corrupt: get_stats on queue" in by_name[prefix + "overwritten"]
    if foreign:
        assert "foreign" in by_name[prefix + "foreign"]
    # Nothing of ours stays attached after the CLI exits.
    with SageQueue.open(prefix + "plain") as q:
        assert q.attached_processes() == 1


def test_list_empty(prefix: str) -> None:
    result = cli("list", "--prefix", prefix)
    assert result.returncode == 0 and "no queues" in result.stdout
    assert cli_json("list", "--prefix", prefix) == []


# ---------------------------------------------------------------- stat


def test_stat_shows_every_statistic(prefix: str, holders: List[Holder]) -> None:
    name = prefix + "s"
    with SageQueue(name, 4096) as q:
        q.put_many(["a", "b", "c"])
        q.get()
        keys = set(q.get_stats())
    live = Holder(name)
    holders.append(live)
    stats = cli_json("stat", name)
    assert keys <= set(stats), keys - set(stats)
    assert stats["message_count"] == 3 and stats["messages_in"] == 4 and stats["messages_out"] == 1
    assert stats["buffer_size"] == 4096 and stats["name"] == name
    assert stats["attached_processes"] == 1 and stats["attached_pids"] == [live.pid]  # not the CLI
    assert stats["creator_pid"] == os.getpid() and stats["creator_alive"] is True
    table = cli("stat", name)
    assert table.returncode == 0, table.stderr
    shown = {line.split()[0]: line.split()[1:] for line in table.stdout.splitlines()}
    assert keys <= set(shown)
    assert shown["message_count"] == ["3"] and shown["attached_processes"] == ["1"]


def test_stat_errors(prefix: str) -> None:
    missing = cli("stat", prefix + "missing")
    assert missing.returncode == 1 and missing.stdout == ""
    assert "no queue named" in missing.stderr and prefix + "missing" in missing.stderr
    _raw_object(prefix + "junk", b"x" * 2048)
    junk = cli("stat", prefix + "junk")
    assert junk.returncode == 1 and "not a queue this library can use" in junk.stderr


# ---------------------------------------------------------------- watch


def test_watch_reports_rates(prefix: str) -> None:
    name = prefix + "w"
    q = SageQueue(name, 1 << 16)
    stop = threading.Event()

    def traffic() -> None:
        # Puts and gets keep flowing while the CLI samples the counters.
        try:
            while not stop.is_set():
                q.put_many(range(50))
                q.get_many(50)
        except ShutDown:
            pass

    pump = threading.Thread(target=traffic)
    pump.start()
    try:
        result = cli("watch", name, "--interval", "0.2", "--count", "3", "--json")
        text = cli("watch", name, "--interval", "0.1", "--count", "2")
    finally:
        stop.set()
        pump.join(60)
        q.close()
    assert result.returncode == 0, result.stderr
    samples = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(samples) == 3
    for sample in samples:
        assert set(sample) == {"time", "name", "messages", "fill_percent", "put_rate", "get_rate", "attached"}
        assert sample["put_rate"] >= 0 and sample["get_rate"] >= 0
        assert sample["attached"] == 1  # the test process, not the watcher
    assert max(s["put_rate"] for s in samples) > 0 and max(s["get_rate"] for s in samples) > 0
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 2 and all(name in line and "put" in line and "/s" in line for line in lines)


def test_watch_does_not_count_itself_whatever_pid_proc_shows(
    prefix: str, holders: List[Holder], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a container whose /proc shows another pid namespace's numbers,
    the watcher's own lock carries a pid other than os.getpid(); the
    watcher must still not count itself. Simulated by running the CLI in
    this process with os.getpid() answering another number."""
    from sage_queue import cli as cli_module

    name = prefix + "ns"
    holders.append(Holder(name))
    real_pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real_pid + 1_000_000)
    out = io.StringIO()
    assert cli_module.main(["watch", name, "--interval", "0.05", "--count", "1", "--json"], out=out) == 0
    monkeypatch.undo()
    assert json.loads(out.getvalue())["attached"] == 1  # the holder, not the watcher


def test_watch_errors(prefix: str) -> None:
    missing = cli("watch", prefix + "none", "--count", "1")
    assert missing.returncode == 1 and "no queue named" in missing.stderr
    with SageQueue(prefix + "w", 4096):
        bad = cli("watch", prefix + "w", "--interval", "0", "--count", "1")
    assert bad.returncode == 1 and "--interval" in bad.stderr


# ---------------------------------------------------------------- rm


def test_rm(prefix: str, holders: List[Holder]) -> None:
    with SageQueue(prefix + "a", 4096), SageQueue(prefix + "b", 4096):
        pass
    result = cli("rm", prefix + "a")
    assert result.returncode == 0 and result.stdout.strip() == f"removed {prefix}a"
    assert not os.path.exists(f"{SHM_DIR}/sage_ringbuf_{prefix}a")
    again = cli("rm", prefix + "a", prefix + "b")
    assert again.returncode == 1 and f"no queue named '{prefix}a'" in again.stderr
    assert not os.path.exists(f"{SHM_DIR}/sage_ringbuf_{prefix}b")  # the others still go
    live = Holder(prefix + "live")
    holders.append(live)
    removed = cli_json("rm", prefix + "live")
    assert removed == {"removed": [{"name": prefix + "live", "still_attached_pids": [live.pid]}], "failed": []}
    _raw_object(prefix + "junk", b"x" * 100)  # rm works on what cannot be opened
    assert cli("rm", prefix + "junk").returncode == 0
    assert not os.path.exists(f"{SHM_DIR}/sage_ringbuf_{prefix}junk")


# ---------------------------------------------------------------- gc


def test_gc_removes_only_what_no_live_process_holds(prefix: str, holders: List[Holder]) -> None:
    dead_pid = _dead_creator_queue(prefix + "crashed", holders)
    live = Holder(prefix + "inuse")
    holders.append(live)
    _raw_object(prefix + "junk", b"y" * 300)
    objects = {prefix + n for n in ("crashed", "inuse", "junk")}

    dry = cli_json("gc", "--prefix", prefix, "--dry-run")
    assert dry["dry_run"] is True and set(dry["removed"]) == {prefix + "crashed", prefix + "junk"}
    assert {Path(p).name[len("sage_ringbuf_"):] for p in Path(SHM_DIR).glob(f"sage_ringbuf_{prefix}*")} == objects

    result = cli("gc", "--prefix", prefix)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"removed {prefix}crashed" in out and f"removed {prefix}junk" in out
    assert f"kept {prefix}inuse: in use by 1 live process ({live.pid})" in out
    assert out.splitlines()[-1] == "2 removed, 1 kept"
    left = {Path(p).name[len("sage_ringbuf_"):] for p in Path(SHM_DIR).glob(f"sage_ringbuf_{prefix}*")}
    assert left == {prefix + "inuse"}
    with SageQueue.open(prefix + "inuse") as q:  # untouched, still usable
        assert q.get(timeout=5) == "held"
    assert dead_pid != live.pid

    live.release()
    report = cli_json("gc", "--prefix", prefix)
    assert report == {"dry_run": False, "removed": [prefix + "inuse"], "kept": [], "side_objects_removed": {}}


def test_gc_leaves_other_users_queues_alone(prefix: str) -> None:
    if os.geteuid() != 0:  # only root can make an object of another user here
        with SageQueue(prefix + "mine", 4096):
            pass
        assert cli_json("gc", "--prefix", prefix)["removed"] == [prefix + "mine"]
        return
    with SageQueue(prefix + "theirs", 4096):
        pass
    os.chown(f"{SHM_DIR}/sage_ringbuf_{prefix}theirs", 65534, 65534)
    report = cli_json("gc", "--prefix", prefix)
    assert report["removed"] == [] and "--all-users" in report["kept"][0]["reason"]
    assert cli_json("gc", "--prefix", prefix, "--all-users")["removed"] == [prefix + "theirs"]


# ---------------------------------------------------------------- usage


def test_usage_and_exit_codes() -> None:
    assert cli("--help").returncode == 0
    for args in ([], ["frobnicate"], ["stat"], ["watch", "x", "--count", "many"]):
        result = cli(*args)
        assert result.returncode == 1, args
        assert "usage:" in result.stderr and "error:" in result.stderr
    helped = cli("--help").stdout
    for command in ("list", "stat", "watch", "rm", "gc"):
        assert command in helped


def test_console_script(tmp_path: Path, prefix: str) -> None:
    """`pip install` creates a `sage-queue` command running the same CLI."""
    site = pip_install_target(tmp_path)
    script = site / "bin" / "sage-queue"
    assert script.is_file()
    with SageQueue(prefix + "cs", 4096) as q:
        q.put(1)
        env = child_env(PYTHONPATH=str(site))
        result = subprocess.run([str(script), "--json", "list", "--prefix", prefix], env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert [row["name"] for row in json.loads(result.stdout)] == [prefix + "cs"]
        missing = subprocess.run([str(script), "stat", prefix + "nope"], env=env, capture_output=True, text=True,
                                 timeout=120)
        assert missing.returncode == 1 and "sage-queue: error: no queue named" in missing.stderr
