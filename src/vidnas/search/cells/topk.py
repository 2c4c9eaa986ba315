"""End-to-end training of the top-k cells after the search [CELLS Sec. 4.2] and the runtime table [Table 5].

For each of the best ``cells.top_k`` cells of the search (k = 2 [CELLS]):

1. **Cell only.** A fresh cell is trained on the cached static outputs of the whole train split (meta-train +
   meta-val; re-cached at the full size when the search ran at a proxy size or its meta split dropped gap windows)
   with Adam at ``cells.cell_lr`` (8e-3) for ``final_cell_epochs`` epochs (10 on CamVid) of
   ``final_batch_size`` sequences (16).
2. **End to end.** The static network and the cell are fine-tuned together on the train split's ``seq_len``-frame
   windows (with the data config's augmentation) for ``final_epochs`` epochs (100 on CamVid): static weights by SGD
   (lr 5e-4, momentum 0.9), the cell by Adam at half its learning rate; the loss sums the cross-entropy of every frame
   after the first. The static network's BatchNorm statistics stay frozen (eval mode): fine-tuning batches of a few
   sequences would otherwise overwrite the statistics it was pre-trained with.
3. **Evaluation** on the val split, clip protocol: each annotated frame is the last frame of a ``seq_len``-frame causal
   window (static network on the window's first frame, the cell on the others); the per-frame static baseline is
   scored the same way.

Outputs per cell under ``run_dir/top/``: ``cell{k}.json`` (schema version, tokens, the op and aggregation lists
used), ``cell{k}/model.pt`` (``load_cell_model``), ``cell{k}/metrics.json``; then ``runtime.json`` and ``report.md``
with a table like the paper's Table 5: parameters and average per-frame latency of the static baseline vs. the
baseline on frame 1 + the cell on the others, batch 1, on this machine.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from vidnas.config import Config, config_to_dict
from vidnas.data import ClipDataset, open_source
from vidnas.engine.loop import EpochResult, backward_step, epoch_loader, fit, steps_per_epoch
from vidnas.metrics import ConfusionMatrix
from vidnas.models import StaticSegmenter
from vidnas.models.cells import Cell, CellGenotype, DynamicCellModel, cell_in_channels
from vidnas.precision import autocast, grad_scaler
from vidnas.search.cells.cache import FeatureCache, cache_windows
from vidnas.search.cells.evaluate import sequence_loss, train_cell
from vidnas.search.cells.options import search_data_config
from vidnas.search.cells.reward import reward_from_confusion
from vidnas.search.cells.search import CellSearchResult, top_genotypes
from vidnas.utils import atomic_write, atomic_write_json, atomic_write_text

__all__ = [
    "FinalOptions",
    "STATIC_LR",
    "train_top_cells",
    "finetune",
    "evaluate_windows",
    "measure_runtime",
    "load_top_cell",
]

logger = logging.getLogger(__name__)

STATIC_LR = 5e-4  # [CELLS Sec. 4.2] static weights: SGD lr 5e-4, momentum 0.9


@dataclass(frozen=True)
class FinalOptions:
    """Budget of the top-k training.

    Attributes:
        cell_epochs: cell-only epochs on cached outputs (10 on CamVid [CELLS Sec. 4.2]).
        epochs: end-to-end epochs (100 on CamVid).
        batch_size: sequences per step (16).
        max_steps_per_epoch: cap on steps per epoch (quick runs).
        runtime_repeats: timed sequences per model for the runtime table (0 = skip it).
        show_progress: tqdm bars.
    """

    cell_epochs: int = 10
    epochs: int = 100
    batch_size: int = 16
    max_steps_per_epoch: int | None = None
    runtime_repeats: int = 5
    show_progress: bool = True


@torch.inference_mode()
def evaluate_windows(model: torch.nn.Module, dataset: Any, num_classes: int, ignore_index: int, *,
                     batch_size: int = 4, device: str = "cpu") -> dict[str, float]:
    """Scores of each window's target frame (``item["target"]``): mIoU, fwIoU, mAcc, pixel accuracy, reward."""
    was = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        frames = batch["frames"].to(device)  # (B, T, 3, H, W)
        logits = model(frames)  # (B, T, K, H, W)
        idx = torch.arange(frames.shape[0])  # (B,) on the host: the masks stay there, the logits come back to it
        cm.update(logits[idx.to(logits.device), batch["target"].to(logits.device)].argmax(1).cpu(),
                  batch["masks"][idx, batch["target"]])
    model.train(was)
    return reward_from_confusion(cm)[1]


