"""Evaluation sets decoded once: N images after the validation transform, resident on the device.

Candidate evaluation runs hundreds of subnets over the same images, so they are decoded a
single time into a uint8 (N, H, W, 3) tensor on the evaluation device (a quarter of float32's
memory) and normalised per batch with `to_model_input(images, dtype, mean=set.mean, std=set.std)`.
The calibration set (for BatchNorm recalibration) is drawn from the training part with a fixed
seed, never from the validation part; the validation set is a seeded draw from the validation
part (build.py says which files each part has). Drawn indices are sorted, so the set does not
depend on order.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch

from fastnas.data.loader import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class EvalSet:
    images: torch.Tensor          # uint8 (N, H, W, 3) on the evaluation device
    labels: torch.Tensor          # int64 (N,) on the same device
    files: list[str]              # where each image came from (empty for synthetic)
    mean: tuple = IMAGENET_MEAN   # per-channel normalisation on the 0-255 scale (data.normalization)
    std: tuple = IMAGENET_STD

    def __len__(self) -> int:
        return len(self.labels)


def draw(num_files: int, num_images: int, seed: int, what: str) -> np.ndarray:
    """Sorted indices of `num_images` files drawn without replacement (all of them if fewer)."""
    if num_images >= num_files:
        if num_images > num_files:
            print(f"fastnas.data: {what} asks for {num_images} images but only {num_files} are usable; "
                  f"using all {num_files}", file=sys.stderr, flush=True)
        return np.arange(num_files)
    return np.sort(np.random.default_rng([seed, 0xE7A1]).choice(num_files, num_images, replace=False))
