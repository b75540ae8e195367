"""bench/gpu_check.sh, the one script that proves the GPU paths: its CPU dry run, for real.

The dry run takes every step the GPU run takes (2 gloo ranks for NCCL, CPU DALI for mixed
decode, bf16 and fp16 + GradScaler, the search's DALI evaluation decode, the four benches, the
tests that need CUDA),
each shrunk to seconds, so a broken step shows here before a GPU is at hand.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from conftest import REPO

SCRIPT = REPO / "bench" / "gpu_check.sh"
STEPS = ["train_bf16", "train_fp16", "search", "data", "train", "eval", "mfg", "cuda_tests"]


@pytest.mark.slow
def test_dry_run_takes_every_step_and_writes_one_json_and_one_log(tmp_path):
    out = tmp_path / "check" / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["ranks"] == (torch.cuda.device_count() or 2)
    assert list(report["benches"]) == STEPS
    assert all(step["status"] == "ok" for step in report["benches"].values())
    for name in ("train_bf16", "train_fp16"):
        assert report["benches"][name]["steps_logged"] == 3 and report["benches"][name]["img_per_s"] > 0
    assert report["benches"]["search"]["summary"].startswith("search done")
    for name in ("data", "train", "eval", "mfg"):
        assert isinstance(report["benches"][name]["result"], dict)
    log = out.with_suffix(".log").read_text()
    assert all(f"gpu_check: {name}: exit 0" in log for name in STEPS)
    assert f"{len(STEPS)}/{len(STEPS)} steps ok" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_without_a_gpu_it_refuses_in_one_line_unless_allowed(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path / "x.json")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--allow-cpu" in proc.stderr
    bad = subprocess.run(["bash", str(SCRIPT), "--bogus"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown argument '--bogus'" in bad.stderr
