"""Installable anywhere: the wheel `make wheel` built, `pip install` from the
source tree and from an sdist, each into a fresh virtual environment in a
temporary directory outside the repository, with neither RING_BUFFER_LIB
nor PYTHONPATH; and one version, Cargo.toml's, everywhere.

The wheel test reuses the wheel `make test` built first. The source
installs compile the Rust crate: they share `make`'s Python-side Cargo
target directory ($SAGE_QUEUE_CARGO_TARGET), so cargo rebuilds only what
changed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Dict

import tomllib

import sage_queue

from conftest import PACKAGE_ROOT, REPO_ROOT, built_wheel, unique_name

#: Every library file must stay well under this (stripped).
MAX_LIBRARY_BYTES = 2 * 1024 * 1024


def cargo_version() -> str:
    with open(REPO_ROOT / "Cargo.toml", "rb") as f:
        return str(tomllib.load(f)["package"]["version"])


def _clean_env(**extra: str) -> Dict[str, str]:
    """No hint of where the library or the sources are."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RING_BUFFER_LIB", "PYTHONPATH", "LD_LIBRARY_PATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(extra)
    return env


def _fresh_venv(where: Path) -> Path:
    """A new virtual environment (with pip); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=300)
    return where / "bin" / "python"


def _pip(python: Path, *args: str, env: Dict[str, str], cwd: Path, timeout: float = 900) -> None:
    result = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet", *args],
                            env=env, cwd=str(cwd), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr


#: Run by the installed package's python, in a scratch directory: a producer
#: and a consumer, both spawned (fresh interpreters importing the installed
#: package), move messages through a queue; prints where the library came
#: from and the versions.
PIPELINE = r"""
import multiprocessing as mp, sys
import sage_queue
from sage_queue import SageQueue

def produce(name, n):
    q = SageQueue.open(name)
    for i in range(n):
        q.put({"i": i, "payload": "x" * (i % 50)})
    q.put(None)
    q.close()

def consume(name, results):
    q = SageQueue.open(name)
    got = [item["i"] for item in iter(lambda: q.get(timeout=60), None)]
    q.close()
    results.put(got)

if __name__ == "__main__":
    name, n = sys.argv[1], int(sys.argv[2])
    ctx = mp.get_context("spawn")
    q = SageQueue(name, maxsize=4096)
    results = ctx.Queue()
    procs = [ctx.Process(target=produce, args=(name, n)), ctx.Process(target=consume, args=(name, results))]
    for p in procs:
        p.start()
    got = results.get(timeout=120)
    for p in procs:
        p.join(60)
    q.destroy()
    assert got == list(range(n)), got[:10]
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    print(sage_queue.LIBRARY_PATH)
    print(sage_queue.__version__, sage_queue.LIBRARY_VERSION)
"""


def _run_pipeline(python: Path, tmp_path: Path, venv: Path) -> None:
    """The two-process pipeline with ``python``, outside the repository;
    the library must be the one installed in ``venv``."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    script = scratch / "pipeline.py"
    script.write_text(PIPELINE)
    name = unique_name("inst")
    try:
        result = subprocess.run([str(python), str(script), name, "2000"], env=_clean_env(), cwd=str(scratch),
                                capture_output=True, text=True, timeout=300)
    finally:
        sage_queue.destroy_queue(name)
    assert result.returncode == 0, result.stdout + result.stderr
    library, versions = result.stdout.strip().splitlines()[-2:]
    assert Path(library).resolve().is_relative_to(venv.resolve()), library
    assert not Path(library).resolve().is_relative_to(REPO_ROOT.resolve()), library
    assert os.path.getsize(library) < MAX_LIBRARY_BYTES, os.path.getsize(library)
    assert versions.split() == [cargo_version(), cargo_version()]


def _cargo_env() -> Dict[str, str]:
    """The environment of a source build: clean, and with the Cargo target
    directory `make` uses for Python builds, so only what changed rebuilds."""
    target = os.environ.get("SAGE_QUEUE_CARGO_TARGET") or str(REPO_ROOT / "target" / "python")
    return _clean_env(CARGO_TARGET_DIR=target)


# ---------------------------------------------------------------- the wheel


def _sections(library: Path) -> str:
    result = subprocess.run(["readelf", "-S", "-W", str(library)], capture_output=True, text=True, check=True)
    return result.stdout


