"""The search space: positions, their choices, architectures as int tuples, and an exact cost model.

Layout (MobileNetV2 / ProxylessNAS style):
  stem 3x3 conv stride 2 -> fixed MBConv(e1, k3) -> searchable stages -> 1x1 conv -> pool -> linear
Each searchable layer picks one MBConv kernel/expansion pair or `skip`. Skip is offered only where
the layer keeps stride 1 and its channel count (the first layer of a stage never may skip).

Choice index c at a layer: c < len(kernels) * len(expansions) is MBConv with
kernel = kernels[c // len(expansions)], expansion = expansions[c % len(expansions)];
the last index, where allowed, is skip. The default space has 21 layers of 6 or 7 choices.

    space = SearchSpace.from_config(cfg.space)
    arch = space.sample(np.random.default_rng(0))       # tuple of ints
    space.to_string(arch)                                # 'k3e6-k5e3-skip-...'
    space.cost(arch)                                     # Cost(macs=..., params=...)
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from fastnas.config import ConfigError, SpaceConfig, load_config
from fastnas.errors import UserError, cli_entry

Arch = tuple[int, ...]
SKIP = "skip"


class ArchError(UserError):
    pass


class Cost(NamedTuple):
    macs: int
    params: int


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


def conv_out(size: int, stride: int) -> int:
    """Output size of a 'same'-padded odd-kernel conv: (size + 2*(k//2) - k)//stride + 1."""
    return (size - 1) // stride + 1


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

def conv_bn_cost(cin: int, cout: int, k: int, out_size: int, groups: int = 1) -> Cost:
    weights = cout * (cin // groups) * k * k
    return Cost(macs=weights * out_size * out_size, params=weights + 2 * cout)


def mbconv_cost(cin: int, cout: int, k: int, e: int, stride: int, in_size: int) -> Cost:
    hidden = cin * e
    out = conv_out(in_size, stride)
    parts = [conv_bn_cost(hidden, hidden, k, out, groups=hidden), conv_bn_cost(hidden, cout, 1, out)]
    if e != 1:
        parts.append(conv_bn_cost(cin, hidden, 1, in_size))
    return Cost(sum(p.macs for p in parts), sum(p.params for p in parts))


class SearchSpace:
    """Positions and choices of a space; sampling, mutation, crossover, string form and cost."""

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
        self.num_choices = np.array([len(l.choices) for l in layers], dtype=np.int64)
        self._cost_table = [[self._choice_cost(l, c) for c in l.choices] for l in layers]
        self._fixed_cost = self._fixed()

    @classmethod
    def from_config(cls, cfg: SpaceConfig) -> "SearchSpace":
        return cls(cfg)

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def max_choices(self) -> int:
        return int(self.num_choices.max())

    @property
    def size(self) -> int:
        """Number of distinct architectures."""
        return int(np.prod(self.num_choices.astype(object)))

    # ------------------------------------------------------------------ validation and string form
    def validate(self, arch: Sequence[int]) -> Arch:
        """Return `arch` as a tuple of ints, or raise ArchError naming the bad position."""
        try:
            arch = tuple(arch)
        except TypeError:
            raise ArchError(f"an architecture is a sequence of {len(self)} ints, got {arch!r}") from None
        if len(arch) != len(self):
            raise ArchError(f"an architecture has {len(self)} positions, got {len(arch)}")
        for layer, c in zip(self.layers, arch):
            n = len(layer.choices)
            if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)) or not 0 <= c < n:
                raise ArchError(f"position {layer.index}: {c!r} is not a valid choice "
                                f"(allowed: 0..{n - 1} = {', '.join(layer.choices)})")
        return tuple(int(c) for c in arch)

    def to_string(self, arch: Sequence[int]) -> str:
        arch = self.validate(arch)
        return "-".join(l.choices[c] for l, c in zip(self.layers, arch))

    def from_string(self, text: str) -> Arch:
        """Parse 'k3e6-skip-...'; also 'uniform:k3e6' (that choice at every position)."""
        text = text.strip()
        if text.startswith("uniform:"):
            name = text[len("uniform:"):]
            parts = [name] * len(self)
        else:
            parts = text.split("-")
        if len(parts) != len(self):
            raise ArchError(f"an architecture string has {len(self)} '-'-separated choices, got {len(parts)}")
        arch = []
        for layer, name in zip(self.layers, parts):
            if name not in layer.choices:
                raise ArchError(f"position {layer.index}: {name!r} is not allowed here "
                                f"(allowed: {', '.join(layer.choices)})")
            arch.append(layer.choices.index(name))
        return tuple(arch)

    def parse(self, arch: str | Sequence[int]) -> Arch:
        """Accept either form: a string or a sequence of ints."""
        return self.from_string(arch) if isinstance(arch, str) else self.validate(arch)

    def block(self, layer: int, choice: int) -> tuple[int, int] | None:
        """(kernel, expansion) of a choice, or None for skip."""
        return parse_choice(self.layers[layer].choices[choice])

    # ------------------------------------------------------------------ variation operators
    def sample(self, rng: np.random.Generator) -> Arch:
        return tuple(int(rng.integers(n)) for n in self.num_choices)

    def mutate(self, arch: Sequence[int], rng: np.random.Generator, prob: float = 0.1) -> Arch:
        """Resample each position with probability `prob` to a different choice."""
        out = list(self.validate(arch))
        for i, n in enumerate(self.num_choices):
            if n > 1 and rng.random() < prob:
                c = int(rng.integers(n - 1))
                out[i] = c + (c >= out[i])
        return tuple(out)

    def crossover(self, a: Sequence[int], b: Sequence[int], rng: np.random.Generator,
                  mode: str = "uniform") -> Arch:
        """Uniform (each position from either parent) or single-point crossover."""
        a, b = self.validate(a), self.validate(b)
        if mode == "uniform":
            take_a = rng.random(len(self)) < 0.5
            return tuple(x if t else y for x, y, t in zip(a, b, take_a))
        if mode == "single_point":
            cut = int(rng.integers(1, len(self))) if len(self) > 1 else 0
            return a[:cut] + b[cut:]
        raise ValueError(f"crossover mode {mode!r}: allowed uniform, single_point")

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

    def layer_cost(self, layer: int, choice: int) -> Cost:
        return self._cost_table[layer][choice]

    def cost(self, arch: Sequence[int]) -> Cost:
        """Exact MACs and params of the architecture's standalone network, from per-layer tables.

        MACs: convolutions and the classifier matmul (= FlopCounterMode's conv+linear count / 2).
        Params: conv weights, BN affine (2 per channel), classifier weight and bias
        (= sum(p.numel()) of `SuperNet.subnet(arch)`). BN running stats, activations,
        residual adds, pooling and biases' adds are not MACs.
        """
        arch = self.validate(arch)
        macs, params = self._fixed_cost
        for row, c in zip(self._cost_table, arch):
            macs += row[c].macs
            params += row[c].params
        return Cost(int(macs), int(params))

    def cost_table(self) -> tuple[np.ndarray, np.ndarray, Cost]:
        """(macs[L, C], params[L, C], fixed) with -1 where a choice is not offered; for vectorised constraints."""
        L, C = len(self), self.max_choices
        macs = -np.ones((L, C), dtype=np.int64)
        params = -np.ones((L, C), dtype=np.int64)
        for i, row in enumerate(self._cost_table):
            for c, cost in enumerate(row):
                macs[i, c], params[i, c] = cost
        return macs, params, self._fixed_cost


# ----------------------------------------------------------------------------- command line

@cli_entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastnas.space",
                                description="Print an architecture of a search space with its exact MACs and params.")
    p.add_argument("--config", help="a run config or a space config (YAML); default: the default space")
    p.add_argument("--arch", help="architecture string, e.g. k3e6-skip-..., or uniform:k3e6; default: seeded random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("overrides", nargs="*", help="space.key=value overrides, e.g. space.resolution=192")
    args = p.parse_args(argv)
    space = SearchSpace(_space_config(args.config, args.overrides))
    arch = space.from_string(args.arch) if args.arch else space.sample(np.random.default_rng(args.seed))
    cost = space.cost(arch)
    out = {"arch": space.to_string(arch), "macs": cost.macs, "params": cost.params}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['arch']}\n  layers {len(space)}, space size {space.size:.3e}\n"
              f"  MACs {cost.macs / 1e6:.2f}M, params {cost.params / 1e6:.3f}M")
    return 0


def _space_config(path: str | None, overrides: Sequence[str]) -> SpaceConfig:
    """A file may be a whole run config (with a `space:` section) or a bare space config."""
    if path is None:
        return load_config(None, overrides).space
    import yaml
    from pathlib import Path
    try:
        raw = yaml.safe_load(Path(path).read_text()) if Path(path).is_file() else None
    except yaml.YAMLError:
        raw = None
    if isinstance(raw, dict) and "space" not in raw and not ({"data", "train", "search", "eval"} & set(raw)):
        from fastnas.config import section_from_dict
        values = dict(raw)
        for item in overrides:
            key, _, text = item.partition("=")
            if not key.startswith("space."):
                raise ConfigError(f"override {item!r}: only space.key=value applies to a space config")
            values[key[len("space."):]] = yaml.safe_load(text)
        return section_from_dict(SpaceConfig, values, "space")
    return load_config(path, overrides).space


if __name__ == "__main__":
    sys.exit(main())
