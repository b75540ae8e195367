"""A candidate's fitness, defined plainly: its subnet, exact BN recalibration, then accuracy.

    evaluate_fresh(supernet, arch, calib_set, val_set, eval_batch, calib_batch=256)  # -> Result

This module is the definition; `fastnas.evaluate.Evaluator` computes the same numbers fast (trie
walk, prefix cache, memo) and the tests hold it to this one. The calibration batch is part of the
definition (BN statistics depend on it); the evaluation batch only sets speed.
"""
from __future__ import annotations

import hashlib
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastnas.calibrate import recalibrate_bn
from fastnas.data import to_model_input
from fastnas.precision import resolve_precision


class Result(NamedTuple):
    top1: float          # percent
    top5: float          # percent
    loss: float          # mean cross-entropy
    loss_std: float = 0.0  # standard deviation of the per-image cross-entropy
    n: int = 0           # validation images


def fitness_of(result: Result, kind: str = "top1") -> float:
    """The number a search maximises (`eval.fitness`): top-1 %, or minus the mean cross-entropy."""
    return result.top1 if kind == "top1" else -result.loss


def fitness_standard_error(result: Result, kind: str = "top1") -> float:
    """Standard error of `fitness_of(result, kind)` from the finite validation set: binomial for
    top-1 (in points), the per-image spread over sqrt(n) for the loss; 0 when n is unknown."""
    if result.n < 1:
        return 0.0
    if kind == "top1":
        p = result.top1 / 100.0
        return 100.0 * (p * (1.0 - p) / result.n) ** 0.5
    return result.loss_std / result.n ** 0.5


def describe_fitness(net: nn.Module, *, mode: str, dtype: torch.dtype, calib, val, calib_batch: int,
                     approx_rounds: int = 1, seed: int = 0) -> dict:
    """Everything a fitness value depends on, as plain data (the search's resume key): the weights
    and the two image sets as digests, plus mode, precision and calibration batch. Evaluation
    batch, cache and memory layout are absent: they change speed, not results."""
    weights = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    out = {"weights": weights.hexdigest()[:16], "mode": mode,
           "precision": str(dtype).replace("torch.", ""), "calib_batch": calib_batch}
    for name, eval_set in (("calib", calib), ("val", val)):
        digest = hashlib.sha256(eval_set.labels.cpu().numpy().tobytes())
        if eval_set.files:
            digest.update("\n".join(str(f) for f in eval_set.files).encode())
        else:                                       # synthetic: the pixels themselves
            digest.update(eval_set.images.cpu().numpy().tobytes())
        digest.update(repr((tuple(eval_set.images.shape), eval_set.mean, eval_set.std)).encode())
        out[f"{name}_images"] = len(eval_set)
        out[f"{name}_set"] = digest.hexdigest()[:16]
    if mode == "approx":                            # its random paths come from the seed
        out["approx_rounds"], out["approx_seed"] = approx_rounds, seed
    return out


def model_input(images: torch.Tensor, dtype: torch.dtype, channels_last: bool = True, eval_set=None) -> torch.Tensor:
    """uint8 (N,H,W,3) -> normalised float (N,3,H,W) in `dtype`, channels_last or contiguous (NCHW).

    Normalised with `eval_set`'s mean and std (data.normalization) when given, else ImageNet's."""
    stats = {"mean": eval_set.mean, "std": eval_set.std} if hasattr(eval_set, "mean") else {}
    x = to_model_input(images, dtype, **stats)
    return x if channels_last else x.contiguous()


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, n)) for a in range(0, n, size)]


class Score:
    """Running top-1 / top-5 counts and summed cross-entropy over validation chunks."""

    def __init__(self):
        self.top1 = self.top5 = self.loss = self.loss_sq = 0.0
        self.n = 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.float()
        k = min(5, logits.shape[1])
        hit = logits.topk(k, dim=1).indices == labels[:, None]
        self.top1 += hit[:, 0].sum().item()
        self.top5 += hit.any(dim=1).sum().item()
        per_image = F.cross_entropy(logits, labels, reduction="none").double()
        self.loss += per_image.sum().item()
        self.loss_sq += per_image.square().sum().item()
        self.n += labels.numel()

    def result(self) -> Result:
        mean = self.loss / self.n
        std = max(self.loss_sq / self.n - mean * mean, 0.0) ** 0.5
        return Result(100.0 * self.top1 / self.n, 100.0 * self.top5 / self.n, mean, std, self.n)


def evaluate_fresh(supernet, arch: Sequence[int], calib_set, val_set, eval_batch: int, *,
                   calib_batch: int = 256, precision: str = "auto", channels_last: bool = True) -> Result:
    """One candidate from scratch, no reuse: its standalone subnet, `recalibrate_bn`, then accuracy.

    The definition the Evaluator must reproduce; tests compare the two. Spaces without a chain of
    layers (`prefix_statistics` False) are evaluated this very way, one candidate at a time.
    """
    device = next(supernet.parameters()).device
    dtype = resolve_precision(precision, device)
    net = recalibrated_subnet(supernet, arch, calib_set, calib_batch, dtype, channels_last)
    return score_network(net, val_set, eval_batch, dtype, channels_last)


def autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


@torch.no_grad()
def recalibrated_subnet(supernet, arch: Sequence[int], calib_set, calib_batch: int, dtype: torch.dtype,
                        channels_last: bool) -> nn.Module:
    """The standalone subnet of `arch`, exactly recalibrated (`recalibrate_bn`) over `calib_set`, in eval mode."""
    device = next(supernet.parameters()).device
    net = supernet.subnet(arch)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    with autocast(device, dtype):
        recalibrate_bn(net, (model_input(calib_set.images[a:b], dtype, channels_last, calib_set)
                             for a, b in chunks(len(calib_set.labels), calib_batch)))
    return net


@torch.no_grad()
def score_network(net: nn.Module, val_set, eval_batch: int, dtype: torch.dtype, channels_last: bool) -> Result:
    """Top-1, top-5 and mean cross-entropy of `net` (eval mode) on `val_set`."""
    device = next(net.parameters()).device
    score = Score()
    with autocast(device, dtype):
        for a, b in chunks(len(val_set.labels), eval_batch):
            score.add(net(model_input(val_set.images[a:b], dtype, channels_last, val_set)), val_set.labels[a:b])
    return score.result()
