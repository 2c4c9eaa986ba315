"""The Pareto figure both searches draw: quality against speed or cost of models, with their Pareto front.

* ``pareto_front``: the non-dominated points of (cost, quality) pairs, lower cost and higher quality better;
* ``plot_pareto``: ``ParetoPoint`` s with the front, reference lines (``RefLine``) and optional shading by a value;
* ``plot_miou_fps``: the ST-NAS picture, mIoU against FPS of trained models with a baseline [ST-NAS Fig. 3]
  (the lambda sweep, the demo). The cell search draws its candidates' reward against latency through
  ``plot_pareto`` too (``search.cells.plots.plot_reward_latency``).

Draws with matplotlib's Agg backend into a PNG and returns its path; nothing is shown on screen.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidnas.plotting import plt, save_figure

__all__ = ["POINT_KINDS", "ParetoPoint", "RefLine", "pareto_front", "plot_pareto", "plot_miou_fps"]

logger = logging.getLogger(__name__)

POINT_KINDS: tuple[str, ...] = ("model", "baseline", "random", "reference")


@dataclass(frozen=True)
class ParetoPoint:
    """One model on a Pareto plot.

    Attributes:
        x: its speed or cost (FPS, frame latency in ms, latency ratio); ``plot_pareto(higher_x_better=...)`` says
            which way is better.
        y: its quality (mIoU in %, a reward), higher is better.
        label: text written beside it; None: none.
        kind: one of ``POINT_KINDS``: ``"model"`` (blue, dark on the Pareto front), ``"baseline"`` (red star, with
            arrows from it to every labelled model), ``"random"`` (a random architecture of the searched space: a
            small grey dot, never labelled, counted in the legend) or ``"reference"`` (a per-frame model of the
            library: a green square). Every kind counts for the front.
        shade: a value coloured through the viridis map (e.g. the candidate index); model points with a shade are
            drawn as small dots with a colour bar instead of by their place on the front.
    """

    x: float
    y: float
    label: str | None = None
    kind: str = "model"
    shade: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in POINT_KINDS:
            raise ValueError(f"unknown Pareto point kind {self.kind!r}; expected one of {', '.join(POINT_KINDS)}")


@dataclass(frozen=True)
class RefLine:
    """A vertical reference line across a Pareto plot (a control network's latency, a latency target)."""

    x: float
    label: str
    color: str = "#555555"
    ls: str = "--"
    lw: float = 1.0


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points of ``(cost, quality)`` pairs, ordered by cost (then by index).

    Lower cost and higher quality are better: a point dominates another when it is at least as good in both and
    better in one. So equal points are all on the front or all off it. A rate such as FPS (higher is better) enters
    as its negative (or its inverse, the latency).

    Sorted by (cost, -quality), a point is on the front when its quality beats every cheaper point's, or it equals
    the last front point: O(n log n).
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    for i in order:
        cost, quality = points[i]
        if not front or quality > points[front[-1]][1] or (cost, quality) == tuple(points[front[-1]]):
            front.append(i)
    return front


def plot_pareto(
    points: Sequence[ParetoPoint],
    path: str | os.PathLike,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    higher_x_better: bool = False,
    lines: Sequence[RefLine] = (),
    shade_label: str = "",
    figsize: tuple[float, float] = (5.6, 4.0),
) -> Path:
    """Quality against speed or cost of several models, with their Pareto front; returns ``path``.

    The front (``pareto_front`` over every point, ``-x`` as the cost when ``higher_x_better``) is a grey dashed line
    under the points, whose colour says whether they are on it; with shaded points (``ParetoPoint.shade``), whose
    colour says their shade, a red line with hollow circles over them.

    Args:
        points: the models (see ``ParetoPoint`` for how each kind is drawn).
        path: PNG to write.
        xlabel, ylabel, title: the axis labels and the figure title.
        higher_x_better: the x axis is a rate (FPS) rather than a cost (latency).
        lines: vertical reference lines, each in the legend.
        shade_label: the colour bar's label (drawn when any model point has a shade).
        figsize: inches.
    """
    fig, ax = plt.subplots(figsize=figsize)
    xy = [(p.x, p.y) for p in points]
    front = pareto_front([(-x if higher_x_better else x, y) for x, y in xy])
    on_front = set(front)
    shaded = [i for i, p in enumerate(points) if p.kind == "model" and p.shade is not None]
    fx, fy = [xy[i][0] for i in front], [xy[i][1] for i in front]
    if shaded:
        sc = ax.scatter([xy[i][0] for i in shaded], [xy[i][1] for i in shaded], c=[points[i].shade for i in shaded],
                        cmap="viridis", s=16, zorder=3)
        fig.colorbar(sc, ax=ax, label=shade_label)
        ax.plot(fx, fy, color="#c0392b", lw=1.2, marker="o", mfc="none", label="Pareto front", zorder=4)
    elif len(front) > 1:
        ax.plot(fx, fy, color="#bbbbbb", lw=1, ls="--", zorder=1, label="Pareto front")
    randoms = [i for i, p in enumerate(points) if p.kind == "random"]
    if randoms:
        ax.scatter([xy[i][0] for i in randoms], [xy[i][1] for i in randoms], s=22, marker="o", color="#b0b0b0",
                   edgecolors="#808080", linewidths=0.5, zorder=2, label=f"random architectures ({len(randoms)})")
    base_xy = next((xy[i] for i, p in enumerate(points) if p.kind == "baseline"), None)
    for i, p in enumerate(points):
        if p.kind == "random" or i in shaded:
            continue
        x, y = xy[i]
        if p.kind == "reference":
            ax.scatter([x], [y], s=45, marker="s", zorder=3, color="#2ca02c")
            if p.label is not None:
                ax.annotate(p.label, (x, y), textcoords="offset points", xytext=(5, -9), fontsize=7, color="#2ca02c")
            continue
        is_base = p.kind == "baseline"
        ax.scatter([x], [y], s=110 if is_base else 45, marker="*" if is_base else "o", zorder=3,
                   color="#d62728" if is_base else ("#1f77b4" if i in on_front else "#6baed6"))
        if p.label is not None:
            ax.annotate(p.label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
        if base_xy is not None and not is_base:
            ax.annotate("", xy=(x, y), xytext=base_xy, zorder=2,
                        arrowprops=dict(arrowstyle="->", color="#cccccc", lw=0.8))
    for line in lines:
        ax.axvline(line.x, color=line.color, ls=line.ls, lw=line.lw, label=line.label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    path = save_figure(fig, path, bbox_inches="tight")
    logger.debug("wrote %s", path)
    return path


def plot_miou_fps(
    models: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    title: str = "mIoU vs FPS",
    baseline: str | None = "baseline",
) -> Path:
    """mIoU against FPS of several models with their Pareto front [ST-NAS Fig. 3], through ``plot_pareto``.

    Args:
        models: one mapping per model with ``name``, ``fps``, ``miou`` (0-1) and optionally ``label`` (default: the
            name) and ``kind`` (``"random"`` or ``"reference"``: see ``ParetoPoint``); a model without ``fps`` or
            ``miou`` is left out.
        path: PNG to write.
        title: figure title.
        baseline: name of the baseline model (drawn as a star, with arrows from it to the others).
    """
    points = []
    for m in models:
        if m.get("fps") is None or m.get("miou") is None:
            continue
        kind = m.get("kind")
        if kind not in ("random", "reference"):
            kind = "baseline" if m["name"] == baseline else "model"
        label = None if kind == "random" else str(m.get("label", m["name"]))
        points.append(ParetoPoint(float(m["fps"]), 100.0 * float(m["miou"]), label=label, kind=kind))
    return plot_pareto(points, path, xlabel="FPS (encode 1 frame + decode the window)", ylabel="mIoU (%)",
                       title=title, higher_x_better=True)
