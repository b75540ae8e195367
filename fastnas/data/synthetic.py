"""Synthetic backend: random uint8 images and labels made once, for benchmarks and smoke tests without data."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch


class SyntheticTrainBatches:
    """`make_batches` for TrainLoader: one fixed random batch per step (no decoding cost)."""

    def __init__(self, *, batch_size: int, resolution: int, num_classes: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (batch_size, resolution, resolution, 3), dtype=torch.uint8, generator=g)
        self.labels = torch.randint(0, num_classes, (batch_size,), dtype=torch.int64, generator=g)

    def __call__(self, order: np.ndarray, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(len(order) // len(self.labels)):
            yield self.images, self.labels


def synthetic_eval(num_images: int, resolution: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (num_images, resolution, resolution, 3), dtype=torch.uint8, generator=g)
    return images, torch.randint(0, num_classes, (num_images,), dtype=torch.int64, generator=g)
