"""Path samplers for supernet training: which sub-path(s) each optimizer step trains.

The paths of step `s` are a pure function of (seed, s): every rank computes the same paths
without communicating, and a resumed run replays exactly the paths it would have trained.

- `UniformSampler` (SPOS): one path per step, every choice uniform at every layer.
- `FairSampler` (FairNAS strict fairness): C = max choices paths per step whose gradients are
  accumulated before one optimizer step; each layer's choices are a random permutation over
  the C paths, so every choice of every layer is trained exactly once per step. A layer with
  fewer than C choices (e.g. one without skip) fills the remaining paths with random choices.
- `macs_range=(low, high)`: uniform paths are resampled until `low <= MACs <= high` (exact cost model).
- `exclude=("none",)`: choices never trained (by name, at every position that offers them; a position
  keeps at least one choice). NB201's `none` has no weights, and paths that cut a cell off teach the
  fixed layers to bypass the cells instead of training them; a searched cell may still use it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from fastnas.config import ConfigError, TrainConfig
from fastnas.spaces import Arch, Space

MAX_RESAMPLES = 10_000


class UniformSampler:
    kind = "uniform"

    def __init__(self, space: Space, seed: int, macs_range: Sequence[float] = (), exclude: Sequence[str] = ()):
        self.space = space
        self.seed = seed
        self.macs_range = tuple(macs_range)
        self.exclude = tuple(exclude)
        self.allowed = [np.array([c for c, name in enumerate(names) if name not in self.exclude] or range(len(names)))
                        for names in space.choices]
        if self.macs_range:
            self._check_range_reachable()

    def rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, step])

    def paths(self, step: int) -> list[Arch]:
        rng = self.rng(step)
        for _ in range(MAX_RESAMPLES):
            arch = tuple(int(a[rng.integers(len(a))]) for a in self.allowed)
            if self._in_range(arch):
                return [arch]
        raise ConfigError(f"train.macs_range {list(self.macs_range)}: no path found in {MAX_RESAMPLES} "
                          f"samples; widen the range")

    def state_dict(self) -> dict:
        return {"kind": self.kind, "seed": self.seed, "macs_range": list(self.macs_range), "exclude": list(self.exclude)}

    def _in_range(self, arch: Arch) -> bool:
        if not self.macs_range:
            return True
        low, high = self.macs_range
        return low <= self.space.cost(arch).macs <= high

    def _check_range_reachable(self) -> None:
        macs, _, fixed = self.space.cost_table()
        valid = np.where(macs >= 0, macs, np.iinfo(np.int64).max)
        smallest = fixed.macs + int(valid.min(axis=1).sum())
        largest = fixed.macs + int(macs.max(axis=1).sum())
        low, high = self.macs_range
        if high < smallest or low > largest:
            raise ConfigError(f"train.macs_range {list(self.macs_range)} is outside the space's "
                              f"MACs [{smallest:.4g}, {largest:.4g}]")


class FairSampler(UniformSampler):
    kind = "fair"

    def paths(self, step: int) -> list[Arch]:
        rng = self.rng(step)
        C = max(len(a) for a in self.allowed)
        columns = []
        for allowed in self.allowed:
            n = len(allowed)
            column = allowed[rng.permutation(n)]
            if n < C:
                column = np.concatenate([column, allowed[rng.integers(n, size=C - n)]])
            columns.append(column)
        return [tuple(int(col[i]) for col in columns) for i in range(C)]


def build_sampler(space: Space, cfg: TrainConfig) -> UniformSampler:
    if cfg.sampler == "fair":
        if cfg.macs_range:
            raise ConfigError("train.macs_range works with train.sampler=uniform only "
                              "(strict fairness fixes which choices each step trains)")
        return FairSampler(space, cfg.seed, exclude=cfg.exclude_choices)
    return UniformSampler(space, cfg.seed, cfg.macs_range, cfg.exclude_choices)
