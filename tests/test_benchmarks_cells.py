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
           "FINAL_CELL_EPOCHS": "1", "FINAL_EPOCHS": "1", "FRAMES": "2", "CEILING": "0", "SIZES": "32x48",
           "MAX_STEPS": "2", "PROXY_CHECK": "3",
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
    for run in ("search", "search_w0"):  # the proxy check before each top-k training, its table in the comparison
        check = json.loads((out / run / "proxy_check.json").read_text())
        assert check["n"] == 3 and check["decided_on"] == "meta-val"
    assert compare["search"]["proxy_check"]["n"] == 3 and "proxy_check" not in compare["random"]
    assert not (out / "random" / "proxy_check.json").exists()  # no top-k, no check
    assert "| search | 3 | " in res.stdout and "| search_w0 | 3 | " in res.stdout
    # a second run finds every step done and only prints the tables again; a search finished without its proxy check
    # (as before the check existed) gets the check alone, its top-k cell not trained again
    (out / "search_w0" / "proxy_check.json").unlink()
    trained = (out / "search_w0" / "top" / "cell0" / "model.pt").stat().st_mtime_ns
    again = subprocess.run(["bash", str(REPO / "benchmarks" / "cells_camvid.sh")], cwd=REPO, env={**env, "SIZES": ""},
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count(": done") == 4, again.stdout[-2000:] + again.stderr[-2000:]
    assert "search_w0: 4 candidates" in again.stdout and (out / "search_w0" / "proxy_check.json").exists()
    assert (out / "search_w0" / "top" / "cell0" / "model.pt").stat().st_mtime_ns == trained


def test_cells_truncated_script_at_tiny_size(tmp_path: Path) -> None:
    """benchmarks/cells_truncated.py: the same cell streamed with the whole encoder and truncated, both runtimes."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("cells_truncated", REPO / "benchmarks" / "cells_truncated.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "t.json"
    threads = torch.get_num_threads()
    assert script.main(["--encoder", "mobilenetv2_test", "--height", "32", "--width", "48", "--frames", "3",
                        "--warmup", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = {r["name"]: r for r in data["rows"]}
    assert list(rows) == ["static", "cell_before", "cell_after", "static@ort", "cell_before@ort", "cell_after@ort"]
    assert rows["static"]["fps_ratio"] == rows["static@ort"]["fps_ratio"] == 1.0 and data["threads"] == 1
    assert rows["cell_after"]["encoder_ms"] > 0 and rows["cell_after@ort"]["encoder_ms"] is None
    assert torch.get_num_threads() == threads  # restored
    with pytest.raises(SystemExit):  # never overwrites a file
        script.main(["--json", str(out)])


def test_cells_composed_flops_script_at_tiny_size(tmp_path: Path) -> None:
    """benchmarks/cells_composed_flops.py: per-frame arch2_space points at both depths, static frame vs cell frame."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cells_composed", REPO / "benchmarks" / "cells_composed_flops.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "c.json"
    assert script.main(["--encoder", "mobilenetv2_test", "--height", "32", "--width", "48", "--json", str(out)]) == 0
    rows = {(tuple(r["depths"]), r["decoder"]): r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {(d, n) for d in ((1, 2, 2, 2), (1, 1, 1, 1)) for n in ("arch2", "cheapest")}
    full, shallow = rows[(1, 2, 2, 2), "arch2"], rows[(1, 1, 1, 1), "arch2"]
    assert shallow["encoder_gflops"] < full["encoder_gflops"] and shallow["decoder_share"] > full["decoder_share"]
    assert rows[(1, 2, 2, 2), "cheapest"]["decoder_gflops"] < full["decoder_gflops"]
    assert full["cell_encoder_gflops"] < full["encoder_gflops"]  # the cell stops the encoder after layer3
    with pytest.raises(SystemExit):  # never overwrites a file
        script.main(["--json", str(out)])
