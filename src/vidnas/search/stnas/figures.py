"""The figures of an ST-NAS search: alpha and beta trajectories and the derived decoder (``draw_search`` draws them
all into the run directory).

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

from vidnas.engine.logger import read_jsonl
from vidnas.models.architecture import OPS_PER_LAYER, Arch
from vidnas.plotting import plt, save_figure
from vidnas.search.stnas.record import StnasResult
from vidnas.search.stnas.report import decoder_slot_labels, op_category, scale_decisions, softmax_rows

__all__ = [
    "OP_COLOURS",
    "plot_alpha_trajectories",
    "plot_beta_trajectories",
    "draw_decoder",
    "draw_multiscale_decoder",
    "draw_search",
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
    # arch2_space (arch2's ops dark, their cheaper variants light, temporal orange, skip grey)
    "conv1x1": "#08519c",
    "gconv1x1": "#9ecae1",
    "block": "#08519c",
    "sep_block": "#6baed6",
    "skip": "#9e9e9e",
    "temporal_block": "#fd8d3c",
    "conv3x3_s2": "#08519c",
    "sep3x3_s2": "#6baed6",
}
_CATEGORY_COLOURS = {"spatial": "#6baed6", "temporal": "#fd8d3c", "identity": "#d9d9d9", "spatio-temporal": "#bcbddc"}


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
    # margins in inches for the titles and labels, then bbox_inches="tight" crops (tight_layout would lay the panels
    # out once more: about half of the figure's drawing time)
    fig.subplots_adjust(top=1 - 0.6 / 2.8, bottom=0.45 / 2.8)
    return _save(fig, path)


def plot_beta_trajectories(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    candidates: Sequence[str],
    per_row: int = 4,
    labels: Sequence[str] | None = None,
) -> Path:
    """softmax(beta) of every candidate over the search steps, one panel per decoder slot.

    Args:
        records: metrics records; those with ``kind == "beta"`` are used.
        path: PNG to write.
        candidates: the beta columns (op names).
        per_row: panels per row (4 = one residual layer per row).
        labels: where each slot sits (``decoder_slot_labels``); default ``layer {k // 4 + 1}`` (SP-TCN).
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
        where = labels[k] if labels is not None and k < len(labels) else f"layer {k // 4 + 1}"
        ax.set_title(f"slot {k} ({where})", fontsize=8)
        ax.tick_params(labelsize=6)
    legend: dict[str, Any] = {}  # every op once, from whichever panel drew it (a slot may allow only some ops)
    for ax in axes.flat:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(name, handle)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(len(legend), 9), fontsize=7,
                   frameon=False)
    fig.suptitle("Decoder search: softmax(beta) per slot", fontsize=10)
    height = 2.0 * n_rows  # margins in inches for the titles, tick labels and legend (as for the alphas)
    fig.subplots_adjust(top=1 - 0.55 / height, bottom=0.55 / height, hspace=0.35)
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


