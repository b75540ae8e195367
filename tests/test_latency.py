"""Latency table: structure, prediction = sum of parts, files, space checks. No timing assertions."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from fastnas.config import SpaceConfig
from fastnas.latency import LatencyTable, LatencyTableError, build_table, main
from fastnas.spaces.mbconv import MBConvSpace

SPACE = SpaceConfig(resolution=32, num_classes=10, depths=[2, 2, 2, 1, 2, 1])


@pytest.fixture(scope="module", params=["in_context", "isolated"])
def table(request):
    return build_table(SPACE, device=torch.device("cpu"), batch_size=2, precision="fp32",
                       method=request.param, warmup=1, repeats=2)


def test_structure(table):
    space = MBConvSpace(SPACE)
    assert table.ms.shape == (len(space), space.max_choices)
    for layer in space.layers:
        offered = table.ms[layer.index, :len(layer.choices)]
        assert np.all(np.isfinite(offered)) and np.all(offered >= 0)
        assert np.all(np.isinf(table.ms[layer.index, len(layer.choices):]))   # not offered: never fits a budget
    parts = table.meta["fixed_parts_ms"]
    assert table.fixed_ms == pytest.approx(parts["stem"] + parts["head"]) and table.fixed_ms > 0
    for key in ("device", "device_name", "batch_size", "resolution", "precision", "method", "threads"):
        assert key in table.meta
    assert table.meta["batch_size"] == 2 and table.meta["resolution"] == 32 and table.meta["precision"] == "fp32"


def test_predict_is_the_sum_of_parts():
    """Against a table of known entries (ms = 10 x layer + choice, fixed 0.5), not one read back from
    the table under test: the prediction of a path is 0.5 + the sum of its own entries."""
    space = MBConvSpace(SPACE)
    L, C = len(space), space.max_choices
    ms = np.add.outer(10.0 * np.arange(L), np.arange(C, dtype=float))
    known = LatencyTable(SPACE, ms, fixed_ms=0.5)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(8)]
    for arch in archs:
        by_hand = 0.5 + sum(10.0 * layer + choice for layer, choice in enumerate(arch))
        assert known.predict(arch) == by_hand
        assert known.predict(space.to_string(arch)) == by_hand
    np.testing.assert_array_equal(known.predict_batch(np.array(archs)),
                                  [0.5 + sum(10.0 * i + c for i, c in enumerate(a)) for a in archs])


def test_measured_table_predicts_its_paths_consistently(table):
    space = MBConvSpace(SPACE)
    a = list(space.sample(np.random.default_rng(1)))
    b = a.copy()
    b[1] = (a[1] + 1) % space.num_choices[1]         # one layer changed: the prediction moves by that entry
    assert table.predict(b) - table.predict(a) == pytest.approx(table.ms[1, b[1]] - table.ms[1, a[1]])


def test_save_load_roundtrip_and_space_check(table, tmp_path):
    path = tmp_path / "lut.json"
    table.save(path)
    again = LatencyTable.load(path, SPACE)
    np.testing.assert_allclose(again.ms, table.ms, atol=1e-6)
    assert again.fixed_ms == pytest.approx(table.fixed_ms, abs=1e-6) and again.meta["method"] == table.meta["method"]
    LatencyTable.load(path, dataclasses.replace(SPACE, dropout=0.5))       # dropout does not run in eval
    with pytest.raises(LatencyTableError, match=r"space.resolution=32.*space.resolution=64"):
        LatencyTable.load(path, dataclasses.replace(SPACE, resolution=64))
    with pytest.raises(LatencyTableError, match="space.kernel_sizes"):
        LatencyTable.load(path, dataclasses.replace(SPACE, kernel_sizes=[3, 5]))


def test_invalid_arch_and_bad_files(table, tmp_path):
    with pytest.raises(Exception, match="position 0"):
        table.predict((99,) + (0,) * (len(table.space) - 1))
    with pytest.raises(LatencyTableError, match="not found"):
        LatencyTable.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LatencyTableError, match="not valid JSON"):
        LatencyTable.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "fastnas-latency/1", "space": {}, "layers": []}))
    with pytest.raises(LatencyTableError, match="malformed|layers"):
        LatencyTable.load(tmp_path / "other.json")


def test_cli_writes_table(tmp_path, capsys):
    out = tmp_path / "lut.json"
    overrides = ["space.resolution=32", "space.num_classes=10", "space.depths=[1,1,1,1,1,1]"]
    assert main(["--device", "cpu", "--out", str(out), "--warmup", "0", "--repeats", "1",
                 "--precision", "fp32", *overrides]) == 0
    table = LatencyTable.load(out)
    assert table.meta["device"] == "cpu" and table.space_cfg.depths == [1] * 6
    assert "latency table:" in capsys.readouterr().out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run by bench/gpu_check.sh hosts)")
def test_cli_writes_a_cuda_table(tmp_path, capsys):
    out = tmp_path / "lut.json"
    overrides = ["space.resolution=32", "space.num_classes=10", "space.depths=[1,1,1,1,1,1]"]
    assert main(["--device", "cuda", "--out", str(out), "--warmup", "1", "--repeats", "2", *overrides]) == 0
    table = LatencyTable.load(out)
    assert table.meta["device"] == "cuda" and np.isfinite(table.ms[:, 0]).all() and table.fixed_ms > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cli_cuda_without_gpu_is_one_line(tmp_path, capsys):
    assert main(["--device", "cuda", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastnas: error:") and "CUDA" in err and "\n" not in err
    assert not (tmp_path / "x.json").exists()
