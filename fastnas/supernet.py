"""The weight-sharing supernet and the standalone subnets extracted from it.

`SuperNet.forward(x, arch)` runs only the chosen block at each layer (single path). Each
(layer, choice) owns its weights and BatchNorm, so the cost of choosing a path is one list
index per layer. `SuperNet.subnet(arch)` copies the chosen weights into a `SubNet`, a plain
feed-forward module that `SubNet(space_cfg, arch)` rebuilds without the supernet.

The supernet knows nothing of search: it takes an architecture as a tuple of ints and a
`SearchSpace` only to know its layers. Use `.to(memory_format=torch.channels_last)` and
`torch.autocast` as usual; every op here supports both.

Layer-wise entry points (`forward_stem`, `forward_layer`, `forward_head`) let the evaluator
run a path one layer at a time to share prefixes between candidates.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import nn

from fastnas.config import SpaceConfig
from fastnas.ops import ConvBNAct, Head, MBConv, init_weights, make_choice_block
from fastnas.space import SearchSpace, parse_choice


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


class SuperNet(_Trunk):
    def __init__(self, space: SearchSpace | SpaceConfig):
        super().__init__()
        self.space = space if isinstance(space, SearchSpace) else SearchSpace(space)
        cfg = self.space.cfg
        self._build_fixed(cfg)
        self.layers = nn.ModuleList(
            nn.ModuleList(make_choice_block(l.in_channels, l.out_channels, l.stride, parse_choice(name))
                          for name in l.choices)
            for l in self.space.layers)
        init_weights(self)

    def forward(self, x: torch.Tensor, arch: Sequence[int]) -> torch.Tensor:
        x = self.forward_stem(x)
        for blocks, c in zip(self.layers, arch):
            x = blocks[c](x)
        return self.forward_head(x)

    def forward_layer(self, layer: int, choice: int, x: torch.Tensor) -> torch.Tensor:
        return self.layers[layer][choice](x)

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
        space = SearchSpace(space_cfg)
        self.arch = space.validate(arch)
        self.space_cfg = space_cfg
        self._build_fixed(space_cfg)
        self.layers = nn.Sequential(*(
            make_choice_block(l.in_channels, l.out_channels, l.stride, space.block(l.index, c))
            for l, c in zip(space.layers, self.arch)))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.layers(self.forward_stem(x)))
