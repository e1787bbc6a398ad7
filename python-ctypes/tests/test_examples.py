"""The demo and the benchmark run (small sizes), check themselves, and leave
nothing in /dev/shm, also when interrupted with Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import List

from conftest import PACKAGE_ROOT, REPO_ROOT, SHM, child_env

DEMO = PACKAGE_ROOT / "examples" / "pipeline_demo.py"
BENCH = REPO_ROOT / "bench" / "bench_python.py"


ARRAYS = 40


def _leftovers(prefix: str) -> List[str]:
    return sorted(p.name for p in SHM.glob(f"sage_ringbuf_{prefix}*"))


def test_demo_runs_and_checks_itself() -> None:
    demo = subprocess.Popen([sys.executable, str(DEMO), "--messages", "3000", "--probes", "100",
                             "--arrays", str(ARRAYS)],
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = demo.communicate(timeout=300)
    assert demo.returncode == 0, out + err
    # Normal use leaves nothing behind: queues, and the pool slots of the
    # arrays stage (lent to arrays that outlived the queue's removal).
    assert not _leftovers(f"demo_{demo.pid}_")
    assert "messages at the sink" in out  # progress
    assert out.count("exact count, checksum, order OK") == 2
    table = [line for line in out.splitlines() if line.startswith(("SageQueue ", "multiprocessing.Queue "))]
    assert len(table) == 2 and all(" us " in line for line in table)
    # The stage of numpy arrays larger than the (default) ring: intact, and
    # received without a copy.
    arrays = [line for line in out.splitlines() if line.startswith("4 MiB numpy arrays: SageQueue")]
    assert len(arrays) == 1 and arrays[0].endswith(": intact"), out
    assert f"mp.Queue, {ARRAYS - 1:,} without a copy)" in arrays[0], arrays[0]


def test_demo_ctrl_c_leaves_nothing_behind() -> None:
    # As a terminal does: SIGINT to the whole process group, default handler.
    demo = subprocess.Popen([sys.executable, str(DEMO), "--messages", "2000000", "--probes", "100"],
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            if "messages at the sink" in line:  # the stream is running
                break
        assert _leftovers(f"demo_{demo.pid}_"), "the demo's queues should exist while it runs"
        os.killpg(demo.pid, signal.SIGINT)
        _, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    assert demo.returncode == 130, err
    assert "interrupted" in err
    assert not _leftovers(f"demo_{demo.pid}_")


def test_bench_runs() -> None:
    bench = subprocess.Popen([sys.executable, str(BENCH), "--messages", "3000", "--pings", "200", "--repeat", "1"],
                             env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = bench.communicate(timeout=300)
    assert bench.returncode == 0, out + err
    for label in ("SageQueue put/get", "SageQueue put_many/get_many", "multiprocessing.Queue",
                  "multiprocessing.SimpleQueue", "round trip", "targets"):
        assert label in out
    assert not _leftovers(f"bench_py_{bench.pid}_")
