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


def test_every_choice_of_a_layer_starts_as_the_same_function():
    """Aligned init: at initialisation each MBConv choice computes what the layer's smallest one does,
    in stride-2 layers and (with the residual branch switched on) in residual layers alike."""
    torch.manual_seed(0)
    net = SuperNet(MBConvSpace(SpaceConfig(resolution=32, num_classes=10, channels=[16, 24], depths=[2, 2],
                                           strides=[2, 1], head_channels=64))).eval()
    for blocks in net.layers:
        for b in blocks:
            if hasattr(b, "body"):
                torch.nn.init.ones_(b.body[-1][1].weight)     # zero-init residual would make this trivial
    layers = [(i, blocks) for i, blocks in enumerate(net.layers)]
    assert any(not blocks[0].residual for _, blocks in layers) and any(blocks[0].residual for _, blocks in layers)
    for i, blocks in layers:
        cin = net.space.layers[i].in_channels
        x = torch.randn(2, cin, 16, 16)
        with torch.no_grad():
            outs = [b(x) for b in blocks if hasattr(b, "body")]
        assert len(outs) == 6                               # k{3,5,7} x e{3,6}
        for out in outs[1:]:
            torch.testing.assert_close(out, outs[0], rtol=1e-5, atol=1e-5)
    e6 = net.layers[0][1].body[0][0].weight                        # k3e6: its hidden rows beyond k3e3's stay random
    assert not torch.equal(e6[:16 * 3], e6[16 * 3:16 * 6])
