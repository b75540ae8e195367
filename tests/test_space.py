import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fastnas.config import SpaceConfig, load_config
from fastnas.spaces import ArchError
from fastnas.spaces.mbconv import MBConvSpace
from fastnas.spaces.mbconv_net import SuperNet




def _space_from_file(name):
    import yaml
    from fastnas.config import CONFIG_DIR, section_from_dict
    return section_from_dict(SpaceConfig, yaml.safe_load((CONFIG_DIR / "space" / f"{name}.yaml").read_text()), "space")


def counted(net, res):
    with FlopCounterMode(display=False) as fc:
        net(torch.zeros(1, 3, res, res))
    return fc.get_total_flops() // 2, sum(p.numel() for p in net.parameters())


def test_default_space_shape():
    space = MBConvSpace(SpaceConfig())
    assert len(space) == 21
    assert space.max_choices == 7
    # a stage's first layer changes channels or stride: no skip there
    firsts = [0, 4, 8, 12, 16, 20]
    assert all("skip" not in space.layers[i].choices for i in firsts)
    assert all("skip" in l.choices for l in space.layers if l.index not in firsts)


def test_mobilenetv2_counts_match_torchvision():
    import torchvision
    space = MBConvSpace(_space_from_file("mobilenetv2"))
    cost = space.cost(space.from_string("uniform:k3e6"))
    tv = torchvision.models.mobilenet_v2()
    assert cost.params == 3_504_872 == sum(p.numel() for p in tv.parameters())
    assert abs(cost.macs - 300e6) / 300e6 < 0.01
    assert cost.macs == counted(tv.eval(), 224)[0]


@pytest.mark.parametrize("res,classes", [(224, 1000), (160, 10), (97, 7)])
def test_cost_equals_counted_on_random_subnets(res, classes):
    space = MBConvSpace(SpaceConfig(resolution=res, num_classes=classes))
    net = SuperNet(space).eval()
    rng = np.random.default_rng(res)
    for _ in range(3):
        arch = space.sample(rng)
        macs, params = counted(net.subnet(arch), res)
        assert space.cost(arch) == (macs, params)


def test_string_round_trip_and_errors():
    space = MBConvSpace(SpaceConfig())
    rng = np.random.default_rng(0)
    for _ in range(50):
        arch = space.sample(rng)
        assert space.from_string(space.to_string(arch)) == arch
    with pytest.raises(ArchError, match=r"position 0: 'skip' is not allowed here \(allowed: k3e3, "):
        space.from_string("-".join(["skip"] + ["k3e3"] * 20))
    with pytest.raises(ArchError, match="position 2: 7 is not a valid choice"):
        space.validate((0, 0, 7) + (0,) * 18)
    with pytest.raises(ArchError, match="has 21 positions, got 3"):
        space.validate((0, 0, 0))
    with pytest.raises(ArchError, match="21 '-'-separated choices, got 2"):
        space.from_string("k3e3-k3e3")


def test_sample_mutate_crossover_are_seeded_and_valid():
    space = MBConvSpace(SpaceConfig())
    a = space.sample(np.random.default_rng(1))
    assert a == space.sample(np.random.default_rng(1))
    b = space.sample(np.random.default_rng(2))
    m = space.mutate(a, np.random.default_rng(3), prob=1.0)
    assert all(x != y for x, y in zip(a, m))            # prob 1: every position changes
    assert space.mutate(a, np.random.default_rng(3), prob=0.0) == a
    for mode in ("uniform", "single_point"):
        c = space.crossover(a, b, np.random.default_rng(4), mode)
        space.validate(c)
        assert all(x in (p, q) for x, p, q in zip(c, a, b))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fastnas.space", *args], capture_output=True, text=True)


def test_space_cli_json():
    r = run_cli("--config", "configs/space/mobilenetv2.yaml", "--arch", "uniform:k3e6", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["params"] == 3_504_872 and out["arch"].startswith("k3e6-")
    r = run_cli("--json")                                  # seeded random architecture
    assert r.returncode == 0 and json.loads(r.stdout) == json.loads(run_cli("--json").stdout)


def test_space_cli_bad_arch_is_one_line():
    r = run_cli("--arch", "uniform:k9e6")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "position 0" in r.stderr and "Traceback" not in r.stderr
