"""Configuration: YAML files plus `section.key=value` overrides into validated dataclasses.

One `Config` holds every section (space, data, train, eval, search); each command reads the
sections it needs, so one file describes a whole run. Every value is checked against its
field's type and allowed values here, and a mistake is a `ConfigError` naming the key.

    cfg = load_config("configs/quickstart.yaml", ["train.lr=0.1", "data.backend=torchvision"])
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from fastnas.errors import UserError
from fastnas.selection import DEFAULT_SPREAD_SHARE, DEFAULT_TARGET_DIVERSITY

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"


class ConfigError(UserError):
    pass


# ----------------------------------------------------------------------------- sections

@dataclass
class SpaceConfig:
    """The search space. Defaults: MobileNetV2/ProxylessNAS-style space for 224x224 ImageNet.

    `type` picks the space (fastnas.spaces): `mbconv` (the MBConv chain; the keys from stem_channels
    to dropout) or `nb201` (the NAS-Bench-201 cell; cell_channels and cells_per_stage). resolution and
    num_classes apply to both; a space ignores the other's keys.
    """

    type: Literal["mbconv", "nb201"] = "mbconv"
    resolution: int = 224
    num_classes: int = 1000
    stem_channels: int = 32                 # fixed 3x3 stride-2 conv
    first_channels: int = 16                # fixed first MBConv (e1, k3, stride 1)
    channels: list[int] = field(default_factory=lambda: [24, 32, 64, 96, 160, 320])
    depths: list[int] = field(default_factory=lambda: [4, 4, 4, 4, 4, 1])
    strides: list[int] = field(default_factory=lambda: [2, 2, 2, 1, 2, 1])
    kernel_sizes: list[int] = field(default_factory=lambda: [3, 5, 7])
    expansions: list[int] = field(default_factory=lambda: [3, 6])
    allow_skip: bool = True                 # skip only where stride is 1 and channels do not change
    head_channels: int = 1280
    dropout: float = 0.2
    cell_channels: int = 16                 # nb201: C, channels of the first stage (2C, 4C after)
    cells_per_stage: int = 5                # nb201: N, cells in each of the three stages

    def validate(self, where: str) -> None:
        _check(where + ".resolution", self.resolution >= 8, "an integer >= 8")
        _check(where + ".num_classes", self.num_classes >= 1, "an integer >= 1")
        if self.type == "nb201":
            _check(where + ".cell_channels", self.cell_channels >= 1, "an integer >= 1")
            _check(where + ".cells_per_stage", self.cells_per_stage >= 1, "an integer >= 1")
            return
        n = len(self.channels)
        if not (len(self.depths) == len(self.strides) == n) or n == 0:
            raise ConfigError(f"{where}: channels, depths and strides must be non-empty lists of equal length "
                              f"(got {len(self.channels)}, {len(self.depths)}, {len(self.strides)})")
        _check(where + ".depths", all(d >= 1 for d in self.depths), "integers >= 1")
        _check(where + ".strides", all(s in (1, 2) for s in self.strides), "1 or 2")
        _check(where + ".channels", all(c >= 1 for c in self.channels), "integers >= 1")
        _check(where + ".kernel_sizes", bool(self.kernel_sizes) and all(k % 2 == 1 and k >= 1 for k in self.kernel_sizes),
               "a non-empty list of odd integers")
        _check(where + ".expansions", bool(self.expansions) and all(e >= 1 for e in self.expansions),
               "a non-empty list of integers >= 1")
        _check(where + ".dropout", 0.0 <= self.dropout < 1.0, "a float in [0, 1)")
        for k in ("stem_channels", "first_channels", "head_channels"):
            _check(f"{where}.{k}", getattr(self, k) >= 1, "an integer >= 1")


@dataclass
class DataConfig:
    """Where images come from and how they are decoded."""

    path: str = "data/imagenette-sample"    # ImageNet folder layout: train/<wnid>/*.JPEG, val/<wnid>/*.JPEG
    backend: Literal["auto", "dali", "torchvision", "memory", "synthetic"] = "auto"   # memory: decoded once, on device
    workers: int = 2                        # DALI threads or DataLoader workers
    calib_images: int = 500                 # calibration set for BN recalibration (drawn from train)
    val_images: int = 100                   # validation set used as fitness (drawn from val)
    val_split: str = "val"                  # folder of the validation split (CIFAR's is "test")
    holdout: float = 0.0                    # > 0: this share of each train/ class is the validation set instead
                                            # of val_split, and training and calibration use only the rest
                                            # (NAS-Bench-201's cifar10-valid: 0.5)
    split_seed: int = 0                     # seed of the holdout split
    normalization: Literal["imagenet", "cifar"] = "imagenet"     # mean/std of the model input
    augment: Literal["random_resized_crop", "pad_crop"] = "random_resized_crop"
                                            # pad_crop (CIFAR): random crop of the 4-px zero-padded image + flip;
                                            # evaluation images as they are, not 256/224 centre-cropped (images
                                            # not res x res are first fitted: shorter side resized, centre crop)
    synthetic_images: int = 1280            # epoch length of the synthetic backend
    synthetic_classes: int = 10             # labels of the synthetic backend are in [0, synthetic_classes)

    def validate(self, where: str) -> None:
        _check(where + ".workers", self.workers >= 0, "an integer >= 0")
        _check(where + ".calib_images", self.calib_images >= 1, "an integer >= 1")
        _check(where + ".val_images", self.val_images >= 1, "an integer >= 1")
        _check(where + ".val_split", self.val_split not in ("", "train") and "/" not in self.val_split,
               "a folder name beside train/ (e.g. val or test)")
        _check(where + ".holdout", 0.0 <= self.holdout < 1.0, "a float in [0, 1)")
        _check(where + ".synthetic_images", self.synthetic_images >= 1, "an integer >= 1")
        _check(where + ".synthetic_classes", self.synthetic_classes >= 1, "an integer >= 1")


@dataclass
class TrainConfig:
    """Supernet training (SGD + Nesterov, cosine with warm-up, label smoothing)."""

    run_dir: str = "runs/supernet"
    epochs: int = 120
    max_steps: int = 0                      # > 0 stops early after this many optimizer steps
    batch_size: int = 128                   # per rank
    lr: float = 0.5                         # for a global batch of 1024; scaled linearly
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 4e-5              # not applied to BN and bias
    label_smoothing: float = 0.1
    warmup_steps: int = 500
    sampler: Literal["uniform", "fair"] = "uniform"
    macs_range: list[float] = field(default_factory=list)   # [low, high] in MACs; empty = no constraint
    exclude_choices: list[str] = field(default_factory=list)  # choice names never trained, e.g. [none] (NB201)
    choice_lr_scale: float = 1.0            # lr multiplier of the searchable choices' weights (trained on 1/k of the steps)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    ckpt_every: int = 500                   # steps
    log_every: int = 10                     # steps
    seed: int = 0
    deterministic: bool = False
    grad_sync: Literal["auto", "ddp", "active_path"] = "auto"
    compile: bool = False
    nan_patience: int = 20                  # consecutive non-finite-loss steps skipped before training stops

    def validate(self, where: str) -> None:
        for k in ("epochs", "batch_size", "ckpt_every", "log_every", "nan_patience"):
            _check(f"{where}.{k}", getattr(self, k) >= 1, "an integer >= 1")
        _check(where + ".max_steps", self.max_steps >= 0, "an integer >= 0")
        _check(where + ".warmup_steps", self.warmup_steps >= 0, "an integer >= 0")
        _check(where + ".lr", self.lr > 0, "a float > 0")
        _check(where + ".choice_lr_scale", self.choice_lr_scale > 0, "a float > 0")
        _check(where + ".momentum", 0 <= self.momentum < 1, "a float in [0, 1)")
        _check(where + ".weight_decay", self.weight_decay >= 0, "a float >= 0")
        _check(where + ".label_smoothing", 0.0 <= self.label_smoothing < 1.0, "a float in [0, 1)")
        _check(where + ".macs_range", len(self.macs_range) in (0, 2) and
               (not self.macs_range or 0 <= self.macs_range[0] < self.macs_range[1]),
               "[] or [low, high] with 0 <= low < high")


@dataclass
class EvalConfig:
    """Candidate evaluation: BN recalibration over the calibration set, accuracy on the val set."""

    checkpoint: str = "runs/supernet/checkpoint.pt"
    eval_batch: int = 256
    mode: Literal["exact", "approx"] = "exact"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    cache_mb: int = 2048                    # bound on cached activations and statistics (LRU)
    calib_batch: int = 256                  # BN recalibration batch: part of the fitness definition (BN statistics
                                            # depend on it), unlike eval_batch, which is only a speed knob
    approx_rounds: int = 1                  # approx mode: passes over the calibration set with fair random paths
    fitness: Literal["top1", "neg_loss"] = "top1"   # what the search maximises: top-1 %, or minus the mean
                                            # cross-entropy (continuous, so less noisy on few images)

    def validate(self, where: str) -> None:
        _check(where + ".eval_batch", self.eval_batch >= 1, "an integer >= 1")
        _check(where + ".cache_mb", self.cache_mb >= 0, "an integer >= 0")
        _check(where + ".calib_batch", self.calib_batch >= 1, "an integer >= 1")
        _check(where + ".approx_rounds", self.approx_rounds >= 1, "an integer >= 1")


@dataclass
class SearchConfig:
    """The genetic search with mean-field-game selection."""

    out_dir: str = "runs/search"
    generations: int = 20
    population: int = 50
    selector: str = "mfg"
    # MFG selection. The default rule (tau 0, target_diversity > 0) needs no tuning per dataset: each
    # generation tau = sqrt(fitness SE^2 + (spread_share x the pool's robust fitness spread)^2) and lam
    # is the smallest crowding price that keeps the parents' diversity >= target_diversity.
    tau: float = 0.0                        # 0: the default rule; > 0: a fixed temperature (fitness units)
    lam: float = 1.0                        # fixed crowding price, used when target_diversity is 0
    target_diversity: float = DEFAULT_TARGET_DIVERSITY   # share of layers in which two parents differ
    spread_share: float = DEFAULT_SPREAD_SHARE
    mutation_prob: float = 0.1
    crossover: Literal["uniform", "single_point"] = "uniform"
    crossover_prob: float = 0.5
    elites: int = 2
    min_macs: float = 0.0
    max_macs: float = 0.0                   # 0 = no bound
    min_params: float = 0.0
    max_params: float = 0.0                 # 0 = no bound
    max_latency_ms: float = 0.0             # 0 = no bound; needs latency_table
    latency_table: str = ""
    ground_truth: str = ""                  # "" none; "nb201" the bundled NAS-Bench-201 table; or a CSV path of
                                            # that format: true accuracies of every candidate in the outputs
    max_retries: int = 1000
    seed: int = 0

    def validate(self, where: str) -> None:
        _check(where + ".generations", self.generations >= 1, "an integer >= 1")
        _check(where + ".population", self.population >= 2, "an integer >= 2")
        _check(where + ".tau", self.tau >= 0, "a float >= 0 (0: the default rule)")
        _check(where + ".spread_share", self.spread_share > 0, "a float > 0")
        _check(where + ".lam", self.lam >= 0, "a float >= 0")
        _check(where + ".target_diversity", 0 <= self.target_diversity < 1, "a float in [0, 1)")
        _check(where + ".mutation_prob", 0 <= self.mutation_prob <= 1, "a float in [0, 1]")
        _check(where + ".crossover_prob", 0 <= self.crossover_prob <= 1, "a float in [0, 1]")
        _check(where + ".elites", 0 <= self.elites < self.population, "an integer in [0, population)")
        _check(where + ".max_retries", self.max_retries >= 1, "an integer >= 1")


@dataclass
class Config:
    space: SpaceConfig = field(default_factory=SpaceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- loading

def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a YAML config (or the defaults when `path` is None) and apply `section.key=value` overrides.

    A section may be given as a file: `space: mobilenetv2` reads configs/space/mobilenetv2.yaml,
    `space: path/to/space.yaml` reads that file (relative to the config's folder, then to the cwd).
    """
    raw: dict = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        raw = _read_yaml(path)
        base = path.resolve().parent
    for key, value in list(raw.items()):
        if isinstance(value, str) and key in _SECTIONS:
            raw[key] = _read_yaml(_find_section_file(key, value, base))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"override {item!r}: expected section.key=value, e.g. train.lr=0.1")
        section, _, name = key.partition(".")
        if section in _SECTIONS and name == "" :
            raise ConfigError(f"override {item!r}: expected section.key=value")
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        if section in raw and not isinstance(raw[section], dict):
            raw[section] = {}
        raw.setdefault(section, {})[name] = value
    return config_from_dict(raw)


