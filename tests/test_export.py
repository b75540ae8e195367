"""Export: the standalone model rebuilt from DIR equals the supernet path; ONNX equals PyTorch.

ONNX tolerance: onnxruntime (CPU, fp32) and PyTorch (CPU, fp32) run the same graph with different
kernels and summation orders, so logits agree to float32 rounding, not bit for bit. We require
|ort - torch| <= 1e-4 + 1e-4 * |torch| elementwise (observed: ~1e-6 on logits of magnitude ~1).
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import randomize_bn

from fastnas.config import Config, SpaceConfig
from fastnas.export import OPSET, load_exported, main
from fastnas.spaces import build_supernet
from fastnas.spaces.mbconv import MBConvSpace
from fastnas.spaces.mbconv_net import SuperNet

REPO = Path(__file__).resolve().parents[1]
RES = 32
ATOL = RTOL = 1e-4


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A supernet checkpoint in the training contract's format, with non-trivial BN statistics."""
    torch.manual_seed(0)
    cfg = Config(space=SpaceConfig(resolution=RES, num_classes=10))
    net = randomize_bn(SuperNet(cfg.space))
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    torch.save({"model": net.state_dict(), "config": cfg.to_dict(), "step": 0}, path)
    arch = net.space.sample(np.random.default_rng(0))
    best = path.parent / "best.json"
    best.write_text(json.dumps({"arch": net.space.to_string(arch), "top1": 12.5}))
    return net.eval(), path, arch, best


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    net, ckpt, arch, best = trained
    out = tmp_path_factory.mktemp("export") / "model"
    assert main(["--arch", str(best), "--supernet", str(ckpt), "--out", str(out), "--no-recalibrate"]) == 0
    return out


def test_default_export_carries_the_recalibrated_bn_statistics(trained, tmp_path):
    """By default the exported model is what the search scored: the path with exactly recalibrated BNs."""
    from fastnas.checkpoint import load_supernet
    from fastnas.evaluate import build_evaluator
    net, ckpt, arch, best = trained
    out = tmp_path / "model"
    assert main(["--arch", str(best), "--supernet", str(ckpt), "--out", str(out), "data.calib_images=40"]) == 0
    _, cfg = load_supernet(ckpt)
    cfg.data.calib_images = 40
    expected = build_evaluator(cfg, "cpu", ckpt).recalibrated_subnet(arch).state_dict()
    got = load_exported(out).state_dict()
    assert set(got) == set(expected)
    for name in got:
        assert torch.equal(got[name], expected[name].contiguous()), name
    stale = net.subnet(arch).state_dict()
    assert not torch.equal(got["stem.1.running_mean"], stale["stem.1.running_mean"])


def test_rebuilt_model_equals_supernet_path(trained, exported):
    net, _, arch, _ = trained
    model = load_exported(exported)
    assert model.arch == arch and not model.training
    x = torch.randn(4, 3, RES, RES)
    with torch.no_grad():
        assert (model(x) - net(x, arch)).abs().max().item() <= 1e-5
        assert torch.equal(model(x), net.subnet(arch).eval()(x))


def test_model_pt_holds_only_weights_and_config(exported):
    state = torch.load(exported / "model.pt", weights_only=True)
    assert set(state) == {"format", "space", "arch", "state_dict"}
    assert isinstance(state["arch"], str) and state["space"]["resolution"] == RES
    info = json.loads((exported / "model.json").read_text())
    assert info["arch"] == state["arch"] and info["params"] == sum(
        v.numel() for k, v in state["state_dict"].items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


def test_onnx_matches_pytorch_with_dynamic_batch(trained, exported):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    net, _, arch, _ = trained
    model = onnx.load(str(exported / "model.onnx"))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= OPSET
    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5):                                   # exported with batch 2: the axis must be dynamic
        x = torch.randn(batch, 3, RES, RES)
        with torch.no_grad():
            expected = net(x, arch).numpy()
        got = session.run(["logits"], {"images": x.numpy()})[0]
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)
        assert np.abs(expected).max() > 1e-2                # not a vacuous comparison of zeros


def test_literal_arch_string(trained, tmp_path):
    net, ckpt, _, _ = trained
    arch_str = "uniform:k5e3"
    assert main(["--arch", arch_str, "--supernet", str(ckpt), "--out", str(tmp_path), "--no-onnx"]) == 0
    assert load_exported(tmp_path).arch == net.space.from_string(arch_str)
    assert not (tmp_path / "model.onnx").exists()


def _one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastnas: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_inputs_give_one_clear_line(trained, tmp_path, capsys):
    net, ckpt, arch, best = trained
    out = str(tmp_path / "out")
    err = _one_line_error(capsys, ["--arch", str(tmp_path / "best.json"), "--supernet", str(ckpt), "--out", out])
    assert "not found" in err and "best.json" in err
    # skip is never allowed at a stage's first layer (position 0 changes channels)
    bad = "-".join(["skip"] + net.space.to_string(arch).split("-")[1:])
    assert "position 0" in _one_line_error(capsys, ["--arch", bad, "--supernet", str(ckpt), "--out", out])
    assert "21 " in _one_line_error(capsys, ["--arch", "k3e6-k3e6", "--supernet", str(ckpt), "--out", out])
    no_key = tmp_path / "nokey.json"
    no_key.write_text('{"top1": 1}')
    assert '"arch"' in _one_line_error(capsys, ["--arch", str(no_key), "--supernet", str(ckpt), "--out", out])
    assert "not found" in _one_line_error(capsys, ["--arch", str(best), "--supernet", str(tmp_path / "x.pt"),
                                                   "--out", out])
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(ckpt.read_bytes()[:1000])
    _one_line_error(capsys, ["--arch", str(best), "--supernet", str(truncated), "--out", out])
    assert "exported model not found" in str(pytest.raises(Exception, load_exported, tmp_path / "none").value)


def test_cli_process_exit_code(tmp_path):
    """The real command line: a missing best.json is exit 2 and one line on stderr."""
    proc = subprocess.run([sys.executable, "-m", "fastnas.export", "--arch", str(tmp_path / "best.json"),
                           "--supernet", str(tmp_path / "ckpt.pt"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "fastnas: error:" in proc.stderr


def test_nb201_cell_export_round_trip(tmp_path):
    """A cell of the NAS-Bench-201 space exports like any architecture: the string of the table, weights with
    recalibrated BNs, ONNX, and the CIFAR normalisation the model was trained with."""
    bundled = REPO / "data" / "imagenette-sample"
    cfg = Config(space=SpaceConfig(type="nb201", resolution=RES, num_classes=10, cell_channels=4, cells_per_stage=1))
    cfg.data.path = str(bundled)
    cfg.data.normalization = "cifar"
    torch.manual_seed(0)
    net = randomize_bn(build_supernet(cfg.space))
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"model": net.state_dict(), "config": cfg.to_dict(), "step": 0}, ckpt)
    cell = "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    out = tmp_path / "model"
    assert main(["--arch", cell, "--supernet", str(ckpt), "--out", str(out), "data.calib_images=16"]) == 0
    info = json.loads((out / "model.json").read_text())
    assert info["arch"] == cell and info["input"]["mean"] == [0.4914, 0.4822, 0.4465]
    model = load_exported(out)
    x = torch.randn(2, 3, RES, RES)
    import onnxruntime as ort
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = model(x).numpy()
    got = session.run(None, {"images": x.numpy()})[0]
    assert np.allclose(got, ref, atol=ATOL, rtol=RTOL)

