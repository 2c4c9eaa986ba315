"""Plots of a cell search (matplotlib, Agg backend, PNG files).

* ``plot_rewards``: the reward of every candidate over the search with its running mean [CELLS Fig. 3];
* ``plot_sampling``: how often the controller sampled each op, aggregation and input [CELLS Fig. 4];
* ``draw_cell``: a drawing of one cell [CELLS Fig. 7]: grey boxes for the inputs, orange boxes for ops, green boxes for
  aggregations, arrows from each op's input, and the output concatenation;
* ``plot_reward_latency``: accuracy reward vs measured latency of every candidate, with the Pareto front (drawn by
  ``search.plots.plot_pareto``, the figure both searches share).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.patches import FancyBboxPatch
from matplotlib.ticker import MaxNLocator

from vidnas.models.cells import NUM_CELL_INPUTS, TOKENS_PER_LAYER, CellGenotype
from vidnas.plotting import plt, save_figure
from vidnas.search.cells.space import CellSearchSpace
from vidnas.search.plots import ParetoPoint, RefLine, plot_pareto

__all__ = ["plot_rewards", "plot_sampling", "draw_cell", "sampling_counts", "running_mean", "plot_reward_latency"]

OP_COLOUR = "#f4a259"  # orange blocks: operations [CELLS Fig. 7]
AGG_COLOUR = "#8cc084"  # green blocks: aggregation operations
INPUT_COLOUR = "#d9d9d9"


def running_mean(values: Sequence[float]) -> list[float]:
    """Cumulative mean: entry i is the mean of values[0..i]."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        out.append(total / (i + 1))
    return out


