"""Search spaces as a concept: one front door builds the space a config names.

    space = build_space(cfg.space)          # cfg.space.type: "mbconv" (default) | "nb201"
    arch = space.sample(np.random.default_rng(0))
    space.to_string(arch), space.cost(arch)
    supernet = space.supernet()             # forward(x, arch), path_parameters(arch), subnet(arch)

Each space is one module that owns everything specific to it (see `base.Space` for the interface):
  mbconv  MobileNetV2/ProxylessNAS-style chain of MBConv layers (fastnas.spaces.mbconv, mbconv_net)
  nb201   the NAS-Bench-201 cell, its benchmark network and string form (fastnas.spaces.nb201, nb201_net)
"""
from __future__ import annotations

import importlib

from fastnas.config import SpaceConfig
from fastnas.spaces.base import Arch, ArchError, Cost, Space

_SPACES = {"mbconv": ("fastnas.spaces.mbconv", "MBConvSpace"),
           "nb201": ("fastnas.spaces.nb201", "NB201Space")}

__all__ = ["Arch", "ArchError", "Cost", "Space", "build_space", "build_supernet"]


def build_space(cfg: SpaceConfig) -> Space:
    """The space of `cfg.space.type`, validated."""
    module, name = _SPACES[cfg.type]
    return getattr(importlib.import_module(module), name)(cfg)


def build_supernet(cfg: SpaceConfig):
    """The freshly initialised supernet of the configured space."""
    return build_space(cfg).supernet()
