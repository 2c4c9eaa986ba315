"""Latency tables: measured per-block latency (ms) of an encoder, keyed by block signature, for Eq. 2 [ST-NAS].

A table holds, for one device, the median time of every encoder block at its real input shape (batch 1, after
warm-up), keyed by ``Encoder.block_signature(stage, block, img_size)`` (e.g.
``"swin_tiny/s2/b1/w7x7_shift3x3_h12/1x20x36x384"``): the signature names the encoder, the stage, the block index,
the block's kind (Swin: window, shift, heads, so shifted and unshifted blocks differ) and its input shape. A table
measured on the full encoder therefore serves every shortened one. The downsample (patch merging, stride-changing
block) of each stage is timed too, for reports; it is not searched and not part of the penalty.

JSON layout (schema version 1)::

    {"schema_version": 1, "device": {...vidnas.bench.device_signature()..., "torch_device": "cpu"},
     "meta": {"encoder": "swin_tiny", "img_size": [320, 576], "warmup": 10, "iters": 50, "statistic": "median",
              "batch": 1, "created": "2025-...Z"},
     "blocks": {signature: ms, ...}, "downsample": {signature: ms, ...},
     "stats": {signature: {"median_ms", "mean_ms", "std_ms", "p90_ms", "n"}, ...}}
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vidnas.bench import device_signature, time_fn
from vidnas.utils import atomic_write_json

if TYPE_CHECKING:
    from vidnas.models.encoders import Encoder

__all__ = [
    "LATENCY_SCHEMA_VERSION",
    "DEVICE_KEYS",
    "LatencyTable",
    "LatencyTableError",
    "MissingLatencyError",
    "downsample_signature",
    "measure_encoder_blocks",
]

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


def downsample_signature(encoder: Encoder, stage: int, input_hw: tuple[int, int] | None = None) -> str:
    """Table key of stage ``stage``'s downsample: ``"{name}/s{i}/downsample/{output shape}"`` (batch 1)."""
    shape = "x".join(str(d) for d in encoder.block_input_shape(stage, input_hw))
    return f"{encoder.name}/s{stage}/downsample/{shape}"


@dataclass
class LatencyTable:
    """Block latencies (ms) of one device.

    Attributes:
        blocks: block signature -> median latency in ms (what Eq. 2 uses as s_i).
        device: where it was measured (``vidnas.bench.device_signature()`` plus ``torch_device``).
        downsample: downsample signature -> median ms (reporting only).
        stats: signature -> timing statistics (median, mean, std, p90, n) of blocks and downsamples.
        meta: encoder name, image size, warm-up and timed calls, creation time.
        path: the file this table was loaded from or saved to (used in error messages), None if never on disk.
    """

    blocks: dict[str, float] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    downsample: dict[str, float] = field(default_factory=dict)
    stats: dict[str, dict[str, float]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

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
            "stats": {k: dict(v) for k, v in self.stats.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | os.PathLike | None = None) -> LatencyTable:
        """Inverse of ``to_dict``; a wrong schema version or a malformed field raises ``LatencyTableError``."""
        where = f"{source}: " if source is not None else ""
        if not isinstance(data, dict):
            raise LatencyTableError(f"{where}expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != LATENCY_SCHEMA_VERSION:
            raise LatencyTableError(
                f"{where}unsupported latency table schema_version {version!r}; this reader understands "
                f"{LATENCY_SCHEMA_VERSION}"
            )
        tables: dict[str, dict[str, float]] = {}
        for key in ("blocks", "downsample"):
            raw = data.get(key, {})
            if not isinstance(raw, dict) or not all(isinstance(v, int | float) for v in raw.values()):
                raise LatencyTableError(f"{where}field {key!r}: expected an object of signature -> milliseconds")
            tables[key] = {str(k): float(v) for k, v in raw.items()}
        return cls(
            blocks=tables["blocks"],
            device=dict(data.get("device") or {}),
            downsample=tables["downsample"],
            stats={str(k): dict(v) for k, v in (data.get("stats") or {}).items()},
            meta=dict(data.get("meta") or {}),
            path=Path(source) if source is not None else None,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table as JSON atomically (a crash never leaves half a file); remembers ``path``."""
        self.path = atomic_write_json(path, self.to_dict())
        return self.path

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyTable:
        """Read a table written by ``save``; errors name the file."""
        p = Path(path)
        if not p.is_file():
            raise LatencyTableError(f"latency table not found: {p}")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise LatencyTableError(f"{p}: invalid JSON: {e}") from e
        table = cls.from_dict(data, source=p)
        if not table.matches_device():
            logger.warning(
                "%s was measured on another device (%s); its latencies may not hold here",
                p,
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
            h = encoder.stem(x)
            for i, stage in enumerate(encoder.stages):
                sig = downsample_signature(encoder, i, hw)
                stats = time_fn(functools.partial(stage.downsample, h), warmup=warmup, iters=iters, sync=sync)
                table.downsample[sig] = stats.median_ms
                table.stats[sig] = stats.to_dict()
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
                    h = block(h)
                    logger.debug("%s: %.3f ms", sig, stats.median_ms)
    finally:
        encoder.train(was_training)
    logger.info("measured %d blocks of %s at %s on %s", len(table.blocks), encoder.name, hw, device)
    return table
