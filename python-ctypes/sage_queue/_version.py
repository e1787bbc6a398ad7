"""``__version__``: the installed distribution's version, which setup.py took
from the Rust crate's Cargo.toml (the one version of the project).

Without an installed distribution (the sources put on ``sys.path`` by hand),
the loaded library's version stands in: it comes from the same Cargo.toml.
"""

from __future__ import annotations

from importlib import metadata

from ._lib import LIBRARY_VERSION

__all__ = ["__version__"]


def _installed_version() -> str:
    try:
        dist = metadata.distribution("sage_queue")
    except metadata.PackageNotFoundError:
        return LIBRARY_VERSION
    return str(dist.version)


__version__ = _installed_version()
