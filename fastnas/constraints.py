"""Constraints on a searched architecture: bounds on MACs and params (the space's exact cost
model) and on predicted latency (a per-(layer, choice) table, `fastnas.latency`).

    constraints = Constraints(max_macs=300e6, max_latency_ms=12, latency=table)
    constraints.check_space(space)      # one line when no architecture can satisfy them
    constraints.ok(space, arch)         # the genetic loop rejects and re-draws children that fail
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from fastnas.errors import UserError

Arch = tuple[int, ...]


class ConstraintError(UserError):
    """No architecture of the space satisfies the constraints (or none was found by sampling)."""



class TableLatency:
    """Latency = fixed_ms + sum of per-(layer, choice) ms. `ms` is (L, C), inf where not offered.

    Built from a fastnas.latency.LatencyTable (anything with `.ms` and `.fixed_ms`), from a dict
    {"fixed_ms": float, "ms": [[...], ...]}, or from a dict {(layer, choice): ms} plus fixed_ms.
    """

    def __init__(self, ms, fixed_ms: float = 0.0):
        if isinstance(ms, dict):
            L = 1 + max(l for l, _ in ms)
            C = 1 + max(c for _, c in ms)
            table = np.full((L, C), np.inf)
            for (l, c), v in ms.items():
                table[l, c] = v
            ms = table
        self.ms = np.asarray(ms, dtype=np.float64)
        self.fixed_ms = float(fixed_ms)

    @classmethod
    def wrap(cls, latency) -> "TableLatency | Callable":
        if latency is None or isinstance(latency, TableLatency):
            return latency
        if hasattr(latency, "ms") and hasattr(latency, "fixed_ms"):
            return cls(latency.ms, latency.fixed_ms)
        if isinstance(latency, dict) and "ms" in latency:
            return cls(latency["ms"], latency.get("fixed_ms", 0.0))
        if isinstance(latency, dict):
            return cls(latency, 0.0)
        if callable(latency):
            return latency
        raise TypeError("latency: a table (.ms, .fixed_ms), a dict or a callable arch -> ms")

    def __call__(self, arch: Sequence[int]) -> float:
        return self.fixed_ms + float(self.ms[np.arange(len(arch)), np.asarray(arch)].sum())


@dataclass
class Constraints:
    """Bounds on MACs, params (from the space's exact cost model) and predicted latency (ms).
    0 / None means unbounded."""

    min_macs: float = 0.0
    max_macs: float = 0.0
    min_params: float = 0.0
    max_params: float = 0.0
    max_latency_ms: float = 0.0
    latency: object = None        # TableLatency-like, dict, or callable arch -> ms

    def __post_init__(self):
        self.latency = TableLatency.wrap(self.latency)
        if self.max_latency_ms > 0 and self.latency is None:
            raise ConstraintError("max_latency_ms is set but no latency table was given")
        for lo, hi, what in ((self.min_macs, self.max_macs, "MACs"), (self.min_params, self.max_params, "params")):
            if lo < 0 or hi < 0 or (hi > 0 and lo > hi):
                raise ConstraintError(f"{what} bounds [{lo:g}, {hi:g}] are not a valid range")

    @property
    def needs_cost(self) -> bool:
        return bool(self.min_macs or self.max_macs or self.min_params or self.max_params)

    @property
    def active(self) -> bool:
        return self.needs_cost or self.max_latency_ms > 0

    def check_space(self, space) -> None:
        """Cheap infeasibility test from per-layer min/max costs; raises ConstraintError."""
        if self.needs_cost:
            if not hasattr(space, "cost_table"):
                raise ConstraintError("MACs/params constraints need a space with a cost model")
            macs, params, fixed = space.cost_table()
            for table, base, lo, hi, what, unit in ((macs, fixed[0], self.min_macs, self.max_macs, "MACs", 1e6),
                                                    (params, fixed[1], self.min_params, self.max_params, "params", 1e6)):
                offered = table >= 0
                low = base + np.where(offered, table, np.iinfo(np.int64).max).min(axis=1).sum()
                high = base + np.where(offered, table, -1).max(axis=1).sum()
                if hi and low > hi:
                    raise ConstraintError(f"no architecture has {what} <= {hi / unit:.3f}M: the smallest in this "
                                          f"space has {low / unit:.3f}M")
                if lo and high < lo:
                    raise ConstraintError(f"no architecture has {what} >= {lo / unit:.3f}M: the largest in this "
                                          f"space has {high / unit:.3f}M")
        if self.max_latency_ms > 0 and isinstance(self.latency, TableLatency):
            ms = self.latency.ms[:len(space.num_choices)]
            low = self.latency.fixed_ms + float(np.min(ms, axis=1).sum())
            if low > self.max_latency_ms:
                raise ConstraintError(f"no architecture has latency <= {self.max_latency_ms:g} ms: the fastest in "
                                      f"this space is predicted at {low:.3f} ms")

    def ok(self, space, arch: Arch) -> bool:
        if self.needs_cost:
            macs, params = space.cost(arch)
            if (self.max_macs and macs > self.max_macs) or macs < self.min_macs:
                return False
            if (self.max_params and params > self.max_params) or params < self.min_params:
                return False
        if self.max_latency_ms > 0 and self.latency(arch) > self.max_latency_ms:
            return False
        return True
