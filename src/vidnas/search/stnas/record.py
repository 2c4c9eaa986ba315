"""What an ST-NAS search leaves behind: the search record inside ``arch.json`` and the run's ``StnasResult``
(``search_summary.json``).

``write_search_arch`` stores the record in ``Arch.extra["search"]`` so the file stays a plain
``models.architecture.Arch`` (``build_model`` reads it and ignores the record) while keeping the alphas, betas, lambda,
threshold and latency table of the search::

    "extra": {"search": {"method": "stnas", "alphas": [[...], ...], "betas": [[...], ...],
                         "beta_columns": ["identity", ...], "lambda": 0.001, "threshold": 1.0,
                         "latency_table": {"path": "...", "device": {...}},
                         "depth": {"rule": "truncated", "depths": [...], "losses": [[...], ...], "flip_lambda": ...},
                         "decoder": {"seeds": N, "weights_mean": [[...], ...], "slot_agreement": [...], ...},
                         ...extra keys...}}

``depth`` is ``vidnas.search.stnas.depth.DepthDecision.to_dict()``; ``decoder`` is ``decoder_consensus`` plus the
betas' lr. With several decoder seeds, ``betas`` holds ``log`` of the seed-averaged softmax weights (a beta vector
whose softmax is that average, so its argmax is the derived op); each seed's raw betas are in
``decoder.betas_per_seed``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidnas.models.architecture import Arch, ArchError
from vidnas.search.stnas.depth import choose_depths
from vidnas.search.stnas.derive import slot_ops
from vidnas.search.stnas.supernet import shrink_depth

__all__ = [
    "SEARCH_KEY",
    "SearchRecord",
    "decoder_consensus",
    "write_search_arch",
    "read_search_record",
    "StnasResult",
    "load_search_summary",
]

logger = logging.getLogger(__name__)

SEARCH_KEY = "search"  # key of the record inside Arch.extra
_RESERVED = ("method", "alphas", "betas", "beta_columns", "lambda", "threshold", "latency_table", "depth", "decoder")


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
        depth: how the depths were decided (``DepthDecision.to_dict()``), or None.
        decoder: the decoder search's consensus over seeds (``decoder_consensus``) and its lr, or None.
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
    depth: dict[str, Any] | None = None
    decoder: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def decoder_consensus(weights: Sequence[Sequence[Sequence[float]]], candidates: Sequence[str]) -> dict[str, Any]:
    """Derive decoder ops from several decoder searches and say how far they agree.

    Args:
        weights: per seed, per slot, softmax(beta) over ``candidates``: shape (N, S, M).
        candidates: the M op names.

    Returns:
        ``{"seeds": N, "ops": argmax per slot of the mean weights, "weights_mean": (S, M), "betas": log of the mean
        weights, "seed_ops": (N, S) each seed's own argmax, "slot_agreement": per slot the fraction of seeds whose
        argmax is the derived op, "agreement": their mean, "pairwise_agreement": mean over seed pairs of the fraction
        of slots where both pick the same op (None for one seed), "op_preference": (N, M) each seed's weight per op
        averaged over slots, "op_preference_corr": mean Pearson correlation of op_preference between seed pairs
        (None for one seed), "chance_agreement": 1 / M}``.
    """
    n = len(weights)
    if n == 0:
        raise ValueError("no decoder search to derive from")
    cols = list(candidates)
    slots = len(weights[0])
    mean = [[sum(weights[k][s][j] for k in range(n)) / n for j in range(len(cols))] for s in range(slots)]

    def argmax(row: Sequence[float]) -> int:
        return max(range(len(row)), key=lambda j: (row[j], -j))

    ops = [cols[argmax(row)] for row in mean]
    seed_ops = [[cols[argmax(row)] for row in w] for w in weights]
    slot_agreement = [sum(seed_ops[k][s] == ops[s] for k in range(n)) / n for s in range(slots)]
    pref = [[sum(w[s][j] for s in range(slots)) / slots for j in range(len(cols))] for w in weights]
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
    pairwise = None if not pairs else sum(
        sum(seed_ops[a][s] == seed_ops[b][s] for s in range(slots)) / slots for a, b in pairs) / len(pairs)
    corr = None if not pairs else sum(_pearson(pref[a], pref[b]) for a, b in pairs) / len(pairs)
    return {
        "seeds": n,
        "ops": ops,
        "weights_mean": mean,
        "betas": [[math.log(max(v, 1e-30)) for v in row] for row in mean],
        "seed_ops": seed_ops,
        "slot_agreement": slot_agreement,
        "agreement": sum(slot_agreement) / slots,
        "pairwise_agreement": pairwise,
        "op_preference": pref,
        "op_preference_corr": corr,
        "chance_agreement": 1.0 / len(cols),
    }


def _pearson(x: Sequence[float], y: Sequence[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


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
    depth: Mapping[str, Any] | None = None,
    decoder: Mapping[str, Any] | None = None,
    latency_table_pricing: Mapping[str, str] | None = None,
) -> Path:
    """Write ``arch`` with its search record in ``extra["search"]`` as an architecture file, atomically.

    Consistency is checked before writing: the depths must be what the record's depth rule gives (paper rule, or no
    ``depth``: the shrink rule on the alphas at ``threshold``; truncated rule: ``choose_depths`` on the recorded
    losses and latencies with the recorded lambda or budget); with betas and decoder ops both given, there is one
    beta row per searched slot (``derive.slot_ops``: for ``mstcn`` the trunk's then the finer scales') and, with
    ``beta_columns``, each op is the argmax of its row.

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
        depth: the depth decision (``DepthDecision.to_dict()``).
        decoder: the decoder consensus (``decoder_consensus``) and the betas' lr.
        latency_table_pricing: runtime, precision and decoder_precision of the table that priced the search
            (``LatencyTable.pricing_record``), stored in ``latency_table`` beside its path; None: no table.

    Returns:
        The path written.

    Raises:
        ArchError: inconsistent record (message names the stage or slot).
    """
    alphas_l = _floats2(alphas)
    betas_l = _floats2(betas)
    rule = None if depth is None else depth.get("rule")
    if rule == "truncated" and arch.depths is not None:
        _check_truncated(depth, arch.depths)  # type: ignore[arg-type]
    if alphas_l is not None and arch.depths is not None and rule in (None, "paper"):
        if len(alphas_l) != len(arch.depths):
            raise ArchError(f"{len(alphas_l)} stages of alphas for {len(arch.depths)} depths {list(arch.depths)}")
        for s, (row, d) in enumerate(zip(alphas_l, arch.depths, strict=True)):
            if shrink_depth(row, threshold) != d:
                raise ArchError(
                    f"stage {s}: depth {d} is not what the shrink rule gives on alphas {row} at threshold {threshold} "
                    f"({shrink_depth(row, threshold)})"
                )
    searched_ops = slot_ops(arch)
    if betas_l is not None and searched_ops is not None:
        if len(betas_l) != len(searched_ops):
            raise ArchError(f"{len(betas_l)} rows of betas for {len(searched_ops)} decoder ops")
        if beta_columns is not None:
            cols = list(beta_columns)
            for k, (row, op) in enumerate(zip(betas_l, searched_ops, strict=True)):
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
            **dict(latency_table_pricing or {}),
        },
        "depth": None if depth is None else dict(depth),
        "decoder": None if decoder is None else dict(decoder),
        **more,
    }
    out = dataclasses.replace(arch, extra={**arch.extra, SEARCH_KEY: record})
    written = out.save(path)
    logger.info("wrote %s: depths %s, decoder ops %s%s", written, out.depths, out.decoder_ops,
                "" if out.scale_ops is None else f", scale ops {list(out.scale_ops)}")
    return written


def _check_truncated(depth: Mapping[str, Any], depths: Sequence[int]) -> None:
    """The recorded truncated-rule decision must reproduce ``depths``."""
    losses, full, lat = depth.get("losses"), depth.get("full_loss"), depth.get("block_latencies")
    if losses is None or full is None or not lat:
        raise ArchError("truncated depth rule without its losses, full loss and block latencies")
    lam, budget = depth.get("lambda"), depth.get("budget_ms")
    choice = choose_depths(losses, full, lat, lam=None if budget is not None else lam, budget_ms=budget,
                           fixed_ms=float(depth.get("fixed_ms") or 0.0))
    if tuple(choice.depths) != tuple(depths):
        raise ArchError(f"depths {list(depths)} are not what the truncated rule gives on the recorded losses "
                        f"({list(choice.depths)})")


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
            depth=rec.get("depth"),
            decoder=rec.get("decoder"),
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
        decoder_ops: derived op per searched decoder slot, in slot order (None if the decoder search was skipped);
            for ``mstcn`` the trunk's slots then the finer scales' (``arch`` holds them split: ``decoder_ops``,
            ``scale_ops``).
        betas: final betas per slot, per candidate (None if skipped).
        candidates: the beta columns.
        latency_table_path: the latency table used (None if the encoder search was skipped).
        full_latency_ms: summed block latency (ms) of the full encoder.
        derived_latency_ms: summed block latency (ms) of the derived encoder (Eq. 2's "expected latency").
        encoder_seconds: wall time of the encoder search (all invocations, resumes included).
        decoder_seconds: wall time of the decoder search.
        init_checkpoint: ``derived_init.pt`` (derived model with the supernets' weights) or None.
        files: every file written, for the summary.
        depth_rule: ``"paper"`` or ``"truncated"``.
        depth: the depth decision (``DepthDecision.to_dict()``), None without an encoder search.
        decoder: the decoder consensus over seeds and the betas' lr, None without a decoder search.
        model_latency_ms: table latency of the derived model (encoder + decoder, ``LatencyTable.model_latency``),
            None if the table lacks the parts.
        full_model_latency_ms: the same for the config's model.
        latency_pricing: runtime, precision and decoder_precision of the latency table that priced the search
            (``LatencyTable.pricing_record``), None without a table.
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
    depth_rule: str = "paper"
    depth: dict[str, Any] | None = None
    decoder: dict[str, Any] | None = None
    model_latency_ms: float | None = None
    full_model_latency_ms: float | None = None
    latency_pricing: dict[str, str] | None = None

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
            "depth_rule": self.depth_rule,
            "depth": self.depth,
            "decoder": self.decoder,
            "model_latency_ms": self.model_latency_ms,
            "full_model_latency_ms": self.full_model_latency_ms,
            "latency_pricing": self.latency_pricing,
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
            depth_rule=str(d.get("depth_rule", "paper")),
            depth=d.get("depth"),
            decoder=d.get("decoder"),
            model_latency_ms=d.get("model_latency_ms"),
            full_model_latency_ms=d.get("full_model_latency_ms"),
            latency_pricing=d.get("latency_pricing"),
        )


def load_search_summary(run_dir: str | Path) -> StnasResult:
    """The ``StnasResult`` of a finished search, from its ``search_summary.json``."""
    path = Path(run_dir) / "search_summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"no finished ST-NAS search in {run_dir} (missing {path.name})")
    return StnasResult.from_dict(json.loads(path.read_text()))
