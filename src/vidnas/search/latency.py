"""Latency tables: measured per-block latency (ms) of an encoder, keyed by block signature, for Eq. 2 [ST-NAS].

One measuring policy serves `vidnas latency` and the search (``measure_latency_table``): every block is timed at its
real input shape (batch 1) for ``iters`` calls after warm-up, in ``repeats`` whole-encoder passes, and the table keeps
each block's median over the passes of its per-pass median. One pass times a block's calls back to back, a few ms for
a small block: a single descheduling of the process on a busy machine covers all of them and inflates that block
100-fold (seen on the 2-core development machine); over several passes such a stall hits one pass, and the median
over passes ignores it.

A table holds, for one device, the median time of every encoder block, keyed by
``Encoder.block_signature(stage, block, img_size)`` (e.g. ``"swin_tiny/s2/b1/w7x7_shift3x3_h12/1x20x36x384"``): the
signature names the encoder, the stage, the block index,
the block's kind (Swin: window, shift, heads, so shifted and unshifted blocks differ) and its input shape. A table
measured on the full encoder therefore serves every shortened one. The downsample (patch merging, stride-changing
block) of each stage is timed too, for reports; it is not searched and not part of the penalty.

Besides the searched blocks a table holds the other **parts** of a model's per-frame cost (``parts``), so that
the latency of any architecture of the ST-NAS space can be read from the table (``LatencyTable.model_latency``)::

    T(arch) = stem + sum_s [downsample_s + sum_{i <= d_s} s_{s,i} + output_s] + decoder(arch) + upsample

with ``decoder(arch)`` the full-window decode of the SP-TCN baseline (one entry) or, for a searched decoder, the
decoder with every slot an identity (``sptcn_fixed``: reduction, adapters, skips, final conv, head) plus the latency
of each slot's op at the slot's dilation. A multi-scale (``mstcn``) decoder is read the same way
(``multiscale_signatures``): the decoder with every searched slot an identity (``mstcn_fixed``: reduction or 3x3x3
trunk, projections, upsampling and sums of the fusion, head) plus each trunk slot's op on the coarse map and each
finer scale's path and fusion ops on that scale's map. Stem and output conversions are timed with the blocks
(``measure_encoder_blocks``); the decoder parts by ``measure_decoder_parts`` (the search measures the missing ones
when a budget needs them). This is the ST-NAS protocol's unit (encode one frame + decode the window), minus the
feature stacking and Python overhead of a push.

JSON layout (schema version 1; ``parts`` is optional, older tables have none)::

    {"schema_version": 1, "device": {...vidnas.bench.device_signature()..., "torch_device": "cpu"},
     "meta": {"encoder": "swin_tiny", "img_size": [320, 576], "warmup": 10, "iters": 50, "statistic": "median",
              "batch": 1, "created": "2025-...Z"},
     "blocks": {signature: ms, ...}, "downsample": {signature: ms, ...}, "parts": {signature: ms, ...},
     "stats": {signature: {"median_ms", "mean_ms", "std_ms", "p90_ms", "n"}, ...}}
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import logging
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from vidnas.bench import device_signature, time_fn
from vidnas.jsonfile import JsonFile, check_header, where
from vidnas.models.architecture import OPS_PER_LAYER, Arch
from vidnas.models.build import build_decoder
from vidnas.models.decoders.mstcn import OPS_PER_SCALE, MultiScaleDecoder, default_scale_ops
from vidnas.models.multiscale import STRIDE_INDEX
from vidnas.models.ops import SEARCH_CANDIDATES, make_op

if TYPE_CHECKING:
    from vidnas.models.encoders import Encoder

__all__ = [
    "LATENCY_SCHEMA_VERSION",
    "DEVICE_KEYS",
    "LatencyTable",
    "LatencyTableError",
    "MissingLatencyError",
    "downsample_signature",
    "stem_signature",
    "output_signature",
    "decoder_signatures",
    "multiscale_signatures",
    "decoder_inputs",
    "measure_encoder_blocks",
    "measure_decoder_parts",
    "complete_model_parts",
    "model_part_keys",
    "measure_latency_table",
    "LATENCY_WARMUP",
    "LATENCY_ITERS",
    "LATENCY_REPEATS",
]

logger = logging.getLogger(__name__)

LATENCY_SCHEMA_VERSION = 1
LATENCY_WARMUP = 3  # untimed calls per block before the first pass (1 before the others)
LATENCY_ITERS = 5  # timed calls per block and pass
LATENCY_REPEATS = 5  # whole-encoder passes; each block keeps the median over passes of its per-pass median
# device-signature fields that change latencies; the others (python version, platform string) are informative
DEVICE_KEYS: tuple[str, ...] = ("cpu", "num_threads", "torch", "machine", "cuda", "torch_device")


class LatencyTableError(ValueError):
    """A latency table file is missing or invalid; the message names the file."""


class MissingLatencyError(KeyError):
    """A block signature is not in the table; the message names the signature and the table's file."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


