"""The MBConv space's networks: its blocks, the weight-sharing supernet and standalone subnets.

`SuperNet.forward(x, arch)` runs only the chosen block at each layer (single path). Each
(layer, choice) owns its weights and BatchNorm, so the cost of choosing a path is one list
index per layer. `SuperNet.subnet(arch)` copies the chosen weights into a `SubNet`, a plain
feed-forward module that `SubNet(space_cfg, arch)` rebuilds without the supernet.

The supernet knows nothing of search: it takes an architecture as a tuple of ints and an
`MBConvSpace` only to know its layers. Every block owns its BatchNorm; convolutions have no
bias (the BN after them carries it). Use `.to(memory_format=torch.channels_last)` and
`torch.autocast` as usual; every op here supports both.

`chain_steps()` lists the path's steps (stem + first block, each layer's choices, head) so the
evaluator can run a path one step at a time and share prefixes between candidates.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import nn

from fastnas.config import SpaceConfig
from fastnas.spaces.mbconv import MBConvSpace, parse_choice


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class MBConv(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand (skipped when e=1) -> kxk depthwise -> 1x1 project."""

    def __init__(self, cin: int, cout: int, kernel: int, expansion: int, stride: int):
        super().__init__()
        hidden = cin * expansion
        layers = [ConvBNAct(cin, hidden, 1)] if expansion != 1 else []
        layers += [ConvBNAct(hidden, hidden, kernel, stride, groups=hidden), ConvBNAct(hidden, cout, 1, act=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


def make_choice_block(cin: int, cout: int, stride: int, kind: tuple[int, int] | None) -> nn.Module:
    """The module for one choice at one layer: MBConv(k, e), or identity for skip (kind None)."""
    return nn.Identity() if kind is None else MBConv(cin, cout, kind[0], kind[1], stride)


class Head(nn.Module):
    """1x1 conv to head channels -> global average pool -> dropout -> linear classifier."""

    def __init__(self, cin: int, head_channels: int, num_classes: int, dropout: float):
        super().__init__()
        self.conv = ConvBNAct(cin, head_channels, 1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).mean((2, 3))
        return self.classifier(self.dropout(x))


def init_weights(module: nn.Module) -> None:
    """MobileNet initialisation (TF/timm form), plus a zero last-BN scale in residual MBConvs.

    Conv fan-out counts one group's outputs, as TF and timm do: torch's plain `fan_out` mode
    counts all of a depthwise conv's channels, which makes its weights sqrt(channels) times too
    small, and under BN a small weight means a large effective step (measured: random paths
    learn with the grouped fan-out at a step size where they did not before).
    The zero scale starts every residual block as the identity, so a randomly sampled deep path
    trains like a shallow network at first (Goyal et al. 2017's zero-init residual).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, MBConv) and m.residual:
            nn.init.zeros_(m.body[-1][1].weight)


@torch.no_grad()
def align_choices(blocks: Sequence[nn.Module]) -> None:
    """Start every MBConv choice of one layer as the same function as its smallest one.

    The smallest block's weights are embedded in each larger one: its expand rows and BN entries
    copied, its depthwise kernel zero-padded to the larger kernel, and the extra hidden channels
    cut off by zero project columns. Independently initialised choices pull the shared stem and
    head towards different features, and a single-path supernet whose path changes every step
    then stays near chance; aligned choices start in agreement and diverge only as far as
    training drives them (measured in bench/RESULTS.md, "MBConv supernet recipe").
    """
    mbconvs = [b for b in blocks if isinstance(b, MBConv) and len(b.body) == 3]
    if len(mbconvs) < 2:
        return
    ref = min(mbconvs, key=lambda b: (b.body[1][0].out_channels, b.body[1][0].kernel_size[0]))
    (r_exp, r_exp_bn), (r_dw, r_dw_bn), (r_proj, r_proj_bn) = ((s[0], s[1]) for s in ref.body)
    h, k = r_dw.out_channels, r_dw.kernel_size[0]
    for block in mbconvs:
        if block is ref:
            continue
        (exp, exp_bn), (dw, dw_bn), (proj, proj_bn) = ((s[0], s[1]) for s in block.body)
        o = (dw.kernel_size[0] - k) // 2
        exp.weight[:h] = r_exp.weight
        dw.weight[:h] = 0.0
        dw.weight[:h, :, o:o + k, o:o + k] = r_dw.weight
        proj.weight.zero_()
        proj.weight[:, :h] = r_proj.weight
        for bn, r_bn, rows in ((exp_bn, r_exp_bn, h), (dw_bn, r_dw_bn, h), (proj_bn, r_proj_bn, None)):
            bn.weight[:rows] = r_bn.weight
            bn.bias[:rows] = r_bn.bias


class _Trunk(nn.Module):
    """Stem and head shared by the supernet and subnets (same parameter names in both)."""

    def _build_fixed(self, cfg: SpaceConfig) -> None:
        self.stem = ConvBNAct(3, cfg.stem_channels, 3, stride=2)
        self.first = MBConv(cfg.stem_channels, cfg.first_channels, 3, 1, 1)
        self.head = Head(cfg.channels[-1], cfg.head_channels, cfg.num_classes, cfg.dropout)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.first(self.stem(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def _trunk(self) -> nn.Module:
        return nn.Sequential(self.stem, self.first)


class SuperNet(_Trunk):
    def __init__(self, space: MBConvSpace | SpaceConfig):
        super().__init__()
        self.space = space if isinstance(space, MBConvSpace) else MBConvSpace(space)
        cfg = self.space.cfg
        self._build_fixed(cfg)
        self.layers = nn.ModuleList(
            nn.ModuleList(make_choice_block(l.in_channels, l.out_channels, l.stride, parse_choice(name))
                          for name in l.choices)
            for l in self.space.layers)
        init_weights(self)
        for blocks in self.layers:
            align_choices(blocks)

    def forward(self, x: torch.Tensor, arch: Sequence[int]) -> torch.Tensor:
        x = self.forward_stem(x)
        for blocks, c in zip(self.layers, arch):
            x = blocks[c](x)
        return self.forward_head(x)

    def forward_layer(self, layer: int, choice: int, x: torch.Tensor) -> torch.Tensor:
        return self.layers[layer][choice](x)

    def chain_steps(self) -> list[list[nn.Module]]:
        """Step p, choice c: the module a path (0, *arch, 0) runs at step p (head included)."""
        return [[self._trunk()]] + [list(blocks) for blocks in self.layers] + [[self.head]]

    def path_modules(self, arch: Sequence[int]) -> Iterator[nn.Module]:
        """The modules an architecture runs through: stem, first block, chosen blocks, head."""
        yield self.stem
        yield self.first
        for blocks, c in zip(self.layers, arch):
            yield blocks[c]
        yield self.head

    def path_parameters(self, arch: Sequence[int]) -> Iterator[nn.Parameter]:
        for m in self.path_modules(arch):
            yield from m.parameters()

    def fixed_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters every path trains (stem, first block, head), as opposed to the layers' choices."""
        for m in (self.stem, self.first, self.head):
            yield from m.parameters()

    def subnet(self, arch: Sequence[int]) -> "SubNet":
        """A standalone copy of the path `arch`: same weights, same BN statistics, same outputs."""
        arch = self.space.validate(arch)
        net = SubNet(self.space.cfg, arch)
        net.stem.load_state_dict(self.stem.state_dict())
        net.first.load_state_dict(self.first.state_dict())
        net.head.load_state_dict(self.head.state_dict())
        for i, c in enumerate(arch):
            net.layers[i].load_state_dict(self.layers[i][c].state_dict())
        p = next(self.parameters())
        return net.to(device=p.device, dtype=p.dtype).train(self.training)


class SubNet(_Trunk):
    """One architecture as a plain network; rebuildable from (space config, arch) alone."""

    def __init__(self, space_cfg: SpaceConfig, arch: Sequence[int]):
        super().__init__()
        space = MBConvSpace(space_cfg)
        self.arch = space.validate(arch)
        self.space_cfg = space_cfg
        self._build_fixed(space_cfg)
        self.layers = nn.Sequential(*(
            make_choice_block(l.in_channels, l.out_channels, l.stride, space.block(l.index, c))
            for l, c in zip(space.layers, self.arch)))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.layers(self.forward_stem(x)))

    def chain_steps(self) -> list[nn.Module]:
        """The steps of this one path, matching `SuperNet.chain_steps()`."""
        return [self._trunk(), *self.layers, self.head]