def test_wheel_is_platform_tagged_audited_and_small(tmp_path: Path) -> None:
    wheel = built_wheel()
    # One wheel for every Python 3 (ctypes needs no Python ABI), for the
    # platform the library was built for.
    assert re.fullmatch(rf"sage_queue-{re.escape(cargo_version())}-py3-none-manylinux_\d+_\d+_x86_64\.whl",
                        wheel.name), wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = zf.getinfo("sage_queue/libring_buffer.so")
        assert info.file_size < MAX_LIBRARY_BYTES, info.file_size
        assert "sage_queue/py.typed" in names
        zf.extract("sage_queue/libring_buffer.so", tmp_path)
        tags = zf.read(next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode()
        assert "Root-Is-Purelib: false" in tags and re.search(r"^Tag: py3-none-manylinux_", tags, re.M), tags
    # Stripped: no symbol table, no debug information (the dynamic symbols,
    # the C API, are what ctypes uses).
    sections = _sections(tmp_path / "sage_queue" / "libring_buffer.so")
    assert ".dynsym" in sections and ".symtab" not in sections and ".debug_" not in sections, sections
    # The tag is honest: auditwheel finds the library consistent with it.
    platform = wheel.name.rsplit("-", 1)[1][: -len(".whl")]
    show = subprocess.run([str(Path(sys.executable).parent / "auditwheel"), "show", str(wheel)],
                          capture_output=True, text=True, timeout=120)
    assert show.returncode == 0, show.stderr
    said = " ".join(show.stdout.split())
    assert f'is consistent with the following platform tag: "{platform}"' in said, show.stdout


def test_wheel_installs_into_a_fresh_venv_and_works_between_processes(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    python = _fresh_venv(venv)
    _pip(python, "--no-index", str(built_wheel()), env=_clean_env(), cwd=tmp_path)
    _run_pipeline(python, tmp_path, venv)
    # The console script came with it.
    script = subprocess.run([str(venv / "bin" / "sage-queue"), "list", "--prefix", unique_name("none")],
                            env=_clean_env(), cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert script.returncode == 0 and "no queues" in script.stdout, script.stderr


# ---------------------------------------------------------------- from source


def test_pip_install_from_the_source_tree_builds_the_library(tmp_path: Path) -> None:
    """What a new user does on a machine with Rust: no `make` needed. pip
    builds in isolation with the pinned build requirements."""
    venv = tmp_path / "venv"
    python = _fresh_venv(venv)
    _pip(python, str(PACKAGE_ROOT), env=_cargo_env(), cwd=tmp_path)
    _run_pipeline(python, tmp_path, venv)


def test_an_sdist_carries_the_crate_and_installs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})"],
        cwd=str(PACKAGE_ROOT), env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    (sdist,) = dist.glob("sage_queue-*.tar.gz")
    assert sdist.name == f"sage_queue-{cargo_version()}.tar.gz"
    root = f"sage_queue-{cargo_version()}"
    with tarfile.open(sdist) as tar:
        members = set(tar.getnames())
    for needed in ("setup.py", "pyproject.toml", "sage_queue/__init__.py", "rust/Cargo.toml", "rust/Cargo.lock",
                   "rust/build.rs", "rust/cbindgen.toml", "rust/src/lib.rs", "rust/src/ffi/mod.rs",
                   "rust/ffi-tests/layout_static_check.c", "rust/examples/producer.rs", "rust/tests/typed.rs",
                   "rust/README-crate.md"):
        assert f"{root}/{needed}" in members, needed
    assert not any(m.endswith(".so") for m in members), "an sdist carries no built library"
    # Installed from the sdist alone (unpacked by pip outside the repository).
    venv = tmp_path / "venv"
    python = _fresh_venv(venv)
    _pip(python, str(sdist), env=_cargo_env(), cwd=tmp_path)
    _run_pipeline(python, tmp_path, venv)


# ---------------------------------------------------------------- one version


def test_one_version_from_cargo_toml() -> None:
    version = cargo_version()
    assert metadata.version("sage_queue") == version
    assert sage_queue.__version__ == version
    assert sage_queue.LIBRARY_VERSION == version  # the library, built from the same crate
    with zipfile.ZipFile(built_wheel()) as zf:
        meta = zf.read(f"sage_queue-{version}.dist-info/METADATA").decode()
    assert re.search(rf"^Version: {re.escape(version)}$", meta, re.M)
