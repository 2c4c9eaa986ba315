"""`vidnas export --precision int8`: QDQ graphs from onnxruntime static quantisation, calibration on the model's
training frames, the accuracy check in export.json, and onnxruntime streaming of the result (tiny real models)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from test_export import shared_tiny_checkpoint
from test_export_frame_models import CFG, EVERYTHING, HW, _cell_model
from vidnas.cli.main import app
from vidnas.config import load_config
from vidnas.export import FrameOrtStreamer, export_frame_onnx, load_runner, quantize_export
from vidnas.search.cells.static import train_static

TINY_ARCH2 = ["data.height=32", "data.width=48", "data.synthetic_videos=3", "data.synthetic_frames=8",
              "model.encoder=mobilenetv2_test", "train.batch_size=4"]


@pytest.fixture(scope="module")
def arch2_ckpt(tmp_path_factory) -> Path:
    """A tiny arch2 network trained for two steps on synthetic videos (train and val splits)."""
    return train_static(load_config(None, TINY_ARCH2), tmp_path_factory.mktemp("a2"), epochs=1, max_steps_per_epoch=2)


def _ops(path: Path) -> dict[str, int]:
    ops: dict[str, int] = {}
    for nd in onnx.load(str(path)).graph.node:
        ops[nd.op_type] = ops.get(nd.op_type, 0) + 1
    return ops


def test_int8_arch2_export_is_qdq_runs_and_records_accuracy(arch2_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "e"
    res = CliRunner().invoke(app, ["export", str(arch2_ckpt), "--out", str(out), "--precision", "int8",
                                   "--calib-frames", "6", "--accuracy-frames", "10", "--max-miou-drop", "-1"])
    assert res.exit_code == 0, res.output
    assert "int8 accuracy over 8 'val' frames: mIoU" in res.output  # the val split's one video has 8 frames
    assert "parity over 8 streamed frames" in res.output  # the fp32 graph is checked before it is quantised
    assert "--precision fp32" in res.output  # the threshold -1 is always crossed: the warning names the flag
    ops = _ops(out / "key.onnx")
    assert ops["QuantizeLinear"] > 10 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    meta = json.loads((out / "export.json").read_text())
    q, acc = meta["quantization"], meta["accuracy"]
    assert meta["precision"] == "int8" and q["format"] == "QDQ" and q["int8_graphs"] == ["key.onnx"]
    assert q["calibration"] == {"method": "MinMax", "frames": 6, "seed": 0, "split": "train", "format": "synthetic",
                                "root": None}
    stem, head = q["float_nodes"]["key.onnx"]
    assert "stem" in stem and "classifier" in head
    graph = onnx.load(str(out / "key.onnx")).graph
    stem_node = next(nd for nd in graph.node if nd.name == stem)
    assert stem_node.input[0] == "frame"  # kept in float: it reads the frame itself, not a DequantizeLinear output
    assert acc["frames"] == 8 and 0 <= acc["miou_int8"] <= 1 and 0 <= acc["pixel_agreement"] <= 1
    assert acc["miou_drop_points"] == pytest.approx(100 * (acc["miou_fp32"] - acc["miou_int8"]))
    runner = load_runner(None, runtime="onnxruntime", export_dir=out)  # what predict and the accuracy check run
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 48), dtype=np.float32)
    assert runner.push(x).shape == (1, 4, 32, 48)


def test_int8_keep_float_none_and_calib_folder(arch2_ckpt: Path, tmp_path: Path) -> None:
    """--keep-float none quantises the stem and the head too; --calib calibrates on the user's own frames."""
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):  # 7 frames of another size than the model's: resized as the model reads them
        Image.fromarray(rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)).save(frames / f"f{i}.png")
    out = tmp_path / "e"
    res = CliRunner().invoke(app, ["export", str(arch2_ckpt), "--out", str(out), "--precision", "int8",
                                   "--calib", str(frames), "--calib-frames", "3", "--keep-float", "none",
                                   "--accuracy-frames", "4", "--parity-frames", "0"])
    assert res.exit_code == 0, res.output
    assert f"calibrated on 3 frames of {frames} (spread evenly)" in res.output
    assert "kept in float: nothing" in res.output
    q = json.loads((out / "export.json").read_text())["quantization"]
    assert q["calibration"] == {"method": "MinMax", "frames": 3, "path": str(frames), "spread": "evenly"}
    assert q["float_nodes"]["key.onnx"] == [] and q["keep_float"] == []
    assert q["float_nodes_rule"] == "every Conv quantised"
    graph = onnx.load(str(out / "key.onnx")).graph
    first_conv = next(nd for nd in graph.node if nd.op_type == "Conv")
    assert first_conv.input[0] != "frame"  # the stem reads a DequantizeLinear output now
    # bad values: one line, before any work
    for args, msg in ((["--keep-float", "stem,tail"], "--keep-float 'stem,tail': give 'none' or a comma-separated "
                                                        "list of stem, head"),
                      (["--calib", str(tmp_path / "nowhere")], "input not found"),
                      (["--calib", str(frames), "--calib-frames", "9"], "7 frame(s), 9 calibration frames asked")):
        bad = CliRunner().invoke(app, ["export", str(arch2_ckpt), "--out", str(tmp_path / "b"), "--precision", "int8",
                                       "--parity-frames", "0", *args])
        assert bad.exit_code != 0 and msg in bad.output, bad.output
        assert not (tmp_path / "b").exists()  # refused before the export
    fp32 = CliRunner().invoke(app, ["export", str(arch2_ckpt), "--out", str(tmp_path / "c"), "--calib", str(frames)])
    assert fp32.exit_code != 0 and "add --precision int8" in fp32.output


