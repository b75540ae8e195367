"""Images/s of one supernet training step: precision x memory layout, and the standalone subnet.

    python bench/bench_train.py --json bench/train.json [--quick]

One fixed architecture (seeded sample of the default space, or `--arch`), synthetic input, batch 64 at 224 px,
SGD step included (fastnas.train.train_step, the code training runs). Variants side by side in
one run: fp32 NCHW, fp32 channels_last, autocast NCHW, autocast channels_last (bf16 on CPU and
Ampere+, fp16 on older GPUs), and `SuperNet.subnet(arch)` in the best variant; each after warm-up,
median step time. Targets: best >= 3.0x fp32 NCHW; supernet/subnet >= 0.9 (choosing the path is free).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastnas.config import load_config                                   # noqa: E402
from fastnas.spaces.mbconv import MBConvSpace                                    # noqa: E402
from fastnas.spaces.mbconv_net import SuperNet                                    # noqa: E402
from fastnas.precision import resolve_precision  # noqa: E402
from fastnas.train import build_optimizer, train_step  # noqa: E402


def time_steps(model, forward, arch, *, amp_dtype, channels_last, batch, res, warmup, iters, device) -> float:
    """Median seconds per training step (forward, backward, SGD) on a fixed synthetic batch."""
    cfg = load_config(None).train
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt).train()
    images = torch.randn(batch, 3, res, res, device=device).to(memory_format=fmt)
    labels = torch.randint(0, 1000, (batch,), device=device)
    optimizer = build_optimizer(model, cfg, 0.01, device)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    params = list(model.parameters())
    times = []
    for i in range(warmup + iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_step(forward, params, optimizer, None, [(images, labels)], [arch], criterion=criterion,
                   amp_dtype=amp_dtype, world_size=1, sync_grads=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write the results here")
    p.add_argument("--quick", action="store_true", help="fewer steps (batch and resolution unchanged)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--arch", help="architecture string or uniform:CHOICE (default: seeded random of the default space)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16"], help="autocast dtype")
    args = p.parse_args(argv)
    if args.quick:
        args.warmup, args.iters = 1, 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = resolve_precision(args.precision, device)
    space = MBConvSpace(load_config(None, [f"space.resolution={args.res}"]).space)
    arch = space.from_string(args.arch) if args.arch else space.sample(np.random.default_rng(0))
    torch.manual_seed(0)
    supernet = SuperNet(space)
    run = dict(batch=args.batch, res=args.res, warmup=args.warmup, iters=args.iters, device=device)

    amp_name = f"autocast_{str(amp).replace('torch.', '')}"
    variants = {"fp32_nchw": (torch.float32, False), "fp32_channels_last": (torch.float32, True),
                f"{amp_name}_nchw": (amp, False), f"{amp_name}_channels_last": (amp, True)}
    seconds = {}
    for name, (dtype, cl) in variants.items():
        seconds[name] = time_steps(supernet, supernet, arch, amp_dtype=dtype, channels_last=cl, **run)
        print(f"  {name:32s} {args.batch / seconds[name]:8.1f} img/s", flush=True)
    best = min(variants, key=seconds.get)
    subnet = supernet.subnet(arch)
    dtype, cl = variants[best]
    seconds[f"subnet_{best}"] = time_steps(subnet, lambda x, _: subnet(x), arch, amp_dtype=dtype, channels_last=cl, **run)
    print(f"  {'subnet_' + best:32s} {args.batch / seconds['subnet_' + best]:8.1f} img/s", flush=True)

    img_s = {k: args.batch / v for k, v in seconds.items()}
    result = {"variants": img_s, "best": best,
              "ratio_best_over_fp32_nchw": img_s[best] / img_s["fp32_nchw"],
              "ratio_supernet_over_subnet": img_s[best] / img_s[f"subnet_{best}"],
              "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
              "batch": args.batch, "resolution": args.res, "arch": space.to_string(arch),
              "warmup": args.warmup, "iters": args.iters}
    print(f"train step: best {best} {img_s[best]:.1f} img/s = {result['ratio_best_over_fp32_nchw']:.2f}x fp32 NCHW "
          f"(target >= 3.0); supernet/subnet {result['ratio_supernet_over_subnet']:.3f} (target >= 0.9)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
