"""The NAS-Bench-201 cell space: six edges of one cell, five operations each, 15,625 architectures.

The cell is a 4-node DAG (node 0 = input, node 3 = output); every edge i -> j (i < j) carries one
operation, and all 3N cells of the benchmark network share that one choice. An architecture is
the six choices in the benchmark's edge order (1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2), and
its string is the benchmark's own `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`, so results can be
looked up in the NAS-Bench-201 tables by `arch_str`.

The cost model is exact for the benchmark network of `nb201_net` at the configured C, N,
resolution and class count. It is computed here without torch, so importing the space is cheap.
"""
from __future__ import annotations

from typing import Sequence

from fastnas.config import ConfigError, SpaceConfig
from fastnas.spaces.base import Arch, ArchError, Cost, Space, conv_bn_cost

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))     # (to, from), the benchmark's order
CONV_KERNELS = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}
STAGES = 3                                                     # channels C, 2C, 4C at R, R/2, R/4

OP_LABELS = {"skip_connect": "skip", "nor_conv_1x1": "conv1x1", "nor_conv_3x3": "conv3x3",
             "avg_pool_3x3": "avgpool"}
OP_COLOURS = {"skip_connect": "#6c757d", "nor_conv_1x1": "#4895ef", "nor_conv_3x3": "#e63946",
              "avg_pool_3x3": "#52b788"}


