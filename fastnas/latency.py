"""A measured latency look-up table: milliseconds per (layer, choice) block on one device.

A network's predicted latency is the sum of its blocks' entries plus the fixed parts (stem with
the first block, and the head). Every block is timed at its real input shape, in eval mode,
channels_last, under the chosen precision, with warm-up and the median of many runs
(`time.perf_counter` on CPU, CUDA events on GPU).

Two ways to time a block (`--method`):
  in_context (default): run whole random paths of the supernet and time each block where it sits
      in the network: its input was just written by the previous block, its weights were last
      touched one forward ago, the thread pool is as busy as in a real forward. Paths are drawn so
      that every (layer, choice) is visited once per round; the median over rounds is kept.
  isolated: call each block alone on the same input many times. Its input and weights stay hot in
      cache, so the table under-predicts whole networks that do not fit in cache.
bench/bench_latency.py compares both against measured whole networks, timing table rounds and
whole networks interleaved so that load from other processes falls on both alike.

    python -m fastnas.latency --device cpu --config configs/quickstart_imagenette.yaml --out runs/lut.json
    table = LatencyTable.load("runs/lut.json", space_cfg)     # raises if built for another space
    table.predict(arch)              # ms
    table.ms, table.fixed_ms         # (L, C) array (inf where a choice is not offered), float
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from fastnas.atomic import write_json_atomic
from fastnas.config import SpaceConfig, load_config, section_from_dict
from fastnas.cli import cli_entry, parse_args
from fastnas.errors import UserError
from fastnas.precision import resolve_precision
from fastnas.spaces.mbconv import MBConvSpace
from fastnas.spaces.mbconv_net import SuperNet

FORMAT = "fastnas-latency/1"
# Space fields that do not change what runs at inference (dropout is the identity in eval mode).
_IGNORED_SPACE_FIELDS = ("dropout",)


class LatencyTableError(UserError):
    pass


# ----------------------------------------------------------------------------- the table

def _mbconv_space(space_cfg: SpaceConfig) -> MBConvSpace:
    """Latency tables time MBConv blocks one layer at a time; other spaces have no such table yet."""
    if space_cfg.type != "mbconv":
        raise UserError(f"latency tables are built for space.type=mbconv only, not {space_cfg.type!r}")
    return MBConvSpace(space_cfg)


class LatencyTable:
    """ms[L, C] per (layer, choice) (inf where a layer does not offer that choice) plus fixed_ms."""

    def __init__(self, space_cfg: SpaceConfig, ms: np.ndarray, fixed_ms: float, meta: dict | None = None):
        self.space = _mbconv_space(space_cfg)
        self.ms = np.asarray(ms, dtype=np.float64)
        self.fixed_ms = float(fixed_ms)
        self.meta = dict(meta or {})
        if self.ms.shape != (len(self.space), self.space.max_choices):
            raise LatencyTableError(f"latency table has shape {self.ms.shape}, the space needs "
                                    f"({len(self.space)}, {self.space.max_choices})")

    @property
    def space_cfg(self) -> SpaceConfig:
        return self.space.cfg

    def predict(self, arch: str | Sequence[int]) -> float:
        """Predicted latency of one architecture (string or ints) in milliseconds."""
        arch = self.space.parse(arch)
        return self.fixed_ms + float(self.ms[np.arange(len(arch)), arch].sum())

    def predict_batch(self, codes: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) of each row of an (N, L) int array; no validation, for speed."""
        codes = np.asarray(codes, dtype=np.int64)
        return self.fixed_ms + self.ms[np.arange(codes.shape[1]), codes].sum(axis=1)

    # ------------------------------------------------------------------ consistency with a space
    def check_space(self, space_cfg: SpaceConfig, where: str = "latency table") -> None:
        """Raise LatencyTableError naming the first space field that differs from the table's."""
        mine, theirs = dataclasses.asdict(self.space_cfg), dataclasses.asdict(space_cfg)
        for key in mine:
            if key not in _IGNORED_SPACE_FIELDS and mine[key] != theirs.get(key):
                raise LatencyTableError(f"{where} was built for space.{key}={mine[key]!r}, but this run "
                                        f"uses space.{key}={theirs.get(key)!r}; rebuild it with "
                                        f"python -m fastnas.latency for this space")

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        layers = []
        for layer in self.space.layers:
            layers.append({"index": layer.index, "in_channels": layer.in_channels,
                           "out_channels": layer.out_channels, "stride": layer.stride,
                           "in_size": layer.in_size,
                           "ms": {name: round(float(self.ms[layer.index, c]), 6)
                                  for c, name in enumerate(layer.choices)}})
        return {"format": FORMAT, **self.meta, "space": dataclasses.asdict(self.space_cfg),
                "fixed_ms": round(self.fixed_ms, 6), "layers": layers}

    def save(self, path: str | Path) -> None:
        """Atomic write: a crash leaves either the old file or the new one."""
        write_json_atomic(path, self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict, where: str = "latency table") -> "LatencyTable":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise LatencyTableError(f"{where}: not a fastnas latency table (expected format {FORMAT!r})")
        try:
            space_cfg = section_from_dict(SpaceConfig, data["space"], "space")
            space = _mbconv_space(space_cfg)
            ms = np.full((len(space), space.max_choices), np.inf)
            if len(data["layers"]) != len(space):
                raise LatencyTableError(f"{where}: {len(data['layers'])} layers, its space has {len(space)}")
            for layer, row in zip(space.layers, data["layers"]):
                for c, name in enumerate(layer.choices):
                    ms[layer.index, c] = float(row["ms"][name])
            meta = {k: v for k, v in data.items() if k not in ("format", "space", "fixed_ms", "layers")}
            return cls(space_cfg, ms, float(data["fixed_ms"]), meta)
        except (KeyError, TypeError, ValueError) as e:
            raise LatencyTableError(f"{where}: malformed latency table ({type(e).__name__}: {e})") from None

    @classmethod
    def load(cls, path: str | Path, space_cfg: SpaceConfig | None = None) -> "LatencyTable":
        """Read a table; with `space_cfg`, also check it was built for that space."""
        path = Path(path)
        if not path.is_file():
            raise LatencyTableError(f"latency table not found: {path} (build one with python -m fastnas.latency)")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LatencyTableError(f"{path}: not valid JSON ({e})") from None
        table = cls.from_dict(data, where=str(path))
        if space_cfg is not None:
            table.check_space(space_cfg, where=f"latency table {path}")
        return table


