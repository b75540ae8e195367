"""Gradient sync for single-path training: DDP(find_unused_parameters=True) vs active-path all_reduce.

    python bench/bench_grad_sync.py --json bench/grad_sync.json [--quick]

Launches 2 gloo ranks with torchrun (CPU) or nccl (GPU). Each rank trains the default space's
supernet with SPOS paths (the same on all ranks): variant `ddp` wraps it in
DistributedDataParallel(find_unused_parameters=True, broadcast_buffers=False); variant
`active_path` runs the plain module and averages only the existing gradients with
`fastnas.dist.all_reduce_grads` (coalesced buckets). Rounds alternate the variants so that
machine noise hits both; reported: median ms per full training step and the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def worker(args) -> None:
    from fastnas import dist
    from fastnas.config import load_config
    from fastnas.sampling import UniformSampler
    from fastnas.spaces.mbconv import MBConvSpace
    from fastnas.spaces.mbconv_net import SuperNet
    from fastnas.train import build_optimizer, train_step

    env = dist.init_distributed()
    cfg = load_config(None, [f"space.resolution={args.res}", "space.num_classes=10"])
    space = MBConvSpace(cfg.space)
    sampler = UniformSampler(space, seed=0)
    criterion = torch.nn.CrossEntropyLoss()
    nets = {}
    for name in ("ddp", "active_path"):
        torch.manual_seed(0)
        net = SuperNet(space).to(env.device, memory_format=torch.channels_last).train()
        fwd = torch.nn.parallel.DistributedDataParallel(net, find_unused_parameters=True, broadcast_buffers=False,
                                                        device_ids=[env.device.index] if env.device.type == "cuda" else None) \
            if name == "ddp" else net
        nets[name] = (net, fwd, build_optimizer(net, cfg.train, 0.01, env.device), list(net.parameters()))
    g = torch.Generator().manual_seed(env.rank)
    images = torch.randn(args.batch, 3, args.res, args.res, generator=g).to(env.device, memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (args.batch,), generator=g).to(env.device)
    times = {k: [] for k in nets}
    step = 0
    for rnd in range(args.rounds):
        for name, (net, fwd, opt, params) in nets.items():
            for _ in range(args.steps):
                dist.barrier()
                t0 = time.perf_counter()
                train_step(fwd, params, opt, None, [(images, labels)], sampler.paths(step), criterion=criterion,
                           amp_dtype=torch.bfloat16, world_size=env.world_size, sync_grads=name == "active_path")
                if env.device.type == "cuda":
                    torch.cuda.synchronize()
                if rnd > 0:                                # round 0 is warm-up
                    times[name].append(time.perf_counter() - t0)
                step += 1
    # Same paths and data on both copies would give equal weights; here paths differ per step, so
    # correctness is covered by tests/test_train.py, and this file measures time only.
    if env.is_main:
        Path(args.out).write_text(json.dumps({k: statistics.median(v) * 1e3 for k, v in times.items()}))
    dist.cleanup()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--res", type=int, default=64)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.quick:
        args.rounds, args.steps = 2, 2
    out = Path(args.json or "/tmp/bench_grad_sync.json").with_suffix(".raw.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__, "--worker",
           f"--out={out}", f"--batch={args.batch}", f"--res={args.res}", f"--rounds={args.rounds}", f"--steps={args.steps}"]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    ms = json.loads(out.read_text())
    out.unlink()
    result = {"step_ms": ms, "ratio_ddp_over_active_path": ms["ddp"] / ms["active_path"], "world_size": 2,
              "backend": "nccl" if torch.cuda.is_available() else "gloo", "batch_per_rank": args.batch,
              "resolution": args.res}
    print(f"grad sync (2 ranks, {result['backend']}): ddp {ms['ddp']:.1f} ms/step, active_path "
          f"{ms['active_path']:.1f} ms/step, ddp/active_path {result['ratio_ddp_over_active_path']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
