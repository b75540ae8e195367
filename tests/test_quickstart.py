"""`make quickstart` and `make quickstart-imagenette` end to end, shortened: the real 2-process torchrun
training, the search and the export, run by `python -m fastnas.quickstart` exactly as the Makefile does,
with only the step counts and the output folders overridden."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_train import REPO, sub_env


def shortened(tmp_path) -> list[str]:
    return [f"train.run_dir={tmp_path}/supernet", f"eval.checkpoint={tmp_path}/supernet/checkpoint.pt",
            f"search.out_dir={tmp_path}/search", "train.max_steps=4", "train.ckpt_every=4",
            "search.population=6", "search.generations=1", "search.elites=1",
            "data.calib_images=100", "data.val_images=100", "eval.eval_batch=100"]


@pytest.mark.slow
@pytest.mark.parametrize("config", ["quickstart.yaml", "quickstart_imagenette.yaml"])
def test_quickstart_runs_end_to_end(tmp_path, config):
    proc = subprocess.run([sys.executable, "-m", "fastnas.quickstart", "--config", f"configs/{config}",
                           *shortened(tmp_path)], cwd=REPO, env=sub_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "quickstart finished" in proc.stdout
    for name in ("best.json", "history.csv", "progress.png", "pareto.png", "best_arch.png"):
        assert (tmp_path / "search" / name).stat().st_size > 0
    assert (tmp_path / "export" / "model.onnx").stat().st_size > 0
    if config == "quickstart.yaml":              # the ground-truth lines and summary.json
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert {"found_arch", "found_true_test", "found_rank", "first_generation_median_true_test",
                "candidates_evaluated", "wall_s"} <= set(summary)
        assert summary["candidates_evaluated"] == 6 + 5
        assert "NAS-Bench-201" in proc.stdout and (tmp_path / "search" / "truth.png").stat().st_size > 0
