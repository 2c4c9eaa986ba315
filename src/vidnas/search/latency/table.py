"""``LatencyTable``: the latencies (ms) of one device keyed by signature, what they add up to for an architecture,
the decoder pricing of the search, and the JSON file (layout: ``vidnas.search.latency``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vidnas.bench import device_signature
from vidnas.jsonfile import JsonFile, check_header, where
from vidnas.models.architecture import OPS_PER_LAYER, Arch
from vidnas.models.decoders.arch2_space import SLOTS
from vidnas.models.decoders.mstcn import OPS_PER_SCALE
from vidnas.models.ops import SEARCH_CANDIDATES
from vidnas.search.latency.signatures import (
    decoder_inputs,
    decoder_signatures,
    downsample_signature,
    model_part_keys,
    multiscale_signatures,
    output_signature,
    space_signatures,
    stem_signature,
)

if TYPE_CHECKING:
    from vidnas.models.encoders import Encoder

__all__ = ["LATENCY_SCHEMA_VERSION", "DEVICE_KEYS", "LatencyTable", "LatencyTableError", "MissingLatencyError"]

logger = logging.getLogger(__name__)

LATENCY_SCHEMA_VERSION = 1
# device-signature fields that change latencies; the others (python version, platform string) are informative
DEVICE_KEYS: tuple[str, ...] = ("cpu", "num_threads", "torch", "machine", "cuda", "torch_device")


class LatencyTableError(ValueError):
    """A latency table file is missing or invalid; the message names the file."""


class MissingLatencyError(KeyError):
    """A block signature is not in the table; the message names the signature and the table's file."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


