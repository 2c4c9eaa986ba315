"""Exact incremental decoding (``vidnas.models.incremental``) against the window decode it replaces.

Real tiny models (``swin_test`` encoder, SP-TCN decoders of width 8 at 32x48; ``mobilenetv2_test`` + multi-scale
(mstcn) decoders at 64x96), BatchNorm running statistics randomised so no layer is an identity. Every comparison
streams ``stream_length(w)`` frames from a video start (edge repetition) through ``model.stream(incremental=True)``
and ``model.stream(incremental=False)`` (the ``WindowStreamer`` the golden tests pin) and compares every frame's
logits.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from vidnas.bench import count_flops
from vidnas.config import Config
from vidnas.models import (
    Arch,
    IncrementalDecoder,
    IncrementalError,
    IncrementalStreamer,
    WindowStreamer,
    build_model,
    compile_decoder,
    incremental_support,
)
from vidnas.models.architecture import STNAS_DECODER_OPS
from vidnas.models.decoders import SPTCNDecoder

H, W, K = 32, 48, 3


def stream_length(window: int) -> int:
    """Frames pushed per comparison for window ``w``: 3w + 3.

    Every lag the state keeps is below ``w`` (a dirty slot reads inside its window; a clean value exists only for a
    register of context <= w - 1, and its lags add up to that context), so after the video start (frames 0 .. w - 2,
    whose windows repeat frame 0) and w more frames, every state entry holds values computed from real frames, and
    from then on each push runs the same static step on new frames: the last w + 4 frames are steady state. A longer
    stream repeats that step on more random frames (60 were pushed before: state bugs injected by hand, entries
    reversed, shifted by a lag, left stale or the zero entry left non-zero, showed by frame 11 at the latest in
    every model of this file)."""
    return 3 * window + 3


# every op kind of the decoder supernet plus the 3x3x3 baseline op: identity, dilated spatial (k3, k5), separable
# (k3, k5), dilated temporal (k3, k5), conv3d_k3; two per residual layer slot pair, four layers (dilations 1, 2, 4, 8)
EVERY_OP = (
    "identity", "spatial_k3", "temporal_k3", "sep_k3",
    "temporal_k5", "sep_k5", "spatial_k5", "conv3d_k3",
    "sep_k3", "temporal_k3", "identity", "spatial_k5",
    "conv3d_k3", "identity", "temporal_k5", "sep_k5",
)  # fmt: skip
DECODERS = {
    "sptcn": {},  # baseline 3x3x3 convs, reduce layer; receptive field 43
    "full_channels": {"full_channels": True},  # receptive field 41
    "tcnnas_every_op": {"decoder_ops": EVERY_OP},  # receptive field 75
    "tcnnas_every_op_fc": {"decoder_ops": EVERY_OP, "full_channels": True},  # receptive field 73
    "stnas_ops": {"decoder_ops": STNAS_DECODER_OPS, "full_channels": True},  # no temporal op: receptive field 3
}


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d | nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)


def tiny(window: int, *, causal: bool = True, **arch: object) -> nn.Module:
    base = dict(encoder="swin_test", channels=8, dilations=(1, 2, 4, 8), window=window, causal=causal)
    a = Arch(**{**base, **arch})  # type: ignore[arg-type]
    cfg = Config()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, height=H, width=W, window=window))
    torch.manual_seed(0)
    model = build_model(cfg, a, num_classes=K).eval()
    _randomise_bn(model)
    return model


def stream(model: nn.Module, frames: torch.Tensor, **options: object) -> tuple[list[torch.Tensor], object]:
    streamer = model.stream(batch_size=frames.shape[0], **options)
    if isinstance(streamer, IncrementalStreamer):  # stream_length's premise: the state keeps lags below w only
        lags = [lag for sp in streamer.decoder_module.plan.states for lag, _ in sp.entries]
        assert max(lags, default=0) < streamer.window, (max(lags), streamer.window)
    outs = [streamer.push(frames[:, t]) for t in range(frames.shape[1])]
    assert all(o is not None for o in outs)
    assert streamer.flush() == []
    return outs, streamer


@pytest.mark.parametrize("window", [3, 11])
@pytest.mark.parametrize("decoder", list(DECODERS))
def test_incremental_equals_window_decode_over_a_stream(decoder: str, window: int) -> None:
    model = tiny(window, **DECODERS[decoder])
    frames = torch.randn(1, stream_length(window), 3, H, W, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        inc, inc_streamer = stream(model, frames, incremental=True)
        ref, ref_streamer = stream(model, frames, incremental=False)
    assert isinstance(inc_streamer, IncrementalStreamer) and isinstance(ref_streamer, WindowStreamer)
    diffs = [float((a - b).abs().max()) for a, b in zip(inc, ref, strict=True)]
    assert max(diffs) <= 1e-4, f"largest |incremental - window| {max(diffs):.2e} at frame {diffs.index(max(diffs))}"
    assert float(ref[-1].abs().max()) > 1e-2  # not a degenerate all-zero output
    rf = model.decoder.temporal_receptive_field()
    assert compile_decoder(model.decoder).receptive_field == rf


def test_default_stream_of_a_causal_model_is_incremental_and_resets_between_videos() -> None:
    model = tiny(3)
    assert isinstance(model.stream(), IncrementalStreamer)
    a = torch.randn(2, 7, 3, H, W, generator=torch.Generator().manual_seed(2))
    b = torch.randn(2, 5, 3, H, W, generator=torch.Generator().manual_seed(3))
    streamer = model.stream(batch_size=2)
    ref = model.stream(batch_size=2, incremental=False)
    with torch.no_grad():
        for video in (a, b):  # flush() ends a video: the second one starts from its own first frame
            for t in range(video.shape[1]):
                torch.testing.assert_close(streamer.push(video[:, t]), ref.push(video[:, t]), atol=1e-5, rtol=1e-5)
            assert streamer.flush() == [] and ref.flush() == []
    assert streamer.pending == 0 and streamer.lag == 0 and streamer.protocol == "incremental"


def test_centred_model_keeps_the_window_decode_and_refuses_incremental() -> None:
    model = tiny(5, causal=False)
    assert isinstance(model.stream(), WindowStreamer)
    with pytest.raises(IncrementalError, match="centred.*incremental=False"):
        model.stream(incremental=True)


def test_window_covering_the_receptive_field_keeps_only_k_minus_1_d_inputs_per_temporal_conv() -> None:
    # w >= receptive field: nothing is dirty, each temporal conv keeps exactly its last (k - 1) * d inputs
    dec = SPTCNDecoder(16, K, channels=8, dilations=(1, 2), layer_ops=EVERY_OP[:8]).eval()
    rf = dec.temporal_receptive_field()
    inc = IncrementalDecoder(dec, rf)
    assert inc.exact_window_free
    prog = inc.program
    feat = torch.randn(1, 16, 2, 3)
    with torch.no_grad():
        _, state = inc(feat, ())
    by_register = {sp.register: t for sp, t in zip(inc.plan.states, state, strict=True)}
    tconvs = [n for n in prog.nodes if n.kind == "tconv"]
    assert len(tconvs) == len(by_register)  # one state per temporal conv input, none for anything else
    for n in tconvs:
        assert by_register[n.inputs[0]].shape[0] == n.extent  # (k - 1) * d feature maps, batch 1
    # one step costs exactly 1 / w of the window decode (every layer runs for one time step)
    with torch.no_grad():
        step_flops = count_flops(inc, feat, state)
        window_flops = count_flops(dec, feat.unsqueeze(2).expand(-1, -1, rf, -1, -1).contiguous())
    assert step_flops * rf == window_flops


def test_short_window_step_costs_less_than_the_window_decode_and_states_stay_fixed() -> None:
    dec = SPTCNDecoder(16, K, channels=8).eval()  # receptive field 43 > window 11: dirty slots recomputed
    inc = IncrementalDecoder(dec, 11)
    assert not inc.exact_window_free
    feats = torch.randn(20, 1, 16, 2, 3, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        _, state = inc(feats[0], ())
        shapes = [t.shape for t in state]
        for f in feats[1:]:
            _, state = inc(f, state)
        assert [t.shape for t in state] == shapes  # memory does not grow with the stream
        step_flops = count_flops(inc, feats[0], state)
        window_flops = count_flops(dec, feats[:11].permute(1, 2, 0, 3, 4).contiguous())
    assert 0 < step_flops < window_flops


def test_unsupported_decoder_module_is_named() -> None:
    class Mixer(nn.Module):  # mixes time steps without declaring a temporal extent: no one-step form
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv3d(4, 4, (3, 1, 1), padding=(1, 0, 0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    with pytest.raises(IncrementalError, match="Mixer"):
        compile_decoder(nn.Sequential(Mixer()))
    with pytest.raises(IncrementalError, match="mixes time steps"):
        compile_decoder(nn.Sequential(nn.Conv3d(4, 4, (3, 1, 1))))


# ------------------------------------------------------------------------------------ onnxruntime: the step graphs


@pytest.mark.parametrize("window", [3, 11])
@pytest.mark.parametrize("decoder", ["sptcn", "full_channels", "tcnnas_every_op"])
def test_onnx_step_graphs_equal_pytorch_over_a_stream(decoder: str, window: int, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from vidnas.export import export_onnx, export_step_graphs, step_parity_check

    model = tiny(window, **DECODERS[decoder])
    export_onnx(model, tmp_path, img_size=(H, W))
    section = export_step_graphs(model, tmp_path)
    assert section["receptive_field"] == model.decoder.temporal_receptive_field() > window
    assert step_parity_check(model, tmp_path, frames=stream_length(window)) <= 1e-4


def test_step_graphs_run_from_export_json_alone(tmp_path) -> None:
    """What a C++ (or any) runtime does: only export.json's names and shapes, raw onnxruntime sessions."""
    ort = pytest.importorskip("onnxruntime")
    import json

    import numpy as np

    from vidnas.export import export_onnx, export_step_graphs

    model = tiny(11, **DECODERS["tcnnas_every_op_fc"])
    export_onnx(model, tmp_path, img_size=(H, W))
    export_step_graphs(model, tmp_path)
    meta = json.loads((tmp_path / "export.json").read_text())
    inc = meta["incremental"]
    enc = ort.InferenceSession(str(tmp_path / meta["encoder"]))
    init = ort.InferenceSession(str(tmp_path / inc["init"]))
    step = ort.InferenceSession(str(tmp_path / inc["step"]))
    assert [i.name for i in step.get_inputs()] == ["feature", *[s["input"] for s in inc["states"]]]
    assert [o.name for o in step.get_outputs()] == ["logits", *[s["output"] for s in inc["states"]]]
    for s, i in zip(inc["states"], step.get_inputs()[1:], strict=True):
        assert list(i.shape) == s["shape"]  # static shapes: preallocate once
    frames = torch.randn(1, 15, 3, H, W, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref, _ = stream(model, frames, incremental=False)  # the window decode
    state: dict[str, np.ndarray] = {}
    for t in range(frames.shape[1]):
        feature = enc.run(None, {"frame": frames[:, t].numpy()})[0]
        if t == 0:
            logits, *new = init.run(None, {"feature": feature})
        else:
            logits, *new = step.run(None, {"feature": feature, **state})
        state = {s["input"]: v for s, v in zip(inc["states"], new, strict=True)}
        np.testing.assert_allclose(logits, ref[t].numpy(), atol=1e-4, rtol=0)
    assert sum(v.nbytes for v in state.values()) == inc["state_bytes"]


# ------------------------------------------------------------------ multi-scale (mstcn) decoders: one input per scale

MS_H, MS_W = 64, 96  # stride 32: a 2x3 trunk map; strides 8 and 4: 8x12 and 16x24 paths
TEMPORAL_SCALE_OPS = ("temporal_k3", "identity", "spatial_k3", "sep_k3", "temporal_k5", "temporal_k3")
MS_DECODERS = {
    "per_frame_paths": {},  # the default: temporal trunk, per-frame paths; receptive field 13
    "temporal_paths": {"scale_ops": TEMPORAL_SCALE_OPS},  # temporal ops in both paths and a fusion; RF 15
    # a trunk with no temporal op (full channels, spatial ops): the temporal context is all in the finer paths, so a
    # path's input register has more context than the trunk it is added to (RF 7)
    "temporal_paths_only": {"full_channels": True, "decoder_ops": ("spatial_k3", "sep_k3") * 4,
                            "scale_ops": ("temporal_k5", "temporal_k3", "identity", "identity", "temporal_k3",
                                          "spatial_k3")},
}


def tiny_ms(window: int, *, causal: bool = True, **arch: object) -> nn.Module:
    base = dict(encoder="mobilenetv2_test", decoder="mstcn", channels=8, dilations=(1, 2), scales=(32, 8, 4),
                fuse_channels=8, window=window, causal=causal)
    a = Arch(**{**base, **arch})  # type: ignore[arg-type]
    cfg = Config()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, height=MS_H, width=MS_W, window=window))
    torch.manual_seed(0)
    model = build_model(cfg, a, num_classes=K).eval()
    _randomise_bn(model)
    return model


