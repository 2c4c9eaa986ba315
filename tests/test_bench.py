"""Bench primitives: counts against hand computation, timing structure (no thresholds: the machine is noisy), tables."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from vidnas.bench import (
    BenchRow,
    TimingStats,
    count_flops,
    count_params,
    device_signature,
    format_table,
    interleaved_timing,
    read_rows_json,
    time_fn,
    write_rows_json,
)

# ---------------------------------------------------------------------------------------------------------- counts


def test_count_params_hand_computed() -> None:
    assert count_params(nn.Linear(10, 5)) == 10 * 5 + 5
    conv = nn.Conv2d(3, 8, 3)
    assert count_params(conv) == 8 * 3 * 3 * 3 + 8
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared, conv)  # the shared layer counts once
    assert count_params(model) == (16 + 4) + 224
    conv.requires_grad_(False)
    assert count_params(model, trainable_only=True) == 20
    assert count_params(model) == 244


def test_count_flops_conv_linear_matmul_hand_computed() -> None:
    # Conv2d: 2 * N * C_out * H_o * W_o * (C_in / groups) * k * k (1 MAC = 2 FLOPs; bias not counted)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, torch.randn(1, 3, 16, 16)) == 2 * 1 * 8 * 16 * 16 * 3 * 3 * 3
    grouped = nn.Conv2d(4, 8, 3, padding=1, stride=2, groups=2)  # 8x8 -> 4x4 output
    assert count_flops(grouped, torch.randn(2, 4, 8, 8)) == 2 * 2 * 8 * 4 * 4 * 2 * 3 * 3
    # Linear (N, I) -> (N, O): 2 * N * I * O
    assert count_flops(nn.Linear(10, 5), torch.randn(4, 10)) == 2 * 4 * 10 * 5

    # any callable, with keyword arguments; elementwise ops are free
    def fn(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
        return torch.relu(a @ b) * scale

    assert count_flops(fn, torch.randn(3, 4), torch.randn(4, 5), scale=2.0) == 2 * 3 * 4 * 5
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 5))
    net.eval()
    assert count_flops(net, torch.randn(1, 3, 4, 4)) == 2 * 8 * 16 * 27 + 2 * 8 * 16 * 5


# ---------------------------------------------------------------------------------------------------------- timing


def test_timing_stats_from_samples_hand_computed() -> None:
    s = TimingStats.from_samples([4.0, 1.0, 10.0, 2.0, 3.0])
    assert (s.median_ms, s.mean_ms, s.n) == (3.0, 4.0, 5)
    assert s.std_ms == pytest.approx(math.sqrt((0 + 9 + 36 + 4 + 1) / 4))  # sample std, ddof = 1
    assert s.p90_ms == pytest.approx(4.0 + 0.6 * (10.0 - 4.0))  # rank 0.9 * 4 = 3.6 between sorted 4 and 10
    assert s.fps == pytest.approx(250.0)
    assert s.samples_ms == (4.0, 1.0, 10.0, 2.0, 3.0)
    assert "samples_ms" not in s.to_dict() and s.to_dict(samples=True)["samples_ms"][2] == 10.0
    assert TimingStats.from_samples([2.0]).std_ms == 0.0
    with pytest.raises(ValueError):
        TimingStats.from_samples([])


def test_time_fn_structure_and_call_count() -> None:
    calls: list[bool] = []
    x = torch.randn(16, 16)

    def fn() -> torch.Tensor:
        calls.append(torch.is_inference_mode_enabled())
        return x @ x

    syncs: list[int] = []
    stats = time_fn(fn, warmup=2, iters=5, sync=lambda: syncs.append(1))
    assert len(calls) == 2 + 5 and all(calls)  # every call under inference_mode
    assert len(syncs) >= 5  # synchronised after each timed call
    assert stats.n == 5 and len(stats.samples_ms) == 5
    assert all(t > 0 for t in stats.samples_ms)
    assert min(stats.samples_ms) <= stats.median_ms <= stats.p90_ms <= max(stats.samples_ms)
    assert min(stats.samples_ms) <= stats.mean_ms <= max(stats.samples_ms) and stats.std_ms >= 0
    with pytest.raises(ValueError, match="iters"):
        time_fn(fn, warmup=0, iters=0)
    with pytest.raises(ValueError, match="warmup"):
        time_fn(fn, warmup=-1, iters=1)


def test_interleaved_timing_alternates_candidates() -> None:
    log: list[str] = []
    fns = {name: (lambda name=name: log.append(name)) for name in ("a", "b", "c")}
    stats = interleaved_timing(fns, warmup=1, iters=2, rounds=3)
    assert list(stats) == ["a", "b", "c"]
    assert all(s.n == 3 * 2 and len(s.samples_ms) == 6 for s in stats.values())
    assert {name: log.count(name) for name in fns} == {"a": 1 + 3 * 2, "b": 1 + 3 * 2, "c": 1 + 3 * 2}
    # warm-up first, then rounds whose starting candidate rotates: abc, bca, cab
    expected = list("abc") + list("aabbcc") + list("bbccaa") + list("ccaabb")
    assert log == expected
    with pytest.raises(ValueError, match="rounds"):
        interleaved_timing(fns, warmup=0, iters=1, rounds=0)
    with pytest.raises(ValueError, match="empty"):
        interleaved_timing({}, warmup=0, iters=1, rounds=1)


# ---------------------------------------------------------------------------------------------------------- tables


def _rows() -> list[BenchRow]:
    return [
        BenchRow("swin_t", params=28_288_354, gflops=35.7, latency_ms=400.0, extra={"miou": 0.612}),
        BenchRow("short", params=20_000_000, gflops=24.5, latency_ms=200.0),
        BenchRow("untimed"),
    ]


def test_bench_row_fps_and_dict() -> None:
    row = _rows()[0]
    assert row.fps == pytest.approx(2.5)  # 1000 / 400 ms
    d = row.to_dict()
    assert d == {
        "name": "swin_t",
        "params": 28_288_354,
        "gflops": 35.7,
        "latency_ms": 400.0,
        "fps": 2.5,
        "extra": {"miou": 0.612},
    }
    assert BenchRow("x").fps is None
    assert row.get("miou") == 0.612 and row.get("fps") == pytest.approx(2.5)


def test_format_table_aligned_with_ratio_column() -> None:
    text = format_table(_rows(), columns=("name", "params", "fps", "miou"), ref="swin_t")
    lines = text.split("\n")
    assert len(lines) == 2 + 3
    assert lines[0].split() == ["name", "params", "fps", "miou", "fps", "/", "swin_t"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["swin_t", "28,288,354", "2.50", "0.612", "1.00x"]
    assert lines[3].split() == ["short", "20,000,000", "5.00", "-", "2.00x"]  # twice the reference's FPS
    assert lines[4].split() == ["untimed", "-", "-", "-", "-"]
    # numbers are right-aligned: every row's params column ends at the same offset as its header
    end = lines[0].index("params") + len("params")
    assert all(line[:end].endswith(("354", "000", "-")) for line in lines[2:])
    with pytest.raises(ValueError, match="available"):
        format_table(_rows(), columns=("name", "nope"))
    with pytest.raises(ValueError, match="not found"):
        format_table(_rows(), ref="missing")


def test_rows_json_round_trip(tmp_path) -> None:
    path = write_rows_json(tmp_path / "sub" / "rows.json", _rows())
    raw = json.loads(path.read_text())
    assert isinstance(raw, list) and [r["name"] for r in raw] == ["swin_t", "short", "untimed"]
    assert raw[1]["fps"] == pytest.approx(5.0) and raw[2]["fps"] is None
    assert read_rows_json(path) == _rows()
    assert not [p for p in path.parent.iterdir() if p.name != "rows.json"]  # no temporary file left behind


def test_device_signature_fields() -> None:
    sig = device_signature()
    assert sig["torch"] == torch.__version__
    assert sig["num_threads"] == torch.get_num_threads()
    assert isinstance(sig["cpu"], str) and sig["cpu"]
    assert isinstance(sig["platform"], str) and sig["platform"]
    json.dumps(sig)  # storable beside a latency table
