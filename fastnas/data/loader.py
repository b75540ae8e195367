"""What every training backend shares: the epoch's file order per rank, and uint8 -> model input.

Each backend produces uint8 NHWC batches (already cropped, resized and flipped); `TrainLoader`
turns them into normalised channels-last float batches in the training dtype. Normalising
in the main process, rather than in DataLoader workers or DALI threads, moves a quarter of
the bytes between processes, and in training the float batches go into a ring of reused
buffers, which saves page-faulting fresh memory for every batch (~60 ms per 128x224x224
float32 batch on a CPU).

Sharding: each epoch, one global permutation (seeded by seed + epoch, identical on every
rank) is cut into `world_size` disjoint interleaved shards; every rank keeps the same
number of *whole* batches, so the last partial batch is dropped and all ranks take
`len(loader)` steps.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np
import torch

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CIFAR_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)       # CIFAR-10 train set, per channel
CIFAR_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)
NORMALIZATION = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "cifar": (CIFAR_MEAN, CIFAR_STD)}   # data.normalization
# Evaluation transform per data.augment: centre crop of this share of the shorter side, resized to the
# resolution (ImageNet's 224 of 256; CIFAR's whole image, unchanged when already at the resolution).
EVAL_CROP_RATIO = {"random_resized_crop": 224 / 256, "pad_crop": 1.0}


def steps_per_epoch(num_files: int, batch_size: int, world_size: int) -> int:
    return num_files // world_size // batch_size


def shard_order(num_files: int, *, batch_size: int, rank: int, world_size: int, seed: int, epoch: int) -> np.ndarray:
    """File indices this rank reads this epoch: a disjoint slice of one shared permutation."""
    perm = np.random.default_rng([seed, epoch]).permutation(num_files)
    steps = steps_per_epoch(num_files, batch_size, world_size)
    return perm[rank::world_size][: steps * batch_size]


def to_model_input(images: torch.Tensor, dtype: torch.dtype = torch.float32, out: torch.Tensor | None = None, *,
                   mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 (N,H,W,3) -> (x - mean) / std as float (N,3,H,W) in channels_last memory, in `dtype`.

    `out`, when given, is a channels_last (N,3,H,W) tensor of `dtype` that receives the result.
    `mean` and `std` are per channel on the 0-255 scale (see NORMALIZATION).
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 (N,H,W,3) images, got {images.dtype} {tuple(images.shape)}")
    nchw = images.permute(0, 3, 1, 2)                 # a view; NHWC memory is channels_last
    mean = torch.tensor(mean, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    inv_std = torch.tensor([1.0 / s for s in std], device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    if out is None:
        out = torch.empty(nchw.shape, device=images.device, dtype=dtype, memory_format=torch.channels_last)
    if dtype == torch.float32:
        torch.sub(nchw, mean, out=out)               # uint8 - float32 promotes straight into out
        out.mul_(inv_std)
    else:
        out.copy_((nchw - mean).mul_(inv_std))
    return out


@contextlib.contextmanager
def single_threaded():
    """Run many small torch ops on one thread: an OpenMP team per 200 us resize spins away the CPU
    (measured: 12.6 against 1.6 CPU ms an image with 2 threads). Restores the thread count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resize_hwc(image_chw: torch.Tensor, height: int, width: int, flip: bool = False) -> torch.Tensor:
    """Bilinear antialiased resize of a uint8 (3,h,w) image to uint8 (height, width, 3).

    Made channels-last contiguous first, which takes torch's vectorised uint8 path: ~4x faster
    here than torchvision's `resized_crop` on the strided crop of a decoded image.
    """
    x = image_chw[None].contiguous(memory_format=torch.channels_last)
    if x.shape[-2:] != (height, width):
        x = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", antialias=True)
    if flip:
        x = x.flip(-1)
    return x[0].permute(1, 2, 0)


