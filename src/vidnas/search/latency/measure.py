"""The one measuring policy of latency tables (``vidnas.search.latency``): encoder blocks and parts
(``measure_encoder_blocks``, ``measure_latency_table``), decoder parts (``measure_decoder_parts``) and the parts a
table lacks for ``LatencyTable.model_latency`` (``complete_model_parts``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import logging
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from vidnas.bench import device_signature, time_fn
from vidnas.export.graph_timing import GraphTimer, runtime_versions
from vidnas.models.architecture import OPS_PER_LAYER, Arch
from vidnas.models.build import build_decoder
from vidnas.models.decoders.arch2_space import SLOTS, SPACE_SCALES, Arch2SpaceDecoder
from vidnas.models.decoders.mstcn import OPS_PER_SCALE, MultiScaleDecoder
from vidnas.models.ops import SEARCH_CANDIDATES, make_op
from vidnas.search.latency.signatures import (
    decoder_inputs,
    decoder_signatures,
    downsample_signature,
    model_part_keys,
    multiscale_signatures,
    output_signature,
    scale_candidates,
    space_signatures,
    stem_signature,
)
from vidnas.search.latency.table import LatencyTable

if TYPE_CHECKING:
    from vidnas.models.encoders import Encoder

__all__ = [
    "LATENCY_WARMUP",
    "LATENCY_ITERS",
    "LATENCY_REPEATS",
    "measure_encoder_blocks",
    "measure_latency_table",
    "measure_decoder_parts",
    "complete_model_parts",
]

logger = logging.getLogger(__name__)

LATENCY_WARMUP = 3  # untimed calls per block before the first pass (1 before the others)
LATENCY_ITERS = 5  # timed calls per block and pass
LATENCY_REPEATS = 5  # whole-encoder passes; each block keeps the median over passes of its per-pass median


def measure_encoder_blocks(
    encoder: Encoder,
    img_size: tuple[int, int] | None = None,
    *,
    warmup: int = 10,
    iters: int = 50,
    sync: Callable[[], Any] | None = None,
    progress: Callable[[], Any] | None = None,
    timer: GraphTimer | None = None,
) -> LatencyTable:
    """Time every block (and downsample) of ``encoder`` at its real input shape, batch 1.

    One random image of ``img_size`` runs through the encoder in eval mode, stage by stage; each downsample and each
    block is timed on the very tensor it receives there (``vidnas.bench.time_fn``: ``warmup`` untimed calls, then
    ``iters`` timed ones; the table stores the median). The encoder's device (first parameter) is used; on CUDA the
    calls are synchronised. The encoder's train / eval mode is restored afterwards.

    Args:
        encoder: an ``Encoder``; time the full-depth one so that every shortened encoder finds its blocks.
        img_size: image (H, W); default the encoder's ``img_size`` (Swin accepts only that unless dynamic).
        warmup: untimed calls per module.
        iters: timed calls per module.
        sync: called after each timed call; default ``torch.cuda.synchronize`` on CUDA, nothing on CPU.
        progress: called after each block (and downsample) is timed.
        timer: the runtime and precision each module is timed in (``GraphTimer``: each module exported to ONNX,
            INT8 quantised at int8; the stem keeps its first Conv in float, as ``vidnas export`` does); None: eager
            PyTorch. The table's ``meta`` records ``runtime`` and ``precision``.

    Returns:
        The table (not saved; call ``save``).
    """
    hw = tuple(encoder.img_size) if img_size is None else (int(img_size[0]), int(img_size[1]))
    param = next(iter(encoder.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    if sync is None and device.type == "cuda":
        sync = torch.cuda.synchronize
    table = LatencyTable(
        device={**device_signature(), "torch_device": device.type},
        meta={
            "encoder": encoder.name,
            "img_size": list(hw),
            "depths": list(encoder.depths),
            "warmup": warmup,
            "iters": iters,
            "statistic": "median",
            "batch": 1,
            "runtime": "torch" if timer is None else timer.runtime,
            "precision": "fp32" if timer is None else timer.precision,
            "runtime_version": runtime_versions("torch" if timer is None else timer.runtime),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    was_training = encoder.training
    encoder.eval()  # drop-path and dropout off, BatchNorm on running statistics: the inference cost
    try:
        with torch.inference_mode():
            x = torch.randn(1, 3, *hw, device=device)
            encoder.check_input(x)
            sig = stem_signature(encoder, hw)
            call = _runner(timer, sig, encoder.stem, encoder, x, keep_first_conv=True)
            stats = time_fn(call, warmup=warmup, iters=iters, sync=sync)
            table.parts[sig] = stats.median_ms
            table.stats[sig] = stats.to_dict()
            h = encoder.stem(x)
            for i, stage in enumerate(encoder.stages):
                sig = downsample_signature(encoder, i, hw)
                call = _runner(timer, sig, stage.downsample, stage, h)
                stats = time_fn(call, warmup=warmup, iters=iters, sync=sync)
                table.downsample[sig] = stats.median_ms
                table.stats[sig] = stats.to_dict()
                if progress is not None:
                    progress()
                h = stage.downsample(h)
                want = tuple(encoder.block_input_shape(i, hw))
                if tuple(h.shape) != want:
                    raise RuntimeError(
                        f"{encoder.name} stage {i}: blocks receive {tuple(h.shape)} but block signatures assume {want}"
                    )
                for j, block in enumerate(stage.blocks):
                    sig = encoder.block_signature(i, j, hw)
                    stats = time_fn(_runner(timer, sig, block, block, h), warmup=warmup, iters=iters, sync=sync)
                    table.blocks[sig] = stats.median_ms
                    table.stats[sig] = stats.to_dict()
                    if progress is not None:
                        progress()
                    h = block(h)
                    logger.debug("%s: %.3f ms", sig, stats.median_ms)
                sig = output_signature(encoder, i, hw)
                call = _runner(timer, sig, functools.partial(encoder.stage_output, i), encoder, h)
                stats = time_fn(call, warmup=warmup, iters=iters, sync=sync)
                table.parts[sig] = stats.median_ms
                table.stats[sig] = stats.to_dict()
    finally:
        encoder.train(was_training)
    logger.info("measured %d blocks of %s at %s on %s", len(table.blocks), encoder.name, hw, device)
    return table


def measure_latency_table(
    encoder: Encoder,
    img_size: tuple[int, int] | None = None,
    *,
    warmup: int = LATENCY_WARMUP,
    iters: int = LATENCY_ITERS,
    repeats: int = LATENCY_REPEATS,
    progress: Callable[[], Any] | None = None,
    timer: GraphTimer | None = None,
) -> LatencyTable:
    """The latency table of ``encoder`` by the one policy (module docstring): ``repeats`` passes of
    ``measure_encoder_blocks``, each block keeping the median of its per-pass medians.

    Args:
        encoder: an ``Encoder`` (the full-depth one, so that every shortened encoder finds its blocks).
        img_size: image (H, W); default the encoder's ``img_size``.
        warmup: untimed calls per block in the first pass (later passes: 1).
        iters: timed calls per block and pass.
        repeats: passes.
        progress: called once per block (and downsample) per pass, e.g. a progress bar's ``update``.
        timer: the runtime and precision (``measure_encoder_blocks``); each module is exported once, not per pass.

    Returns:
        The table (not saved); ``stats[sig]["pass_medians_ms"]`` keeps every pass's median.
    """
    if repeats < 1 or iters < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1, iters >= 1 and warmup >= 0, got {repeats}, {iters} and {warmup}")
    passes = [measure_encoder_blocks(encoder, img_size, warmup=warmup if r == 0 else 1, iters=iters,
                                     progress=progress, timer=timer) for r in range(repeats)]
    table = passes[0]
    for attr in ("blocks", "downsample", "parts"):
        merged = getattr(table, attr)
        for sig in merged:
            values = [getattr(p, attr)[sig] for p in passes]
            merged[sig] = statistics.median(values)
            table.stats[sig] = {**table.stats.get(sig, {}), "median_ms": merged[sig], "pass_medians_ms": values}
    table.meta.update(repeats=repeats, warmup=warmup, iters=iters,
                      statistic="median over passes of the per-pass median")
    return table


def measure_decoder_parts(
    arch: Arch,
    in_channels: int,
    num_classes: int,
    feature_hw: tuple[int, int],
    img_hw: tuple[int, int],
    *,
    candidates: Sequence[str] = SEARCH_CANDIDATES,
    warmup: int = LATENCY_WARMUP,
    iters: int = LATENCY_ITERS,
    repeats: int = LATENCY_REPEATS,
    device: str | torch.device = "cpu",
    timer: GraphTimer | None = None,
) -> dict[str, float]:
    """Time the decoder parts of ``decoder_signatures`` on a random window ``(1, in_channels, window, h, w)``.

    Measured (eval mode, batch 1, random weights: latency does not depend on them): the baseline SP-TCN of ``arch``
    (``decoder_ops`` None), the searched decoder with every slot an identity (``sptcn_fixed``), every candidate op at
    every dilation of ``arch`` on ``(1, channels, window, h, w)``, and the bilinear upsampling of one frame's logits
    ``(1, K, h, w) -> (1, K, H, W)``. Same policy as the blocks: the median over ``repeats`` passes of the per-pass
    median of ``iters`` calls. ``timer``: the runtime and precision (``measure_encoder_blocks``; every part and op
    is its own graph), None: eager PyTorch.

    Returns:
        signature -> ms (to merge into ``LatencyTable.parts``).
    """
    if arch.decoder == "arch2_space":
        return _measure_space_parts(arch, in_channels, num_classes, feature_hw, img_hw, warmup=warmup, iters=iters,
                                    repeats=repeats, device=device, timer=timer)
    if arch.decoder == "mstcn":
        return _measure_multiscale_parts(arch, in_channels, num_classes, feature_hw, img_hw, candidates=candidates,
                                         warmup=warmup, iters=iters, repeats=repeats, device=device, timer=timer)
    h, w = feature_hw
    keys = decoder_signatures(arch, in_channels, num_classes, feature_hw, img_hw)
    base = dataclasses.replace(arch, decoder="sptcn", decoder_ops=None, extra={})
    per = 4 * len(arch.dilations)
    fixed = dataclasses.replace(base, decoder_ops=("identity",) * per)
    modules: dict[str, tuple[torch.nn.Module, torch.Tensor]] = {}
    x_in = torch.randn(1, in_channels, arch.window, h, w, device=device)
    x_op = torch.randn(1, arch.channels, arch.window, h, w, device=device)
    modules[keys["baseline"]] = (build_decoder(base, in_channels, num_classes), x_in)
    modules[keys["fixed"]] = (build_decoder(fixed, in_channels, num_classes), x_in)
    for d in sorted(set(arch.dilations)):
        for name in candidates:
            modules[keys["op"](name, d)] = (make_op(name, arch.channels, d, causal=arch.causal), x_op)
    out = _time_parts(modules, keys["upsample"], torch.randn(1, num_classes, h, w, device=device), img_hw,
                      warmup=warmup, iters=iters, repeats=repeats, device=device, timer=timer)
    logger.info("measured %d decoder parts (window %d at %dx%d)", len(out), arch.window, h, w)
    return out


def _time_parts(modules: Mapping[str, tuple[torch.nn.Module, Any]], upsample_key: str, logits: torch.Tensor,
                img_hw: tuple[int, int], *, warmup: int, iters: int, repeats: int,
                device: str | torch.device, timer: GraphTimer | None = None) -> dict[str, float]:
    """Median over ``repeats`` passes of the per-pass median of ``iters`` calls of every ``module(x)``, and of the
    bilinear upsampling of ``logits`` to ``img_hw``, in ``timer``'s runtime (None: eager PyTorch)."""

    def upsample(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, size=tuple(img_hw), mode="bilinear", align_corners=False)

    samples: dict[str, list[float]] = {k: [] for k in [*modules, upsample_key]}
    for m, _ in modules.values():
        m.to(device).eval()
    calls = {key: _runner(timer, key, m, m, x) for key, (m, x) in modules.items()}
    calls[upsample_key] = _runner(timer, upsample_key, upsample, torch.nn.Module(), logits)
    for r in range(repeats):
        wu = warmup if r == 0 else 1
        for key, call in calls.items():
            samples[key].append(time_fn(call, warmup=wu, iters=iters).median_ms)
    return {k: statistics.median(v) for k, v in samples.items()}


