"""What every search space shares: positions with named choices, int-tuple architectures, the
variation operators, and an exact cost model that is a sum of per-(position, choice) costs.

A concrete space (`MBConvSpace`, `NB201Space`) says what its positions and choices are, what each
choice costs, how an architecture is written as a string, and builds its networks:

    space.supernet()          the weight-sharing supernet: forward(x, arch), path_parameters(arch), subnet(arch)
    space.subnet(arch)        a standalone network of `arch`, rebuilt from the config alone
    space.draw(ax, arch)      the architecture picture on a matplotlib axis

`prefix_statistics` says whether a position's BatchNorm statistics depend only on the choices
at and before it (a chain of layers). The evaluator shares calibration work between
candidates with a common prefix only then; otherwise it recalibrates each candidate whole.
The genetic loop, selectors, evaluator, export and pictures use nothing but this interface.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from fastnas.errors import UserError

Arch = tuple[int, ...]


class ArchError(UserError):
    pass


class Cost(NamedTuple):
    macs: int
    params: int


class Space:
    """Positions and their choices; sampling, mutation, crossover, validation and cost.

    Subclasses call `_set_positions(choices, cost_rows, fixed)` in their constructor and
    implement `to_string`, `from_string`, `supernet`, `subnet` and `draw`.
    """

    prefix_statistics = False
    cfg = None

    def _set_positions(self, choices: Sequence[tuple[str, ...]], cost_rows: Sequence[Sequence[Cost]],
                       fixed: Cost) -> None:
        self.choices: tuple[tuple[str, ...], ...] = tuple(tuple(c) for c in choices)
        self.num_choices = np.array([len(c) for c in self.choices], dtype=np.int64)
        self._cost_table = [list(row) for row in cost_rows]
        self._fixed_cost = fixed

    def __len__(self) -> int:
        return len(self.choices)

    @property
    def max_choices(self) -> int:
        return int(self.num_choices.max())

    @property
    def size(self) -> int:
        """Number of distinct architectures."""
        return int(np.prod(self.num_choices.astype(object)))

    def describe(self) -> str:
        """One line for logs: the space's kind, positions and size."""
        return f"{type(self).__name__}: {len(self)} positions, {self.size:.3e} architectures"

    # ------------------------------------------------------------------ validation and string form
    def validate(self, arch: Sequence[int]) -> Arch:
        """Return `arch` as a tuple of ints, or raise ArchError naming the bad position."""
        try:
            arch = tuple(arch)
        except TypeError:
            raise ArchError(f"an architecture is a sequence of {len(self)} ints, got {arch!r}") from None
        if len(arch) != len(self):
            raise ArchError(f"an architecture has {len(self)} positions, got {len(arch)}")
        for i, (names, c) in enumerate(zip(self.choices, arch)):
            n = len(names)
            if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)) or not 0 <= c < n:
                raise ArchError(f"position {i}: {c!r} is not a valid choice "
                                f"(allowed: 0..{n - 1} = {', '.join(names)})")
        return tuple(int(c) for c in arch)

    def to_string(self, arch: Sequence[int]) -> str:
        raise NotImplementedError

    def from_string(self, text: str) -> Arch:
        raise NotImplementedError

    def parse(self, arch: str | Sequence[int]) -> Arch:
        """Accept either form: a string or a sequence of ints."""
        return self.from_string(arch) if isinstance(arch, str) else self.validate(arch)

    def _choice_index(self, position: int, name: str) -> int:
        names = self.choices[position]
        if name not in names:
            raise ArchError(f"position {position}: {name!r} is not allowed here (allowed: {', '.join(names)})")
        return names.index(name)

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
    def layer_cost(self, position: int, choice: int) -> Cost:
        return self._cost_table[position][choice]

    def cost(self, arch: Sequence[int]) -> Cost:
        """Exact MACs and params of the architecture's standalone network: fixed part + per-position rows.

        MACs count convolutions and the classifier's matmul (= FlopCounterMode's count / 2); params
        count every parameter (= sum(p.numel()) of `subnet(arch)`). The tests hold both to the unit.
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

    # ------------------------------------------------------------------ networks and picture
    def supernet(self):
        raise NotImplementedError

    def subnet(self, arch: Sequence[int]):
        raise NotImplementedError

    def draw(self, ax, arch: Sequence[int]) -> None:
        raise NotImplementedError


def conv_out(size: int, stride: int) -> int:
    """Output size of a 'same'-padded odd-kernel conv: (size + 2*(k//2) - k)//stride + 1."""
    return (size - 1) // stride + 1


def conv_bn_cost(cin: int, cout: int, k: int, out_size: int, groups: int = 1) -> Cost:
    """A bias-free conv followed by BN: weights x output pixels MACs, weights + BN affine params."""
    weights = cout * (cin // groups) * k * k
    return Cost(macs=weights * out_size * out_size, params=weights + 2 * cout)
