"""ONNX export of arch2 and dynamic-cell models as key / cell-step graphs, and onnxruntime parity over 30 frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vidnas.config import load_config
from vidnas.export import (
    DeployError,
    FrameOrtStreamer,
    export_frame_onnx,
    frame_parity_check,
    is_frame_export,
    parity_check,
)
from vidnas.models.cells import CellGenotype, build_cell_model, build_static_segmenter

TOL = 1e-4
HW = (64, 96)
CFG = ["data.height=64", "data.width=96", "model.encoder=mobilenetv2_test"]
OPS = ("conv1x1", "sep3x3", "skip", "deform3x3", "gap")
AGGS = ("sum", "concat", "attention", "predictive", "affine", "conv3d")
# affine(deform3x3(layer2), sep3x3(prev_dec)); conv3d(gap(prev_layer4), conv1x1(l0));
# attention(sep3x3(l1), skip(layer2)); predictive(conv1x1(layer3), deform3x3(l2)): every aggregation but sum/concat,
# every previous-frame input
EVERYTHING = [2, 1, 3, 1, 4, 0, 5, 4, 0, 5, 6, 2, 1, 2, 2, 3, 7, 0, 3, 3]


def _perturbed(model: nn.Module) -> nn.Module:
    """Move the parts initialised to an identity or zero (offsets, affine, filters, BN), so they matter."""
    torch.manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(getattr(m, "offset", None), nn.Conv2d):
                m.offset.weight.normal_(0, 0.01)
            if isinstance(getattr(m, "fc", None), nn.Linear) and m.fc.out_features == 6:
                m.fc.weight.normal_(0, 0.01)
            if isinstance(getattr(m, "filters", None), nn.Conv2d):
                m.filters.weight.normal_(0, 0.05)
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.running_mean.normal_(0, 0.1)
    return model.eval()


def _cell_model(tokens: list[int], ops=OPS, aggs=AGGS) -> nn.Module:
    torch.manual_seed(0)
    geno = CellGenotype.from_tokens(tokens, ops=ops, aggregations=aggs)
    return _perturbed(build_cell_model(load_config(None, CFG), geno, num_classes=5))


@pytest.fixture(scope="module")
def cell_export(tmp_path_factory) -> tuple[nn.Module, Path]:
    model = _cell_model(EVERYTHING)
    out = tmp_path_factory.mktemp("cell_onnx")
    export_frame_onnx(model, out, img_size=HW, class_names=[f"c{i}" for i in range(5)])
    return model, out


def test_cell_export_files_and_metadata(cell_export) -> None:
    model, out = cell_export
    meta = json.loads((out / "export.json").read_text())
    assert meta["kind"] == "vidnas-frame" and meta["model_kind"] == "cell" and is_frame_export(out)
    assert meta["graphs"] == {"key": "key.onnx", "cell": "cell.onnx"} and meta["opset"] == 20  # affine needs 20
    io = meta["io"]
    assert io["cell"]["inputs"]["prev_dec"] == [1, 64, 8, 12] == io["key"]["outputs"]["dec"]
    assert io["cell"]["inputs"]["prev_layer4"] == io["cell"]["outputs"]["layer4"] == [1, 80, 2, 3]
    assert io["cell"]["outputs"]["logits"] == [1, 5, 64, 96] and meta["class_names"][4] == "c4"


@pytest.mark.parametrize("key_interval", [None, 7])
def test_cell_onnxruntime_parity_over_30_frames(cell_export, key_interval: int | None) -> None:
    model, out = cell_export
    diff = frame_parity_check(model, out, frames=30, key_interval=key_interval)
    assert diff < TOL
    assert parity_check(model, out, frames=30) < TOL  # the generic entry dispatches on the export's kind


def test_cell_stream_carries_state_and_key_frames(cell_export) -> None:
    model, out = cell_export
    x = np.random.default_rng(0).standard_normal((1, 3, *HW), dtype=np.float32)
    plain, keyed = FrameOrtStreamer(out), FrameOrtStreamer(out, key_interval=2)
    a = [plain.push(x) for _ in range(4)]
    b = [keyed.push(x) for _ in range(4)]
    assert np.allclose(a[0], b[0]) and np.allclose(b[0], b[2])  # key frames: the static network
    assert not np.allclose(a[0], a[1])  # the cell step differs from the static network on the same frame
    assert np.allclose(a[1], b[1], atol=TOL) and not np.allclose(a[3], b[3])  # frame 3 follows key frame 2
    plain.flush()
    assert np.allclose(plain.push(x), a[0])  # a new video starts with a key frame


def _graph(path: Path) -> tuple[list[str], list[str], int]:
    """Inputs, outputs and Conv node count of an ONNX graph."""
    import onnx

    g = onnx.load(str(path)).graph
    return [i.name for i in g.input], [o.name for o in g.output], sum(n.op_type == "Conv" for n in g.node)


def test_cell_graph_runs_the_encoder_only_as_deep_as_the_cell_reads(tmp_path: Path) -> None:
    small = {"ops": ("conv1x1", "sep3x3"), "aggs": ("sum",)}
    # sum(conv1x1(layer2), sep3x3(layer3)): no stride-32 stage, no prev_dec / prev_layer4 input, no layer4 output
    model = _cell_model([2, 3, 0, 1, 0], **small)
    export_frame_onnx(model, tmp_path / "l3", img_size=HW)
    meta = json.loads((tmp_path / "l3" / "export.json").read_text())
    assert meta["opset"] == 17 and list(meta["io"]["cell"]["outputs"]) == ["logits", "dec"]
    assert list(meta["io"]["cell"]["inputs"]) == ["frame"]  # the graph's own inputs
    assert frame_parity_check(model, tmp_path / "l3", frames=30, key_interval=5) < TOL
    # the same cell reading layer4 instead of layer3 runs every stage and carries layer4
    deep = _cell_model([2, 4, 0, 1, 0], **small)
    export_frame_onnx(deep, tmp_path / "l4", img_size=HW)
    assert frame_parity_check(deep, tmp_path / "l4", frames=10) < TOL
    # a cell on prev_dec alone runs no encoder: its graph does not even read the frame
    alone = _cell_model([1, 1, 0, 1, 0], **small)
    export_frame_onnx(alone, tmp_path / "dec", img_size=HW)
    assert frame_parity_check(alone, tmp_path / "dec", frames=10, key_interval=4) < TOL
    (i3, o3, c3), (i4, o4, c4), (i0, o0, c0) = (_graph(tmp_path / d / "cell.onnx") for d in ("l3", "l4", "dec"))
    assert (i3, o3) == (["frame"], ["logits", "dec"]) and (i4, o4) == (["frame"], ["logits", "dec", "layer4"])
    assert (i0, o0) == (["prev_dec"], ["logits", "dec"])
    enc = deep.static.encoder
    stride32 = sum(isinstance(m, nn.Conv2d) for part in (enc.stages[3], enc.output_layers[3]) for m in part.modules())
    assert c4 - c3 == stride32 > 0  # the graph without layer4 has none of the stride-32 stage's convolutions
    assert c0 == sum(isinstance(m, nn.Conv2d) for m in alone.cell.modules())  # the cell's convolutions only


def test_arch2_export_parity_and_refusals(tmp_path: Path) -> None:
    torch.manual_seed(0)
    static = _perturbed(build_static_segmenter(load_config(None, CFG), num_classes=5))
    paths = export_frame_onnx(static, tmp_path / "a2", img_size=HW)
    assert paths.cell is None and not (tmp_path / "a2" / "cell.onnx").exists()
    assert frame_parity_check(static, tmp_path / "a2", frames=30) < TOL
    with pytest.raises(DeployError, match="dynamic-cell models only"):
        FrameOrtStreamer(tmp_path / "a2", key_interval=3)
    with pytest.raises(DeployError, match="needs >= 20"):
        export_frame_onnx(_cell_model(EVERYTHING), tmp_path / "low", img_size=HW, opset=17)
    with pytest.raises(DeployError, match="not a frame-by-frame model"):
        export_frame_onnx(nn.Conv2d(3, 3, 1), tmp_path / "x", img_size=HW)
