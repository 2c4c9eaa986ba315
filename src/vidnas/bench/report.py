"""Benchmark rows: one per model or configuration, printed as aligned text tables and saved as JSON."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidnas.bench.device import device_signature
from vidnas.utils import atomic_write_json

__all__ = [
    "BenchRow",
    "DEFAULT_COLUMNS",
    "format_table",
    "write_rows_json",
    "read_rows_json",
    "device_line",
    "protocol_note",
]

DEFAULT_COLUMNS: tuple[str, ...] = ("name", "params", "gflops", "latency_ms", "fps")
_FIELDS = ("name", "params", "gflops", "latency_ms", "fps")


@dataclass
class BenchRow:
    """One measured model or configuration.

    Attributes:
        name: label of the row (unique within a table when used as a ratio reference).
        params: parameter count.
        gflops: GFLOPs of one inference as counted by ``count_flops`` (1 MAC = 2 FLOPs), divided by 1e9.
        latency_ms: time to produce one frame's output. Under the ST-NAS protocol this is the time to encode one
            frame plus decode the full window (for a streaming model: one ``push``).
        extra: any further values (e.g. ``{"median_ms": ..., "p90_ms": ..., "miou": ...}``); usable as table columns.
    """

    name: str
    params: int | None = None
    gflops: float | None = None
    latency_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fps(self) -> float | None:
        """Frames per second ``1000 / latency_ms`` (None without a latency)."""
        if self.latency_ms is None or self.latency_ms <= 0:
            return None
        return 1000.0 / self.latency_ms

    def get(self, key: str) -> Any:
        """Value of a field (``name``, ``params``, ``gflops``, ``latency_ms``, ``fps``) or of ``extra[key]``."""
        if key in _FIELDS:
            return getattr(self, key)
        return self.extra.get(key)

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "params", "gflops", "latency_ms", "fps", "extra"}`` (fps derived, stored for readers)."""
        return {
            "name": self.name,
            "params": self.params,
            "gflops": self.gflops,
            "latency_ms": self.latency_ms,
            "fps": self.fps,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BenchRow:
        """Inverse of ``to_dict`` (``fps`` is recomputed from ``latency_ms``)."""
        return cls(
            name=str(d["name"]),
            params=d.get("params"),
            gflops=d.get("gflops"),
            latency_ms=d.get("latency_ms"),
            extra=dict(d.get("extra") or {}),
        )


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        a = abs(value)
        if a >= 100:
            return f"{value:,.1f}"
        if a >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def format_table(
    rows: Sequence[BenchRow],
    columns: Sequence[str] = DEFAULT_COLUMNS,
    ref: str | None = None,
    ratio_of: str = "fps",
) -> str:
    """Plain-text table, one line per row, columns aligned (text left, numbers right).

    Args:
        rows: the rows, printed in order.
        columns: keys looked up with ``BenchRow.get`` (fields or ``extra`` keys).
        ref: name of a reference row; adds a last column ``row[ratio_of] / ref[ratio_of]`` (e.g. "1.50x" = 1.5 times
            the reference's FPS).
        ratio_of: numeric key the ratio column divides.

    Returns:
        The table, lines joined by newlines (header, dashes, rows), no trailing newline.

    Raises:
        ValueError: if a column is neither a field nor an ``extra`` key of any row, or ``ref`` names no row.
    """
    known = set(_FIELDS) | {k for r in rows for k in r.extra}
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; available: {', '.join(sorted(known))}")
    headers = list(columns)
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    numeric = [all(isinstance(r.get(c), int | float) or r.get(c) is None for r in rows) for c in columns]
    if ref is not None:
        by_name = {r.name: r for r in rows}
        if ref not in by_name:
            raise ValueError(f"reference row {ref!r} not found; rows: {', '.join(by_name)}")
        base = by_name[ref].get(ratio_of)
        headers.append(f"{ratio_of} / {ref}")
        numeric.append(True)
        for r, line in zip(rows, cells, strict=True):
            v = r.get(ratio_of)
            ok = isinstance(v, int | float) and isinstance(base, int | float) and base != 0
            line.append(f"{v / base:.2f}x" if ok else "-")
    widths = [max([len(h)] + [len(line[i]) for line in cells]) for i, h in enumerate(headers)]

    def join(items: Sequence[str]) -> str:
        return "  ".join(s.rjust(w) if num else s.ljust(w) for s, w, num in zip(items, widths, numeric, strict=True))

    lines = [join(headers), "  ".join("-" * w for w in widths)] + [join(line) for line in cells]
    return "\n".join(line.rstrip() for line in lines)


def write_rows_json(path: str | os.PathLike, rows: Sequence[BenchRow]) -> Path:
    """Write the rows as a JSON list of ``BenchRow.to_dict()`` objects, atomically; returns the path."""
    return atomic_write_json(path, [r.to_dict() for r in rows])


def read_rows_json(path: str | os.PathLike) -> list[BenchRow]:
    """Read rows written by ``write_rows_json``."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
    return [BenchRow.from_dict(d) for d in data]


def device_line() -> str:
    """One line describing the measuring machine (``device_signature``), printed under every timing table."""
    d = device_signature()
    where = d["cuda"] or d["cpu"]
    return (
        f"device: {where} ({d['cpu_count']} logical CPUs, {d['num_threads']} torch threads), torch {d['torch']}, "
        f"python {d['python']}, {d['platform']}"
    )


def protocol_note(frames: int, warmup: int, *, incremental: bool = False, precision: str = "float32",
                  batch: int = 1) -> str:
    """How the latencies of ``vidnas.bench.protocol`` were measured, printed under every protocol table
    (``precision``: the arithmetic named, e.g. ``float32`` or ``float32 and bf16 autocast``; ``batch``: frames per
    push, one per stream)."""
    batching = "batch 1" if batch == 1 else (f"batch {batch} (each push carries {batch} frames, one per stream; "
                                             "latency = push time / batch)")
    note = (
        f"protocol [ST-NAS Sec. 4]: per frame = encode 1 frame + decode the full window (Streamer.push with the ring "
        f"buffer full), {batching}, {precision}; latency = mean over {frames} frames after {warmup} warm-up pushes, "
        f"FPS = 1000 / latency; models interleaved (one push each per round, rotated order); GFLOPs = encoder on 1 "
        f"frame + decoder on the window (1 MAC = 2 FLOPs); frame-by-frame models (arch2, dynamic cells: steady "
        f"state) run the encoder and their decoder (cell) once per frame"
    )
    if incremental:
        note += (
            "; incremental protocol (inc_*): the same model pushed through model.stream(incremental=True) in the "
            "same rounds: encode 1 frame + one decoder time step (same logits as the window decode; causal window "
            "models only, '-' elsewhere), inc_gflops = encoder + one steady-state step, inc_speedup = latency / "
            "inc_latency"
        )
    return note
