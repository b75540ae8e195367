"""Supernet training: `torchrun --nproc_per_node=N -m fastnas.train --config PATH [section.key=value ...]`.

Read top to bottom, like torchvision's classification reference:

1. `main` reads the config, starts the process group (fastnas.dist) and builds the supernet.
2. `fit` builds data, optimizer (SGD + Nesterov, no weight decay on BN and bias), cosine
   schedule with linear warm-up, AMP and the path sampler, resumes from the newest checkpoint,
   and runs the steps, checkpointing every `train.ckpt_every` steps and at the end.
3. `train_step` trains one optimizer step: every sampled path (one for SPOS, C for FairNAS)
   over every micro-batch, gradients summed over paths and averaged over micro-batches and
   ranks, then one optimizer step.

Single-path correctness: gradients are reset to None before each step, so the weights of
choices that were not run have no gradient, and SGD leaves them, their momentum and their
weight decay untouched. Every rank trains the same path (derived from seed and step).

Gradient sync (`train.grad_sync`): `active_path` (default) all-reduces only the gradients that
exist, coalesced into buckets; `ddp` wraps the model in DistributedDataParallel with
`find_unused_parameters=True`. bench/RESULTS.md has the measurement behind the default.

Determinism: the torch RNG is reseeded from (seed, step, rank) at every step and from
(seed, epoch) at every epoch, so a resumed run replays exactly what an uninterrupted run does.
`fit` is shared with fastnas.retrain (same data, AMP, sync and checkpoints for one fixed net).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fastnas import dist
from fastnas.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, load_latest, save_checkpoint
from fastnas.config import Config, ConfigError, TrainConfig, load_config
from fastnas.cli import cli_entry, parse_args
from fastnas.errors import UserError
from fastnas.precision import resolve_precision
from fastnas.sampling import build_sampler
from fastnas.spaces import build_supernet
from fastnas.telemetry import Telemetry

REFERENCE_BATCH = 1024          # train.lr is the learning rate for this global batch; scaled linearly


class TrainingError(UserError):
    pass


# ----------------------------------------------------------------------------- command line

@cli_entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastnas.train", description="Train the weight-sharing supernet.")
    p.add_argument("--config", help="run config (YAML), e.g. configs/quickstart.yaml")
    p.add_argument("--resume", help="resume from this checkpoint (default: the newest one in train.run_dir)")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.max_steps=100")
    args = parse_args(p, argv)
    cfg = load_config(args.config, args.overrides)
    if cfg.train.deterministic:          # cuBLAS reads it when its first handle is made: before any CUDA work
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    with dist.process_group() as env:
        torch.manual_seed(cfg.train.seed)                   # identical initial weights on every rank
        model = build_supernet(cfg.space)
        sampler = build_sampler(model.space, cfg.train)
        fit(cfg, env, model, sampler.paths, resume=args.resume, extra_state={"sampler": sampler.state_dict()})
    return 0


# ----------------------------------------------------------------------------- building blocks

def build_optimizer(model: nn.Module, cfg: TrainConfig, lr: float, device: torch.device) -> torch.optim.SGD:
    """SGD with Nesterov momentum; no weight decay on BN and bias (1-D) parameters; fused on CUDA.

    With `train.choice_lr_scale` != 1, the searchable choices' parameters (all but a supernet's
    `fixed_parameters()`: stem, reductions, head) learn at lr x that scale: each choice is trained on
    only a fraction of the steps, while the fixed layers are trained on every step.
    """
    fixed = {id(p) for p in model.fixed_parameters()} if hasattr(model, "fixed_parameters") else None
    split = fixed is not None and cfg.choice_lr_scale != 1.0
    groups = []
    for choice in ((False, True) if split else (False,)):
        for decay in (True, False):
            params = [p for p in model.parameters()
                      if (p.ndim > 1) == decay and (not split or (id(p) not in fixed) == choice)]
            groups.append({"params": params, "weight_decay": cfg.weight_decay if decay else 0.0,
                           "lr": lr * (cfg.choice_lr_scale if choice else 1.0)})
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0, **fast)


def build_scheduler(optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from lr/warmup to lr, then cosine to zero at `total_steps` (stepped once per step)."""
    def factor(step: int) -> float:               # step = optimizer steps taken so far
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def step_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (seed, step, rank), well mixed."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class StepResult:
    loss_sum: float          # summed over images (all ranks), averaged over paths
    correct: float
    count: int               # images (all ranks)
    finite: bool


# ----------------------------------------------------------------------------- one optimizer step

