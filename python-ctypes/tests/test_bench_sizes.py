"""bench/bench_sizes.py (issue 14, item 7) runs: a short run prints the table
of items/s against item size with every contender, the targets and, with
--runs 2, each run's ratios and their median; it writes the plot, checks what
its consumers receive, and leaves nothing in /dev/shm. No figure is asserted
(speed goals live in the benchmark)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from conftest import REPO_ROOT, SHM, child_env, unique_name

BENCH = REPO_ROOT / "bench" / "bench_sizes.py"
CONTENDERS = ("SageQueue put/get", "SageQueue put_many/get_many (256)", "multiprocessing.Queue",
              "multiprocessing.Pipe", "faster_fifo.Queue", "iceoryx2 zero-copy view", "iceoryx2 copy out")


def _bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_sizes", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _leftovers(prefix: str) -> list[str]:
    found = [p.name for p in SHM.glob(f"*{prefix}*")]
    found += [p.name for p in Path(tempfile.gettempdir()).glob(f"{prefix}*")]
    return sorted(found)


@pytest.mark.timeout(300)  # ~30 s; more on a loaded machine (pytest's default is 120 s)
def test_quick_run_prints_the_table_targets_and_writes_the_plot(tmp_path: Path) -> None:
    prefix = unique_name("bsz") + "_"
    plot = tmp_path / "sizes.png"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--runs", "2", "--sizes", "512,1M", "--plot", str(plot),
         "--prefix", prefix],
        env=child_env(), capture_output=True, text=True, timeout=280)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "warning" not in out  # every contender is installed (make venv)

    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("contender"))
    assert "512 B" in lines[header] and "1 MiB" in lines[header]
    rows = {line[:34].strip(): line[34:] for line in lines[header + 1:header + 1 + len(CONTENDERS)]}
    assert set(rows) == set(CONTENDERS), lines[header:header + 9]
    for label, cells in rows.items():
        # A rate and its ratio to mp.Queue per size; batches only at 512 B.
        expected = 1 if "put_many" in label else 2
        assert cells.count("x)") == expected, (label, cells)
    assert "(1.00x)" in rows["multiprocessing.Queue"]

    # --runs 2: each run's ratios and their median, for the four targets at these sizes.
    per_run = lines.index("target ratios, run by run, and their median")
    assert "run 1" in lines[per_run + 1] and "run 2" in lines[per_run + 1] and "median" in lines[per_run + 1]
    assert all(len(re.findall(r" \d+\.\d\dx", line)) == 3 for line in lines[per_run + 2:per_run + 6]), \
        lines[per_run:per_run + 6]
    targets = lines[lines.index("targets (issue 14, item 7), on the median of the run-by-run ratios:") + 1:]
    marks = [line for line in targets[:6] if line.rstrip().endswith(("met", "NOT MET"))]
    assert len(marks) == 4, targets[:6]
    assert sum("not measured" in line for line in targets[:6]) == 2  # 16 MiB was not asked for

    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    assert f"plot written to {plot}" in out
    assert not _leftovers(prefix)


def test_consumer_checks_catch_a_wrong_item() -> None:
    """The consumers' checks are real: a wrong stamp, a changed byte, a
    wrong dtype or shape is reported."""
    bench = _bench_module()
    items = bench.Items(bench.SIZES["64K"])
    sent = items.items[1]
    items.check_one(sent, 1)
    items.check_full(sent.copy(), 1)
    with pytest.raises(AssertionError, match="not the array sent"):
        items.check_one(sent, 2)  # item 2 is another variant
    changed = sent.copy()
    changed[5, 7] += 1.0
    items.check_one(changed, 1)  # the cheap check misses it...
    with pytest.raises(AssertionError, match="checksum"):
        items.check_full(changed, 1)  # ...the checksum does not
    with pytest.raises(AssertionError, match="not a float64 array"):
        items.check_full(sent.astype(np.float32), 1)
    with pytest.raises(AssertionError, match="of shape"):
        items.check_full(sent.reshape(-1), 1)
    with pytest.raises(AssertionError, match="not a float64 array"):
        items.check_full(sent.tobytes(), 1)

    pickles = bench.Items(bench.SIZES["512"])
    pickles.check_one(pickles.items[3], 7)
    with pytest.raises(AssertionError):
        pickles.check_one(pickles.items[3], 4)
    with pytest.raises(AssertionError, match="checksum"):
        pickles.check_full(pickles.items[3][:-1] + b"!", 3)

    # A get_many batch is checked at once: every item's length and bytes.
    batch = [pickles.items[k % 4] for k in range(5, 5 + 256)]
    pickles.check_batch(batch, 5)
    pickles.check_batch(batch[:3], 5)
    with pytest.raises(AssertionError, match="item 4: wrong 512-byte pickle"):
        pickles.check_batch(batch, 4)  # the batch of another start
    middle = pickles.items[1][:200] + b"!" + pickles.items[1][201:]  # right length and stamp
    for bad in (pickles.items[2], pickles.items[1][:-1], middle, "a" * 494, None):
        wrong = list(batch)
        wrong[100] = bad
        with pytest.raises(AssertionError, match="item 105: wrong 512-byte pickle"):
            pickles.check_batch(wrong, 5)
    items.check_batch([items.items[1], items.items[2]], 1)
    with pytest.raises(AssertionError, match="not the array sent"):
        items.check_batch([items.items[1], items.items[1]], 1)


def test_each_run_is_warmed_up_by_a_tenth_of_it_at_most_64_mib() -> None:
    bench = _bench_module()
    sizes = bench.SIZES
    assert bench.warmup_count(sizes["512"], 200_000) == 20_000
    assert bench.warmup_count(sizes["1M"], 5_000) == 64  # 64 MiB of them
    assert bench.warmup_count(sizes["1M"], 600) == 60
    assert bench.warmup_count(sizes["16M"], 300) == 4
    assert bench.warmup_count(sizes["64M"], 20) == 1
    assert bench.warmup_count(sizes["64M"], 3) == 1  # at least one


def test_bad_sizes_are_refused_with_the_choices() -> None:
    result = subprocess.run([sys.executable, str(BENCH), "--sizes", "2M"], env=child_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "512,64K,256K,1M,16M,64M" in result.stderr and "'2M'" in result.stderr


def test_readme_shows_the_committed_plot() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "](docs/bench_sizes.png)" in readme and "make bench-sizes" in readme
    png = REPO_ROOT / "docs" / "bench_sizes.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (REPO_ROOT / "bench" / "bench_sizes.py").read_text().count('"docs" / "bench_sizes.png"') == 1
