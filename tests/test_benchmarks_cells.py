"""benchmarks/cells_camvid.sh (the issue-13 evidence) and benchmarks/cells_compare.py, run at a tiny size on the
synthetic data: every step of the script runs for real, only smaller."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ("--set data.format=synthetic --set data.root=null --set data.height=32 --set data.width=48 "
        "--set data.synthetic_videos=3 --set data.synthetic_frames=8 --set model.encoder=mobilenetv2_test "
        "--set model.weights=null --set train.batch_size=4 --set cells.num_layers=2 --set cells.cell_batch_size=8 "
        "--set cells.latency_frames=2 --set cells.latency_warmup=0")


@pytest.mark.slow
def test_cells_camvid_script_at_tiny_size(tmp_path: Path, vidnas_command: str, python_command: str) -> None:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "N": "4", "WORKERS": "0", "TOP_K": "1", "STATIC_EPOCHS": "1",
           "FINAL_CELL_EPOCHS": "1", "FINAL_EPOCHS": "1", "FRAMES": "2", "SIZES": "32x48", "MAX_STEPS": "2",
           "EXTRA": TINY, "VIDNAS": vidnas_command, "PYTHON": python_command,
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run(["bash", str(REPO / "benchmarks" / "cells_camvid.sh")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = tmp_path / "out"
    compare = json.loads((out / "compare.json").read_text())
    assert set(compare) == {"search", "random"} and compare["random"]["candidates_compared"] == 4
    assert json.loads((out / "random" / "search_summary.json").read_text())["sampler"] == "random"
    w0 = json.loads((out / "search_w0" / "search_summary.json").read_text())
    assert w0["reward"]["latency_weight"] == 0.0
    assert (out / "search" / "top" / "cell0" / "model.pt").exists()
    assert (out / "search" / "plots" / "pareto.png").exists()
    rows = {r["name"] for r in json.loads((out / "bench_32x48.json").read_text())}
    assert rows == {"static", "static@ort", "search_cell0", "search_cell0@ort", "search_w0_cell0",
                    "search_w0_cell0@ort"}
    assert "| search_cell0 |" in res.stdout and "| random | 4 |" in res.stdout
    # a second run finds every step done and only prints the tables again
    again = subprocess.run(["bash", str(REPO / "benchmarks" / "cells_camvid.sh")], cwd=REPO, env={**env, "SIZES": ""},
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count(": done") == 5, again.stdout[-2000:] + again.stderr[-2000:]
