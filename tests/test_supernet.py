import numpy as np
import pytest
import torch
from helpers import randomize_bn

from fastnas.config import SpaceConfig
from fastnas.spaces.mbconv import MBConvSpace
from fastnas.spaces.mbconv_net import SubNet, SuperNet


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    space = MBConvSpace(SpaceConfig(resolution=64, num_classes=10))
    net = randomize_bn(SuperNet(space))
    return net.eval()


def test_subnet_output_equals_supernet_path(net):
    rng = np.random.default_rng(0)
    x = torch.randn(4, 3, 64, 64)
    for _ in range(5):
        arch = net.space.sample(rng)
        sub = net.subnet(arch).eval()
        with torch.no_grad():
            assert (net(x, arch) - sub(x)).abs().max().item() <= 1e-5


def test_subnet_rebuilds_from_config_alone(net):
    arch = net.space.sample(np.random.default_rng(1))
    sub = net.subnet(arch)
    fresh = SubNet(net.space.cfg, arch)
    fresh.load_state_dict(sub.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), sub.eval()(x))


def test_forward_runs_only_the_path(net):
    arch = net.space.sample(np.random.default_rng(2))
    net.train()
    net.zero_grad(set_to_none=True)
    net(torch.randn(2, 3, 64, 64), arch).sum().backward()
    on_path = {id(p) for p in net.path_parameters(arch)}
    for p in net.parameters():
        assert (p.grad is not None) == (id(p) in on_path)
    net.eval()


def test_channels_last_and_bf16_autocast(net):
    arch = net.space.sample(np.random.default_rng(3))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = net(x, arch)
        cl = net.to(memory_format=torch.channels_last)
        out = cl(x.to(memory_format=torch.channels_last), arch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = cl(x.to(memory_format=torch.channels_last), arch)
    net.to(memory_format=torch.contiguous_format)
    assert torch.allclose(ref, out, atol=1e-5)
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05
