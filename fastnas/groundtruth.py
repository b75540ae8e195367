"""Ground truth for a search: a table of every architecture's accuracy when trained alone.

NAS-Bench-201 trained each of its 15,625 cells on CIFAR-10 (data/nasbench201, with its SOURCE
note). Holding a supernet's scores and a search's result against that table is how fastnas shows
that it does its job, not only that it is fast:

    truth = GroundTruth.load(space)                       # the bundled NB201 table
    truth.value(arch, "cifar10_test"), truth.rank(arch, "cifar10_test")   # rank 1 = best of all

The table is keyed by the space's own string form, so it works for any space whose `to_string`
writes the table's `arch_str`.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from fastnas.config import REPO_ROOT
from fastnas.errors import UserError

NB201_TABLE = REPO_ROOT / "data" / "nasbench201" / "nb201_cifar10.csv"
SEARCH_COLUMN = "cifar10valid_valid"      # what a search may look at
REPORT_COLUMN = "cifar10_test"            # what a found cell is judged by


class GroundTruth:
    """Per-architecture accuracies (percent) of a space, one array per column, in the table's row order."""

    def __init__(self, space, archs: list[tuple[int, ...]], columns: dict[str, np.ndarray], source: str):
        self.space, self.archs, self.columns, self.source = space, archs, columns, source
        self._row = {a: i for i, a in enumerate(archs)}

    @classmethod
    def load(cls, space, path: str | Path = NB201_TABLE,
             columns: Sequence[str] = (SEARCH_COLUMN, REPORT_COLUMN)) -> "GroundTruth":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"ground-truth table not found: {path}")
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("arch_str", *columns) if c not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"{path}: no column {missing[0]!r} (columns: {', '.join(reader.fieldnames or [])})")
            rows = list(reader)
        archs = [space.from_string(r["arch_str"]) for r in rows]
        if len(set(archs)) != len(archs):
            raise UserError(f"{path}: an architecture appears twice")
        values = {c: np.array([float(r[c]) for r in rows]) for c in columns}
        return cls(space, archs, values, str(path))

    def __len__(self) -> int:
        return len(self.archs)

    def __contains__(self, arch) -> bool:
        return tuple(arch) in self._row

    def row(self, arch: Sequence[int]) -> int:
        try:
            return self._row[tuple(int(c) for c in arch)]
        except KeyError:
            raise UserError(f"{self.space.to_string(arch)} is not in the ground-truth table {self.source}") from None

    def rows(self, archs: Sequence[Sequence[int]]) -> np.ndarray:
        """Table rows of many architectures at once (index into `columns[...]`)."""
        return np.fromiter((self.row(a) for a in archs), dtype=np.int64, count=len(archs))

    def value(self, arch: Sequence[int], column: str = REPORT_COLUMN) -> float:
        return float(self.columns[column][self.row(arch)])

    def values(self, archs: Sequence[Sequence[int]], column: str = REPORT_COLUMN) -> np.ndarray:
        return self.columns[column][self.rows(archs)]

    def rank_of_value(self, value: float, column: str = REPORT_COLUMN) -> int:
        """1 + the number of architectures strictly better than `value` (1 = the best of the space)."""
        return int(np.sum(self.columns[column] > value)) + 1

    def rank(self, arch: Sequence[int], column: str = REPORT_COLUMN) -> int:
        return self.rank_of_value(self.value(arch, column), column)

    def best(self, column: str = REPORT_COLUMN) -> float:
        return float(self.columns[column].max())
