"""`vidnas predict` on real DAVIS frames (a small mp4 built here), frame folders, bad input, and flat memory."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fixtures_data import write_mp4
from test_export import shared_tiny_checkpoint
from vidnas.cli.main import app
from vidnas.export import (
    OrtStreamer,
    StreamingStats,
    TorchRunner,
    VideoError,
    export_onnx,
    predict_video,
)
from vidnas.models import load_model

VIDEO_HW = (120, 214)  # DAVIS 480x854 downscaled: small, and the masks must come back at this size, not 64x96
N_FRAMES = 12


def read_video(path: Path) -> tuple[int, tuple[int, int], float]:
    """(decoded frame count, (H, W), fps)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [f for f in c.decode(s)]
        return len(frames), (frames[0].height, frames[0].width), float(s.average_rate)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return shared_tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def davis_frames(davis_root) -> list[np.ndarray]:
    files = sorted((davis_root / "JPEGImages" / "480p" / "blackswan").glob("*.jpg"))[:N_FRAMES]
    assert len(files) == N_FRAMES
    h, w = VIDEO_HW
    return [np.asarray(Image.open(f).convert("RGB").resize((w, h), Image.BILINEAR)) for f in files]


@pytest.fixture(scope="module")
def davis_mp4(davis_frames, tmp_path_factory) -> Path:
    return write_mp4(tmp_path_factory.mktemp("video") / "blackswan.mp4", davis_frames)


def check_masks(out: Path, n: int, hw: tuple[int, int], k: int = 4) -> list[np.ndarray]:
    files = sorted((out / "masks").glob("*.png"))
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(n)]
    masks = [np.asarray(Image.open(f)) for f in files]
    assert all(m.shape == hw and m.dtype == np.uint8 and m.max() < k for m in masks)
    return masks


def test_predict_cli_on_davis_video(checkpoint, davis_mp4, tmp_path):
    out = tmp_path / "pred"
    res = CliRunner().invoke(app, ["predict", str(davis_mp4), "--checkpoint", str(checkpoint), "--out", str(out),
                                   "--quiet"])
    assert res.exit_code == 0, res.output
    assert "model FPS" in res.output
    check_masks(out, N_FRAMES, VIDEO_HW)
    assert read_video(out / "overlay.mp4") == (N_FRAMES, VIDEO_HW, 24.0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == N_FRAMES and summary["input_size"] == list(VIDEO_HW)
    assert summary["model_size"] == [64, 96] and summary["runtime"] == "torch" and summary["temporal"] == "causal"
    assert summary["model_fps"] > 0 and summary["pipeline_fps"] > 0 and summary["latency_ms"]["n"] == N_FRAMES
    assert summary["protocol"] == "incremental" and summary["threads"] >= 1  # causal: one decoder step per frame
    assert summary["channels_last"] is False  # a Swin encoder: nothing to convert
    assert abs(sum(summary["class_fraction"].values()) - 1.0) < 1e-6
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_predict_onnxruntime_centred_matches_torch(checkpoint, davis_mp4, tmp_path):
    cli = CliRunner()
    ort_out, torch_out = tmp_path / "ort", tmp_path / "torch"
    res = cli.invoke(app, ["predict", str(davis_mp4), "--checkpoint", str(checkpoint), "--out", str(ort_out),
                           "--runtime", "onnxruntime", "--centred", "--quiet"])
    assert res.exit_code == 0, res.output
    assert (ort_out / "onnx" / "export.json").is_file()
    summary = json.loads((ort_out / "summary.json").read_text())
    assert summary["runtime"] == "onnxruntime" and summary["temporal"] == "centred" and summary["frames"] == N_FRAMES
    ort_masks = check_masks(ort_out, N_FRAMES, VIDEO_HW)  # flush gave the last frame its mask too
    res = cli.invoke(app, ["predict", str(davis_mp4), "--checkpoint", str(checkpoint), "--out", str(torch_out),
                           "--centred", "--no-overlay", "--quiet"])
    assert res.exit_code == 0, res.output
    torch_masks = check_masks(torch_out, N_FRAMES, VIDEO_HW)
    agree = np.mean([np.mean(a == b) for a, b in zip(ort_masks, torch_masks, strict=True)])
    assert agree > 0.999  # logits agree to ~1e-7; only exact ties could flip a pixel


def test_predict_bf16_masks_agree_with_float32(checkpoint, davis_mp4, tmp_path):
    """``--amp bf16`` on the CPU: autocast inference, logits back to float32 before the argmax; recorded in the
    summary. bf16 keeps 8 mantissa bits: most pixels keep their class (the tiny model's margins are small)."""
    cli = CliRunner()
    masks = {}
    for amp in ("none", "bf16"):
        out = tmp_path / amp
        res = cli.invoke(app, ["predict", str(davis_mp4), "--checkpoint", str(checkpoint), "--out", str(out),
                               "--amp", amp, "--no-overlay", "--quiet"])
        assert res.exit_code == 0, res.output
        assert json.loads((out / "summary.json").read_text())["amp"] == amp
        masks[amp] = check_masks(out, N_FRAMES, VIDEO_HW)
    assert "bf16 autocast" in res.output and "bf16: this CPU has" in res.output
    agree = np.mean([np.mean(a == b) for a, b in zip(masks["none"], masks["bf16"], strict=True)])
    assert agree >= 0.95, agree
    res = cli.invoke(app, ["predict", str(davis_mp4), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "x"),
                           "--amp", "int4"])
    assert res.exit_code == 2 and "valid modes are none, bf16, fp16" in res.output