def downsample_signature(encoder: Encoder, stage: int, input_hw: tuple[int, int] | None = None) -> str:
    """Table key of stage ``stage``'s downsample: ``"{name}/s{i}/downsample/{output shape}"`` (batch 1)."""
    shape = "x".join(str(d) for d in encoder.block_input_shape(stage, input_hw))
    return f"{encoder.name}/s{stage}/downsample/{shape}"


def _hw(encoder: Encoder, input_hw: tuple[int, int] | None) -> tuple[int, int]:
    return tuple(encoder.img_size) if input_hw is None else (int(input_hw[0]), int(input_hw[1]))  # type: ignore


def stem_signature(encoder: Encoder, input_hw: tuple[int, int] | None = None) -> str:
    """Table key (``parts``) of the encoder's stem on a ``1x3xHxW`` image: ``"{name}/stem/1x3xHxW"``."""
    h, w = _hw(encoder, input_hw)
    return f"{encoder.name}/stem/1x3x{h}x{w}"


def output_signature(encoder: Encoder, stage: int, input_hw: tuple[int, int] | None = None) -> str:
    """Table key (``parts``) of stage ``stage``'s output conversion (``Encoder.stage_output``)."""
    shape = "x".join(str(d) for d in encoder.block_input_shape(stage, input_hw))
    return f"{encoder.name}/s{stage}/output/{shape}"


