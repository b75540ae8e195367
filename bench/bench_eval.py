"""Candidate evaluation throughput: a naive SPOS-style evaluator vs fastnas exact and approximate modes.

    python bench/bench_eval.py --json bench_eval.json [--quick] [--checkpoint PATH] [--eval-batch N]

Candidates: --generations of a search-like workload (random first generation, then children by
crossover and mutation of the previous one), evaluated generation by generation by each variant.
Same supernet checkpoint, same candidates, same calibration/validation images for every variant:
  (i)   naive: per candidate, a DataLoader re-decodes the calibration and validation JPEGs, the
        path's BNs are reset and recalibrated with the default EMA (momentum 0.1), fp32 NCHW;
  (ii)  fastnas exact (`Evaluator`, mode='exact': trie walk, cached statistics, AMP, channels_last);
  (iii) fastnas approx (mode='approx'; the one-off gathering of per-choice statistics is timed too).
`max_abs_top1_diff_exact`: largest |top-1| difference between (ii) in fp32 and (i) with cumulative
(momentum=None) statistics on the same images, same calibration batches. `kendall_tau_approx`:
Kendall tau-b of (iii)'s top-1 against (ii)'s over --tau-archs random architectures.
The eval sets use the torchvision decoder, which is the naive loader's per-file transform.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastnas.calibrate import reset_bn                                       # noqa: E402
from fastnas.checkpoint import load_supernet                                 # noqa: E402
from fastnas.config import load_config                                       # noqa: E402
from fastnas.data import build_eval_set, to_model_input                      # noqa: E402
from fastnas.data.torchvision import read_rgb                                # noqa: E402
from fastnas.cli import cli_entry                                # noqa: E402
from fastnas.errors import UserError                                         # noqa: E402
from fastnas.evaluate import Evaluator                                       # noqa: E402
from fastnas.fitness import Result                                          # noqa: E402


# ----------------------------------------------------------------------------- (i) the naive evaluator

class JpegFiles(Dataset):
    """Decode + validation transform per file, every time it is read (what a plain SPOS script does)."""

    def __init__(self, files: list[str], labels: list[int], resolution: int):
        self.files, self.labels, self.res = files, labels, resolution

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from torchvision.transforms.v2 import functional as F
        img = F.resize(read_rgb(self.files[i]), [round(self.res * 256 / 224)], antialias=True)
        img = F.center_crop(img, [self.res, self.res]).permute(1, 2, 0)
        return to_model_input(img[None], torch.float32)[0].contiguous(), self.labels[i]


@torch.no_grad()
def naive_evaluate(supernet, arch, calib: Dataset, val: Dataset, batch: int, workers: int,
                   momentum: float | None) -> Result:
    """SPOS-style: reset the path's BNs, recalibrate in train mode over a fresh DataLoader, then score."""
    for m in supernet.path_modules(arch):
        reset_bn(m)
        for bn in (x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)):
            bn.momentum = momentum
    device = next(supernet.parameters()).device
    supernet.train()
    for x, _ in DataLoader(calib, batch_size=batch, num_workers=workers):
        supernet(x.to(device), arch)
    supernet.eval()
    top1 = top5 = loss = n = 0
    for x, y in DataLoader(val, batch_size=batch, num_workers=workers):
        x, y = x.to(device), y.to(device)
        logits = supernet(x, arch).float()
        hit = logits.topk(min(5, logits.shape[1]), 1).indices == y[:, None]
        top1 += hit[:, 0].sum().item()
        top5 += hit.any(1).sum().item()
        loss += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        n += len(y)
    return Result(100 * top1 / n, 100 * top5 / n, loss / n)


# ----------------------------------------------------------------------------- benchmark

def search_like_generations(space, rng, generations: int, population: int) -> list[list[tuple]]:
    """What a search evaluates: a random first generation, then children of the previous one
    (uniform crossover half the time, then mutation with p=0.1 per layer); all distinct."""
    seen, gens = set(), []
    for g in range(generations):
        gen = []
        while len(gen) < population:
            if g == 0:
                a = space.sample(rng)
            else:
                parents = gens[-1]
                a = parents[rng.integers(len(parents))]
                if rng.random() < 0.5:
                    a = space.crossover(a, parents[rng.integers(len(parents))], rng)
                a = space.mutate(a, rng, 0.1)
            if a not in seen:
                seen.add(a)
                gen.append(a)
        gens.append(gen)
    return gens