def train_step(forward: Callable, params: Sequence[nn.Parameter], optimizer, scaler, micro_batches, paths,
               *, criterion, amp_dtype: torch.dtype, world_size: int, sync_grads: bool) -> StepResult:
    """Train `paths` on `micro_batches`, average gradients across ranks, take one optimizer step.

    Gradients are summed over paths (FairNAS: each choice gets its one gradient) and averaged
    over micro-batches; a non-finite loss skips the step on every rank (the verdict is all-reduced).
    """
    device = micro_batches[0][0].device
    optimizer.zero_grad(set_to_none=True)         # off-path weights keep grad None: no update at all
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype != torch.float32
                else contextlib.nullcontext())
    stats = torch.zeros(3, dtype=torch.float64, device=device)
    for images, labels in micro_batches:
        for arch in paths:
            with autocast:
                logits = forward(images, arch)
            loss = criterion(logits.float(), labels)
            scaled = loss / len(micro_batches)
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            stats[0] += loss.detach().double() * labels.numel() / len(paths)
            stats[1] += (logits.detach().argmax(1) == labels).sum().double() / len(paths)
        stats[2] += labels.numel()
    if sync_grads:
        dist.all_reduce_grads(params, world_size)
    dist.all_reduce_sum(stats)
    finite = bool(torch.isfinite(stats[0]))
    if not finite:
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:                    # as if an overflow was found: back off the scale
            scaler.update(scaler.get_scale() * scaler.get_backoff_factor())
    elif scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return StepResult(float(stats[0]), float(stats[1]), int(stats[2]), finite)


# ----------------------------------------------------------------------------- the training run

def fit(cfg: Config, env: dist.DistEnv, model: nn.Module, paths_for_step: Callable[[int], list],
        *, resume: str | None = None, extra_state: dict | None = None, run_dir: str | None = None) -> dict:
    """Train `model` with the paths `paths_for_step(step)` (a list of archs; [None] for a fixed net).

    Returns {"step", "loss", "checkpoint"}. Resumes from `resume` or the newest checkpoint in the run folder.
    """
    from fastnas.data import build_train_loader, check_num_classes

    tcfg = cfg.train
    run_dir = Path(run_dir or tcfg.run_dir)
    ckpt_path = run_dir / CHECKPOINT_NAME
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if tcfg.compile:
        dist.print0("fastnas: warning: train.compile is ignored: no measured gain for single-path training yet "
                    "(every new path would recompile)", file=sys.stderr)
    if tcfg.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif env.device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # model, precision, layout
    memory_format = torch.channels_last if tcfg.channels_last else torch.contiguous_format
    model = model.to(env.device, memory_format=memory_format)
    amp_dtype = resolve_precision(tcfg.precision, env.device)
    scaler = torch.amp.GradScaler(env.device.type) if amp_dtype == torch.float16 else None

    # data
    check_num_classes(cfg.data, cfg.space.num_classes)
    loader = build_train_loader(cfg.data, batch_size=tcfg.batch_size, resolution=cfg.space.resolution,
                                rank=env.rank, world_size=env.world_size, seed=tcfg.seed, device=env.device,
                                dtype=amp_dtype, channels_last=tcfg.channels_last, reuse_buffers=True)
    steps_per_epoch = len(loader)
    if steps_per_epoch < 1:
        raise ConfigError(f"train.batch_size={tcfg.batch_size} x {env.world_size} ranks is larger than the "
                          f"training set ({cfg.data.path}); lower train.batch_size")
    schedule_steps = tcfg.epochs * steps_per_epoch
    stop_step = min(schedule_steps, tcfg.max_steps) if tcfg.max_steps else schedule_steps

    # optimizer, schedule, loss
    global_batch = tcfg.batch_size * env.world_size
    optimizer = build_optimizer(model, tcfg, tcfg.lr * global_batch / REFERENCE_BATCH, env.device)
    scheduler = build_scheduler(optimizer, tcfg.warmup_steps, schedule_steps)
    criterion = nn.CrossEntropyLoss(label_smoothing=tcfg.label_smoothing)

    # gradient sync across ranks
    dist.broadcast_state(model)
    sync_mode = "active_path" if tcfg.grad_sync == "auto" else tcfg.grad_sync
    forward_module = model
    if env.distributed and sync_mode == "ddp":
        if len(paths_for_step(0)) > 1:
            raise ConfigError("train.grad_sync=ddp cannot accumulate several paths per step "
                              "(train.sampler=fair); use train.grad_sync=active_path")
        forward_module = nn.parallel.DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None,
            find_unused_parameters=True, broadcast_buffers=False)
    forward = (lambda x, arch: forward_module(x)) if paths_for_step(0) == [None] else forward_module
    params = list(model.parameters())

    # resume
    state = load_checkpoint(resume, "cpu") if resume else load_latest(ckpt_path, "cpu")
    step = 0
    if state is not None:
        if state.get("world_size", env.world_size) != env.world_size:
            raise CheckpointError(f"{resume or ckpt_path} was written by {state['world_size']} processes, this run "
                                  f"has {env.world_size}: the data order and schedule would not continue; resume "
                                  f"with the same number of processes or use a new train.run_dir")
        if "config" in state and (changed := resume_differences(state["config"], cfg)):
            raise CheckpointError(f"{resume or ckpt_path} was trained with other settings ({'; '.join(changed)}): "
                                  f"resuming would mix two runs; use the same settings or a new train.run_dir")
        step = restore(state, model, optimizer, scheduler, scaler)
        dist.print0(f"resumed from step {step} ({resume or ckpt_path})")
    if step >= stop_step:
        dist.print0(f"nothing to do: step {step} >= {stop_step} (raise train.epochs or train.max_steps)")
        return {"step": step, "loss": float("nan"), "checkpoint": str(ckpt_path)}

    def checkpoint() -> None:
        if env.is_main:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                "step": step, "epoch": step // steps_per_epoch, "config": cfg.to_dict(),
                "world_size": env.world_size, **(extra_state or {})})

    telemetry = Telemetry(run_dir, total_steps=stop_step, log_every=tcfg.log_every, device=env.device,
                          enabled=env.is_main)
    dist.print0(f"training {type(model).__name__} on {env.world_size} x {env.device.type}: {stop_step} steps "
                f"({steps_per_epoch}/epoch), global batch {global_batch}, {str(amp_dtype).replace('torch.', '')}, "
                f"{'channels_last' if tcfg.channels_last else 'NCHW'}, grad sync "
                f"{sync_mode if env.distributed else 'none'}, run folder {run_dir}")
    model.train()
    bad_steps, last = 0, None
    try:
        while step < stop_step:
            epoch = step // steps_per_epoch
            loader.set_epoch(epoch, start=step - epoch * steps_per_epoch)   # mid-epoch: the rest of its order
            torch.manual_seed(step_seed(tcfg.seed, epoch, 1 << 20))   # e.g. DataLoader worker seeds
            for images, labels in loader:
                torch.manual_seed(step_seed(tcfg.seed, step, env.rank))  # dropout etc.: a function of the step
                last = train_step(forward, params, optimizer, scaler, [(images, labels)], paths_for_step(step),
                                  criterion=criterion, amp_dtype=amp_dtype, world_size=env.world_size,
                                  sync_grads=env.distributed and sync_mode == "active_path")
                step += 1
                scheduler.step()
                if not last.finite:
                    bad_steps += 1
                    dist.print0(f"fastnas: warning: non-finite loss at step {step}; step skipped "
                                f"({bad_steps}/{tcfg.nan_patience})", file=sys.stderr)
                    if bad_steps >= tcfg.nan_patience:
                        raise TrainingError(f"the loss was not finite for {bad_steps} steps in a row (last at "
                                            f"step {step}); lower train.lr or use train.precision=bf16/fp32. "
                                            f"The last good checkpoint is {ckpt_path}")
                else:                                                   # no checkpoint of a skipped step
                    bad_steps = 0
                    telemetry.update(step, epoch, loss_sum=last.loss_sum, correct=last.correct,
                                     count=last.count, lr=scheduler.get_last_lr()[0])
                    if step % tcfg.ckpt_every == 0 or step == stop_step:
                        checkpoint()
                if step >= stop_step:
                    break
    finally:
        telemetry.close()
        loader.close()
    dist.barrier()
    final_loss = last.loss_sum / max(last.count, 1) if last else float("nan")
    dist.print0(f"done: step {step}, loss {final_loss:.4f}, checkpoint {ckpt_path}")
    return {"step": step, "loss": final_loss, "checkpoint": str(ckpt_path)}


