"""Decoder ops, SP-TCN / head decoders, VideoSegmenter clip forward and streaming (tiny real models, CPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vidnas.models import (
    DECODERS,
    ENCODERS,
    OPS,
    SEARCH_CANDIDATES,
    Arch,
    ArchError,
    HeadDecoder,
    Slotted,
    SPTCNDecoder,
    VideoSegmenter,
    build_decoder,
    build_encoder,
)
from vidnas.models.architecture import STNAS_DECODER_OPS
from vidnas.models.decoders import StaticFusionDecoder
from vidnas.models.ops import BASELINE_OP, get_op, register_op, temporal_extent

H, W = 64, 96  # tiny input; multiple of 32 so every encoder map is exact
C_IN, F_DEC, K = 16, 8, 3


def _tiny_encoder_name() -> str:
    for name in ("swin_test", "mobilenetv2_test", "efficientnet_lite0_test"):
        if name in ENCODERS:
            return name
    raise AssertionError(f"no tiny test encoder registered; have {list(ENCODERS)}")


def _perturb_after(x: torch.Tensor, t: int) -> torch.Tensor:
    """Copy of x (B, C, T, h, w) with every frame after t replaced by noise."""
    y = x.clone()
    y[:, :, t + 1 :] = torch.randn_like(y[:, :, t + 1 :]) * 3.0
    return y


# ------------------------------------------------------------------------------------------------------------- ops


def test_ops_table_order_and_lookup() -> None:
    assert SEARCH_CANDIDATES == (
        "identity", "spatial_k3", "spatial_k5", "sep_k3", "sep_k5", "temporal_k3", "temporal_k5",
    )  # fmt: skip
    # the table's order fixes beta columns: the candidates come first, in order
    assert tuple(OPS)[: len(SEARCH_CANDIDATES)] == SEARCH_CANDIDATES
    assert BASELINE_OP in OPS and BASELINE_OP not in SEARCH_CANDIDATES
    with pytest.raises(KeyError, match="sep_k3"):
        get_op("sep_k7")
    with pytest.raises(KeyError, match="already registered"):
        register_op("identity", OPS["identity"])


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("name", list(OPS))
def test_op_preserves_shape(name: str, causal: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, F_DEC, 5, 6, 7)  # odd spatial sizes catch padding mistakes
    op = OPS[name](F_DEC, 2, causal=causal).eval()
    assert op(x).shape == x.shape


@pytest.mark.parametrize("name", list(OPS))
def test_causal_op_ignores_future_frames(name: str) -> None:
    torch.manual_seed(0)
    op = OPS[name](F_DEC, 2, causal=True).eval()
    x = torch.randn(1, F_DEC, 7, 5, 5)
    t = 3
    with torch.no_grad():
        y, y2 = op(x), op(_perturb_after(x, t))
    torch.testing.assert_close(y[:, :, : t + 1], y2[:, :, : t + 1], atol=0, rtol=0)


@pytest.mark.parametrize("name", ["temporal_k3", "temporal_k5", "conv3d_k3"])
def test_temporal_ops_see_past_and_centred_see_future(name: str) -> None:
    """The property tested above can fail: temporal ops do mix frames, and centred ones look ahead."""
    torch.manual_seed(0)
    x = torch.randn(1, F_DEC, 9, 5, 5)
    t = 4
    with torch.no_grad():
        causal = OPS[name](F_DEC, 1, causal=True).eval()
        past = x.clone()
        past[:, :, :t] = torch.randn_like(past[:, :, :t])
        assert not torch.allclose(causal(x)[:, :, t], causal(past)[:, :, t])
        centred = OPS[name](F_DEC, 1, causal=False).eval()
        assert not torch.allclose(centred(x)[:, :, t], centred(_perturb_after(x, t))[:, :, t])


def test_temporal_dilation_and_extent() -> None:
    torch.manual_seed(0)
    op = OPS["temporal_k3"](F_DEC, 2, causal=True).eval()
    assert temporal_extent(op) == 4
    x = torch.randn(1, F_DEC, 8, 3, 3)
    with torch.no_grad():
        base = op(x)[:, :, 6]
        # frame 6 reads frames 2, 4, 6 (dilation 2): frame 5 must not matter, frame 4 must
        odd = x.clone()
        odd[:, :, 5] += 5.0
        even = x.clone()
        even[:, :, 4] += 5.0
        torch.testing.assert_close(op(odd)[:, :, 6], base, atol=0, rtol=0)
        assert not torch.allclose(op(even)[:, :, 6], base)
    assert temporal_extent(OPS["spatial_k5"](F_DEC, 8)) == 0
    assert temporal_extent(OPS["identity"](F_DEC, 8)) == 0


def test_identity_op_has_no_parameters() -> None:
    assert sum(p.numel() for p in OPS["identity"](F_DEC, 1).parameters()) == 0
    x = torch.randn(1, F_DEC, 3, 4, 4)
    assert torch.equal(OPS["identity"](F_DEC, 1)(x), x)


# ------------------------------------------------------------------------------------------------------- decoders


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("full_channels", [False, True])
@pytest.mark.parametrize("searched", [False, True])
def test_sptcn_shapes(causal: bool, full_channels: bool, searched: bool) -> None:
    torch.manual_seed(0)
    dec = SPTCNDecoder(
        C_IN, K, channels=F_DEC, full_channels=full_channels, causal=causal,
        layer_ops=STNAS_DECODER_OPS if searched else None,
    ).eval()  # fmt: skip
    x = torch.randn(2, C_IN, 3, 2, 3)  # T=3 is far shorter than the receptive field: padding must keep T
    assert dec(x).shape == (2, K, 3, 2, 3)


def test_sptcn_causal_ignores_future_frames() -> None:
    torch.manual_seed(0)
    dec = SPTCNDecoder(C_IN, K, channels=F_DEC, causal=True).eval()
    x = torch.randn(1, C_IN, 6, 2, 3)
    t = 2
    with torch.no_grad():
        y, y2 = dec(x), dec(_perturb_after(x, t))
    torch.testing.assert_close(y[:, :, : t + 1], y2[:, :, : t + 1], atol=0, rtol=0)
    assert not torch.allclose(y[:, :, t + 1 :], y2[:, :, t + 1 :])


def test_sptcn_full_channels_removes_reduction() -> None:
    base = SPTCNDecoder(C_IN, K, channels=F_DEC)
    fc = SPTCNDecoder(C_IN, K, channels=F_DEC, full_channels=True)
    assert base.reduce is not None and fc.reduce is None
    assert isinstance(base.res_layers[0].skip, nn.Identity)
    assert isinstance(fc.res_layers[0].skip, nn.Conv3d)  # 1x1x1 projection C -> F on the residual path
    assert fc.res_layers[0].conv1[0].conv.in_channels == C_IN

    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    # baseline: reduce (27 C F + BN 2F) + layer-0 conv1 (27 F F + BN 2F); FC: layer-0 conv1 (27 C F + BN 2F) + skip
    # projection (C F + bias F). Everything else is identical.
    c, f = C_IN, F_DEC
    assert count(base) - count(fc) == (27 * c * f + 2 * f + 27 * f * f + 2 * f) - (27 * c * f + 2 * f + c * f + f)


def test_sptcn_layer_ops_slots() -> None:
    dec = SPTCNDecoder(C_IN, K, channels=F_DEC, full_channels=True, layer_ops=STNAS_DECODER_OPS)
    slots = dec.searchable_slots()
    assert len(slots) == 16
    assert slots[0] == ("res_layers.0.conv1.0", F_DEC, 1)
    assert slots[-1] == ("res_layers.3.conv2.1", F_DEC, 8)
    # each slot holds the op named at the same position, built at the layer's dilation
    for (name, channels, dilation), op in zip(slots, STNAS_DECODER_OPS, strict=True):
        module = dec.get_submodule(name)
        expected = OPS[op](channels, dilation)
        assert type(module) is type(expected)
        assert [p.shape for p in module.parameters()] == [p.shape for p in expected.parameters()]
    # FC + ops: a fixed 1x1x1 adapter takes C -> F before the channel-preserving ops
    assert dec.res_layers[0].adapter is not None and dec.res_layers[1].adapter is None
    replacement = OPS["temporal_k5"](F_DEC, 4)
    dec.set_slot("res_layers.2.conv2.0", replacement)
    assert dec.get_submodule("res_layers.2.conv2.0") is replacement
    dec.set_slot(0, OPS["sep_k5"](F_DEC, 1))
    assert dec(torch.randn(1, C_IN, 3, 2, 2)).shape == (1, K, 3, 2, 2)
    with pytest.raises(RuntimeError, match="layer_ops"):
        SPTCNDecoder(C_IN, K, channels=F_DEC).set_slot(0, nn.Identity())


def test_sptcn_layer_ops_validation() -> None:
    with pytest.raises(ValueError, match="16"):
        SPTCNDecoder(C_IN, K, channels=F_DEC, layer_ops=["identity"] * 15)
    with pytest.raises(KeyError, match="temporal_k3"):
        SPTCNDecoder(C_IN, K, channels=F_DEC, layer_ops=["identity"] * 15 + ["temporal_k7"])


def test_sptcn_receptive_field_matches_behaviour() -> None:
    """temporal_receptive_field() is the exact causal context: frame 0 reaches frame RF-1 but not frame RF."""
    torch.manual_seed(0)
    dec = SPTCNDecoder(C_IN, K, channels=F_DEC, dilations=(1,), causal=True).eval()
    rf = dec.temporal_receptive_field()
    assert rf == 1 + 2 + (2 + 2) + 2  # reduce, layer conv1 (d=1) + conv2, final
    x = torch.randn(1, C_IN, rf + 2, 2, 2)
    x2 = x.clone()
    x2[:, :, 0] += 3.0
    with torch.no_grad():
        y, y2 = dec(x), dec(x2)
    assert not torch.allclose(y[:, :, rf - 1], y2[:, :, rf - 1])
    torch.testing.assert_close(y[:, :, rf:], y2[:, :, rf:], atol=0, rtol=0)
    assert SPTCNDecoder(C_IN, K, channels=F_DEC).temporal_receptive_field() == 43  # dilations 1, 2, 4, 8
    # the reconstructed TCNNAS decoder has no temporal op in its searched layers: only `final` (3x3x3) mixes frames
    searched = SPTCNDecoder(C_IN, K, channels=F_DEC, full_channels=True, layer_ops=STNAS_DECODER_OPS)
    assert searched.temporal_receptive_field() == 3


def test_head_decoder_is_per_frame() -> None:
    torch.manual_seed(0)
    dec = HeadDecoder(C_IN, K, F_DEC).eval()
    x = torch.randn(2, C_IN, 3, 4, 5)
    x2 = x.clone()
    x2[:, :, 1] = torch.randn_like(x2[:, :, 1])
    with torch.no_grad():
        y, y2 = dec(x), dec(x2)
    assert y.shape == (2, K, 3, 4, 5)
    torch.testing.assert_close(y[:, :, 0], y2[:, :, 0], atol=0, rtol=0)
    torch.testing.assert_close(y[:, :, 2], y2[:, :, 2], atol=0, rtol=0)
    assert not torch.allclose(y[:, :, 1], y2[:, :, 1])
    # and it is the 2D head applied to every frame on its own
    with torch.no_grad():
        torch.testing.assert_close(y[:, :, 1], dec.body(x[:, :, 1]), atol=1e-6, rtol=1e-6)
    assert dec.temporal_receptive_field() == 1


def test_decoder_families_registered_in_order() -> None:
    """``DECODERS`` holds the five families under their saved names, in the order error messages list them; each
    names the model around its decoder and the encoder strides it reads."""
    assert list(DECODERS) == ["sptcn", "head", "arch2", "mstcn", "arch2_space"]
    assert {n: f.model for n, f in DECODERS.items()} == {"sptcn": "window", "head": "window", "arch2": "static",
                                                        "mstcn": "multiscale", "arch2_space": "multiscale"}
    assert DECODERS["arch2_space"].scales(Arch(decoder="arch2_space")) == (32, 16, 8, 4)
    assert DECODERS["arch2"].scales(Arch(decoder="arch2")) == (4, 8, 16, 32)
    assert DECODERS["mstcn"].scales(Arch(decoder="mstcn", scales=(32, 4))) == (32, 4)
    assert isinstance(build_decoder(Arch(decoder="head", channels=F_DEC), C_IN, K), HeadDecoder)
    for name in ("mstcn", "arch2", "arch2_space"):
        with pytest.raises(ArchError, match=f"the {name} decoder reads several encoder maps: build it with"):
            build_decoder(Arch(decoder=name), C_IN, K)
    with pytest.raises(ArchError, match="unknown decoder 'nope'; valid decoders: sptcn, head, arch2, mstcn"):
        Arch(decoder="nope")


def test_slotted_set_slot_by_index_or_name() -> None:
    """One ``set_slot`` (``Slotted``) for every searchable decoder, here the arch2 fusion's trunk."""
    dec = StaticFusionDecoder([C_IN, 8, 8, 8], K, channels=F_DEC, fuse_channels=8, dilations=(1,),
                              layer_ops=["identity"] * 4)
    assert isinstance(dec, Slotted) and isinstance(SPTCNDecoder(C_IN, K), Slotted)
    assert [s[0] for s in dec.searchable_slots()] == ["res_layers.0.conv1.0", "res_layers.0.conv1.1",
                                                      "res_layers.0.conv2.0", "res_layers.0.conv2.1"]
    a, b = OPS["sep_k3"](F_DEC, 1), OPS["temporal_k3"](F_DEC, 1)
    dec.set_slot(1, a)
    dec.set_slot("res_layers.0.conv2.0", b)
    assert dec.get_submodule("res_layers.0.conv1.1") is a and dec.get_submodule("res_layers.0.conv2.0") is b
    with pytest.raises(KeyError, match="unknown slot 'proj'; valid slots: res_layers.0.conv1.0"):
        dec.set_slot("proj", a)


