"""CIFAR-style data: the seeded hold-out split, val_split, CIFAR normalisation, pad-crop in every backend,
and the memory backend.

Built in tmp_path from real 32x32 CIFAR-10 JPEGs of ../shared/data/cifar10, or of the bundled
data/cifar10-sample where the shared copy is absent (only the full-50,000 split check then skips).
"""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fastnas.config import ConfigError, DataConfig, config_from_dict
from fastnas.data import DataError, build_eval_set, build_train_loader, holdout_split, scan_split, to_model_input
from fastnas.data import dali as _dali
from fastnas.data.folder import SplitScan
from fastnas.data.augment import PAD
from fastnas.data.loader import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, NORMALIZATION
from fastnas.data.torchvision import decode_eval as tv_decode_eval
from fastnas.data.torchvision import read_rgb

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
BUNDLED = Path(__file__).resolve().parents[1] / "data" / "cifar10-sample"      # its val/ stands in for test/
CLASSES, TRAIN_PER_CLASS, TEST_PER_CLASS = ["airplane", "cat", "ship"], 20, 8
TRAIN_BACKENDS = ["torchvision", "dali", "memory"]


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    """3 classes x 20 train and 8 test images of CIFAR-10 (32x32 JPEGs): from the shared copy, else the bundled sample."""
    root = tmp_path_factory.mktemp("cifar")
    for split, n in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        source = CIFAR / split if CIFAR.is_dir() else BUNDLED / ("val" if split == "test" else split)
        for cls in CLASSES:
            (root / split / cls).mkdir(parents=True)
            for f in sorted((source / cls).glob("*.jpg"))[:n]:
                shutil.copy(f, root / split / cls / f.name)
    return root


def _cfg(root, backend="torchvision", **kw) -> DataConfig:
    kw = {"augment": "pad_crop", "normalization": "cifar", "val_split": "test", "workers": 1, **kw}
    return DataConfig(path=str(root), backend=backend, **kw)


def _fake_scan(per_class: list[int]) -> SplitScan:
    scan = SplitScan(root=Path("/fake"), split="train", classes=[f"c{k}" for k in range(len(per_class))])
    for label, n in enumerate(per_class):
        scan.files += [f"/fake/train/c{label}/{i:04d}.jpg" for i in range(n)]
        scan.labels += [label] * n
    return scan


# ----------------------------------------------------------------------------- config

def test_config_keys_and_one_line_errors():
    cfg = config_from_dict({"data": {"backend": "memory", "val_split": "test", "holdout": 0.5, "split_seed": 3,
                                     "normalization": "cifar", "augment": "pad_crop"}}).data
    assert (cfg.backend, cfg.val_split, cfg.holdout, cfg.split_seed) == ("memory", "test", 0.5, 3)
    assert (cfg.normalization, cfg.augment) == ("cifar", "pad_crop")
    defaults = DataConfig()
    assert (defaults.val_split, defaults.holdout, defaults.normalization, defaults.augment) == \
        ("val", 0.0, "imagenet", "random_resized_crop")
    for key, value in [("holdout", 1.0), ("holdout", -0.1), ("normalization", "mnist"), ("augment", "cutout"),
                       ("backend", "ram"), ("val_split", "train"), ("val_split", ""), ("split_seed", "x")]:
        with pytest.raises(ConfigError, match=f"data.{key}") as e:
            config_from_dict({"data": {key: value}})
        assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- split

def test_holdout_split_is_balanced_disjoint_complete_and_seeded():
    scan = _fake_scan([5000] * 10)                                    # CIFAR-10's train/ shape
    kept, held = holdout_split(scan, 0.5, seed=0)
    labels = np.asarray(scan.labels)
    assert np.bincount(labels[kept]).tolist() == [2500] * 10 and np.bincount(labels[held]).tolist() == [2500] * 10
    assert not set(kept.tolist()) & set(held.tolist()) and len(kept) + len(held) == len(scan)
    again = holdout_split(scan, 0.5, seed=0)
    assert np.array_equal(again[0], kept) and np.array_equal(again[1], held)
    assert not np.array_equal(holdout_split(scan, 0.5, seed=1)[1], held)
    # Listing order does not matter: the same files are held out when the scan lists them reversed.
    reverse = SplitScan(scan.root, scan.split, scan.classes, scan.files[::-1], scan.labels[::-1])
    held_files = {scan.files[i] for i in held}
    assert {reverse.files[i] for i in holdout_split(reverse, 0.5, seed=0)[1]} == held_files
    # Uneven classes: each is split in proportion (round(share x count) held out).
    kept, held = holdout_split(_fake_scan([10, 7, 3]), 0.3, seed=0)
    assert np.bincount(np.asarray(_fake_scan([10, 7, 3]).labels)[held]).tolist() == [3, 2, 1]
    with pytest.raises(DataError, match="no held-out image"):
        holdout_split(_fake_scan([1, 1]), 0.2)