# ----------------------------------------------------------------------------- checkpoint state

# Settings that change how a run proceeds, not what it computes: free to change when resuming.
# (The random generators need no restoring either: every step reseeds them from (seed, step).)
NOT_RESULT_KEYS = {"train": {"run_dir", "ckpt_every", "log_every", "max_steps", "nan_patience", "compile"},
                   "data": {"workers", "calib_images", "val_images"}}
RESULT_SECTIONS = ("space", "data", "train")


def resume_differences(saved: dict, cfg: Config) -> list[str]:
    """'section.key old -> new' for every setting the training result depends on that differs
    between a checkpoint's recorded config and this run's."""
    from fastnas.config import config_from_record
    try:
        before = config_from_record(saved).to_dict()
    except ConfigError as e:
        return [f"its recorded config is not readable: {e}"]
    now = cfg.to_dict()
    return [f"{section}.{key} {before[section][key]!r} -> {now[section][key]!r}"
            for section in RESULT_SECTIONS for key in now[section]
            if key not in NOT_RESULT_KEYS.get(section, ()) and before[section].get(key) != now[section][key]]


def restore(state: dict, model, optimizer, scheduler, scaler) -> int:
    """Load a training checkpoint into the live objects; returns its step."""
    try:
        model.load_state_dict(state["model"])
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"the checkpoint does not match this run's model or optimizer "
                              f"({str(e).splitlines()[0][:160]}); use a new train.run_dir") from None
    return int(state["step"])


if __name__ == "__main__":
    sys.exit(main())
