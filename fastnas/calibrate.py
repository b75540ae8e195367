"""BatchNorm recalibration: the definition fastnas uses, in its plain form.

Exact recalibration is the standard one of SPOS and mmrazor: reset every BatchNorm on the path
(mean 0, variance 1, count 0), set `momentum=None` (a cumulative average, never an EMA), and run
the calibration set through the path in train mode, batch by batch in a fixed order. Each BN
normalises with the statistics of the current batch (so its input depends on the batch statistics
of the layers before it) and its running mean and variance become the plain average of the batch
means and unbiased batch variances, exactly as `torch.nn.BatchNorm2d(momentum=None)` computes them.
Evaluation then runs in eval mode with those running statistics, never with batch statistics.

With equal-sized batches the running mean is the true mean over the whole calibration set; the
running variance is the mean of the per-batch variances. The result depends on the calibration
batch size and order (fixed here: consecutive slices of the calibration set), and on nothing
else, so a layer's statistics depend only on the path up to and including that layer: the prefix
cache and trie walk of `fastnas.evaluate` reproduce this definition exactly.

    recalibrate_bn(subnet, batches)      # the plain reference, for one network
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def reset_bn(module: nn.Module) -> None:
    """Forget the running statistics and switch every BN to a cumulative average (momentum=None)."""
    for bn in batch_norms(module):
        bn.reset_running_stats()
        bn.momentum = None


def fresh_bn_stats(module: nn.Module) -> dict[str, torch.Tensor]:
    """New running-statistics buffers for the BNs of `module` (names as in its state_dict), reset."""
    stats = {}
    for name, buf in module.named_buffers():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "running_mean":
            stats[name] = torch.zeros_like(buf)
        elif leaf == "running_var":
            stats[name] = torch.ones_like(buf)
        elif leaf == "num_batches_tracked":
            stats[name] = torch.zeros_like(buf)
    return stats


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor], forward=None) -> nn.Module:
    """Exact recalibration of `model` in place over `batches`; leaves the model in eval mode.

    `forward(model, x)` runs one batch (default `model(x)`), e.g. to pass an architecture.
    """
    reset_bn(model)
    model.train()
    for x in batches:
        model(x) if forward is None else forward(model, x)
    return model.eval()
