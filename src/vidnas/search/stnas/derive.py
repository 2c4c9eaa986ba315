"""Deriving from the supernets [ST-NAS Sec. 3.2, 3.3]: the derived ``Arch`` (depths and decoder ops, to which
``record.write_search_arch`` adds the search record; the depths by the shrink rule ``supernet.shrink_depth`` or a
``depth`` decision), the derived decoder carrying the decoder supernet's weights with its mixing weights folded in
(``derived_decoder``) and ``derived_init.pt`` (the derived model carrying the supernets' weights, BatchNorm
recalibrated: ``recalibrate_batchnorm``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidnas.checkpoint import save_checkpoint
from vidnas.config import Config, config_to_dict
from vidnas.models import VideoSegmenter, build_model
from vidnas.models.architecture import OPS_PER_LAYER, Arch
from vidnas.models.decoders import DECODERS, OPS_PER_SCALE, Arch2SpaceDecoder, MultiScaleDecoder, SPTCNDecoder
from vidnas.models.decoders.arch2_space import TEMPORAL_OPS
from vidnas.models.multiscale import MultiScaleSegmenter
from vidnas.search.stnas.decoder_supernet import DecoderSupernet
from vidnas.search.stnas.supernet import DepthSupernet

__all__ = [
    "split_slot_ops",
    "slot_ops",
    "derive_arch",
    "derived_decoder",
    "recalibrate_batchnorm",
    "save_derived_init",
]

logger = logging.getLogger(__name__)


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
    slots then the finer scales' (``split_slot_ops``), written to ``Arch.decoder_ops`` and ``Arch.scale_ops``. An
    ``arch2_space`` base keeps its decoder; when no derived op reads the past the model is per frame and its window
    becomes 1 (streamed or decoded by window, it then costs one frame's decode, as arch2). The derived architecture
    starts without ``base``'s ``extra`` (an architecture file the config pointed to may carry an
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
        elif base.decoder == "arch2_space":
            changes["decoder_ops"] = ops
            if not any(op in TEMPORAL_OPS for op in ops):  # no slot reads the past: a per-frame model, window 1
                changes["window"] = 1
        else:
            changes["decoder_ops"] = ops
            changes["decoder"] = "sptcn"
    if name is not None:
        changes["name"] = name
    return dataclasses.replace(base, **changes)


def derived_decoder(supernet: DecoderSupernet, ops: Sequence[str] | None = None, *, fold: bool = True
                    ) -> nn.Module:
    """A plain decoder (``SPTCNDecoder`` or ``MultiScaleDecoder``) with the derived ops, carrying the weights
    trained in ``supernet``.

    The fixed layers are copied, and each slot gets the weights of its chosen candidate ``k``. In the supernet
    the slot output was ``sum_j w_j op_j(x)`` with ``w = softmax(beta)``; with ``fold`` the chosen op keeps its
    share ``w_k``: its output is scaled by ``w_k`` through its last affine layer (``ReLU(w z) = w ReLU(z)`` for
    ``w > 0``, so scaling the final BatchNorm's weight and bias, or a final conv's, is exact). An ``identity``
    slot cannot carry a scale. In a residual branch its weight multiplies into the last parametric op before it
    in the same branch (a scale *before* a conv + BatchNorm is undone by that BatchNorm once recalibrated, a scale
    at the end of the branch sets its weight against the skip path). On a multi-scale decoder's finer scale the
    scale goes exactly where the identity's input comes from: a path identity into the op before it (or the
    lateral projection), a fusion identity into both terms of its sum (the coarser result, through its own
    fusion op or ``proj``, and the path). The other candidates' contributions are dropped, so the BatchNorm
    statistics of later layers must be recalibrated (``recalibrate_batchnorm``, done by
    ``save_derived_init``). (The paper trains the final model from scratch; this is for inspection and
    fine-tuning.) An ``arch2_space`` decoder's slots are not folded (a scale does not pass through its residual
    blocks' skip paths or its sums exactly): its chosen ops keep their weights as trained, and the BatchNorm
    recalibration of ``save_derived_init`` is what adapts the statistics.

    Args:
        supernet: the trained decoder supernet (not modified).
        ops: op per slot (default ``supernet.derive()``); e.g. the consensus of several decoder searches.
        fold: fold the mixing weights as above (False: the chosen op's weights as they are).
    """
    d = supernet.decoder
    ops = supernet.derive() if ops is None else tuple(ops)
    if len(ops) != len(supernet.slots):
        raise ValueError(f"expected {len(supernet.slots)} ops, got {len(ops)}")
    plain = _plain(supernet, ops).to(next(iter(d.parameters())).device)
    chosen = {slot: supernet.candidates.index(op) for slot, op in zip(supernet.slots, ops, strict=True)}
    state: dict[str, torch.Tensor] = {}
    for key, value in d.state_dict().items():
        slot = next((s for s in supernet.slots if key.startswith(s + ".")), None)
        if slot is None:
            state[key] = value
            continue
        rest = key[len(slot) + 1 :]
        prefix = f"ops.{chosen[slot]}."
        if rest.startswith(prefix):
            state[f"{slot}.{rest[len(prefix) :]}"] = value
    plain.load_state_dict(state, strict=True)
    if fold:
        _fold_mixing_weights(supernet, plain, ops)
    return plain


def _plain(supernet: DecoderSupernet, ops: tuple[str, ...]) -> nn.Module:
    """The plain decoder of the searched one's shape with ``ops`` in its slots (fresh weights)."""
    d = supernet.decoder
    if isinstance(d, Arch2SpaceDecoder):
        return Arch2SpaceDecoder(d.in_channels, d.num_classes, ops=ops, channels=d.channels, causal=d.causal,
                                 aux=len(d.aux_heads) > 0)
    if isinstance(d, MultiScaleDecoder):
        trunk, scale = supernet.split_ops(ops)
        return MultiScaleDecoder(d.in_channels, d.num_classes, channels=d.channels,
                                 fuse_channels=d.fuse_channels, dilations=d.dilations,
                                 full_channels=d.full_channels, causal=d.causal, layer_ops=trunk,
                                 scale_ops=scale)
    return SPTCNDecoder(
        d.in_channels,
        d.num_classes,
        channels=d.channels,
        dilations=d.dilations,
        full_channels=d.full_channels,
        causal=d.causal,
        layer_ops=ops,
    )


@torch.no_grad()
def _fold_mixing_weights(supernet: DecoderSupernet, plain: nn.Module, ops: Sequence[str]) -> None:
    """Scale each chosen op of ``plain`` by its mixing weight (see ``derived_decoder``)."""
    weights = supernet.op_weights()
    per_branch = 2  # slots per conv: each residual branch conv1 -> conv2 is 4 slots, scales carry within it
    branch = 2 * per_branch
    for start in range(0, supernet.num_trunk_slots, branch):
        pending = 1.0
        last_param: nn.Module | None = None
        for k in range(start, start + branch):
            w = weights[k][supernet.candidates.index(ops[k])]
            module = plain.get_submodule(supernet.slots[k])
            if _scale_output_(module, w):
                last_param, pending = module, 1.0
            else:
                pending *= w  # an op without an affine output layer (identity): carry its weight on
        if last_param is not None and pending != 1.0:
            _scale_output_(last_param, pending)
    if isinstance(plain, MultiScaleDecoder):
        n = supernet.num_trunk_slots
        scale_w = [weights[k][supernet.candidates.index(ops[k])] for k in range(n, len(supernet.slots))]
        _fold_scales(plain, scale_w)


def _fold_scales(plain: MultiScaleDecoder, weights: Sequence[float]) -> None:
    """Fold the mixing weights of a multi-scale decoder's finer-scale slots (3 per scale: path 1, path 2, fusion)
    exactly: ``y_s = fuse_s(up(y_{s-1}) + path_s(lateral_s(x_s)))`` with every map linear in the scale of its
    producer's last affine layer."""

    def scale_path(s: int, upto: int, w: float) -> None:
        # the output of path s's op ``upto - 1`` (upto 0: the lateral projection)
        for j in range(upto - 1, -1, -1):
            if _scale_output_(plain.paths[s][j], w):
                return
        scaled = _scale_output_(plain.laterals[s], w)
        assert scaled, "a lateral projection ends in a BatchNorm"

    def scale_y(s: int, w: float) -> None:
        # y_s: the output of scale s's fusion (s = -1: the trunk's projection)
        if s < 0:
            scaled = _scale_output_(plain.proj, w)
            assert scaled, "the trunk projection ends in a BatchNorm"
        elif not _scale_output_(plain.fuses[s][0], w):
            scale_y(s - 1, w)  # an identity fusion: y_s = up(y_{s-1}) + path_s, scale both terms
            scale_path(s, 2, w)

    for s in range(len(plain.paths)):
        w1, w2, w3 = weights[3 * s:3 * s + 3]
        scale_path(s, 1, w1)
        scale_path(s, 2, w2)
        scale_y(s, w3)


def _scale_output_(module: nn.Module, w: float) -> bool:
    """Multiply ``module``'s output by ``w > 0`` in place through its last affine layer; False if it has none.

    The last leaf module that has parameters must be a BatchNorm (affine) or a convolution and only positively
    homogeneous leaves (ReLU, identity, dropout) may follow it.
    """
    leaves = [m for m in module.modules() if not list(m.children())]
    for leaf in reversed(leaves):
        if isinstance(leaf, nn.ReLU | nn.Identity | nn.Dropout):
            continue
        if isinstance(leaf, nn.modules.batchnorm._BatchNorm) and leaf.affine:
            leaf.weight.mul_(w)
            leaf.bias.mul_(w)
            return True
        if isinstance(leaf, nn.modules.conv._ConvNd):
            leaf.weight.mul_(w)
            if leaf.bias is not None:
                leaf.bias.mul_(w)
            return True
        return False
    return False


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
    derived decoder (``derived_decoder(supernet)``, its mixing weights folded into the chosen ops, or the
    encoder search's baseline decoder). With ``calib_batches`` (training batches ``{"frames": (B, T, 3, H, W)}``)
    every BatchNorm is recalibrated on them (``recalibrate_batchnorm``), so the derived model computes what the
    supernet computed as closely as a single op per slot can. The state-dict names are those of
    ``build_model(cfg, arch)``, so ``vidnas train --arch arch.json --init derived_init.pt`` loads every tensor (checked
    here: a mismatch is logged).
    """
    derived: nn.Module
    if arch.decoder in ("mstcn", "arch2_space"):
        derived = MultiScaleSegmenter(encoder, decoder, source.num_classes,  # type: ignore[arg-type]
                                      scales=DECODERS[arch.decoder].scales(arch), window=arch.window,
                                      causal=arch.causal)
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
