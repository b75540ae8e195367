"""Training augmentation drawn per sample: each image's crop window and flip are a function of
(seed, epoch, file index) alone.

So a batch does not depend on the number of DataLoader workers, on which backend decodes it (DALI
and torchvision cut the same windows), or on where reading starts: a run resumed mid-epoch reads
the rest of the epoch's file order and gets the very images it would have got.

`data.augment`: `random_resized_crop` (ImageNet: torchvision's RandomResizedCrop parameters, scale
0.08-1, aspect 3/4-4/3), or `pad_crop` (CIFAR: the fitted image shifted by up to PAD pixels each
way, zeros filling in, as a crop of the image zero-padded by PAD). Both flip half the images.
"""
from __future__ import annotations

import math
import random
from typing import NamedTuple

PAD = 4                  # data.augment=pad_crop: zero padding on each side before the random crop


class Crop(NamedTuple):
    top: int             # pad_crop: offset in [-PAD, PAD] of the window in the fitted image
    left: int
    height: int
    width: int
    flip: bool


def sample_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The random stream of one training image in one epoch (tuples of ints hash the same in every process)."""
    return random.Random(hash((seed, epoch, int(index))))


def draw_crop(augment: str, rng: random.Random, height: int, width: int) -> Crop:
    """The crop of an image of height x width (for pad_crop: the fitted image's size) and its flip."""
    if augment == "pad_crop":
        top, left = rng.randint(-PAD, PAD), rng.randint(-PAD, PAD)
        return Crop(top, left, height, width, rng.random() < 0.5)
    top, left, h, w = random_resized_crop_box(height, width, rng)
    return Crop(top, left, h, w, rng.random() < 0.5)


def random_resized_crop_box(height: int, width: int, rng: random.Random, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """(top, left, h, w): torchvision's RandomResizedCrop.get_params with a given RNG."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height                     # fallback: central crop
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w
