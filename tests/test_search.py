"""`python -m fastnas.search` end to end on a real (tiny) supernet checkpoint and real JPEGs."""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from fastnas.checkpoint import save_checkpoint
from fastnas.config import load_config
from fastnas.spaces.mbconv_net import SuperNet

TINY = ["space.resolution=32", "space.num_classes=10", "data.calib_images=40", "data.val_images=20",
        "search.population=6", "search.generations=2", "search.elites=1", "data.backend=torchvision"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = load_config("configs/quickstart_imagenette.yaml", TINY)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("supernet") / "checkpoint.pt"
    save_checkpoint(path, {"model": SuperNet(cfg.space).state_dict(), "config": cfg.to_dict(), "step": 0})
    return path


def search(*args):
    return subprocess.run([sys.executable, "-m", "fastnas.search", "--config",
                           "configs/quickstart_imagenette.yaml", *args], capture_output=True, text=True, timeout=600)


def test_search_writes_every_output(checkpoint, tmp_path):
    out = tmp_path / "search"
    r = search("--checkpoint", str(checkpoint), "--out", str(out), "--eval-batch", "16", *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "gen   2" in r.stdout and "cand/s" in r.stdout
    best = json.loads((out / "best.json").read_text())
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert {int(r["generation"]) for r in rows} == {0, 1, 2}
    assert len({r["arch"] for r in rows}) == len(rows)                 # never evaluated twice
    assert best["top1"] == max(float(r["top1"]) for r in rows)
    assert best["arch"] in {r["arch"] for r in rows} and best["macs"] > 0 and best["params"] > 0
    for picture in ("pareto.png", "best_arch.png"):
        assert (out / picture).read_bytes()[:4] == b"\x89PNG"
    # a second run resumes from state.json: nothing new is evaluated, same answer; eval_batch is only a
    # speed knob, so a different one resumes too
    history = (out / "history.csv").read_text()
    again = search("--checkpoint", str(checkpoint), "--out", str(out), "--eval-batch", "8", *TINY)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "history.csv").read_text() == history
    assert json.loads((out / "best.json").read_text()) == best


def test_resume_refuses_fitness_from_other_weights_or_calibration(checkpoint, tmp_path):
    """Fitness scored on other weights (or another BN calibration batch) must not be mixed in."""
    out = tmp_path / "search"
    first = search("--checkpoint", str(checkpoint), "--out", str(out), "--eval-batch", "16", *TINY)
    assert first.returncode == 0, first.stderr[-2000:]
    cfg = load_config("configs/quickstart_imagenette.yaml", TINY)
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    save_checkpoint(other, {"model": SuperNet(cfg.space).state_dict(), "config": cfg.to_dict(), "step": 0})
    for args, changed in ((["--checkpoint", str(other), *TINY], "weights"),
                          (["--checkpoint", str(checkpoint), *TINY, "eval.calib_batch=8"], "calib_batch")):
        r = search("--out", str(out), "--eval-batch", "16", *args)
        assert r.returncode == 2 and changed in r.stderr and "--fresh" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    fresh = search("--checkpoint", str(other), "--out", str(out), "--eval-batch", "16", "--fresh", *TINY)
    assert fresh.returncode == 0, fresh.stderr[-2000:]


@pytest.mark.parametrize("args,message", [
    (["--checkpoint", "/nonexistent/ckpt.pt"], "checkpoint not found: /nonexistent/ckpt.pt"),
    (["--eval-batch", "0"], "eval.eval_batch: must be an integer >= 1"),
    (["--max-latency-ms", "5"], "needs a latency table"),
    (["--selector", "nope"], "search.selector"),
])
def test_bad_input_is_one_clear_line(checkpoint, tmp_path, args, message):
    r = search("--checkpoint", str(checkpoint), "--out", str(tmp_path), *TINY, *args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.slow
def test_two_rank_search_equals_one_rank(checkpoint, tmp_path):
    """Real torchrun, 2 gloo ranks: candidates come from rank 0 (broadcast), evaluation is sharded and
    gathered, and the outcome is the 1-rank search's, row for row."""
    args = ["--config", "configs/quickstart_imagenette.yaml", "--checkpoint", str(checkpoint), "--eval-batch", "16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "fastnas.search", *args, "--out", str(tmp_path / "one"), *TINY],
                         capture_output=True, text=True, timeout=600, env=env)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "fastnas.search", *args, "--out", str(tmp_path / "two"), *TINY],
                         capture_output=True, text=True, timeout=600, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, (two.stdout + two.stderr)[-3000:]
    assert "world size 2" in two.stdout
    assert (tmp_path / "two" / "history.csv").read_text() == (tmp_path / "one" / "history.csv").read_text()