@dataclass
class LatencyTable(JsonFile):
    """Block latencies (ms) of one device.

    Attributes:
        blocks: block signature -> median latency in ms (what Eq. 2 uses as s_i).
        device: where it was measured (``vidnas.bench.device_signature()`` plus ``torch_device``).
        downsample: downsample signature -> median ms (not searched; part of ``model_latency``).
        parts: every other timed part (stem, output conversions, decoder parts, upsampling) -> median ms.
        stats: signature -> timing statistics (median, mean, std, p90, n) of blocks and downsamples.
        meta: encoder name, image size, warm-up and timed calls, creation time, ``runtime`` and ``precision``
            (``pricing``).
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
        parts + the trunk's slot ops + every finer scale's ops (``multiscale_signatures``). ``arch2_space``: the whole
        arch2 decoder - arch2's slot ops + ``arch``'s slot ops (``space_signatures``).

        Raises:
            MissingLatencyError: a part is missing, or the decoder has no parts in tables (``head``, ``arch2``).
        """
        if arch.decoder == "arch2_space":
            sp = space_signatures(arch, in_channels, num_classes, feature_hw, img_hw)
            return (self.part(sp["upsample"]) + self.part(sp["arch2"]) - sum(self.part(k) for k in sp["arch2_ops"])
                    + sum(self.part(k) for k in sp["ops"]))
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

    # --- decoder pricing of the search ----------------------------------------------------------------------------

    def has_model_parts(self, encoder: Encoder, base: Arch, num_classes: int,
                        candidates: Sequence[str] = SEARCH_CANDIDATES) -> bool:
        """Whether the table holds every part ``model_latency`` needs for ``base`` and any decoder searched over
        ``candidates`` on ``encoder`` (``model_part_keys``: stem, downsamples, outputs, decoder parts and ops)."""
        enc, dec = model_part_keys(encoder, base, num_classes, candidates)
        return self.has_parts([*enc, *dec])

    def decoder_op_costs(self, encoder: Encoder, base: Arch, num_classes: int, slots: int,
                         candidates: Sequence[str] = SEARCH_CANDIDATES) -> torch.Tensor:
        """Table latency (ms) of every candidate op in every slot of the decoder supernet of ``base``: the (S, M)
        costs of ``DecoderSupernet.expected_latency`` (the decoder search's latency term, ``stnas.decoder_latency``).

        Slot order is the supernet's: SP-TCN ``slots // len(dilations)`` slots per dilation, in order; ``mstcn`` the
        trunk's slots (4 per residual layer, at ``channels`` on the coarse map) then, per finer scale coarse to fine,
        its two path ops and its fusion op (at ``fuse_channels``, dilation 1, on that scale's map) - the keys of
        ``multiscale_signatures``. ``slots`` (the supernet's count) tells whether an mstcn trunk is searched.
        ``arch2_space``: its eight slots (``SLOTS``), ``candidates`` the supernet's columns (the union of the slots'
        candidates); a column a slot does not allow costs 0.

        Raises:
            ValueError: a decoder other than ``sptcn`` / ``mstcn``, or a slot count the decoder cannot have.
            MissingLatencyError: an op is missing from the table.
        """
        rows: list[list[float]] = []
        if base.decoder == "arch2_space":
            channels, hws = decoder_inputs(encoder, base)
            op = space_signatures(base, channels, num_classes, hws, encoder.img_size)["op"]
            if slots != len(SLOTS):
                raise ValueError(f"an arch2_space supernet has {len(SLOTS)} slots, not {slots}")
            # a candidate a slot does not allow costs 0: its mixing weight is 0 (MixedOp's mask)
            rows = [[self.part(op(k, n)) if n in cands else 0.0 for n in candidates]
                    for k, (_, _, _, cands) in enumerate(SLOTS)]
        elif base.decoder == "mstcn":
            channels, hws = decoder_inputs(encoder, base)
            op = multiscale_signatures(base, channels, num_classes, hws, encoder.img_size)["op"]
            fine = OPS_PER_SCALE * (len(base.scales) - 1)
            trunk = slots - fine
            per = trunk // len(base.dilations) if trunk else 0
            if trunk < 0 or (trunk and per * len(base.dilations) != trunk):
                raise ValueError(f"an mstcn supernet over {len(base.scales)} scales with dilations "
                                 f"{list(base.dilations)} cannot have {slots} slots")
            rows = [[self.part(op(n, base.channels, base.dilations[k // per], hws[0])) for n in candidates]
                    for k in range(trunk)]
            rows += [[self.part(op(n, base.fuse_channels, 1, hws[1 + k // OPS_PER_SCALE])) for n in candidates]
                     for k in range(fine)]
        elif base.decoder == "sptcn":
            last = len(encoder.depths) - 1
            keys = decoder_signatures(base, encoder.out_channels[last], num_classes, encoder.feature_hw(last),
                                      encoder.img_size)
            per = slots // len(base.dilations)
            if per * len(base.dilations) != slots or per == 0:
                raise ValueError(f"an sptcn supernet with dilations {list(base.dilations)} cannot have {slots} slots")
            rows = [[self.part(keys["op"](n, base.dilations[k // per])) for n in candidates] for k in range(slots)]
        else:
            raise ValueError(f"decoder op latencies exist for the sptcn, mstcn and arch2_space decoders, not "
                             f"{base.decoder!r}")
        return torch.tensor(rows, dtype=torch.float32)

    def decoder_latency_estimate(self, encoder: Encoder, base: Arch, num_classes: int, *, searched: bool,
                                 candidates: Sequence[str] = SEARCH_CANDIDATES) -> float:
        """The decoder's share (ms) of a latency budget, read from the table.

        Not searched: the table latency of ``base``'s decoder (the SP-TCN baseline, or ``base.decoder_ops``).
        Searched: its ops are not known yet, so every slot counts the mean latency of the candidates (the expected
        latency under uniformly drawn ops, ``decoder_op_costs``) on top of the fixed parts (``sptcn_fixed``; for
        ``mstcn`` the decoder with identity trunk slots) and the upsampling. The report states the searched decoder's
        actual table latency.

        Raises:
            ValueError: a decoder other than ``sptcn`` / ``mstcn`` (its latency is not in tables).
            MissingLatencyError: a part is missing.
        """
        if base.decoder not in ("sptcn", "mstcn", "arch2_space"):
            raise ValueError(f"a latency budget needs the sptcn, mstcn or arch2_space decoder in the latency table, "
                             f"the config has {base.decoder!r}")
        channels, hws = decoder_inputs(encoder, base)
        if not searched:
            return self.decoder_latency(base, channels, num_classes, hws, encoder.img_size)
        if base.decoder == "arch2_space":  # arch2's fixed parts + every slot's mean over its own candidates
            sp = space_signatures(base, channels, num_classes, hws, encoder.img_size)
            means = [sum(self.part(sp["op"](k, n)) for n in cands) / len(cands)
                     for k, (_, _, _, cands) in enumerate(SLOTS)]
            return (self.part(sp["arch2"]) - sum(self.part(k) for k in sp["arch2_ops"]) + sum(means)
                    + self.part(sp["upsample"]))
        if base.decoder == "mstcn":
            keys = multiscale_signatures(base, channels, num_classes, hws, encoder.img_size)
            fixed, slots = keys["fixed_searched"], OPS_PER_LAYER * len(base.dilations) + OPS_PER_SCALE * (
                len(base.scales) - 1)
        else:
            keys = decoder_signatures(base, channels, num_classes, hws, encoder.img_size)
            fixed, slots = keys["fixed"], OPS_PER_LAYER * len(base.dilations)
        costs = self.decoder_op_costs(encoder, base, num_classes, slots, candidates)
        return self.part(fixed) + self.part(keys["upsample"]) + float(costs.mean(dim=1).sum())

    @property
    def pricing(self) -> tuple[str, str]:
        """(runtime, precision) the table was measured in (``meta``: torch / onnxruntime / openvino, fp32 / int8); a
        table from before they were recorded reads as (torch, fp32)."""
        return str(self.meta.get("runtime", "torch")), str(self.meta.get("precision", "fp32"))

    @property
    def decoder_precision(self) -> str:
        """The precision of the decoder parts: ``meta.decoder_precision`` (``vidnas latency --fp32-decoder``: fp32 in
        an int8 table, as ``vidnas export --precision int8`` keeps window decoders), else the table's."""
        return str(self.meta.get("decoder_precision", self.pricing[1]))

    def pricing_record(self) -> dict[str, str]:
        """``{"runtime", "precision", "decoder_precision"}``: what a search records of the table that priced it."""
        runtime, precision = self.pricing
        return {"runtime": runtime, "precision": precision, "decoder_precision": self.decoder_precision}

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
