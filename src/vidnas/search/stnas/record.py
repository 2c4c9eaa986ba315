"""What an ST-NAS search leaves behind: the search record inside ``arch.json`` and the run's ``StnasResult``
(``search_summary.json``).

``write_search_arch`` stores the record in ``Arch.extra["search"]`` so the file stays a plain
``models.architecture.Arch`` (``build_model`` reads it and ignores the record) while keeping the alphas, betas, lambda,
threshold and latency table of the search::

    "extra": {"search": {"method": "stnas", "alphas": [[...], ...], "betas": [[...], ...],
                         "beta_columns": ["identity", ...], "lambda": 0.001, "threshold": 1.0,
                         "latency_table": {"path": "...", "device": {...}}, ...extra keys...}}
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidnas.models.architecture import Arch, ArchError
from vidnas.search.stnas.derive import shrink_depth

__all__ = [
    "SEARCH_KEY",
    "SearchRecord",
    "write_search_arch",
    "read_search_record",
    "StnasResult",
    "load_search_summary",
]

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


@dataclass
class StnasResult:
    """What one ST-NAS search produced.

    Attributes:
        run_dir: the run directory.
        arch: the derived architecture (as written to ``arch_path``).
        arch_path: ``arch.json``.
        lam: lambda of Eq. 2.
        threshold: shrink-rule threshold.
        full_depths: depths of the searched (full) encoder.
        depths: derived depths (None if the encoder search was skipped and the config sets none).
        alphas: final alphas per stage, per block (None if skipped).
        decoder_ops: derived op per decoder slot (None if the decoder search was skipped).
        betas: final betas per slot, per candidate (None if skipped).
        candidates: the beta columns.
        latency_table_path: the latency table used (None if the encoder search was skipped).
        full_latency_ms: summed block latency (ms) of the full encoder.
        derived_latency_ms: summed block latency (ms) of the derived encoder (Eq. 2's "expected latency").
        encoder_seconds: wall time of the encoder search (all invocations, resumes included).
        decoder_seconds: wall time of the decoder search.
        init_checkpoint: ``derived_init.pt`` (derived model with the supernets' weights) or None.
        files: every file written, for the summary.
    """

    run_dir: Path
    arch: Arch
    arch_path: Path
    lam: float
    threshold: float
    full_depths: tuple[int, ...] | None = None
    depths: tuple[int, ...] | None = None
    alphas: list[list[float]] | None = None
    decoder_ops: tuple[str, ...] | None = None
    betas: list[list[float]] | None = None
    candidates: tuple[str, ...] | None = None
    latency_table_path: Path | None = None
    full_latency_ms: float | None = None
    derived_latency_ms: float | None = None
    encoder_seconds: float = 0.0
    decoder_seconds: float = 0.0
    init_checkpoint: Path | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def search_seconds(self) -> float:
        """Encoder plus decoder search wall time."""
        return self.encoder_seconds + self.decoder_seconds

    @property
    def latency_saving(self) -> float | None:
        """``1 - derived / full`` block latency (0.25 = a quarter of the encoder's block time removed)."""
        if not self.full_latency_ms or self.derived_latency_ms is None:
            return None
        return 1.0 - self.derived_latency_ms / self.full_latency_ms

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (``search_summary.json``)."""
        return {
            "run_dir": str(self.run_dir),
            "arch_path": str(self.arch_path),
            "arch": self.arch.to_dict(),
            "lambda": self.lam,
            "threshold": self.threshold,
            "full_depths": None if self.full_depths is None else list(self.full_depths),
            "depths": None if self.depths is None else list(self.depths),
            "alphas": self.alphas,
            "decoder_ops": None if self.decoder_ops is None else list(self.decoder_ops),
            "betas": self.betas,
            "candidates": None if self.candidates is None else list(self.candidates),
            "latency_table_path": None if self.latency_table_path is None else str(self.latency_table_path),
            "full_latency_ms": self.full_latency_ms,
            "derived_latency_ms": self.derived_latency_ms,
            "latency_saving": self.latency_saving,
            "encoder_seconds": self.encoder_seconds,
            "decoder_seconds": self.decoder_seconds,
            "search_seconds": self.search_seconds,
            "init_checkpoint": None if self.init_checkpoint is None else str(self.init_checkpoint),
            "files": [str(p) for p in self.files],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StnasResult:
        """Inverse of ``to_dict``."""

        def tup(v: Any) -> tuple | None:
            return None if v is None else tuple(v)

        return cls(
            run_dir=Path(d["run_dir"]),
            arch=Arch.from_dict(d["arch"]),
            arch_path=Path(d["arch_path"]),
            lam=float(d["lambda"]),
            threshold=float(d["threshold"]),
            full_depths=tup(d.get("full_depths")),
            depths=tup(d.get("depths")),
            alphas=d.get("alphas"),
            decoder_ops=tup(d.get("decoder_ops")),
            betas=d.get("betas"),
            candidates=tup(d.get("candidates")),
            latency_table_path=None if d.get("latency_table_path") is None else Path(d["latency_table_path"]),
            full_latency_ms=d.get("full_latency_ms"),
            derived_latency_ms=d.get("derived_latency_ms"),
            encoder_seconds=float(d.get("encoder_seconds", 0.0)),
            decoder_seconds=float(d.get("decoder_seconds", 0.0)),
            init_checkpoint=None if d.get("init_checkpoint") is None else Path(d["init_checkpoint"]),
            files=[Path(p) for p in d.get("files", [])],
        )


def load_search_summary(run_dir: str | Path) -> StnasResult:
    """The ``StnasResult`` of a finished search, from its ``search_summary.json``."""
    path = Path(run_dir) / "search_summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"no finished ST-NAS search in {run_dir} (missing {path.name})")
    return StnasResult.from_dict(json.loads(path.read_text()))