def finetune(model: DynamicCellModel, dataset: Any, *, epochs: int, cell_lr: float, batch_size: int,
             ignore_index: int, seed: int = 0, max_steps_per_epoch: int | None = None, device: str = "cpu",
             show_progress: bool = False, amp: str = "none") -> list[float]:
    """End-to-end fine-tuning (optimisers and loss in the module docstring); returns the mean loss per epoch.

    ``amp`` (none | bf16 | fp16) runs the forward pass under autocast (fp16 with loss scaling, one scaler for both
    optimisers); the weights stay float32.

    Runs in the engine's loop (``vidnas.engine.loop.fit``); the shuffle of epoch e is seeded by the shared
    ``epoch_seed(seed, e)`` (``epoch_loader``).
    """
    opt_static = torch.optim.SGD(model.static_parameters(), lr=STATIC_LR, momentum=0.9)
    opt_cell = torch.optim.Adam(model.cell_parameters(), lr=cell_lr)
    scaler = grad_scaler(device, amp)

    def begin(epoch: int) -> None:
        model.train()
        model.static.eval()  # frozen BatchNorm statistics (see the module docstring)

    def step(epoch: int, i: int, batch: dict[str, Any]) -> dict[str, float]:
        with autocast(device, amp):
            logits = model(batch["frames"].to(device))  # (B, T, K, H, W)
        masks = batch["masks"].to(device)  # (B, T, H, W)
        preds = [logits[:, t].float() for t in range(1, logits.shape[1])]  # frames after the first
        loss = sequence_loss(preds, masks[:, 1:], ignore_index)
        backward_step(loss, (opt_static, opt_cell), scaler)
        return {"loss": loss.item()}

    def end(res: EpochResult) -> None:
        logger.info("fine-tuning epoch %d/%d: loss %.4f", res.epoch + 1, epochs, res.loss)

    epochs_run = fit(step, lambda epoch: epoch_loader(dataset, batch_size=batch_size, seed=seed, epoch=epoch),
                     epochs=epochs, steps=steps_per_epoch(len(dataset), batch_size, cap=max_steps_per_epoch),
                     desc="finetune", begin=begin, end=end, show_progress=show_progress)
    return [res.loss for res in epochs_run]


@torch.inference_mode()
def measure_runtime(static: StaticSegmenter, model: DynamicCellModel, hw: tuple[int, int], *, seq_len: int,
                    repeats: int = 5) -> dict[str, float]:
    """Average per-frame latency (ms, batch 1): static on every frame vs. static on frame 1 + cell on the others.

    Each repeat streams one ``seq_len``-frame sequence through each model (after one warm-up sequence); the result is
    the median over repeats of (sequence time / seq_len), with the standard deviation.
    """
    static, model = static.eval(), model.eval()
    frames = torch.randn(seq_len, 1, 3, *hw, device=next(model.parameters()).device)

    def per_frame(m: Any) -> list[float]:
        out = []
        for r in range(repeats + 1):
            streamer = m.stream(batch_size=1)
            t0 = time.perf_counter()
            for f in frames:
                streamer.push(f)
            dt = (time.perf_counter() - t0) / seq_len * 1e3
            if r:  # the first sequence warms up
                out.append(dt)
        return out

    s, d = per_frame(static), per_frame(model)
    return {
        "static_ms": statistics.median(s), "static_ms_std": statistics.pstdev(s),
        "dynamic_ms": statistics.median(d), "dynamic_ms_std": statistics.pstdev(d),
        "static_params_m": sum(p.numel() for p in static.parameters()) / 1e6,
        "dynamic_params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "seq_len": seq_len, "input_hw": list(hw), "torch_threads": torch.get_num_threads(),
    }


