"""The NAS-Bench-201 space: the benchmark's string form, the exact cost model (against FlopCounterMode,
the built network and the benchmark's published numbers), and supernet/subnet agreement."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from helpers import randomize_bn
from fastnas.config import CONFIG_DIR, ConfigError, SpaceConfig, section_from_dict
from fastnas.spaces import ArchError, build_space
from fastnas.spaces.nb201 import NB201Space
from fastnas.spaces.nb201_net import NB201SubNet, NB201SuperNet

REPO = Path(__file__).resolve().parents[1]
TABLE_CANDIDATES = [REPO / "data" / "nasbench201" / "nb201_cifar10.csv",
                    REPO.parent / "shared" / "data" / "nasbench201" / "nb201_cifar10.csv"]

BENCHMARK = SpaceConfig(type="nb201", resolution=32, num_classes=10, cell_channels=16, cells_per_stage=5)
PROXY = SpaceConfig(type="nb201", resolution=16, num_classes=7, cell_channels=8, cells_per_stage=1)

ALL_NONE = (0,) * 6
ALL_CONV3 = (3,) * 6
DEAD_NODES = (3, 2, 3, 1, 0, 0)     # nodes 1 and 2 reach the output only through `none` edges
EVERY_OP = (4, 1, 3, 2, 0, 3)       # avg pool, skip, conv3x3, conv1x1, none, conv3x3


def some_archs(space: NB201Space, n: int = 3, seed: int = 0) -> list[tuple[int, ...]]:
    rng = np.random.default_rng(seed)
    return [ALL_NONE, ALL_CONV3, DEAD_NODES, EVERY_OP] + [space.sample(rng) for _ in range(n)]


@pytest.fixture
def supernet() -> NB201SuperNet:
    torch.manual_seed(0)
    return randomize_bn(NB201SuperNet(PROXY)).eval()


# ----------------------------------------------------------------------------- string form

def test_round_trip_of_every_benchmark_string():
    path = next((p for p in TABLE_CANDIDATES if p.is_file()), None)
    if path is None:
        pytest.skip(f"nb201_cifar10.csv not present (looked in {', '.join(map(str, TABLE_CANDIDATES))})")
    with open(path, newline="") as f:
        strings = [row["arch_str"] for row in csv.DictReader(f)]
    space = NB201Space(BENCHMARK)
    archs = [space.from_string(s) for s in strings]
    assert [space.to_string(a) for a in archs] == strings
    assert len(strings) == len(set(archs)) == space.size == 15625


def test_round_trip_without_the_table():
    space = NB201Space(PROXY)
    assert space.to_string(EVERY_OP) == ("|avg_pool_3x3~0|+|skip_connect~0|nor_conv_3x3~1|"
                                         "+|nor_conv_1x1~0|none~1|nor_conv_3x3~2|")
    for arch in some_archs(space, n=50):
        assert space.from_string(space.to_string(arch)) == arch
    assert space.parse(space.to_string(EVERY_OP)) == EVERY_OP
    assert space.prefix_statistics is False


@pytest.mark.parametrize("text, names", [
    ("|conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "'conv_3x3' is not an NB201 operation"),
    ("|none~0|+|none~0|none~1|", "3 nodes"),
    ("", "3 nodes"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2: expected 2 edge"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|none~3|", "node 3: expected 3 edge"),
    ("|none~0|+|none~0|none~2|+|none~0|none~1|none~2|", "must read from node 1"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "must read from node 0"),
    ("|none|+|none~0|none~1|+|none~0|none~1|none~2|", "must read from node 0"),
    ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1"),
])
def test_bad_strings_are_named(text, names):
    with pytest.raises(ArchError, match=names) as e:
        NB201Space(PROXY).from_string(text)
    assert "\n" not in str(e.value)


def test_resolution_must_survive_two_reductions():
    with pytest.raises(ConfigError, match="multiple of 4"):
        NB201Space(SpaceConfig(type="nb201", resolution=30))


# ----------------------------------------------------------------------------- cost model

@pytest.mark.parametrize("cfg", [BENCHMARK, PROXY], ids=["benchmark", "proxy"])
def test_cost_is_exact(cfg):
    """MACs = FlopCounterMode / 2, which counts exactly the convolutions and the classifier's matmul
    (pooling, BN, ReLU, the `none` multiplications and the sums are not counted, nor is the bias add)."""
    space = NB201Space(cfg)
    for arch in some_archs(space):
        net = NB201SubNet(cfg, arch).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.zeros(1, 3, cfg.resolution, cfg.resolution))
        assert {str(op) for op in counter.get_flop_counts()["Global"]} == {"aten.convolution", "aten.addmm"}
        macs, params = space.cost(arch)
        assert counter.get_total_flops() == 2 * macs, space.to_string(arch)
        assert sum(p.numel() for p in net.parameters()) == params, space.to_string(arch)


# NAS-Bench-201's own cost records (NAS-Bench-201-v1_1-096897.pth), minimum and maximum over the 15,625
# cells, i.e. the all-`none` and the all-`nor_conv_3x3` cell, as listed under "Get Bounds for Nasbench
# benchmarks" in github.com/automl/MO-HPOBenchExperimentUtils, README.md ("CIFAR 10 VALID", "CIFAR 100",
# "IMAGE NET" = ImageNet16-120); EMI-Group/evoxbench uses the same CIFAR-10 bounds. Params are in units
# of 1e6; the benchmark's FLOPs (xautodl utils/flop_benchmark.py) are conv and linear multiply-adds plus
# the classifier's bias adds, in units of 1e6. The match is to every published digit.
@pytest.mark.parametrize("resolution, classes, arch, flops_m, params_m", [
    (32, 10, ALL_NONE, 7.78305, 0.073306),
    (32, 10, ALL_CONV3, 220.11969, 1.531546),
    (32, 100, ALL_NONE, 7.7889, 0.079156),
    (32, 100, ALL_CONV3, 220.12554, 1.537396),
    (16, 120, ALL_NONE, 1.9534, 0.080456),
    (16, 120, ALL_CONV3, 55.03756, 1.538696),
])
def test_cost_matches_the_benchmark(resolution, classes, arch, flops_m, params_m):
    space = NB201Space(SpaceConfig(type="nb201", resolution=resolution, num_classes=classes))
    macs, params = space.cost(arch)
    assert (macs + classes) / 1e6 == pytest.approx(flops_m, abs=5e-6)
    assert params / 1e6 == pytest.approx(params_m, abs=5e-7)


# ----------------------------------------------------------------------------- networks

def test_subnet_equals_supernet_path(supernet):
    x = torch.randn(4, 3, PROXY.resolution, PROXY.resolution)
    for arch in some_archs(supernet.space):
        sub = supernet.subnet(arch)
        assert not sub.training and sub.arch == arch and sub.space_cfg == PROXY
        fresh = NB201SubNet(PROXY, arch)
        fresh.load_state_dict(sub.state_dict())
        with torch.no_grad():
            ref = supernet(x, arch)
            out = sub(x)
            assert (ref - out).abs().max().item() <= 1e-5
            assert torch.equal(fresh.eval()(x), out)


def test_subnet_follows_supernet_mode(supernet):
    assert supernet.train().subnet(EVERY_OP).training


def test_forward_runs_only_the_path(supernet):
    """Off-path operations get no gradient; every on-path parameter gets one, even a conv whose node
    reaches the output only through `none` (the benchmark's Zero multiplies it by 0)."""
    supernet.train()
    for arch in some_archs(supernet.space, n=2, seed=1):
        supernet.zero_grad(set_to_none=True)
        supernet(torch.randn(2, 3, PROXY.resolution, PROXY.resolution), arch).sum().backward()
        on_path = list(supernet.path_parameters(arch))
        assert sum(p.numel() for p in on_path) == supernet.space.cost(arch).params
        ids = {id(p) for p in on_path}
        for p in supernet.parameters():
            assert (p.grad is not None) == (id(p) in ids)


def test_channels_last_and_bf16_autocast(supernet):
    x = torch.randn(2, 3, PROXY.resolution, PROXY.resolution)
    with torch.no_grad():
        ref = supernet(x, EVERY_OP)
        cl = supernet.to(memory_format=torch.channels_last)
        xcl = x.to(memory_format=torch.channels_last)
        assert torch.allclose(cl(xcl, EVERY_OP), ref, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = cl(xcl, EVERY_OP)
            low_sub = cl.subnet(EVERY_OP).to(memory_format=torch.channels_last)(xcl)
    assert low.shape == low_sub.shape == ref.shape
    assert torch.isfinite(low).all() and torch.isfinite(low_sub).all()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # the TorchScript exporter's "legacy" notice
def test_onnx_export_matches_pytorch(supernet, tmp_path):
    """TorchScript exporter, as fastnas.export uses: the torch.export-based one needs onnxscript."""
    import onnx
    import onnxruntime as ort

    net = supernet.subnet(EVERY_OP)
    x = torch.randn(3, 3, PROXY.resolution, PROXY.resolution)
    path = tmp_path / "nb201.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17, input_names=["images"],
                      output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        want = net(x).numpy()
    assert np.abs(got - want).max() <= 1e-4


def test_build_space_config_file_and_draw():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch

    assert section_from_dict(SpaceConfig, yaml.safe_load((CONFIG_DIR / "space" / "nb201.yaml").read_text()),
                             "space") == BENCHMARK
    space = build_space(PROXY)
    assert isinstance(space, NB201Space) and isinstance(space.supernet(), NB201SuperNet)
    fig, ax = plt.subplots()
    try:
        space.draw(ax, DEAD_NODES)
        arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
        assert len(arrows) == sum(c != 0 for c in DEAD_NODES)
        assert "MACs" in ax.get_title() and "params" in ax.get_title()
        fig.savefig(io.BytesIO(), format="png")
    finally:
        plt.close(fig)
