"""Training-loader throughput: fastnas's backends (DALI CPU or GPU, torchvision, memory) vs the textbook recipe.

Same JPEG folder, same output for all, per `--dataset`:
  imagenette: 224 random-resized-crop, flip, ImageNet-normalised, batches of 128;
  cifar:      32x32 CIFAR-10, 4-px pad-crop, flip, CIFAR-normalised, batches of 256; also
              the memory backend (decoded once; its decode time is reported as build_s).
Float32 NCHW batches (channels-last for the fastnas loaders), int64 labels. Each loader uses
every core (DALI threads / DataLoader workers = cores). Rounds alternate the loaders (order
rotated each round) so drift and other processes hit all alike; each round starts a fresh
epoch iterator and times `batches` batches after `warmup` batches. Reported: per-loader
median images/s and, for each pair, the median of the per-round ratios.

    python bench/bench_data.py [--dataset cifar] [--quick] [--json out.json] [--path DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastnas.config import DataConfig  # noqa: E402
from fastnas.data import build_train_loader, scan_split  # noqa: E402
from fastnas.data.loader import NORMALIZATION  # noqa: E402


# Per dataset: path under ../shared/data, fallback, resolution, batch size, timed batches, fastnas data settings.
DATASETS = {
    "imagenette": dict(shared="imagenette", fallback=REPO / "data" / "imagenette-sample", resolution=224,
                       batch_size=128, batches=12, augment="random_resized_crop", normalization="imagenet",
                       backends=["dali", "torchvision"]),
    "cifar": dict(shared="cifar10", fallback=None, resolution=32, batch_size=256, batches=40, augment="pad_crop",
                  normalization="cifar", backends=["memory", "dali", "torchvision"]),
}


def default_path(dataset: str) -> Path:
    spec = DATASETS[dataset]
    shared = REPO.parent / "shared" / "data" / spec["shared"]
    if shared.is_dir() or spec["fallback"] is None:
        return shared
    return spec["fallback"]


def textbook_loader(path: Path, batch_size: int, resolution: int, workers: int, normalization: str, augment: str):
    """The per-sample torchvision recipe: decode -> v2 RandomResizedCrop (or CIFAR's RandomCrop with
    padding 4), flip, ToDtype, Normalize."""
    from torch.utils.data import DataLoader, Dataset
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms import v2

    scan = scan_split(path, "train")
    mean, std = ([m / 255 for m in v] for v in NORMALIZATION[normalization])
    crop = v2.RandomCrop(resolution, padding=4) if augment == "pad_crop" else \
        v2.RandomResizedCrop(resolution, antialias=True)
    transform = v2.Compose([crop, v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(mean, std)])

    class Folder(Dataset):
        def __len__(self):
            return len(scan.files)

        def __getitem__(self, i):
            return transform(decode_image(read_file(scan.files[i]), mode=ImageReadMode.RGB)), scan.labels[i]

    return DataLoader(Folder(), batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                      persistent_workers=False)


def cpu_seconds() -> float:
    """CPU time of this process and its live children (DataLoader workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(pid) == me or int(fields[1]) == me:          # fields[1] = parent pid
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def time_loader(loader, warmup: int, batches: int, epoch: int) -> tuple[float, float]:
    """(images/s, CPU ms per image) over `batches` batches after `warmup`, fresh iterator (a new epoch)."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    it = iter(loader)
    for _ in range(warmup):
        x, y = next(it)
    cpu, start = cpu_seconds(), time.perf_counter()
    n = 0
    for _ in range(batches):
        x, y = next(it)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        n += x.shape[0]
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    del it
    return n / elapsed, 1000 * cpu / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=list(DATASETS), default="imagenette")
    ap.add_argument("--path", type=Path, help="default: ../shared/data/<dataset> (imagenette: else the sample)")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 3 batches (< 1 minute)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, help="timed batches per round (default: 12 imagenette, 40 cifar)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, help="default: 128 imagenette, 256 cifar")
    ap.add_argument("--resolution", type=int, help="default: 224 imagenette, 32 cifar")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="threads / workers per loader")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--dali-torch-resize", action="store_true",
                    help="also time DALI with torch resizing its crops (CPU alternative)")
    args = ap.parse_args(argv)
    spec = DATASETS[args.dataset]
    args.path = args.path or default_path(args.dataset)
    args.batches = args.batches or spec["batches"]
    args.batch_size = args.batch_size or spec["batch_size"]
    args.resolution = args.resolution or spec["resolution"]
    if args.quick:
        args.rounds, args.batches, args.warmup = 2, 3, 1
    torch.set_num_threads(args.workers)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dali_name = "dali_gpu" if device.type == "cuda" else "dali_cpu"

    def fastnas(backend):
        cfg = DataConfig(path=str(args.path), backend=backend, workers=args.workers, augment=spec["augment"],
                         normalization=spec["normalization"])
        return build_train_loader(cfg, batch_size=args.batch_size, resolution=args.resolution, device=device,
                                  reuse_buffers=True)

    loaders, build_s = {}, {}
    builders = {b: (lambda b=b: fastnas(b)) for b in spec["backends"]}
    builders["torchvision_standard"] = lambda: textbook_loader(args.path, args.batch_size, args.resolution,
                                                               args.workers, spec["normalization"], spec["augment"])
    if args.dali_torch_resize:                # the tuning's alternative: DALI decodes the crop, torch resizes
        builders["dali_resize_in_torch"] = lambda: fastnas("dali")
    for name, build in builders.items():
        start = time.perf_counter()
        loaders[name] = build()
        build_s[name] = time.perf_counter() - start
    if args.dali_torch_resize:
        loaders["dali_resize_in_torch"].make_batches.resize_in_torch = True
    # Each round times one epoch's first batches: a small dataset (the bundled sample, when ../shared is
    # absent, as on a lent GPU machine) may hold fewer than warm-up + batches.
    per_epoch = min(len(loader) for loader in loaders.values())
    if args.warmup + args.batches > per_epoch:
        args.batches = max(1, per_epoch - args.warmup)
        print(f"bench_data: {args.path} holds {per_epoch} batches of {args.batch_size} an epoch: timing "
              f"{args.batches} after {args.warmup} warm-up", file=sys.stderr)
    names = list(loaders)
    per_round: dict[str, list[float]] = {n: [] for n in names}
    cpu_ms: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            img_s, ms = time_loader(loaders[name], args.warmup, args.batches, epoch=r)
            per_round[name].append(img_s)
            cpu_ms[name].append(ms)
        if device.type == "cuda":
            torch.cuda.synchronize()
    med = {n: statistics.median(v) for n, v in per_round.items()}
    ratios = {f"ratio_{a}_over_{b}": statistics.median(x / y for x, y in zip(per_round[a], per_round[b]))
              for i, a in enumerate(names) for b in names[i + 1:]}
    result = {
        **{f"{n}_img_s": v for n, v in med.items()}, **ratios,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"{os.cpu_count()}-core CPU",
        "dataset": args.dataset, "dali_mode": dali_name, "path": str(args.path), "batch_size": args.batch_size,
        "resolution": args.resolution, "workers": args.workers, "rounds": args.rounds, "batches": args.batches,
        "warmup": args.warmup, "per_round_img_s": per_round,
        "cpu_ms_per_img": {n: statistics.median(v) for n, v in cpu_ms.items()},
        "build_s": build_s, "img_s": med,
        "load_average": os.getloadavg()[0],
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    label = {"dali": dali_name, "torchvision": "torchvision(fastnas)", "torchvision_standard": "torchvision(textbook)"}
    print(f"bench_data {args.dataset}: " + ", ".join(f"{label.get(n, n)} {med[n]:.0f}" for n in names) + " img/s; "
          + ", ".join(f"{k[6:].replace('_over_', '/')} {v:.2f}x" for k, v in ratios.items())
          + "; CPU ms/img " + ", ".join(f"{n} {v:.3f}" for n, v in result["cpu_ms_per_img"].items())
          + "; build s " + ", ".join(f"{n} {v:.1f}" for n, v in build_s.items())
          + f" ({result['device']}, load {result['load_average']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
