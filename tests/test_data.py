"""fastnas.data: the front door's contract, labels, sharding, evaluation sets, and every bad input.

Datasets are built in tmp_path from real JPEGs of the bundled sample plus broken or odd
files written here (PIL writes grayscale, CMYK, progressive and PNG; truncation by hand).
"""
from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastnas.config import DataConfig
from fastnas.data import (DataError, EvalSet, build_eval_set, build_train_loader, scan_split, shard_order,
                          to_model_input)
from fastnas.data.folder import check_file, image_size
from fastnas.data.loader import IMAGENET_MEAN, IMAGENET_STD, TrainLoader

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ["dali", "torchvision"]


def _jpeg_bytes(img: Image.Image, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, "JPEG", **kw)
    return b.getvalue()


def _real_images(sample_dir: Path, n: int) -> list[Path]:
    return sorted((sample_dir / "train").glob("*/*.JPEG"))[:: 50][:n]


@pytest.fixture
def small_dataset(tmp_path, sample_dir) -> Path:
    """3 classes x 4 real JPEGs in train, 2 per class in val."""
    root = tmp_path / "ds"
    classes = sorted(p.name for p in (sample_dir / "train").iterdir())[:3]
    for split, n in (("train", 4), ("val", 2)):
        for wnid in classes:
            (root / split / wnid).mkdir(parents=True)
            for f in sorted((sample_dir / split / wnid).glob("*.JPEG"))[:n]:
                shutil.copy(f, root / split / wnid / f.name)
    return root


ODDITIES_DECODABLE = ["gray.JPEG", "cmyk.JPEG", "png_named.JPEG", "rgba_png.JPEG", "progressive_large.JPEG",
                      "tiny.JPEG"]
ODDITIES_BROKEN = {"zero.JPEG": "empty", "truncated.JPEG": "truncated", "header_only.JPEG": "truncated",
                   "garbage.JPEG": "not an image", "gif_named.JPEG": "GIF"}


