"""Figures shared by the searches: the mIoU-vs-FPS Pareto plot of models with a baseline [ST-NAS Fig. 3].

Draws with matplotlib's Agg backend into a PNG and returns its path; nothing is shown on screen.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vidnas.plotting import plt, save_figure

__all__ = ["plot_pareto", "pareto_front"]

logger = logging.getLogger(__name__)


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = save_figure(fig, path, bbox_inches="tight")
    logger.debug("wrote %s", path)
    return path


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated in (x up, y up), ordered by x.

    A point dominates another when it is at least as good in both coordinates and better in one.
    """
    idx = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 >= x and y2 >= y) and (x2 > x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated:
            idx.append(i)
    return sorted(idx, key=lambda i: points[i][0])


def plot_pareto(
    points: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    title: str = "mIoU vs FPS",
    baseline: str | None = "baseline",
) -> Path:
    """mIoU against FPS of several models with their Pareto front [ST-NAS Fig. 3].

    Args:
        points: one mapping per model with ``name``, ``fps``, ``miou`` (0-1) and optionally ``label`` and ``kind``
            (``"random"``: a random architecture of the searched space, drawn as a small grey point without label
            or arrow; ``"reference"``: a per-frame model of the library, a labelled green square without arrow).
        path: PNG to write.
        title: figure title.
        baseline: name of the baseline point (drawn as a star, with arrows from it to the others).
    """
    pts = [p for p in points if p.get("fps") is not None and p.get("miou") is not None]
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    xy = [(float(p["fps"]), 100.0 * float(p["miou"])) for p in pts]
    front = pareto_front(xy)
    if len(front) > 1:
        ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], color="#bbbbbb", lw=1, ls="--", zorder=1,
                label="Pareto front")
    randoms = [i for i, p in enumerate(pts) if p.get("kind") == "random"]
    if randoms:
        ax.scatter([xy[i][0] for i in randoms], [xy[i][1] for i in randoms], s=22, marker="o", color="#b0b0b0",
                   edgecolors="#808080", linewidths=0.5, zorder=2, label=f"random architectures ({len(randoms)})")
    base_xy = next((xy[i] for i, p in enumerate(pts) if p["name"] == baseline), None)
    for i, p in enumerate(pts):
        if p.get("kind") == "random":
            continue
        x, y = xy[i]
        is_base = p["name"] == baseline
        if p.get("kind") == "reference":
            ax.scatter([x], [y], s=45, marker="s", zorder=3, color="#2ca02c")
            ax.annotate(str(p.get("label", p["name"])), (x, y), textcoords="offset points", xytext=(5, -9),
                        fontsize=7, color="#2ca02c")
            continue
        ax.scatter([x], [y], s=110 if is_base else 45, marker="*" if is_base else "o", zorder=3,
                   color="#d62728" if is_base else ("#1f77b4" if i in front else "#6baed6"))
        ax.annotate(str(p.get("label", p["name"])), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
        if base_xy is not None and not is_base:
            ax.annotate("", xy=(x, y), xytext=base_xy, zorder=2,
                        arrowprops=dict(arrowstyle="->", color="#cccccc", lw=0.8))
    ax.set_xlabel("FPS (encode 1 frame + decode the window)")
    ax.set_ylabel("mIoU (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(front) > 1 or randoms:
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)
