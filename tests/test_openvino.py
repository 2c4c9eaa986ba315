"""OpenVINO as a second runtime of the ONNX exports (``--runtime openvino``) and `vidnas bench --runtime all`.

Tiny real models: a causal ``swin_test`` + SP-TCN window model at 64x96 (window pair and incremental step graphs;
dilations up to 8 over a window of 3, so one step state holds only its zero entry) and an arch2 network
(``mobilenetv2_test``, key graph), random weights for the parity checks, two training steps where the CLI needs a
checkpoint. The whole file is skipped where the optional ``openvino`` package is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fixtures_data import save_png
from test_bench_cli import FAST, TINY_SET
from test_export import shared_tiny_checkpoint
from test_export_int8 import TINY_ARCH2
from test_incremental import _randomise_bn
from vidnas.bench import cpu_bf16_flags
from vidnas.cli.main import app
from vidnas.config import load_config
from vidnas.export import (
    FrameOrtStreamer,
    OrtStepStreamer,
    OrtStreamer,
    export_frame_onnx,
    export_onnx,
    export_step_graphs,
    load_runner,
    quantize_export,
)
from vidnas.export.ort_streamers import openvino_bf16
from vidnas.models import arch_from_config, build_model
from vidnas.models.cells import build_static_segmenter
from vidnas.search.cells.static import train_static

pytest.importorskip("openvino")

TOL = 1e-4  # OpenVINO fp32 against onnxruntime fp32, largest |logit difference|
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """A causal window-3 export with its step graphs, and an arch2 key-graph export (random weights)."""
    root = tmp_path_factory.mktemp("ov")
    cfg = load_config(REPO / "configs" / "tiny.yaml", ["model.decoder_dilations=1,2,4,8"])
    torch.manual_seed(0)
    window = build_model(cfg, arch_from_config(cfg), num_classes=4).eval()
    _randomise_bn(window)
    export_onnx(window, root / "window", img_size=(64, 96))
    export_step_graphs(window, root / "window")
    torch.manual_seed(0)
    static = build_static_segmenter(load_config(None, TINY_ARCH2), num_classes=4).eval()
    export_frame_onnx(static, root / "arch2", img_size=(32, 48))
    return {"window": root / "window", "arch2": root / "arch2"}


@pytest.fixture(scope="module")
def arch2_ckpt(tmp_path_factory) -> Path:
    """A tiny arch2 network trained for two steps on synthetic videos (train and val splits)."""
    return train_static(load_config(None, TINY_ARCH2), tmp_path_factory.mktemp("a2"), epochs=1, max_steps_per_epoch=2)


@pytest.mark.parametrize(("cls", "kind"), [(OrtStreamer, "window"), (OrtStepStreamer, "window"),
                                           (FrameOrtStreamer, "arch2")])
def test_openvino_fp32_equals_onnxruntime(exports: dict[str, Path], cls: type, kind: str) -> None:
    ort, ov = cls(exports[kind]), cls(exports[kind], runtime="openvino", intra_op_threads=1)
    assert ov.runtime == "openvino" and ov.providers == ["openvino CPU (fp32)"] and ort.runtime == "onnxruntime"
    rng = np.random.default_rng(0)
    diff, n = 0.0, 0
    for _ in range(9):  # past the window: the ring buffer / the step state wraps
        x = rng.standard_normal((1, 3, *ort.input_size), dtype=np.float32)
        a, b = ort.push(x), ov.push(x)
        assert (a is None) == (b is None)
        if a is not None:
            assert a.shape == b.shape
            diff, n = max(diff, float(np.abs(a - b).max())), n + 1
    assert n == 9 and diff <= TOL, diff


@pytest.mark.skipif(not cpu_bf16_flags(), reason="no native bf16 on this CPU")
def test_openvino_bf16_runs_the_fp32_export_at_bf16(exports: dict[str, Path]) -> None:
    assert openvino_bf16()  # the CPU flags and OpenVINO's own capabilities agree
    fp32 = FrameOrtStreamer(exports["arch2"], runtime="openvino")
    bf16 = FrameOrtStreamer(exports["arch2"], runtime="openvino", inference_precision="bf16")
    assert bf16.providers == ["openvino CPU (bf16)"]
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 48), dtype=np.float32)
    a, b = fp32.push(x), bf16.push(x)
    assert np.isfinite(b).all() and 0 < np.abs(a - b).max() < 0.5 * np.abs(a).max()  # bf16 rounding, not garbage
    runner = load_runner(None, runtime="openvino", export_dir=exports["arch2"], amp="bf16")  # predict --amp bf16
    assert runner.providers == ["openvino CPU (bf16)"] and np.array_equal(runner.push(x), b)


def test_openvino_options_are_refused_in_one_line(exports: dict[str, Path]) -> None:
    from vidnas.export import DeployError

    with pytest.raises(DeployError, match="bf16 inference is OpenVINO's"):
        OrtStreamer(exports["window"], inference_precision="bf16")
    with pytest.raises(DeployError, match="the openvino runtime takes neither"):
        OrtStreamer(exports["window"], runtime="openvino", providers=["CPUExecutionProvider"])
    with pytest.raises(DeployError, match="--amp fp16: the openvino runtime runs fp32 or bf16"):
        load_runner(None, runtime="openvino", export_dir=exports["window"], amp="fp16")


def _frames(folder: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        save_png(folder / f"{i:03d}.png", rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
    return folder


def _masks(out: Path) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(p)) for p in sorted((out / "masks").glob("*.png"))]


def test_predict_openvino_on_a_causal_model_uses_the_step_graphs(tmp_path_factory, tmp_path: Path) -> None:
    ckpt = shared_tiny_checkpoint(tmp_path_factory)
    frames = _frames(tmp_path / "frames")
    outs = {}
    for runtime in ("torch", "openvino"):
        res = CliRunner().invoke(app, ["predict", str(frames), "--checkpoint", str(ckpt), "--out",
                                       str(tmp_path / runtime), "--runtime", runtime, "--no-overlay", "--quiet",
                                       "--threads", "1"])
        assert res.exit_code == 0, res.output
        summary = json.loads((tmp_path / runtime / "summary.json").read_text())
        assert summary["runtime"] == runtime and summary["protocol"] == "incremental"
        outs[runtime] = _masks(tmp_path / runtime)
    assert (tmp_path / "openvino" / "onnx" / "decoder_step.onnx").is_file() and len(outs["openvino"]) == 4
    assert np.mean([np.mean(a == b) for a, b in zip(outs["torch"], outs["openvino"], strict=True)]) > 0.999


def test_predict_openvino_runs_an_int8_arch2_export(arch2_ckpt: Path, tmp_path: Path) -> None:
    from vidnas.models import load_model

    loaded = load_model(arch2_ckpt)
    export_frame_onnx(loaded.model, tmp_path / "e", img_size=loaded.img_size)
    quantize_export(tmp_path / "e", loaded.cfg, calib_frames=4)  # onnxruntime's QDQ graph, compiled by OpenVINO
    res = CliRunner().invoke(app, ["predict", str(_frames(tmp_path / "frames")), "--onnx", str(tmp_path / "e"),
                                   "--out", str(tmp_path / "p"), "--runtime", "openvino", "--no-overlay", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "runtime openvino (frame model)" in res.output and len(_masks(tmp_path / "p")) == 4


def test_bench_openvino_times_its_precisions_side_by_side(arch2_ckpt: Path, tmp_path: Path) -> None:
    precisions = ["fp32", *(["bf16"] if openvino_bf16() else [])]  # int8: the next test
    out = tmp_path / "rows.json"
    res = CliRunner().invoke(app, ["bench", "--checkpoint", f"a2={arch2_ckpt}", "--runtime", "openvino",
                                   "--precision", ",".join(precisions), "--calib-frames", "4", "--frames", "2",
                                   "--warmup", "0", "--threads", "1", "--ceiling", "0", "--no-flops", "--json",
                                   str(out), "-q"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r["extra"] for r in json.loads(out.read_text())}
    assert {n: e["precision"] for n, e in rows.items()} == {"a2" if p == "fp32" else f"a2@{p}": p for p in precisions}
    assert all(e["runtime"] == "openvino" and "1 inference thread(s)" in e["ov_options"] for e in rows.values())


def test_bench_openvino_times_a_causal_model_in_both_protocols(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    res = CliRunner().invoke(app, ["bench", *TINY_SET, *FAST, "--runtime", "openvino", "--threads", "1",
                                   "--json", str(out)])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(out.read_text())
    assert row["name"] == "config" and row["extra"]["runtime"] == "openvino"
    assert row["fps"] > 0 and row["extra"]["inc_fps"] > 0  # the window pair and the step graphs, in OpenVINO


def test_bench_runtime_all_lists_every_row_available_here(arch2_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    res = CliRunner().invoke(app, ["bench", "--checkpoint", f"a2={arch2_ckpt}", "--runtime", "all",
                                   "--calib-frames", "4", "--accuracy-frames", "6", "--frames", "2", "--warmup", "0",
                                   "--threads", "1", "--ceiling", "0", "--no-flops", "--json", str(out), "-q"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(out.read_text())}
    want = {"a2", "a2@ort", "a2@ort@int8", "a2@ov", "a2@ov@int8"} | ({"a2@bf16"} if cpu_bf16_flags() else set()) \
        | ({"a2@ov@bf16"} if openvino_bf16() else set())
    assert set(rows) == want, res.output
    ref = rows["a2"]["extra"]
    assert ref["runtime"] == "torch" and ref["x_torch"] == 1.0 and ref["left_out"] == []
    assert ref["agreement_source"] == "synthetic:val" and 0 <= ref["miou"] <= 1  # labelled: mIoU and its delta
    for name in want - {"a2"}:
        e = rows[name]["extra"]
        assert e["x_torch"] == pytest.approx(rows[name]["fps"] / rows["a2"]["fps"])
        assert e["agreement_frames"] == 6 and 0 < e["pixel_agreement"] <= 1
        assert e["miou_delta"] == pytest.approx(100 * (e["miou"] - ref["miou"]))
    assert rows["a2@ov"]["extra"]["pixel_agreement"] > 0.999  # fp32 in another runtime: the same masks
    head = res.output.index("CPU flags: bf16")  # the CPU, its flags and the threads above the deployment table
    assert res.output.index("1 torch threads") < head < res.output.index("pixel_agreement  agreement_miou")
