"""The report of an ST-NAS search: ``report.md`` and its figures (alpha and beta trajectories, the derived decoder).

The trajectory plots read the ``alpha`` / ``beta`` records of a run's ``metrics.jsonl``:
``{"kind": "alpha", "step": n, "s{stage}_b{block}": value, ...}`` and
``{"kind": "beta", "step": n, "{slot:02d}_{op}": softmax weight, ...}``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.patches as mpatches
import torch

from vidnas.engine.logger import read_jsonl
from vidnas.plotting import plt, save_figure
from vidnas.search.stnas.record import StnasResult

__all__ = [
    "OP_COLOURS",
    "op_category",
    "plot_alpha_trajectories",
    "plot_beta_trajectories",
    "draw_decoder",
    "draw_search",
    "search_report",
]

logger = logging.getLogger(__name__)

# colour by what an op looks at: spatial (blue shades), temporal (orange shades), identity (grey), 3D (purple)
OP_COLOURS: dict[str, str] = {
    "identity": "#9e9e9e",
    "spatial_k3": "#1f77b4",
    "spatial_k5": "#0b4f8a",
    "sep_k3": "#6baed6",
    "sep_k5": "#3182bd",
    "temporal_k3": "#fd8d3c",
    "temporal_k5": "#d94801",
    "conv3d_k3": "#756bb1",
}
_CATEGORY_COLOURS = {"spatial": "#6baed6", "temporal": "#fd8d3c", "identity": "#d9d9d9", "spatio-temporal": "#bcbddc"}


def op_category(name: str) -> str:
    """``spatial``, ``temporal``, ``identity`` or ``spatio-temporal`` (the 3x3x3 baseline conv) for an op name."""
    if name == "identity":
        return "identity"
    if name.startswith("temporal"):
        return "temporal"
    if name.startswith(("spatial", "sep")):
        return "spatial"
    return "spatio-temporal"


def plot_alpha_trajectories(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    threshold: float = 1.0,
    depths: Sequence[int] | None = None,
) -> Path:
    """Alpha of every block over the search steps, one panel per encoder stage, with the shrink threshold.

    Blocks the shrink rule keeps are drawn solid, removed ones dashed (when ``depths`` is given).

    Args:
        records: metrics records; those with ``kind == "alpha"`` are used.
        path: PNG to write.
        threshold: the shrink-rule threshold (a horizontal line).
        depths: derived depth per stage (blocks ``>= depths[s]`` are the removed ones).
    """
    rows = [r for r in records if r.get("kind") == "alpha"]
    series: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for r in rows:
        for key, value in r.items():
            if key.startswith("s") and "_b" in key and isinstance(value, int | float):
                s, b = key[1:].split("_b")
                series.setdefault((int(s), int(b)), []).append((int(r["step"]), float(value)))
    stages = sorted({s for s, _ in series}) or [0]
    fig, axes = plt.subplots(1, len(stages), figsize=(3.2 * len(stages), 2.8), squeeze=False, sharey=True)
    for ax, s in zip(axes[0], stages, strict=True):
        blocks = sorted(b for st, b in series if st == s)
        for b in blocks:
            pts = series[(s, b)]
            kept = depths is None or b < depths[s]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ls="-" if kept else "--", lw=1.4,
                    label=f"block {b + 1}" + ("" if kept else " (removed)"))
        ax.axhline(threshold, color="k", lw=0.8, ls=":", label=f"threshold {threshold:g}")
        title = f"stage {s + 1}"
        if depths is not None and s < len(depths):
            title += f": {depths[s]}/{len(blocks)} kept"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="best")
    axes[0][0].set_ylabel("alpha")
    fig.suptitle("Encoder depth search: alphas (Eq. 1)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _save(fig, path)


def plot_beta_trajectories(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    candidates: Sequence[str],
    per_row: int = 4,
) -> Path:
    """softmax(beta) of every candidate over the search steps, one panel per decoder slot.

    Args:
        records: metrics records; those with ``kind == "beta"`` are used.
        path: PNG to write.
        candidates: the beta columns (op names).
        per_row: panels per row (4 = one residual layer per row).
    """
    rows = [r for r in records if r.get("kind") == "beta"]
    series: dict[tuple[int, str], list[tuple[int, float]]] = {}
    for r in rows:
        for key, value in r.items():
            head, _, op = key.partition("_")
            if head.isdigit() and op in candidates and isinstance(value, int | float):
                series.setdefault((int(head), op), []).append((int(r["step"]), float(value)))
    slots = sorted({k for k, _ in series}) or [0]
    n_rows = -(-len(slots) // per_row)
    fig, axes = plt.subplots(n_rows, per_row, figsize=(2.6 * per_row, 2.0 * n_rows), squeeze=False, sharex=True,
                             sharey=True)
    for idx, ax in enumerate(axes.flat):
        if idx >= len(slots):
            ax.axis("off")
            continue
        k = slots[idx]
        for op in candidates:
            pts = series.get((k, op), [])
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=OP_COLOURS.get(op), lw=1.2, label=op)
        ax.set_title(f"slot {k} (layer {k // 4 + 1})", fontsize=8)
        ax.tick_params(labelsize=6)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7, frameon=False)
    fig.suptitle("Decoder search: softmax(beta) per slot", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    return _save(fig, path)


def draw_decoder(
    ops: Sequence[str],
    path: str | os.PathLike,
    *,
    dilations: Sequence[int] = (1, 2, 4, 8),
    full_channels: bool = False,
    title: str = "Derived TCNNAS decoder",
) -> Path:
    """The derived decoder as a diagram: one row per residual layer, its four slots coloured by op kind.

    Each 3x3x3 conv of a residual layer became two slots (conv1: slots 1-2, conv2: slots 3-4) [ST-NAS Fig. 2]; the
    fixed parts (channel reduction unless full channels, the final 3x3x3 conv, the head) are drawn around them.

    Args:
        ops: op name per slot (``4 * len(dilations)``), in ``SPTCNDecoder.searchable_slots()`` order.
        path: PNG to write.
        dilations: temporal dilation of each residual layer.
        full_channels: whether the channel reduction is absent.
        title: figure title.
    """
    per = 4
    n_layers = len(dilations)
    if len(ops) != per * n_layers:
        raise ValueError(f"expected {per * n_layers} ops for {n_layers} layers, got {len(ops)}")
    fig, ax = plt.subplots(figsize=(8.6, 1.0 + 0.75 * (n_layers + 2)))
    ax.set_xlim(0, 10)
    ax.set_ylim(-(n_layers + 2) * 1.0 - 0.3, 0.9)
    ax.axis("off")

    def box(x: float, y: float, w: float, text: str, colour: str) -> None:
        ax.add_patch(mpatches.FancyBboxPatch((x, y - 0.32), w, 0.64, boxstyle="round,pad=0.02", fc=colour,
                                             ec="#333333", lw=0.8))
        ax.text(x + w / 2, y, text, ha="center", va="center", fontsize=8)

    top = "input (encoder features, full channels)" if full_channels else "reduce: Conv3d 3x3x3 (fixed)"
    box(2.0, 0.3, 6.0, top, _CATEGORY_COLOURS["spatio-temporal"] if not full_channels else "#ffffff")
    for i, d in enumerate(dilations):
        y = -(i + 1) * 1.0
        ax.text(0.05, y, f"layer {i + 1}\nd={d}", ha="left", va="center", fontsize=8)
        for j in range(per):
            name = ops[i * per + j]
            x = 1.3 + j * 2.05 + (0.25 if j >= 2 else 0.0)
            box(x, y, 1.85, name, _CATEGORY_COLOURS[op_category(name)])
        ax.text(9.85, y, "+ skip", ha="right", va="center", fontsize=7, color="#555555")
    box(2.0, -(n_layers + 1) * 1.0, 6.0, "final Conv3d 3x3x3 + head (fixed)", _CATEGORY_COLOURS["spatio-temporal"])
    legend = [mpatches.Patch(fc=c, ec="#333333", label=k) for k, c in _CATEGORY_COLOURS.items()]
    ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4, fontsize=7, frameon=False)
    n_t = sum(op_category(o) == "temporal" for o in ops)
    n_i = sum(op == "identity" for op in ops)
    ax.set_title(f"{title}: {n_t} temporal, {len(ops) - n_t - n_i} spatial, {n_i} identity", fontsize=10)
    return _save(fig, path)


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = save_figure(fig, path, bbox_inches="tight")
    logger.debug("wrote %s", path)
    return path


def draw_search(run_dir: Path, result: StnasResult) -> list[Path]:
    """The PNG plots of this search (matplotlib, Agg)."""
    records = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").exists() else []
    out = []
    if result.alphas is not None:
        out.append(plot_alpha_trajectories(records, run_dir / "alphas.png", threshold=result.threshold,
                                                 depths=result.depths))
    if result.betas is not None and result.candidates is not None:
        out.append(plot_beta_trajectories(records, run_dir / "betas.png", candidates=result.candidates))
    if result.arch.decoder_ops is not None:
        out.append(draw_decoder(result.arch.decoder_ops, run_dir / "decoder.png",
                                      dilations=result.arch.dilations, full_channels=result.arch.full_channels))
    return out


def search_report(result: StnasResult) -> str:
    """``report.md`` of a search: the derived architecture, the alphas and betas it came from, the cost."""
    lines = ["# ST-NAS search", "", f"- run directory: `{result.run_dir}`"]
    lines.append(f"- lambda (Eq. 2): {result.lam:g}; shrink threshold: {result.threshold:g}")
    lines.append(f"- search time: encoder {result.encoder_seconds:.1f} s, decoder {result.decoder_seconds:.1f} s")
    if result.alphas is not None:
        lines.append(f"- encoder depths: {_fmt_depths(result.full_depths)} -> {_fmt_depths(result.depths)}")
        saving = result.latency_saving
        lines.append(f"- encoder block latency (latency table): {result.full_latency_ms:.3f} ms -> "
                     f"{result.derived_latency_ms:.3f} ms" + (f" ({saving:.0%} saved)" if saving is not None else ""))
        lines.append(f"- latency table: `{result.latency_table_path}`")
        lines += ["", "## Alphas (block kept if it is before the last alpha >= threshold)", "",
                  "| stage | alphas | kept |", "|---|---|---|"]
        for s, row in enumerate(result.alphas):
            kept = result.depths[s] if result.depths is not None else len(row)
            lines.append(f"| {s + 1} | {', '.join(f'{a:.4f}' for a in row)} | {kept}/{len(row)} |")
    if result.decoder_ops is not None and result.betas is not None and result.candidates is not None:
        lines += ["", "## Decoder ops (argmax of softmax(beta) per slot)", "",
                  "| slot | layer | op | weight | runner-up |", "|---|---|---|---|---|"]
        for k, (op, row) in enumerate(zip(result.decoder_ops, result.betas, strict=True)):
            w = torch.softmax(torch.tensor(row), 0).tolist()
            order = sorted(range(len(w)), key=lambda j: -w[j])
            second = result.candidates[order[1]] if len(order) > 1 else "-"
            lines.append(f"| {k} | {k // 4 + 1} | {op} | {w[order[0]]:.3f} | {second} ({w[order[1]]:.3f}) |")
    lines += ["", "## Files", ""]
    names = ["arch.json", "derived_init.pt", "latency_table.json", "alphas.png", "betas.png", "decoder.png",
             "metrics.jsonl", "search_summary.json"]
    lines += [f"- `{n}`" for n in names if (result.run_dir / n).exists()]
    lines += ["", "Train the derived model: `vidnas train --arch arch.json` (add `--init derived_init.pt` to start",
              "from the supernets' weights; the paper trains from scratch).", ""]
    for png in ("alphas.png", "betas.png", "decoder.png"):
        if (result.run_dir / png).exists():
            lines.append(f"![{png}]({png})")
    return "\n".join(lines) + "\n"


def _fmt_depths(d: Any) -> str:
    return "default" if d is None else ",".join(str(x) for x in d)
