"""The fenced examples of the repository's README.md run as written:
```c blocks are compiled with gcc against include/ and build/libring_buffer.so
(-Wall -Wextra -Werror) and run; ```python blocks run as scripts in a fresh
interpreter with RING_BUFFER_LIB set. Each must succeed and leave nothing in
/dev/shm: examples name their queues after their pid (checked), so what a
run leaves behind is told apart from other programs' queues."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from conftest import REPO_ROOT, child_env

README = REPO_ROOT / "README.md"
BUILD = REPO_ROOT / "build"
SHM = Path("/dev/shm")
FENCE = re.compile(r"^```(\w+)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def readme_blocks(language: str) -> List[str]:
    return [body for lang, body in FENCE.findall(README.read_text()) if lang == language]


def _params(language: str) -> List[object]:
    return [pytest.param(i, body, id=f"{language}{i}") for i, body in enumerate(readme_blocks(language), 1)]


def _leftovers(pid: int) -> List[str]:
    """Queue objects whose name carries ``pid`` (as the examples' names do)."""
    tag = re.compile(rf"(?<!\d){pid}(?!\d)")
    return sorted(p.name for p in SHM.glob("sage_ringbuf_*") if tag.search(p.name))


def _run(argv: List[str], cwd: Path, env: Dict[str, str]) -> Tuple["subprocess.CompletedProcess[str]", List[str]]:
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = _leftovers(proc.pid)
    for name in left:  # clean up after a failing example, then report it
        (SHM / name).unlink(missing_ok=True)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), left


def test_readme_documents_the_three_layers() -> None:
    text = README.read_text()
    assert text.startswith("# libring_buffer\n")
    assert "## Three layers: C, Python, descriptors" in text
    assert len(readme_blocks("c")) >= 1 and len(readme_blocks("python")) >= 2
    for block in readme_blocks("c") + readme_blocks("python"):
        # The pid in every queue name is what lets the tests check cleanup.
        assert "getpid" in block, block[:200]


@pytest.mark.parametrize("index, source", _params("c"))
def test_c_example(index: int, source: str, tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to build the README's C example"
    lib = BUILD / "libring_buffer.so"
    assert lib.is_file(), "run `make lib` first"
    (tmp_path / "example.c").write_text(source)
    build = subprocess.run(
        [gcc, "-std=gnu11", "-Wall", "-Wextra", "-Werror", f"-I{REPO_ROOT / 'include'}", "-o", "example",
         "example.c", str(lib), f"-Wl,-rpath,{BUILD}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert build.returncode == 0, build.stderr
    result, left = _run([str(tmp_path / "example")], tmp_path, dict(os.environ))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("got 6 bytes: hello"), result.stdout
    assert not left, f"the example left {left} in /dev/shm"


@pytest.mark.parametrize("index, source", _params("python"))
def test_python_example(index: int, source: str, tmp_path: Path, library_path: str) -> None:
    script = tmp_path / "example.py"
    script.write_text(source)
    result, left = _run([sys.executable, str(script)], tmp_path, child_env(RING_BUFFER_LIB=library_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip(), "the example printed nothing"
    assert not left, f"the example left {left} in /dev/shm"
