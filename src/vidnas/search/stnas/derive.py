"""Deriving from the supernets [ST-NAS Sec. 3.2, 3.3]: the shrink rule for the encoder depths, the derived ``Arch``
(depths and decoder ops, to which ``record.write_search_arch`` adds the search record) and ``derived_init.pt`` (the
derived model carrying the supernets' weights, BatchNorm recalibrated: ``recalibrate_batchnorm``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vidnas.checkpoint import save_checkpoint
from vidnas.config import Config, config_to_dict
from vidnas.models import VideoSegmenter, build_model
from vidnas.models.architecture import OPS_PER_LAYER, Arch
from vidnas.models.decoders.mstcn import OPS_PER_SCALE
from vidnas.models.multiscale import MultiScaleSegmenter

if TYPE_CHECKING:
    from vidnas.search.stnas.supernet import DecoderSupernet, DepthSupernet

__all__ = ["shrink_depth", "split_slot_ops", "slot_ops", "derive_arch", "recalibrate_batchnorm", "save_derived_init"]

logger = logging.getLogger(__name__)


def shrink_depth(alphas: Sequence[float], threshold: float = 1.0, *, min_blocks: int = 1) -> int:
    """The shrink rule [ST-NAS Sec. 3.2]: how many leading blocks of a stage to keep.

    From the last block backwards, block i is removed while ``alpha_i < threshold``; the first block met with
    ``alpha_i >= threshold`` stops the scan, and it and all blocks before it are kept. At least ``min_blocks`` blocks
    are kept (fewer only if the stage has fewer). Blocks can only go from the end because block i + 1 reads block i.

    Examples (threshold 1): ``[1.2, 0.5, 0.9] -> 1``, ``[0.3, 1.5, 0.2, 0.1] -> 2``, ``[0.2, 0.4] -> 1``,
    ``[] -> 0``.

    Args:
        alphas: the stage's alpha values, block 1 first.
        threshold: keep the last block whose alpha reaches it (paper: 1).
        min_blocks: lower bound on the kept blocks (paper: 1).

    Returns:
        The number of blocks kept (a prefix of the stage).
    """
    keep = len(alphas)
    floor = min(max(min_blocks, 0), keep)
    while keep > floor and float(alphas[keep - 1]) < threshold:
        keep -= 1
    return keep


def split_slot_ops(base: Arch, ops: Sequence[str]) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """``(decoder_ops, scale_ops)`` of ``base``'s decoder from one op per searched slot, in slot order.

    SP-TCN: ``(ops, None)``. ``mstcn``: the trunk's ``4 * len(dilations)`` slots (absent when only the finer scales
    were searched: None) then ``3`` per finer scale (path op 1, path op 2, fusion op, coarse to fine).

    Raises:
        ValueError: a count that fits neither.
    """
    ops = tuple(ops)
    if base.decoder != "mstcn":
        return ops, None
    n_scale = OPS_PER_SCALE * (len(base.scales) - 1)
    n_trunk = OPS_PER_LAYER * len(base.dilations)
    if len(ops) == n_scale:
        return None, ops
    if len(ops) == n_trunk + n_scale:
        return ops[:n_trunk], ops[n_trunk:]
    raise ValueError(f"{len(ops)} decoder ops for the mstcn decoder: expected {n_trunk + n_scale} ({n_trunk} trunk "
                     f"slots + {n_scale} scale slots) or {n_scale} (scale slots only)")


def slot_ops(arch: Arch) -> tuple[str, ...] | None:
    """The inverse of ``split_slot_ops``: one op per searched decoder slot, in slot order (``mstcn``: trunk, then the
    finer scales), or None when ``arch`` records no searched op."""
    if arch.decoder != "mstcn":
        return arch.decoder_ops
    if arch.decoder_ops is None and arch.scale_ops is None:
        return None
    return tuple(arch.decoder_ops or ()) + tuple(arch.scale_ops or ())


def derive_arch(
    base: Arch,
    *,
    depth_supernet: DepthSupernet | None = None,
    decoder_supernet: DecoderSupernet | None = None,
    threshold: float = 1.0,
    name: str | None = None,
    depths: Sequence[int] | None = None,
    decoder_ops: Sequence[str] | None = None,
) -> Arch:
    """``base`` with the depths and / or decoder ops derived by the given supernets.

    ``depths`` / ``decoder_ops``, when given, win over the supernets' own derivation (the truncated-loss depth rule,
    decoder ops from several seeds). ``decoder_ops`` is one op per searched slot: for an ``mstcn`` base the trunk's
    slots then the finer scales' (``split_slot_ops``), written to ``Arch.decoder_ops`` and ``Arch.scale_ops``. The
    derived architecture starts without ``base``'s ``extra`` (an architecture file the config pointed to may carry an
    older search record); ``vidnas.search.stnas.record.write_search_arch`` adds this search's record.
    """
    changes: dict[str, Any] = {"extra": {}}
    if depths is not None:
        changes["depths"] = tuple(int(d) for d in depths)
    elif depth_supernet is not None:
        changes["depths"] = depth_supernet.derive(threshold)
    if decoder_ops is not None or decoder_supernet is not None:
        ops = tuple(decoder_ops) if decoder_ops is not None else decoder_supernet.derive()  # type: ignore[union-attr]
        if base.decoder == "mstcn":
            changes["decoder_ops"], changes["scale_ops"] = split_slot_ops(base, ops)
        else:
            changes["decoder_ops"] = ops
            changes["decoder"] = "sptcn"
    if name is not None:
        changes["name"] = name
    return dataclasses.replace(base, **changes)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Sequence[Any], forward: Callable[[Any], Any]) -> int:
    """Recompute the running statistics of every BatchNorm of ``model`` on ``batches``.

    A derived model drops the other candidates of every mixed op and truncated stages drop blocks, so the inputs of
    later BatchNorm layers no longer have the statistics those layers tracked in the supernet. Here every BatchNorm
    that tracks statistics is reset and set to a cumulative average (``momentum=None``), so after the forward passes
    its ``running_mean`` / ``running_var`` are the average of the per-batch statistics over ``batches``. Only the
    BatchNorm layers are in training mode meanwhile (dropout, drop-path stay off); no weight changes. Momenta and
    train / eval modes are restored.

    Args:
        model: any module.
        batches: the calibration batches (training data).
        forward: ``batch -> anything``: runs ``model`` on one batch.

    Returns:
        The number of BatchNorm layers recalibrated (0: nothing to do, no forward pass run).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or not batches:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = [bn.momentum for bn in bns]
    try:
        model.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average: equal weight for every batch
            bn.train()
        for batch in batches:
            forward(batch)
    finally:
        for bn, mom in zip(bns, momenta, strict=True):
            bn.momentum = mom
        for m, mode in modes.items():
            m.training = mode
    logger.debug("recalibrated %d BatchNorm layers on %d batches", len(bns), len(batches))
    return len(bns)


