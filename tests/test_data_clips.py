"""Clip windows (index arithmetic, edges, supervision) and joint clip transforms."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures_data import make_folder
from vidnas.config import DataConfig
from vidnas.data import (
    ClipDataset,
    ClipParams,
    ClipTransform,
    FolderSource,
    denormalize,
    target_position,
    window_indices,
)

IGN = 255


# ------------------------------------------------------------------------------------------------- index arithmetic


def test_window_indices_hand_made() -> None:
    # causal: the window ends at the target
    assert window_indices(10, 5, 3, "causal") == [3, 4, 5]
    assert window_indices(10, 5, 3, "causal", stride=2) == [1, 3, 5]
    # centred: the target in the middle; even windows have one more frame before it
    assert window_indices(10, 5, 3, "centred") == [4, 5, 6]
    assert window_indices(10, 5, 4, "centred") == [3, 4, 5, 6]
    assert target_position(4, "centred") == 2 and target_position(4, "causal") == 3
    assert window_indices(10, 5, 5, "centred", stride=3) == [0, 2, 5, 8, 9]  # clamped at both ends
    # edges repeat the first / last frame
    assert window_indices(10, 0, 4, "causal") == [0, 0, 0, 0]
    assert window_indices(10, 1, 4, "causal") == [0, 0, 0, 1]
    assert window_indices(10, 9, 5, "centred") == [7, 8, 9, 9, 9]
    assert window_indices(1, 0, 3, "centred") == [0, 0, 0]
    assert window_indices(10, 4, 1, "centred") == [4]
    with pytest.raises(IndexError):
        window_indices(3, 3, 2)


# ------------------------------------------------------------------------------------------------- clip datasets


@pytest.fixture()
def folder(tmp_path: Path) -> FolderSource:
    return FolderSource(make_folder(tmp_path))


def _grey(frames: torch.Tensor) -> list[int]:
    """Mean grey value (0..255) of each frame of a clip (T, 3, H, W)."""
    return [int(round(float(x) * 255)) for x in denormalize(frames).mean(dim=(1, 2, 3))]


def test_items_are_annotated_frames_with_edge_repetition(folder: FolderSource) -> None:
    cfg = DataConfig(height=12, width=16, window=3, temporal="causal", augment=False)
    ds = ClipDataset(folder, "train", cfg)
    assert len(ds) == 3  # frames 0, 2, 4 of clipA are annotated; clipB has none
    first = ds[0]
    assert first["frame_numbers"].tolist() == [0, 0, 0] and first["target"] == 2 and first["video"] == "clipA"
    assert _grey(first["frames"]) == [10, 10, 10]  # frame 0's pixels, repeated
    assert _grey(ds[2]["frames"]) == [50, 70, 90]  # frames 2, 3, 4
    centred = ClipDataset(folder, "train", replace(cfg, temporal="centred", window=5, frame_stride=2))
    assert centred[2]["frame_numbers"].tolist() == [0, 2, 4, 5, 5]
    assert _grey(centred[2]["frames"]) == [10, 50, 90, 110, 110]
    assert centred[2]["target"] == 2


def test_supervise_target_vs_all(folder: FolderSource) -> None:
    cfg = DataConfig(height=12, width=16, window=3, temporal="causal", augment=False)
    target_only = ClipDataset(folder, "train", cfg)[2]["masks"]  # window frames 2, 3, 4; target frame 4
    every = ClipDataset(folder, "train", replace(cfg, supervise="all"))[2]["masks"]
    frame4 = torch.tensor(folder.read_mask(folder.videos("train")[0].frames[4]))
    frame2 = torch.tensor(folder.read_mask(folder.videos("train")[0].frames[2]))
    assert torch.equal(target_only[2], frame4) and torch.equal(every[2], frame4)
    assert torch.all(target_only[0] == IGN) and torch.all(target_only[1] == IGN)
    assert torch.equal(every[0], frame2)  # annotated frame in the window: supervised with "all"
    assert torch.all(every[1] == IGN)  # frame 3 has no mask


def test_dtypes_and_normalisation(folder: FolderSource) -> None:
    item = ClipDataset(folder, "train", DataConfig(height=8, width=10, window=2))[1]
    assert item["frames"].dtype == torch.float32 and item["frames"].shape == (2, 3, 8, 10)
    assert item["masks"].dtype == torch.int64 and item["frame_numbers"].dtype == torch.int64
    # frame 1 is flat grey 30: normalised per ImageNet channel stats
    expected = (30 / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(item["frames"][0, :, 4, 5], expected, atol=1e-5)


# ------------------------------------------------------------------------------------------------- transforms


def _clip(t: int = 3, h: int = 20, w: int = 30) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Asymmetric frames: bright left third, dark rest; masks 1 on the left third, 2 elsewhere, 0 in the top rows."""
    imgs, masks = [], []
    for k in range(t):
        im = np.full((h, w, 3), 40 + k, np.uint8)
        im[:, : w // 3] = 220
        m = np.full((h, w), 2, np.uint8)
        m[:, : w // 3] = 1
        m[:3] = 0
        imgs.append(im)
        masks.append(m)
    return imgs, masks


def test_flip_is_the_same_for_every_frame() -> None:
    tf = ClipTransform(20, 30, hflip=True, train=True)
    imgs, masks = _clip()
    flips = []
    for seed in range(12):
        x, y = tf(imgs, masks, generator=torch.Generator().manual_seed(seed))
        left = denormalize(x)[:, :, :, :5].mean(dim=(1, 2, 3))  # per frame: brightness of the left edge
        flipped = left < 0.5
        assert bool(flipped.all()) or not bool(flipped.any())  # all frames or none
        assert torch.all((y[:, 10, 0] == 2) == flipped)  # masks follow their images
        flips.append(bool(flipped[0]))
    assert any(flips) and not all(flips)


def test_rotation_masks_nearest_and_border_ignore() -> None:
    tf = ClipTransform(24, 36, rotate_degrees=30, ignore_index=IGN, train=True)
    imgs, masks = _clip()
    x, y = tf(imgs, masks, params=ClipParams(angle=25.0))
    assert set(torch.unique(y).tolist()) <= {0, 1, 2, IGN}  # resize + rotation add no new label value
    assert bool((y[:, 0, 0] == IGN).all()) and bool((y[:, -1, -1] == IGN).all())  # rotated-in corners: ignore
    assert not bool((y[:, 0, 0] == 0).any())
    # the same rotation on every frame: the ignore regions coincide
    assert torch.equal(y[0] == IGN, y[1] == IGN) and torch.equal(y[1] == IGN, y[2] == IGN)
    # rotated-in image pixels are the mean colour, i.e. zero after normalisation
    assert torch.allclose(x[:, :, 0, 0], torch.zeros(3, 3), atol=1e-5)
    # eval mode: resize only, whatever the parameters of the train transform
    ev = ClipTransform(24, 36, rotate_degrees=30, hflip=True, train=False)
    assert ev.sample(torch.Generator().manual_seed(0)) == ClipParams()
    _, ye = ev(imgs, masks)
    assert set(torch.unique(ye).tolist()) == {0, 1, 2}


def test_resize_of_masks_is_nearest() -> None:
    rng = np.random.default_rng(0)
    m = rng.choice(np.array([0, 3, 7]), size=(37, 53))
    tf = ClipTransform(16, 20)
    _, y = tf([np.zeros((37, 53, 3), np.uint8)], [m])
    assert set(torch.unique(y).tolist()) <= {0, 3, 7}


def test_augmentation_is_deterministic_given_a_seed(folder: FolderSource) -> None:
    cfg = DataConfig(height=12, width=16, window=3, rotate_degrees=20, hflip=True)
    a = ClipDataset(folder, "train", cfg, train=True, seed=7)
    b = ClipDataset(folder, "train", cfg, train=True, seed=7)
    for i in range(len(a)):
        assert torch.equal(a[i]["frames"], b[i]["frames"]) and torch.equal(a[i]["masks"], b[i]["masks"])
    draws = set()
    for epoch in range(6):
        a.set_epoch(epoch)
        draws.add(a[1]["masks"].numpy().tobytes())
    assert len(draws) > 1  # the epoch changes the draw
    tf = ClipTransform(12, 16, rotate_degrees=20, hflip=True, train=True)
    p1 = tf.sample(torch.Generator().manual_seed(3))
    assert p1 == tf.sample(torch.Generator().manual_seed(3)) and -20 <= p1.angle <= 20
