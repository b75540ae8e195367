"""Training-loader throughput: DALI (CPU or GPU) vs fastnas's torchvision backend vs the textbook recipe.

Same JPEG folder, same output for all: 224 random-resized-crop, flip, normalised float32
NCHW batches of 128 (channels-last for the fastnas loaders), int64 labels. Each loader uses
every core (DALI threads / DataLoader workers = cores). Rounds alternate the loaders (order
rotated each round) so drift and other processes hit all alike; each round starts a fresh
epoch iterator and times `batches` batches after `warmup` batches. Reported: per-loader
median images/s and the median of the per-round ratios.

    python bench/bench_data.py [--quick] [--json out.json] [--path DIR]
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


def default_path() -> Path:
    shared = REPO.parent / "shared" / "data" / "imagenette"
    return shared if shared.is_dir() else REPO / "data" / "imagenette-sample"


def textbook_loader(path: Path, batch_size: int, resolution: int, workers: int):
    """The per-sample torchvision recipe: decode -> v2 RandomResizedCrop, flip, ToDtype, Normalize."""
    from torch.utils.data import DataLoader, Dataset
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms import v2

    scan = scan_split(path, "train")
    transform = v2.Compose([v2.RandomResizedCrop(resolution, antialias=True), v2.RandomHorizontalFlip(),
                            v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

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
    ap.add_argument("--path", type=Path, default=default_path())
    ap.add_argument("--quick", action="store_true", help="2 rounds of 4 batches (< 1 minute)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="threads / workers per loader")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--dali-torch-resize", action="store_true",
                    help="also time DALI with torch resizing its crops (CPU alternative)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.batches, args.warmup = 2, 3, 1
    torch.set_num_threads(args.workers)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dali_name = "dali_gpu" if device.type == "cuda" else "dali_cpu"

    def fastnas(backend):
        cfg = DataConfig(path=str(args.path), backend=backend, workers=args.workers)
        return build_train_loader(cfg, batch_size=args.batch_size, resolution=args.resolution, device=device)

    loaders = {"dali": fastnas("dali"), "torchvision": fastnas("torchvision"),
               "torchvision_standard": textbook_loader(args.path, args.batch_size, args.resolution, args.workers)}
    if args.dali_torch_resize:                # the tuning's alternative: DALI decodes the crop, torch resizes
        loaders["dali_resize_in_torch"] = fastnas("dali")
        loaders["dali_resize_in_torch"].make_batches.resize_in_torch = True
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
    ratio = {other: statistics.median(a / b for a, b in zip(per_round["dali"], per_round[other]))
             for other in ("torchvision", "torchvision_standard")}
    result = {
        "dali_img_s": med["dali"], "torchvision_img_s": med["torchvision"],
        "torchvision_standard_img_s": med["torchvision_standard"],
        "ratio_dali_over_torchvision": ratio["torchvision"],
        "ratio_dali_over_torchvision_standard": ratio["torchvision_standard"],
        "ratio_torchvision_over_torchvision_standard": statistics.median(
            a / b for a, b in zip(per_round["torchvision"], per_round["torchvision_standard"])),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"{os.cpu_count()}-core CPU",
        "dali_mode": dali_name, "path": str(args.path), "batch_size": args.batch_size,
        "resolution": args.resolution, "workers": args.workers, "rounds": args.rounds, "batches": args.batches,
        "warmup": args.warmup, "per_round_img_s": per_round,
        "cpu_ms_per_img": {n: statistics.median(v) for n, v in cpu_ms.items()},
        "img_s": med,
        "load_average": os.getloadavg()[0],
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(f"bench_data: {dali_name} {med['dali']:.0f} img/s, torchvision(fastnas) {med['torchvision']:.0f}, "
          f"torchvision(textbook) {med['torchvision_standard']:.0f}; DALI/fastnas-tv {ratio['torchvision']:.2f}x, "
          f"DALI/textbook {ratio['torchvision_standard']:.2f}x; CPU ms/img "
          + ", ".join(f"{n} {v:.2f}" for n, v in result["cpu_ms_per_img"].items())
          + f" ({result['device']}, load {result['load_average']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