def config_from_dict(raw: dict) -> Config:
    """Build and validate a Config from nested plain data (e.g. a checkpoint's saved config)."""
    if not isinstance(raw, dict):
        raise ConfigError("a config must be a mapping of sections")
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section {unknown[0]!r} (allowed: {', '.join(_SECTIONS)})")
    sections = {}
    for name, cls in _SECTIONS.items():
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"section {name!r}: expected a mapping of keys, got {values!r}")
        sections[name] = _build(cls, values, name)
    return Config(**sections)


def config_from_record(raw: dict) -> Config:
    """The Config a checkpoint or export recorded, read by a newer fastnas: keys this version no
    longer has (a retired setting) are dropped rather than refused; everything else is validated."""
    if not isinstance(raw, dict):
        raise ConfigError("a config must be a mapping of sections")
    known = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in _SECTIONS.items()}
    return config_from_dict({name: {k: v for k, v in (raw.get(name) or {}).items() if k in known[name]}
                             for name in _SECTIONS if isinstance(raw.get(name) or {}, dict)})


def section_from_dict(cls, values: dict, where: str):
    """Build one validated section dataclass (e.g. SpaceConfig from a checkpoint)."""
    return _build(cls, values, where)


_SECTIONS = {"space": SpaceConfig, "data": DataConfig, "train": TrainConfig,
             "eval": EvalConfig, "search": SearchConfig}


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _find_section_file(section: str, value: str, base: Path) -> Path:
    candidates = [base / value, Path.cwd() / value, CONFIG_DIR / section / f"{value}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError(f"{section}: no config file {value!r} (looked in {base}, the current folder "
                      f"and {CONFIG_DIR / section})")


def _build(cls, values: dict, where: str):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            raise ConfigError(f"unknown key '{where}.{key}' (allowed: {', '.join(names)})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    obj = cls(**kwargs)
    obj.validate(where)
    return obj


def _coerce(value: Any, tp, key: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:                       # Optional[X]
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(value, inner, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not allowed (allowed: {', '.join(map(str, args))})")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):                   # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {tp} for {key}")


def _check(key: str, ok: bool, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: must be {allowed}")
