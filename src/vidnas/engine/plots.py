"""Training curves: train loss and validation metrics per epoch, as a PNG beside the run's metrics.jsonl."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vidnas.plotting import plt, save_figure

__all__ = ["plot_training_curves"]


def plot_training_curves(history: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Plot ``train_loss`` and the ``val_*`` metrics of each epoch record; returns the path (None if no epochs)."""
    if not history:
        return None
    epochs = [h["epoch"] + 1 for h in history]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", color="tab:red")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("train loss")
    ax_loss.grid(alpha=0.3)
    series = (("val_miou", "mIoU"), ("val_fwiou", "fwIoU"), ("val_macc", "mAcc"), ("val_pixel_acc", "pixel acc"))
    plotted = False
    for key, label in series:
        pts = [(e, h[key]) for e, h in zip(epochs, history, strict=True) if key in h]
        if pts:
            ax_val.plot(*zip(*pts, strict=True), marker="o", label=label)
            plotted = True
    ax_val.set_xlabel("epoch")
    ax_val.set_ylabel("validation")
    ax_val.set_ylim(0, 1)
    ax_val.grid(alpha=0.3)
    if plotted:
        ax_val.legend(fontsize=8)
    else:  # no validation split with annotation: say so instead of an empty legend
        ax_val.text(0.5, 0.5, "no validation data", ha="center", va="center", transform=ax_val.transAxes)
    if title:
        fig.suptitle(title, fontsize=10)
    # fixed margins that fit these labels (tight_layout would lay the figure out once more: half its drawing time)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.86 if title else 0.95, wspace=0.22)
    return save_figure(fig, path)