# ----------------------------------------------------------------------------- timing

def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False)")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device {name!r}: allowed cpu, cuda")
    return torch.device(name)


class Timer:
    """Times callables on one device: CUDA events on GPU, perf_counter on CPU; results in ms."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._pending: list[tuple] = []

    def mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def elapsed_ms(self, start, end) -> float:
        """For CUDA events the caller must have synchronised after `end` was recorded."""
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def median_ms(self, fn: Callable[[], object], *, warmup: int, repeats: int) -> float:
        for _ in range(warmup):
            fn()
        self.sync()
        marks = []
        for _ in range(repeats):
            start = self.mark()
            fn()
            marks.append((start, self.mark()))
        self.sync()
        return statistics.median(self.elapsed_ms(s, e) for s, e in marks)


def autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def prepare(module: torch.nn.Module, device: torch.device, channels_last: bool = True) -> torch.nn.Module:
    """Eval mode, on device, in the layout used for timing (weights stay fp32; autocast casts)."""
    module = module.to(device).eval()
    return module.to(memory_format=torch.channels_last) if channels_last else module


def random_input(shape: Sequence[int], device: torch.device, channels_last: bool = True) -> torch.Tensor:
    x = torch.randn(*shape, device=device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# ----------------------------------------------------------------------------- building a table

class BlockMeter:
    """Times the blocks of a space in rounds; every round yields one sample of every (layer, choice)
    and of the fixed parts. Rounds let a benchmark interleave table and whole-network timings."""

    def __init__(self, space_cfg: SpaceConfig, *, device: torch.device, batch_size: int = 1,
                 precision: str = "auto", channels_last: bool = True, method: str = "in_context", seed: int = 0):
        if method not in ("in_context", "isolated"):
            raise UserError(f"--method {method!r}: allowed in_context, isolated")
        self.space = _mbconv_space(space_cfg)
        self.device, self.batch_size, self.channels_last, self.method = device, batch_size, channels_last, method
        self.dtype = resolve_precision(precision, device)
        self.timer = Timer(device)
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.net = prepare(SuperNet(self.space), device, channels_last)
        L, C = len(self.space), self.space.max_choices
        self.samples: list[list[list[float]]] = [[[] for _ in range(C)] for _ in range(L)]
        self.stem: list[float] = []
        self.head: list[float] = []
        cfg = self.space.cfg
        self.image = random_input((batch_size, 3, cfg.resolution, cfg.resolution), device, channels_last)
        self.inputs = [random_input((batch_size, l.in_channels, l.in_size, l.in_size), device, channels_last)
                       for l in self.space.layers]
        self.features = random_input((batch_size, cfg.channels[-1], self.space.final_size, self.space.final_size),
                                     device, channels_last)

    def round(self, record: bool = True) -> None:
        with torch.inference_mode():
            (self._in_context_round if self.method == "in_context" else self._isolated_round)(record)

    def _in_context_round(self, record: bool) -> None:
        """Whole forwards of C random paths; column j of a layer is a shuffled cycle through its
        choices, so the C paths visit every choice of every layer. Each block is timed where it sits."""
        C = self.space.max_choices
        paths = np.stack([np.resize(self.rng.permutation(n), C) for n in self.space.num_choices], axis=1)
        runs = []
        for arch in paths:
            marks = [self.timer.mark()]
            with autocast(self.device, self.dtype):
                h = self.net.forward_stem(self.image)
                marks.append(self.timer.mark())
                for i, c in enumerate(arch):
                    h = self.net.forward_layer(i, int(c), h)
                    marks.append(self.timer.mark())
                self.net.forward_head(h)
                marks.append(self.timer.mark())
            runs.append((arch, marks))
        self.timer.sync()
        if record:
            for arch, marks in runs:
                t = [self.timer.elapsed_ms(a, b) for a, b in zip(marks[:-1], marks[1:])]
                self.stem.append(t[0])
                self.head.append(t[-1])
                for i, c in enumerate(arch):
                    self.samples[i][int(c)].append(t[1 + i])

    def _isolated_round(self, record: bool) -> None:
        """Each block alone on a fixed input, timed on its second consecutive call (hot caches)."""
        def time_hot(fn, x):
            with autocast(self.device, self.dtype):
                fn(x)
                start = self.timer.mark()
                fn(x)
                return start, self.timer.mark()

        marks = [("stem", time_hot(self.net.forward_stem, self.image))]
        for layer in self.space.layers:
            for c in range(len(layer.choices)):
                marks.append(((layer.index, c), time_hot(lambda x: self.net.forward_layer(layer.index, c, x),
                                                         self.inputs[layer.index])))
        marks.append(("head", time_hot(self.net.forward_head, self.features)))
        self.timer.sync()
        if record:
            for key, (a, b) in marks:
                t = self.timer.elapsed_ms(a, b)
                if key == "stem":
                    self.stem.append(t)
                elif key == "head":
                    self.head.append(t)
                else:
                    self.samples[key[0]][key[1]].append(t)

    def table(self, **meta) -> LatencyTable:
        """Medians of the rounds recorded so far."""
        ms = np.full((len(self.space), self.space.max_choices), np.inf)
        for layer in self.space.layers:
            for c in range(len(layer.choices)):
                ms[layer.index, c] = statistics.median(self.samples[layer.index][c])
        stem, head = statistics.median(self.stem), statistics.median(self.head)
        cfg = self.space.cfg
        meta = {"device": self.device.type, "device_name": device_name(self.device), "batch_size": self.batch_size,
                "resolution": cfg.resolution, "precision": PRECISION_NAMES[self.dtype],
                "channels_last": self.channels_last, "method": self.method, "threads": torch.get_num_threads(),
                "rounds": len(self.stem) // (self.space.max_choices if self.method == "in_context" else 1),
                "torch": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "fixed_parts_ms": {"stem": stem, "head": head}, **meta}
        return LatencyTable(cfg, ms, stem + head, meta)


PRECISION_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def build_table(space_cfg: SpaceConfig, *, device: torch.device, batch_size: int = 1, precision: str = "auto",
                channels_last: bool = True, method: str = "in_context", warmup: int = 10, repeats: int = 30,
                seed: int = 0) -> LatencyTable:
    """Measure every (layer, choice) block and the fixed parts: `warmup` unrecorded rounds, then the
    median of `repeats` rounds. See the module docstring for `method`."""
    meter = BlockMeter(space_cfg, device=device, batch_size=batch_size, precision=precision,
                       channels_last=channels_last, method=method, seed=seed)
    for _ in range(warmup):
        meter.round(record=False)
    for _ in range(repeats):
        meter.round()
    return meter.table(warmup=warmup)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------- command line

@cli_entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastnas.latency",
                                description="Measure a latency look-up table (ms per layer choice) on this device.")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--out", required=True, help="where to write the table (JSON)")
    p.add_argument("--config", help="run config whose space to measure (default: the default space)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--method", default="in_context", choices=["in_context", "isolated"])
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's default)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. space.resolution=224")
    args = parse_args(p, argv)
    for name in ("batch_size", "repeats"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    table = build_table(cfg.space, device=device, batch_size=args.batch_size, precision=args.precision,
                        channels_last=not args.no_channels_last, method=args.method,
                        warmup=args.warmup, repeats=args.repeats, seed=args.seed)
    table.save(args.out)
    m = table.meta
    print(f"latency table: {args.out} ({m['device_name']}, batch {m['batch_size']}, {m['resolution']}px, "
          f"{m['precision']}, {m['method']}; fixed {table.fixed_ms:.3f} ms; "
          f"built in {time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