def test_holdout_on_full_cifar10_train():
    if not CIFAR.is_dir():
        pytest.skip(f"{CIFAR} not present")
    scan = scan_split(CIFAR, "train")
    kept, held = holdout_split(scan, 0.5, seed=0)
    labels = np.asarray(scan.labels)
    assert np.bincount(labels[kept]).tolist() == [2500] * 10 == np.bincount(labels[held]).tolist()


@pytest.mark.parametrize("backend", ["torchvision", "memory"])
def test_holdout_wiring(cifar, backend):
    """Training and calibration read only the kept part of train/; the val set only the held-out part."""
    cfg = _cfg(cifar, backend, holdout=0.5, split_seed=4)
    scan = scan_split(cifar, "train")
    kept, held = holdout_split(scan, 0.5, seed=4)
    kept_files, held_files = {scan.files[i] for i in kept}, {scan.files[i] for i in held}
    assert len(kept_files) == len(held_files) == len(CLASSES) * TRAIN_PER_CLASS // 2
    loader = build_train_loader(cfg, batch_size=5, resolution=32)
    assert loader.num_files == len(kept_files) and len(loader) == len(kept_files) // 5
    if backend == "torchvision":
        assert set(loader.make_batches.scan.files) == kept_files
    else:
        assert len(loader.make_batches.images) == len(kept_files)
    val = build_eval_set(cfg, split="val", num_images=1000, resolution=32)
    calib = build_eval_set(cfg, split="calib", num_images=1000, resolution=32)
    assert set(val.files) == held_files and set(calib.files) == kept_files     # all of each (fewer than asked)
    assert val.labels.tolist() == [scan.labels[scan.files.index(f)] for f in val.files]
    assert (val.mean, val.std) == (CIFAR_MEAN, CIFAR_STD)


def test_val_split_test(cifar):
    val = build_eval_set(_cfg(cifar), split="val", num_images=100, resolution=32)
    assert len(val) == len(CLASSES) * TEST_PER_CLASS and all("/test/" in f for f in val.files)
    with pytest.raises(DataError, match="no val/ folder"):
        build_eval_set(_cfg(cifar, val_split="val"), split="val", num_images=10, resolution=32)


# ----------------------------------------------------------------------------- normalisation

