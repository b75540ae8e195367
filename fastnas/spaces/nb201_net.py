"""The NAS-Bench-201 benchmark network, as a weight-sharing supernet and as standalone subnets.

The network is the benchmark's TinyNetwork: a 3x3 conv + BN stem, three stages of N cells at
C, 2C and 4C channels separated by a residual stride-2 block, then BN-ReLU, global average
pooling and a linear classifier. Every cell runs the same six-edge genotype. Keeping the
benchmark's layers exactly (pre-activation ReLU-Conv-BN ops, no ReLU after the residual sum,
average pooling without padded zeros, PyTorch's default init) is what lets a trained subnet be
compared with the benchmark's tables.

`NB201SuperNet.forward(x, arch)` runs only the chosen operation on each edge, so parameters off
the path get no gradient; `subnet(arch)` copies the path into an `NB201SubNet`, which
`NB201SubNet(space_cfg, arch)` rebuilds from the config alone. Parameter names differ only by
the operation name under each supernet edge: `cells.K.edges.E.nor_conv_3x3.conv.weight` in the
supernet is `cells.K.edges.E.conv.weight` in the subnet.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from fastnas.config import SpaceConfig
from fastnas.spaces.nb201 import CONV_KERNELS, EDGES, OPS, STAGES, NB201Space


class ReLUConvBN(nn.Module):
    """The benchmark's convolution op, pre-activated so that the ReLU does not touch the sum of a node."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.relu(x)))


class ResidualReduction(nn.Module):
    """The fixed block between stages (the benchmark's ResNetBasicblock, stride 2): halves the
    resolution and doubles the channels; the shortcut pools before its 1x1 conv and has no BN."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, stride=2)
        self.conv_b = ReLUConvBN(cout, cout, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


def make_op(name: str, channels: int) -> nn.Module:
    """The module of a non-`none` operation on an edge of a cell with `channels` channels."""
    if name in CONV_KERNELS:
        return ReLUConvBN(channels, channels, CONV_KERNELS[name])
    if name == "skip_connect":
        return nn.Identity()
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"no module for NB201 operation {name!r}")


def run_cell(x: torch.Tensor, edge_ops: Sequence[Optional[nn.Module]]) -> torch.Tensor:
    """Node j = sum of op(i->j)(node i) over i < j, with `edge_ops` in EDGES order and None for `none`.

    `none` is the benchmark's Zero op, node * 0: it adds nothing (a node reached only by `none` is
    zeros), yet keeps every chosen operation connected to the output, as in the benchmark's own
    training: a conv whose node feeds only `none` edges still runs, its BN still sees data, and it
    gets a (zero) gradient. So the parameters with gradients are exactly the path's.
    """
    nodes = [x]
    for j in range(1, 4):
        terms = [nodes[i] * 0.0 if op is None else op(nodes[i]) for (to, i), op in zip(EDGES, edge_ops) if to == j]
        nodes.append(sum(terms[1:], terms[0]))
    return nodes[3]


class _Trunk(nn.Module):
    """Stem, reduction blocks and head: the same modules and parameter names in supernet and subnet."""

    def _build_fixed(self, space: NB201Space) -> None:
        shapes = space.stage_shapes()
        first, last = shapes[0][0], shapes[-1][0]
        self.cells_per_stage = space.cfg.cells_per_stage
        self.stem = nn.Sequential(nn.Conv2d(3, first, 3, padding=1, bias=False), nn.BatchNorm2d(first))
        self.reductions = nn.ModuleList(ResidualReduction(cin, cout) for (cin, _), (cout, _) in zip(shapes, shapes[1:]))
        self.head_bn = nn.BatchNorm2d(last)
        self.classifier = nn.Linear(last, space.cfg.num_classes)

    def _fixed_modules(self) -> Iterator[nn.Module]:
        yield from (self.stem, self.reductions, self.head_bn, self.classifier)

    def _run(self, x: torch.Tensor, run_cell_k: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        x = self.stem(x)
        n = self.cells_per_stage
        for stage in range(STAGES):
            if stage:
                x = self.reductions[stage - 1](x)
            for k in range(stage * n, (stage + 1) * n):
                x = run_cell_k(k, x)
        x = torch.relu(self.head_bn(x)).mean((2, 3))
        return self.classifier(x)


def _cell_channels(space: NB201Space) -> list[int]:
    """Channels of each of the 3N cells, in network order."""
    return [ch for ch, _ in space.stage_shapes() for _ in range(space.cfg.cells_per_stage)]


class SuperCell(nn.Module):
    """Every operation of every edge; `none` needs no module."""

    def __init__(self, channels: int):
        super().__init__()
        self.edges = nn.ModuleList(nn.ModuleDict({name: make_op(name, channels) for name in OPS if name != "none"})
                                   for _ in EDGES)

    def path_ops(self, arch: Sequence[int]) -> list[Optional[nn.Module]]:
        return [None if OPS[c] == "none" else ops[OPS[c]] for ops, c in zip(self.edges, arch)]

    def forward(self, x: torch.Tensor, arch: Sequence[int]) -> torch.Tensor:
        return run_cell(x, self.path_ops(arch))


class Cell(nn.Module):
    """One genotype's cell: modules for the chosen operations only, keyed by edge index."""

    def __init__(self, channels: int, arch: Sequence[int]):
        super().__init__()
        self.edges = nn.ModuleDict({str(e): make_op(OPS[c], channels) for e, c in enumerate(arch) if OPS[c] != "none"})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_cell(x, [self.edges[str(e)] if str(e) in self.edges else None for e in range(len(EDGES))])


