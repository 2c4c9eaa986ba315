"""The 360x480 presets and what keeps the CPU fed at that size: every frame decoded once into a compact cache
(``ClipDataset.preload``; uint8 masks), then cropped and augmented per sample, and the loader's share of each epoch
measured (``EpochResult.data_seconds``, ``data_share`` in ``train_summary.json``)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from fixtures_data import make_folder
from vidnas.config import DataConfig, load_config, validate_config
from vidnas.data import ClipDataset, FolderSource
from vidnas.engine.loop import fit
from vidnas.engine.train import train

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.height=32", "data.width=48", "data.synthetic_videos=2", "data.synthetic_frames=6",
        "train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=2", "data.cache_frames=100"]

# each 360x480 preset and its 176x240 base: they differ in the size (and the cell search's proxy scale) alone
PRESETS = {
    "camvid_arch2_360_cpu": ("camvid_arch2_fast_cpu", {}),
    "camvid_mstcn_arch2_360_cpu": ("camvid_mstcn_arch2_cpu", {}),
    "camvid_cells_360_cpu": ("camvid_cells_cpu", {"cells": {"proxy_scale": (0.5, 0.25)}}),
}


def _diff(a: object, b: object) -> dict[str, dict[str, tuple]]:
    out: dict[str, dict[str, tuple]] = {}
    for section in ("data", "model", "train", "cells"):
        x, y = dataclasses.asdict(getattr(a, section)), dataclasses.asdict(getattr(b, section))
        changed = {k: (x[k], y[k]) for k in x if x[k] != y[k]}
        if changed:
            out[section] = changed
    return out


def test_360_presets_are_their_176_presets_at_360x480() -> None:
    for name, (base, extra) in PRESETS.items():
        cfg = load_config(REPO / "configs" / f"{name}.yaml")
        validate_config(cfg)
        expected = {"data": {"height": (176, 360), "width": (240, 480)}, **extra}
        assert _diff(load_config(REPO / "configs" / f"{base}.yaml"), cfg) == expected, name
        assert cfg.data.cache_frames >= 367 + 101  # CamVid train + val: every frame decoded once


def test_preload_decodes_each_window_frame_once_into_uint8_masks(tmp_path: Path) -> None:
    source = FolderSource(make_folder(tmp_path, n_frames=6, annotated=(0, 2, 4)))
    cfg = DataConfig(format="folder", height=12, width=16, window=3, frame_stride=1, hflip=True,
                     scale_range=(0.75, 1.5), rotate_degrees=0.0)
    lazy = ClipDataset(source, "train", cfg, train=True, seed=0, cache_frames=100)
    eager = ClipDataset(source, "train", cfg, train=True, seed=0, cache_frames=100)
    assert eager.preload() == 5  # windows of targets 0, 2, 4 (causal, 3 frames) read frames 0..4, never 5
    cached = dict(eager._cache)
    assert [f.frame_number for f in cached] == [0, 1, 2, 3, 4]
    masks = {f.frame_number: m for f, (_, m) in cached.items()}
    assert all(masks[i].dtype == torch.uint8 for i in (0, 2, 4)) and masks[1] is None and masks[3] is None
    for idx in range(len(lazy)):  # the same augmented items as a dataset that decodes on demand
        a, b = lazy[idx], eager[idx]
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["masks"], b["masks"])
        assert b["masks"].dtype == torch.int64
    assert eager._cache.keys() == cached.keys()  # nothing decoded again: the very tensors of the preload
    assert all(eager._cache[k][0] is img and eager._cache[k][1] is m for k, (img, m) in cached.items())
    assert ClipDataset(source, "train", cfg, train=True, cache_frames=4).preload() == 0  # 5 frames do not fit


def test_fit_measures_the_time_spent_waiting_for_batches() -> None:
    def slow_batches(epoch: int):
        for k in range(3):
            time.sleep(0.02)
            yield k

    out = fit(lambda e, i, b: {"loss": 0.0}, slow_batches, epochs=1, steps=2)
    assert 0.04 <= out[0].data_seconds <= out[0].seconds  # two batches waited for; the third is fetched, not counted


def test_train_logs_the_data_loading_share(tmp_path: Path) -> None:
    train(load_config(REPO / "configs" / "tiny.yaml", TINY), tmp_path, show_progress=False)
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert 0.0 < summary["data_seconds_this_invocation"] <= summary["step_seconds_this_invocation"]
    assert 0.0 < summary["data_share"] < 1.0
    epochs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"epoch"' in x]
    assert {"epoch_seconds", "data_seconds", "data_share"} <= epochs[-1].keys()
    assert "data_share" not in summary["history"][0]  # timings stay out of the history (it repeats bit for bit)


def test_train_channels_last_converts_the_cnn_encoder(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "tiny.yaml", [*TINY, "model.encoder=mobilenetv2_test", "model.decoder=arch2",
                                                       "data.window=1", "train.channels_last=true"])
    train(cfg, tmp_path, show_progress=False)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)["model"]
    convs = [k for k, v in state.items() if k.startswith("encoder.") and v.dim() == 4]
    heads = [k for k, v in state.items() if not k.startswith("encoder.") and v.dim() == 4 and v.shape[-1] > 1]
    assert convs and all(state[k].is_contiguous(memory_format=torch.channels_last) for k in convs)
    assert heads and not any(state[k].is_contiguous(memory_format=torch.channels_last) for k in heads)


def test_loader_workers_read_the_preloaded_cache_not_the_files(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", n_frames=6, annotated=(0, 2, 4))
    cfg = DataConfig(format="folder", height=12, width=16, window=2, hflip=True, scale_range=(0.75, 1.5))
    ds = ClipDataset(FolderSource(root), "train", cfg, train=True, seed=0, cache_frames=100)
    assert ds.preload() == 5
    for png in root.rglob("*.png"):
        png.unlink()  # whoever decodes anything now fails
    expected = [ds[i] for i in range(len(ds))]
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, multiprocessing_context="fork")
    got = list(loader)
    assert len(got) == len(expected)
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a["frames"], b["frames"][0]) and torch.equal(a["masks"], b["masks"][0])
