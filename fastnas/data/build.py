"""The front door's implementation: backend choice, training loaders and evaluation sets."""
from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from fastnas.config import DataConfig
from fastnas.data import dali as _dali
from fastnas.data.eval_set import EvalSet, draw
from fastnas.data.folder import DataError, SplitScan, list_classes, scan_split
from fastnas.data.loader import EVAL_CROP_RATIO, NORMALIZATION, TrainLoader, steps_per_epoch
from fastnas.data.split import holdout_split

# Measured on the 2-core AVX-512 CPU (bench/bench_data.py, bench/RESULTS.md).
CPU_AUTO_BACKEND = "dali"


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend != "auto":
        return backend
    if not _dali.AVAILABLE:
        return "torchvision"
    return "dali" if torch.device(device).type == "cuda" else CPU_AUTO_BACKEND


def check_num_classes(data_cfg: DataConfig, num_classes: int) -> int:
    """The dataset's class count; a DataError when the model's head (`space.num_classes`) is too small for it."""
    n = data_cfg.synthetic_classes if data_cfg.backend == "synthetic" else len(list_classes(data_cfg.path))
    if n > num_classes:
        raise DataError(f"{data_cfg.path if data_cfg.backend != 'synthetic' else 'synthetic data'} has {n} "
                        f"classes but the model has space.num_classes={num_classes}: set space.num_classes={n}")
    return n


def build_train_loader(data_cfg: DataConfig, *, batch_size: int, resolution: int, rank: int = 0, world_size: int = 1,
                       seed: int = 0, device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32,
                       channels_last: bool = True, reuse_buffers: bool = False) -> TrainLoader:
    """The training loader of one rank: `data.augment`'s crop, flip, normalise; last partial batch dropped.

    `reuse_buffers`: a training loop that keeps no batch beyond the next one lets the loader
    write batches into a ring of buffers (see TrainLoader).

    With `data.holdout` > 0 it reads only the part of train/ that is not held out.
    """
    device = torch.device(device)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")
    backend = resolve_backend(data_cfg.backend, device)
    mean, std = NORMALIZATION[data_cfg.normalization]
    common = dict(batch_size=batch_size, rank=rank, world_size=world_size, seed=seed, device=device, dtype=dtype,
                  channels_last=channels_last, backend=backend, mean=mean, std=std, reuse_buffers=reuse_buffers)
    if backend == "synthetic":
        from fastnas.data.synthetic import SyntheticTrainBatches
        make = SyntheticTrainBatches(batch_size=batch_size, resolution=resolution,
                                     num_classes=data_cfg.synthetic_classes, seed=seed + rank)
        return TrainLoader(make, num_files=data_cfg.synthetic_images, **common)
    scan = _part(data_cfg, "train", list_classes(data_cfg.path), rank)
    if steps_per_epoch(len(scan), batch_size, world_size) == 0:
        raise DataError(f"{data_cfg.path}: {len(scan)} usable training images are fewer than one batch "
                        f"({batch_size} x {world_size} ranks)")
    if backend == "dali":
        make = _dali.DaliTrainBatches(scan, batch_size=batch_size, resolution=resolution, threads=data_cfg.workers,
                                      seed=seed, device=device, dtype=dtype, augment=data_cfg.augment,
                                      mean=mean, std=std)
        return TrainLoader(make, num_files=len(scan), normalized=make.normalized, **common)
    if backend == "memory":
        from fastnas.data.memory import MemoryTrainBatches, check_usable
        check_usable(len(scan), resolution, data_cfg.augment)
        images = _decode(data_cfg, backend, scan.files, resolution=resolution, device=device)
        make = MemoryTrainBatches(images, torch.tensor(scan.labels, dtype=torch.int64), batch_size=batch_size,
                                  seed=seed)
        return TrainLoader(make, num_files=len(scan), **common)
    from fastnas.data.torchvision import TorchvisionTrainBatches
    make = TorchvisionTrainBatches(scan, batch_size=batch_size, resolution=resolution, workers=data_cfg.workers,
                                   seed=seed, pin_memory=device.type == "cuda", augment=data_cfg.augment)
    return TrainLoader(make, num_files=len(scan), **common)


def build_eval_set(data_cfg: DataConfig, *, split: str, num_images: int, resolution: int,
                   device: torch.device = torch.device("cpu"), seed: int = 0) -> EvalSet:
    """`split='calib'`: a seeded draw from the training part; `split='val'`: a seeded draw from the
    validation part (`data.val_split`, or the held-out part of train/ when `data.holdout` > 0). Decoded once."""
    if split not in ("calib", "val"):
        raise ValueError(f"split must be 'calib' or 'val', got {split!r}")
    device = torch.device(device)
    backend = resolve_backend(data_cfg.backend, device)
    mean, std = NORMALIZATION[data_cfg.normalization]
    if backend == "synthetic":
        from fastnas.data.synthetic import synthetic_eval
        images, labels = synthetic_eval(num_images, resolution, data_cfg.synthetic_classes,
                                        seed + (0 if split == "calib" else 1))
        return EvalSet(images.to(device), labels.to(device), [], mean, std)
    scan = _part(data_cfg, "train" if split == "calib" else "val", list_classes(data_cfg.path), 0)
    picked = draw(len(scan), num_images, seed, f"the {split} set")
    files = [scan.files[i] for i in picked]
    labels = torch.tensor([scan.labels[i] for i in picked], dtype=torch.int64)
    images = _decode(data_cfg, backend, files, resolution=resolution, device=device)
    return EvalSet(images, labels.to(device), files, mean, std)


def _part(data_cfg: DataConfig, part: str, classes: list[str], rank: int) -> SplitScan:
    """The files of the training ('train') or validation ('val') part, problems reported once."""
    if part == "val" and data_cfg.holdout == 0:
        scan = _scan_once(data_cfg.path, data_cfg.val_split, classes)
        _report(scan, rank)
        return scan
    scan = _scan_once(data_cfg.path, "train", classes)
    _report(scan, rank)
    if data_cfg.holdout == 0:
        return scan
    kept, heldout = holdout_split(scan, data_cfg.holdout, data_cfg.split_seed)
    return scan.subset(kept if part == "train" else heldout)


def _scan_once(root, split: str, classes: list[str]) -> SplitScan:
    """scan_split, with one process of a distributed job reading the headers: rank 0 scans (and fills
    the scan cache), the others wait for it and then find every file in the cache."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return scan_split(root, split, classes)
    if dist.get_rank() == 0:
        try:
            return scan_split(root, split, classes)
        finally:                                   # also on a DataError: the others then meet it too
            dist.barrier()
    dist.barrier()
    return scan_split(root, split, classes)


def _decode(data_cfg: DataConfig, backend: str, files: list[str], *, resolution: int,
            device: torch.device) -> torch.Tensor:
    """The evaluation transform of `files`, uint8 on `device`: with DALI for `dali` (and for `memory`
    when DALI is installed), else torchvision."""
    crop_ratio = EVAL_CROP_RATIO[data_cfg.augment]
    if backend == "dali" or (backend == "memory" and _dali.AVAILABLE):
        return _dali.decode_eval(files, resolution=resolution, device=device, threads=data_cfg.workers,
                                 crop_ratio=crop_ratio)
    from fastnas.data.torchvision import decode_eval
    return decode_eval(files, resolution=resolution, crop_ratio=crop_ratio).to(device)


def _report(scan: SplitScan, rank: int) -> None:
    line = scan.summary_line()
    if line and rank == 0:
        print(line, file=sys.stderr, flush=True)
