"""A seeded, class-balanced hold-out of train/: the validation set when a dataset has none to spare.

NAS-Bench-201's `cifar10-valid` trains on half of CIFAR-10's 50,000 training images and
validates on the other half. Its split list refers to the original batch indices, which the
JPEG copy in ../shared/data/cifar10 does not keep (see its SOURCE.md), so that split cannot
be rebuilt from these files; this seeded split stands in for it. With `data.holdout=0.5` and
the default `data.split_seed=0` it holds out 2,500 of the 5,000 images of every class.

Each class is split on its own: its files sorted by path, permuted by a generator seeded with
(seed, class index), and the first round(share x count) held out. The result depends only on
the seed and on which files each class has, not on listing order or on the other classes.
"""
from __future__ import annotations

import math

import numpy as np

from fastnas.data.folder import DataError, SplitScan


def holdout_split(scan: SplitScan, share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(kept, heldout): sorted indices into `scan.files`, disjoint, together all of them."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"holdout share must be in (0, 1), got {share}")
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(scan.labels):
        by_class.setdefault(label, []).append(i)
    kept, heldout = [], []
    for label, members in sorted(by_class.items()):
        members.sort(key=lambda i: scan.files[i])
        perm = np.random.default_rng([seed, label, 0x5E1D]).permutation(len(members))
        cut = math.floor(share * len(members) + 0.5)
        heldout.extend(members[j] for j in perm[:cut])
        kept.extend(members[j] for j in perm[cut:])
    if not kept or not heldout:
        raise DataError(f"{scan.root / scan.split}: holdout={share} of {len(scan)} images leaves "
                        f"{'no training' if not kept else 'no held-out'} image")
    return np.sort(np.asarray(kept, dtype=np.int64)), np.sort(np.asarray(heldout, dtype=np.int64))