class BufferRing:
    """`depth` output buffers used in turn: what is written into one stays intact while the
    next `depth - 1` batches are written. No reference counting: the lifetime is the contract."""

    def __init__(self, depth: int):
        self.depth = depth
        self.buffers: list[tuple] = []       # (tensor, the (shape, dtype, device) it was made for)
        self.turn = -1

    def next(self, shape, dtype, device) -> torch.Tensor:
        self.turn = (self.turn + 1) % self.depth
        key = (tuple(shape), dtype, str(device))    # as asked: torch.device("cuda") is not cuda:0
        if self.turn == len(self.buffers):
            self.buffers.append((None, None))
        buf, made_for = self.buffers[self.turn]
        if made_for != key:
            buf = torch.empty(shape, dtype=dtype, device=device, memory_format=torch.channels_last)
            self.buffers[self.turn] = (buf, key)
        return buf


class TrainLoader:
    """Iterable over (images, labels) for one rank; `len()` = steps per epoch.

    `make_batches(order, epoch)` is the backend: given file indices of this rank's epoch order,
    it yields (uint8 NHWC images, int64 labels) batches, each image's augmentation drawn from
    (seed, epoch, file index) alone, so any slice of the order yields the batches it would
    have yielded within the whole epoch.

    `reuse_buffers=True` (training) writes the float batches into a ring of REUSE_DEPTH
    buffers: a batch stays valid while the next REUSE_DEPTH - 1 are produced, enough for a loop
    that holds one batch while it asks for the next. On a CPU this saves page-faulting fresh
    memory for every batch (a 128x224x224 float32 batch is above glibc's mmap threshold);
    keep it off to hold on to batches (e.g. `list(loader)`).
    """

    REUSE_DEPTH = 3

    def __init__(self, make_batches: Callable[[np.ndarray, int], Iterator], *, num_files: int, batch_size: int,
                 rank: int, world_size: int, seed: int, device: torch.device, dtype: torch.dtype,
                 channels_last: bool, backend: str, normalized: bool = False, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 reuse_buffers: bool = False):
        self.make_batches = make_batches
        self.num_files = num_files
        self.batch_size = batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.device, self.dtype, self.channels_last = torch.device(device), dtype, channels_last
        self.backend = backend
        self.normalized = normalized          # the backend already yields model input
        self.mean, self.std = tuple(mean), tuple(std)
        self.epoch, self.start = 0, 0
        self._ring = BufferRing(self.REUSE_DEPTH) if reuse_buffers else None

    def __len__(self) -> int:
        return steps_per_epoch(self.num_files, self.batch_size, self.world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The epoch the next iteration reads, from its step `start` on (a run resumed mid-epoch)."""
        if not 0 <= start <= len(self):
            raise ValueError(f"start step {start} outside the epoch's {len(self)} steps")
        self.epoch, self.start = int(epoch), int(start)

    def close(self) -> None:
        """Release what the backend holds (DALI: its pipeline, decoder and memory pools)."""
        close = getattr(self.make_batches, "close", None)
        if close is not None:
            close()

    def order(self) -> np.ndarray:
        """This rank's file order for the whole epoch."""
        return shard_order(self.num_files, batch_size=self.batch_size, rank=self.rank,
                           world_size=self.world_size, seed=self.seed, epoch=self.epoch)

    def __iter__(self):
        for images, labels in self.make_batches(self.order()[self.start * self.batch_size:], self.epoch):
            labels = labels.to(self.device, non_blocking=True)
            if self.normalized:
                x = images.permute(0, 3, 1, 2) if images.shape[-1] == 3 else images
            else:
                images = images.to(self.device, non_blocking=True)
                n, h, w, _ = images.shape
                out = self._ring.next((n, 3, h, w), self.dtype, self.device) if self._ring else None
                x = to_model_input(images, self.dtype, out=out, mean=self.mean, std=self.std)
            if not self.channels_last:
                x = x.contiguous()
            yield x, labels
