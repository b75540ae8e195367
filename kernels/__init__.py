"""Numba-compiled kernels (installed as `fastnas.kernels`).

Kernels are compiled with `cache=True`. Numba writes its cache next to the source by default,
which fails when the package directory is read-only (a system or container install), so the
cache directory is chosen here, before any kernel module applies its decorators:
NUMBA_CACHE_DIR when the user set it, else $XDG_CACHE_HOME/fastnas/numba (~/.cache/fastnas/numba),
else a per-user directory under the system temp dir when the home directory is not writable.
"""
from __future__ import annotations

import os
import tempfile


def _writable_dir(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def _choose_cache_dir() -> str:
    user_dir = os.environ.get("NUMBA_CACHE_DIR")
    if user_dir:
        return user_dir  # honoured as given: the user asked for it
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    uid = os.getuid() if hasattr(os, "getuid") else os.getpid()
    for path in (os.path.join(xdg, "fastnas", "numba"),
                 os.path.join(tempfile.gettempdir(), f"fastnas-numba-{uid}")):
        if _writable_dir(path):
            return path
    return tempfile.mkdtemp(prefix="fastnas-numba-")  # last resort: a fresh private dir


def _configure_numba_cache() -> str:
    path = _choose_cache_dir()
    # The environment variable keeps the choice when numba reloads its config at compile time
    # (and in subprocesses); numba.config covers a numba imported before this package.
    os.environ["NUMBA_CACHE_DIR"] = path
    import numba

    numba.config.CACHE_DIR = path
    return path


NUMBA_CACHE_DIR = _configure_numba_cache()