def save_derived_init(path: Path, cfg: Config, arch: Arch, source: Any, *, encoder: nn.Module,
                      decoder: nn.Module, calib_batches: Sequence[Any] = (), device: Any = "cpu") -> Path:
    """The derived model carrying the supernets' trained weights, as an engine checkpoint (``derived_init.pt``).

    ``encoder`` is the derived encoder (the decoder search's, or ``DepthSupernet.derived_encoder``), ``decoder`` the
    derived decoder (``DecoderSupernet.derived_decoder()``, its mixing weights folded into the chosen ops, or the
    encoder search's baseline decoder). With ``calib_batches`` (training batches ``{"frames": (B, T, 3, H, W)}``)
    every BatchNorm is recalibrated on them (``recalibrate_batchnorm``), so the derived model computes what the
    supernet computed as closely as a single op per slot can. The state-dict names are those of
    ``build_model(cfg, arch)``, so ``vidnas train --arch arch.json --init derived_init.pt`` loads every tensor (checked
    here: a mismatch is logged).
    """
    derived: nn.Module
    if arch.decoder == "mstcn":
        derived = MultiScaleSegmenter(encoder, decoder, source.num_classes, scales=arch.scales,  # type: ignore[arg-type]
                                      window=arch.window, causal=arch.causal)
    else:
        derived = VideoSegmenter(encoder, decoder, source.num_classes, window=arch.window, causal=arch.causal)
    if calib_batches:
        derived.to(device)
        recalibrate_batchnorm(derived, calib_batches, lambda b: derived(b["frames"].to(device)))
    state = {k: v.detach().cpu() for k, v in derived.state_dict().items()}
    reference = build_model(cfg, arch, num_classes=source.num_classes).state_dict()
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    if missing or unexpected:
        logger.warning("derived_init.pt does not match build_model(arch): missing %s, unexpected %s",
                       missing[:5], unexpected[:5])
    return save_checkpoint(path, {
        "model": state,
        "epoch": -1,
        "config": config_to_dict(cfg),
        "arch": arch.to_dict(),
        "num_classes": source.num_classes,
        "class_names": list(source.class_names),
        "source": "stnas supernet",
    })
