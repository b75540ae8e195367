"""Data: one front door for training loaders and evaluation sets, over three backends.

    loader = build_train_loader(cfg.data, batch_size=128, resolution=224, rank=r, world_size=w)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for images, labels in loader: ...     # float (B,3,H,W) channels_last, int64 (B,)

    calib = build_eval_set(cfg.data, split="calib", num_images=500, resolution=224, device=dev)
    x = to_model_input(calib.images[:256], torch.bfloat16)

`data.backend`: `dali` (GPU mixed decode with CUDA, CPU-only DALI without), `torchvision`,
`memory` (small images decoded once onto the device, memory.py), `synthetic`, or `auto`: DALI
on CUDA; on a CPU the faster of the two on this machine's benchmark (bench/RESULTS.md), falling
back to torchvision when DALI is not installed.
The dataset is the ImageNet folder layout; see folder.py for labels and the bad-file policy.
CIFAR-style data: `data.val_split=test`, or `data.holdout=0.5` for NAS-Bench-201's half of
train/ held out (split.py); `data.augment=pad_crop`, `data.normalization=cifar`.
"""
from __future__ import annotations

import importlib

from fastnas.data.folder import DataError, scan_split

# Imported on first use, so `python -m fastnas.data check` runs without loading torch or DALI.
_LAZY = {
    "build_train_loader": "fastnas.data.build", "build_eval_set": "fastnas.data.build",
    "resolve_backend": "fastnas.data.build", "check_num_classes": "fastnas.data.build", "EvalSet": "fastnas.data.eval_set",
    "TrainLoader": "fastnas.data.loader", "to_model_input": "fastnas.data.loader",
    "shard_order": "fastnas.data.loader", "holdout_split": "fastnas.data.split",
}

__all__ = ["DataError", "scan_split", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastnas.data' has no attribute {name!r}")
