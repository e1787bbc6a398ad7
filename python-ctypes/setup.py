"""Builds libring_buffer from the Rust crate into the package (setuptools-rust).

The package is ctypes over the library's C ABI, so the Rust crate is built as
a plain cdylib (``Binding.NoBinding``: no Python-binding glue) and placed in
the package as ``sage_queue/libring_buffer.so``, where ``_lib.py`` looks first.
Everything else is declared in pyproject.toml; this file adds what a static
file cannot: where the crate is, the version read from its Cargo.toml, the
wheel tag, and an sdist that carries the crate.

The crate lives at the repository root (``../Cargo.toml``). An sdist carries
a copy of it in ``rust/`` (see ``SdistWithCrate``), which is used when present.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import List, Tuple

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.sdist import sdist
from setuptools_rust import Binding, RustExtension
from setuptools_rust.build import build_rust

HERE = Path(__file__).resolve().parent
#: Where an sdist keeps its copy of the crate.
SDIST_CRATE = "rust"
#: What the crate needs to build: its manifest names the README, the
#: examples and the integration tests as targets (cargo reads the manifest
#: whole, even to build the library alone), and build.rs compiles the layout
#: check. The same set as the crate's own package (Cargo.toml `include`).
CRATE_FILES = ["Cargo.toml", "Cargo.lock", "README-crate.md", "build.rs", "cbindgen.toml",
               "ffi-tests/layout_static_check.c"]
CRATE_DIRS = ["src", "examples", "tests/common"]
CRATE_GLOBS = ["tests/*.rs"]
#: The file name ``_lib.py`` loads from the package directory.
LIB_FILE = "libring_buffer.so"


def crate_dir() -> Path:
    """The crate: the sdist's copy if there is one, else the repository's."""
    for candidate in (HERE / SDIST_CRATE, HERE.parent):
        if (candidate / "Cargo.toml").is_file() and (candidate / "src" / "lib.rs").is_file():
            return candidate
    raise SystemExit(
        "sage_queue: cannot find the ring_buffer Rust crate (neither ./rust/Cargo.toml, "
        "as in an sdist, nor ../Cargo.toml, as in the repository): build from a full "
        "checkout of the repository or from its sdist"
    )


def crate_version(manifest: Path) -> str:
    """``version`` of the ``[package]`` table of Cargo.toml: the one version."""
    text = manifest.read_text(encoding="utf-8")
    package = re.search(r"^\[package\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    found = package and re.search(r'^version\s*=\s*"([^"]+)"', package.group(1), re.M)
    if not found:
        raise SystemExit(f"sage_queue: no [package] version in {manifest}")
    return found.group(1)


class BuildLibrary(build_rust):  # type: ignore[misc]
    """Puts the cdylib at ``sage_queue/libring_buffer.so`` (setuptools-rust
    would name it like a Python extension module, with an ABI suffix)."""

    def get_dylib_ext_path(self, ext: RustExtension, target_fname: str) -> str:
        default: str = super().get_dylib_ext_path(ext, target_fname)
        return os.path.join(os.path.dirname(default), LIB_FILE)


class PlatformWheel(bdist_wheel):
    """``py3-none-<platform>``: the library depends on the platform, not on the
    Python ABI (ctypes loads it), so one wheel serves every Python 3."""

    def get_tag(self) -> Tuple[str, str, str]:
        _python, _abi, plat = super().get_tag()
        return "py3", "none", plat


class SdistWithCrate(sdist):
    """Copies the crate's sources into the sdist's ``rust/``, so the sdist
    builds on its own."""

    def make_release_tree(self, base_dir: str, files: List[str]) -> None:
        super().make_release_tree(base_dir, files)
        source = crate_dir()
        target = Path(base_dir) / SDIST_CRATE
        for name in CRATE_FILES:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, target / name)
        for name in CRATE_DIRS:
            shutil.copytree(source / name, target / name, dirs_exist_ok=True)
        for pattern in CRATE_GLOBS:
            for path in source.glob(pattern):
                relative = path.relative_to(source)
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / relative)


CRATE = crate_dir()

setup(
    version=crate_version(CRATE / "Cargo.toml"),
    rust_extensions=[
        RustExtension(
            "sage_queue.libring_buffer",
            path=os.path.relpath(CRATE / "Cargo.toml"),
            binding=Binding.NoBinding,
            # Release also for editable installs (setuptools-rust would build
            # those unoptimised): the same build as the wheel's, shared.
            debug=False,
            # The shipped library: no failpoints, Cargo.lock as committed,
            # no debug information and no symbol table (cargo strips it;
            # the dynamic symbols, the C API, stay).
            cargo_manifest_args=[
                "--locked",
                "--config",
                "profile.release.debug=0",
                "--config",
                'profile.release.strip="symbols"',
            ],
        )
    ],
    cmdclass={"build_rust": BuildLibrary, "bdist_wheel": PlatformWheel, "sdist": SdistWithCrate},
    zip_safe=False,
)