# ------------------------------------------------------------------------------------------------------ segmenter


def _tiny_segmenter(window: int, causal: bool, *, decoder: str = "sptcn") -> VideoSegmenter:
    torch.manual_seed(0)
    enc = build_encoder(_tiny_encoder_name(), img_size=(H, W))
    c = enc.out_channels[-1]
    dec: nn.Module
    if decoder == "sptcn":
        dec = SPTCNDecoder(c, K, channels=F_DEC, dilations=(1, 2), causal=causal)
    else:
        dec = HeadDecoder(c, K, F_DEC)
    model = VideoSegmenter(enc, dec, K, window=window, causal=causal)
    _randomise_bn(model)
    return model.eval()


def _randomise_bn(model: nn.Module) -> None:
    """Non-trivial running statistics, so eval-mode BN is not a near-identity that could hide frame mixing."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def test_segmenter_forward_shapes() -> None:
    model = _tiny_segmenter(3, True)
    frames = torch.randn(2, 3, 3, H, W)
    with torch.no_grad():
        logits = model(frames)
        assert logits.shape == (2, 3, K, H, W)
        feats = model.encode(frames[:, 0])
        assert feats.shape[:2] == (2, model.encoder.out_channels[-1])
        assert feats.shape[-2:] == (H // 32, W // 32)
        stacked = torch.stack([model.encode(frames[:, i]) for i in range(3)], dim=2)  # (B, C, T, h, w)
        torch.testing.assert_close(model.decode(stacked, (H, W)), logits, atol=1e-5, rtol=1e-5)
    model.out_size = (32, 40)
    with torch.no_grad():
        assert model(frames).shape == (2, 3, K, 32, 40)
    with pytest.raises(ValueError, match="B, T, 3, H, W"):
        model(frames[0])


def _clip_indices(t: int, n: int, window: int, causal: bool) -> list[int]:
    """The data layer's window rule: causal t-w+1..t, centred t-w//2.., indices clamped to the video."""
    start = t - window + 1 if causal else t - window // 2
    return [min(max(i, 0), n - 1) for i in range(start, start + window)]