def train_top_cells(cfg: Config, result: CellSearchResult, *, options: FinalOptions | None = None,
                    report_sections: Sequence[str] = ()) -> list[dict]:
    """Train every top cell of ``result`` (cell only, then end to end), evaluate, write files (module docstring);
    ``report_sections`` (markdown, e.g. the proxy check's) end ``report.md``.

    Returns:
        One summary dict per cell: ``name``, ``candidate``, ``search_reward``, ``val`` (scores), ``baseline_val``,
        ``runtime``, paths.
    """
    opts = options or FinalOptions()
    out_dir = result.run_dir / "top"
    data_cfg = search_data_config(cfg, proxy=False)  # the top-k cells train and are scored at the full size
    source = open_source(data_cfg)
    train_ds = ClipDataset(source, data_cfg.train_split, dataclasses.replace(data_cfg, augment=cfg.data.augment),
                           train=True)
    val_ds = ClipDataset(source, data_cfg.val_split, data_cfg, train=False)
    split = result.train_cache.split
    if result.train_cache.info.image_hw != (data_cfg.height, data_cfg.width) or (split is not None and split.dropped):
        info = dataclasses.replace(result.train_cache.info, image_hw=(data_cfg.height, data_cfg.width))
        full_cache: FeatureCache = cache_windows(result.static, ClipDataset(source, data_cfg.train_split, data_cfg,
                                                                            train=False),
                                                 info, device=cfg.train.device, show_progress=opts.show_progress)
    else:
        full_cache = result.train_cache.concat(result.val_cache)
    ignore, k = data_cfg.ignore_index, source.num_classes
    baseline_val = evaluate_windows(result.static, val_ds, k, ignore, device=cfg.train.device) if len(val_ds) else {}
    summaries = []
    for rank, geno in enumerate(top_genotypes(result)):
        cell_dir = out_dir / geno.name
        json_path = geno.save(out_dir / f"{geno.name}.json")
        logger.info("top cell %d/%d (candidate %s, search reward %.4f):\n%s", rank + 1, len(result.top),
                    geno.extra["candidate"], geno.extra["search_reward"], geno.describe())
        torch.manual_seed(cfg.train.seed + rank)
        cell = Cell(geno, in_channels=cell_in_channels(result.static), num_classes=k).to(cfg.train.device)
        phase1 = train_cell(cell, full_cache, None, epochs=opts.cell_epochs, lr=cfg.cells.cell_lr,
                            batch_size=opts.batch_size, seed=cfg.train.seed + rank,
                            max_steps_per_epoch=opts.max_steps_per_epoch, amp=cfg.train.amp)
        static = copy.deepcopy(result.static)
        model = DynamicCellModel(static, cell, window=cfg.cells.seq_len).to(cfg.train.device)
        history = finetune(model, train_ds, epochs=opts.epochs, cell_lr=cfg.cells.cell_lr / 2,
                           batch_size=opts.batch_size, ignore_index=ignore, seed=cfg.train.seed + rank,
                           max_steps_per_epoch=opts.max_steps_per_epoch, device=cfg.train.device,
                           show_progress=opts.show_progress, amp=cfg.train.amp) if opts.epochs > 0 else []
        val = evaluate_windows(model, val_ds, k, ignore, device=cfg.train.device) if len(val_ds) else {}
        runtime = measure_runtime(result.static, model, (data_cfg.height, data_cfg.width), seq_len=cfg.cells.seq_len,
                                  repeats=opts.runtime_repeats) if opts.runtime_repeats > 0 else {}
        state = {"model": model.state_dict(), "config": config_to_dict(cfg), "cell": geno.to_dict(),
                 "num_classes": k, "class_names": list(source.class_names), "val": val}
        if result.static_arch is not None:  # an arch2_space static network: its ops are not in the config
            state["static_arch"] = result.static_arch.to_dict()
        atomic_write(cell_dir / "model.pt", lambda tmp, state=state: torch.save(state, tmp))
        summary = {"name": geno.name, "candidate": geno.extra["candidate"],
                   "search_reward": geno.extra["search_reward"], "cell_only_losses": phase1["losses"],
                   "finetune_losses": history, "val": val, "baseline_val": baseline_val, "runtime": runtime,
                   "cell_json": str(json_path), "checkpoint": str(cell_dir / "model.pt"), "describe": geno.describe()}
        atomic_write_json(cell_dir / "metrics.json", summary)
        summaries.append(summary)
    atomic_write_json(out_dir / "runtime.json", {s["name"]: s["runtime"] for s in summaries})
    atomic_write_text(result.run_dir / "report.md", _report(result, summaries, baseline_val, report_sections))
    return summaries


def _report(result: CellSearchResult, summaries: list[dict], baseline_val: dict[str, float],
            sections: Sequence[str] = ()) -> str:
    ok = [r for r in result.records if not r["failed"]]
    lines = [
        "# Dynamic-cell search report",
        "",
        f"- candidates: {len(result.records)} ({len(result.records) - len(ok)} failed, "
        f"{sum(bool(r.get('early_stopped')) for r in ok)} early-stopped)",
        f"- search space: {result.space.num_layers} layers, ops {', '.join(result.space.ops)}; aggregations "
        f"{', '.join(result.space.aggregations)}",
        "",
        "## Top cells (val split, last frame of each window)",
        "",
        "| model | search reward | mIoU | fwIoU | mAcc | reward |",
        "|---|---|---|---|---|---|",
    ]

    def row(name: str, sr: str, v: dict[str, float]) -> str:
        f = [f"{v[k]:.4f}" if k in v else "n/a" for k in ("miou", "fwiou", "macc", "reward")]
        return f"| {name} | {sr} | " + " | ".join(f) + " |"

    lines.append(row("per-frame baseline (arch2)", "-", baseline_val))
    for s in summaries:
        lines.append(row(f"w/ {s['name']}", f"{s['search_reward']:.4f}", s["val"]))
    lines += ["", "## Runtime (this machine, batch 1; cf. the paper's Table 5)", "",
              "| model | params, M | avg. per-frame latency, ms |", "|---|---|---|"]
    if summaries and summaries[0]["runtime"]:
        r0 = summaries[0]["runtime"]
        lines.append(f"| baseline | {r0['static_params_m']:.3f} | {r0['static_ms']:.2f} +- {r0['static_ms_std']:.2f} |")
        for s in summaries:
            r = s["runtime"]
            lines.append(f"| w/ {s['name']} | {r['dynamic_params_m']:.3f} | {r['dynamic_ms']:.2f} +- "
                         f"{r['dynamic_ms_std']:.2f} |")
    lines += ["", "## Cells", ""]
    for s in summaries:
        lines += ["```", s["describe"], "```", ""]
    for section in sections:
        lines += [section.rstrip("\n"), ""]
    return "\n".join(lines) + "\n"


def load_top_cell(path: str | Path) -> CellGenotype:
    """Read a ``cell{k}.json`` written by ``train_top_cells``."""
    return CellGenotype.load(path)
