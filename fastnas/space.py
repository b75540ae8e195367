"""`python -m fastnas.space`: print an architecture of the configured space with its exact cost."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from fastnas.config import ConfigError, SpaceConfig, load_config, section_from_dict
from fastnas.cli import cli_entry, parse_args
from fastnas.spaces import build_space


@cli_entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastnas.space",
                                description="Print an architecture of a search space with its exact MACs and params.")
    p.add_argument("--config", help="a run config or a space config (YAML); default: the default space")
    p.add_argument("--arch", help="architecture string (k3e6-skip-..., uniform:k3e6, or an NB201 cell "
                                  "|nor_conv_3x3~0|+|...|); default: seeded random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("overrides", nargs="*", help="space.key=value overrides, e.g. space.resolution=192")
    args = parse_args(p, argv)
    space = build_space(_space_config(args.config, args.overrides))
    arch = space.from_string(args.arch) if args.arch else space.sample(np.random.default_rng(args.seed))
    cost = space.cost(arch)
    out = {"arch": space.to_string(arch), "macs": cost.macs, "params": cost.params}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['arch']}\n  {space.describe()}\n"
              f"  MACs {cost.macs / 1e6:.2f}M, params {cost.params / 1e6:.3f}M")
    return 0


def _space_config(path: str | None, overrides: Sequence[str]) -> SpaceConfig:
    """A file may be a whole run config (with a `space:` section) or a bare space config."""
    if path is None:
        return load_config(None, overrides).space
    try:
        raw = yaml.safe_load(Path(path).read_text()) if Path(path).is_file() else None
    except yaml.YAMLError:
        raw = None
    if isinstance(raw, dict) and "space" not in raw and not ({"data", "train", "search", "eval"} & set(raw)):
        values = dict(raw)
        for item in overrides:
            key, _, text = item.partition("=")
            if not key.startswith("space."):
                raise ConfigError(f"override {item!r}: only space.key=value applies to a space config")
            values[key[len("space."):]] = yaml.safe_load(text)
        return section_from_dict(SpaceConfig, values, "space")
    return load_config(path, overrides).space


if __name__ == "__main__":
    sys.exit(main())
