"""torchvision backend: libjpeg-turbo decode, random crop and flip on uint8, in DataLoader workers.

Faster than the textbook per-sample recipe (decode -> v2 transforms -> float32 -> Normalize
-> collate) on CPU because (1) each worker builds a whole uint8 NHWC batch in one tensor
(no per-sample float32 copies, no collate), (2) only uint8 crosses the process boundary,
and (3) the main process normalises into reused buffers (`TrainLoader`). Crop boxes and
flips come from a per-file RNG seeded by (seed, epoch, file index), so a batch does not
depend on the number of workers.

Crops (`data.augment`): `random_resized_crop` (ImageNet), or `pad_crop` (CIFAR): the image,
first fitted to res x res (shorter side resized, centre crop; a no-op for CIFAR's 32x32 at
32), zero-padded by PAD pixels on each side, a random res x res window of it, flipped or not.
"""
from __future__ import annotations

import sys
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as F

from fastnas.data.folder import DataError, SplitScan
from fastnas.data.augment import PAD, draw_crop, sample_rng
from fastnas.data.loader import EVAL_CROP_RATIO, resize_hwc, single_threaded


def read_rgb(path: str) -> torch.Tensor:
    """Decode a file to uint8 (3, H, W) RGB (grayscale, CMYK, palette and alpha converted)."""
    data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
    try:
        return decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[-1].rsplit(", ", 1)[-1][:120]   # drop the C++ source location
        raise DataError(f"{path}: cannot decode ({reason})") from None


def pad_crop(image_hwc: torch.Tensor, top: int, left: int, flip: bool, pad: int = PAD) -> torch.Tensor:
    """The window at (top, left), each in [0, 2 pad], of the image zero-padded by `pad`; same size as the image."""
    h, w = image_hwc.shape[:2]
    window = torch.nn.functional.pad(image_hwc, (0, 0, pad, pad, pad, pad))[top:top + h, left:left + w]
    return window.flip(1) if flip else window


class TrainBatchDataset(Dataset):
    """Item k = the k-th batch of this rank's epoch order, as uint8 (B, res, res, 3) + int64 labels."""

    def __init__(self, scan: SplitScan, order: np.ndarray, *, batch_size: int, resolution: int, seed: int, epoch: int,
                 augment: str = "random_resized_crop"):
        self.files, self.labels = scan.files, scan.labels
        self.order, self.batch_size, self.resolution = order, batch_size, resolution
        self.seed, self.epoch, self.augment = seed, epoch, augment

    def __len__(self) -> int:
        return len(self.order) // self.batch_size

    def __getitem__(self, k: int):
        idx = self.order[k * self.batch_size:(k + 1) * self.batch_size]
        images = torch.empty((len(idx), self.resolution, self.resolution, 3), dtype=torch.uint8)
        labels = torch.tensor([self.labels[i] for i in idx], dtype=torch.int64)
        with single_threaded():               # a no-op in workers (already 1 thread); matters with workers=0
            failed = self._fill(idx, images)
        if failed:
            # Refill each failed slot with a good sample of this batch (image and its label together).
            bad = [j for j, _, _ in failed]
            good = [j for j in range(len(idx)) if j not in bad]
            for n, j in enumerate(bad):
                if good:
                    src = good[n % len(good)]
                    images[j], labels[j] = images[src], labels[src]
        return images, labels, [(path, reason) for _, path, reason in failed]

    def _fill(self, idx, images) -> list[tuple[int, str, str]]:
        """Decode, crop, resize and flip each file into its slot; (slot, path, reason) of failures."""
        res = self.resolution
        failed = []                           # corrupt inside: passed the pre-scan, fails to decode
        for j, i in enumerate(idx):
            try:
                img = read_rgb(self.files[i])
            except DataError as e:
                failed.append((j, self.files[i], str(e)))
                continue
            rng = sample_rng(self.seed, self.epoch, i)
            if self.augment == "pad_crop":
                crop = draw_crop(self.augment, rng, res, res)
                images[j] = pad_crop(fit(img, res, 1.0), crop.top + PAD, crop.left + PAD, flip=crop.flip)
                continue
            top, left, h, w, flip = draw_crop(self.augment, rng, *img.shape[1:])
            images[j] = resize_hwc(img[:, top:top + h, left:left + w], res, res, flip=flip)
        return failed


class TorchvisionTrainBatches:
    """`make_batches` for TrainLoader."""

    def __init__(self, scan: SplitScan, *, batch_size: int, resolution: int, workers: int, seed: int,
                 pin_memory: bool = False, augment: str = "random_resized_crop"):
        self.scan, self.batch_size, self.resolution = scan, batch_size, resolution
        self.workers, self.seed, self.pin_memory, self.augment = workers, seed, pin_memory, augment
        self.skipped: set[str] = set()       # files that failed to decode at run time

    def __call__(self, order: np.ndarray, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        dataset = TrainBatchDataset(self.scan, order, batch_size=self.batch_size, resolution=self.resolution,
                                    seed=self.seed, epoch=epoch, augment=self.augment)
        loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=self.workers,
                            pin_memory=self.pin_memory, prefetch_factor=2 if self.workers else None)
        for images, labels, failed in loader:
            for path, reason in failed:
                self._skip(path, reason)
            if len(failed) == len(labels):
                raise DataError(f"no image of a training batch could be decoded (first: {failed[0][1]})")
            yield images, labels

    def _skip(self, path: str, reason: str) -> None:
        if path not in self.skipped:
            self.skipped.add(path)
            print(f"fastnas.data: skipping {reason} (replaced by another image of its batch; "
                  f"{len(self.skipped)} skipped so far)", file=sys.stderr, flush=True)


def fit(img: torch.Tensor, resolution: int, crop_ratio: float) -> torch.Tensor:
    """uint8 (3,h,w) -> (res,res,3): shorter side resized to res / crop_ratio (antialiased), centre crop res.

    With crop_ratio 1 an image already res x res comes back unchanged (no resampling).
    """
    shorter = round(resolution / crop_ratio)
    h, w = img.shape[1:]
    if h == w == shorter == resolution:
        return img.permute(1, 2, 0)                  # already fitted (CIFAR at 32): a view, no copy
    scale = shorter / min(h, w)
    img = resize_hwc(img, round(h * scale), round(w * scale)).permute(2, 0, 1)
    return F.center_crop(img, [resolution, resolution]).permute(1, 2, 0)


def decode_eval(files: list[str], *, resolution: int,
                crop_ratio: float = EVAL_CROP_RATIO["random_resized_crop"]) -> torch.Tensor:
    """Validation transform (`fit`) of every file: uint8 (N, res, res, 3)."""
    out = torch.empty((len(files), resolution, resolution, 3), dtype=torch.uint8)
    for j, path in enumerate(files):
        out[j] = fit(read_rgb(path), resolution, crop_ratio)
    return out
