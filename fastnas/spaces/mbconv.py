"""The MBConv space: a chain of searchable MobileNetV2 inverted-residual layers.

Layout (MobileNetV2 / ProxylessNAS style):
  stem 3x3 conv stride 2 -> fixed MBConv(e1, k3) -> searchable stages -> 1x1 conv -> pool -> linear
Each searchable layer picks one MBConv kernel/expansion pair or `skip`. Skip is offered only where
the layer keeps stride 1 and its channel count (the first layer of a stage never may skip).

Choice index c at a layer: c < len(kernels) * len(expansions) is MBConv with
kernel = kernels[c // len(expansions)], expansion = expansions[c % len(expansions)];
the last index, where allowed, is skip. The default space has 21 layers of 6 or 7 choices.

    space = MBConvSpace(cfg.space)                       # or fastnas.spaces.build_space(cfg.space)
    arch = space.sample(np.random.default_rng(0))       # tuple of ints
    space.to_string(arch)                                # 'k3e6-k5e3-skip-...'
    space.cost(arch)                                     # Cost(macs=..., params=...)

A layer's output depends only on the choices up to it, so BN statistics can be shared between
candidates with a common prefix (`prefix_statistics`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from fastnas.config import SpaceConfig
from fastnas.spaces.base import Arch, ArchError, Cost, Space, conv_bn_cost, conv_out

SKIP = "skip"
KERNEL_COLOURS = {3: "#8ecae6", 5: "#ffb703", 7: "#fb8500"}


@dataclass(frozen=True)
class Layer:
    """One searchable position: its input/output channels, stride and input spatial size."""

    index: int
    in_channels: int
    out_channels: int
    stride: int
    in_size: int           # input height (= width) in pixels
    choices: tuple[str, ...]

    @property
    def out_size(self) -> int:
        return conv_out(self.in_size, self.stride)


def parse_choice(name: str) -> tuple[int, int] | None:
    """'k5e3' -> (5, 3); 'skip' -> None."""
    if name == SKIP:
        return None
    k, e = name[1:].split("e")
    return int(k), int(e)


# ----------------------------------------------------------------------------- exact cost of one block
# Convention (matches FlopCounterMode/2 and sum(p.numel()) on the built modules):
#   MACs count convolutions and the classifier's matrix multiply only: no BN, activations,
#   residual adds, pooling or biases. Params count conv weights (convs have no bias), BN
#   weight and bias (2 per channel; running statistics are buffers), and the classifier's
#   weight and bias.

def mbconv_cost(cin: int, cout: int, k: int, e: int, stride: int, in_size: int) -> Cost:
    hidden = cin * e
    out = conv_out(in_size, stride)
    parts = [conv_bn_cost(hidden, hidden, k, out, groups=hidden), conv_bn_cost(hidden, cout, 1, out)]
    if e != 1:
        parts.append(conv_bn_cost(cin, hidden, 1, in_size))
    return Cost(sum(p.macs for p in parts), sum(p.params for p in parts))


class MBConvSpace(Space):
    """Positions are the searchable layers; choices MBConv(k, e) or skip."""

    prefix_statistics = True

    def __init__(self, cfg: SpaceConfig):
        cfg.validate("space")
        self.cfg = cfg
        mbconv = tuple(f"k{k}e{e}" for k in cfg.kernel_sizes for e in cfg.expansions)
        layers = []
        size = conv_out(cfg.resolution, 2)              # after the stem
        cin = cfg.first_channels
        for cout, depth, stride in zip(cfg.channels, cfg.depths, cfg.strides):
            for i in range(depth):
                s = stride if i == 0 else 1
                can_skip = cfg.allow_skip and s == 1 and cin == cout
                layers.append(Layer(len(layers), cin, cout, s, size, mbconv + ((SKIP,) if can_skip else ())))
                size = conv_out(size, s)
                cin = cout
        self.layers: tuple[Layer, ...] = tuple(layers)
        self.final_size = size
        self._set_positions([l.choices for l in layers],
                            [[self._choice_cost(l, c) for c in l.choices] for l in layers], self._fixed())

    def to_string(self, arch: Sequence[int]) -> str:
        arch = self.validate(arch)
        return "-".join(l.choices[c] for l, c in zip(self.layers, arch))

    def from_string(self, text: str) -> Arch:
        """Parse 'k3e6-skip-...'; also 'uniform:k3e6' (that choice at every position)."""
        text = text.strip()
        if text.startswith("uniform:"):
            parts = [text[len("uniform:"):]] * len(self)
        else:
            parts = text.split("-")
        if len(parts) != len(self):
            raise ArchError(f"an architecture string has {len(self)} '-'-separated choices, got {len(parts)}")
        return tuple(self._choice_index(i, name) for i, name in enumerate(parts))

    def block(self, layer: int, choice: int) -> tuple[int, int] | None:
        """(kernel, expansion) of a choice, or None for skip."""
        return parse_choice(self.layers[layer].choices[choice])

    def supernet(self):
        from fastnas.spaces.mbconv_net import SuperNet
        return SuperNet(self)

    def subnet(self, arch: Sequence[int]):
        from fastnas.spaces.mbconv_net import SubNet
        return SubNet(self.cfg, arch)

    def draw(self, ax, arch: Sequence[int]) -> None:
        """The way NAS papers draw found networks (ProxylessNAS, FBNet): one box per block, left to
        right; colour = kernel size, height = expansion; skipped layers are thin grey bars; stage
        boundaries carry channels, stride and resolution."""
        import matplotlib.pyplot as plt
        from matplotlib.patches import FancyBboxPatch

        arch = self.validate(arch)
        blocks = [("stem", 3, None), ("MB1 k3", 3, 1)]
        blocks += [(self.layers[i].choices[c], *(self.block(i, c) or (None, None))) for i, c in enumerate(arch)]
        x = 0.0
        for name, k, e in blocks:
            if k is None:                                    # skipped layer
                ax.add_patch(FancyBboxPatch((x + 0.2, 0.45), 0.1, 0.1, boxstyle="round,pad=0.02", fc="#dee2e6", ec="none"))
                x += 0.5
                continue
            h = 0.35 if e is None else 0.25 + 0.1 * e
            ax.add_patch(FancyBboxPatch((x, 0.5 - h / 2), 0.4, h, boxstyle="round,pad=0.03",
                                        fc=KERNEL_COLOURS.get(k, "#90be6d"), ec="#343a40", lw=0.6))
            ax.text(x + 0.2, 0.5, name.replace("skip", ""), rotation=90, ha="center", va="center", fontsize=7)
            x += 0.6
        x = 1.2
        for i, c in enumerate(arch):                         # stage labels
            layer = self.layers[i]
            if i == 0 or layer.in_channels != layer.out_channels or layer.stride != 1:
                ax.axvline(x - 0.1, color="#adb5bd", lw=0.6, ls=":")
                ax.text(x, 1.05, f"{layer.out_channels}ch s{layer.stride}\n{layer.out_size}px", fontsize=6, va="bottom")
            x += 0.6 if self.block(i, c) is not None else 0.5
        ax.add_patch(FancyBboxPatch((x, 0.3), 0.5, 0.4, boxstyle="round,pad=0.03", fc="#e9ecef", ec="#343a40", lw=0.6))
        ax.text(x + 0.25, 0.5, f"{self.cfg.head_channels}\npool\nfc", ha="center", va="center", fontsize=6)
        handles = [plt.Rectangle((0, 0), 1, 1, fc=col) for col in KERNEL_COLOURS.values()]
        ax.legend(handles, [f"k{k}" for k in KERNEL_COLOURS], loc="lower left", fontsize=7, ncol=3, frameon=False)
        ax.text(x + 0.6, 0.05, "height = expansion", fontsize=6, ha="right")
        ax.set_xlim(-0.3, x + 0.8)
        ax.set_ylim(-0.1, 1.4)
        ax.axis("off")
        ax.figure.set_size_inches(max(8, 0.55 * len(blocks) + 2), 3.2)

    # ------------------------------------------------------------------ cost model
    def _choice_cost(self, layer: Layer, name: str) -> Cost:
        kind = parse_choice(name)
        if kind is None:
            return Cost(0, 0)
        k, e = kind
        return mbconv_cost(layer.in_channels, layer.out_channels, k, e, layer.stride, layer.in_size)

    def _fixed(self) -> Cost:
        c = self.cfg
        s1 = conv_out(c.resolution, 2)
        last = c.channels[-1]
        parts = [
            conv_bn_cost(3, c.stem_channels, 3, s1),
            mbconv_cost(c.stem_channels, c.first_channels, 3, 1, 1, s1),
            conv_bn_cost(last, c.head_channels, 1, self.final_size),
            Cost(c.head_channels * c.num_classes, c.head_channels * c.num_classes + c.num_classes),
        ]
        return Cost(sum(p.macs for p in parts), sum(p.params for p in parts))