class NB201SuperNet(_Trunk):
    """Every operation of every edge of every cell; a forward pass runs one genotype in all cells."""

    def __init__(self, space: NB201Space | SpaceConfig):
        super().__init__()
        self.space = space if isinstance(space, NB201Space) else NB201Space(space)
        self._build_fixed(self.space)
        self.cells = nn.ModuleList(SuperCell(ch) for ch in _cell_channels(self.space))

    def forward(self, x: torch.Tensor, arch: Sequence[int]) -> torch.Tensor:
        return self._run(x, lambda k, h: self.cells[k](h, arch))

    def path_modules(self, arch: Sequence[int]) -> Iterator[nn.Module]:
        """The modules `arch` runs through: the fixed ones and each cell's chosen operations."""
        yield from self._fixed_modules()
        for cell in self.cells:
            yield from (op for op in cell.path_ops(arch) if op is not None)

    def path_parameters(self, arch: Sequence[int]) -> Iterator[nn.Parameter]:
        for m in self.path_modules(arch):
            yield from m.parameters()

    def fixed_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters every path trains (stem, reductions, head), as opposed to the cells' choices."""
        for m in self._fixed_modules():
            yield from m.parameters()

    def subnet(self, arch: Sequence[int]) -> "NB201SubNet":
        """A standalone copy of the path `arch`: same weights, same BN statistics, same outputs."""
        arch = self.space.validate(arch)
        net = NB201SubNet(self.space.cfg, arch)
        for mine, theirs in zip(self._fixed_modules(), net._fixed_modules()):
            theirs.load_state_dict(mine.state_dict())
        for mine, theirs in zip(self.cells, net.cells):
            for key, op in theirs.edges.items():
                op.load_state_dict(mine.edges[int(key)][OPS[arch[int(key)]]].state_dict())
        p = next(self.parameters())
        return net.to(device=p.device, dtype=p.dtype).train(self.training)


class NB201SubNet(_Trunk):
    """One architecture as the benchmark's standalone network; rebuildable from (space config, arch) alone."""

    def __init__(self, space_cfg: SpaceConfig, arch: Sequence[int]):
        super().__init__()
        space = NB201Space(space_cfg)
        self.arch = space.validate(arch)
        self.space_cfg = space_cfg
        self._build_fixed(space)
        self.cells = nn.ModuleList(Cell(ch, self.arch) for ch in _cell_channels(space))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, lambda k, h: self.cells[k](h))
