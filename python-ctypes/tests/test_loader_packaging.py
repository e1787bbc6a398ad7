"""Finding the library, declaring every C signature, and packaging:
`pip install --target` gives a working package that carries the library,
and a missing library gives one clear ImportError."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict

import pytest

import sage_queue
from sage_queue import _lib

from conftest import PACKAGE_ROOT, CFuncPtr, child_env, pip_install_target, run_python, unique_name

PACKAGE_DIR = PACKAGE_ROOT / "sage_queue"


def _clean_env(**extra: str) -> Dict[str, str]:
    """An environment without any hint of where the library is."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RING_BUFFER_LIB", "PYTHONPATH", "LD_LIBRARY_PATH", "PYTHONHOME")}
    env.update(extra)
    return env


def _copy_package(dest: Path, with_library: bool) -> Path:
    """A copy of the sage_queue sources outside the repository."""
    target = dest / "sage_queue"
    shutil.copytree(PACKAGE_DIR, target, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    if with_library:
        shutil.copy2(sage_queue.LIBRARY_PATH, target / _lib.LIB_FILE)
    return target


def test_library_loaded_and_version() -> None:
    assert Path(sage_queue.LIBRARY_PATH).is_file()
    if os.environ.get("RING_BUFFER_LIB"):
        assert os.path.samefile(sage_queue.LIBRARY_PATH, os.environ["RING_BUFFER_LIB"])
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", sage_queue.LIBRARY_VERSION)


def test_every_c_function_has_argtypes_and_restype() -> None:
    functions = {name: obj for name, obj in vars(_lib).items() if isinstance(obj, CFuncPtr)}
    assert len(functions) >= 20
    for name, fn in functions.items():
        assert fn.argtypes is not None, name
        assert fn.__name__.startswith("ring_buffer_"), name
    # Void functions have restype None, the others a declared ctypes type.
    for void in ("close", "destroy", "get_stats_ex", "reset_stats", "release_ref"):
        assert functions[void].restype is None
    assert functions["msg_count"].restype is ctypes.c_uint64
    assert functions["create_ex"].restype is ctypes.c_void_p
    # Everything the package calls through _lib is one of them.
    for module in PACKAGE_DIR.glob("*.py"):
        if module.name == "_lib.py":
            continue
        for called in re.findall(r"(?<![\w.])_lib\.([a-z_]+)\b", module.read_text()):
            assert called in functions or called == "last_error", f"{module.name} calls undeclared {called}"


def test_missing_library_gives_one_clear_import_error(tmp_path: Path) -> None:
    _copy_package(tmp_path / "site", with_library=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env(PYTHONPATH=str(tmp_path / "site"), RING_BUFFER_LIB=str(tmp_path / "nowhere" / "libring_buffer.so"))
    probe = run_python("import ctypes; ctypes.CDLL('libring_buffer.so.1')", env=env, cwd=str(elsewhere))
    if probe.returncode == 0:
        pytest.skip("a libring_buffer.so.1 is installed system-wide: nothing can be missing")
    result = run_python("import sage_queue", env=env, cwd=str(elsewhere))
    assert result.returncode != 0
    err = result.stderr
    # One exception, no chain of them.
    assert err.strip().splitlines()[-1] != "" and "During handling" not in err, err
    assert "\nImportError: sage_queue cannot load libring_buffer" in err, err
    assert "sage_queue cannot load libring_buffer" in err
    for mention in ("$RING_BUFFER_LIB", str(tmp_path / "nowhere"), "package directory",
                    str(tmp_path / "site" / "sage_queue" / "libring_buffer.so"),
                    "system search path", "find_library", "no such file", "pip install"):
        assert mention in err, f"{mention!r} missing from:\n{err}"
    assert "build/" not in err, err


def test_a_repository_build_is_never_picked_up(tmp_path: Path) -> None:
    """An installed package depends on no path into a repository: a copy
    laid out as in the source tree, with a library in the tree's build/ but
    none in the package, does not load that one."""
    repo = tmp_path / "repo"
    _copy_package(repo / "python-ctypes", with_library=False)
    (repo / "build").mkdir()
    shutil.copy2(sage_queue.LIBRARY_PATH, repo / "build" / "libring_buffer.so")
    env = _clean_env(PYTHONPATH=str(repo / "python-ctypes"))
    probe = run_python("import ctypes; ctypes.CDLL('libring_buffer.so.1')", env=env, cwd=str(tmp_path))
    assert probe.returncode != 0, "a libring_buffer.so.1 is installed system-wide: this test needs a machine without"
    result = run_python("import sage_queue", env=env, cwd=str(tmp_path))
    assert result.returncode != 0 and "sage_queue cannot load libring_buffer" in result.stderr, result.stderr
    assert str(repo / "build") not in result.stderr


def test_env_var_is_tried_first(tmp_path: Path) -> None:
    copy = tmp_path / "custom" / "libring_buffer.so"
    copy.parent.mkdir()
    shutil.copy2(sage_queue.LIBRARY_PATH, copy)
    result = run_python("import sage_queue; print(sage_queue.LIBRARY_PATH)", env=child_env(RING_BUFFER_LIB=str(copy)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(copy)


def test_bad_env_var_falls_back_with_a_warning(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _copy_package(site, with_library=True)
    env = _clean_env(PYTHONPATH=str(site), RING_BUFFER_LIB=str(tmp_path / "missing.so"))
    result = run_python("import sage_queue; print(sage_queue.LIBRARY_PATH)", env=env, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(site / "sage_queue" / "libring_buffer.so")
    assert "RuntimeWarning" in result.stderr and "missing.so" in result.stderr


def test_a_library_without_the_new_api_is_refused(tmp_path: Path) -> None:
    import ctypes.util

    libc = ctypes.util.find_library("c")
    env = child_env(RING_BUFFER_LIB=str(libc))
    result = run_python("import sage_queue, sys; sys.exit(0)", env=env)
    assert result.returncode == 0, result.stderr  # fell back to the real one
    assert "lacks ring_buffer_put_packed" in result.stderr


def test_pip_install_target_carries_the_library(tmp_path: Path) -> None:
    site = pip_install_target(tmp_path)
    installed = site / "sage_queue"
    assert (installed / "libring_buffer.so").is_file()
    assert (installed / "py.typed").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    name = unique_name("pip")
    code = (
        "import sage_queue, sys\n"
        "print(sage_queue.LIBRARY_PATH)\n"
        f"q = sage_queue.SageQueue({name!r})\n"
        "q.put({'ok': 1}); assert q.get() == {'ok': 1}\n"
        "q.destroy()\n"
    )
    result = run_python(code, env=_clean_env(PYTHONPATH=str(site)), cwd=str(elsewhere))
    sage_queue.destroy_queue(name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(installed / "libring_buffer.so")


def test_public_api_is_exported() -> None:
    for name in sage_queue.__all__:
        assert hasattr(sage_queue, name), name
    assert sage_queue.Empty is __import__("queue").Empty
    assert sage_queue.Full is __import__("queue").Full
    assert (PACKAGE_DIR / "py.typed").is_file()


def test_an_older_library_is_named_as_such(tmp_path: Path) -> None:
    """A library that passes the loader's probe but lacks a function this
    package declares (an older build) gives an ImportError saying so."""
    source = tmp_path / "old.c"
    source.write_text("int ring_buffer_put_packed(void) { return 0; }\n")
    old = tmp_path / "libring_buffer.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(old), str(source)], check=True)
    result = run_python("import sage_queue", env=child_env(RING_BUFFER_LIB=str(old)))
    assert result.returncode != 0
    assert f"ImportError: sage_queue: {old} lacks ring_buffer_" in result.stderr, result.stderr
    assert "older than this package" in result.stderr
