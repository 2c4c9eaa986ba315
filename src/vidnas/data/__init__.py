"""Clip data sets: video sources per format, clip windows, a run's train and val data sets, joint clip transforms,
statistics.

Importing this package registers every format in ``FORMATS``; nothing is read until a source is built.

Example:
    >>> from vidnas.config import DataConfig
    >>> from vidnas.data import ClipDataset, open_source
    >>> cfg = DataConfig(height=64, width=96, window=3)
    >>> src = open_source(cfg)                      # the synthetic default
    >>> ds = ClipDataset(src, "train", cfg, train=True)
    >>> ds[0]["frames"].shape
    torch.Size([3, 3, 64, 96])
"""

from vidnas.data.base import (
    FORMATS,
    DataError,
    FrameRef,
    LabelMap,
    Registry,
    UnknownNameError,
    Video,
    VideoSource,
    check_data_config,
    make_video,
    open_source,
    read_label_png,
    read_rgb,
    register_format,
)
from vidnas.data.camvid import CamVidSource
from vidnas.data.cholecseg8k import CholecSeg8kSource
from vidnas.data.cityscapes import CityscapesSource
from vidnas.data.clips import ClipDataset, VideoFrames, target_position, window_indices
from vidnas.data.datasets import build_datasets, selection_datasets, val_data_config
from vidnas.data.davis import DavisSource
from vidnas.data.folder import FolderSource
from vidnas.data.palette import colorize, default_palette, overlay, resolve_palette
from vidnas.data.stats import preview_grid, preview_layout, split_stats
from vidnas.data.synthetic import CORRUPTIONS, SyntheticSource
from vidnas.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipParams,
    ClipTransform,
    denormalize,
    normalize,
    resize_image,
    resize_mask,
)

__all__ = [
    "FORMATS",
    "DataError",
    "UnknownNameError",
    "FrameRef",
    "Video",
    "VideoSource",
    "LabelMap",
    "Registry",
    "register_format",
    "make_video",
    "open_source",
    "check_data_config",
    "read_rgb",
    "read_label_png",
    "CamVidSource",
    "DavisSource",
    "CholecSeg8kSource",
    "CityscapesSource",
    "FolderSource",
    "SyntheticSource",
    "CORRUPTIONS",
    "ClipDataset",
    "build_datasets",
    "selection_datasets",
    "val_data_config",
    "VideoFrames",
    "window_indices",
    "target_position",
    "ClipTransform",
    "ClipParams",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "normalize",
    "denormalize",
    "resize_image",
    "resize_mask",
    "default_palette",
    "colorize",
    "overlay",
    "resolve_palette",
    "split_stats",
    "preview_grid",
    "preview_layout",
]
