"""Retraining a found architecture: inherited init, resume, bad --arch input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastnas.checkpoint import load_checkpoint, save_checkpoint
from fastnas.config import load_config
from fastnas.spaces.mbconv import MBConvSpace
from fastnas.spaces.mbconv_net import SuperNet

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
sys.path.insert(0, str(Path(__file__).parent))
from test_train import sub_env, tiny  # noqa: E402

SPACE = ["space.resolution=32", "space.channels=[16,24]", "space.depths=[2,2]", "space.strides=[2,2]",
         "space.head_channels=64", "space.num_classes=10"]


def _retrain(out_dir, arch_file, *extra, init="scratch"):
    cmd = [PY, "-m", "fastnas.retrain", "--arch", str(arch_file), "--init", init, "--run-dir", str(out_dir / "re"),
           "--supernet", str(arch_file.parent / "super.pt"), *tiny(out_dir / "unused", "train.ckpt_every=2", *extra)]
    return subprocess.run(cmd, cwd=REPO, env=sub_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture
def arch_file(tmp_path):
    cfg = load_config(None, SPACE)
    space = MBConvSpace(cfg.space)
    arch = tuple(1 for _ in space.layers)
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "super.pt", {"model": SuperNet(space).state_dict(), "config": cfg.to_dict(), "step": 0})
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"arch": space.to_string(arch), "top1": 50.0}))
    return path


@pytest.mark.slow
def test_retrain_resume_equals_uninterrupted_run(tmp_path, arch_file):
    """Stop after 2 steps, continue to 4 (automatic resume) == 4 steps straight; bitwise on CPU."""
    straight = _retrain(tmp_path / "a", arch_file, "train.max_steps=4", "train.deterministic=true")
    assert straight.returncode == 0, straight.stderr[-2000:]
    runs = []
    for steps in (2, 4):
        runs.append(_retrain(tmp_path / "b", arch_file, f"train.max_steps={steps}", "train.deterministic=true"))
        assert runs[-1].returncode == 0, runs[-1].stderr[-2000:]
    assert "resumed from step 2" in runs[1].stdout
    a = load_checkpoint(tmp_path / "a" / "re" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "re" / "checkpoint.pt")
    assert a["step"] == b["step"] == 4 and b["arch_string"].startswith("k3e6")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_retrain_inherited_starts_from_the_supernet_path(tmp_path, arch_file):
    proc = _retrain(tmp_path, arch_file, "train.max_steps=1", "train.lr=0.000000001", init="inherited")
    assert proc.returncode == 0, proc.stderr[-2000:]
    super_state = load_checkpoint(tmp_path / "super.pt")["model"]
    sub = load_checkpoint(tmp_path / "re" / "checkpoint.pt")["model"]
    w = sub["layers.0.body.0.0.weight"]
    assert torch.allclose(w, super_state["layers.0.1.body.0.0.weight"], atol=1e-6)


def test_bad_arch_is_one_clear_line(tmp_path, arch_file):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"arch": "k3e6-nonsense"}))
    proc = _retrain(tmp_path, bad, "train.max_steps=1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("fastnas: error: ")