def _measure_multiscale_parts(arch: Arch, in_channels: Sequence[int], num_classes: int,
                              feature_hws: Sequence[tuple[int, int]], img_hw: tuple[int, int], *,
                              candidates: Sequence[str], warmup: int, iters: int, repeats: int,
                              device: str | torch.device, timer: GraphTimer | None) -> dict[str, float]:
    """``measure_decoder_parts`` of an ``mstcn`` architecture (``multiscale_signatures``): both fixed decoders
    (3x3x3 trunk; trunk slots identities), every candidate at every trunk dilation on the coarse map, every candidate
    (and the default's ops) at every finer scale, and the upsampling."""
    keys = multiscale_signatures(arch, in_channels, num_classes, feature_hws, img_hw)
    fine = len(arch.scales) - 1
    common: dict[str, Any] = dict(channels=arch.channels, fuse_channels=arch.fuse_channels, dilations=arch.dilations,
                                  full_channels=arch.full_channels, causal=arch.causal,
                                  scale_ops=("identity",) * (OPS_PER_SCALE * fine))
    xs = [torch.randn(1, c, arch.window, h, w, device=device) for c, (h, w) in zip(in_channels, feature_hws,
                                                                                     strict=True)]
    modules: dict[str, tuple[torch.nn.Module, Any]] = {
        keys["fixed_baseline"]: (MultiScaleDecoder(in_channels, num_classes, layer_ops=None, **common), xs),
        keys["fixed_searched"]: (MultiScaleDecoder(in_channels, num_classes, **common,
                                                   layer_ops=("identity",) * (OPS_PER_LAYER * len(arch.dilations))),
                                 xs),
    }
    h0, w0 = feature_hws[0]
    x_trunk = torch.randn(1, arch.channels, arch.window, h0, w0, device=device)
    for d in sorted(set(arch.dilations)):
        for name in candidates:
            modules[keys["op"](name, arch.channels, d, (h0, w0))] = (
                make_op(name, arch.channels, d, causal=arch.causal), x_trunk)
    for hw in feature_hws[1:]:
        x_fine = torch.randn(1, arch.fuse_channels, arch.window, *hw, device=device)
        for name in scale_candidates(arch, candidates):
            modules[keys["op"](name, arch.fuse_channels, 1, hw)] = (
                make_op(name, arch.fuse_channels, 1, causal=arch.causal), x_fine)
    h, w = feature_hws[-1]
    out = _time_parts(modules, keys["upsample"], torch.randn(1, num_classes, h, w, device=device), img_hw,
                      warmup=warmup, iters=iters, repeats=repeats, device=device, timer=timer)
    logger.info("measured %d multi-scale decoder parts (window %d at %s)", len(out), arch.window,
                ", ".join(f"{a}x{b}" for a, b in feature_hws))
    return out