@pytest.mark.parametrize("window", [3, 16])  # below every receptive field here, and at or above it
@pytest.mark.parametrize("decoder", list(MS_DECODERS))
def test_multiscale_incremental_equals_window_decode_over_a_stream(decoder: str, window: int) -> None:
    model = tiny_ms(window, **MS_DECODERS[decoder])
    assert incremental_support(model) is None
    rf = model.decoder.temporal_receptive_field()
    program = compile_decoder(model.decoder)
    assert program.num_inputs == 3 and program.receptive_field == rf
    assert sum(n.kind == "upadd" for n in program.nodes) == 2  # one resize-and-add per finer scale
    frames = torch.randn(1, stream_length(window), 3, MS_H, MS_W, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        inc, inc_streamer = stream(model, frames)  # the default of a causal model
        ref, ref_streamer = stream(model, frames, incremental=False)
    assert isinstance(inc_streamer, IncrementalStreamer) and isinstance(ref_streamer, WindowStreamer)
    assert inc_streamer.decoder_module.exact_window_free == (window >= rf)
    diffs = [float((a - b).abs().max()) for a, b in zip(inc, ref, strict=True)]
    assert max(diffs) <= 1e-5, f"largest |incremental - window| {max(diffs):.2e} at frame {diffs.index(max(diffs))}"
    assert float(ref[-1].abs().max()) > 1e-2  # not a degenerate all-zero output


def test_multiscale_fine_path_context_is_kept_in_the_state() -> None:
    """A temporal op in a finer path reads that scale's past: the state holds fine-scale maps, and a change in an
    earlier frame's fine features only (not its coarse ones) reaches the logits of later frames."""
    model = tiny_ms(3, **MS_DECODERS["temporal_paths_only"])
    inc = IncrementalDecoder(model.decoder, 3)
    gen = torch.Generator().manual_seed(6)
    feats = [[torch.randn(1, c, *hw, generator=gen) for c, hw in zip(model.decoder.in_channels,
                                                                      ((2, 3), (8, 12), (16, 24)), strict=True)]
             for _ in range(4)]
    with torch.no_grad():
        _, state = inc(feats[0], ())
        assert {tuple(t.shape[-2:]) for t in state} >= {(8, 12), (16, 24)}  # fine-scale registers carried
        outs = []
        for f in feats[1:]:
            y, state = inc(f, state)
            outs.append(y)
        changed = [list(f) for f in feats]
        changed[1][2] = changed[1][2] + 5.0  # frame 1's stride-4 map only
        _, state = inc(changed[0], ())
        outs2 = []
        for f in changed[1:]:
            y, state = inc(f, state)
            outs2.append(y)
    assert not torch.allclose(outs[1], outs2[1])  # frame 2 reads frame 1's fine map through the temporal path
    with pytest.raises(ValueError, match="3 feature map"):
        inc(feats[0][:2], ())


def test_multiscale_centred_keeps_the_window_decode_and_refuses_incremental() -> None:
    model = tiny_ms(3, causal=False, **MS_DECODERS["temporal_paths"])
    assert isinstance(model.stream(), WindowStreamer)
    assert "centred" in (incremental_support(model) or "")
    with pytest.raises(IncrementalError, match="centred.*incremental=False"):
        model.stream(incremental=True)
    with pytest.raises(IncrementalError, match="centred"):
        compile_decoder(model.decoder)


@pytest.mark.parametrize("window", [3, 16])
def test_multiscale_onnx_step_graphs_equal_pytorch_over_a_stream(window: int, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from vidnas.export import export_onnx, export_step_graphs, parity_check, step_parity_check

    model = tiny_ms(window, **MS_DECODERS["temporal_paths"])
    export_onnx(model, tmp_path, img_size=(MS_H, MS_W))
    section = export_step_graphs(model, tmp_path)
    assert section["receptive_field"] == model.decoder.temporal_receptive_field()
    assert [f["name"] for f in section["features"]] == ["feature0", "feature1", "feature2"]
    assert step_parity_check(model, tmp_path, frames=stream_length(window)) <= 1e-4
    assert parity_check(model, tmp_path, frames=window + 3) <= 1e-4  # the window pair, its ring buffers wrapping


# ------------------------------------------------ mstcn with the arch2 fusion: arch2's per-frame decoder on the trunk

ARCH2_FUSION = {"fusion": "arch2", "scales": (32, 16, 8, 4)}
ARCH2_RES = {"fusion": "arch2_res", "scales": (32, 16, 8, 4)}  # the trunk a residual branch on arch2's lateral


@pytest.mark.parametrize(("window", "fusion", "rf"), [(3, ARCH2_FUSION, 13), (16, ARCH2_FUSION, 13),
                                                      (3, ARCH2_RES, 11)])
def test_arch2_fusion_incremental_equals_window_decode_over_a_stream(window: int, fusion: dict, rf: int) -> None:
    model = tiny_ms(window, **fusion)
    assert type(model.decoder).__name__ == "StaticFusionDecoder"
    # arch2: the fpn default trunk (reduce 2 + layers 4 + 6); arch2_res: no reduce (the branch reads the lateral)
    assert model.decoder.temporal_receptive_field() == rf
    program = compile_decoder(model.decoder)
    assert program.num_inputs == 4 and program.receptive_field == rf
    assert sum(n.kind == "upadd" for n in program.nodes) == 3  # strides 16, 8 and the stride-4 path
    frames = torch.randn(1, stream_length(window), 3, MS_H, MS_W, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        inc, inc_streamer = stream(model, frames)
        ref, ref_streamer = stream(model, frames, incremental=False)
    assert isinstance(inc_streamer, IncrementalStreamer) and isinstance(ref_streamer, WindowStreamer)
    diffs = [float((a - b).abs().max()) for a, b in zip(inc, ref, strict=True)]
    assert max(diffs) <= 1e-5, f"largest |incremental - window| {max(diffs):.2e} at frame {diffs.index(max(diffs))}"
    assert float(ref[-1].abs().max()) > 1e-2


@pytest.mark.parametrize("fusion", [ARCH2_FUSION, ARCH2_RES])
def test_arch2_fusion_reads_the_past_through_the_trunk_only(fusion: dict) -> None:
    """Changing an earlier frame's stride-32 map changes later logits; changing its finer maps does not."""
    model = tiny_ms(3, **fusion)
    gen = torch.Generator().manual_seed(2)
    feats = [torch.randn(1, c, 3, *hw, generator=gen) for c, hw in zip(
        model.decoder.in_channels, ((2, 3), (4, 6), (8, 12), (16, 24)), strict=True)]
    with torch.no_grad():
        ref = model.decoder(feats)[:, :, -1]
        for scale in range(4):
            changed = [f.clone() for f in feats]
            changed[scale][:, :, 0] += 5.0  # the first frame of the window only
            moved = not torch.allclose(model.decoder(changed)[:, :, -1], ref)
            assert moved == (scale == 0), f"scale index {scale}"


def test_arch2_fusion_onnx_step_graphs_equal_pytorch(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from vidnas.export import export_onnx, export_step_graphs, parity_check, step_parity_check

    model = tiny_ms(3, **ARCH2_RES)  # the residual fusion: its branch's sum is an ``add`` node of the step graphs
    export_onnx(model, tmp_path, img_size=(MS_H, MS_W))
    section = export_step_graphs(model, tmp_path)
    assert [f["name"] for f in section["features"]] == ["feature0", "feature1", "feature2", "feature3"]
    assert step_parity_check(model, tmp_path, frames=stream_length(model.window)) <= 1e-4
    assert parity_check(model, tmp_path, frames=6) <= 1e-4
