"""ONNX export of multi-scale (mstcn) models: one encoder output and one window input per scale, the incremental
step graphs with one feature input per scale, onnxruntime streaming and parity, `vidnas export`, `vidnas predict
--runtime onnxruntime` and `vidnas bench --runtime both` on a tiny trained checkpoint (configs/tiny.yaml with
``model.decoder=mstcn``: swin_test, a temporal trunk at stride 32 fused with paths at strides 8 and 4, 64x96,
window 3, trained for one step)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from test_export import make_tiny_checkpoint
from test_predict import N_FRAMES, VIDEO_HW, check_masks, write_mp4
from vidnas.cli.main import app
from vidnas.export import DeployError, OrtStepStreamer, OrtStreamer, read_export_meta
from vidnas.models import load_model
from vidnas.models.multiscale import MultiScaleSegmenter

pytest.importorskip("onnxruntime")

runner = CliRunner()
TOL = 1e-4
HW = (64, 96)
SCALES = [32, 8, 4]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ms_run"), "model.decoder=mstcn", "model.fuse_channels=8")


@pytest.fixture(scope="module")
def causal_export(checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ms_onnx") / "onnx"
    res = runner.invoke(app, ["export", str(checkpoint), "--out", str(out), "--parity-frames", "6", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "parity (window decode) over 6" in res.output and "parity (incremental decode) over 6" in res.output
    assert res.output.count("(OK, tolerance 0.0001)") == 2
    return out


def test_cli_export_writes_one_feature_per_scale(causal_export, checkpoint) -> None:
    loaded = load_model(checkpoint)
    assert isinstance(loaded.model, MultiScaleSegmenter)
    meta = read_export_meta(causal_export)
    assert meta["schema_version"] == 2 and meta["scales"] == SCALES and meta["causal"] is True
    enc_out = meta["io"]["encoder"]["outputs"]
    dec_in = meta["io"]["decoder"]["inputs"]
    assert [o["name"] for o in enc_out] == ["feature0", "feature1", "feature2"]
    assert [o["stride"] for o in enc_out] == SCALES
    assert [o["shape"][2:] for o in enc_out] == [[HW[0] // s, HW[1] // s] for s in SCALES]
    assert [i["name"] for i in dec_in] == ["features0", "features1", "features2"]
    assert [i["shape"] for i in dec_in] == [[*o["shape"][:2], 3, *o["shape"][2:]] for o in enc_out]
    # the graphs say the same: the encoder has one static output per scale, the decoder one window input per scale
    enc = onnx.load(str(causal_export / "encoder.onnx")).graph
    assert [o.name for o in enc.output] == ["feature0", "feature1", "feature2"]
    assert [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in enc.output] == [o["shape"] for o in enc_out]
    assert [i.name for i in onnx.load(str(causal_export / "decoder.onnx")).graph.input] == [i["name"] for i in dec_in]
    inc = meta["incremental"]
    assert [f["name"] for f in inc["features"]] == ["feature0", "feature1", "feature2"] and "feature" not in inc
    step_inputs = [i.name for i in onnx.load(str(causal_export / inc["step"])).graph.input]
    assert step_inputs == ["feature0", "feature1", "feature2", *[s["input"] for s in inc["states"]]]
    assert inc["receptive_field"] == loaded.model.decoder.temporal_receptive_field()


def test_graphs_run_from_export_json_alone(causal_export, checkpoint) -> None:
    """What a C++ (or any) runtime does with a multi-scale export: names and shapes from export.json, raw sessions;
    both the window pair and the step graphs give PyTorch's window-decode logits."""
    import onnxruntime as ort

    model = load_model(checkpoint).model.eval()
    meta = json.loads((causal_export / "export.json").read_text())
    inc = meta["incremental"]
    sessions = {n: ort.InferenceSession(str(causal_export / f))
                for n, f in (("enc", meta["encoder"]), ("dec", meta["decoder"]), ("init", inc["init"]),
                             ("step", inc["step"]))}
    feat_names = [o["name"] for o in meta["io"]["encoder"]["outputs"]]
    win_names = [i["name"] for i in meta["io"]["decoder"]["inputs"]]
    frames = torch.randn(1, 8, 3, *HW, generator=torch.Generator().manual_seed(5))
    ref_stream = model.stream(incremental=False)
    history: list[list[np.ndarray]] = []
    state: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for t in range(frames.shape[1]):
            ref = ref_stream.push(frames[:, t]).numpy()
            feats = sessions["enc"].run(feat_names, {"frame": frames[:, t].numpy()})
            history.append(feats)
            window = [history[max(0, t - 2 + i)] for i in range(3)]  # the first frame fills the window at the start
            feeds = {n: np.stack([w[s] for w in window], axis=2) for s, n in enumerate(win_names)}
            np.testing.assert_allclose(sessions["dec"].run(None, feeds)[0], ref, atol=TOL, rtol=0)
            named = dict(zip(feat_names, feats, strict=True))
            if t == 0:
                logits, *new = sessions["init"].run(None, named)
            else:
                logits, *new = sessions["step"].run(None, {**named, **state})
            state = {s["input"]: v for s, v in zip(inc["states"], new, strict=True)}
            np.testing.assert_allclose(logits, ref, atol=TOL, rtol=0)