def _measure_space_parts(arch: Arch, in_channels: Sequence[int], num_classes: int,
                         feature_hws: Sequence[tuple[int, int]], img_hw: tuple[int, int], *, warmup: int, iters: int,
                         repeats: int, device: str | torch.device, timer: GraphTimer | None) -> dict[str, float]:
    """``measure_decoder_parts`` of an ``arch2_space`` architecture (``space_signatures``): the whole decoder at
    arch2's ops, every candidate of every slot on its own input, and the upsampling."""
    keys = space_signatures(arch, in_channels, num_classes, feature_hws, img_hw)
    xs = [torch.randn(1, c, arch.window, h, w, device=device) for c, (h, w) in zip(in_channels, feature_hws,
                                                                                     strict=True)]
    whole = Arch2SpaceDecoder(in_channels, num_classes, channels=arch.fuse_channels, causal=arch.causal, aux=False)
    modules: dict[str, tuple[torch.nn.Module, Any]] = {keys["arch2"]: (whole, xs)}
    for k, (_, kind, stride, cands) in enumerate(SLOTS):
        i = SPACE_SCALES.index(stride)
        x = xs[i] if kind == "lateral" else torch.randn(1, arch.fuse_channels, arch.window, *feature_hws[i],
                                                        device=device)
        for name in cands:
            modules.setdefault(keys["op"](k, name), (whole.slot_op(k, name), x))  # blocks 1 and 2 share their keys
    h, w = feature_hws[SPACE_SCALES.index(8)]
    out = _time_parts(modules, keys["upsample"], torch.randn(1, num_classes, h, w, device=device), img_hw,
                      warmup=warmup, iters=iters, repeats=repeats, device=device, timer=timer)
    logger.info("measured %d arch2_space decoder parts (window %d)", len(out), arch.window)
    return out


