"""Supernet training: samplers, single-path gradient correctness, 2-process sync equivalence (real torchrun)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fastnas.config import ConfigError, load_config
from fastnas.errors import UserError
from fastnas.sampling import FairSampler, UniformSampler, build_sampler
from fastnas.spaces.mbconv import MBConvSpace
from fastnas.spaces.mbconv_net import SuperNet

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def tiny(run_dir, *extra) -> list[str]:
    """A small space at 32 px on the bundled real JPEGs: a few seconds per run on 2 CPU cores."""
    return [f"train.run_dir={run_dir}", "space.resolution=32", "space.channels=[16,24]", "space.depths=[2,2]",
            "space.strides=[2,2]", "space.head_channels=64", "space.num_classes=10", "space.dropout=0.0",
            "data.path=data/imagenette-sample", "data.workers=0", "train.batch_size=8", "train.lr=4.0",
            "train.warmup_steps=2", "train.log_every=1", "train.epochs=2", *extra]


def sub_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


# ----------------------------------------------------------------------------- samplers

def test_uniform_paths_depend_only_on_seed_and_step():
    space = MBConvSpace(load_config(None).space)
    a, b = UniformSampler(space, seed=3), UniformSampler(space, seed=3)
    assert a.paths(17) == b.paths(17)
    assert a.paths(17) != a.paths(18)
    assert UniformSampler(space, seed=4).paths(17) != a.paths(17)


def test_fair_sampler_trains_every_choice_of_every_layer_exactly_once():
    space = MBConvSpace(load_config(None).space)
    paths = FairSampler(space, seed=0).paths(5)
    assert len(paths) == space.max_choices
    for i, n in enumerate(space.num_choices):
        column = [p[i] for p in paths]
        assert set(column) == set(range(n))
        if n == space.max_choices:
            assert sorted(column) == list(range(n))          # exactly once each
    assert paths == FairSampler(space, seed=0).paths(5)


def test_excluded_choices_are_never_trained_and_the_rest_are():
    """NB201 with exclude_choices=[none]: uniform and fair paths never contain `none`; every other op is trained."""
    cfg = load_config(None, ["space.type=nb201", "space.resolution=32", "space.num_classes=10",
                             "train.exclude_choices=[none]"])
    from fastnas.spaces import build_space
    space = build_space(cfg.space)
    none = space.choices[0].index("none")
    for sampler in (build_sampler(space, cfg.train),
                    build_sampler(space, load_config(None, ["space.type=nb201", "train.sampler=fair",
                                                            "train.exclude_choices=[none]"]).train)):
        paths = [p for step in range(40) for p in sampler.paths(step)]
        assert all(none not in p for p in paths)
        for i in range(len(space)):
            assert {p[i] for p in paths} == set(range(len(space.choices[i]))) - {none}
    plain = UniformSampler(space, seed=0)                     # nothing excluded: the space's own sampling stream
    assert plain.paths(3) == [space.sample(np.random.default_rng([0, 3]))]


def test_macs_range_sampling_stays_in_range_and_rejects_impossible_ranges():
    space = MBConvSpace(load_config(None).space)
    costs = [space.cost(space.sample(np.random.default_rng(i))).macs for i in range(50)]
    low, high = np.percentile(costs, [30, 60])
    sampler = build_sampler(space, load_config(None, [f"train.macs_range=[{low},{high}]"]).train)
    for step in range(30):
        (arch,) = sampler.paths(step)
        assert low <= space.cost(arch).macs <= high
    with pytest.raises(ConfigError):
        build_sampler(space, load_config(None, ["train.macs_range=[1,2]"]).train)
    with pytest.raises(ConfigError):
        build_sampler(space, load_config(None, ["train.macs_range=[1,1e12]", "train.sampler=fair"]).train)


# ----------------------------------------------------------------------------- gradient correctness

def _loader(cfg, rank=0, world_size=1, dtype=torch.float32):
    from fastnas.data import build_train_loader
    return build_train_loader(cfg.data, batch_size=cfg.train.batch_size, resolution=cfg.space.resolution,
                              rank=rank, world_size=world_size, seed=cfg.train.seed, dtype=dtype)


def test_off_path_weights_momentum_and_decay_untouched(tmp_path):
    """(d) After a step on path B, every weight and momentum buffer of choices only on path A is bitwise unchanged."""
    from fastnas.train import build_optimizer, train_step
    cfg = load_config(REPO / "configs/quickstart_imagenette.yaml", tiny(tmp_path))
    torch.manual_seed(0)
    model = SuperNet(MBConvSpace(cfg.space)).to(memory_format=torch.channels_last).train()
    space = model.space
    opt = build_optimizer(model, cfg.train, lr=0.5, device=torch.device("cpu"))
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    batches = iter(_loader(cfg))
    path_a = tuple(0 for _ in space.layers)
    path_b = tuple(1 for _ in space.layers)
    for path in (path_a, path_b):           # both paths get momentum buffers
        train_step(model, list(model.parameters()), opt, None, [next(batches)], [path], criterion=crit,
                   amp_dtype=torch.bfloat16, world_size=1, sync_grads=False)
    off = [p for i in range(len(space)) for p in model.layers[i][0].parameters()]
    on = [p for i in range(len(space)) for p in model.layers[i][1].parameters()]
    before = [p.detach().clone() for p in off]
    momentum_before = [opt.state[p]["momentum_buffer"].clone() for p in off]
    on_before = [p.detach().clone() for p in on]
    train_step(model, list(model.parameters()), opt, None, [next(batches)], [path_b], criterion=crit,
               amp_dtype=torch.bfloat16, world_size=1, sync_grads=False)
    assert all(p.grad is None for p in off)
    assert all(torch.equal(p, b) for p, b in zip(off, before))
    assert all(torch.equal(opt.state[p]["momentum_buffer"], m) for p, m in zip(off, momentum_before))
    assert any(not torch.equal(p, b) for p, b in zip(on, on_before)), "the active path must move"


@pytest.mark.slow
@pytest.mark.parametrize("grad_sync", ["active_path", "ddp"])
def test_two_process_torchrun_equals_one_process_with_both_batches(tmp_path, grad_sync):
    """(a) 2 gloo ranks x k steps == 1 process stepping on both ranks' batches (same paths): <= 1e-6.

    BatchNorm normalises per micro-batch, so the single process must see each rank's batch as
    its own micro-batch (gradient accumulation), not one concatenated batch.
    """
    from fastnas.checkpoint import load_checkpoint
    k = 3
    overrides = tiny(tmp_path / "ddp", f"train.max_steps={k}", "train.precision=fp32",
                     f"train.grad_sync={grad_sync}", "train.weight_decay=0.001")
    proc = subprocess.run([PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "fastnas.train", "--config", "configs/quickstart_imagenette.yaml", *overrides],
                          cwd=REPO, env=sub_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"grad sync {grad_sync}" in proc.stdout
    trained = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["model"]

    cfg = load_config(REPO / "configs/quickstart_imagenette.yaml", overrides)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)             # as the ranks (OMP_NUM_THREADS=1): conv reductions depend on the split
    try:
        model = _reference_run(cfg, k)
    finally:
        torch.set_num_threads(threads)
    worst = max((trained[n] - p.detach()).abs().max().item() for n, p in model.named_parameters())
    assert worst <= 1e-6, worst
    moved = max((trained[n] - p).abs().max().item() for n, p in SuperNet(MBConvSpace(cfg.space)).named_parameters())
    assert moved > 1e-3                      # the comparison is not vacuous


def _reference_run(cfg, k: int) -> SuperNet:
    """One process, each step on rank 0's and rank 1's batches as two micro-batches, the same paths."""
    from fastnas.train import build_optimizer, build_scheduler, train_step, REFERENCE_BATCH
    torch.manual_seed(cfg.train.seed)
    model = SuperNet(MBConvSpace(cfg.space)).to(memory_format=torch.channels_last).train()
    opt = build_optimizer(model, cfg.train, cfg.train.lr * 2 * cfg.train.batch_size / REFERENCE_BATCH,
                          torch.device("cpu"))
    loaders = [_loader(cfg, rank=r, world_size=2) for r in (0, 1)]
    sched = build_scheduler(opt, cfg.train.warmup_steps, cfg.train.epochs * len(loaders[0]))
    sampler = build_sampler(model.space, cfg.train)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    for loader in loaders:
        loader.set_epoch(0)
    for step, micro in zip(range(k), zip(*loaders)):
        train_step(model, list(model.parameters()), opt, None, list(micro), sampler.paths(step), criterion=crit,
                   amp_dtype=torch.float32, world_size=1, sync_grads=False)
        sched.step()
    return model


def test_non_finite_loss_skips_the_step_and_backs_off_the_fp16_scale(tmp_path):
    from fastnas.train import build_optimizer, train_step
    cfg = load_config(REPO / "configs/quickstart_imagenette.yaml", tiny(tmp_path))
    torch.manual_seed(0)
    model = SuperNet(MBConvSpace(cfg.space)).to(memory_format=torch.channels_last).train()
    opt = build_optimizer(model, cfg.train, lr=0.5, device=torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    images = torch.randn(4, 3, 32, 32).to(memory_format=torch.channels_last)
    images[0, 0, 0, 0] = float("nan")
    before = [p.detach().clone() for p in model.parameters()]
    arch = tuple(0 for _ in model.space.layers)
    result = train_step(model, list(model.parameters()), opt, scaler, [(images, torch.arange(4))], [arch],
                        criterion=torch.nn.CrossEntropyLoss(), amp_dtype=torch.float16, world_size=1, sync_grads=False)
    assert not result.finite
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert scaler.get_scale() == 512.0
    images[0, 0, 0, 0] = 0.0
    result = train_step(model, list(model.parameters()), opt, scaler, [(images, torch.arange(4))], [arch],
                        criterion=torch.nn.CrossEntropyLoss(), amp_dtype=torch.float16, world_size=1, sync_grads=False)
    assert result.finite and any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_precision_follows_the_device_and_is_one_answer():
    """Training, evaluation and latency tables ask one function, so they agree on a machine."""
    from fastnas import evaluate, latency, train
    from fastnas.precision import resolve_precision
    assert train.resolve_precision is evaluate.resolve_precision is latency.resolve_precision is resolve_precision
    cpu = torch.device("cpu")
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert resolve_precision("auto", cpu) == (torch.bfloat16 if native else torch.float32)
    assert resolve_precision("fp16", cpu) == torch.float16
    assert resolve_precision("fp32", cpu) == torch.float32
    with pytest.raises(UserError, match="allowed: auto, fp32, bf16, fp16"):
        resolve_precision("int8", cpu)


def test_resume_with_another_world_size_is_refused(tmp_path):
    """A checkpoint's data order and schedule belong to its world size: resuming with another is one clear line."""
    from fastnas.checkpoint import load_checkpoint, save_checkpoint
    run = tmp_path / "run"
    r = subprocess.run([PY, "-m", "fastnas.train", *tiny(run, "train.max_steps=1")], cwd=REPO, env=sub_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    state = load_checkpoint(run / "checkpoint.pt")
    state["world_size"] = 2                                   # as if written by a 2-process run
    save_checkpoint(run / "checkpoint.pt", state, keep_previous=False)
    r = subprocess.run([PY, "-m", "fastnas.train", *tiny(run, "train.max_steps=2")], cwd=REPO, env=sub_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "was written by 2 processes, this run has 1" in r.stderr and "Traceback" not in r.stderr


def test_resume_with_other_result_settings_is_refused_and_says_what_differs(tmp_path):
    """A changed lr (or space, sampler, ...) would silently mix two runs; run_dir-like knobs may change."""
    from fastnas.checkpoint import load_checkpoint, save_checkpoint
    run = tmp_path / "run"
    r = subprocess.run([PY, "-m", "fastnas.train", *tiny(run, "train.max_steps=1")], cwd=REPO, env=sub_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([PY, "-m", "fastnas.train", *tiny(run, "train.max_steps=2", "train.lr=2.0",
                                                          "train.sampler=fair")],
                       cwd=REPO, env=sub_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "train.lr 4.0 -> 2.0" in r.stderr and "train.sampler 'uniform' -> 'fair'" in r.stderr
    # a checkpoint without random-generator state (they are reseeded every step) and with more steps
    # asked for (max_steps, log_every: how, not what) resumes
    state = load_checkpoint(run / "checkpoint.pt")
    state.pop("rng", None)
    save_checkpoint(run / "checkpoint.pt", state, keep_previous=False)
    r = subprocess.run([PY, "-m", "fastnas.train", *tiny(run, "train.max_steps=2", "train.log_every=5")],
                       cwd=REPO, env=sub_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "resumed from step 1" in r.stdout, r.stderr[-2000:]


def test_choice_lr_scale_speeds_up_only_the_searchable_choices():
    from fastnas.spaces import build_supernet
    from fastnas.train import build_optimizer
    for space_type in ("nb201", "mbconv"):
        cfg = load_config(None, [f"space.type={space_type}", "space.resolution=32", "train.choice_lr_scale=4"])
        net = build_supernet(cfg.space)
        opt = build_optimizer(net, cfg.train, 0.1, torch.device("cpu"))
        fixed = {id(p) for p in net.fixed_parameters()}
        seen = [id(p) for g in opt.param_groups for p in g["params"]]
        assert sorted(seen) == sorted(id(p) for p in net.parameters())            # each parameter once
        for g in opt.param_groups:
            assert all((id(p) in fixed) == (g["lr"] == pytest.approx(0.1)) for p in g["params"])
            assert all((g["lr"] == pytest.approx(0.4)) != (id(p) in fixed) for p in g["params"])
    plain = build_optimizer(net, load_config(None).train, 0.1, torch.device("cpu"))
    assert len(plain.param_groups) == 2                  # unchanged layout: older checkpoints resume


def test_cuda_device_of_a_process_under_gpu_masks():
    """torchrun's one GPU per local rank, and SLURM --gpus-per-task / CUDA_VISIBLE_DEVICES masks where
    each process sees only its own GPU (set_device(LOCAL_RANK) fails there)."""
    from fastnas.dist import cuda_index
    assert [cuda_index(r, 4) for r in range(4)] == [0, 1, 2, 3]
    assert [cuda_index(r, 1) for r in range(4)] == [0, 0, 0, 0]
    with pytest.raises(UserError, match="LOCAL_RANK 3 but 2 GPUs"):
        cuda_index(3, 2)