def test_ort_streamers_hold_one_buffer_per_scale(causal_export) -> None:
    s = OrtStreamer(causal_export, intra_op_threads=1)
    assert s.multi and len(s.feature_shapes) == 3 and s.feature_shape == s.feature_shapes[0]
    nbytes = s.buffer_nbytes
    assert nbytes == sum(4 * 3 * int(np.prod(sh)) for sh in s.feature_shapes)  # window 3 x every scale's map
    rng = np.random.default_rng(0)
    step = OrtStepStreamer(causal_export, intra_op_threads=1)
    for _ in range(5):
        frame = rng.standard_normal((1, 3, *HW), dtype=np.float32)
        a, b = s.push(frame), step.push(frame)
        assert a is not None and a.shape == (1, 4, *HW)
        np.testing.assert_allclose(a, b, atol=TOL, rtol=0)  # the window decode and the step, both in onnxruntime
    assert s.buffer_nbytes == nbytes and s.flush() == [] and step.flush() == []
    feats = s.encode(rng.standard_normal((1, 3, *HW), dtype=np.float32))
    assert [f.shape for f in feats] == s.feature_shapes
    assert s.decode([np.repeat(f[:, :, None], 3, axis=2) for f in feats]).shape == (1, 4, *HW)
    with pytest.raises(ValueError, match="3 windows"):
        s.decode(feats[:2])


def test_cli_centred_export_has_no_step_graphs_and_flushes_every_frame(checkpoint, tmp_path) -> None:
    out = tmp_path / "centred"
    res = runner.invoke(app, ["export", str(checkpoint), "--out", str(out), "--centred", "--parity-frames", "5"])
    assert res.exit_code == 0, res.output
    assert "no incremental decoder" in res.output and "centred" in res.output
    assert "parity (window decode) over 5" in res.output and "OK" in res.output
    assert not (out / "decoder_step.onnx").exists() and "incremental" not in read_export_meta(out)
    s = OrtStreamer(out)
    assert (s.causal, s.target_index, s.lag) == (False, 1, 1)
    outs = [s.push(np.zeros((1, 3, *HW), dtype=np.float32)) for _ in range(4)]
    assert outs[0] is None and all(o is not None for o in outs[1:])
    assert len(s.flush()) == 1 and s.pending == 0
    with pytest.raises(DeployError, match="no incremental graphs"):
        OrtStepStreamer(out)


def test_newer_schema_is_refused_by_name(causal_export, tmp_path) -> None:
    import shutil

    copy = Path(shutil.copytree(causal_export, tmp_path / "copy"))
    meta = json.loads((copy / "export.json").read_text())
    (copy / "export.json").write_text(json.dumps({**meta, "schema_version": 3}))
    with pytest.raises(DeployError, match=r"export\.json: unsupported schema_version 3"):
        read_export_meta(copy)


@pytest.fixture(scope="module")
def davis_mp4(davis_root, tmp_path_factory) -> Path:
    from PIL import Image

    files = sorted((davis_root / "JPEGImages" / "480p" / "blackswan").glob("*.jpg"))[:N_FRAMES]
    h, w = VIDEO_HW
    frames = [np.asarray(Image.open(f).convert("RGB").resize((w, h), Image.BILINEAR)) for f in files]
    return write_mp4(tmp_path_factory.mktemp("video") / "blackswan.mp4", frames)


def test_predict_onnxruntime_matches_torch(checkpoint, davis_mp4, tmp_path) -> None:
    outs = {}
    for rt in ("onnxruntime", "torch"):
        out = tmp_path / rt
        res = runner.invoke(app, ["predict", str(davis_mp4), "--checkpoint", str(checkpoint), "--out", str(out),
                                  "--runtime", rt, "--no-overlay", "--quiet", "--threads", "1"])
        assert res.exit_code == 0, res.output
        assert "one decoder step per frame" in res.output  # causal: incremental on both runtimes
        summary = json.loads((out / "summary.json").read_text())
        assert summary["runtime"] == rt and summary["frames"] == N_FRAMES and summary["protocol"] == "incremental"
        outs[rt] = check_masks(out, N_FRAMES, VIDEO_HW)
    assert (tmp_path / "onnxruntime" / "onnx" / "decoder_step.onnx").is_file()
    agree = np.mean([np.mean(a == b) for a, b in zip(outs["onnxruntime"], outs["torch"], strict=True)])
    assert agree > 0.999  # logits agree to ~1e-7; only exact ties could flip a pixel


def test_bench_both_runtimes_with_both_protocols(checkpoint, tmp_path) -> None:
    out = tmp_path / "rows.json"
    res = runner.invoke(app, ["bench", "--checkpoint", str(checkpoint), "--runtime", "both", "--frames", "2",
                              "--warmup", "1", "--quiet", "--ceiling", "64", "--threads", "1", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())
    assert [r["extra"]["runtime"] for r in rows] == ["torch", "onnxruntime"]
    assert rows[1]["params"] == rows[0]["params"] and rows[1]["gflops"] == rows[0]["gflops"]
    for r in rows:  # the paper protocol (window decode) and the incremental one (decoder_step.onnx on ORT)
        assert r["extra"]["decoder_ms"] > 0 and r["extra"]["inc_decoder_ms"] > 0
    # a steady-state step costs less than the window decode (the trunk's 3x3x3 convs run for fewer positions)
    assert rows[0]["extra"]["inc_decoder_gflops"] < rows[0]["extra"]["decoder_gflops"]
