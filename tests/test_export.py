"""ONNX export of a tiny real model (timm Swin + SP-TCN at 64x96, window 3): files, metadata, onnxruntime parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from vidnas.checkpoint import CheckpointError
from vidnas.cli.main import app
from vidnas.config import load_config
from vidnas.export import (
    DeployError,
    OrtStreamer,
    export_onnx,
    parity_check,
    read_export_meta,
)
from vidnas.models import load_model

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-4


def make_tiny_checkpoint(run_dir: Path, *overrides: str) -> Path:
    """Train configs/tiny.yaml (swin_test + SP-TCN, 64x96, window 3, 4 synthetic classes) for one step."""
    from vidnas.engine.train import train

    cfg = load_config(REPO / "configs" / "tiny.yaml", [
        "train.epochs=1", "train.max_steps_per_epoch=1", "train.batch_size=1", "data.synthetic_videos=2",
        "data.synthetic_frames=4", *overrides])
    return Path(train(cfg, run_dir, show_progress=False).last_checkpoint)


_CHECKPOINTS: dict[Path, Path] = {}


def shared_tiny_checkpoint(tmp_path_factory) -> Path:
    """One tiny checkpoint per test session, shared with tests/test_predict.py (training is the slow part)."""
    base = tmp_path_factory.getbasetemp()
    if base not in _CHECKPOINTS:
        _CHECKPOINTS[base] = make_tiny_checkpoint(tmp_path_factory.mktemp("run"))
    return _CHECKPOINTS[base]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return shared_tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def causal_export(checkpoint, tmp_path_factory):
    loaded = load_model(checkpoint)
    out = tmp_path_factory.mktemp("onnx")
    paths = export_onnx(loaded.model, out, img_size=loaded.img_size, class_names=loaded.class_names,
                        palette=loaded.palette)
    return loaded, paths


def test_export_writes_valid_graphs_and_metadata(causal_export):
    loaded, paths = causal_export
    for p in (paths.encoder, paths.decoder):
        onnx.checker.check_model(str(p))
    meta = json.loads(paths.meta.read_text())
    assert meta == read_export_meta(paths.out_dir)
    assert meta["opset"] == 17
    assert set(meta["versions"]) >= {"torch", "onnx", "onnxruntime", "vidnas"}
    assert meta["input_size"] == [64, 96] and meta["window"] == 3 and meta["causal"] is True
    assert meta["target_index"] == 2 and meta["lag"] == 0
    assert meta["num_classes"] == 4 and meta["class_names"] == loaded.class_names
    assert np.array_equal(np.asarray(meta["palette"]), loaded.palette)  # the synthetic data set's colours
    assert meta["normalization"]["mean"] == [0.485, 0.456, 0.406]
    enc = onnx.load(str(paths.encoder))
    dims = [d.dim_value for d in enc.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 96]
    dec_out = onnx.load(str(paths.decoder)).graph.output[0]
    assert [d.dim_value for d in dec_out.type.tensor_type.shape.dim] == [1, 4, 64, 96]  # the target frame only
    assert not loaded.model.training  # export restores the mode it found


def test_causal_parity_with_pytorch_streamer(causal_export):
    loaded, paths = causal_export
    diff = parity_check(loaded.model, paths.out_dir, frames=7)  # > window: the ring buffer wraps
    assert 0.0 <= diff < TOL


def test_ort_streamer_interface_and_fixed_buffer(causal_export):
    _, paths = causal_export
    s = OrtStreamer(paths.out_dir, intra_op_threads=1)
    assert (s.window, s.causal, s.lag, s.input_size, s.num_classes) == (3, True, 0, (64, 96), 4)
    nbytes = s.buffer_nbytes
    rng = np.random.default_rng(0)
    for _ in range(5):
        out = s.push(rng.standard_normal((1, 3, 64, 96), dtype=np.float32))
        assert out is not None and out.shape == (1, 4, 64, 96)  # causal: every push emits its own frame
    assert s.buffer_nbytes == nbytes and s.pending == 0 and s.flush() == []
    feat = s.encode(rng.standard_normal((1, 3, 64, 96), dtype=np.float32))
    assert feat.shape == s.feature_shape
    assert s.decode(np.repeat(feat[:, :, None], 3, axis=2)).shape == (1, 4, 64, 96)
    with pytest.raises(ValueError, match=r"\(1, 3, 64, 96\)"):
        s.push(np.zeros((1, 3, 32, 32), dtype=np.float32))


def test_centred_export_parity_and_flush(checkpoint, tmp_path):
    loaded = load_model(checkpoint, causal=False)
    paths = export_onnx(loaded.model, tmp_path, class_names=loaded.class_names)
    assert parity_check(loaded.model, paths.out_dir, frames=6) < TOL  # includes the flushed tail
    s = OrtStreamer(paths.out_dir)
    assert (s.causal, s.target_index, s.lag) == (False, 1, 1)
    frame = np.zeros((1, 3, 64, 96), dtype=np.float32)
    outs = [s.push(frame) for _ in range(4)]
    assert outs[0] is None and all(o is not None for o in outs[1:])
    assert len(s.flush()) == 1 and s.pending == 0  # every pushed frame gets its logits


def test_export_errors(tmp_path, checkpoint):
    with pytest.raises(DeployError, match="export.json"):
        read_export_meta(tmp_path)
    with pytest.raises(CheckpointError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")
    loaded = load_model(checkpoint)
    with pytest.raises(DeployError, match="opset"):
        export_onnx(loaded.model, tmp_path / "x", opset=13)


def test_cli_export_prints_parity_and_enforces_tolerance(checkpoint, tmp_path, monkeypatch):
    runner = CliRunner()
    res = runner.invoke(app, ["export", str(checkpoint), "--out", str(tmp_path / "ok"), "--parity-frames", "5"])
    assert res.exit_code == 0, res.output
    assert "max |torch - onnxruntime| logit difference" in res.output and "OK" in res.output
    assert (tmp_path / "ok" / "encoder.onnx").is_file() and (tmp_path / "ok" / "export.json").is_file()
    # a causal model also gets the incremental decoder, checked over its own stream
    assert "parity (incremental decode)" in res.output and (tmp_path / "ok" / "decoder_step.onnx").is_file()
    assert read_export_meta(tmp_path / "ok")["incremental"]["step"] == "decoder_step.onnx"

    import vidnas.export

    monkeypatch.setattr(vidnas.export, "parity_check", lambda *a, **k: 1.0)  # a broken export, deterministically
    res = runner.invoke(app, ["export", str(checkpoint), "--out", str(tmp_path / "bad"), "--tol", "1e-4"])
    assert res.exit_code == 1 and "FAILED" in res.output

    res = runner.invoke(app, ["export", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "nope.pt" in res.output