def plot_rewards(records: Sequence[dict[str, Any]], path: str | Path, *, window: int = 10) -> Path:
    """Reward per candidate (dots; early-stopped hollow; failed as crosses at 0), running mean and moving average.

    Args:
        records: search log records (``cid``, ``reward``, ``failed``, ``early_stopped``).
        path: PNG to write.
        window: moving-average window (candidates).
    """
    ok = [r for r in sorted(records, key=lambda r: r["cid"]) if not r.get("failed") and r.get("reward") is not None]
    failed = [r["cid"] for r in records if r.get("failed")]
    fig, ax = plt.subplots(figsize=(7, 4))
    full = [r for r in ok if not r.get("early_stopped")]
    early = [r for r in ok if r.get("early_stopped")]
    ax.scatter([r["cid"] for r in full], [r["reward"] for r in full], s=14, color="#3a6ea5", label="reward")
    if early:
        ax.scatter([r["cid"] for r in early], [r["reward"] for r in early], s=14, facecolors="none",
                   edgecolors="#3a6ea5", label="early-stopped (halfway reward)")
    if failed:
        ax.scatter(failed, [0.0] * len(failed), marker="x", color="#c0392b", label="failed")
    if ok:
        xs = [r["cid"] for r in ok]
        ys = [r["reward"] for r in ok]
        ax.plot(xs, running_mean(ys), color="black", lw=1.5, label="running mean")
        w = max(1, min(window, len(ys)))
        mov = [sum(ys[max(0, i - w + 1):i + 1]) / len(ys[max(0, i - w + 1):i + 1]) for i in range(len(ys))]
        ax.plot(xs, mov, color="#e67e22", lw=1.2, ls="--", label=f"moving average ({w})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("candidate")
    ax.set_ylabel("reward (mIoU x fwIoU x mAcc)^(1/3)")
    ax.set_title("Search rewards")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def sampling_counts(records: Sequence[dict[str, Any]], space: CellSearchSpace) -> dict[str, Counter]:
    """Counts of sampled ops, aggregations and inputs (pool names) over every record's tokens (failed included)."""
    ops: Counter = Counter({n: 0 for n in space.ops})
    aggs: Counter = Counter({n: 0 for n in space.aggregations})
    geno_names = CellGenotype.from_tokens([0] * space.num_decisions, ops=space.ops, aggregations=space.aggregations)
    inputs: Counter = Counter({geno_names.pool_name(i): 0 for i in range(space.max_pool)})
    for r in records:
        toks = r["tokens"]
        for layer in range(len(toks) // TOKENS_PER_LAYER):
            i1, i2, o1, o2, a = toks[layer * TOKENS_PER_LAYER:(layer + 1) * TOKENS_PER_LAYER]
            inputs[geno_names.pool_name(i1)] += 1
            inputs[geno_names.pool_name(i2)] += 1
            ops[space.ops[o1]] += 1
            ops[space.ops[o2]] += 1
            aggs[space.aggregations[a]] += 1
    return {"ops": ops, "aggregations": aggs, "inputs": inputs}


def plot_sampling(records: Sequence[dict[str, Any]], space: CellSearchSpace, path: str | Path) -> Path:
    """Three bar charts: sampling proportion of each op, aggregation and input [CELLS Fig. 4]."""
    counts = sampling_counts(records, space)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (title, c), colour in zip(axes, counts.items(), (OP_COLOUR, AGG_COLOUR, "#7f9cc0"), strict=True):
        names = list(c)
        total = max(1, sum(c.values()))
        ax.bar(range(len(names)), [c[n] / total for n in names], color=colour)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{title} ({len(records)} cells)")
        ax.set_ylabel("sampling proportion")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def draw_cell(genotype: CellGenotype, path: str | Path, *, title: str | None = None) -> Path:
    """Draw a cell [CELLS Fig. 7]: inputs (grey) on the left, one column per layer with its two ops (orange) feeding
    its aggregation (green), arrows from each op's input, and the concatenated unused outputs feeding ``dec``.
    """
    n_layers = genotype.num_layers
    col_w = 4.0
    fig_w = 2.5 + col_w * n_layers + 2.5
    fig, ax = plt.subplots(figsize=(max(6.0, fig_w * 0.9), 4.8))
    pos: dict[int, tuple[float, float]] = {}  # pool index -> right-edge anchor (x, y)

    def box(x: float, y: float, text: str, colour: str, w: float = 1.8, h: float = 0.55) -> tuple[float, float]:
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05", fc=colour, ec="#333333",
                                    lw=0.8))
        ax.text(x, y, text, ha="center", va="center", fontsize=7)
        return x, y

    def arrow(src: tuple[float, float], dst: tuple[float, float]) -> None:
        ax.annotate("", xy=dst, xytext=src, arrowprops={"arrowstyle": "->", "lw": 0.8, "color": "#555555",
                                                        "shrinkA": 0, "shrinkB": 0, "connectionstyle": "arc3,rad=0.05"})

    for i in range(NUM_CELL_INPUTS):
        x, y = box(0.9, 4.0 - i * 1.0, genotype.pool_name(i), INPUT_COLOUR, w=1.6)
        pos[i] = (x + 0.8, y)
    for l_idx, layer in enumerate(genotype.layers):
        x0 = 2.5 + col_w * l_idx + 0.9
        y_base = 3.0 if l_idx % 2 == 0 else 1.0
        op_y = (y_base + 0.55, y_base - 0.55)
        for k in range(2):
            ox, oy = box(x0, op_y[k], layer.ops[k], OP_COLOUR)
            src = pos[layer.inputs[k]]
            arrow(src, (ox - 0.9, oy))
            pos_op = (ox + 0.9, oy)
            arrow(pos_op, (x0 + 2.3 - 0.75, y_base))
        ax_, ay_ = box(x0 + 2.3, y_base, layer.aggregation, AGG_COLOUR, w=1.5)
        pos[NUM_CELL_INPUTS + l_idx] = (ax_ + 0.75, ay_)
        ax.text(x0 + 2.3, y_base - 0.4, f"cell_layer{l_idx}", ha="center", va="top", fontsize=6, color="#333333")
    out_x = 2.5 + col_w * n_layers + 1.0
    ox, oy = box(out_x, 2.0, "concat\n+ conv1x1\n= dec", "#bcd4e6", w=1.6, h=0.9)
    for i in genotype.unused():
        arrow(pos[i], (ox - 0.8, oy))
    ax.set_xlim(-0.2, out_x + 1.2)
    ax.set_ylim(-0.6, 4.6)
    ax.axis("off")
    ax.set_title(title or (genotype.name or "cell"), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_reward_latency(records: Sequence[dict[str, Any]], path: str | Path, *,
                        target_ms: float | None = None) -> Path | None:
    """Accuracy reward vs measured cost of every candidate with a cost record (the search's Pareto picture, drawn by
    ``search.plots.plot_pareto``): dots coloured by candidate index, the Pareto front, and the static network.

    The x axis is the latency *ratio* to the static network (cell-model frame / static frame, timed side by side:
    candidates timed at different moments of a noisy machine stay comparable), 1.0 marking the static network; with a
    fixed ``target_ms`` it is the frame latency in ms, with the target drawn. None (nothing drawn) when no candidate
    was timed.

    Args:
        records: search log records (``cid``, ``accuracy_reward``, ``cost``).
        path: PNG to write.
        target_ms: the fixed latency target (``cells.latency_target_ms``), or None (the static network).
    """
    recs = [r for r in sorted(records, key=lambda r: r["cid"])
            if not r.get("failed") and (r.get("cost") or {}).get("latency_ms") and r.get("accuracy_reward") is not None]
    if not recs:
        return None
    ratio = target_ms is None and all(r["cost"].get("latency_ratio") for r in recs)
    points = [ParetoPoint(float(r["cost"]["latency_ratio"] if ratio else r["cost"]["latency_ms"]),
                          float(r["accuracy_reward"]), shade=r["cid"]) for r in recs]
    hw = f"{recs[0]['cost'].get('height')}x{recs[0]['cost'].get('width')}"
    lines: list[RefLine] = []
    if ratio:
        lines.append(RefLine(1.0, "static network"))
        xlabel = f"frame latency / static network's frame (encoder + cell, {hw}, batch 1, side by side)"
    else:
        static = sorted(float(r["cost"]["static_latency_ms"]) for r in recs if r["cost"].get("static_latency_ms"))
        if static:
            med = static[len(static) // 2]
            lines.append(RefLine(med, f"static network frame ({med:.1f} ms, median)"))
        if target_ms is not None:
            lines.append(RefLine(target_ms, f"latency target ({target_ms:.1f} ms)", color="#e67e22", ls=":", lw=1.2))
        xlabel = f"steady-state frame latency, ms (encoder + cell, {hw}, batch 1)"
    return plot_pareto(points, path, xlabel=xlabel, ylabel="accuracy reward (mIoU x fwIoU x mAcc)^(1/3)",
                       title=f"Accuracy vs latency of {len(recs)} candidates", lines=lines, shade_label="candidate",
                       figsize=(7, 4.5))
