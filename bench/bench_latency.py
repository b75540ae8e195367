"""How well does a latency table predict whole networks? Mean absolute % error over random architectures.

For each resolution and each table-building method (in_context, isolated), build a table with
fastnas.latency's BlockMeter and measure N random standalone subnets end to end with the same
timer, batch size, threads and precision, and compare. Table rounds and whole-network forwards are
interleaved, round by round, so that load from other processes falls on both alike.

    python bench/bench_latency.py --config configs/quickstart_imagenette.yaml --resolutions 128 224 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastnas.config import load_config  # noqa: E402
from fastnas.latency import (BlockMeter, Timer, autocast, device_name, prepare, random_input,  # noqa: E402
                             resolve_device)
from fastnas.precision import resolve_precision  # noqa: E402
from fastnas.spaces.mbconv import MBConvSpace  # noqa: E402
from fastnas.spaces.mbconv_net import SubNet  # noqa: E402


def run(space_cfg, *, device, batch_size, precision, methods, n_archs, warmup, repeats, seed):
    space = MBConvSpace(space_cfg)
    dtype = resolve_precision(precision, device)
    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(n_archs)]
    meters = {m: BlockMeter(space_cfg, device=device, batch_size=batch_size, precision=precision, method=m,
                            seed=seed) for m in methods}
    torch.manual_seed(seed)
    nets = [prepare(SubNet(space_cfg, a), device) for a in archs]
    x = random_input((batch_size, 3, space_cfg.resolution, space_cfg.resolution), device)
    timer = Timer(device)
    marks: list[list] = [[] for _ in nets]
    t0 = time.perf_counter()
    # Each round: one round of every table method, then one timed forward of every network, so a
    # burst of load from other processes falls on tables and networks alike.
    with torch.inference_mode():
        for r in range(warmup + repeats):
            record = r >= warmup
            for meter in meters.values():
                meter.round(record)
            for net, m in zip(nets, marks):
                start = timer.mark()
                with autocast(device, dtype):
                    net(x)
                if record:
                    m.append((start, timer.mark()))
            timer.sync()
    bench_s = time.perf_counter() - t0
    tables = {m: meter.table() for m, meter in meters.items()}
    times = [sorted(timer.elapsed_ms(a, b) for a, b in m) for m in marks]
    measured_all = [statistics.median(t) for t in times]
    # On a shared machine a whole forward is often pre-empted while most single-block samples are not,
    # so the whole network's median drifts above a sum of block medians; the 10th percentile is the
    # network's latency when it has the cores, which is what a table predicts.
    p10_all = [t[len(t) // 10] for t in times]
    rows = []
    for arch, measured, p10 in zip(archs, measured_all, p10_all):
        row = {"arch": space.to_string(arch), "macs": space.cost(arch).macs, "measured_ms": measured,
               "measured_p10_ms": p10}
        for m, table in tables.items():
            row[f"{m}_ms"] = table.predict(arch)
            row[f"{m}_err_pct"] = 100.0 * (row[f"{m}_ms"] - measured) / measured
            row[f"{m}_err_vs_p10_pct"] = 100.0 * (row[f"{m}_ms"] - p10) / p10
        rows.append(row)
    summary = {m: {"mean_abs_err_pct": float(np.mean([abs(r[f"{m}_err_pct"]) for r in rows])),
                   "max_abs_err_pct": float(np.max([abs(r[f"{m}_err_pct"]) for r in rows])),
                   "mean_signed_err_pct": float(np.mean([r[f"{m}_err_pct"] for r in rows])),
                   "mean_abs_err_vs_p10_pct": float(np.mean([abs(r[f"{m}_err_vs_p10_pct"]) for r in rows]))}
               for m in methods}
    return {"resolution": space_cfg.resolution, "seconds": bench_s,
            "measured_ms_range": [min(r["measured_ms"] for r in rows), max(r["measured_ms"] for r in rows)],
            "summary": summary, "archs": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/quickstart_imagenette.yaml")
    p.add_argument("--resolutions", type=int, nargs="+", default=None, help="default: the config's")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--methods", nargs="+", default=["in_context", "isolated"])
    p.add_argument("--archs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="5 architectures, 10 repeats")
    p.add_argument("--json", help="write results here")
    args = p.parse_args(argv)
    if args.quick:
        args.archs, args.repeats, args.warmup = 5, 10, 3
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    base = load_config(args.config).space
    load_before = os.getloadavg()[0]
    results = []
    for res in args.resolutions or [base.resolution]:
        space_cfg = load_config(args.config, [f"space.resolution={res}"]).space
        results.append(run(space_cfg, device=device, batch_size=args.batch_size, precision=args.precision,
                           methods=args.methods, n_archs=args.archs, warmup=args.warmup,
                           repeats=args.repeats, seed=args.seed))
    out = {"bench": "latency_table", "device": device.type, "device_name": device_name(device),
           "threads": torch.get_num_threads(), "batch_size": args.batch_size,
           "precision": str(resolve_precision(args.precision, device)).replace("torch.", ""),
           "config": args.config, "archs_per_resolution": args.archs, "repeats": args.repeats,
           # other processes on a shared machine distort timings: record how busy it was
           "load_avg_1min": {"before": load_before, "after": os.getloadavg()[0]}, "results": results}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
    parts = []
    for r in results:
        errs = ", ".join(f"{m} {s['mean_abs_err_pct']:.1f}% (max {s['max_abs_err_pct']:.1f}%, "
                         f"vs p10 {s['mean_abs_err_vs_p10_pct']:.1f}%)"
                         for m, s in r["summary"].items())
        parts.append(f"{r['resolution']}px [{r['measured_ms_range'][0]:.2f}-{r['measured_ms_range'][1]:.2f} ms]: {errs}")
    print(f"latency table mean abs error over {args.archs} archs ({device.type}, batch {args.batch_size}, "
          f"{out['precision']}, {out['threads']} threads, load {load_before:.1f}): " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