def device_label(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


@cli_entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "configs" / "quickstart_imagenette.yaml"))
    p.add_argument("--checkpoint", help="supernet checkpoint (default: the config's eval.checkpoint)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--quick", action="store_true", help="few candidates and images: a smoke run")
    p.add_argument("--eval-batch", type=int, help="evaluation (and calibration) batch; default: the config's")
    p.add_argument("--generations", type=int, help="search-like generations timed (default 3, quick 2)")
    p.add_argument("--population", type=int, help="candidates per generation (default 8, quick 3)")
    p.add_argument("--tau-archs", type=int, help="random architectures for Kendall tau (default 100, quick 12)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier on a shared machine)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = load_config(args.config, ["data.backend=torchvision"])
    ckpt = Path(args.checkpoint or REPO / cfg.eval.checkpoint)
    if not ckpt.is_file():
        raise UserError(f"no supernet checkpoint at {ckpt}: train one first "
                        f"(torchrun -m fastnas.train --config {args.config}) or pass --checkpoint")
    device = torch.device(args.device)
    supernet, ckpt_cfg = load_supernet(ckpt, device)
    space, res = supernet.space, ckpt_cfg.space.resolution
    batch = args.eval_batch or cfg.eval.eval_batch
    n_calib, n_val = (50, 25) if args.quick else (cfg.data.calib_images, cfg.data.val_images)
    n_tau = args.tau_archs or (12 if args.quick else 100)

    calib = build_eval_set(cfg.data, split="calib", num_images=n_calib, resolution=res, device=device)
    val = build_eval_set(cfg.data, split="val", num_images=n_val, resolution=res, device=device)
    rng = np.random.default_rng(0)
    generations = search_like_generations(space, rng, args.generations or (2 if args.quick else 3),
                                          args.population or (3 if args.quick else 8))
    timed_archs = [a for gen in generations for a in gen]
    n_cand = len(timed_archs)
    archs = []                                                  # independent random architectures for tau
    while len(archs) < n_tau:
        a = space.sample(rng)
        if a not in archs and a not in timed_archs:
            archs.append(a)
    calib_jpegs = JpegFiles(calib.files, calib.labels.tolist(), res)
    val_jpegs = JpegFiles(val.files, val.labels.tolist(), res)
    naive_net = copy.deepcopy(supernet)
    workers = cfg.data.workers

    def make(mode, precision, channels_last=True):
        return Evaluator(supernet, calib, val, batch, mode=mode, precision=precision, cache_mb=cfg.eval.cache_mb,
                         channels_last=channels_last)

    # Warm-up (one-time kernel set-up of each precision), then the timed runs side by side.
    make("exact", "auto").evaluate(archs[-1:])
    naive_evaluate(naive_net, archs[-1], calib_jpegs, val_jpegs, batch, workers, 0.1)
    naive, t_naive = timed(lambda: [naive_evaluate(naive_net, a, calib_jpegs, val_jpegs, batch, workers, 0.1)
                                    for a in timed_archs])
    exact_ev, approx_ev = make("exact", "auto"), make("approx", "auto")
    exact, t_exact = timed(lambda: [r for gen in generations for r in exact_ev.evaluate(gen)])
    approx, t_approx = timed(lambda: [r for gen in generations for r in approx_ev.evaluate(gen)])

    # Exactness at equal precision and layout: fastnas exact in fp32 NCHW vs naive (fp32 NCHW) with
    # cumulative statistics. (channels_last alone reorders float sums: ~1e-6 logit differences that can
    # flip a near-tied image on a barely trained supernet.)
    exact_fp32 = make("exact", "fp32", channels_last=False).evaluate(timed_archs)
    naive_cum = [naive_evaluate(naive_net, a, calib_jpegs, val_jpegs, batch, workers, None) for a in timed_archs]
    diff = max(abs(a.top1 - b.top1) for a, b in zip(exact_fp32, naive_cum))
    max_loss_diff = max(abs(a.loss - b.loss) for a, b in zip(exact_fp32, naive_cum))

    # Ranking fidelity of approx mode over many architectures.
    exact_all, t_random = timed(lambda: make("exact", "auto").evaluate(archs))
    approx_all = approx_ev.evaluate(archs)
    tau = kendalltau([r.top1 for r in exact_all], [r.top1 for r in approx_all]).statistic
    tau_loss = kendalltau([r.loss for r in exact_all], [r.loss for r in approx_all]).statistic

    out = {
        "naive_cand_s": n_cand / t_naive,
        "exact_cand_s": n_cand / t_exact,
        "approx_cand_s": n_cand / t_approx,
        "ratio_exact_over_naive": t_naive / t_exact,
        "max_abs_top1_diff_exact": diff,
        "kendall_tau_approx": float(tau),
        "device": f"{device_label(device)} ({torch.get_num_threads()} threads, {Evaluator(supernet, calib, val, 1).dtype} AMP)",
    }
    print(f"bench_eval: {n_cand} candidates ({len(generations)} generations), {len(calib)} calib + {len(val)} val images at {res}px, batch {batch}: "
          f"naive {out['naive_cand_s']:.3f} cand/s, exact {out['exact_cand_s']:.3f} cand/s "
          f"({out['ratio_exact_over_naive']:.1f}x; on {len(archs)} unrelated random archs in one call "
          f"{len(archs) / t_random:.3f} cand/s = {len(archs) / t_random / out['naive_cand_s']:.1f}x), approx {out['approx_cand_s']:.3f} cand/s; "
          f"max |top1 diff| exact-fp32 vs naive-cumulative {diff:.3g} (max |loss diff| {max_loss_diff:.2g}); "
          f"Kendall tau approx vs exact over {len(archs)} archs: top1 {tau:.3f}, loss {tau_loss:.3f}; "
          f"mean top1 exact {np.mean([r.top1 for r in exact_all]):.1f}, naive-EMA "
          f"{np.mean([r.top1 for r in naive]):.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