def test_int8_window_model_quantises_the_encoder_only(tmp_path_factory, tmp_path: Path) -> None:
    ckpt = shared_tiny_checkpoint(tmp_path_factory)
    out = tmp_path / "w"
    res = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(out), "--precision", "int8", "--calib-frames",
                                   "4", "--accuracy-frames", "6", "--parity-frames", "0"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "export.json").read_text())
    assert meta["quantization"]["int8_graphs"] == ["encoder.onnx"]
    assert meta["quantization"]["fp32_graphs"] == ["decoder.onnx", "decoder_init.onnx", "decoder_step.onnx"]
    assert "fp32 graphs (they take features): decoder.onnx, decoder_init.onnx, decoder_step.onnx" in res.output
    assert _ops(out / "encoder.onnx")["QuantizeLinear"] > 0
    assert "QuantizeLinear" not in _ops(out / "decoder_step.onnx")
    assert meta["accuracy"]["frames"] == 4  # the val split of configs/tiny.yaml's synthetic data: 4 frames


def test_bad_precision_is_refused_before_any_work(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o"),
                                   "--precision", "int4"])
    assert res.exit_code == 2
    assert res.output.strip().splitlines()[-1] == "error: unknown --precision 'int4'; valid: fp32, int8, bf16"
    assert not (tmp_path / "o").exists()


def test_int8_refuses_more_calibration_frames_than_the_training_split_before_exporting(arch2_ckpt: Path,
                                                                                      tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["export", str(arch2_ckpt), "--out", str(tmp_path / "o"), "--precision", "int8",
                                   "--calib-frames", "1000"])
    assert res.exit_code == 2
    assert "1000 calibration frames asked, the 'train' split of synthetic has 16: lower --calib-frames" in res.output
    assert not (tmp_path / "o" / "key.onnx").exists()