@pytest.fixture
def odd_dataset(small_dataset, sample_dir) -> Path:
    """small_dataset plus every odd or broken file in the first class, and stray files."""
    cls = _first_class(small_dataset)
    rgb = Image.open(_real_images(sample_dir, 1)[0]).convert("RGB")
    rgb.convert("L").save(cls / "gray.JPEG")
    rgb.convert("CMYK").save(cls / "cmyk.JPEG")
    rgb.save(cls / "png_named.JPEG", format="PNG")
    rgb.convert("RGBA").save(cls / "rgba_png.JPEG", format="PNG")
    rgb.resize((1024, 683)).save(cls / "progressive_large.JPEG", progressive=True, quality=90)
    rgb.resize((48, 31)).save(cls / "tiny.JPEG")
    data = _jpeg_bytes(rgb)
    (cls / "zero.JPEG").write_bytes(b"")
    (cls / "truncated.JPEG").write_bytes(data[: len(data) // 2])
    (cls / "header_only.JPEG").write_bytes(data[:20])
    (cls / "garbage.JPEG").write_bytes(np.random.default_rng(0).integers(0, 256, 700, dtype=np.uint8).tobytes())
    rgb.save(cls / "gif_named.JPEG", format="GIF")
    (cls / "notes.txt").write_text("not an image")
    (small_dataset / "train" / "README").write_text("stray file next to the class folders")
    return small_dataset


def _first_class(root: Path) -> Path:
    return sorted(p for p in (root / "train").iterdir() if p.is_dir())[0]


def _cfg(path, backend, **kw) -> DataConfig:
    return DataConfig(path=str(path), backend=backend, workers=kw.pop("workers", 1), **kw)


# ----------------------------------------------------------------------------- contract

@pytest.mark.parametrize("backend", BACKENDS + ["synthetic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_train_loader_contract(small_dataset, backend, dtype):
    loader = build_train_loader(_cfg(small_dataset, backend, synthetic_images=10), batch_size=5, resolution=32,
                                dtype=dtype)
    assert len(loader) == 2                                      # 12 files // 5, last partial batch dropped
    batches = list(loader)
    assert len(batches) == len(loader)
    for x, y in batches:
        assert x.shape == (5, 3, 32, 32) and x.dtype == dtype
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert y.dtype == torch.int64 and y.shape == (5,) and 0 <= int(y.min()) and int(y.max()) < 10
        assert torch.isfinite(x.float()).all()
    if backend != "synthetic":
        x = torch.cat([b[0].float() for b in batches])
        assert abs(float(x.mean())) < 1.0 and 0.5 < float(x.std()) < 1.5    # normalised real images


def test_channels_last_false_gives_contiguous(small_dataset):
    loader = build_train_loader(_cfg(small_dataset, "dali"), batch_size=4, resolution=32, channels_last=False)
    x, _ = next(iter(loader))
    assert x.is_contiguous()


@pytest.mark.parametrize("backend", BACKENDS)
def test_labels_are_sorted_wnid_index(small_dataset, backend):
    """Every yielded label is the sorted-wnid index of its file (as torchvision's ImageFolder assigns)."""
    from torchvision.datasets import ImageFolder
    reference = ImageFolder(str(small_dataset / "train"))
    scan = scan_split(small_dataset, "train")
    assert scan.classes == reference.classes
    assert sorted(zip(scan.files, scan.labels)) == sorted((str(p), c) for p, c in reference.samples)
    loader = build_train_loader(_cfg(small_dataset, backend), batch_size=4, resolution=32, seed=3)
    got = torch.cat([y for _, y in loader]).tolist()
    assert got == [scan.labels[i] for i in loader.order()]


def test_dali_and_torchvision_give_identical_labels(small_dataset):
    loaders = [build_train_loader(_cfg(small_dataset, b), batch_size=4, resolution=32, seed=7) for b in BACKENDS]
    for epoch in (0, 1):
        labels = []
        for loader in loaders:
            loader.set_epoch(epoch)
            labels.append([y.tolist() for _, y in loader])
        assert labels[0] == labels[1]


def test_set_epoch_reshuffles_deterministically(small_dataset):
    loader = build_train_loader(_cfg(small_dataset, "torchvision"), batch_size=4, resolution=32, seed=1)
    orders = []
    for epoch in (0, 1, 0):
        loader.set_epoch(epoch)
        orders.append(loader.order().tolist())
    assert orders[0] == orders[2] and orders[0] != orders[1]


def test_shards_disjoint_and_same_length():
    for n, world, batch in [(103, 2, 8), (100, 3, 7), (16, 4, 4)]:
        shards = [shard_order(n, batch_size=batch, rank=r, world_size=world, seed=5, epoch=2) for r in range(world)]
        assert len({len(s) for s in shards}) == 1 and len(shards[0]) == (n // world // batch) * batch
        flat = np.concatenate(shards)
        assert len(set(flat.tolist())) == len(flat)             # disjoint
        assert flat.min() >= 0 and flat.max() < n


@pytest.mark.parametrize("backend", BACKENDS)
def test_ranks_have_same_steps_and_disjoint_files(small_dataset, backend):
    loaders = [build_train_loader(_cfg(small_dataset, backend), batch_size=2, resolution=32, rank=r, world_size=2)
               for r in range(2)]
    assert len(loaders[0]) == len(loaders[1]) == 3
    assert not set(loaders[0].order().tolist()) & set(loaders[1].order().tolist())
    assert [len(list(l)) for l in loaders] == [3, 3]


# ----------------------------------------------------------------------------- per-sample augmentation

@pytest.mark.parametrize("backend", BACKENDS)
def test_a_slice_of_the_epoch_yields_the_rest_of_the_epoch(small_dataset, backend):
    """Mid-epoch resume reads the rest of the file order: the same batches as the whole epoch's tail."""
    loader = build_train_loader(_cfg(small_dataset, backend), batch_size=2, resolution=32, seed=3)
    loader.set_epoch(1)
    whole = [(x.clone(), y) for x, y in loader]
    loader.set_epoch(1, start=4)
    tail = [(x.clone(), y) for x, y in loader]
    assert len(whole) == 6 and len(tail) == 2
    for (xa, ya), (xb, yb) in zip(whole[4:], tail):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(ValueError):
        loader.set_epoch(1, start=7)


def test_dali_builds_one_pipeline_and_recovers_from_an_early_stop(small_dataset):
    loader = build_train_loader(_cfg(small_dataset, "dali"), batch_size=2, resolution=32)
    first = [x.clone() for x, _ in loader]
    batches = iter(loader)
    next(batches)
    batches.close()                            # a run ends mid-epoch: the scheduled runs are drained
    loader.set_epoch(1)
    other = [x.clone() for x, _ in loader]
    loader.set_epoch(0, start=5)               # a first stretch shorter than DALI's prefetch depth
    fresh = build_train_loader(_cfg(small_dataset, "dali"), batch_size=2, resolution=32)
    fresh.set_epoch(0, start=5)
    assert torch.equal(next(iter(fresh))[0], first[5])
    loader.set_epoch(0)
    again = [x.clone() for x, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again)) and len(again) == len(first)
    assert not torch.equal(first[0], other[0])
    assert loader.make_batches.builds == 1
    loader.close()                             # released; a later epoch builds a new one
    assert torch.equal([x for x, _ in loader][0], first[0]) and loader.make_batches.builds == 2


def test_dali_iterations_left_open_do_not_mix_batches(small_dataset):
    """An iteration left open (a notebook, a traceback holding the frame) still has runs in the
    pipeline: a new iteration must not receive them with its own labels."""
    loader = build_train_loader(_cfg(small_dataset, "dali"), batch_size=2, resolution=32)
    whole = [(x.clone(), y) for x, y in loader]
    left_open = iter(loader)
    next(left_open)
    again = [(x.clone(), y) for x, y in loader]
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(whole, again))
    assert len(again) == len(whole)
    del left_open


def test_dali_and_torchvision_cut_the_same_windows(small_dataset):
    """Crops and flips are drawn per file, so both backends cut the same windows; the pixels differ
    only by the resize filter (DALI's is not antialiased). A window of another epoch differs a lot."""
    def epoch(backend, k):
        loader = build_train_loader(_cfg(small_dataset, backend), batch_size=12, resolution=48, seed=1)
        loader.set_epoch(k)
        return next(iter(loader))
    (dali, ya), (tv, yb), (other, _) = epoch("dali", 0), epoch("torchvision", 0), epoch("torchvision", 1)
    assert torch.equal(ya, yb)
    same = (dali - tv).abs().mean(dim=(1, 2, 3))
    assert same.max() < 0.25 < (dali - other).abs().mean(dim=(1, 2, 3)).mean(), same


def test_exif_rotated_images_are_read_as_stored_by_both_backends(small_dataset):
    """A JPEG with an EXIF rotation tag: both backends use the pixels as stored (torchvision's decode
    ignores the tag), so DALI's windows, drawn from the header's size, fit the decoded image."""
    wnid = sorted(p.name for p in (small_dataset / "train").iterdir())[0]
    source = sorted((small_dataset / "train" / wnid).glob("*.JPEG"))[0]
    exif = Image.Exif()
    exif[0x0112] = 6                                       # "rotate 90 degrees clockwise to display"
    for k in range(4):
        with Image.open(source) as img:
            img.convert("RGB").crop((0, 0, img.width, img.height // 3 + k)).save(
                small_dataset / "train" / wnid / f"rotated{k}.JPEG", exif=exif)
    batches = {}
    for backend in BACKENDS:
        loader = build_train_loader(_cfg(small_dataset, backend), batch_size=16, resolution=48, seed=5)
        batches[backend] = next(iter(loader))
    (dali, ya), (tv, yb) = batches["dali"], batches["torchvision"]
    assert torch.equal(ya, yb)
    assert (dali - tv).abs().mean(dim=(1, 2, 3)).max() < 0.25
    files = [str(f) for f in sorted((small_dataset / "train" / wnid).glob("rotated*.JPEG"))]
    from fastnas.data import dali as dali_backend, torchvision as tv_backend
    a = dali_backend.decode_eval(files, resolution=32, device=torch.device("cpu"), threads=1).float()
    b = tv_backend.decode_eval(files, resolution=32).float()
    assert (a - b).abs().mean() < 8                        # grey levels: same orientation, other filter


def test_image_size_reads_the_header(sample_dir):
    files = sorted((sample_dir / "train").glob("*/*.JPEG"))[::25]
    for f in files:
        with Image.open(f) as img:
            assert image_size(f.read_bytes()) == (img.height, img.width)
    png = io.BytesIO()
    Image.new("RGB", (7, 5)).save(png, "PNG")
    assert image_size(png.getvalue()) == (5, 7)
    with pytest.raises(DataError):
        image_size(b"GIF89a")


# ----------------------------------------------------------------------------- normalisation

def test_to_model_input_matches_plain_formula():
    images = torch.randint(0, 256, (3, 8, 6, 3), dtype=torch.uint8)
    plain = (images.permute(0, 3, 1, 2).float() - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    fast = to_model_input(images)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(to_model_input(images, torch.bfloat16).float(), plain, rtol=1e-2, atol=2e-2)


def test_buffer_reuse_changes_no_batch_and_keeps_each_for_its_lifetime(small_dataset):
    """Without reuse every batch is its own tensor (safe to keep); with reuse a training loop that
    holds one batch while asking for the next sees the same numbers, in a ring of buffers."""
    cfg = _cfg(small_dataset, "torchvision")
    kept = list(x for x, _ in build_train_loader(cfg, batch_size=2, resolution=32))
    assert len({x.data_ptr() for x in kept}) == len(kept) == 6
    reusing = build_train_loader(cfg, batch_size=2, resolution=32, reuse_buffers=True)
    previous, pointers = None, []
    for k, (x, _) in enumerate(reusing):
        assert torch.equal(x, kept[k])
        if previous is not None:                   # the batch held while this one was made is intact
            assert torch.equal(previous, kept[k - 1])
        previous = x
        pointers.append(x.data_ptr())
    depth = TrainLoader.REUSE_DEPTH
    assert len(set(pointers)) == depth and pointers[:depth] == pointers[depth:2 * depth]


# ----------------------------------------------------------------------------- evaluation sets

@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_sets(small_dataset, backend):
    cfg = _cfg(small_dataset, backend)
    calib = build_eval_set(cfg, split="calib", num_images=5, resolution=32, device="cpu", seed=0)
    val = build_eval_set(cfg, split="val", num_images=100, resolution=32, device="cpu")
    assert isinstance(calib, EvalSet) and calib.images.shape == (5, 32, 32, 3) and calib.images.dtype == torch.uint8
    assert calib.labels.dtype == torch.int64 and len(calib) == 5
    assert all("/train/" in f for f in calib.files) and all("/val/" in f for f in val.files)
    assert len(val) == 6                                          # all of val (fewer than asked)
    again = build_eval_set(cfg, split="calib", num_images=5, resolution=32, device="cpu", seed=0)
    assert again.files == calib.files and torch.equal(again.images, calib.images)
    scan = scan_split(small_dataset, "val")
    assert val.labels.tolist() == [scan.labels[scan.files.index(f)] for f in val.files]


def test_eval_transform_agrees_between_backends(small_dataset):
    sets = [build_eval_set(_cfg(small_dataset, b), split="val", num_images=6, resolution=48, device="cpu")
            for b in BACKENDS]
    assert sets[0].files == sets[1].files and torch.equal(sets[0].labels, sets[1].labels)
    diff = (sets[0].images.float() - sets[1].images.float()).abs().mean()
    assert diff < 6, f"DALI and torchvision validation transforms differ by {diff:.1f} grey levels on average"


# ----------------------------------------------------------------------------- bad input

def test_prescan_reasons(odd_dataset):
    scan = scan_split(odd_dataset, "train")
    names = {Path(f).name for f in scan.files}
    for name in ODDITIES_DECODABLE:
        assert name in names
    reasons = {Path(p.path).name: p.reason for p in scan.problems}
    assert set(reasons) == set(ODDITIES_BROKEN)
    for name, word in ODDITIES_BROKEN.items():
        assert word in reasons[name], reasons[name]
    assert any("notes.txt" in w for w in scan.warnings) and any("README" in w for w in scan.warnings)
    assert scan.counts() == [4 + len(ODDITIES_DECODABLE), 4, 4]


@pytest.mark.parametrize("backend", BACKENDS)
def test_loaders_skip_broken_and_use_oddities(odd_dataset, backend, capfd):
    """All decodable oddities go through both decoders; broken files never reach them; one warning line."""
    loader = build_train_loader(_cfg(odd_dataset, backend), batch_size=3, resolution=32, seed=0)
    assert len(loader) == (12 + len(ODDITIES_DECODABLE)) // 3
    got = torch.cat([y for _, y in loader]).tolist()
    assert got == [loader.make_batches.scan.labels[i] for i in loader.order()]
    err = capfd.readouterr().err
    assert f"skipped {len(ODDITIES_BROKEN)} unusable file(s)" in err
    calib = build_eval_set(_cfg(odd_dataset, backend), split="calib", num_images=100, resolution=32)
    assert len(calib) == 12 + len(ODDITIES_DECODABLE)


def test_oddities_decode_to_rgb_alike(odd_dataset):
    """Grayscale/CMYK/PNG files decode to 3-channel images that both backends agree on."""
    from fastnas.data import dali, torchvision as tv
    cls = _first_class(odd_dataset)
    files = [str(cls / n) for n in ("gray.JPEG", "cmyk.JPEG", "png_named.JPEG", "rgba_png.JPEG")]
    a = dali.decode_eval(files, resolution=32, device=torch.device("cpu"), threads=1)
    b = tv.decode_eval(files, resolution=32)
    assert a.shape == b.shape == (4, 32, 32, 3)
    colour_a, colour_b = a.float().mean(dim=(1, 2)), b.float().mean(dim=(1, 2))      # (4, 3) channel means
    assert (colour_a - colour_b).abs().max() < 3                 # same colour conversion in both decoders
    for colour in (colour_a, colour_b):                          # CMYK and RGBA come out as the RGB source
        assert (colour[1] - colour[2]).abs().max() < 3 and (colour[3] - colour[2]).abs().max() < 3
    gray = b[0].float()
    assert torch.equal(gray[..., 0], gray[..., 1])             # grayscale stays grey in RGB


def test_corrupt_inside_is_replaced_in_torchvision_and_found_by_check_decode(small_dataset, capfd):
    """A JPEG whose header and end marker are whole but whose data is garbage passes the pre-scan;
    DALI decodes it (libjpeg-turbo fills in), torchvision refuses it."""
    cls = _first_class(small_dataset)
    data = bytearray((sorted(cls.glob("*.JPEG"))[0]).read_bytes())
    mid = len(data) // 2
    data[mid:mid + 300] = np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes()
    (cls / "corrupt_inside.JPEG").write_bytes(bytes(data))
    assert check_file(cls / "corrupt_inside.JPEG") is None
    dali_loader = build_train_loader(_cfg(small_dataset, "dali"), batch_size=13, resolution=32)
    assert [y.shape[0] for _, y in dali_loader] == [13]
    loader = build_train_loader(_cfg(small_dataset, "torchvision"), batch_size=13, resolution=32)
    (x, y), = list(loader)
    assert x.shape[0] == 13 and len(loader.make_batches.skipped) == 1
    from fastnas.data.__main__ import check
    report = io.StringIO()
    assert check(str(small_dataset), decode=True, out=report)
    # torchvision rejected it at run time (slot refilled, one warning); `check --decode` lists it.
    assert "skipped: " in report.getvalue() and "corrupt_inside.JPEG" in report.getvalue()
    assert "skipping" in capfd.readouterr().err


def _check_cli(path, *args):
    return subprocess.run([sys.executable, "-m", "fastnas.data", "check", str(path), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_check_cli_usable_dataset_lists_problems(odd_dataset):
    r = _check_cli(odd_dataset)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 classes" in r.stdout and "USABLE" in r.stdout
    for name in ODDITIES_BROKEN:
        assert name in r.stdout
    assert "Traceback" not in r.stderr


def test_check_cli_missing_path():
    r = _check_cli("/nonexistent/imagenet")
    assert r.returncode == 1 and "not found" in r.stdout and "Traceback" not in r.stderr


def test_empty_class_keeps_its_label(small_dataset):
    """An empty class folder keeps its index (no shifted labels) and is reported."""
    (small_dataset / "train" / "n00000000").mkdir()            # sorts first
    scan = scan_split(small_dataset, "train")
    assert scan.classes[0] == "n00000000" and scan.counts()[0] == 0 and min(scan.labels) == 1
    assert any("no usable image" in w for w in scan.warnings)
    assert _check_cli(small_dataset).returncode == 0


def test_class_missing_from_val_keeps_train_labels(small_dataset):
    shutil.rmtree(sorted((small_dataset / "val").iterdir())[0])
    scan = scan_split(small_dataset, "val")
    assert scan.counts() == [0, 2, 2] and any("has no folder in val" in w for w in scan.warnings)
    val = build_eval_set(_cfg(small_dataset, "torchvision"), split="val", num_images=10, resolution=32)
    assert sorted(val.labels.tolist()) == [1, 1, 2, 2]


def test_class_only_in_val_is_an_error(small_dataset):
    (small_dataset / "val" / "n99999999").mkdir()
    with pytest.raises(DataError, match="not in train"):
        scan_split(small_dataset, "val")
    assert _check_cli(small_dataset).returncode == 1


def test_missing_or_unusable_dataset_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        build_train_loader(_cfg(tmp_path / "nope", "dali"), batch_size=2, resolution=32)
    (tmp_path / "empty" / "train" / "n0").mkdir(parents=True)
    (tmp_path / "empty" / "train" / "n0" / "bad.JPEG").write_bytes(b"")
    with pytest.raises(DataError, match="no usable images"):
        build_train_loader(_cfg(tmp_path / "empty", "torchvision"), batch_size=2, resolution=32)
    assert _check_cli(tmp_path / "empty").returncode == 1


def test_fewer_images_than_one_batch_is_an_error(small_dataset):
    with pytest.raises(DataError, match="fewer than one batch"):
        build_train_loader(_cfg(small_dataset, "dali"), batch_size=8, resolution=32, world_size=2)


# ----------------------------------------------------------------------------- optimisations vs plain versions

def test_resize_hwc_matches_torchvision_resized_crop(sample_dir):
    """The channels-last uint8 resize gives torchvision's resized_crop result (within rounding)."""
    from torchvision.transforms.v2 import functional as F
    from fastnas.data.loader import resize_hwc
    from fastnas.data.torchvision import read_rgb
    img = read_rgb(str(_real_images(sample_dir, 1)[0]))
    for top, left, h, w, size in [(10, 20, 100, 150, 64), (0, 0, 30, 40, 96), (5, 5, 200, 180, 224)]:
        plain = F.resized_crop(img, top, left, h, w, [size, size], antialias=True).permute(1, 2, 0)
        fast = resize_hwc(img[:, top:top + h, left:left + w], size, size)
        assert fast.shape == plain.shape == (size, size, 3)
        assert (fast.int() - plain.int()).abs().max() <= 1
        flipped = resize_hwc(img[:, top:top + h, left:left + w], size, size, flip=True)
        assert torch.equal(flipped, fast.flip(1))


def test_dali_torch_resize_matches_dali_resize(small_dataset):
    """DALI crops resized by torch (the CPU alternative) vs DALI's own resize (flip via ROI): same crops,
    same flips, same labels; pixels differ only by the resampling filter."""
    loaders = [build_train_loader(_cfg(small_dataset, "dali"), batch_size=4, resolution=48, seed=2) for _ in range(2)]
    loaders[0].make_batches.resize_in_torch = True
    assert not loaders[1].make_batches.resize_in_torch            # the CPU default
    (xa, ya), (xb, yb) = [next(iter(l)) for l in loaders]
    assert torch.equal(ya, yb)
    per_image = (xa - xb).abs().mean(dim=(1, 2, 3))              # normalised units (1 grey level ~ 0.017)
    mirrored = (xa - xb.flip(-1)).abs().mean(dim=(1, 2, 3))
    assert per_image.max() < 0.25, per_image                    # a wrong crop gives ~0.5-1.0
    assert (per_image < 0.5 * mirrored).all(), (per_image, mirrored)     # and the flips agree
