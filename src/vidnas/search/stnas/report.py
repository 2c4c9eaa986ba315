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
from vidnas.models.architecture import OPS_PER_LAYER, Arch
from vidnas.models.decoders.mstcn import OPS_PER_SCALE, default_scale_ops
from vidnas.models.ops import make_op, temporal_extent
from vidnas.plotting import plt, save_figure
from vidnas.search.stnas.record import StnasResult

__all__ = [
    "OP_COLOURS",
    "op_category",
    "plot_alpha_trajectories",
    "plot_beta_trajectories",
    "draw_decoder",
    "decoder_slot_labels",
    "scale_decisions",
    "draw_multiscale_decoder",
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


def decoder_slot_labels(arch: Arch) -> list[str]:
    """Where each searched decoder slot sits, in slot order (the rows of the betas).

    SP-TCN: ``layer {i}``. ``mstcn``: ``trunk layer {i}`` for the trunk's slots (when searched: ``decoder_ops``
    set), then ``stride {s} path 1``, ``stride {s} path 2``, ``stride {s} fusion`` per finer scale.
    """
    if arch.decoder != "mstcn":
        return [f"layer {k // OPS_PER_LAYER + 1}" for k in range(OPS_PER_LAYER * len(arch.dilations))]
    labels = []
    if arch.decoder_ops is not None:
        labels += [f"trunk layer {k // OPS_PER_LAYER + 1}" for k in range(OPS_PER_LAYER * len(arch.dilations))]
    for stride in arch.scales[1:]:
        labels += [f"stride {stride} path 1", f"stride {stride} path 2", f"stride {stride} fusion"]
    return labels


def _extent(name: str, dilation: int) -> int:
    """Frames of temporal context op ``name`` adds at temporal dilation ``dilation`` (0 for a per-frame op)."""
    return temporal_extent(make_op(name, 1, dilation))


def scale_decisions(arch: Arch, weights: Sequence[Sequence[float]] | None = None,
                    candidates: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """What an ``mstcn`` decoder does in time at each scale, coarse first: the search's per-scale answer to "does
    temporal context pay here?".

    Per scale: ``stride``, ``part`` (``trunk`` or ``fine``), ``ops`` (the trunk's slot ops, ``None`` for the fixed
    3x3x3 trunk; a finer scale's path op 1, path op 2, fusion op), ``temporal_ops`` (slots whose op looks across
    frames), ``frames`` (frames of context the scale's own ops span: ``1 + sum of (k_t - 1) * d_t``; the trunk counts
    its fixed reduction conv, 3x3x3, unless full channels), ``temporal`` (``frames > 1``) and, with the slots'
    ``weights`` (softmax(beta) per slot, in ``decoder_slot_labels`` order) and ``candidates``, ``temporal_weight``:
    the mean over the scale's slots of the weight on temporal candidates (how strongly the search leaned to time).
    """
    if arch.decoder != "mstcn":
        raise ValueError(f"per-scale decisions are for the mstcn decoder, not {arch.decoder!r}")
    temporal_cols = [] if candidates is None else [j for j, c in enumerate(candidates)
                                                   if op_category(c) in ("temporal", "spatio-temporal")]

    def mass(rows: range) -> float | None:
        if weights is None or candidates is None or not rows or rows.stop > len(weights):
            return None
        return sum(sum(weights[k][j] for j in temporal_cols) for k in rows) / len(rows)

    per = OPS_PER_LAYER
    out: list[dict[str, Any]] = []
    frames = 0 if arch.full_channels else 2  # the fixed reduction conv: 3x3x3, k_t - 1 = 2
    trunk = arch.decoder_ops
    if trunk is None:
        frames += sum(2 * d + 2 for d in arch.dilations)  # baseline layers: conv1 3x3x3 at (d, 1, 1), conv2 3x3x3
        n_t = None
    else:
        frames += sum(_extent(op, arch.dilations[k // per]) for k, op in enumerate(trunk))
        n_t = sum(_extent(op, 1) > 0 for op in trunk)
    n_trunk = 0 if trunk is None else len(trunk)
    out.append({"stride": arch.scales[0], "part": "trunk", "ops": None if trunk is None else list(trunk),
                "temporal_ops": n_t, "frames": 1 + frames, "temporal": frames > 0,
                "temporal_weight": mass(range(0, n_trunk))})
    fine = arch.scale_ops if arch.scale_ops is not None else default_scale_ops(len(arch.scales) - 1)
    for i, stride in enumerate(arch.scales[1:]):
        ops = list(fine[OPS_PER_SCALE * i:OPS_PER_SCALE * (i + 1)])
        ext = sum(_extent(op, 1) for op in ops)
        start = n_trunk + OPS_PER_SCALE * i
        out.append({"stride": stride, "part": "fine", "ops": ops, "temporal_ops": sum(_extent(op, 1) > 0 for op in ops),
                    "frames": 1 + ext, "temporal": ext > 0,
                    "temporal_weight": mass(range(start, start + OPS_PER_SCALE)) if arch.scale_ops is not None
                    else None})
    return out


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


def _softmax_rows(betas: Sequence[Sequence[float]] | None) -> list[list[float]] | None:
    if betas is None:
        return None
    return [torch.softmax(torch.tensor(row, dtype=torch.float64), 0).tolist() for row in betas]


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
        labels = decoder_slot_labels(result.arch) if result.arch.decoder == "mstcn" else None
        out.append(plot_beta_trajectories(records, run_dir / "betas.png", candidates=result.candidates,
                                          labels=labels))
    if result.arch.decoder == "mstcn":
        if result.arch.searched:
            out.append(draw_multiscale_decoder(result.arch, run_dir / "decoder.png",
                                               weights=_softmax_rows(result.betas),
                                               candidates=result.candidates))
    elif result.arch.decoder_ops is not None:
        out.append(draw_decoder(result.arch.decoder_ops, run_dir / "decoder.png",
                                      dilations=result.arch.dilations, full_channels=result.arch.full_channels))
    return out


def search_report(result: StnasResult) -> str:
    """``report.md`` of a search: the derived architecture, the alphas and betas it came from, the cost."""
    lines = ["# ST-NAS search", "", f"- run directory: `{result.run_dir}`"]
    depth = result.depth or {}
    rule = depth.get("rule", result.depth_rule)
    if rule == "paper":
        lines.append(f"- depth rule: paper (shrink rule on the alphas, threshold {result.threshold:g}); "
                     f"lambda (Eq. 2): {result.lam:g}")
    elif depth.get("budget_ms") is not None:
        lines.append(f"- depth rule: truncated validation loss, latency budget {depth['budget_ms']:g} ms "
                     "(the most accurate depths that fit)")
    else:
        lines.append(f"- depth rule: truncated validation loss + lambda * latency, lambda {result.lam:g}")
    lines.append(f"- search time: encoder {result.encoder_seconds:.1f} s, decoder {result.decoder_seconds:.1f} s")
    if result.alphas is not None:
        lines.append(f"- encoder depths: {_fmt_depths(result.full_depths)} -> {_fmt_depths(result.depths)}")
        saving = result.latency_saving
        lines.append(f"- encoder block latency (latency table): {result.full_latency_ms:.3f} ms -> "
                     f"{result.derived_latency_ms:.3f} ms" + (f" ({saving:.0%} saved)" if saving is not None else ""))
        if result.model_latency_ms is not None and result.full_model_latency_ms is not None:
            lines.append(f"- model latency per frame (table: encoder + decoder window + upsampling): "
                         f"{result.full_model_latency_ms:.3f} ms (config) -> {result.model_latency_ms:.3f} ms")
            if depth.get("budget_ms") is not None and result.model_latency_ms > depth["budget_ms"]:
                lines.append(f"- **over the budget** by {result.model_latency_ms / depth['budget_ms'] - 1:.0%}: the "
                             f"depths were chosen with {depth.get('decoder_ms') or 0:.3f} ms for the decoder (mean op "
                             "per slot) and the searched decoder costs more; lower the budget or skip the decoder "
                             "search")
        lines.append(f"- latency table: `{result.latency_table_path}`")
        lines += _depth_lines(result, depth)
    if result.decoder_ops is not None and result.betas is not None and result.candidates is not None:
        dec = result.decoder or {}
        lines += ["", "## Decoder ops (argmax of softmax(beta) per slot)", ""]
        if dec.get("arch_lr") is not None:
            travel = dec.get("beta_travel")
            lines.append(f"Betas' lr {dec['arch_lr']:.4g}" + (
                f" = beta_travel {travel:g} / arch steps" if travel is not None else " (stnas.arch_lr)") + ".")
        lines.append("Loss: task" + (f" + lambda {dec['latency_lambda']:g} x expected table latency of the ops "
                                     "(stnas.decoder_latency)." if dec.get("latency_lambda") is not None
                                     else " only (the paper; stnas.decoder_latency adds lambda x op latency)."))
        if dec.get("seeds", 1) > 1:
            pair = dec.get("pairwise_agreement")
            corr = dec.get("op_preference_corr")
            lines.append(
                f"{dec['seeds']} decoder searches; ops from their averaged softmax weights. Agreement of each seed's "
                f"own argmax with the derived op: {dec['agreement']:.0%} of slots (chance "
                f"{dec['chance_agreement']:.0%}); between two seeds: "
                + (f"{pair:.0%} of slots" if pair is not None else "-")
                + (f"; correlation of the per-op preference (weight averaged over slots): {corr:.2f}"
                   if corr is not None and corr == corr else "") + ".")
        multiscale = result.arch.decoder == "mstcn"
        labels = decoder_slot_labels(result.arch) if multiscale else None
        lines += ["", f"| slot | {'position' if multiscale else 'layer'} | op | weight | runner-up |"
                  + (" seeds agreeing |" if dec.get("seeds", 1) > 1 else ""),
                  "|---|---|---|---|---|" + ("---|" if dec.get("seeds", 1) > 1 else "")]
        for k, (op, row) in enumerate(zip(result.decoder_ops, result.betas, strict=True)):
            w = torch.softmax(torch.tensor(row), 0).tolist()
            order = sorted(range(len(w)), key=lambda j: -w[j])
            second = result.candidates[order[1]] if len(order) > 1 else "-"
            where = labels[k] if labels is not None and k < len(labels) else str(k // 4 + 1)
            line = f"| {k} | {where} | {op} | {w[order[0]]:.3f} | {second} ({w[order[1]]:.3f}) |"
            if dec.get("seeds", 1) > 1:
                line += f" {dec['slot_agreement'][k]:.0%} |"
            lines.append(line)
        if multiscale:
            lines += _scale_lines(result)
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


def _scale_lines(result: StnasResult) -> list[str]:
    """The multi-scale decoder's per-scale answer: does temporal context pay at this scale?"""
    weights = _softmax_rows(result.betas)
    lines = ["", "## Per scale: does temporal context pay?", "",
             "Each scale's own ops: the trunk's residual layers at the coarse stride (its fixed reduction conv is "
             "3x3x3 unless full channels), then per finer scale its two path ops and its fusion op. Frames: the "
             "temporal context those ops span (1 = per frame). Temporal weight: mean over the scale's slots of "
             f"softmax(beta) on the temporal candidates (uniform mixing: {_uniform_temporal(result.candidates)}).",
             "",
             "| stride | part | ops | temporal ops | frames | temporal weight | decision |",
             "|---|---|---|---|---|---|---|"]
    for d in scale_decisions(result.arch, weights, result.candidates):
        ops = "3x3x3 residual layers (fixed)" if d["ops"] is None else ", ".join(d["ops"])
        n_t = "-" if d["temporal_ops"] is None else f"{d['temporal_ops']}/{len(d['ops'])}"
        lines.append(f"| {d['stride']} | {d['part']} | {ops} | {n_t} | {d['frames']} | "
                     f"{_num(d['temporal_weight'], '.3f')} | {'temporal' if d['temporal'] else 'per frame'} |")
    return lines


def _uniform_temporal(candidates: Sequence[str] | None) -> str:
    cols = list(candidates or ())
    n = sum(op_category(c) in ("temporal", "spatio-temporal") for c in cols)
    return f"{n}/{len(cols)} = {n / len(cols):.2f}" if cols else "-"


def _depth_lines(result: StnasResult, depth: Mapping[str, Any]) -> list[str]:
    """The depth decision's tables: per block its alpha, latency, task gradient, flip lambda and truncated loss."""
    alphas = result.alphas or []
    lat = depth.get("block_latencies") or []
    grads = depth.get("task_grad_mean")
    flips = depth.get("flip_lambda")
    losses = depth.get("losses")
    kept = list(result.depths) if result.depths is not None else [len(a) for a in alphas]
    lines = ["", "## Depth decision, per block", "",
             "Flip lambda (paper rule) = -E[g_i] / s_i with g_i the task-only gradient of alpha_i: under the paper's "
             "shrink rule the block goes for lambda above it (negative: it goes at any lambda).",
             "L_s(i): validation loss with stage s cut after block i (later alphas 0). Marginal lambda = "
             "(L_s(i-1) - L_s(i)) / s_i: the truncated rule drops block i of a convex loss curve above it.", "",
             "| stage | block | alpha | s_i (ms) | E[g_i] | flip lambda (paper) | L_s(i) | marginal lambda | kept |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s, row in enumerate(alphas):
        for i, a in enumerate(row):
            s_i = lat[s][i] if s < len(lat) and i < len(lat[s]) else None
            g = grads[s][i] if grads else None
            f = flips[s][i] if flips else None
            loss = losses[s][i] if losses else None
            marg = None
            if losses and i > 0 and s_i:
                marg = (losses[s][i - 1] - losses[s][i]) / s_i
            lines.append(f"| {s + 1} | {i + 1} | {a:.4f} | {_num(s_i, '.3f')} | {_num(g, '.3g')} | {_num(f, '.3g')} "
                         f"| {_num(loss, '.4f')} | {_num(marg, '.3g')} | {'yes' if i < kept[s] else 'no'} |")
    if depth.get("rule") == "truncated" and losses is not None:
        lines += ["", f"Full supernet validation loss {depth.get('full_loss'):.4f} over {depth.get('val_batches')} "
                  f"batches; predicted loss of the choice {depth.get('loss'):.4f}.", ""]
        path = depth.get("path") or []
        if path:
            lines += ["### Lambda path (the truncated rule's choice for every lambda)", "",
                      "| from lambda | depths | predicted loss | table latency (ms) |", "|---|---|---|---|"]
            for p in path:
                lines.append(f"| {p['lambda_from']:.4g} | {_fmt_depths(p['depths'])} | {p['loss']:.4f} | "
                             f"{p['latency_ms']:.3f} |")
    return lines


def _num(v: Any, spec: str) -> str:
    return "-" if v is None else format(float(v), spec)


def _fmt_depths(d: Any) -> str:
    return "default" if d is None else ",".join(str(x) for x in d)