def test_bench_times_fp32_and_int8_exports_side_by_side(arch2_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    res = CliRunner().invoke(app, ["bench", "--checkpoint", f"a2={arch2_ckpt}", "--runtime", "onnxruntime",
                                   "--precision", "fp32,int8", "--calib-frames", "4", "--frames", "2", "--warmup", "0",
                                   "--threads", "1", "--paper-only", "--ceiling", "0", "--no-flops", "--ref", "a2",
                                   "--json", str(out), "-q"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"a2", "a2@int8"}
    assert rows["a2"]["extra"]["precision"] == "fp32" and rows["a2@int8"]["extra"]["precision"] == "int8"
    assert rows["a2@int8"]["extra"]["runtime"] == "onnxruntime" and rows["a2@int8"]["fps"] > 0


def test_bench_refuses_int8_without_onnxruntime_rows(arch2_ckpt: Path) -> None:
    res = CliRunner().invoke(app, ["bench", "--checkpoint", str(arch2_ckpt), "--precision", "int8"])
    assert res.exit_code == 2 and "--runtime onnxruntime, openvino or both" in res.output
    res = CliRunner().invoke(app, ["bench", "--checkpoint", str(arch2_ckpt), "--precision", "fp16"])
    assert res.exit_code == 2 and "--precision 'fp16': give each of fp32, int8, bf16 at most once" in res.output


def test_int8_cell_export_quantises_the_key_graph_and_streams_with_fp32_cell(tmp_path: Path) -> None:
    model = _cell_model(EVERYTHING)
    export_frame_onnx(model, tmp_path, img_size=HW)
    q = quantize_export(tmp_path, load_config(None, CFG), calib_frames=3)
    assert q["int8_graphs"] == ["key.onnx"] and q["fp32_graphs"] == ["cell.onnx"]
    assert "QuantizeLinear" in _ops(tmp_path / "key.onnx") and "QuantizeLinear" not in _ops(tmp_path / "cell.onnx")
    stream = FrameOrtStreamer(tmp_path, key_interval=2)  # key frames INT8, the cell steps fp32 on their state
    x = np.random.default_rng(0).standard_normal((1, 3, *HW), dtype=np.float32)
    outs = [stream.push(x) for _ in range(3)]
    assert all(o.shape == (1, 5, *HW) and np.isfinite(o).all() for o in outs)
    assert np.array_equal(outs[0], outs[2])  # frames 0 and 2 are key frames on the same input


@pytest.mark.slow
def test_deploy_camvid_script_smoke(arch2_ckpt: Path, tmp_path: Path, vidnas_command, python_command) -> None:
    """benchmarks/deploy_camvid.sh on the tiny arch2: the interleaved --runtime all bench, the two --keep-float
    exports, and the table with the verdict (toy size: the figures mean nothing, the plumbing is checked)."""
    import os
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "SMOKE": "1", "VIDNAS": vidnas_command, "PYTHON": python_command,
           "ACC_FRAMES": "4", "CALIB": "4"}
    out = tmp_path / "dep"
    proc = subprocess.run(["bash", str(repo / "benchmarks" / "deploy_camvid.sh"), str(arch2_ckpt), str(out)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=repo)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    names = [r["name"] for r in s["rows"]]
    assert names[0] == "model" and "model@ort@int8" in names and s["threads"] == [1]
    assert [k["keep_float"] for k in s["keep_float"]] == [["stem", "head"], []]
    assert all(k["frames"] == 4 for k in s["keep_float"])
    assert "issue 28's goal" in proc.stdout and s["goal"]["fastest"] in names
    bench = {r["name"]: r["extra"] for r in json.loads((out / "bench.json").read_text())}
    for row in s["rows"]:  # points lost = minus the bench's delta, already in points
        delta = bench[row["name"]].get("miou_delta")
        assert row["drop_points"] == (None if delta is None else -delta)
        if delta is not None:
            assert delta == pytest.approx(100 * (bench[row["name"]]["miou"] - bench["model"]["miou"]))


def test_bf16_export_is_the_fp32_graph_with_openvino_s_accuracy_check(arch2_ckpt: Path, tmp_path: Path) -> None:
    """--precision bf16: the fp32 key graph, unchanged, marked bf16 and checked in OpenVINO bf16 against the fp32
    model; refused in one line where OpenVINO or a bf16 CPU is missing."""
    pytest.importorskip("openvino")
    from vidnas.export.ort_streamers import openvino_bf16

    out = tmp_path / "b"
    res = CliRunner().invoke(app, ["export", str(arch2_ckpt), "--out", str(out), "--precision", "bf16",
                                   "--accuracy-frames", "6", "--parity-frames", "2"])
    if not openvino_bf16():
        assert res.exit_code != 0 and "OpenVINO reports no bf16 on this CPU" in res.output
        assert not out.exists()
        return
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "export.json").read_text())
    assert meta["precision"] == "bf16" and meta["bf16"]["runtime"] == "openvino"
    acc = meta["accuracy"]
    assert acc["precision"] == "bf16" and acc["frames"] == 6 and 0 <= acc["miou_bf16"] <= 1
    assert acc["pixel_agreement"] > 0.9  # bf16 rounding moves few argmaxes
    assert "QuantizeLinear" not in _ops(out / "key.onnx")  # the fp32 graph as exported
    assert "bf16 accuracy over 6 'val' frames: mIoU" in res.output and "--amp bf16" in res.output