def test_predict_frame_folder_library(checkpoint, davis_frames, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(davis_frames[:6]):
        Image.fromarray(f).save(folder / f"frame{i}.png")  # natural order: frame2 before frame10
    runner = TorchRunner(load_model(checkpoint))
    done: list[int] = []
    res = predict_video(folder, tmp_path / "out", runner, max_frames=5, progress=lambda n, fps: done.append(n))
    assert res.frames == 5 and done == [1, 2, 3, 4, 5]
    check_masks(tmp_path / "out", 5, VIDEO_HW)
    assert read_video(res.overlay) == (5, VIDEO_HW, 25.0)  # folders have no frame rate: the default
    assert res.summary["input_kind"] == "folder" and res.summary["input_fps"] is None


def test_corrupt_video_and_missing_checkpoint_exit_2(checkpoint, davis_mp4, tmp_path):
    bad = tmp_path / "broken_clip.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    cli = CliRunner()
    res = cli.invoke(app, ["predict", str(bad), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "broken_clip.mp4" in res.output
    res = cli.invoke(app, ["predict", str(davis_mp4), "--checkpoint", str(tmp_path / "gone.pt"), "--out",
                           str(tmp_path / "o")])
    assert res.exit_code == 2 and "gone.pt" in res.output
    res = cli.invoke(app, ["predict", str(tmp_path / "nothing_here.mp4"), "--checkpoint", str(checkpoint), "--out",
                           str(tmp_path / "o")])
    assert res.exit_code == 2 and "nothing_here.mp4" in res.output
    with pytest.raises(VideoError, match="no frames"):
        predict_video(tmp_path, tmp_path / "o2", TorchRunner(load_model(checkpoint)))  # folder, no images


def test_crash_midway_leaves_only_complete_outputs(checkpoint, davis_mp4, tmp_path):
    class Crashing(TorchRunner):
        def push(self, frame):
            self.n = getattr(self, "n", 0) + 1
            if self.n == 6:
                raise RuntimeError("simulated crash")
            return super().push(frame)

    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")  # from an earlier prediction: must not survive into this one
    (out / "vidnas_predict.json").write_text('{"kind": "vidnas predict", "files": ["summary.json"]}')
    with pytest.raises(RuntimeError, match="simulated"):
        predict_video(davis_mp4, out, Crashing(load_model(checkpoint)))
    check_masks(out, 5, VIDEO_HW)  # every mask written is a complete PNG
    assert not (out / "summary.json").exists() and not (out / "overlay.mp4").exists()
    assert not list(out.glob(".*")) and not list((out / "masks").glob(".*"))  # no partial files left


def _pipeline_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name.startswith("vidnas-predict")]


def test_unreadable_frame_midway_keeps_the_masks_of_every_frame_before_it(checkpoint, davis_frames, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(davis_frames[:9]):
        Image.fromarray(f).save(folder / f"frame{i}.png")
    (folder / "frame5.png").write_bytes(np.random.default_rng(0).bytes(3000))  # unreadable, in the middle
    out = tmp_path / "out"
    with pytest.raises(VideoError, match="frame5.png"):
        predict_video(folder, out, TorchRunner(load_model(checkpoint)))
    check_masks(out, 5, VIDEO_HW)  # the reader thread failed after 5 frames: all 5 went through and were written
    assert not (out / "summary.json").exists() and not (out / "overlay.mp4").exists()
    assert not list(out.glob(".*")) and _pipeline_threads() == []


def test_writer_failure_stops_the_pipeline(checkpoint, davis_mp4, tmp_path):
    class BadLogits(TorchRunner):  # frame 4's logits lose their class axis: the writer's argmax fails
        def push(self, frame):
            self.n = getattr(self, "n", 0) + 1
            out = super().push(frame)
            return out[:, 0] if self.n == 4 else out

    with pytest.raises(IndexError):  # raised in the writer thread, re-raised here
        predict_video(davis_mp4, tmp_path / "out", BadLogits(load_model(checkpoint)))
    check_masks(tmp_path / "out", 3, VIDEO_HW)
    assert not (tmp_path / "out" / "summary.json").exists() and _pipeline_threads() == []


def test_pipeline_overlaps_reading_and_writing_with_the_model(checkpoint, davis_mp4, tmp_path, monkeypatch):
    """The three stages run at once: while the model is busy, the reader thread preprocesses later frames and the
    writer thread paints earlier ones (each stage's real work is recorded with its thread and time span)."""
    import threading

    import vidnas.export.predict as pred

    spans: list[tuple[str, str, float, float]] = []

    def recorded(stage: str, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            spans.append((stage, threading.current_thread().name, t0, time.perf_counter()))
            return out
        return wrapper

    class SlowModel(TorchRunner):  # a model much slower than reading and writing, as at full size
        def push(self, frame):
            out = super().push(frame)
            time.sleep(0.1)  # releases the GIL like a torch / onnxruntime kernel does
            return out

    monkeypatch.setattr(pred, "preprocess", recorded("read", pred.preprocess))
    monkeypatch.setattr(pred, "paint_overlay", recorded("write", pred.paint_overlay))
    runner = SlowModel(load_model(checkpoint))
    runner.push = recorded("model", runner.push)
    progress_threads: set[str] = set()
    res = predict_video(davis_mp4, tmp_path / "out", runner,
                        progress=lambda n, fps: progress_threads.add(threading.current_thread().name))
    assert res.frames == N_FRAMES and progress_threads == {"vidnas-predict-writer"}
    by_stage = {st: [(a, b) for s_, _, a, b in spans if s_ == st] for st in ("read", "model", "write")}
    assert {t for st, t, _, _ in spans if st == "read"} == {"vidnas-predict-reader"}
    assert {t for st, t, _, _ in spans if st == "write"} == {"vidnas-predict-writer"}

    def during_model(a: float, b: float) -> bool:
        return any(a < mb and b > ma for ma, mb in by_stage["model"])

    # the reader and the writer work while a push runs (serial code would never overlap); a loaded machine may delay
    # a thread past the end of a push now and then, hence not "every frame"
    assert sum(during_model(a, b) for a, b in by_stage["read"]) >= N_FRAMES // 3
    assert sum(during_model(a, b) for a, b in by_stage["write"]) >= N_FRAMES // 3
    assert res.summary["model_fps"] > 0 and res.summary["pipeline_fps"] > 0


def test_streaming_stats_constant_memory_quantiles():
    st = StreamingStats()
    xs = np.random.default_rng(0).lognormal(2.0, 0.5, size=5000)
    for x in xs:
        st.add(float(x))
    assert st.n == 5000 and abs(st.mean - xs.mean()) < 1e-9 and st.min == xs.min() and st.max == xs.max()
    for q in (0.5, 0.9, 0.99):
        assert abs(st.quantile(q) / np.quantile(xs, q) - 1) < 0.05  # half a bin: 2.3%, plus sampling


def _moving_square_video(path: Path, n: int, hw: tuple[int, int] = (96, 128)) -> Path:
    h, w = hw
    yy, xx = np.mgrid[:h, :w]
    frames = []
    for i in range(n):
        f = np.stack([(xx * 2 + i) % 256, (yy * 2) % 256, np.full_like(xx, 90)], -1).astype(np.uint8)
        f[(yy - 20 - i % 50) ** 2 + (xx - 30 - i % 70) ** 2 < 200] = (250, 250, 40)
        frames.append(f)
    return write_mp4(path, frames)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_memory_does_not_grow_with_video_length(checkpoint, tmp_path, runtime):
    """Peak Python-heap use (tracemalloc sees numpy buffers: decoded frames, logits, masks, overlays) for an 80-frame
    video must equal a 20-frame one's up to a small constant. Holding frames, masks or logits would add 60 x (37 KB
    per 96x128 frame, 12 KB per mask, 98 KB per logits map) = 0.7-6 MB, far above the bound. Torch tensors are not
    traced, which is why the onnxruntime path (numpy end to end) is measured too."""
    loaded = load_model(checkpoint)
    if runtime == "torch":
        runner = TorchRunner(loaded)
    else:
        export_onnx(loaded.model, tmp_path / "onnx", class_names=loaded.class_names)
        runner = OrtStreamer(tmp_path / "onnx", intra_op_threads=1)
    short = _moving_square_video(tmp_path / "short.mp4", 20)
    long = _moving_square_video(tmp_path / "long.mp4", 80)
    predict_video(short, tmp_path / "warm", runner, max_frames=3)  # first-call caches: codec, PIL plugins, imports

    def peak(video: Path, out: Path) -> int:
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            res = predict_video(video, out, runner)
            top = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert res.frames == int(video.stem == "long") * 60 + 20
        return top - base

    p_short = peak(short, tmp_path / "s")
    p_long = peak(long, tmp_path / "l")
    frame_bytes = 96 * 128 * 3
    # run-to-run jitter of the peak is ~20 KB here; holding anything per frame adds >= 60 x 12 KB (masks)
    assert p_long - p_short < 2 * frame_bytes, (p_short, p_long)
    assert p_short < 40 * frame_bytes  # and the working set itself is a handful of frames, not the video


def test_predict_onnxruntime_causal_uses_the_step_graphs(checkpoint, davis_mp4, tmp_path):
    cli = CliRunner()
    res = cli.invoke(app, ["predict", str(davis_mp4), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "inc"),
                           "--runtime", "onnxruntime", "--no-overlay", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "one decoder step per frame" in res.output
    assert (tmp_path / "inc" / "onnx" / "decoder_step.onnx").is_file()
    summary = json.loads((tmp_path / "inc" / "summary.json").read_text())
    assert summary["runtime"] == "onnxruntime" and summary["protocol"] == "incremental"
    res = cli.invoke(app, ["predict", str(davis_mp4), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "win"),
                           "--window-decode", "--no-overlay", "--quiet"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "win" / "summary.json").read_text())["protocol"] == "window"
    inc, win = check_masks(tmp_path / "inc", N_FRAMES, VIDEO_HW), check_masks(tmp_path / "win", N_FRAMES, VIDEO_HW)
    assert np.mean([np.mean(a == b) for a, b in zip(inc, win, strict=True)]) > 0.999
