"""The search against ground truth (search.ground_truth), its pictures, and the quickstart's summary.

A tiny NB201 supernet (C = 4, N = 1, random weights) on the bundled CIFAR-10 sample, searched in
process with the bundled NAS-Bench-201 table as ground truth.
"""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fastnas.checkpoint import save_checkpoint
from fastnas.config import load_config
from fastnas.groundtruth import NB201_TABLE, GroundTruth
from fastnas.quickstart import summarize, summary_lines, write_summary
from fastnas.report import kendall_tau, plot_progress, plot_truth
from fastnas.search import main as search_main
from fastnas.spaces import build_space, build_supernet

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "quickstart.yaml"
SAMPLE = REPO / "data" / "cifar10-sample"
TINY = ["space.cell_channels=4", "space.cells_per_stage=1", f"data.path={SAMPLE}", "data.calib_images=40",
        "data.val_images=40", "eval.eval_batch=40", "eval.calib_batch=20", "search.population=6",
        "search.generations=2", "search.elites=1", "search.ground_truth=nb201"]
PICTURES = ("progress.png", "pareto.png", "best_arch.png", "truth.png")
SUMMARY_KEYS = ["found_arch", "found_true_test", "found_rank", "first_generation_median_true_test",
                "candidates_evaluated", "wall_s"]


@pytest.fixture(scope="module")
def truth():
    return GroundTruth.load(build_space(load_config(CONFIG, TINY).space), NB201_TABLE)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = load_config(CONFIG, TINY)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("nb201") / "checkpoint.pt"
    save_checkpoint(path, {"model": build_supernet(cfg.space).state_dict(), "config": cfg.to_dict(), "step": 0})
    return path


def run_search(checkpoint, out, *extra) -> int:
    return search_main(["--config", str(CONFIG), "--checkpoint", str(checkpoint), "--out", str(out), *TINY, *extra])


def test_search_with_ground_truth_writes_truth_and_pictures_and_resumes_progress(checkpoint, tmp_path, truth):
    out = tmp_path / "search"
    assert run_search(checkpoint, out, "--fresh") == 0
    space = truth.space
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert {int(r["generation"]) for r in rows} == {0, 1, 2}
    for r in rows:
        arch = space.from_string(r["arch"])
        assert float(r["true_test"]) == truth.value(arch, "cifar10_test")
        assert float(r["true_valid"]) == truth.value(arch, "cifar10valid_valid")
    best = json.loads((out / "best.json").read_text())
    found = space.from_string(best["arch"])
    assert best["true_test"] == truth.value(found, "cifar10_test")
    assert best["true_rank"] == truth.rank(found, "cifar10_test") and 1 <= best["true_rank"] <= 15625
    for picture in PICTURES:
        data = (out / picture).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, picture
    progress = json.loads((out / "progress.json").read_text())
    assert [p["generation"] for p in progress] == [0, 1, 2]
    assert progress[-1]["evaluations"] == len(rows)
    assert progress[-1]["best"] == pytest.approx(max(float(r["fitness"]) for r in rows), abs=1e-4)
    assert progress[0]["parent_diversity"] == 0 and set(progress[0]) == {
        "generation", "evaluations", "best", "mean", "parent_diversity"}

    # resumed with one more generation (no --fresh): the earlier entries are kept as they were
    assert run_search(checkpoint, out, "search.generations=3") == 0
    resumed = json.loads((out / "progress.json").read_text())
    assert resumed[:3] == progress and [p["generation"] for p in resumed] == [0, 1, 2, 3]
    assert {int(r["generation"]) for r in csv.DictReader(open(out / "history.csv"))} == {0, 1, 2, 3}

    # the quickstart's summary of this very search
    summary = summarize(out, truth, wall_s=1.0)
    assert summary["found_arch"] == json.loads((out / "best.json").read_text())["arch"]
    assert summary["candidates_evaluated"] == len(list(csv.DictReader(open(out / "history.csv"))))


def test_ground_truth_that_does_not_match_the_space_is_one_line(checkpoint, tmp_path, capsys):
    assert run_search(checkpoint, tmp_path / "a", "search.ground_truth=/nonexistent/table.csv") == 2
    assert capsys.readouterr().err.strip() == ("fastnas: error: search.ground_truth: no table "
                                               "'/nonexistent/table.csv' (use nb201 or the path of a CSV with "
                                               "arch_str, cifar10valid_valid and cifar10_test columns)")
    table = tmp_path / "mbconv.csv"
    table.write_text("arch_index,arch_str,cifar10valid_valid,cifar10_test\n0,k3e6-k3e6,70.0,71.0\n")
    assert run_search(checkpoint, tmp_path / "b", f"search.ground_truth={table}") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not match the search space (NB201Space)" in err, err