def complete_model_parts(table: LatencyTable, encoder: Encoder, base: Arch, num_classes: int,
                         candidates: Sequence[str] = SEARCH_CANDIDATES, *, timer: GraphTimer | None = None,
                         decoder_timer: GraphTimer | None = None) -> bool:
    """Measure the parts of ``model_latency`` that ``table`` lacks (stem, outputs, decoder parts), in place.

    ``base`` is the config's architecture: its SP-TCN decoder (baseline, fixed parts of a searched one, every op of
    ``candidates`` at its dilations) is what gets measured; ``encoder`` the full-depth encoder, on its device.
    ``timer``: the runtime and precision to time the encoder parts in, ``decoder_timer`` (default ``timer``) the
    decoder parts; each must be the table's (``LatencyTable.pricing``, ``decoder_precision``), else ``ValueError``
    (a table priced in two runtimes would add up to no model anyone runs).

    Returns:
        Whether anything was added.
    """
    enc_keys, dec_keys = model_part_keys(encoder, base, num_classes, candidates)
    decoder_timer = timer if decoder_timer is None else decoder_timer
    runtime, precision = table.pricing
    for keys, t, want in ((enc_keys, timer, precision), (dec_keys, decoder_timer, table.decoder_precision)):
        if not table.has_parts(keys) and (("torch", "fp32") if t is None else (t.runtime, t.precision)) != (
                runtime, want):
            raise ValueError(f"latency table {table.path or '(not saved)'} was measured in {runtime}/{want} and lacks "
                             f"parts of the model; add them with `vidnas latency --decoder --runtime {runtime} "
                             f"--precision {precision}{' --fp32-decoder' if want != precision else ''}` for this "
                             "model and input size")
    added = False
    if not table.has_parts(enc_keys):
        logger.info("latency table: measuring the stem, downsamples and output conversions of %s", encoder.name)
        measured = measure_latency_table(encoder, timer=timer)
        for k in enc_keys:
            if k in measured.downsample:
                table.downsample.setdefault(k, measured.downsample[k])
            else:
                table.parts.setdefault(k, measured.parts[k])
        added = True
    if dec_keys and not table.has_parts(dec_keys):
        logger.info("latency table: measuring the %s decoder parts (baseline, fixed parts, %d ops)", base.decoder,
                    len(candidates))
        device = next(iter(encoder.parameters())).device
        channels, hw = decoder_inputs(encoder, base)
        parts = measure_decoder_parts(base, channels, num_classes, hw, encoder.img_size, candidates=candidates,
                                      device=device, timer=decoder_timer)
        for k, v in parts.items():
            table.parts.setdefault(k, v)
        added = True
    return added


def _runner(timer: GraphTimer | None, key: str, fn: Callable[..., Any], owner: torch.nn.Module, x: Any, *,
            keep_first_conv: bool = False) -> Callable[[], Any]:
    """``fn(x)`` as a zero-argument callable: eager (``timer`` None) or ``timer``'s graph of it (``x`` a tensor or a
    list of tensors, which the graph takes as separate inputs)."""
    if timer is None:
        return functools.partial(fn, x)
    if isinstance(x, list | tuple):
        return timer(key, lambda *xs: fn(list(xs)), owner, list(x), keep_first_conv=keep_first_conv)
    return timer(key, fn, owner, [x], keep_first_conv=keep_first_conv)
