"""Compiled kernels cache to a per-user directory, so a read-only install works and compiles once."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
# Import the copy on PYTHONPATH, not the editable install of the checkout.
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
import numpy as np, fastnas, fastnas.kernels
from fastnas.kernels import mfg as km
from fastnas.mfg import solve_equilibrium
assert fastnas.__file__.startswith({root!r}), fastnas.__file__
print(fastnas.kernels.NUMBA_CACHE_DIR)
if {solve}:
    rng = np.random.default_rng(0)
    eq = solve_equilibrium(rng.integers(0, 7, (50, 21)), rng.normal(size=50), n_choices=7, tau=0.5, lam=2.0)
    assert eq.exploitability <= 1e-10
    print(sum(km.solve.stats.cache_hits.values()), sum(km.solve.stats.cache_misses.values()))
"""


def read_only_copy(root: Path) -> Path:
    """fastnas/{__init__,errors,mfg}.py and kernels/ laid out as installed, then made read-only."""
    pkg = root / "fastnas"
    (pkg / "kernels").mkdir(parents=True)
    for name in ("__init__.py", "errors.py", "mfg.py"):
        shutil.copy(REPO / "fastnas" / name, pkg / name)
    for name in ("__init__.py", "mfg.py"):
        shutil.copy(REPO / "kernels" / name, pkg / "kernels" / name)
    for path in [*pkg.rglob("*"), pkg]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return pkg


def run(root: Path, solve: bool = True, **env_overrides) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1", **env_overrides)
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(root), solve=solve)], env=env,
                         capture_output=True, text=True, timeout=300, cwd=root)  # cwd: not the checkout
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n")


@pytest.mark.slow  # two subprocesses, one compiling the kernels: 20-35 s on the shared 2-core machine
def test_read_only_package_caches_in_user_dir(tmp_path):
    pkg = read_only_copy(tmp_path / "site")
    xdg = tmp_path / "xdg"
    try:
        cache_dir, counts = run(tmp_path / "site", XDG_CACHE_HOME=str(xdg))[:2]
        assert cache_dir == str(xdg / "fastnas" / "numba")
        assert counts == "0 1"  # compiled once...
        assert list(Path(cache_dir).rglob("*.nbi")) and list(Path(cache_dir).rglob("*.nbc"))
        assert run(tmp_path / "site", XDG_CACHE_HOME=str(xdg))[1] == "1 0"  # ...then loaded
        assert not [p for p in pkg.rglob("*") if p.suffix in (".nbi", ".nbc")]  # nothing written in the package

        user_dir = tmp_path / "numba-user"  # NUMBA_CACHE_DIR is honoured
        assert run(tmp_path / "site", False, XDG_CACHE_HOME=str(xdg), NUMBA_CACHE_DIR=str(user_dir))[0] == str(user_dir)
    finally:
        for path in [*pkg.rglob("*"), pkg]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
