"""Bad input: every failure names its file; unknown labels are counted and warned about once; gaps are reported."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from fixtures_data import make_folder, save_png
from vidnas.config import DataConfig
from vidnas.data import (
    FORMATS,
    ClipDataset,
    DataError,
    FolderSource,
    Registry,
    UnknownNameError,
    open_source,
    split_stats,
)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "data")


def _frame(src: FolderSource, i: int):  # noqa: ANN202
    return src.videos("train")[0].frames[i]


def test_missing_image_and_mask_name_the_file(root: Path) -> None:
    src = FolderSource(root)
    f = _frame(src, 2)
    Path(f.image).unlink()
    with pytest.raises(DataError, match="frame_0002.png") as e:
        src.read_image(f)
    assert "missing" in str(e.value)
    g = _frame(src, 4)
    assert g.mask is not None
    Path(g.mask).unlink()
    with pytest.raises(DataError, match=str(Path(g.mask).name)):
        src.read_mask(g)
    # and through the clip dataset
    ds = ClipDataset(src, "train", DataConfig(height=8, width=8, window=2))
    with pytest.raises(DataError, match="frame_0002.png"):
        ds[1]


def test_unreadable_files_name_the_file(root: Path) -> None:
    src = FolderSource(root)
    f = _frame(src, 0)
    Path(f.image).write_bytes(b"this is not a png at all")
    with pytest.raises(DataError, match=f"cannot read image file .*{Path(f.image).name}"):
        src.read_image(f)
    g = _frame(src, 2)
    assert g.mask is not None
    data = Path(g.mask).read_bytes()
    Path(g.mask).write_bytes(data[: len(data) // 2])  # truncated PNG
    with pytest.raises(DataError, match=Path(g.mask).name):
        src.read_mask(g)
    assert issubclass(DataError, ValueError)


def test_mis_sized_mask(root: Path) -> None:
    src = FolderSource(root)
    f = _frame(src, 4)
    assert f.mask is not None
    save_png(Path(f.mask), np.zeros((5, 7), np.uint8))
    with pytest.raises(DataError, match=r"frame_0004.png is 5x7 .* is 12x16"):
        src.read_mask(f)


def test_unknown_values_counted_and_warned_once(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    for i in (0, 2, 4):  # value 9 is not one of the 3 classes; 255 is the void value
        m = np.zeros((12, 16), np.uint8)
        m[0, : i + 1] = 9
        m[1, :2] = 255
        save_png(root / "clipA" / "masks" / f"frame_{i:04d}.png", m)
    src = FolderSource(root)
    with caplog.at_level(logging.WARNING, logger="vidnas.data"):
        st = split_stats(src, "train")
        for f in src.frames("train"):
            if f.mask is not None:
                mask = src.read_mask(f)
                assert np.all(mask[0, : f.index + 1] == 255) and np.all(mask[1, :2] == 255)
    warnings = [r for r in caplog.records if "unknown label" in r.getMessage()]
    assert len(warnings) == 1
    assert src.unknown_labels() == {9: 1 + 3 + 5}  # not doubled by the second pass
    assert st["unknown_labels"] == {"9": 9}


def test_unannotated_and_empty_videos_are_reported(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    (root / "clipC" / "frames").mkdir(parents=True)  # an empty video folder
    (root / "splits.yaml").write_text("train: [clipA]\nval: [clipB, clipC]\n")
    src = FolderSource(root)
    with caplog.at_level(logging.WARNING, logger="vidnas.data"):
        vids = src.videos("val")
    assert [v.name for v in vids] == ["clipB", "clipC"]  # listed, not silently dropped
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "empty video(s)" in text and "clipC" in text
    assert "without any annotation" in text and "clipB" in text
    st = split_stats(src, "val")
    assert st["unannotated_videos"] == ["clipB"] and st["empty_videos"] == ["clipC"]
    assert st["annotated"] == 0 and len(ClipDataset(src, "val", DataConfig(height=8, width=8))) == 0


def test_root_format_and_split_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for fmt in ("camvid", "davis", "cholecseg8k", "cityscapes", "folder"):
        with pytest.raises(DataError, match=str(missing)):
            open_source(DataConfig(format=fmt, root=str(missing)))
    with pytest.raises(DataError, match="data.root is required"):
        open_source(DataConfig(format="camvid", root=None))
    with pytest.raises(UnknownNameError, match="valid names: .*camvid.*synthetic"):
        open_source(DataConfig(format="kitti"))
    src = open_source(DataConfig(height=16, width=16))
    with pytest.raises(UnknownNameError, match="valid splits: train, val, all"):
        src.videos("tset")
    with pytest.raises(ValueError, match="already registered"):
        FORMATS.register("camvid")(object)  # type: ignore[arg-type]
    reg: Registry[int] = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(KeyError):
        reg["b"]
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match="no video folders"):
        FolderSource(tmp_path / "data")


def test_split_file_naming_a_missing_video(root: Path) -> None:
    (root / "splits.yaml").write_text("train: [clipA, clipZ]\n")
    with pytest.raises(DataError, match=r"splits.yaml.*clipZ"):
        FolderSource(root)
