"""`vidnas data stats|preview` through the real command (typer CliRunner on vidnas.cli.main.app)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from fixtures_data import make_folder
from vidnas.cli.main import app
from vidnas.data import preview_layout

runner = CliRunner()


def _blocks(output: str) -> dict[str, str]:
    """Split the stats output into {split: text}."""
    parts = re.split(r"^camvid / (\w+)$", output, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_stats_camvid(camvid_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "stats.json"
    res = runner.invoke(app, ["data", "stats", "--format", "camvid", "--root", str(camvid_root), "--json", str(out)])
    assert res.exit_code == 0, res.output
    blocks = _blocks(res.output)
    assert set(blocks) == {"train", "val"}
    assert re.search(r"annotated frames\s+367\b", blocks["train"])
    assert re.search(r"annotated frames\s+101\b", blocks["val"])
    assert re.search(r"videos\s+3\b", blocks["train"])
    assert re.search(r"frame spacing\s+median 30\b", blocks["train"])
    assert re.search(r"frame spacing\s+median 2, min 2, max 2\b", blocks["val"])
    assert "Road" in blocks["train"] and "unknown labels      none" in blocks["train"]
    data = json.loads(out.read_text())
    assert data["splits"]["train"]["annotated"] == 367 and data["splits"]["val"]["annotated"] == 101
    shares = data["splits"]["train"]["class_share"]
    assert abs(sum(shares.values()) - 1.0) < 1e-6 and shares["Road"] > 0.25


def test_stats_one_split_lists_unannotated(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d")
    res = runner.invoke(app, ["data", "stats", "-f", "folder", "-r", str(root), "--split", "val"])
    assert res.exit_code == 0, res.output
    assert re.search(r"unannotated videos\s+clipB", res.output)
    assert "folder / train" not in res.output


def test_preview_writes_png(camvid_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    res = runner.invoke(app, ["data", "preview", "--format", "camvid", "--root", str(camvid_root), "--split", "val",
                              "--out", str(out), "--n", "5", "--tile-width", "120", "--cols", "3"])
    assert res.exit_code == 0, res.output
    img = Image.open(out)
    _, _, w, h = preview_layout(5, 90, 120, 11, cols=3)  # CamVid frames are 360x480: tiles 90x120
    assert img.size == (w, h) and img.mode == "RGB"
    assert (w, h) == (360, 2 * 90 + 6 * 18 + 6)  # 2 rows of tiles; legend: 2 entries per row, 6 rows


def test_preview_synthetic_default(tmp_path: Path) -> None:
    out = tmp_path / "synth.png"
    res = runner.invoke(app, ["data", "preview", "--out", str(out), "--n", "2", "--tile-width", "48",
                              "--set", "data.height=32", "--set", "data.width=48", "--set", "data.synthetic_frames=4"])
    assert res.exit_code == 0, res.output
    assert Image.open(out).size[0] == 96


def test_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    res = runner.invoke(app, ["data", "stats", "--format", "camvid", "--root", str(tmp_path / "nope")])
    assert res.exit_code == 2
    assert "data root not found" in res.output and str(tmp_path / "nope") in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["data", "stats", "--format", "kitti", "--root", str(tmp_path)])
    assert res.exit_code == 2 and "valid names" in res.output and "cityscapes" in res.output
    root = make_folder(tmp_path / "d")
    res = runner.invoke(app, ["data", "stats", "-f", "folder", "-r", str(root), "--split", "tset"])
    assert res.exit_code == 2 and "valid splits" in res.output
