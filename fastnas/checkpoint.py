"""Checkpoints: atomic writes, the previous good file kept, and loading with one clear error line.

`save_checkpoint` writes to a temporary file in the same folder, fsyncs it, moves the current
checkpoint to `<name>.prev` and renames the new file into place, so a crash at any moment leaves
at least one complete checkpoint. `load_latest` falls back to `.prev` when the newest one is
corrupt or truncated, saying so in one line.

A supernet checkpoint is a `torch.save` dict with at least
`{"model": state_dict, "config": cfg.to_dict(), "step": int}`; training adds optimizer,
scheduler, scaler, RNG and sampler state.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from fastnas.atomic import atomic_write
from fastnas.errors import UserError

CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(UserError):
    pass


def previous_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".prev")


def save_checkpoint(path: str | Path, state: dict, keep_previous: bool = True) -> Path:
    """Write `state` atomically (tmp file, fsync, rename); the replaced checkpoint becomes `<path>.prev`."""
    path = Path(path)
    with atomic_write(path, "wb", keep_previous=previous_path(path) if keep_previous else None) as f:
        torch.save(state, f)
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """Read a checkpoint dict; a missing, truncated or corrupt file raises CheckpointError (one line)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:                      # unpickling errors come in many types; all mean "unreadable"
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({reason})") from None
    if not isinstance(state, dict) or not {"model", "config", "step"} <= set(state):
        raise CheckpointError(f"checkpoint {path} is not a fastnas checkpoint (needs model, config and step)")
    return state


def load_latest(path: str | Path, device: str | torch.device = "cpu") -> dict | None:
    """The newest readable checkpoint at `path` or its `.prev`; None when neither exists.

    A corrupt newest file is reported in one line on stderr and left in place for inspection.
    """
    path = Path(path)
    prev = previous_path(path)
    if path.exists():
        try:
            return load_checkpoint(path, device)
        except CheckpointError as e:
            if not prev.exists():
                raise
            print(f"fastnas: warning: {e}; using the previous one, {prev}", file=sys.stderr, flush=True)
    if prev.exists():
        return load_checkpoint(prev, device)
    return None


def load_supernet(path: str | Path, device: str | torch.device = "cpu"):
    """(SuperNet with the checkpoint's weights, its Config), in eval mode on `device`."""
    from fastnas.config import config_from_record
    from fastnas.spaces import build_supernet

    state = load_checkpoint(path, device)
    cfg = config_from_record(state["config"])
    net = build_supernet(cfg.space)
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not match its space config "
                              f"({str(e).splitlines()[0][:120]})") from None
    return net.to(device).eval(), cfg
