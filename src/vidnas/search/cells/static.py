"""The static network of the cell search: load a trained arch2 checkpoint, or train one on a small budget.

A checkpoint is a dict with ``model`` (the ``Arch2Segmenter`` state dict), ``config`` (``config_to_dict``) and
``num_classes``: the format ``vidnas train`` writes, so ``vidnas train --set model.decoder=arch2 ...`` checkpoints load
here once ``build_model`` knows arch2, and the checkpoints written here evaluate with ``vidnas eval`` then.

Pre-training follows [CELLS appendix] where it can on a small budget: SGD with momentum 0.9, the 'poly' schedule
(power 0.9), learning rates 5e-2 for the encoder and 1e-2 for the decoder, auxiliary losses weighted 0.3
(``cells.aux_weight``); one frame per sample (window 1) with the data config's augmentation.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler

from vidnas.config import Config, config_from_dict, config_to_dict
from vidnas.engine.checkpoint import load_checkpoint, save_checkpoint
from vidnas.engine.train import segmentation_loss
from vidnas.models.arch2 import Arch2Segmenter, build_arch2
from vidnas.utils import seed_everything

__all__ = ["ENCODER_LR", "DECODER_LR", "train_static", "load_static", "static_identity"]

logger = logging.getLogger(__name__)

ENCODER_LR = 5e-2  # [CELLS appendix]
DECODER_LR = 1e-2  # [CELLS appendix]


def train_static(cfg: Config, out_dir: str | Path, *, epochs: int, batch_size: int | None = None,
                 max_steps_per_epoch: int | None = None, show_progress: bool = False) -> Path:
    """Pre-train arch2 per frame on ``cfg.data``'s train split; writes ``out_dir/static.pt``.

    Args:
        cfg: resolved config (``data``, ``model.encoder``, ``model.weights``, ``train.seed``, ``train.device``,
            ``cells.aux_weight``).
        out_dir: where the checkpoint goes.
        epochs: the budget.
        batch_size: frames per step (default ``train.batch_size``).
        max_steps_per_epoch: cap on steps per epoch (default ``train.max_steps_per_epoch``).
        show_progress: tqdm bars.

    Returns:
        The checkpoint path.
    """
    from tqdm.auto import tqdm

    from vidnas.data import ClipDataset, open_source

    if epochs < 1:
        raise ValueError(f"static pre-training needs epochs >= 1, got {epochs}")
    seed_everything(cfg.train.seed)
    device = torch.device(cfg.train.device)
    data_cfg = dataclasses.replace(cfg.data, window=1, temporal="causal", supervise="target")
    source = open_source(data_cfg)
    ds = ClipDataset(source, data_cfg.train_split, data_cfg, train=True)
    if len(ds) == 0:
        raise ValueError(f"no annotated frames in split {data_cfg.train_split!r} to pre-train the static network")
    model = build_arch2(cfg, num_classes=source.num_classes).to(device)
    opt = torch.optim.SGD([{"params": model.encoder.parameters(), "lr": ENCODER_LR},
                           {"params": model.decoder.parameters(), "lr": DECODER_LR}], momentum=0.9)
    base = [g["lr"] for g in opt.param_groups]
    bs = batch_size or cfg.train.batch_size
    cap = max_steps_per_epoch if max_steps_per_epoch is not None else cfg.train.max_steps_per_epoch
    steps = math.ceil(len(ds) / bs) if not cap else min(cap, math.ceil(len(ds) / bs))
    total = max(1, epochs * steps)
    ignore = data_cfg.ignore_index
    history = []
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(cfg.train.seed * 1000 + epoch)
        loader = DataLoader(ds, batch_size=bs, sampler=RandomSampler(ds, generator=gen),
                            num_workers=cfg.data.num_workers)
        model.train()
        losses = []
        bar = tqdm(total=steps, desc=f"static {epoch + 1}/{epochs}", leave=False, disable=not show_progress)
        for step, batch in enumerate(loader):
            if step >= steps:
                break
            for g, lr in zip(opt.param_groups, base, strict=True):  # poly schedule, power 0.9
                g["lr"] = lr * (1 - (epoch * steps + step) / total) ** 0.9
            frames, masks = batch["frames"].to(device), batch["masks"].to(device)
            logits, aux = model(frames)
            loss = segmentation_loss(logits, masks, ignore) + sum(
                cfg.cells.aux_weight * segmentation_loss(a, masks, ignore) for a in aux)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            bar.update(1)
        bar.close()
        history.append({"epoch": epoch, "train_loss": sum(losses) / max(len(losses), 1)})
        logger.info("static pre-training epoch %d/%d: loss %.4f", epoch + 1, epochs, history[-1]["train_loss"])
    ck_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, decoder="arch2"))
    state = {
        "model": model.state_dict(),
        "config": config_to_dict(ck_cfg),
        "arch": None,
        "num_classes": source.num_classes,
        "class_names": list(source.class_names),
        "epoch": epochs - 1,
        "history": history,
        "best_miou": -1.0,
        "best_epoch": -1,
    }
    return save_checkpoint(Path(out_dir) / "static.pt", state)


def load_static(path: str | Path, device: str = "cpu") -> tuple[Arch2Segmenter, Config, dict[str, Any]]:
    """Rebuild the arch2 network a checkpoint holds (its stored config) and load its weights.

    Returns:
        (model in eval mode, the checkpoint's config, the checkpoint).

    Raises:
        ValueError: not a readable arch2 checkpoint (the message names the file).
    """
    path = Path(path)
    state = load_checkpoint(path, map_location=device)  # CheckpointError (a ValueError) names the file
    if "config" not in state or "num_classes" not in state:
        raise ValueError(f"{path} is not a vidnas checkpoint (needs 'model', 'config' and 'num_classes')")
    cfg = config_from_dict(state["config"])
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=None))  # weights come from the file
    model = build_arch2(cfg, num_classes=int(state["num_classes"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ValueError(f"{path} does not hold an arch2 network for encoder {cfg.model.encoder!r}: {e}") from e
    return model.to(device).eval(), cfg, state


def static_identity(path: str | Path) -> dict[str, Any]:
    """Identity of a checkpoint file for cache keys: resolved path, size and modification time."""
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
