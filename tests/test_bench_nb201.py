"""bench/bench_nb201.py: the noisy-fitness protocol, its JSON layout and picture, and its input errors."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from test_train import REPO, sub_env

sys.path.insert(0, str(REPO / "bench"))
import bench_nb201  # noqa: E402


def test_noise_is_one_fixed_draw_per_architecture_and_seed():
    f = np.linspace(80.0, 94.0, 15625)
    a, again, other = bench_nb201.noisy(f, 1.5, 3), bench_nb201.noisy(f, 1.5, 3), bench_nb201.noisy(f, 1.5, 4)
    np.testing.assert_array_equal(a, again)                    # a re-query sees the same value
    assert not np.allclose(a, other)                           # another seed, other draws
    assert abs(np.std(a - f) - 1.5) < 0.05 and abs(np.mean(a - f)) < 0.05
    assert bench_nb201.noisy(f, 0.0, 3) is f


def test_noise_levels_json_and_plot(tmp_path):
    out = tmp_path / "nb201.json"
    proc = subprocess.run([sys.executable, "bench/bench_nb201.py", "--seeds", "3", "--budgets", "20,40",
                           "--noise", "0,1", "--json", str(out)], cwd=REPO, env=sub_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    names = {"mfg", "mfg_lam0", "boltzmann", "truncation", "tournament", "rea", "random"}
    assert set(data["noise"]) == {"0", "1"}
    for level in data["noise"].values():
        assert set(level["budgets"]) == {"20", "40"}
        for row in level["budgets"].values():
            assert set(row) == names and all(set(r) == {"mean", "std", "n"} and r["n"] == 3 for r in row.values())
    assert set(data["noise"]["1"]["mfg_vs"]) == names - {"mfg"}
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_noise_is_one_line():
    proc = subprocess.run([sys.executable, "bench/bench_nb201.py", "--noise", "0,x"], cwd=REPO, env=sub_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1 and "--noise" in proc.stderr
