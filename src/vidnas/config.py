"""Configuration: frozen dataclasses whose defaults are the papers' numbers.

Resolution order: dataclass defaults -> YAML preset (``--config``) -> ``--set a.b=c`` overrides.
The resolved config is written into every run directory (``config.yaml``) so a result can be reproduced.

Sources quoted in comments:
    [ST-NAS]  Lee et al., "Spatial-Temporal NAS for Fast Surgical Segmentation" (../shared/seeds/000_*).
    [CELLS]   Nekrasov et al., "Architecture Search of Dynamic Cells for Semantic Video Segmentation" (001_*).
    [SPEC]    ../shared/docs/SPEC.md, where a paper is silent.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vidnas.utils import atomic_write_text

__all__ = [
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "StnasConfig",
    "CellsConfig",
    "Config",
    "ConfigError",
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "save_config",
    "validate_config",
]


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key or file."""


@dataclass(frozen=True)
class DataConfig:
    """Where the clips come from and how they are cut and augmented."""

    format: str = "synthetic"  # one of vidnas.data.FORMATS
    root: str | None = None  # data set root; None only for `synthetic`
    train_split: str = "train"
    val_split: str = "val"
    height: int = 320  # [ST-NAS] images resized to 320x576 (HxW)
    width: int = 576
    window: int = 11  # [ST-NAS] time window of 11 frames
    temporal: str = "causal"  # "causal": window ends at the annotated frame; "centred": centred on it [ST-NAS]
    supervise: str = "target"  # "target": only the window's annotated target frame; "all": every annotated frame
    rotate_degrees: float = 10.0  # [ST-NAS] random rotation in [-10, 10] degrees
    hflip: bool = True  # [ST-NAS] random horizontal flip
    scale_range: tuple[float, float] = (1.0, 1.0)  # random scale then crop/pad back to height x width, the same for
    # every frame of a clip; (1, 1) = off; [CELLS] uses (0.5, 2.0)
    augment: bool = True  # train-time augmentation on/off (never applied to eval)
    ignore_index: int = 255  # [SPEC] void / unknown label values
    frame_stride: int = 1  # use every n-th video frame when building windows
    selection_videos: tuple[str, ...] = ()  # videos of train_split held out as the selection split: `vidnas train`
    # trains on the others and picks best.pt on them; val_split is then read only at the end (CamVid: 0001TP)
    val_frame_stride: int | None = None  # windows of the val split: every n-th frame (None: frame_stride); CamVid
    # trains on 1 Hz annotations and validates on a 15 Hz clip: 15 makes a val window span what a train window spans
    num_workers: int = 0
    persistent_workers: bool = False  # keep loader workers alive across epochs (with num_workers > 0)
    cache_frames: int | None = None  # decoded+resized frames kept in memory (None: just enough for one window)
    # synthetic generator [SPEC]: seeded, deterministic; some frames corrupted while labels stay true
    synthetic_videos: int = 6
    synthetic_frames: int = 24
    synthetic_classes: int = 4
    synthetic_corruption: float = 0.3  # probability that a frame is corrupted
    synthetic_seed: int = 0
    synthetic_classes_by: str = "appearance"  # "appearance" (colour + stripes per class) | "shape" (class = outline)