def test_normalization_constants():
    assert NORMALIZATION == {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "cifar": (CIFAR_MEAN, CIFAR_STD)}
    np.testing.assert_allclose(CIFAR_MEAN, [0.4914 * 255, 0.4822 * 255, 0.4465 * 255])
    np.testing.assert_allclose(CIFAR_STD, [0.2470 * 255, 0.2435 * 255, 0.2616 * 255])
    images = torch.randint(0, 256, (2, 4, 5, 3), dtype=torch.uint8)
    plain = (images.permute(0, 3, 1, 2).float() - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(to_model_input(images, mean=CIFAR_MEAN, std=CIFAR_STD), plain)
    assert not torch.allclose(to_model_input(images), plain)               # the default stays ImageNet's


# ----------------------------------------------------------------------------- pad-crop

def _denormalize(x: torch.Tensor) -> torch.Tensor:
    """Model input back to uint8 NHWC with CIFAR's stats; exact only if CIFAR's stats normalised it."""
    pixels = x.float().permute(0, 2, 3, 1) * torch.tensor(CIFAR_STD) + torch.tensor(CIFAR_MEAN)
    assert (pixels - pixels.round()).abs().max() < 1e-3, "not normalised with CIFAR's mean and std"
    return pixels.round().clamp(0, 255).to(torch.uint8)


def _best_window(source_hwc: torch.Tensor, crop: torch.Tensor) -> tuple[int, int, int, bool]:
    """(max pixel difference, top, left, flip) of the window of the padded source closest to `crop`."""
    padded = torch.nn.functional.pad(source_hwc, (0, 0, PAD, PAD, PAD, PAD)).int()
    best = None
    for top in range(2 * PAD + 1):
        for left in range(2 * PAD + 1):
            window = padded[top:top + 32, left:left + 32]
            for flip in (False, True):
                diff = int(((window.flip(1) if flip else window) - crop.int()).abs().max())
                if best is None or diff < best[0]:
                    best = (diff, top, left, flip)
    return best


def _source(backend: str, files: list[str]) -> torch.Tensor:
    """The decoded images a backend crops from (DALI's decoder for dali and memory, when installed)."""
    if backend == "torchvision" or not _dali.AVAILABLE:
        return tv_decode_eval(files, resolution=32, crop_ratio=1.0)
    return _dali.decode_eval(files, resolution=32, device="cpu", threads=1, crop_ratio=1.0)


@pytest.mark.parametrize("backend", TRAIN_BACKENDS)
def test_pad_crop_batches_are_padded_crops_of_the_source(cifar, backend):
    loader = build_train_loader(_cfg(cifar, backend), batch_size=24, resolution=32, seed=5)
    scan = scan_split(cifar, "train")
    x, y = next(iter(loader))
    assert x.shape == (24, 3, 32, 32) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    idx = loader.order()[:24]
    assert y.tolist() == [scan.labels[i] for i in idx]
    crops, source = _denormalize(x), _source(backend, [scan.files[i] for i in idx])
    found = [_best_window(source[j], crops[j]) for j in range(24)]
    assert max(f[0] for f in found) == 0, found                       # every image is an exact window
    assert len({(f[1], f[2]) for f in found}) > 5 and {f[3] for f in found} == {False, True}
    shifted = [j for j, f in enumerate(found) if f[1] < PAD]           # window starts in the top padding
    assert shifted and all(int(crops[j, :PAD - found[j][1]].max()) == 0 for j in shifted)
    loader.set_epoch(1)
    x1, _ = next(iter(loader))
    loader.set_epoch(0)
    assert torch.equal(next(iter(loader))[0], x) and not torch.equal(x1, x)


@pytest.mark.parametrize("backend", ["torchvision", "dali"])
def test_eval_decode_is_identity_at_native_resolution(cifar, backend):
    """With pad_crop, evaluation images are the decoded 32x32 files as they are; the ImageNet transform is not."""
    files = sorted(str(p) for p in (cifar / "test").glob("*/*.jpg"))[:6]
    raw = torch.stack([read_rgb(f).permute(1, 2, 0) for f in files])
    if backend == "dali":
        as_is = _dali.decode_eval(files, resolution=32, device="cpu", threads=1, crop_ratio=1.0)
        assert (as_is.float() - raw.float()).abs().mean() < 1.0          # another IDCT, same image
        imagenet = _dali.decode_eval(files, resolution=32, device="cpu", threads=1)
    else:
        as_is = tv_decode_eval(files, resolution=32, crop_ratio=1.0)
        assert torch.equal(as_is, raw)
        imagenet = tv_decode_eval(files, resolution=32)
    assert (imagenet.float() - raw.float()).abs().mean() > 5
    val = build_eval_set(_cfg(cifar, backend), split="val", num_images=100, resolution=32)
    assert torch.equal(val.images, _source(backend, val.files))


# ----------------------------------------------------------------------------- memory backend

def test_memory_decodes_once_what_decode_eval_gives_and_is_deterministic(cifar):
    scan = scan_split(cifar, "train")
    loaders = [build_train_loader(_cfg(cifar, "memory"), batch_size=8, resolution=32, seed=2) for _ in range(2)]
    assert torch.equal(loaders[0].make_batches.images, _source("memory", scan.files))
    assert loaders[0].make_batches.labels.tolist() == scan.labels
    epochs = []
    for epoch in (0, 1):
        runs = []
        for loader in loaders:
            loader.set_epoch(epoch)
            runs.append([(x.clone(), y) for x, y in loader])
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(*runs))
        epochs.append(runs[0])
    assert not torch.equal(epochs[0][0][0], epochs[1][0][0])


def test_memory_shards_like_the_other_backends(cifar):
    """Same files per rank and epoch as torchvision (loader.shard_order); ranks disjoint."""
    for rank in range(2):
        mem, tv = (build_train_loader(_cfg(cifar, b), batch_size=4, resolution=32, rank=rank, world_size=2, seed=1)
                   for b in ("memory", "torchvision"))
        mem.set_epoch(3)
        tv.set_epoch(3)
        assert np.array_equal(mem.order(), tv.order()) and len(mem) == len(tv) == 7
        assert [y.tolist() for _, y in mem] == [y.tolist() for _, y in tv]


def test_memory_refuses_in_one_line(cifar, monkeypatch):
    from fastnas.data import memory
    with pytest.raises(DataError, match="pad_crop only") as e:
        build_train_loader(_cfg(cifar, "memory", augment="random_resized_crop"), batch_size=4, resolution=32)
    assert "\n" not in str(e.value)
    monkeypatch.setattr(memory, "MAX_BYTES", 100_000)
    with pytest.raises(DataError, match="GiB bound") as e:
        build_train_loader(_cfg(cifar, "memory"), batch_size=4, resolution=32)
    assert "\n" not in str(e.value)


def test_check_lists_the_test_split(cifar):
    from fastnas.data.__main__ import check
    out = io.StringIO()
    assert check(str(cifar), out=out)
    assert f"test: {len(CLASSES) * TEST_PER_CLASS} usable images" in out.getvalue()
    assert "no val/ folder" not in out.getvalue()


def test_dali_and_torchvision_pad_crops_are_identical(cifar):
    """The padded crop and flip are drawn per file, and at native resolution nothing is resampled:
    the two backends give the very same training batches."""
    batches = []
    for backend in ("dali", "torchvision"):
        loader = build_train_loader(_cfg(cifar, backend), batch_size=20, resolution=32, seed=4)
        loader.set_epoch(2)
        batches.append([(x, y) for x, y in loader])
    assert len(batches[0]) == 3
    for (xa, ya), (xb, yb) in zip(*batches):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
