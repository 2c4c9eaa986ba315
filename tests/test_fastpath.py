"""CPU fast paths: channels-last CNN encoders, the automatic thread count, and `vidnas bench --compare`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vidnas.bench import auto_threads
from vidnas.cli.main import app
from vidnas.config import Config
from vidnas.models import Arch, build_model
from vidnas.models.cells import build_static_segmenter
from vidnas.models.fastpath import cnn_encoder, use_channels_last, uses_channels_last

H, W = 64, 96
runner = CliRunner()
CNN_SET = ["--set", "model.encoder=mobilenetv2_test", "--set", "model.decoder_channels=8", "--set",
           "model.decoder_dilations=1,2", "--set", "data.window=3", "--height", str(H), "--width", str(W)]
FAST = ["--frames", "2", "--warmup", "1", "--quiet", "--ceiling", "32", "--no-flops"]


def window_model(encoder: str) -> torch.nn.Module:
    arch = Arch(encoder=encoder, channels=8, dilations=(1, 2), window=3)
    cfg = Config()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, height=H, width=W, window=3))
    torch.manual_seed(0)
    return build_model(cfg, arch, num_classes=3).eval()


@pytest.mark.parametrize("encoder", ["mobilenetv2_test", "efficientnet_lite0_test"])
def test_channels_last_encoder_gives_the_same_logits(encoder: str) -> None:
    model = window_model(encoder)
    frames = torch.randn(1, 5, 3, H, W, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(frames)
        assert use_channels_last(model) and uses_channels_last(model)
        after = model(frames)
        streamed = torch.stack([model.stream().push(frames[:, t]) for t in range(1)], 1)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    assert model.encode(frames[:, 0]).is_contiguous()  # the decoder gets a plain NCHW map
    assert streamed.shape == (1, 1, 3, H, W)
    assert not use_channels_last(model, False) and not uses_channels_last(model)


def test_channels_last_multiscale_model_streams_the_same_logits() -> None:
    """mstcn: every scale's map comes back as plain NCHW, and the incremental stream of the channels-last model equals
    the window decode of the plain one."""
    arch = Arch(encoder="mobilenetv2_test", decoder="mstcn", channels=8, dilations=(1, 2), scales=(32, 8, 4),
                fuse_channels=8, window=3, scale_ops=("temporal_k3", "identity", "spatial_k3") * 2)
    cfg = Config()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, height=H, width=W, window=3))
    torch.manual_seed(0)
    model = build_model(cfg, arch, num_classes=3).eval()
    frames = torch.randn(1, 8, 3, H, W, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model.stream(incremental=False)
        before = [ref.push(frames[:, t]) for t in range(8)]
        assert use_channels_last(model)
        assert all(f.is_contiguous() for f in model.encode(frames[:, 0]))
        inc = model.stream()
        after = [inc.push(frames[:, t]) for t in range(8)]
    assert inc.protocol == "incremental"
    torch.testing.assert_close(torch.stack(after), torch.stack(before), atol=1e-4, rtol=1e-4)


def test_channels_last_leaves_swin_alone_and_reaches_frame_models() -> None:
    swin = window_model("swin_test")
    assert cnn_encoder(swin) is None and use_channels_last(swin) is False
    cfg = Config()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, height=H, width=W, window=1),
                              model=dataclasses.replace(cfg.model, encoder="mobilenetv2_test"))
    arch2 = build_static_segmenter(cfg, num_classes=3).eval()
    x = torch.randn(1, 1, 3, H, W)
    with torch.no_grad():
        before = arch2(x)
        assert use_channels_last(arch2)
        torch.testing.assert_close(arch2(x), before, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("cpus", "load", "reserve", "expected"),
                         [(2, 3.7, 0, 1), (2, 0.2, 0, 2), (2, 0.2, 1, 1), (2, 1.0, 0, 1), (16, 4.4, 0, 12),
                          (1, 0.0, 1, 1)])
def test_auto_threads_counts_the_free_cores(cpus: int, load: float, reserve: int, expected: int) -> None:
    assert auto_threads(cpu_count=cpus, load=load, reserve=reserve) == expected


def test_bench_compare_channels_last_rows_on_and_off(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    res = runner.invoke(app, ["bench", *CNN_SET, *FAST, "--compare", "channels_last", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(out.read_text())}
    assert list(rows) == ["config", "config~off"]
    assert rows["config"]["extra"]["channels_last"] is True and rows["config~off"]["extra"]["channels_last"] is False
    assert "fast paths: channels_last on for config;" in res.stdout


def test_bench_compare_threads_sets_each_rows_thread_count(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    res = runner.invoke(app, ["bench", *CNN_SET, *FAST, "--compare", "threads", "--threads", "1,2", "--json",
                              str(out), "--channels-last", "off"])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == ["config@1t", "config@2t"]
    assert [r["extra"]["torch_threads"] for r in rows] == [1, 2]
    assert all(r["extra"]["inc_latency_ms"] > 0 for r in rows)  # both protocols at each thread count
    assert "channels_last off" in res.stdout and "torch threads 1, 2" in res.stdout


def test_bench_compare_ort_options(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    out = tmp_path / "rows.json"
    res = runner.invoke(app, ["bench", *CNN_SET, *FAST, "--compare", "ort_options", "--runtime", "onnxruntime",
                              "--threads", "1", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == ["config", "config~off"]
    assert "spinning off" in rows[0]["extra"]["ort_options"] and "defaults" in rows[1]["extra"]["ort_options"]


@pytest.mark.parametrize(("args", "message"), [
    (["--compare", "nope"], "valid comparisons"),
    (["--compare", "ort_options"], "needs --runtime"),
    (["--threads", "1,2"], "needs --compare threads"),
    (["--threads", "x"], "--threads 'x'"),
    (["--channels-last", "maybe"], "valid modes"),
])
def test_bench_fastpath_options_bad_values_exit_2(args: list[str], message: str) -> None:
    res = runner.invoke(app, ["bench", *CNN_SET, *FAST, *args])
    assert res.exit_code == 2, res.output
    assert message in res.output