def decoder_signatures(arch: Arch, in_channels: int, num_classes: int, feature_hw: tuple[int, int],
                       img_hw: tuple[int, int]) -> dict[str, Any]:
    """Table keys (``parts``) of the decoder of ``arch`` (an ``sptcn`` architecture) and of the final upsampling.

    The decoder runs on the window ``(1, in_channels, window, h, w)`` with ``(h, w) = feature_hw``.

    Returns:
        ``{"baseline": key of the whole 3x3x3 SP-TCN decoder, "fixed": key of the searched decoder with every slot
        an identity, "ops": [per slot: key of that slot's op in ``arch.decoder_ops``] or None for the baseline,
        "op": callable (name, dilation) -> key, "upsample": key}``.
    """
    h, w = feature_hw
    t = arch.window
    mode = "causal" if arch.causal else "centred"
    dil = "-".join(str(d) for d in arch.dilations)
    common = f"cin{in_channels}_f{arch.channels}_k{num_classes}_d{dil}_fc{int(arch.full_channels)}_{mode}/t{t}_{h}x{w}"

    def op(name: str, dilation: int) -> str:
        return f"decoder/op/{name}/f{arch.channels}_d{dilation}_{mode}/t{t}_{h}x{w}"

    ops = None
    if arch.decoder_ops is not None:
        per = len(arch.decoder_ops) // len(arch.dilations)
        ops = [op(name, arch.dilations[k // per]) for k, name in enumerate(arch.decoder_ops)]
    return {"baseline": f"decoder/sptcn_baseline/{common}", "fixed": f"decoder/sptcn_fixed/{common}", "ops": ops,
            "op": op, "upsample": f"segmenter/upsample/k{num_classes}_{h}x{w}_to_{img_hw[0]}x{img_hw[1]}"}


def multiscale_signatures(arch: Arch, in_channels: Sequence[int], num_classes: int,
                          feature_hws: Sequence[tuple[int, int]], img_hw: tuple[int, int]) -> dict[str, Any]:
    """Table keys (``parts``) of the multi-scale decoder of ``arch`` (an ``mstcn`` architecture) and of the final
    upsampling.

    The decoder runs on the window of every scale, ``(1, in_channels[i], window, h_i, w_i)`` with ``(h_i, w_i) =
    feature_hws[i]``, coarse first. Its latency is read as ``fixed + trunk ops + scale ops``: ``fixed`` is the decoder
    with every searched slot an identity (``fixed_baseline``: the 3x3x3 trunk of an unsearched ``decoder_ops``;
    ``fixed_searched``: trunk slots identities too), plus each slot's op at its width, dilation and spatial size (the
    trunk's at ``channels`` on the coarse map, a finer scale's at ``fuse_channels`` and dilation 1 on its map).

    Returns:
        ``{"fixed": the key ``arch`` uses, "fixed_baseline", "fixed_searched", "trunk_ops": [per trunk slot: key] or
        None (3x3x3 trunk), "scale_ops": [per finer-scale slot: key] (the per-frame default when ``scale_ops`` is
        None), "op": callable (name, channels, dilation, (h, w)) -> key, "upsample": key}``.
    """
    if len(in_channels) != len(arch.scales) or len(feature_hws) != len(arch.scales):
        raise ValueError(f"expected channels and sizes of {len(arch.scales)} scales {list(arch.scales)}, got "
                         f"{len(in_channels)} and {len(feature_hws)}")
    t = arch.window
    mode = "causal" if arch.causal else "centred"
    dil = "-".join(str(d) for d in arch.dilations)
    cin = "-".join(str(c) for c in in_channels)
    sizes = "-".join(f"{h}x{w}" for h, w in feature_hws)
    strides = "-".join(str(s) for s in arch.scales)
    common = (f"s{strides}_cin{cin}_f{arch.channels}_ff{arch.fuse_channels}_k{num_classes}_d{dil}"
              f"_fc{int(arch.full_channels)}_{mode}/t{t}_{sizes}")

    def op(name: str, channels: int, dilation: int, hw: Sequence[int]) -> str:
        return f"decoder/op/{name}/f{channels}_d{dilation}_{mode}/t{t}_{hw[0]}x{hw[1]}"  # the SP-TCN ops' format

    per = OPS_PER_LAYER
    trunk = None if arch.decoder_ops is None else [op(name, arch.channels, arch.dilations[k // per], feature_hws[0])
                                                   for k, name in enumerate(arch.decoder_ops)]
    fine = arch.scale_ops if arch.scale_ops is not None else default_scale_ops(len(arch.scales) - 1)
    scale = [op(name, arch.fuse_channels, 1, feature_hws[1 + k // OPS_PER_SCALE]) for k, name in enumerate(fine)]
    keys = {"fixed_baseline": f"decoder/mstcn_fixed/trunk3d_{common}",
            "fixed_searched": f"decoder/mstcn_fixed/trunkslots_{common}"}
    h, w = feature_hws[-1]
    return {"fixed": keys["fixed_baseline"] if trunk is None else keys["fixed_searched"], **keys,
            "trunk_ops": trunk, "scale_ops": scale, "op": op,
            "upsample": f"segmenter/upsample/k{num_classes}_{h}x{w}_to_{img_hw[0]}x{img_hw[1]}"}


def decoder_inputs(encoder: Encoder, arch: Arch, input_hw: tuple[int, int] | None = None
                   ) -> tuple[Any, Any]:
    """``(in_channels, feature_hw)`` of ``arch``'s decoder on ``encoder``: the last stage's ``(C, (h, w))``, or for
    ``mstcn`` one entry per scale of ``arch.scales`` (lists), as ``decoder_latency`` takes them."""
    if arch.decoder == "mstcn":
        idx = [STRIDE_INDEX[s] for s in arch.scales]
        return [encoder.out_channels[i] for i in idx], [encoder.feature_hw(i, input_hw) for i in idx]
    last = len(encoder.depths) - 1
    return encoder.out_channels[last], encoder.feature_hw(last, input_hw)


@dataclass
class LatencyTable(JsonFile):
    """Block latencies (ms) of one device.

    Attributes:
        blocks: block signature -> median latency in ms (what Eq. 2 uses as s_i).
        device: where it was measured (``vidnas.bench.device_signature()`` plus ``torch_device``).
        downsample: downsample signature -> median ms (not searched; part of ``model_latency``).
        parts: every other timed part (stem, output conversions, decoder parts, upsampling) -> median ms.
        stats: signature -> timing statistics (median, mean, std, p90, n) of blocks and downsamples.
        meta: encoder name, image size, warm-up and timed calls, creation time.
        path: the file this table was loaded from or saved to (used in error messages), None if never on disk.
    """

    blocks: dict[str, float] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    downsample: dict[str, float] = field(default_factory=dict)
    parts: dict[str, float] = field(default_factory=dict)
    stats: dict[str, dict[str, float]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    FILE_KIND = "latency table"
    FILE_ERROR = LatencyTableError

    # --- lookups ----------------------------------------------------------------------------------------------------

    def _where(self) -> str:
        return str(self.path) if self.path is not None else "<latency table not saved to a file>"

    def lookup(self, signature: str) -> float:
        """Latency (ms) of the block with this signature.

        Raises:
            MissingLatencyError: naming the signature, the table's file and what the table was measured for.
        """
        try:
            return self.blocks[signature]
        except KeyError:
            measured = f"encoder {self.meta.get('encoder')!r} at img_size {self.meta.get('img_size')}"
            raise MissingLatencyError(
                f"block signature {signature!r} not in latency table {self._where()} ({len(self.blocks)} blocks, "
                f"measured for {measured}); build a table for this encoder and input size with `vidnas latency`"
            ) from None

    def latencies_for(self, encoder: Encoder, input_hw: tuple[int, int] | None = None) -> list[list[float]]:
        """s_i of every block of ``encoder``: one list per stage, one ms value per block.

        Args:
            encoder: any ``Encoder`` (a shortened one too: block j keeps its signature).
            input_hw: image (H, W); default the encoder's ``img_size``.
        """
        return [
            [self.lookup(encoder.block_signature(i, j, input_hw)) for j in range(d)]
            for i, d in enumerate(encoder.depths)
        ]

    def downsample_for(self, encoder: Encoder, input_hw: tuple[int, int] | None = None) -> list[float | None]:
        """Downsample latency (ms) of each stage, None where the table has none."""
        return [self.downsample.get(downsample_signature(encoder, i, input_hw)) for i in range(len(encoder.depths))]

    def encoder_latency(self, encoder: Encoder, input_hw: tuple[int, int] | None = None) -> float:
        """Sum of the block and downsample latencies of ``encoder`` (stem and output layers excluded), in ms."""
        blocks = sum(sum(stage) for stage in self.latencies_for(encoder, input_hw))
        return blocks + sum(v for v in self.downsample_for(encoder, input_hw) if v is not None)

    def part(self, signature: str) -> float:
        """Latency (ms) of a non-block part (``parts`` or ``downsample``).

        Raises:
            MissingLatencyError: naming the signature and the table's file.
        """
        if signature in self.parts:
            return self.parts[signature]
        if signature in self.downsample:
            return self.downsample[signature]
        raise MissingLatencyError(
            f"part {signature!r} not in latency table {self._where()} ({len(self.parts)} parts); measure it with "
            "`vidnas latency --decoder` for this model and input size (or let the search measure it)"
        )

    def has_parts(self, signatures: Sequence[str]) -> bool:
        """Whether every signature is in ``parts`` or ``downsample``."""
        return all(sig in self.parts or sig in self.downsample for sig in signatures)

    def fixed_encoder_latency(self, encoder: Encoder, input_hw: tuple[int, int] | None = None) -> float:
        """The encoder's cost outside its searched blocks (ms): stem + every downsample + every output conversion.

        Raises:
            MissingLatencyError: a part is missing (tables from before parts were recorded have no stem).
        """
        total = self.part(stem_signature(encoder, input_hw))
        for i in range(len(encoder.depths)):
            total += self.part(downsample_signature(encoder, i, input_hw))
            total += self.part(output_signature(encoder, i, input_hw))
        return total

    def decoder_latency(self, arch: Arch, in_channels: Any, num_classes: int, feature_hw: Any,
                        img_hw: tuple[int, int]) -> float:
        """Table latency (ms) of ``arch``'s decoder on its full window, plus the upsampling of one frame's logits.

        Baseline SP-TCN: its own entry. Searched decoder: ``sptcn_fixed`` + the sum of the slots' op latencies.
        Multi-scale (``mstcn``; ``in_channels`` and ``feature_hw`` one per scale, ``decoder_inputs``): its fixed
        parts + the trunk's slot ops + every finer scale's ops (``multiscale_signatures``).

        Raises:
            MissingLatencyError: a part is missing, or the decoder has no parts in tables (``head``, ``arch2``).
        """
        if arch.decoder == "mstcn":
            ms = multiscale_signatures(arch, in_channels, num_classes, feature_hw, img_hw)
            return (self.part(ms["upsample"]) + self.part(ms["fixed"]) + sum(self.part(k) for k in ms["scale_ops"])
                    + sum(self.part(k) for k in ms["trunk_ops"] or ()))
        if arch.decoder != "sptcn":
            raise MissingLatencyError(f"the {arch.decoder!r} decoder has no parts in latency tables (the sptcn and "
                                      "mstcn decoders have)")
        keys = decoder_signatures(arch, in_channels, num_classes, feature_hw, img_hw)
        total = self.part(keys["upsample"])
        if keys["ops"] is None:
            return total + self.part(keys["baseline"])
        return total + self.part(keys["fixed"]) + sum(self.part(k) for k in keys["ops"])

    def model_latency(self, encoder: Encoder, depths: Sequence[int] | None, arch: Arch, num_classes: int) -> float:
        """Table latency (ms) of one frame of a model (module docstring): encoder at ``depths`` + ``arch``'s decoder.

        Args:
            encoder: the full-depth encoder the table was measured on (block j keeps its signature when shortened).
            depths: blocks kept per stage (a prefix of each); None = all.
            arch: the architecture (its decoder part is used: ``sptcn`` or ``mstcn``).
            num_classes: K.
        """
        lat = self.latencies_for(encoder)
        depths = list(encoder.depths) if depths is None else list(depths)
        blocks = sum(sum(row[:d]) for row, d in zip(lat, depths, strict=True))
        channels, hw = decoder_inputs(encoder, arch)
        return (self.fixed_encoder_latency(encoder) + blocks
                + self.decoder_latency(arch, channels, num_classes, hw, encoder.img_size))

    def matches_device(self, other: Mapping[str, Any] | None = None) -> bool:
        """Whether this table was measured on ``other`` (default: this machine, CPU), comparing ``DEVICE_KEYS``."""
        if other is None:
            other = {**device_signature(), "torch_device": "cpu"}
        return all(self.device.get(k) == other.get(k) for k in DEVICE_KEYS if k in self.device or k in other)

    # --- (de)serialise ------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (see the module docstring)."""
        return {
            "schema_version": LATENCY_SCHEMA_VERSION,
            "device": dict(self.device),
            "meta": dict(self.meta),
            "blocks": dict(self.blocks),
            "downsample": dict(self.downsample),
            "parts": dict(self.parts),
            "stats": {k: dict(v) for k, v in self.stats.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | os.PathLike | None = None) -> LatencyTable:
        """Inverse of ``to_dict``; a wrong schema version or a malformed field raises ``LatencyTableError``."""
        check_header(data, version=LATENCY_SCHEMA_VERSION, error=LatencyTableError, source=source)
        tables: dict[str, dict[str, float]] = {}
        for key in ("blocks", "downsample", "parts"):
            raw = data.get(key, {})
            if not isinstance(raw, dict) or not all(isinstance(v, int | float) for v in raw.values()):
                raise LatencyTableError(f"{where(source)}field {key!r}: expected an object of signature -> "
                                        "milliseconds")
            tables[key] = {str(k): float(v) for k, v in raw.items()}
        return cls(
            blocks=tables["blocks"],
            device=dict(data.get("device") or {}),
            downsample=tables["downsample"],
            parts=tables["parts"],
            stats={str(k): dict(v) for k, v in (data.get("stats") or {}).items()},
            meta=dict(data.get("meta") or {}),
            path=Path(source) if source is not None else None,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table as JSON atomically (a crash never leaves half a file); remembers ``path``."""
        self.path = super().save(path)
        return self.path

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyTable:
        """Read a table written by ``save``; errors name the file; warns when it was measured on another device."""
        table = super().load(path)
        if not table.matches_device():
            logger.warning(
                "%s was measured on another device (%s); its latencies may not hold here",
                path,
                table.device.get("cpu") or table.device.get("cuda"),
            )
        return table


def measure_encoder_blocks(
    encoder: Encoder,
    img_size: tuple[int, int] | None = None,
    *,
    warmup: int = 10,
    iters: int = 50,
    sync: Callable[[], Any] | None = None,
    progress: Callable[[], Any] | None = None,
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
            stats = time_fn(functools.partial(encoder.stem, x), warmup=warmup, iters=iters, sync=sync)
            table.parts[sig] = stats.median_ms
            table.stats[sig] = stats.to_dict()
            h = encoder.stem(x)
            for i, stage in enumerate(encoder.stages):
                sig = downsample_signature(encoder, i, hw)
                stats = time_fn(functools.partial(stage.downsample, h), warmup=warmup, iters=iters, sync=sync)
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
                    stats = time_fn(functools.partial(block, h), warmup=warmup, iters=iters, sync=sync)
                    table.blocks[sig] = stats.median_ms
                    table.stats[sig] = stats.to_dict()
                    if progress is not None:
                        progress()
                    h = block(h)
                    logger.debug("%s: %.3f ms", sig, stats.median_ms)
                sig = output_signature(encoder, i, hw)
                stats = time_fn(functools.partial(encoder.stage_output, i, h), warmup=warmup, iters=iters, sync=sync)
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

    Returns:
        The table (not saved); ``stats[sig]["pass_medians_ms"]`` keeps every pass's median.
    """
    if repeats < 1 or iters < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1, iters >= 1 and warmup >= 0, got {repeats}, {iters} and {warmup}")
    passes = [measure_encoder_blocks(encoder, img_size, warmup=warmup if r == 0 else 1, iters=iters,
                                     progress=progress) for r in range(repeats)]
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
) -> dict[str, float]:
    """Time the decoder parts of ``decoder_signatures`` on a random window ``(1, in_channels, window, h, w)``.

    Measured (eval mode, batch 1, random weights: latency does not depend on them): the baseline SP-TCN of ``arch``
    (``decoder_ops`` None), the searched decoder with every slot an identity (``sptcn_fixed``), every candidate op at
    every dilation of ``arch`` on ``(1, channels, window, h, w)``, and the bilinear upsampling of one frame's logits
    ``(1, K, h, w) -> (1, K, H, W)``. Same policy as the blocks: the median over ``repeats`` passes of the per-pass
    median of ``iters`` calls.

    Returns:
        signature -> ms (to merge into ``LatencyTable.parts``).
    """
    if arch.decoder == "mstcn":
        return _measure_multiscale_parts(arch, in_channels, num_classes, feature_hw, img_hw, candidates=candidates,
                                         warmup=warmup, iters=iters, repeats=repeats, device=device)
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
                      warmup=warmup, iters=iters, repeats=repeats, device=device)
    logger.info("measured %d decoder parts (window %d at %dx%d)", len(out), arch.window, h, w)
    return out


def _time_parts(modules: Mapping[str, tuple[torch.nn.Module, Any]], upsample_key: str, logits: torch.Tensor,
                img_hw: tuple[int, int], *, warmup: int, iters: int, repeats: int,
                device: str | torch.device) -> dict[str, float]:
    """Median over ``repeats`` passes of the per-pass median of ``iters`` calls of every ``module(x)``, and of the
    bilinear upsampling of ``logits`` to ``img_hw``."""

    def upsample(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, size=tuple(img_hw), mode="bilinear", align_corners=False)

    samples: dict[str, list[float]] = {k: [] for k in [*modules, upsample_key]}
    for m, _ in modules.values():
        m.to(device).eval()
    for r in range(repeats):
        wu = warmup if r == 0 else 1
        for key, (m, x) in modules.items():
            samples[key].append(time_fn(functools.partial(m, x), warmup=wu, iters=iters).median_ms)
        samples[upsample_key].append(time_fn(functools.partial(upsample, logits), warmup=wu, iters=iters).median_ms)
    return {k: statistics.median(v) for k, v in samples.items()}


def _scale_candidates(arch: Arch, candidates: Sequence[str]) -> list[str]:
    """Ops to time at every finer scale: the candidates and the per-frame default's ops."""
    default = default_scale_ops(len(arch.scales) - 1)
    return list(dict.fromkeys([*candidates, *default]))


def _measure_multiscale_parts(arch: Arch, in_channels: Sequence[int], num_classes: int,
                              feature_hws: Sequence[tuple[int, int]], img_hw: tuple[int, int], *,
                              candidates: Sequence[str], warmup: int, iters: int, repeats: int,
                              device: str | torch.device) -> dict[str, float]:
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
        for name in _scale_candidates(arch, candidates):
            modules[keys["op"](name, arch.fuse_channels, 1, hw)] = (
                make_op(name, arch.fuse_channels, 1, causal=arch.causal), x_fine)
    h, w = feature_hws[-1]
    out = _time_parts(modules, keys["upsample"], torch.randn(1, num_classes, h, w, device=device), img_hw,
                      warmup=warmup, iters=iters, repeats=repeats, device=device)
    logger.info("measured %d multi-scale decoder parts (window %d at %s)", len(out), arch.window,
                ", ".join(f"{a}x{b}" for a, b in feature_hws))
    return out


def model_part_keys(encoder: Encoder, base: Arch, num_classes: int,
                     candidates: Sequence[str]) -> tuple[list[str], list[str]]:
    """(encoder parts, decoder parts): the ``parts`` keys ``model_latency`` needs for ``base`` (its SP-TCN decoder,
    baseline or searched over ``candidates``) besides the block latencies."""
    last = len(encoder.depths) - 1
    enc = [stem_signature(encoder)] + [output_signature(encoder, i) for i in range(len(encoder.depths))]
    enc += [downsample_signature(encoder, i) for i in range(len(encoder.depths))]
    dec: list[str] = []
    if base.decoder == "sptcn":
        keys = decoder_signatures(base, encoder.out_channels[last], num_classes, encoder.feature_hw(last),
                                  encoder.img_size)
        dec = [keys["baseline"], keys["fixed"], keys["upsample"]]
        dec += [keys["op"](name, d) for d in sorted(set(base.dilations)) for name in candidates]
    elif base.decoder == "mstcn":
        channels, hws = decoder_inputs(encoder, base)
        ms = multiscale_signatures(base, channels, num_classes, hws, encoder.img_size)
        dec = [ms["fixed_baseline"], ms["fixed_searched"], ms["upsample"]]
        dec += [ms["op"](name, base.channels, d, hws[0]) for d in sorted(set(base.dilations)) for name in candidates]
        dec += [ms["op"](name, base.fuse_channels, 1, hw) for hw in hws[1:]
                for name in _scale_candidates(base, candidates)]
    return enc, dec


def complete_model_parts(table: LatencyTable, encoder: Encoder, base: Arch, num_classes: int,
                         candidates: Sequence[str] = SEARCH_CANDIDATES) -> bool:
    """Measure the parts of ``model_latency`` that ``table`` lacks (stem, outputs, decoder parts), in place.

    ``base`` is the config's architecture: its SP-TCN decoder (baseline, fixed parts of a searched one, every op of
    ``candidates`` at its dilations) is what gets measured; ``encoder`` the full-depth encoder, on its device.

    Returns:
        Whether anything was added.
    """
    enc_keys, dec_keys = model_part_keys(encoder, base, num_classes, candidates)
    added = False
    if not table.has_parts(enc_keys):
        logger.info("latency table: measuring the stem, downsamples and output conversions of %s", encoder.name)
        measured = measure_latency_table(encoder)
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
                                      device=device)
        for k, v in parts.items():
            table.parts.setdefault(k, v)
        added = True
    return added