@dataclass(frozen=True)
class ModelConfig:
    """Encoder + decoder of a VideoSegmenter (before any architecture file is applied)."""

    encoder: str = "swin_tiny"  # swin_tiny | swin_base | mobilenetv2 | efficientnet_lite0 | tiny variants
    encoder_depths: tuple[int, ...] | None = None  # per-stage depth override, e.g. (1, 2, 3, 2) = [ST-NAS] Swin Short
    weights: str | None = None  # None (random init), "imagenet" (efficientnet_lite0 only) or a local checkpoint path
    decoder: str = "sptcn"  # sptcn | mstcn (multi-scale spatial-temporal) | head (non-temporal, window 1) | arch2
    decoder_channels: int = 128  # [SPEC] SP-TCN reduction width F
    full_channels: bool = False  # [ST-NAS] FC: drop the channel-reduction conv
    decoder_dilations: tuple[int, ...] = (1, 2, 4, 8)  # [SPEC] temporal dilations of the residual layers
    decoder_scales: tuple[int, ...] = (32, 8, 4)  # mstcn: strides read, coarse (temporal trunk) first
    fuse_channels: int = 64  # mstcn: width of the finer paths and the fusion
    fusion: str = "fpn"  # mstcn: fpn (FPN-style paths, searchable) | arch2 (arch2's decoder on a temporal trunk) |
    # arch2_res (the trunk a zero-initialised branch on arch2's stride-32 lateral: starts as arch2, `--init` from it)
    arch: str | None = None  # path to an arch.json; overrides depths/ops/full_channels


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation schedule of the final model."""

    epochs: int = 25  # [ST-NAS] final model trained for 25 epochs
    batch_size: int = 16  # [ST-NAS]
    lr: float = 1e-4  # [ST-NAS] AdamW lr 1e-4
    weight_decay: float = 1e-3  # [ST-NAS] AdamW weight decay 1e-3
    betas: tuple[float, float] = (0.9, 0.999)  # [ST-NAS] "0.9 momentum"
    optimizer: str = "adamw"  # adamw [ST-NAS] | sgd (momentum 0.9, used for arch2 [CELLS appendix])
    schedule: str = "constant"  # constant [ST-NAS] | poly (power 0.9) [CELLS appendix, DeepLab] | cosine
    warmup_epochs: float = 0.0  # linear learning-rate warm-up from 0 over this many epochs (fractions allowed)
    decoder_lr_scale: float = 1.0  # non-encoder parameters train at lr * scale (the encoder at lr * encoder_lr_scale)
    loss: str = "ce"  # ce | balanced (median-frequency class weights of the train split) | ohem (hardest pixels)
    ohem_keep: float = 0.25  # ohem: the fraction of supervised pixels (the hardest) that count in each batch
    aux_weight: float = 0.3  # weight of auxiliary losses when a model returns them [CELLS appendix]
    encoder_lr_scale: float = 1.0  # encoder lr = lr * scale (own param group); 0 freezes it (weights and BN stats)
    context_grad: bool = True  # false: with data.supervise=target only the target frame's encoder pass gets gradients
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | cuda:N (--device on every command)
    amp: str = "none"  # none | bf16 | fp16: mixed precision of training, supernet phases and cell training
    channels_last: bool = False  # `vidnas train`: a CNN encoder's weights (and so its maps) in the channels-last
    # memory format (vidnas.models.fastpath; tensor cores on a GPU); the same values up to summation order
    max_steps_per_epoch: int | None = None  # cap for quick runs
    val_every: int = 1
    log_every: int = 10
    out_dir: str = "runs"


@dataclass(frozen=True)
class StnasConfig:
    """ST-NAS search [ST-NAS Sec. 3.2, 3.3]."""

    encoder_epochs: int = 5  # [ST-NAS] supernet encoder trained for 5 epochs
    decoder_epochs: int = 5  # [ST-NAS] supernet decoder trained for 5 epochs
    lam: float = 1e-3  # Eq. 2 lambda [SPEC: user-chosen; sweep with --lambdas]
    threshold: float = 1.0  # [ST-NAS] remove block i while alpha_i < 1
    warmup_epochs: int = 1  # [ST-NAS] "warm-up epochs" before beta trains (count not given) [SPEC]
    arch_lr: float = 3e-4  # DARTS default for architecture weights [SPEC]
    mode: str = "joint"  # "joint" (paper, single level) | "alternating" (first-order, data halves)
    latency_table: str | None = None  # JSON from `vidnas latency`; None = measure now
    candidates: tuple[str, ...] | None = None  # decoder-search ops (names in OPS); None = the paper's seven
    # Depth decision [SPEC "Decisions revised"]: "truncated" (default for user presets) picks the depths minimising
    # the truncated validation loss L(depths) + lam * latency(depths) (or the most accurate that fits
    # target_latency_ms); "paper" is the paper's shrink rule on the alphas (configs/paper_stnas.yaml).
    depth_rule: str = "truncated"
    depth_val_batches: int = 8  # validation batches behind every truncated loss (the first ones, fixed order)
    bn_calib_batches: int = 4  # training batches that recalibrate BatchNorm before each truncated loss
    target_latency_ms: float | None = None  # budget mode: table latency of encoder + decoder must fit (ms)
    # Decoder search: Adam moves a beta by about its lr per step, so the betas' lr is beta_travel / (arch steps of
    # the decoder phase) [SPEC]; None = use arch_lr for the betas too. 10: the weights separate (docs/STNAS.md).
    beta_travel: float | None = 10.0
    decoder_seeds: int = 1  # decoder searches averaged (softmax weights) before the argmax
    # true: the decoder search's loss adds lam * sum_slots softmax(beta) . table latency of the slot's candidates
    # (ms; the same table and lambda as the depth decision) [SPEC revised]; false: the paper's task loss only
    decoder_latency: bool = False


@dataclass(frozen=True)
class CellsConfig:
    """Dynamic-cell search [CELLS Sec. 3, 4.1, 4.2]."""

    num_layers: int = 5  # [CELLS] 5 on CamVid, 4 on CityScapes
    candidates: int = 30
    seq_len: int = 3  # [CELLS] CamVid sequences of 3 frames
    cell_epochs: int = 20  # [CELLS] 20 epochs for CamVid
    cell_lr: float = 8e-3  # [CELLS] Adam 8e-3
    cell_batch_size: int = 48  # [CELLS] mini-batches of 48 sequences
    controller_hidden: int = 100  # [CELLS] 2-layer LSTM, 100 hidden units
    controller_lr: float = 1e-4  # [CELLS] PPO learning rate 1e-4
    ppo_clip: float = 0.1  # [SPEC]
    baseline_decay: float = 0.95  # [SPEC] EMA reward baseline
    grad_clip: float = 2.0  # [SPEC]
    entropy_weight: float = 0.0  # optional entropy bonus [SPEC]
    advantage_norm: bool = False  # divide advantages by the moving std of the rewards (user presets; not the paper)
    sampler: str = "ppo"  # ppo (the controller learns) | random (a frozen uniform controller: the random baseline)
    meta_val_fraction: float = 0.1  # [CELLS] meta-train 90% / meta-val 10%
    meta_split: str = "auto"  # auto | video | block: frame-disjoint [SPEC revised]; window: the old, leaky split
    # latency-aware reward [SPEC revised, MnasNet]: accuracy * (latency / target) ** latency_weight; 0 = [CELLS]
    latency_weight: float = 0.0
    latency_target_ms: float | None = None  # None = the static network's frame, measured beside each candidate
    latency_size: tuple[int, int] | None = None  # deployment (H, W) of the cost measurement; None = data size
    latency_frames: int = 10  # timed frames per model and candidate; 0 = no cost measurement (needs weight 0)
    latency_warmup: int = 2
    # proxy budget: the search caches features at data size * proxy_scale (multiples of 32); top-k at full size
    proxy_scale: float = 1.0
    op_preset: str = "paper"  # paper (all registered ops and aggregations) | cpu (no deform3x3, attention, conv3d)
    top_k: int = 2  # [CELLS] top-2 cells trained end to end
    workers: int = 2
    executor: str = "local"  # local | ray
    cache: str = "memory"  # memory | disk
    aux_weight: float = 0.3  # [CELLS appendix] auxiliary loss weight of arch2
    ops: tuple[str, ...] | None = None  # None = the op_preset's list (paper: all eleven of SPEC.md)
    aggregations: tuple[str, ...] | None = None  # None = the op_preset's list (paper: all six of SPEC.md)


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration of a run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stnas: StnasConfig = field(default_factory=StnasConfig)
    cells: CellsConfig = field(default_factory=CellsConfig)


# ---------------------------------------------------------------------------------------------------- (de)serialise


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) suitable for YAML/JSON."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Coerce a YAML/CLI value to the annotated type ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: cannot interpret {value!r} as {tp}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").replace("[", "").replace("]", "").split(",")
                     if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")


def config_from_dict(d: dict[str, Any], cls: type = Config, prefix: str = "") -> Any:
    """Build a (nested) config dataclass from a dict; unknown keys raise ConfigError listing the valid ones."""
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(d).__name__}")
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if k not in names:
            raise ConfigError(f"unknown config key {key!r}; valid keys here: {', '.join(names)}")
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            kwargs[k] = config_from_dict(v or {}, tp, prefix=f"{key}.")
        else:
            kwargs[k] = _coerce(v, tp, key)
    out = cls(**kwargs)
    return validate_config(out) if cls is Config else out


# Value checks run on every config built from a file, a dict or overrides (config_from_dict): a bad value fails at
# once, naming the key, before any data is read or any model built. key -> (test, what a valid value is).
_CHECKS: dict[str, tuple[Any, str]] = {
    "data.height": (lambda v: v >= 1, ">= 1"),
    "data.width": (lambda v: v >= 1, ">= 1"),
    "data.window": (lambda v: v >= 1, ">= 1"),
    "data.temporal": (lambda v: v in ("causal", "centred", "centered"), "causal or centred"),
    "data.supervise": (lambda v: v in ("target", "all"), "target or all"),
    "data.frame_stride": (lambda v: v >= 1, ">= 1"),
    "data.num_workers": (lambda v: v >= 0, ">= 0"),
    "data.ignore_index": (lambda v: v >= 0, ">= 0"),
    "data.rotate_degrees": (lambda v: v >= 0, ">= 0"),
    "data.synthetic_videos": (lambda v: v >= 1, ">= 1"),
    "data.synthetic_frames": (lambda v: v >= 1, ">= 1"),
    "data.synthetic_classes": (lambda v: v >= 2, ">= 2"),
    "data.synthetic_corruption": (lambda v: 0 <= v <= 1, "between 0 and 1"),
    "model.decoder_channels": (lambda v: v >= 1, ">= 1"),
    "model.decoder_dilations": (lambda v: len(v) >= 1 and all(d >= 1 for d in v), "a non-empty list of values >= 1"),
    "model.encoder_depths": (lambda v: v is None or all(d >= 1 for d in v), "null or a list of values >= 1"),
    "train.epochs": (lambda v: v >= 1, ">= 1"),
    "train.batch_size": (lambda v: v >= 1, ">= 1"),
    "train.lr": (lambda v: v > 0, "> 0"),
    "train.weight_decay": (lambda v: v >= 0, ">= 0"),
    "train.optimizer": (lambda v: v.lower() in ("adamw", "sgd"), "adamw or sgd"),
    "train.schedule": (lambda v: v in ("constant", "poly", "cosine"), "constant, poly or cosine"),
    "train.warmup_epochs": (lambda v: v >= 0, ">= 0"),
    "train.decoder_lr_scale": (lambda v: v > 0, "> 0"),
    "train.loss": (lambda v: v in ("ce", "balanced", "ohem"), "ce, balanced or ohem"),
    "train.ohem_keep": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "data.scale_range": (lambda v: 0 < v[0] <= v[1], "two values 0 < min <= max"),
    "data.val_frame_stride": (lambda v: v is None or v >= 1, "null or >= 1"),
    "train.aux_weight": (lambda v: v >= 0, ">= 0"),
    "train.encoder_lr_scale": (lambda v: v >= 0, ">= 0 (0 freezes the encoder)"),
    "train.max_steps_per_epoch": (lambda v: v is None or v >= 1, "null or >= 1"),
    "train.val_every": (lambda v: v >= 1, ">= 1"),
    "train.log_every": (lambda v: v >= 1, ">= 1"),
    "train.amp": (lambda v: v in ("none", "bf16", "fp16"), "none, bf16 or fp16"),
    "stnas.encoder_epochs": (lambda v: v >= 0, ">= 0"),
    "stnas.decoder_epochs": (lambda v: v >= 0, ">= 0"),
    "stnas.warmup_epochs": (lambda v: v >= 0, ">= 0"),
    "stnas.lam": (lambda v: v >= 0, ">= 0 (lambda weighs a latency penalty; a negative one would reward latency)"),
    "stnas.arch_lr": (lambda v: v > 0, "> 0"),
    "stnas.mode": (lambda v: v in ("joint", "alternating"), "joint or alternating"),
    "cells.num_layers": (lambda v: v >= 1, ">= 1"),
    "cells.candidates": (lambda v: v >= 1, ">= 1"),
    "cells.seq_len": (lambda v: v >= 2, ">= 2 (a key frame and at least one cell frame)"),
    "cells.cell_epochs": (lambda v: v >= 1, ">= 1"),
    "cells.cell_lr": (lambda v: v > 0, "> 0"),
    "cells.cell_batch_size": (lambda v: v >= 1, ">= 1"),
    "cells.controller_lr": (lambda v: v > 0, "> 0"),
    "cells.meta_val_fraction": (lambda v: 0 < v < 1, "between 0 and 1"),
    "cells.top_k": (lambda v: v >= 0, ">= 0"),
    "cells.workers": (lambda v: v >= 0, ">= 0 (0 runs candidates in this process)"),
    "cells.executor": (lambda v: v in ("local", "ray"), "local or ray"),
    "cells.cache": (lambda v: v in ("memory", "disk"), "memory or disk"),
}


def validate_config(cfg: Config) -> Config:
    """Check every value of ``_CHECKS``; returns ``cfg``.

    Raises:
        ConfigError: ``section.key=value: must be ...`` for the first bad value.
    """
    for key, (ok, what) in _CHECKS.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not ok(value):
            raise ConfigError(f"{key}={value!r}: must be {what}")
    return cfg


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """Apply ``a.b=c`` overrides (values parsed as YAML scalars, then coerced to the field's type).

    Example: ``apply_overrides(cfg, ["train.epochs=2", "model.encoder_depths=1,2,3,2"])``.
    """
    d = config_to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        path, raw = item.split("=", 1)
        parts = path.strip().split(".")
        node: Any = d
        for p in parts[:-1]:
            if not isinstance(node, dict) or p not in node:
                raise ConfigError(f"override {item!r}: unknown section {p!r}; valid: {', '.join(d)}")
            node = node[p]
        if not isinstance(node, dict) or parts[-1] not in node:
            valid = ", ".join(node) if isinstance(node, dict) else ""
            raise ConfigError(f"override {item!r}: unknown key {parts[-1]!r}; valid: {valid}")
        try:
            val = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            val = raw
        if isinstance(val, str) and "," in val:
            val = [yaml.safe_load(x) for x in val.split(",") if x.strip()]
        node[parts[-1]] = val
    return config_from_dict(d)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file at ``path`` (if given), then ``overrides``."""
    cfg = Config()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            # presets can be named without their folder: "tiny" -> configs/tiny.yaml
            cand = _preset_path(str(path))
            if cand is None:
                raise ConfigError(f"config file not found: {p}")
            p = cand
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML: {e}") from e
        try:
            cfg = config_from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from e
    if overrides:
        cfg = apply_overrides(cfg, list(overrides))
    return cfg


def _preset_path(name: str) -> Path | None:
    """Find a preset by name in ./configs or the repository's configs/ folder."""
    stem = name[:-5] if name.endswith(".yaml") else name
    for base in (Path.cwd() / "configs", Path(__file__).resolve().parents[2] / "configs"):
        cand = base / f"{stem}.yaml"
        if cand.is_file():
            return cand
    return None


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


