"""`vidnas train` and `vidnas eval` on every data format: CamVid and DAVIS from ../shared/data, CholecSeg8K,
Cityscapes and folder fixtures in their published layouts, and the synthetic default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fixtures_data import make_cholecseg8k, make_cityscapes, make_folder
from vidnas.cli.main import app

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.height=64", "data.width=96", "data.window=2", "train.epochs=1", "train.max_steps_per_epoch=1",
        "train.batch_size=2", "model.decoder_channels=8", "data.synthetic_videos=3", "data.synthetic_frames=4"]


@pytest.fixture
def data_root(request, tmp_path: Path, camvid_small_root: Path, davis_root: Path) -> tuple[str, Path | None, str, int]:
    """(format, root, evaluation split, number of classes) for each format."""
    fmt = request.param
    if fmt == "camvid":
        return fmt, camvid_small_root, "val", 11  # 14 real frames: the layout and labels, not the size
    if fmt == "davis":
        return fmt, davis_root, "val", 2
    if fmt == "cholecseg8k":
        return fmt, make_cholecseg8k(tmp_path / "cholec"), "test", 13
    if fmt == "cityscapes":
        return fmt, make_cityscapes(tmp_path / "city"), "val", 19
    if fmt == "folder":
        return fmt, make_folder(tmp_path / "folder"), "train", 3  # its val video has no masks
    return fmt, None, "val", 4


@pytest.mark.parametrize("data_root", ["camvid", "davis", "cholecseg8k", "cityscapes", "folder", "synthetic"],
                         indirect=True)
def test_train_then_eval_on_every_format(data_root, tmp_path: Path) -> None:
    fmt, root, split, k = data_root
    args = ["--config", str(REPO / "configs" / "tiny.yaml"), "--format", fmt, "-q"]
    if root is not None:
        args += ["--root", str(root)]
    sets = [s for t in TINY for s in ("--set", t)] + ["--set", f"data.val_split={split}"]
    run = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(app, ["train", *args, *sets, "--out", str(run)])
    assert res.exit_code == 0, res.output
    assert (run / "checkpoints" / "best.pt").exists(), res.output
    out = tmp_path / "eval"
    res = runner.invoke(app, ["eval", str(run / "checkpoints" / "best.pt"), "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "eval.json").read_text())
    assert len(result["clips"]["per_class_iou"]) == k
    assert result["stream"]["annotated"] >= 1
    assert 0.0 <= result["stream"]["miou"] <= 1.0
