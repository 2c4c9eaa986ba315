"""The data sets of a run: the training and validation ``ClipDataset`` of a config.

Training (``vidnas.engine.train``), the ST-NAS search and evaluation build their windows here, so all of them see the
same items: the training windows augmented (each item's draw seeded by ``(train.seed, epoch, index)``), the validation
windows at ``data.val_frame_stride`` when it is set (``val_data_config``).

With ``data.selection_videos`` (``selection_datasets``) whole videos of the train split are held out as the
*selection split*: training reads the other train videos, and every decision of ``vidnas train`` (the best epoch)
is made on the selection videos, so the reported split (``data.val_split``) is read only at the end. The two share no
frame when the train and val splits share no video (CamVid: 0001TP, the video the cell search's meta split carves).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vidnas.config import Config
from vidnas.data.base import DataError, VideoSource, open_source
from vidnas.data.clips import ClipDataset

__all__ = ["build_datasets", "val_data_config", "selection_datasets"]


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


def selection_datasets(cfg: Config, source: VideoSource) -> tuple[ClipDataset, ClipDataset]:
    """(train ClipDataset without the selection videos, selection ClipDataset) of ``data.selection_videos``.

    The selection windows are cut like the training windows (``data.frame_stride``, the train split's annotation
    rate) but never augmented.

    Raises:
        DataError: a name that is not a video of ``data.train_split``, a selection that leaves no training video, or
            one without an annotated frame.
    """
    chosen = list(cfg.data.selection_videos)
    names = [v.name for v in source.videos(cfg.data.train_split)]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise DataError(f"data.selection_videos: {', '.join(unknown)} not a video of split {cfg.data.train_split!r} "
                        f"of {source.name} (its videos: {', '.join(names[:20])}{'...' if len(names) > 20 else ''})")
    rest = [n for n in names if n not in chosen]
    if not rest:
        raise DataError(f"data.selection_videos={','.join(chosen)} takes every video of split "
                        f"{cfg.data.train_split!r}: no training video is left")
    cache = cfg.data.cache_frames
    train_ds = ClipDataset(source, cfg.data.train_split, cfg.data, train=True, seed=cfg.train.seed,
                           cache_frames=cache, videos=rest)
    select_ds = ClipDataset(source, cfg.data.train_split, cfg.data, train=False, cache_frames=cache, videos=chosen)
    if len(select_ds) == 0:
        raise DataError(f"data.selection_videos={','.join(chosen)}: no annotated frame in these videos to select on")
    return train_ds, select_ds