@pytest.mark.parametrize(
    ("window", "causal", "n"),
    [(3, True, 6), (5, True, 7), (3, False, 6), (5, False, 7), (4, False, 6), (5, False, 2)],
)
def test_stream_equals_clip_forward(window: int, causal: bool, n: int) -> None:
    model = _tiny_segmenter(window, causal)
    torch.manual_seed(2)
    video = torch.randn(1, n, 3, H, W)
    with torch.no_grad():
        expected = [
            model(video[:, _clip_indices(t, n, window, causal)])[:, model.target_index] for t in range(n)
        ]  # each (1, K, H, W)
    streamer = model.stream()

    def run() -> list[torch.Tensor]:
        got = []
        for t in range(n):
            out = streamer.push(video[:, t])
            if causal:
                assert out is not None
            elif t < window - 1 - window // 2:
                assert out is None  # centred: the target frame's future is not there yet
            if out is not None:
                got.append(out)
        got.extend(streamer.flush())
        return got

    for _ in range(2):  # flush() ends the video: the second pass starts from an empty buffer again
        got = run()
        assert len(got) == n and streamer.pending == 0
        for t in range(n):
            torch.testing.assert_close(got[t], expected[t], atol=1e-5, rtol=1e-5, msg=f"frame {t}")


def test_stream_batched_and_frame_shape_checked() -> None:
    model = _tiny_segmenter(3, True)
    torch.manual_seed(3)
    video = torch.randn(2, 4, 3, H, W)
    streamer = model.stream(batch_size=2)
    outs = [streamer.push(video[:, t]) for t in range(4)]
    with torch.no_grad():
        clip = model(video[:, [1, 2, 3]])[:, -1]
    torch.testing.assert_close(outs[-1], clip, atol=1e-5, rtol=1e-5)
    assert streamer.flush() == []
    with pytest.raises(ValueError, match="2, 3, H, W"):
        streamer.push(video[:1, 0])


def test_stream_head_decoder_window_one() -> None:
    model = _tiny_segmenter(1, True, decoder="head")
    torch.manual_seed(4)
    video = torch.randn(1, 3, 3, H, W)
    streamer = model.stream()
    with torch.no_grad():
        for t in range(3):
            torch.testing.assert_close(
                streamer.push(video[:, t]), model(video[:, t : t + 1])[:, 0], atol=1e-5, rtol=1e-5
            )
