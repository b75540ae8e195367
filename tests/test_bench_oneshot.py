"""bench/bench_oneshot.py end to end on a tiny NB201 supernet: the JSON a reader relies on, and the plot.

The supernet here is untrained (random weights, C = 4, N = 1) and the images are the bundled CIFAR-10
sample, so the numbers mean nothing; what is checked is that every advertised key is there, that the
ground truth comes from the table, and that the search outcome is a cell the table scores.
"""
import json
import subprocess
import sys
from pathlib import Path

import torch

from fastnas.config import load_config
from fastnas.groundtruth import GroundTruth
from fastnas.spaces import build_supernet

REPO = Path(__file__).resolve().parents[1]
SAMPLE = ["data.path=data/cifar10-sample", "data.holdout=0", "data.val_split=val", "data.calib_images=64",
          "data.val_images=64", "eval.eval_batch=64", "eval.calib_batch=32"]


def test_bench_oneshot_writes_the_promised_json_and_plot(tmp_path):
    cfg = load_config(REPO / "configs" / "nb201_cifar10.yaml", ["space.cell_channels=4", *SAMPLE])
    torch.manual_seed(0)
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"model": build_supernet(cfg.space).state_dict(), "config": cfg.to_dict(), "step": 0}, ckpt)
    out = tmp_path / "oneshot.json"
    run = subprocess.run([sys.executable, "bench/bench_oneshot.py", "--checkpoint", str(ckpt), "--archs", "12",
                          "--search-seeds", "2", "--budget", "6", "--out", str(tmp_path), "--json", str(out),
                          "space.cell_channels=4", *SAMPLE], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    for key in ("kendall_tau_valid", "kendall_tau_test", "spearman_valid", "precision_top10",
                "params_kendall_tau_valid", "params_precision_top10", "search", "optimum_test", "supernet", "device"):
        assert key in result, key
    assert set(result["search"]) == {"mfg", "rea", "random", "boltzmann"}
    truth = GroundTruth.load(build_supernet(cfg.space).space)
    for name, s in result["search"].items():
        assert s["n"] == 2 and set(s) >= {"mean", "std", "n"}
        tests = [truth.value(truth.space.from_string(a)) for a in s["archs"]]
        assert abs(s["mean"] - sum(tests) / 2) < 1e-9, name
    assert result["optimum_test"] == truth.best()
    assert {"N", "C", "epochs", "train_images", "wall_s"} <= set(result["supernet"])
    assert (tmp_path / "oneshot.png").read_bytes()[:4] == b"\x89PNG"
