"""The meta split of the cell search shares no frame between meta-train and meta-val (issue 13), on the CamVid layout
(read in place) and on hand-made window lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidnas.config import load_config
from vidnas.data import ClipDataset, open_source
from vidnas.search.cells import dataset_windows, split_meta, split_meta_frames
from vidnas.search.cells.options import search_data_config


def _frames(windows: list, idx: list[int]) -> set[tuple[str, int]]:
    return {(windows[i][0], f) for i in idx for f in windows[i][1]}


def _camvid_windows(root: Path) -> tuple[ClipDataset, list]:
    cfg = load_config("camvid_sptcn_cpu", [f"data.root={root}"])
    data_cfg = search_data_config(cfg)  # 3-frame causal windows, every annotated frame supervised
    ds = ClipDataset(open_source(data_cfg), "train", data_cfg, train=False)
    return ds, dataset_windows(ds)


def test_camvid_meta_split_shares_no_frame(camvid_root: Path) -> None:
    ds, windows = _camvid_windows(camvid_root)
    assert len(windows) == 367 and all(len(f) == 3 for _, f in windows)
    # the earlier split by windows leaks: most supervised meta-val frames (frames 1..2 of each window) are also
    # supervised in meta-train
    tr, va = split_meta(len(windows), 0.1, seed=0)
    supervised = {(windows[i][0], windows[i][1][t]) for i in va for t in (1, 2)}
    leaked = supervised & {(windows[i][0], windows[i][1][t]) for i in tr for t in (1, 2)}
    assert len(leaked) / len(supervised) > 0.5

    auto = split_meta_frames(windows, 0.1, seed=0)  # three videos: whole videos go to meta-val
    assert auto.mode == "video" and auto.val_videos == ["0001TP"] and len(auto.val) == 62
    block = split_meta_frames(windows, 0.1, seed=0, mode="block")  # a contiguous block in each video
    assert block.mode == "block" and block.val_videos == ["0001TP", "0006R0", "0016E5"]
    assert len(block.val) == round(62 * 0.1) + round(101 * 0.1) + round(204 * 0.1)
    assert len(block.dropped) <= 3 * 2 * 2  # a gap of T - 1 = 2 windows on each side of each block
    for split in (auto, block):
        assert not _frames(windows, split.train) & _frames(windows, split.val)
        assert sorted(split.train + split.val + split.dropped) == list(range(len(windows)))
        assert split == split_meta_frames(windows, 0.1, seed=0, mode=split.mode)  # seeded
    # the frames compared are real CamVid frames: positions map to the files of one sequence
    refs = ds.window_frames(block.val[0])
    assert refs[0].video in block.val_videos and Path(refs[-1].image).parent.name == "train"


def test_block_split_gap_and_edges() -> None:
    # one video of 40 frames, 3-frame causal windows ending at every frame (edge frames repeated)
    windows = [("v", tuple(max(0, t - k) for k in (2, 1, 0))) for t in range(40)]
    s = split_meta_frames(windows, 0.1, seed=1)
    assert s.mode == "block" and len(s.val) == 4
    assert s.val == list(range(s.val[0], s.val[0] + 4))  # contiguous
    lo, hi = s.val[0], s.val[-1]
    # a window ending at t holds frames t-2..t and the block's windows hold frames lo-2..hi: the windows ending in
    # lo-2..hi+2 (a gap of T - 1 = 2 windows on each side) share a frame with the block and are dropped
    assert set(s.dropped) == {t for t in range(40) if lo - 2 <= t <= hi + 2} - set(s.val)
    assert not _frames(windows, s.train) & _frames(windows, s.val)
    assert split_meta_frames(windows, 0.1, seed=2).val != s.val  # the seed moves the block


def test_video_split_and_errors() -> None:
    windows = [(f"v{k}", (t,)) for k in range(20) for t in range(5)]  # 20 videos of 5 one-frame windows
    s = split_meta_frames(windows, 0.1, seed=0)
    assert s.mode == "video" and len(s.val) == 10 and len(s.val_videos) == 2
    assert not {windows[i][0] for i in s.train} & set(s.val_videos)
    two = [("a", (t,)) for t in range(50)] + [("b", (t,)) for t in range(50)]  # each video is half the data
    assert split_meta_frames(two, 0.1).mode == "block"  # auto falls back to blocks
    with pytest.raises(ValueError, match="no set of whole videos"):
        split_meta_frames(two, 0.1, mode="video")
    with pytest.raises(ValueError, match="valid values are auto, video, block, window"):
        split_meta_frames(two, 0.1, mode="random")
    with pytest.raises(ValueError, match="leaves no meta-train window"):
        split_meta_frames([("a", (0, 1, 2)), ("a", (1, 2, 3))], 0.5, mode="block")
    old = split_meta_frames(two, 0.1, seed=0, mode="window")  # the earlier permutation, frames shared
    assert (old.train, old.val) == split_meta(100, 0.1, seed=0)


def test_the_search_trains_its_static_network_without_the_meta_val_video(tmp_path: Path) -> None:
    """Issue 27: every reward is scored on meta-val, so the static network whose features and `dec` each cell reads
    must not have trained on those frames. Without --static the search trains it with the meta-val video held out
    (data.selection_videos); a static network trained on every video is named as having seen it."""
    from vidnas.models.loading import load_model
    from vidnas.search.cells.static import meta_val_seen, prepare_static, search_meta_split

    cfg = load_config(None, ["data.height=32", "data.width=48", "data.synthetic_videos=3", "data.synthetic_frames=8",
                             "model.encoder=mobilenetv2_test", "train.batch_size=4", "cells.meta_val_fraction=0.3"])
    meta = search_meta_split(cfg)
    assert meta.mode == "video" and len(meta.val_videos) == 1  # one of the three videos: a third of the windows
    said: list[str] = []
    path = prepare_static(cfg, tmp_path, None, resume=False, epochs=1, max_steps_per_epoch=1, say=said.append)
    static_cfg = load_model(path).cfg
    assert static_cfg.data.selection_videos == tuple(meta.val_videos)
    assert meta_val_seen(static_cfg, meta) == []
    assert meta_val_seen(cfg, meta) == meta.val_videos  # trained on every video: it saw meta-val
    assert any("without the meta-val videos" in line for line in said)
    block = search_meta_split(load_config(None, ["data.synthetic_videos=2", "data.synthetic_frames=24"]))
    assert block.mode == "block" and meta_val_seen(static_cfg, block) == list(block.val_videos)
