"""The search record of an ``arch.json``: what a derived architecture came from.

``write_search_arch`` stores the record in ``Arch.extra["search"]`` so the file stays a plain
``models.architecture.Arch`` (``build_model`` reads it and ignores the record) while keeping the alphas, betas, lambda,
threshold and latency table of the search::

    "extra": {"search": {"method": "stnas", "alphas": [[...], ...], "betas": [[...], ...],
                         "beta_columns": ["identity", ...], "lambda": 0.001, "threshold": 1.0,
                         "latency_table": {"path": "...", "device": {...}}, ...extra keys...}}
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidnas.models.architecture import Arch, ArchError
from vidnas.search.dnas.depth import shrink_depth

__all__ = ["SEARCH_KEY", "SearchRecord", "write_search_arch", "read_search_record"]

logger = logging.getLogger(__name__)

SEARCH_KEY = "search"  # key of the record inside Arch.extra
_RESERVED = ("method", "alphas", "betas", "beta_columns", "lambda", "threshold", "latency_table")


@dataclass(frozen=True)
class SearchRecord:
    """An architecture with the search record it was derived from.

    Attributes:
        arch: the architecture (as ``build_model`` reads it).
        alphas: depth-search alphas per stage, per block (full depths), or None (no depth search).
        betas: decoder betas per slot, per candidate, or None (no decoder search).
        beta_columns: candidate names of the beta columns, or None.
        lam: lambda of Eq. 2, or None.
        threshold: shrink-rule threshold.
        latency_table_path: the latency table used, or None.
        latency_table_device: the device signature stored in that table, or None.
        method: search method label ("stnas"), or None.
        extra: any other record entries (epochs, run name, ...).
    """

    arch: Arch
    alphas: list[list[float]] | None = None
    betas: list[list[float]] | None = None
    beta_columns: list[str] | None = None
    lam: float | None = None
    threshold: float = 1.0
    latency_table_path: str | None = None
    latency_table_device: dict[str, Any] | None = None
    method: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _floats2(values: Sequence[Sequence[float]] | None) -> list[list[float]] | None:
    if values is None:
        return None
    return [[float(v) for v in row] for row in values]


def write_search_arch(
    path: str | os.PathLike,
    arch: Arch,
    *,
    alphas: Sequence[Sequence[float]] | None,
    betas: Sequence[Sequence[float]] | None,
    lam: float | None,
    latency_table_path: str | os.PathLike | None,
    latency_table_device: Mapping[str, Any] | None,
    threshold: float = 1.0,
    extra: Mapping[str, Any] | None = None,
    beta_columns: Sequence[str] | None = None,
    method: str = "stnas",
) -> Path:
    """Write ``arch`` with its search record in ``extra["search"]`` as an architecture file, atomically.

    Consistency is checked before writing: with alphas and depths both given, every stage's depth must be what the
    shrink rule gives on its alphas at ``threshold``; with betas and decoder ops both given, there is one beta row
    per op (and, with ``beta_columns``, each op is the argmax of its row).

    Args:
        path: destination (``arch.json``).
        arch: the derived architecture.
        alphas: alphas per stage, per block, or None.
        betas: betas per decoder slot, per candidate, or None.
        lam: lambda of Eq. 2.
        latency_table_path: the latency table file used (stored as given).
        latency_table_device: its device signature (``LatencyTable.device``).
        threshold: shrink-rule threshold used.
        extra: further JSON-serialisable entries of the record (must not reuse the record's own keys).
        beta_columns: candidate names of the beta columns (default: none stored).
        method: search method label.

    Returns:
        The path written.

    Raises:
        ArchError: inconsistent record (message names the stage or slot).
    """
    alphas_l = _floats2(alphas)
    betas_l = _floats2(betas)
    if alphas_l is not None and arch.depths is not None:
        if len(alphas_l) != len(arch.depths):
            raise ArchError(f"{len(alphas_l)} stages of alphas for {len(arch.depths)} depths {list(arch.depths)}")
        for s, (row, d) in enumerate(zip(alphas_l, arch.depths, strict=True)):
            if shrink_depth(row, threshold) != d:
                raise ArchError(
                    f"stage {s}: depth {d} is not what the shrink rule gives on alphas {row} at threshold {threshold} "
                    f"({shrink_depth(row, threshold)})"
                )
    if betas_l is not None and arch.decoder_ops is not None:
        if len(betas_l) != len(arch.decoder_ops):
            raise ArchError(f"{len(betas_l)} rows of betas for {len(arch.decoder_ops)} decoder ops")
        if beta_columns is not None:
            cols = list(beta_columns)
            for k, (row, op) in enumerate(zip(betas_l, arch.decoder_ops, strict=True)):
                if len(row) != len(cols):
                    raise ArchError(f"slot {k}: {len(row)} betas for {len(cols)} beta_columns")
                if cols[row.index(max(row))] != op:
                    raise ArchError(f"slot {k}: op {op!r} is not the argmax of its betas {row} over {cols}")
    more = dict(extra or {})
    clash = [k for k in more if k in _RESERVED]
    if clash:
        raise ArchError(f"extra reuses record keys {clash}; reserved: {', '.join(_RESERVED)}")
    record: dict[str, Any] = {
        "method": method,
        "alphas": alphas_l,
        "betas": betas_l,
        "beta_columns": None if beta_columns is None else list(beta_columns),
        "lambda": None if lam is None else float(lam),
        "threshold": float(threshold),
        "latency_table": {
            "path": None if latency_table_path is None else str(latency_table_path),
            "device": None if latency_table_device is None else dict(latency_table_device),
        },
        **more,
    }
    out = dataclasses.replace(arch, extra={**arch.extra, SEARCH_KEY: record})
    written = out.save(path)
    logger.info("wrote %s: depths %s, decoder ops %s", written, out.depths, out.decoder_ops)
    return written


def read_search_record(path: str | os.PathLike) -> SearchRecord:
    """Read an architecture file and its search record (all record fields None if it has none).

    Raises:
        ArchError: unreadable or invalid file, or a malformed record (message names the file).
    """
    arch = Arch.load(path)
    rec = arch.extra.get(SEARCH_KEY)
    if rec is None:
        return SearchRecord(arch=arch)
    if not isinstance(rec, dict):
        raise ArchError(f"{path}: extra.{SEARCH_KEY} must be an object, got {type(rec).__name__}")
    table = rec.get("latency_table") or {}
    try:
        return SearchRecord(
            arch=arch,
            alphas=_floats2(rec.get("alphas")),
            betas=_floats2(rec.get("betas")),
            beta_columns=None if rec.get("beta_columns") is None else [str(c) for c in rec["beta_columns"]],
            lam=None if rec.get("lambda") is None else float(rec["lambda"]),
            threshold=float(rec.get("threshold", 1.0)),
            latency_table_path=table.get("path"),
            latency_table_device=table.get("device"),
            method=None if rec.get("method") is None else str(rec["method"]),
            extra={k: v for k, v in rec.items() if k not in _RESERVED},
        )
    except (TypeError, ValueError) as e:
        raise ArchError(f"{path}: malformed extra.{SEARCH_KEY}: {e}") from e