def _fake_search(folder: Path, space, generations: list[list[tuple]], best: tuple) -> None:
    folder.mkdir(parents=True)
    with open(folder / "history.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["generation", "arch", "fitness"])
        for g, archs in enumerate(generations):
            for a in archs:
                w.writerow([g, space.to_string(a), 50.0])
    (folder / "best.json").write_text(json.dumps({"arch": space.to_string(best)}))


def test_summary_keys_and_values_against_the_table(tmp_path, truth):
    space = truth.space
    rng = np.random.default_rng(3)
    optimum = truth.archs[int(np.argmax(truth.columns["cifar10_test"]))]
    first = [truth.archs[i] for i in rng.choice(len(truth), 7, replace=False)]
    later = [truth.archs[i] for i in rng.choice(len(truth), 5, replace=False)] + [optimum]
    _fake_search(tmp_path / "search", space, [first, later], best=optimum)
    summary = summarize(tmp_path / "search", truth, wall_s=123.456)
    assert list(summary)[:6] == SUMMARY_KEYS
    assert summary["found_arch"] == space.to_string(optimum) == truth.space.to_string(optimum)
    assert summary["found_true_test"] == truth.best() == pytest.approx(94.37333)
    assert summary["found_rank"] == 1
    median = float(np.median([truth.value(a, "cifar10_test") for a in first]))
    assert summary["first_generation_median_true_test"] == median
    assert summary["first_generation_median_rank"] == 1 + int(np.sum(truth.columns["cifar10_test"] > median))
    assert summary["candidates_evaluated"] == 13 and summary["first_generation_size"] == 7
    assert summary["wall_s"] == 123.5
    assert summary["optimum_test"] == truth.best()
    assert summary["median_test"] == float(np.median(truth.columns["cifar10_test"]))
    assert summary["found_true_valid"] == truth.value(optimum, "cifar10valid_valid")
    assert summary["cells"] == 15625 and summary["ground_truth"] == "data/nasbench201/nb201_cifar10.csv"

    path = tmp_path / "summary.json"
    write_summary(path, summary)
    assert json.loads(path.read_text()) == summary
    lines = summary_lines(summary)
    assert space.to_string(optimum) in lines[1] and "rank 1 of 15,625" in lines[2]
    assert f"{median:.2f} %" in lines[3]


def test_kendall_tau_is_scipys_tau_b():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in (2, 9, 150):
        x = rng.integers(0, 6, n).astype(float)          # ties in both variables
        y = x + rng.normal(size=n) * 2
        y[::4] = y[0]
        assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert np.isnan(kendall_tau([1.0, 1.0], [0.0, 2.0]))


def test_progress_and_truth_pictures(tmp_path):
    records = [{"generation": g, "evaluations": 20 + 18 * g, "best": 60 + g, "mean": 50 + g,
                "parent_diversity": 0.0 if g == 0 else 0.5 - 0.03 * g} for g in range(6)]
    plot_progress(records, tmp_path / "progress.png", ylabel="minus val loss")
    rng = np.random.default_rng(1)
    true_acc = rng.uniform(80, 94, 40)
    tau = plot_truth(true_acc, true_acc + rng.normal(size=40), [0] * 20 + [1] * 20, tmp_path / "truth.png", best=3)
    assert 0.5 < tau <= 1.0
    for name in ("progress.png", "truth.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_quickstart_configs_and_bundled_sample():
    cfg = load_config(CONFIG)
    assert (cfg.space.type, cfg.space.resolution, cfg.space.cell_channels, cfg.space.cells_per_stage) == \
        ("nb201", 32, 16, 1)
    assert (cfg.data.path, cfg.data.val_split, cfg.search.ground_truth) == ("data/cifar10-sample", "val", "nb201")
    assert cfg.search.population + cfg.search.generations * (cfg.search.population - cfg.search.elites) >= 180
    imagenette = load_config(REPO / "configs" / "quickstart_imagenette.yaml")
    assert imagenette.space.type == "mbconv" and imagenette.data.path == "data/imagenette-sample"
    assert all(p.startswith("runs/quickstart_imagenette/") for p in
               (imagenette.train.run_dir, imagenette.eval.checkpoint, imagenette.search.out_dir))
    assert not imagenette.search.ground_truth
    for split, per_class in (("train", 1000), ("val", 200)):
        folders = sorted(p for p in (SAMPLE / split).iterdir())
        assert [p.name for p in folders] == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                             "horse", "ship", "truck"]
        assert all(len(list(p.glob("*.jpg"))) == per_class for p in folders)
    assert "d7d05618061fe37d830fb0419063d113c575ccbc" in (SAMPLE / "SOURCE.md").read_text()