def draw_multiscale_decoder(
    arch: Arch,
    path: str | os.PathLike,
    *,
    weights: Sequence[Sequence[float]] | None = None,
    candidates: Sequence[str] | None = None,
    title: str = "Derived multi-scale decoder",
) -> Path:
    """A derived ``mstcn`` decoder as a diagram: the trunk's residual layers at the coarse stride, then one row per
    finer scale (path op 1, path op 2, fusion op), coloured by op kind, each scale marked temporal (with its frames
    of context) or per frame (``scale_decisions``).

    Args:
        arch: an ``mstcn`` architecture.
        path: PNG to write.
        weights: softmax(beta) per slot (``decoder_slot_labels`` order), to print each scale's temporal weight.
        candidates: the beta columns.
        title: figure title.
    """
    decisions = scale_decisions(arch, weights, candidates)
    per = OPS_PER_LAYER
    trunk_rows = len(arch.dilations) if arch.decoder_ops is not None else 1
    n_rows = trunk_rows + len(arch.scales) - 1 + 3  # + reduce, proj, head
    fig, ax = plt.subplots(figsize=(9.6, 1.0 + 0.75 * n_rows))
    ax.set_xlim(0, 11.5)
    ax.set_ylim(-(n_rows - 1) * 1.0 - 0.3, 0.9)
    ax.axis("off")

    def box(x: float, y: float, w: float, text: str, colour: str) -> None:
        ax.add_patch(mpatches.FancyBboxPatch((x, y - 0.32), w, 0.64, boxstyle="round,pad=0.02", fc=colour,
                                             ec="#333333", lw=0.8))
        ax.text(x + w / 2, y, text, ha="center", va="center", fontsize=8)

    def verdict(d: dict[str, Any]) -> str:
        text = f"temporal: {d['frames']} frames" if d["temporal"] else "per frame"
        if d.get("temporal_weight") is not None:
            text += f"\n(temporal weight {d['temporal_weight']:.2f})"
        return text

    top = (f"input (stride {arch.scales[0]}, full channels)" if arch.full_channels
           else f"reduce: Conv3d 3x3x3 (fixed), stride {arch.scales[0]}")
    box(1.3, 0.3, 6.2, top, "#ffffff" if arch.full_channels else _CATEGORY_COLOURS["spatio-temporal"])
    ax.text(9.0, 0.3, f"trunk {verdict(decisions[0])}", ha="left", va="center", fontsize=7)
    y = 0.3
    if arch.decoder_ops is None:
        y -= 1.0
        box(1.3, y, 6.2, f"{len(arch.dilations)} residual layers 3x3x3 (fixed)", _CATEGORY_COLOURS["spatio-temporal"])
    else:
        for i, d in enumerate(arch.dilations):
            y -= 1.0
            ax.text(0.05, y, f"layer {i + 1}\nd={d}", ha="left", va="center", fontsize=8)
            for j in range(per):
                name = arch.decoder_ops[i * per + j]
                box(1.3 + j * 1.6 + (0.2 if j >= 2 else 0.0), y, 1.45, name, _CATEGORY_COLOURS[op_category(name)])
    y -= 1.0
    box(1.3, y, 6.2, "proj 1x1x1 (fixed)", "#ffffff")
    for d in decisions[1:]:
        y -= 1.0
        ax.text(0.05, y, f"stride {d['stride']}", ha="left", va="center", fontsize=8)
        for j, (name, what) in enumerate(zip(d["ops"], ("path", "path", "fuse"), strict=True)):
            box(1.3 + j * 2.1 + (0.3 if j == 2 else 0.0), y, 1.9, f"{what}: {name}",
                _CATEGORY_COLOURS[op_category(name)])
        ax.text(9.0, y, verdict(d), ha="left", va="center", fontsize=7,
                color="#a63603" if d["temporal"] else "#08519c")
    y -= 1.0
    box(1.3, y, 6.2, f"head 1x1x1 (fixed), stride {arch.scales[-1]}", "#ffffff")
    legend = [mpatches.Patch(fc=c, ec="#333333", label=k) for k, c in _CATEGORY_COLOURS.items()]
    ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4, fontsize=7, frameon=False)
    summary = ", ".join(f"stride {d['stride']} {'temporal' if d['temporal'] else 'per frame'}" for d in decisions)
    ax.set_title(f"{title}: {summary}", fontsize=10)
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
        labels = decoder_slot_labels(result.arch) if result.arch.decoder in ("mstcn", "arch2_space") else None
        out.append(plot_beta_trajectories(records, run_dir / "betas.png", candidates=result.candidates,
                                          labels=labels))
    if result.arch.decoder == "mstcn":
        if result.arch.searched:
            out.append(draw_multiscale_decoder(result.arch, run_dir / "decoder.png",
                                               weights=softmax_rows(result.betas),
                                               candidates=result.candidates))
    elif result.arch.decoder == "sptcn" and result.arch.decoder_ops is not None:  # no diagram of arch2_space yet
        out.append(draw_decoder(result.arch.decoder_ops, run_dir / "decoder.png",
                                      dilations=result.arch.dilations, full_channels=result.arch.full_channels))
    return out