class NB201Space(Space):
    """The benchmark's cell space; cost and networks follow the config's C, N, resolution and classes."""

    def __init__(self, cfg: SpaceConfig):
        cfg.validate("space")
        if cfg.resolution % 4:
            raise ConfigError(f"space.resolution: the NB201 network halves the resolution twice with "
                              f"2x2 average pooling in its shortcuts, so it must be a multiple of 4 "
                              f"(got {cfg.resolution})")
        self.cfg = cfg
        row = [self._op_cost(name) for name in OPS]
        self._set_positions([OPS] * len(EDGES), [row] * len(EDGES), self._fixed())

    def describe(self) -> str:
        c = self.cfg
        return (f"NB201Space: NAS-Bench-201 cell, {len(self)} edges x {len(OPS)} ops = {self.size} architectures; "
                f"C={c.cell_channels}, N={c.cells_per_stage}, {c.resolution}px, {c.num_classes} classes")

    def stage_shapes(self) -> list[tuple[int, int]]:
        """(channels, resolution) of the cells of each stage."""
        c = self.cfg
        return [(c.cell_channels << s, c.resolution >> s) for s in range(STAGES)]

    # ------------------------------------------------------------------ string form
    def to_string(self, arch: Sequence[int]) -> str:
        arch = self.validate(arch)
        nodes = []
        for j in range(1, 4):
            nodes.append("|".join(f"{OPS[arch[e]]}~{i}" for e, (to, i) in enumerate(EDGES) if to == j))
        return "|" + "|+|".join(nodes) + "|"

    def from_string(self, text: str) -> Arch:
        """Parse the benchmark's string; each mistake is named (node, edge, operation)."""
        if not isinstance(text, str):
            raise ArchError(f"an NB201 architecture string is text, got {text!r}")
        groups = text.strip().split("+")
        if len(groups) != 3:
            raise ArchError(f"an NB201 cell string has 3 nodes separated by '+' "
                            f"(|op~0|+|op~0|op~1|+|op~0|op~1|op~2|), got {len(groups)} in {text!r}")
        arch = []
        for j, group in enumerate(groups, start=1):
            if len(group) < 2 or group[0] != "|" or group[-1] != "|":
                raise ArchError(f"node {j}: {group!r} must be written |op~i|...| in {text!r}")
            edges = group[1:-1].split("|")
            if len(edges) != j:
                raise ArchError(f"node {j}: expected {j} edge(s) (from nodes 0..{j - 1}), got {len(edges)} in {text!r}")
            for i, edge in enumerate(edges):
                op, sep, source = edge.partition("~")
                if not sep or source != str(i):
                    raise ArchError(f"node {j}: edge {edge!r} must read from node {i} (written {op or 'op'}~{i}) "
                                    f"in {text!r}")
                if op not in OPS:
                    raise ArchError(f"edge {j}<-{i}: {op!r} is not an NB201 operation "
                                    f"(allowed: {', '.join(OPS)}) in {text!r}")
                arch.append(OPS.index(op))
        return tuple(arch)

    # ------------------------------------------------------------------ cost model
    def _op_cost(self, name: str) -> Cost:
        """One edge's operation in every one of the 3N cells (they all share the genotype)."""
        if name not in CONV_KERNELS:
            return Cost(0, 0)
        k, n = CONV_KERNELS[name], self.cfg.cells_per_stage
        parts = [conv_bn_cost(ch, ch, k, size) for ch, size in self.stage_shapes()]
        return Cost(n * sum(p.macs for p in parts), n * sum(p.params for p in parts))

    def _fixed(self) -> Cost:
        """Stem, the two residual reduction blocks, the final BN and the classifier."""
        c = self.cfg
        shapes = self.stage_shapes()
        parts = [conv_bn_cost(3, c.cell_channels, 3, c.resolution)]
        for (cin, _), (cout, size) in zip(shapes, shapes[1:]):
            parts += [conv_bn_cost(cin, cout, 3, size),          # conv_a, stride 2
                      conv_bn_cost(cout, cout, 3, size),         # conv_b
                      Cost(cin * cout * size * size, cin * cout)]  # shortcut 1x1 conv after 2x2 pooling
        last = shapes[-1][0]
        parts += [Cost(0, 2 * last),                               # final BN
                  Cost(last * c.num_classes, last * c.num_classes + c.num_classes)]
        return Cost(sum(p.macs for p in parts), sum(p.params for p in parts))

    # ------------------------------------------------------------------ networks and picture
    def supernet(self):
        from fastnas.spaces.nb201_net import NB201SuperNet
        return NB201SuperNet(self)

    def subnet(self, arch: Sequence[int]):
        from fastnas.spaces.nb201_net import NB201SubNet
        return NB201SubNet(self.cfg, arch)

    def draw(self, ax, arch: Sequence[int]) -> None:
        """The cell as the NAS-Bench-201 paper draws it: nodes left to right, one coloured arrow per
        operation; `none` edges are left out because they carry nothing."""
        from matplotlib.patches import Circle, FancyArrowPatch

        arch = self.validate(arch)
        nodes = [Circle((x, 0.0), 0.16, fc="#f8f9fa", ec="#343a40", lw=1.0, zorder=3) for x in range(4)]
        for patch, label in zip(nodes, ("in", "1", "2", "out")):
            ax.add_patch(patch)
            ax.text(*patch.center, label, ha="center", va="center", fontsize=8, zorder=4)
        # Straight arrows between neighbours; longer edges arc above or below so that none overlap.
        bends = {(2, 0): -0.45, (3, 1): 0.45, (3, 0): -0.6}
        for (j, i), c in zip(EDGES, arch):
            name = OPS[c]
            if name == "none":
                continue
            rad = bends.get((j, i), 0.0)
            ax.add_patch(FancyArrowPatch((i, 0.0), (j, 0.0), patchA=nodes[i], patchB=nodes[j],
                                         connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
                                         mutation_scale=12, color=OP_COLOURS[name], lw=1.6, zorder=2))
            apex = -rad * (j - i) / 2                 # midpoint of arc3's quadratic curve
            ax.text((i + j) / 2, apex, OP_LABELS[name], ha="center", va="center", fontsize=7,
                    color=OP_COLOURS[name], zorder=4,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none"))
        macs, params = self.cost(arch)
        ax.set_title(f"{macs / 1e6:.1f} M MACs, {params / 1e6:.3f} M params", fontsize=9)
        ax.set_xlim(-0.4, 3.4)
        ax.set_ylim(-0.7, 1.1)
        ax.set_aspect("equal")
        ax.axis("off")

