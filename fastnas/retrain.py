"""Retrain a found architecture: `torchrun --nproc_per_node=N -m fastnas.retrain --arch best.json [--init inherited|scratch]`.

The architecture becomes a standalone `SubNet` and is trained by `fastnas.train.fit`: the same
data, AMP, channels_last, gradient sync, schedule, atomic checkpoints and automatic resume as
supernet training. `--init inherited` starts from the supernet's weights for that path
(`SuperNet.subnet`), `--init scratch` from a fresh initialisation.

`--arch` takes a JSON file (`{"arch": "k3e6-skip-..."}` or `{"arch": [0, 3, ...]}`, as the search
writes it, or a bare string or list) or an architecture string itself.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from fastnas import dist
from fastnas.checkpoint import load_checkpoint, load_supernet
from fastnas.config import config_from_record, load_config
from fastnas.cli import cli_entry, parse_args
from fastnas.errors import UserError
from fastnas.spaces import ArchError, build_space
from fastnas.train import fit


@cli_entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastnas.retrain", description="Train a found architecture.")
    p.add_argument("--arch", required=True, help="best.json from the search, or an architecture string")
    p.add_argument("--init", choices=["inherited", "scratch"], default="scratch",
                   help="start from the supernet's weights for this path, or from scratch (default)")
    p.add_argument("--supernet", help="supernet checkpoint for --init inherited (default: eval.checkpoint)")
    p.add_argument("--config", help="run config (YAML); default: the supernet checkpoint's config with --init inherited")
    p.add_argument("--run-dir", help="output folder (default: <train.run_dir>/../retrain)")
    p.add_argument("--resume", help="resume from this checkpoint (default: the newest one in the run folder)")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.epochs=300")
    args = parse_args(p, argv)

    cfg = load_config(args.config, args.overrides)
    supernet_path = args.supernet or cfg.eval.checkpoint
    if args.init == "inherited" and args.config is None:     # the space the supernet was trained on
        saved = config_from_record(load_checkpoint(supernet_path)["config"])
        cfg = dataclasses.replace(cfg, space=saved.space, data=saved.data)
    space = build_space(cfg.space)
    arch = space.parse(read_arch(args.arch))
    run_dir = args.run_dir or str(Path(cfg.train.run_dir).parent / "retrain")

    with dist.process_group() as env:
        if args.init == "inherited":
            supernet, saved = load_supernet(supernet_path)
            if saved.space != cfg.space:
                raise UserError(f"{supernet_path} was trained on a different space than the config's; "
                                f"drop --config or make its space section match")
            model = supernet.subnet(arch)
            del supernet
        else:
            torch.manual_seed(cfg.train.seed)
            model = space.subnet(arch)
        dist.print0(f"retraining {space.to_string(arch)} ({space.cost(arch).macs / 1e6:.1f}M MACs, "
                    f"init {args.init})")
        fit(cfg, env, model, lambda step: [None], resume=args.resume, run_dir=run_dir,
            extra_state={"arch": list(arch), "arch_string": space.to_string(arch), "init": args.init})
    return 0


def read_arch(text: str):
    """The architecture from a JSON file ({"arch": ...}, a string or a list) or the string itself."""
    path = Path(text)
    if not path.is_file():
        if text.endswith(".json"):
            raise ArchError(f"--arch: file not found: {text}")
        return text
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArchError(f"--arch {text}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if isinstance(data, dict):
        if "arch" not in data:
            raise ArchError(f"--arch {text}: expected a key 'arch' (found {', '.join(map(str, data)) or 'none'})")
        data = data["arch"]
    if not isinstance(data, (str, list)):
        raise ArchError(f"--arch {text}: 'arch' must be a string or a list of ints")
    return data


if __name__ == "__main__":
    sys.exit(main())
