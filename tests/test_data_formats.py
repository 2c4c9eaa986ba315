"""Readers of every format: real CamVid / DAVIS from ../shared/data, published-layout fixtures for the others."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixtures_data import (
    CHOLEC_GREYS,
    CHOLEC_STRAY,
    CHOLEC_STRAY_PIXELS,
    CITY_TRAIN_IDS,
    cholec_watershed,
    city_label_mask,
    make_cholecseg8k,
    make_cityscapes,
    make_folder,
)
from vidnas.config import DataConfig
from vidnas.data import (
    FORMATS,
    CamVidSource,
    CholecSeg8kSource,
    CityscapesSource,
    ClipDataset,
    DataError,
    DavisSource,
    FolderSource,
    SyntheticSource,
    VideoFrames,
    open_source,
    split_stats,
)

TINY = DataConfig(height=24, width=32, window=3, augment=False)


# ------------------------------------------------------------------------------------------------------------ camvid


@pytest.fixture(scope="module")
def camvid(camvid_root: Path) -> CamVidSource:
    src = open_source(replace(TINY, format="camvid", root=str(camvid_root)))
    assert isinstance(src, CamVidSource)
    return src


def test_camvid_counts_and_sequences(camvid: CamVidSource) -> None:
    train, val = camvid.videos("train"), camvid.videos("val")
    assert sum(v.num_annotated for v in train) == 367
    assert sum(v.num_annotated for v in val) == 101
    assert {v.name: len(v) for v in train} == {"0001TP": 62, "0006R0": 101, "0016E5": 204}
    assert [v.name for v in val] == ["0016E5"]
    assert camvid.split_names() == ["train", "val"]
    # frame numbers parsed from the names (both spellings), frames in temporal order
    f0 = train[1].frames[0]
    assert (f0.video, f0.frame_number) == ("0006R0", 930)
    nums = [f.frame_number for f in val[0].frames]
    assert nums[0] == 7959 and nums[-1] == 8159 and np.all(np.diff(nums) == 2)
    # "all" keeps train's and val's 0016E5 apart
    assert sorted(v.name for v in camvid.videos("all")) == ["0001TP", "0006R0", "0016E5", "val/0016E5"]


def test_camvid_classes_and_void(camvid: CamVidSource) -> None:
    assert camvid.num_classes == 11
    assert camvid.class_names[0] == "Sky" and camvid.class_names[10] == "Bicyclist"
    assert camvid.palette.shape == (11, 3) and tuple(camvid.palette[3]) == (128, 64, 128)
    frame = camvid.videos("train")[0].frames[0]
    raw = np.array(Image.open(frame.mask))
    assert (raw == 11).any()  # this frame has void pixels
    mask = camvid.read_mask(frame)
    assert mask.dtype == np.int64 and mask.shape == (360, 480)
    assert np.all(mask[raw == 11] == 255)
    assert np.array_equal(mask[raw != 11], raw[raw != 11])
    assert camvid.unknown_labels() == {}


def test_camvid_clip_window_and_edges(camvid: CamVidSource) -> None:
    cfg = replace(TINY, format="camvid", root=str(camvid.root), window=4)
    ds = ClipDataset(camvid, "val", cfg)
    assert len(ds) == 101
    item = ds[2]
    assert item["frames"].shape == (4, 3, 24, 32) and item["masks"].shape == (4, 24, 32)
    assert item["target"] == 3 and item["video"] == "0016E5"
    assert item["frame_numbers"].tolist() == [7959, 7959, 7961, 7963]  # first frame repeated
    # edge repetition is real repetition: the first two frames are the same pixels
    assert np.array_equal(item["frames"][0].numpy(), item["frames"][1].numpy())
    centred = ClipDataset(camvid, "val", replace(cfg, temporal="centred", window=3))
    assert centred[100]["frame_numbers"].tolist() == [8157, 8159, 8159]
    assert centred[100]["target"] == 1


# ------------------------------------------------------------------------------------------------------------ davis


def test_davis_counts_splits_and_foreground(davis_root: Path) -> None:
    src = open_source(replace(TINY, format="davis", root=str(davis_root)))
    assert isinstance(src, DavisSource)
    counts = {v.name: len(v) for v in src.videos("all")}
    assert counts == {"blackswan": 50, "car-shadow": 40, "dog": 60, "libby": 49}
    assert all(v.num_annotated == len(v) for v in src.videos("all"))
    assert [v.name for v in src.videos("train")] == ["blackswan", "dog"]
    assert [v.name for v in src.videos("val")] == ["car-shadow", "libby"]
    assert src.class_names == ["background", "foreground"]
    frame = src.videos("train")[1].frames[10]
    raw = np.array(Image.open(frame.mask))
    mask = src.read_mask(frame)
    assert set(np.unique(mask).tolist()) == {0, 1}
    assert np.array_equal(mask == 1, raw == 255)
    item = ClipDataset(src, "val", TINY)[0]
    assert item["frames"].shape == (3, 3, 24, 32) and set(item["masks"][-1].unique().tolist()) <= {0, 1}


def test_davis_unlisted_sequence_needs_a_split_file(tmp_path: Path) -> None:
    for seq in ("blackswan", "newseq"):
        img = tmp_path / "JPEGImages" / seq / "00000.jpg"  # no 480p level: accepted too
        img.parent.mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
        (tmp_path / "Annotations" / seq).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "Annotations" / seq / "00000.png")
    src = DavisSource(tmp_path)
    assert [v.name for v in src.videos("all")] == ["blackswan", "newseq"]
    with pytest.raises(ValueError, match="newseq"):
        src.videos("train")
    (tmp_path / "splits.yaml").write_text("train: [newseq]\nval: [blackswan]\n")
    assert [v.name for v in DavisSource(tmp_path).videos("train")] == ["newseq"]


# ------------------------------------------------------------------------------------------------------- cholecseg8k


@pytest.fixture(scope="module")
def cholec_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cholecseg8k(tmp_path_factory.mktemp("cholecseg8k"))


def test_cholec_layout_and_split_by_video(cholec_root: Path) -> None:
    src = open_source(replace(TINY, format="cholecseg8k", root=str(cholec_root)))
    assert isinstance(src, CholecSeg8kSource)
    assert src.num_classes == 13 and src.class_names[9] == "L-hook electrocautery"
    assert [v.name for v in src.videos("train")] == ["video01_00080"]
    assert [v.name for v in src.videos("test")] == ["video12_00400"]
    assert [v.name for v in src.videos("val")] == ["video12_00400"]  # alias of test
    test = src.videos("test")[0]
    assert [f.frame_number for f in test.frames] == [400, 401, 402, 403]
    assert test.annotated == [0, 1, 2]  # the last frame has no watershed mask
    # the sparse tool mask and the colour mask are never used
    assert all(f.mask is None or f.mask.endswith("_endo_watershed_mask.png") for f in test.frames)
    assert all(f.image.endswith("_endo.png") for f in test.frames)


def test_cholec_grey_codes_border_strays_rgba(cholec_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = CholecSeg8kSource(cholec_root)
    frames = src.videos("train")[0].frames
    lut = {g: c for c, g in enumerate(CHOLEC_GREYS)}
    with caplog.at_level(logging.WARNING):
        masks = [src.read_mask(f) for f in frames]  # frame 1 is RGBA, frame 2 has strays
        masks += [src.read_mask(f) for f in frames]  # reading again neither warns nor counts again
    for i, mask in enumerate(masks[: len(frames)]):
        grey = cholec_watershed(i, stray=(i == 2))
        expected = np.vectorize(lambda g: lut.get(int(g), 255))(grey)
        assert np.array_equal(mask, expected)
        assert np.all(mask[0, :] == 255) and np.all(mask[:, -1] == 255)  # border -> ignore, not background
        assert mask[5, 6] == 255  # 0 -> ignore
        assert set(np.unique(mask).tolist()) == set(range(13)) | {255}  # all 13 codes present
    assert masks[2][10, 10] == 255  # stray 77 -> ignore, never background
    assert src.unknown_labels() == {CHOLEC_STRAY: CHOLEC_STRAY_PIXELS}
    unknown_warnings = [r for r in caplog.records if "unknown label" in r.getMessage()]
    assert len(unknown_warnings) == 1 and str(CHOLEC_STRAY) in unknown_warnings[0].getMessage()


def test_cholec_splits_override(cholec_root: Path) -> None:
    src = CholecSeg8kSource(cholec_root, splits={"train": [12], "val": ["video01"]})
    assert [v.name for v in src.videos("train")] == ["video12_00400"]
    assert [v.name for v in src.videos("val")] == ["video01_00080"]


# -------------------------------------------------------------------------------------------------------- cityscapes


@pytest.fixture(scope="module")
def city_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cityscapes(tmp_path_factory.mktemp("cityscapes"))


def test_cityscapes_snippets_and_trainids(city_root: Path) -> None:
    src = open_source(replace(TINY, format="cityscapes", root=str(city_root)))
    assert isinstance(src, CityscapesSource)
    assert src.num_classes == 19 and src.class_names[13] == "car" and tuple(src.palette[0]) == (128, 64, 128)
    assert src.split_names() == ["train", "val"]
    train = src.videos("train")
    assert [(v.name, len(v)) for v in train] == [("aachen_000000_000019", 30), ("aachen_000000_000049", 30)]
    for v, gt in zip(train, (19, 49), strict=True):
        assert v.annotated == [19]  # the 20th frame of each 30-frame snippet
        assert v.frames[19].frame_number == gt
    val = src.videos("val")[0]
    assert val.name == "frankfurt_000000_000295" and val.frames[0].frame_number == 276
    mask = src.read_mask(val.frames[19])
    expected = CITY_TRAIN_IDS[np.arange(16) % len(CITY_TRAIN_IDS)]
    assert np.array_equal(mask[0], expected)
    assert mask[0, 0] == 0 and mask[0, 12] == 13 and mask[0, 14] == 18  # road, car, bicycle
    assert mask[0, 15] == 255 and mask[0, 1] == 1  # unlabeled -> ignore; sidewalk
    assert city_label_mask()[0, 15] == 0
    assert src.unknown_labels() == {}
    item = ClipDataset(src, "val", replace(TINY, window=4))[0]
    assert item["frame_numbers"].tolist() == [292, 293, 294, 295]


# ------------------------------------------------------------------------------------------------------------ folder


def test_folder_layout_classes_and_splits(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_folder(tmp_path)
    src = open_source(replace(TINY, format="folder", root=str(tmp_path)))
    assert isinstance(src, FolderSource)
    assert src.class_names == ["background", "thing", "stuff"]
    assert src.palette.shape == (3, 3) and tuple(src.palette[1]) == (40, 80, 200)
    a = src.videos("train")[0]
    assert a.name == "clipA" and len(a) == 6 and a.annotated == [0, 2, 4]
    with caplog.at_level(logging.WARNING):
        b = src.videos("val")[0]
    assert b.name == "clipB" and b.num_annotated == 0
    assert any("clipB" in r.getMessage() and "without any annotation" in r.getMessage() for r in caplog.records)
    mask = src.read_mask(a.frames[2])
    assert mask[0, 0] == 2 and mask[0, -1] == 0


def test_folder_without_split_file_uses_every_video(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_folder(tmp_path, splits=False)
    (tmp_path / "classes.yaml").unlink()
    src = FolderSource(tmp_path)
    with caplog.at_level(logging.WARNING):
        names = [v.name for v in src.videos("train")]
        assert src.num_classes == 3  # inferred from the masks (largest value 2)
    assert names == ["clipA", "clipB"] and [v.name for v in src.videos("val")] == names
    assert any("overlap" in r.getMessage() for r in caplog.records)
    assert src.class_names == ["class0", "class1", "class2"]


def test_folder_refuses_to_infer_classes_past_a_stray_mask_value(tmp_path: Path) -> None:
    """A stray value (200 among 0..2) without class names: refused, naming the value and the mask, instead of a
    201-class model whose mIoU is 0 (issue 30)."""
    from PIL import Image

    from vidnas.data import DataError

    make_folder(tmp_path, splits=False)
    (tmp_path / "classes.yaml").unlink()
    mask = tmp_path / "clipA" / "masks" / "frame_0002.png"
    m = np.array(Image.open(mask))
    m[0, 0] = 200
    Image.fromarray(m).save(mask)
    with pytest.raises(DataError, match=r"mask value 200 \(first in .*frame_0002.png\).*classes.yaml"):
        _ = FolderSource(tmp_path).num_classes


# --------------------------------------------------------------------------------------------------------- synthetic


def _pixels(src: SyntheticSource, split: str = "val") -> tuple[np.ndarray, np.ndarray]:
    frames = list(src.frames(split))
    return np.stack([src.read_image(f) for f in frames]), np.stack([src.read_mask(f) for f in frames])


def test_synthetic_is_deterministic_and_seeded() -> None:
    cfg = DataConfig(height=24, width=32, synthetic_videos=3, synthetic_frames=6, synthetic_seed=5)
    a, b = open_source(cfg), open_source(cfg)
    assert isinstance(a, SyntheticSource)
    assert [v.name for v in a.videos("train")] == ["synth000", "synth001"]
    assert [v.name for v in a.videos("val")] == ["synth002"]
    ia, ma = _pixels(a)
    ib, mb = _pixels(b)
    assert ia.shape == (6, 24, 32, 3) and ia.dtype == np.uint8
    assert np.array_equal(ia, ib) and np.array_equal(ma, mb)
    ic, mc = _pixels(open_source(replace(cfg, synthetic_seed=6)))
    assert not np.array_equal(ia, ic) and not np.array_equal(ma, mc)
    # every frame annotated; several classes visible; no void
    assert all(f.mask is not None for f in a.frames("all"))
    assert len(np.unique(ma)) >= 3 and ma.max() < 4


def test_synthetic_corruption_keeps_labels() -> None:
    cfg = DataConfig(height=24, width=32, synthetic_videos=2, synthetic_frames=16, synthetic_corruption=0.5)
    noisy, clean = open_source(cfg), open_source(replace(cfg, synthetic_corruption=0.0))
    frames = list(noisy.frames("train"))
    kinds = [noisy.corrupted(f) for f in frames]
    assert any(kinds) and not all(kinds)
    assert all(clean.corrupted(f) is None for f in frames)
    for f, kind in zip(frames, kinds, strict=True):
        assert np.array_equal(noisy.read_mask(f), clean.read_mask(f))  # labels stay true
        same = np.array_equal(noisy.read_image(f), clean.read_image(f))
        assert same == (kind is None), (f, kind)  # only the corrupted frames change


def test_synthetic_classes_by_shape() -> None:
    """Shape mode: the same random stream (background, paths), one shared paint; the class is the shape type."""
    cfg = DataConfig(height=48, width=64, synthetic_videos=3, synthetic_frames=3, synthetic_corruption=0.0)
    app, shp = open_source(cfg), open_source(replace(cfg, synthetic_classes_by="shape"))
    ia, ma = _pixels(app, "train")
    ib, mb = _pixels(shp, "train")
    both_bg = (ma == 0) & (mb == 0)
    assert both_bg.mean() > 0.3 and np.array_equal(ia[both_bg], ib[both_bg])  # the same background: same stream
    assert not np.array_equal(ia, ib) and len(np.unique(mb)) >= 3
    # one paint for every class: the foreground colours of two classes are alike
    fg = [ib[mb == c].reshape(-1, 3).mean(0) for c in (1, 2, 3) if (mb == c).sum() > 50]
    assert len(fg) >= 2 and np.abs(fg[0] - fg[1]).max() < 25
    with pytest.raises(DataError, match="classes_by"):
        open_source(replace(cfg, synthetic_classes_by="colour"))
    with pytest.raises(DataError, match="4 classes"):
        open_source(replace(cfg, synthetic_classes_by="shape", synthetic_classes=5))


def test_synthetic_default_and_video_frames() -> None:
    assert "synthetic" in FORMATS
    cfg = DataConfig(height=24, width=32, synthetic_videos=2, synthetic_frames=5)
    src = open_source(cfg)
    vf = VideoFrames(src, "synth001", cfg)
    out = list(vf)
    assert len(out) == 5
    img, mask, num = out[3]
    assert img.shape == (3, 24, 32) and mask is not None and mask.shape == (24, 32) and num == 3
    st = split_stats(src, "val")
    assert st["annotated"] == 5 and st["spacing"]["median"] == 1.0
    assert abs(sum(st["class_share"].values()) - 1.0) < 1e-9
