"""`vidnas bench`, `vidnas latency`, the ST-NAS protocol and benchmarks/table1.py on tiny real models.

No timing thresholds anywhere (the machine is noisy): only the structure of what is measured and reported.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from typer.testing import CliRunner

from vidnas.bench import BenchRow, count_flops
from vidnas.bench.protocol import (
    component_flops,
    component_latency,
    flops_per_frame,
    measure_protocol,
    protocol_rows,
    stnas_frame_latency,
)
from vidnas.checkpoint import save_checkpoint
from vidnas.cli.main import app
from vidnas.config import Config, config_to_dict, load_config
from vidnas.models import PAPER_ROWS, Arch, VideoSegmenter, build_model

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
HW = (64, 96)
TINY_SET = [
    "--set", "model.encoder=swin_test", "--set", "model.decoder_channels=8", "--set", "model.decoder_dilations=1,2",
    "--set", "data.window=3", "--height", "64", "--width", "96",
]  # fmt: skip
FAST = ["--frames", "2", "--warmup", "1", "--quiet", "--ceiling", "64"]  # a small roofline matmul: fast tests
ROW_KEYS = {"name", "params", "gflops", "latency_ms", "fps", "extra"}


def tiny_arch(**kw: object) -> Arch:
    base = dict(encoder="swin_test", channels=8, dilations=(1, 2), window=3, name="tiny")
    base.update(kw)
    return Arch(**base)  # type: ignore[arg-type]


def tiny_model(**kw: object) -> VideoSegmenter:
    arch = tiny_arch(**kw)
    cfg = Config()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, height=HW[0], width=HW[1], window=arch.window))
    return build_model(cfg, arch, num_classes=4).eval()


# ---------------------------------------------------------------------------------------------------------- protocol


@pytest.mark.parametrize("causal", [True, False])
def test_protocol_times_one_encode_and_one_window_decode_per_frame(causal: bool) -> None:
    model = tiny_model(window=5, causal=causal)
    events: list[tuple[str, tuple[int, ...]]] = []
    model.encoder.register_forward_hook(lambda m, a, o: events.append(("enc", tuple(a[0].shape))))
    model.decoder.register_forward_hook(lambda m, a, o: events.append(("dec", tuple(a[0].shape))))
    warmup, frames = 2, 3
    stats = stnas_frame_latency(model, img_size=HW, window=5, warmup=warmup, frames=frames)
    assert stats.n == frames
    # the streamer is primed until a push decodes (centred windows lag w - 1 - w // 2 frames), then every push
    # (warm-up and timed) is exactly: encoder on 1 frame, decoder on the full window of w cached features
    lag = 0 if causal else 5 - 1 - 5 // 2
    pushes = warmup + frames
    encs = [s for k, s in events if k == "enc"]
    decs = [s for k, s in events if k == "dec"]
    assert len(encs) == lag + 1 + pushes
    assert len(decs) == 1 + pushes
    steady = events[-2 * pushes :]
    assert [k for k, _ in steady] == ["enc", "dec"] * pushes
    assert all(s == (1, 3, *HW) for k, s in steady if k == "enc")
    c = model.encoder.out_channels[-1]
    assert all(s[:3] == (1, c, 5) for k, s in steady if k == "dec")
    assert model.training is False  # mode restored (it was eval)


def test_component_latency_splits_the_same_pushes_and_restores_mode() -> None:
    model = tiny_model().train()
    res = component_latency(model, img_size=HW, warmup=1, frames=2)
    assert res.frame.n == res.encoder.n == res.decoder.n == 2
    assert res.encoder.mean_ms > 0 and res.decoder.mean_ms > 0
    assert res.other_ms == pytest.approx(res.frame.mean_ms - res.encoder.mean_ms - res.decoder.mean_ms)
    assert model.training  # put back in training mode after measuring in eval mode
    hooks = [model.encoder._forward_hooks, model.encoder._forward_pre_hooks, model.decoder._forward_hooks]
    assert all(len(h) == 0 for h in hooks)  # probes removed their hooks


def test_protocol_window_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="window 7 differs"):
        stnas_frame_latency(tiny_model(), img_size=HW, window=7, warmup=0, frames=1)


def test_flops_per_frame_equals_clip_forward_minus_extra_encodes() -> None:
    # independent check: a clip forward over w frames = w encoder passes + one decode of the window
    model = tiny_model(window=3)
    parts = component_flops(model, HW)
    assert parts["total"] == parts["encoder"] + parts["decoder"] == flops_per_frame(model, HW)
    clip = count_flops(model, torch.zeros(1, 3, 3, *HW))
    assert parts["encoder"] == count_flops(model.encode, torch.zeros(1, 3, *HW))
    assert parts["total"] == clip - 2 * parts["encoder"]


def test_both_protocols_one_window_decode_and_one_step_per_round_with_roofline() -> None:
    causal, centred = tiny_model(window=5), tiny_model(window=5, causal=False)
    events: list[str] = []
    causal.decoder.register_forward_hook(lambda *_: events.append("window"))
    real_stream = causal.stream

    def counting_stream(*args: object, **kw: object):  # count the incremental decoder's steps
        streamer = real_stream(*args, **kw)
        if getattr(streamer, "protocol", "") == "incremental":
            streamer.decoder_module.register_forward_hook(lambda *_: events.append("step"))
        return streamer

    causal.stream = counting_stream  # type: ignore[method-assign]
    protocol_rows({"causal": causal}, img_size=HW, warmup=0, frames=3, incremental=True, flops=False)
    # 1 priming push each, then 3 rounds: every round one window decode (paper) and one step (incremental)
    assert events.count("window") == events.count("step") == 4
    rows = protocol_rows({"causal": causal, "centred": centred}, img_size=HW, warmup=0, frames=2,
                         incremental=True, ceiling=32)
    by = {r.name: r for r in rows}
    c, z = by["causal"].extra, by["centred"].extra
    assert c["inc_latency_ms"] > 0 and c["inc_speedup"] == pytest.approx(by["causal"].latency_ms / c["inc_latency_ms"])
    assert 0 < c["inc_gflops"] < by["causal"].gflops  # one step instead of the 5-frame window
    assert z["inc_latency_ms"] is None and z["inc_gflops"] is None  # centred: no incremental decode
    # roofline: achieved GFLOP/s over the matmul ceiling measured in the same rounds
    assert c["ceiling_size"] == 32 and c["ceiling_gflop_s"] > 0
    assert c["gflop_s"] == pytest.approx(by["causal"].gflops / (by["causal"].latency_ms / 1e3))
    assert c["roofline"] == pytest.approx(c["gflop_s"] / c["ceiling_gflop_s"])
    assert c["inc_roofline"] == pytest.approx(c["inc_gflop_s"] / c["ceiling_gflop_s"])


def test_measure_protocol_interleaves_several_models() -> None:
    models = {"a": tiny_model(), "b": tiny_model(full_channels=True)}
    calls: list[str] = []
    for name, m in models.items():
        m.encoder.register_forward_hook(lambda *_, name=name: calls.append(name))
    ticks: list[int] = []
    res = measure_protocol(models, img_size=HW, warmup=0, frames=3, progress=lambda: ticks.append(1))
    assert list(res) == ["a", "b"] and all(r.frame.n == 3 for r in res.values())
    assert len(ticks) == 6
    # after one priming push each, rounds rotate: a b, b a, a b
    assert calls[2:] == ["a", "b", "b", "a", "a", "b"]


# ---------------------------------------------------------------------------------------------------------- bench


def test_bench_config_model_prints_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    res = runner.invoke(app, ["bench", *TINY_SET, *FAST, "--json", str(out)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split()[:2] == ["name", "window"] and "fps" in lines[0]
    assert lines[2].split()[0] == "config"
    assert any(line.startswith("device:") for line in lines)
    assert any(line.startswith("protocol [ST-NAS") for line in lines)
    rows = json.loads(out.read_text())
    assert len(rows) == 1
    row = rows[0]
    assert ROW_KEYS <= set(row)
    assert row["params"] > 0 and row["gflops"] > 0 and row["latency_ms"] > 0
    assert row["fps"] == pytest.approx(1000.0 / row["latency_ms"])
    extra = row["extra"]
    assert {"encoder_ms", "decoder_ms", "median_ms", "window", "device", "runtime", "source"} <= set(extra)
    assert extra["window"] == 3 and (extra["height"], extra["width"]) == HW and extra["frames"] == 2


def test_bench_two_sources_in_one_run_with_ratio(tmp_path: Path) -> None:
    arch_path = tiny_arch(name="from_arch").save(tmp_path / "arch.json")
    # a checkpoint as `vidnas train` writes it (model weights, config, arch, classes)
    cfg = load_config("tiny", ["data.height=64", "data.width=96", "model.decoder_dilations=1,2"])
    ck_arch = tiny_arch(full_channels=True, name="trained")
    model = build_model(cfg, ck_arch, num_classes=5)
    ckpt = save_checkpoint(
        tmp_path / "run" / "checkpoints" / "best.pt",
        {"model": model.state_dict(), "config": config_to_dict(cfg), "arch": ck_arch.to_dict(), "num_classes": 5},
    )
    out = tmp_path / "rows.json"
    args = ["bench", "--arch", f"base={arch_path}", "--checkpoint", str(ckpt), *FAST, "--ref", "base"]
    res = runner.invoke(app, [*args, "--height", "64", "--width", "96", "--json", str(out), "--no-flops"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    # both protocols' ratios are to the reference's paper-protocol FPS (issue 14: was one "fps / base" column)
    assert lines[0].split()[-2:] == ["fps_ratio", "inc_fps_ratio"]
    # rows come in source-group order: checkpoints, arch files, paper rows
    assert lines[2].split()[0] == "run"  # named after its run directory
    assert lines[3].split()[0] == "base" and lines[3].split()[-2] == "1.00"
    assert "paper-protocol FPS of base" in res.stdout
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == ["run", "base"]
    assert rows[1]["extra"]["fps_ratio"] == pytest.approx(1.0)
    base_fps = rows[1]["fps"]
    for r in rows:  # both are causal window models: the incremental protocol was timed for each
        assert r["extra"]["inc_latency_ms"] > 0 and r["extra"]["inc_decoder_ms"] > 0
        assert r["extra"]["inc_fps_ratio"] == pytest.approx(r["extra"]["inc_fps"] / base_fps)
    assert rows[0]["extra"]["arch"] == "trained"
    assert rows[0]["gflops"] is None  # --no-flops
    assert rows[0]["extra"]["num_classes"] == 5 and rows[0]["extra"]["source"].startswith("checkpoint:")
    assert rows[1]["extra"]["num_classes"] == 13


def test_bench_window_override_and_duplicate_names(tmp_path: Path) -> None:
    arch_path = tiny_arch(name="same").save(tmp_path / "arch.json")
    out = tmp_path / "rows.json"
    args = ["bench", "--arch", str(arch_path), "--arch", str(arch_path), "--window", "2", *FAST, "--no-flops"]
    res = runner.invoke(app, [*args, "--height", "64", "--width", "96", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == ["same", "same-2"]
    assert all(r["extra"]["window"] == 2 for r in rows)


def test_bench_paper_row_at_reduced_size(tmp_path: Path) -> None:
    # a real Swin-T row (window 1, per-frame head) built at 64x96 so it runs in a second
    out = tmp_path / "rows.json"
    args = ["bench", "--row", "swin_t", "--height", "64", "--width", "96", *FAST, "--no-flops", "--json", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    (row,) = json.loads(out.read_text())
    assert row["name"] == "swin_t" and row["extra"]["window"] == 1 and row["extra"]["source"] == "row:swin_t"
    assert row["params"] > 20_000_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--row", "nope"], "valid rows: all, swin_b"),
        (["--ref", "missing"], "names no row"),
        (["--height", "64"], "together"),
        (["--frames", "0"], "--frames >= 1"),
        (["--arch", "/does/not/exist.json"], "not found"),
        (["--runtime", "tensorrt"], "unknown --runtime"),
        (["--amp", "bf8"], "valid modes are none, bf16, fp16"),
        (["--compare", "amp", "--runtime", "both"], "needs --runtime torch"),
        (["--compare", "compile", "--runtime", "onnxruntime"], "needs --runtime torch"),
        (["--compare", "compile", "--compile-backend", "tvm"], "valid backends are inductor, aot_eager"),
        (["--batch", "0"], "--batch 0: must be >= 1"),
        (["--batch", "2", "--runtime", "both"], "onnxruntime streams batch 1"),
        (["--runtime", "all", "--precision", "int8"], "leave out --precision, --compare and --amp"),
        (["--runtime", "all", "--compare", "threads"], "leave out --precision, --compare and --amp"),
        (["--precision", "bf16", "--runtime", "onnxruntime"], "bf16 is OpenVINO's inference precision"),
    ],
)
def test_bench_errors_exit_2(args: list[str], message: str) -> None:
    res = runner.invoke(app, ["bench", *TINY_SET[:-4], *FAST, *args])
    assert res.exit_code == 2, res.output
    assert message in res.output


def test_bench_both_runtimes_interleaved_in_one_run(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    out = tmp_path / "rows.json"
    res = runner.invoke(app, ["bench", *TINY_SET, *FAST, "--runtime", "both", "--ref", "config", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == ["config", "config@ort"]
    assert [r["extra"]["runtime"] for r in rows] == ["torch", "onnxruntime"]
    # the ONNX row reports the params and FLOPs of the model it was exported from
    assert rows[1]["params"] == rows[0]["params"] and rows[1]["gflops"] == rows[0]["gflops"]
    assert all(r["extra"]["encoder_ms"] > 0 and r["extra"]["decoder_ms"] > 0 for r in rows)
    # the incremental protocol on both runtimes: PyTorch's IncrementalStreamer and onnxruntime's decoder_step.onnx
    assert all(r["extra"]["inc_decoder_ms"] > 0 for r in rows)
    assert rows[1]["extra"]["inc_gflops"] == rows[0]["extra"]["inc_gflops"] < rows[0]["gflops"]
    assert res.stdout.splitlines()[3].split()[0] == "config@ort"


def test_bench_compare_amp_times_float32_and_bf16_in_one_run_with_their_agreement(tmp_path: Path) -> None:
    # the random weights are drawn from torch's global generator: seeded, the agreement does not depend on which
    # tests ran before in this process (it fell to 0.91 after tests/test_openvino.py's)
    torch.manual_seed(0)
    out = tmp_path / "rows.json"
    res = runner.invoke(app, ["bench", *TINY_SET, *FAST, "--compare", "amp", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == ["config", "config@bf16"]
    assert [r["extra"]["amp"] for r in rows] == ["none", "bf16"]
    assert [r["extra"]["precision"] for r in rows] == ["fp32", "bf16"]
    for r in rows:  # both protocols timed for both precisions
        assert 0 < r["latency_ms"] < float("inf") and 0 < r["extra"]["inc_latency_ms"] < float("inf")
    agree = rows[1]["extra"]
    assert agree["agreement_frames"] == 8 and agree["agreement_source"] in ("synthetic:train", "random")
    assert 0.95 <= agree["pixel_agreement"] <= 1.0 and 0.0 < agree["agreement_miou"] <= 1.0
    assert "pixel_agreement" not in rows[0]["extra"]
    lines = res.stdout.splitlines()
    assert lines[0].split()[:2] == ["name", "amp"]
    assert any(line.startswith("bf16: this CPU has") for line in lines)  # native or emulated, said either way
    assert "float32 and bf16 autocast" in res.stdout
    # --amp alone: every PyTorch row under it
    res = runner.invoke(app, ["bench", *TINY_SET, *FAST, "--amp", "bf16", "--json", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(out.read_text())
    assert row["extra"]["amp"] == "bf16" and row["latency_ms"] > 0 and "pixel_agreement" not in row["extra"]


ARCH2_TINY = ["--set", "model.encoder=mobilenetv2_test", "--set", "model.decoder=arch2", "--set", "data.window=1",
              "--height", "32", "--width", "48", "--classes", "3"]  # per-frame arch2 on a tiny CNN


@pytest.mark.slow
def test_bench_compare_compile_times_eager_and_compiled_streams_with_their_agreement(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"  # aot_eager: torch.compile's graph capture, seconds instead of inductor's minutes
    res = runner.invoke(app, ["bench", *ARCH2_TINY, *FAST, "--compare", "compile", "--compile-backend", "aot_eager",
                              "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == ["config", "config@compile"]
    eager, comp = (r["extra"] for r in rows)
    assert eager["compile"] == "none" and comp["compile"] == "aot_eager" and comp["compile_seconds"] > 0
    assert comp["compiled_parts"] == ["encoder", "decoder"]
    assert rows[0]["gflops"] == rows[1]["gflops"] and rows[0]["params"] == rows[1]["params"]
    assert all(0 < r["latency_ms"] < float("inf") for r in rows)
    assert comp["pixel_agreement"] == pytest.approx(1.0, abs=1e-3) and comp["agreement_frames"] == 8
    assert "pixel_agreement" not in eager
    assert "NAME@compile: torch.compile (aot_eager)" in res.stdout


def test_bench_batch_streams_side_by_side_and_reports_per_frame(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    res = runner.invoke(app, ["bench", *ARCH2_TINY, *FAST, "--batch", "3", "--json", str(out)])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(out.read_text())
    assert row["extra"]["batch"] == 3  # a push of 3 frames takes batch_latency_ms; latency and FPS are per frame
    assert row["extra"]["batch_latency_ms"] == pytest.approx(3 * row["latency_ms"])
    assert row["fps"] == pytest.approx(1000 / row["latency_ms"])
    assert row["extra"]["encoder_ms"] < row["latency_ms"]
    assert "batch 3 (each push carries 3 frames, one per stream; latency = push time / batch)" in res.stdout
    assert res.stdout.splitlines()[0].split()[:4] == ["name", "window", "batch", "batch_latency_ms"]


@pytest.mark.parametrize("command", ["bench", "predict"])
def test_bad_runtime_is_refused_in_one_line_before_any_work(command: str, tmp_path: Path) -> None:
    args = [*TINY_SET, *FAST] if command == "bench" else [str(tmp_path / "nothing.mp4"), "--out", str(tmp_path / "o")]
    res = runner.invoke(app, [command, *args, "--runtime", "tensorrt"])
    assert res.exit_code == 2
    want = {"bench": "error: unknown --runtime 'tensorrt'; valid: torch, onnxruntime, openvino, both, all",
            "predict": "error: unknown runtime 'tensorrt'; valid runtimes: torch, onnxruntime, openvino"}
    assert res.output.strip().splitlines() == [want[command]]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["bench", "predict"])
def test_openvino_without_its_package_names_the_extra(command: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # what `import openvino` meets where it is not installed
    args = [*TINY_SET, *FAST] if command == "bench" else [str(tmp_path / "nothing.mp4"), "--out", str(tmp_path / "o")]
    res = runner.invoke(app, [command, *args, "--runtime", "openvino"])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        "error: the openvino runtime needs the openvino package: pip install 'vidnas[openvino]'"]


def test_bench_onnxruntime_needs_cpu() -> None:
    res = runner.invoke(app, ["bench", *TINY_SET, *FAST, "--runtime", "onnxruntime", "--device", "cuda"])
    assert res.exit_code == 2
    assert "--device cpu" in res.output or "not available" in res.output


# ---------------------------------------------------------------------------------------------------------- latency


def test_latency_writes_one_entry_per_block(tmp_path: Path) -> None:
    out = tmp_path / "lat.json"
    args = ["latency", "--encoder", "swin_test", "--height", "64", "--width", "96", "--iters", "2", "--warmup", "1"]
    res = runner.invoke(app, [*args, "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    table = json.loads(out.read_text())
    assert table["meta"]["encoder"] == "swin_test" and table["meta"]["img_size"] == [64, 96]
    assert len(table["blocks"]) == 8  # swin_test: depths 2, 2, 2, 2
    assert len(table["downsample"]) == 4
    assert all(v > 0 for v in table["blocks"].values())
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["stage", "block", "signature", "median_ms"]
    printed = [line.split()[2] for line in lines[2 : 2 + 12]]  # 4 stages x (downsample + 2 blocks)
    assert sorted(printed) == sorted([*table["blocks"], *table["downsample"]])
    assert any(line.startswith("8 blocks of swin_test") for line in lines)


def test_latency_unknown_encoder_lists_names(tmp_path: Path) -> None:
    res = runner.invoke(app, ["latency", "--encoder", "vit_huge", "--out", str(tmp_path / "x.json"), "--quiet"])
    assert res.exit_code == 2
    assert "swin_tiny" in res.output


# ---------------------------------------------------------------------------------------------------------- table 1


@pytest.fixture(scope="module")
def table1() -> ModuleType:
    spec = importlib.util.spec_from_file_location("table1", REPO / "benchmarks" / "table1.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["table1"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_table1_quick_archs_keep_each_rows_structure(table1: ModuleType) -> None:
    full = table1.table1_archs()
    quick = table1.table1_archs(quick=True)
    assert list(full) == list(quick) == list(PAPER_ROWS)
    for name, arch in quick.items():
        ref = PAPER_ROWS[name].arch
        assert full[name] == ref
        assert arch.encoder == "swin_test"
        assert (arch.window, arch.decoder, arch.full_channels, arch.decoder_ops) == (
            ref.window,
            ref.decoder,
            ref.full_channels,
            ref.decoder_ops,
        )
    assert quick["swin_short"].depths == (1, 2, 2, 2)
    with pytest.raises(KeyError, match="valid rows"):
        table1.table1_archs(["nope"])


def test_table1_run_quick_rows(table1: ModuleType) -> None:
    rows = table1.run(frames=1, warmup=0, names=["sptcn_tiny", "stnas", "swin_t"], quick=True)
    assert [r.name for r in rows] == ["sptcn_tiny", "stnas", "swin_t"]
    by = {r.name: r for r in rows}
    assert by["sptcn_tiny"].extra["fps_ratio"] == pytest.approx(1.0)
    assert by["stnas"].extra["paper_fps_ratio"] == pytest.approx(31.9 / 20.5)
    assert by["swin_t"].extra["window"] == 1 and by["stnas"].extra["window"] == 11
    for r in rows:
        assert r.params and r.gflops and r.latency_ms
        assert set(table1.COLUMNS) <= {"name", "params", "gflops", "latency_ms", "fps", *r.extra}


def test_table1_paper_columns_by_hand(table1: ModuleType) -> None:
    rows = [BenchRow("sptcn_tiny", params=40_000_000, latency_ms=50.0), BenchRow("stnas", latency_ms=25.0)]
    table1.add_paper_columns(rows)
    assert rows[1].extra["fps_ratio"] == pytest.approx(2.0)
    assert rows[0].extra["params_m"] == pytest.approx(40.0) and rows[1].extra["params_m"] is None
    assert rows[1].extra["paper_params_m"] == 39.0 and rows[1].extra["paper_fps"] == 31.9
    no_ref = table1.add_paper_columns([BenchRow("stnas", latency_ms=25.0)])
    assert no_ref[0].extra["fps_ratio"] is None


def test_table1_main_quick_prints_table_and_json(table1: ModuleType, tmp_path: Path, capsys) -> None:
    out = tmp_path / "t1.json"
    code = table1.main(["--quick", "--frames", "1", "--warmup", "0", "--rows", "sptcn_tiny,stnas", "--json", str(out),
                        "--no-progress"])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "QUICK" in text and "paper_fps_ratio" in text and "protocol [ST-NAS" in text
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == ["sptcn_tiny", "stnas"] and "device" in rows[0]["extra"]
