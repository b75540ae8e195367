"""Export a found architecture as a standalone model: weights + architecture config, and ONNX.

    python -m fastnas.export --arch runs/search/best.json --supernet runs/supernet/checkpoint.pt --out runs/model
    python -m fastnas.export --arch k3e6-skip-... --supernet CKPT --out DIR     # a literal arch string

DIR receives
  model.pt    torch.save({"format", "space": SpaceConfig as a dict, "arch": "k3e6-...", "state_dict"})
              - everything `space.subnet(arch)` needs, no supernet: `load_exported(DIR)` rebuilds it;
  model.onnx  opset 17, input "images" (N, 3, R, R) float32 normalised with the training data's mean/std (model.json),
              output "logits" (N, num_classes); the batch axis is dynamic;
  model.json  the same config in plain text plus MACs, params and the input convention.

The weights are the supernet's path weights as trained (BN statistics included); recalibrate or
retrain (fastnas.retrain) for the best accuracy.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

import torch

from fastnas.atomic import atomic_file, atomic_write, write_json_atomic
from fastnas.checkpoint import load_supernet
from fastnas.config import SpaceConfig, section_from_dict
from fastnas.cli import cli_entry, parse_args
from fastnas.errors import UserError
from fastnas.spaces import ArchError, Space, build_space

FORMAT = "fastnas-export/1"
OPSET = 17
MODEL_FILE, ONNX_FILE, INFO_FILE = "model.pt", "model.onnx", "model.json"


class ExportError(UserError):
    pass


# ----------------------------------------------------------------------------- inputs

def read_arch(arch: str, space: Space) -> tuple[int, ...]:
    """`arch` is a best.json-like file holding {"arch": "k3e6-..." or [ints]}, or a literal arch string."""
    looks_like_file = arch.endswith(".json") or os.sep in arch or Path(arch).is_file()
    if looks_like_file:
        path = Path(arch)
        if not path.is_file():
            raise ExportError(f"architecture file not found: {path}")
        try:
            data = json.loads(path.read_text())
            value = data["arch"]
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ExportError(f"{path}: not valid JSON ({e})") from None
        except (KeyError, TypeError):
            raise ExportError(f"{path}: expected a JSON object with an \"arch\" key") from None
        where = f"{path}"
    else:
        value, where = arch, "--arch"
    try:
        return space.parse(value)
    except ArchError as e:
        raise ArchError(f"{where}: architecture is not in the supernet's space: {e}") from None


# ----------------------------------------------------------------------------- export

def export(supernet: torch.nn.Module, arch: Sequence[int], out_dir: str | Path, *, onnx: bool = True,
           net: torch.nn.Module | None = None, normalization: str = "imagenet") -> torch.nn.Module:
    """Write model.pt, model.json and (with `onnx`) model.onnx for `arch` into `out_dir`; return the standalone network.

    `net` is the subnet to write (e.g. `Evaluator.recalibrated_subnet(arch)`, whose BN statistics are the
    ones the search scored); default: `supernet.subnet(arch)` with the supernet's running statistics.
    `normalization` (data.normalization) names the input's mean/std, recorded in model.json.
    """
    from fastnas.data.loader import NORMALIZATION
    mean, std = ([round(v / 255, 4) for v in stats] for stats in NORMALIZATION[normalization])
    space = supernet.space
    arch = space.validate(arch)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = (net if net is not None else supernet.subnet(arch)).float().cpu().eval()
    net = net.to(memory_format=torch.contiguous_format)
    space_dict = dataclasses.asdict(space.cfg)
    arch_str = space.to_string(arch)
    with atomic_write(out / MODEL_FILE, "wb") as f:
        torch.save({"format": FORMAT, "space": space_dict, "arch": arch_str, "state_dict": net.state_dict()}, f)
    cost = space.cost(arch)
    info = {"format": FORMAT, "arch": arch_str, "arch_codes": list(arch), "space": space_dict,
            "macs": cost.macs, "params": cost.params,
            "input": {"name": "images", "shape": ["N", 3, space.cfg.resolution, space.cfg.resolution],
                      "dtype": "float32", "mean": mean, "std": std},
            "output": {"name": "logits", "shape": ["N", space.cfg.num_classes]},
            "files": {"weights": MODEL_FILE, "onnx": ONNX_FILE if onnx else None}}
    write_json_atomic(out / INFO_FILE, info, indent=1)
    if onnx:
        export_onnx(net, space.cfg.resolution, out / ONNX_FILE)
    return net


def export_onnx(net: torch.nn.Module, resolution: int, path: Path, opset: int = OPSET) -> None:
    """fp32, NCHW, dynamic batch. Uses the TorchScript exporter: the torch.export-based one needs
    onnxscript, which this environment does not ship."""
    import onnx
    x = torch.zeros(2, 3, resolution, resolution)
    with atomic_file(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)   # "legacy exporter" notice
        torch.onnx.export(net.eval(), (x,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
        onnx.checker.check_model(onnx.load(str(tmp)))


def load_exported(out_dir: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the exported network from DIR/model.pt alone (no supernet); eval mode."""
    path = Path(out_dir) / MODEL_FILE
    if not path.is_file():
        raise ExportError(f"exported model not found: {path} (write one with python -m fastnas.export)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if state.get("format") != FORMAT:
            raise ExportError(f"{path}: not a fastnas exported model (format {state.get('format')!r})")
        space_cfg = section_from_dict(SpaceConfig, state["space"], "space")
        space = build_space(space_cfg)
        net = space.subnet(space.from_string(state["arch"]))
        net.load_state_dict(state["state_dict"])
    except UserError:
        raise
    except Exception as e:
        raise ExportError(f"{path}: unreadable exported model ({type(e).__name__})") from None
    return net.to(device).eval()


# ----------------------------------------------------------------------------- command line

def _with_overrides(cfg, overrides):
    """The checkpoint's own config with `section.key=value` overrides applied."""
    import yaml
    from fastnas.config import ConfigError, config_from_dict
    raw = cfg.to_dict()
    for item in overrides:
        key, sep, text = item.partition("=")
        section, _, name = key.partition(".")
        if not sep or not name or section not in raw:
            raise ConfigError(f"override {item!r}: expected section.key=value, e.g. data.path=/data/imagenet")
        raw[section][name] = yaml.safe_load(text)
    return config_from_dict(raw)


@cli_entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastnas.export",
                                description="Export a found architecture: standalone weights + config, and ONNX.")
    p.add_argument("--arch", required=True, help="best.json from a search, or an arch string (k3e6-skip-...)")
    p.add_argument("--supernet", required=True, help="supernet checkpoint (from fastnas.train)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX file")
    p.add_argument("--no-recalibrate", action="store_true",
                   help="keep the supernet's running BN statistics instead of recalibrating them exactly "
                        "on the calibration set, as the search scored the architecture")
    p.add_argument("--config", help="run config for the calibration data (default: the checkpoint's own)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="e.g. data.path=/data/imagenet")
    args = parse_args(p, argv)
    supernet, ckpt_cfg = load_supernet(args.supernet)
    arch = read_arch(args.arch, supernet.space)
    net = None
    if not args.no_recalibrate:
        from fastnas.config import load_config
        from fastnas.evaluate import build_evaluator
        cfg = load_config(args.config, args.overrides) if args.config else _with_overrides(ckpt_cfg, args.overrides)
        net = build_evaluator(cfg, "cpu", args.supernet).recalibrated_subnet(arch)
    export(supernet.eval(), arch, args.out, onnx=not args.no_onnx, net=net, normalization=ckpt_cfg.data.normalization)
    out = Path(args.out)
    cost = supernet.space.cost(arch)
    print(f"exported {supernet.space.to_string(arch)} ({cost.macs / 1e6:.1f}M MACs, {cost.params / 1e6:.3f}M params)\n"
          f"  weights + config: {out / MODEL_FILE}  (load_exported('{out}'))\n"
          + (f"  onnx (opset {OPSET}, dynamic batch): {out / ONNX_FILE}\n" if not args.no_onnx else "")
          + f"  summary: {out / INFO_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
