"""The data sets of a run: the training and validation ``ClipDataset`` of a config.

Training (``vidnas.engine.train``), the ST-NAS search and evaluation build their windows here, so all of them see the
same items: the training windows augmented (each item's draw seeded by ``(train.seed, epoch, index)``), the validation
windows at ``data.val_frame_stride`` when it is set (``val_data_config``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vidnas.config import Config
from vidnas.data.base import VideoSource, open_source
from vidnas.data.clips import ClipDataset

__all__ = ["build_datasets", "val_data_config"]


def val_data_config(data_cfg: Any) -> Any:
    """The data config of validation windows: ``frame_stride`` replaced by ``val_frame_stride`` when set."""
    if getattr(data_cfg, "val_frame_stride", None) is None:
        return data_cfg
    return dataclasses.replace(data_cfg, frame_stride=data_cfg.val_frame_stride)


def build_datasets(cfg: Config) -> tuple[VideoSource, ClipDataset, ClipDataset]:
    """(source, train ClipDataset, val ClipDataset) from ``cfg.data``; validation windows use
    ``data.val_frame_stride`` when it is set (the spacing that matches training)."""
    source = open_source(cfg.data)
    cache = cfg.data.cache_frames
    train_ds = ClipDataset(source, cfg.data.train_split, cfg.data, train=True, seed=cfg.train.seed, cache_frames=cache)
    val_ds = ClipDataset(source, cfg.data.val_split, val_data_config(cfg.data), train=False, cache_frames=cache)
    return source, train_ds, val_ds
