"""Encoders: the block-level contract on the tiny variants, plus the real full-size architectures (shapes only)."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from timm.models.swin_transformer import SwinTransformer

from vidnas.models.encoders import ENCODERS, Encoder, build_encoder
from vidnas.models.encoders.efficientnet import EfficientNetEncoder
from vidnas.models.encoders.swin import SWIN_VARIANTS, SwinEncoder
from vidnas.registry import Registry

TINY = ["swin_test", "mobilenetv2_test", "efficientnet_lite0_test"]
HW = (64, 96)

# name -> (out_channels, depths) of the full encoder
EXPECTED = {
    "swin_test": ([16, 32, 64, 128], (2, 2, 2, 2)),
    "mobilenetv2_test": ([8, 8, 24, 80], (1, 2, 2, 2)),
    "efficientnet_lite0_test": ([8, 16, 32, 80], (1, 1, 2, 3)),
    "swin_tiny": ([96, 192, 384, 768], (2, 2, 6, 2)),
    "swin_base": ([128, 256, 512, 1024], (2, 2, 18, 2)),
    "mobilenetv2": ([24, 32, 96, 320], (1, 2, 2, 2)),
    "efficientnet_lite0": ([24, 40, 112, 320], (1, 1, 2, 3)),
}
SHORT = {"swin_test": (1, 2, 1, 2), "mobilenetv2_test": (1, 1, 0, 1), "efficientnet_lite0_test": (0, 1, 1, 2)}


def _tiny(name: str, seed: int = 0, **kwargs) -> Encoder:
    torch.manual_seed(seed)
    return build_encoder(name, img_size=HW, **kwargs).eval()


def _image(n: int = 2, hw: tuple[int, int] = HW) -> torch.Tensor:
    return torch.randn(n, 3, *hw, generator=torch.Generator().manual_seed(1))


def test_registry_lists_every_encoder() -> None:
    assert set(ENCODERS) == set(EXPECTED)
    with pytest.raises(KeyError, match="swin_tiny"):  # the message lists the valid names
        build_encoder("swin_huge")
    registry = Registry("encoder")
    registry.register("a", lambda **_: None)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", lambda **_: None)


@pytest.mark.parametrize("name", TINY)
def test_output_shapes(name: str) -> None:
    enc = _tiny(name)
    channels, depths = EXPECTED[name]
    assert enc.strides == [4, 8, 16, 32]
    assert enc.out_channels == channels and enc.depths == depths and enc.name == name and enc.img_size == HW
    assert len(enc.stages) == len(enc.output_layers) == 4
    with torch.no_grad():
        outs = enc(_image())
    assert [tuple(o.shape) for o in outs] == [
        (2, c, HW[0] // s, HW[1] // s) for c, s in zip(channels, enc.strides, strict=True)
    ]
    assert all(o.is_contiguous() for o in outs)
    assert [enc.feature_hw(i) for i in range(4)] == [tuple(o.shape[-2:]) for o in outs]


@pytest.mark.parametrize("name", TINY)
def test_forward_is_stem_stages_outputs(name: str) -> None:
    enc = _tiny(name)
    x = _image()
    with torch.no_grad():
        outs = enc(x)
        h = enc.stem(x)
        manual = []
        for i, stage in enumerate(enc.stages):
            h = stage.downsample(h)
            for block in stage.blocks:
                h = block(h)
            manual.append(enc.stage_output(i, h))
    for a, b in zip(outs, manual, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for n in range(len(enc.stages) + 1):  # stages=n: the first n maps, the same values, nothing deeper run
        with torch.no_grad():
            first = enc(x, n)
        assert len(first) == n
        for a, b in zip(first, outs, strict=False):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", TINY)
def test_blocks_are_same_shape(name: str) -> None:
    enc = _tiny(name)
    with torch.no_grad():
        h = enc.stem(_image(1))
        for i, stage in enumerate(enc.stages):
            h = stage.downsample(h)
            assert tuple(h.shape) == enc.block_input_shape(i), f"stage {i} downsample"
            for j, block in enumerate(stage.blocks):
                out = block(h)
                assert out.shape == h.shape, f"stage {i} block {j}: {tuple(h.shape)} -> {tuple(out.shape)}"
                h = out


def test_features_equal_timm() -> None:
    """The re-arranged modules compute timm's own features (Swin: final norm on the last stage only)."""
    torch.manual_seed(0)
    cfg = dict(SWIN_VARIANTS["swin_test"])
    swin = SwinTransformer(img_size=HW, patch_size=4, num_classes=0, **cfg).eval()
    enc = SwinEncoder(swin, name="swin_test", img_size=HW, dynamic_img_size=False)
    x = _image()
    with torch.no_grad():
        ref = swin.forward_intermediates(x, norm=True, intermediates_only=True)
        torch.testing.assert_close(enc(x), ref)
    from timm.models import efficientnet as timm_effnet

    cnn = timm_effnet._gen_efficientnet_lite("efficientnet_lite0", channel_multiplier=0.25, num_classes=0).eval()
    enc = EfficientNetEncoder(cnn, name="efficientnet_lite0_test", img_size=HW)
    with torch.no_grad():
        ref = cnn.forward_intermediates(x, indices=[1, 2, 3, 4], intermediates_only=True)
        torch.testing.assert_close(enc(x), ref)


@pytest.mark.parametrize("name", TINY)
def test_depth_override_keeps_first_blocks(name: str) -> None:
    full = _tiny(name, seed=0)
    short = _tiny(name, seed=0, depths=SHORT[name])
    assert short.depths == SHORT[name]
    assert short.out_channels == full.out_channels
    via_method = full.with_depths(SHORT[name])
    assert via_method.depths == SHORT[name] and full.depths == EXPECTED[name][1]  # the original is untouched
    for enc in (short, via_method):
        for i, d in enumerate(SHORT[name]):
            assert enc.timm_map["stages"][i]["blocks"] == full.timm_map["stages"][i]["blocks"][:d]
            for j in range(d):
                for p, q in zip(
                    enc.stages[i].blocks[j].parameters(), full.stages[i].blocks[j].parameters(), strict=True
                ):
                    assert torch.equal(p, q)
            for p, q in zip(enc.stages[i].downsample.parameters(), full.stages[i].downsample.parameters(), strict=True):
                assert torch.equal(p, q)
    with torch.no_grad():
        outs = short(_image())
    assert [o.shape[1] for o in outs] == full.out_channels
    with pytest.raises(ValueError, match="cannot keep"):
        full.with_depths(tuple(d + 1 for d in full.depths))
    with pytest.raises(ValueError, match="4 values"):
        full.with_depths((1, 1))


def test_swin_short_keeps_shift_parity_and_deeper_swin() -> None:
    full = _tiny("swin_test")
    deeper = _tiny("swin_test", depths=(3, 2, 2, 2))
    assert deeper.depths == (3, 2, 2, 2)
    kinds = [deeper.block_kind(0, j) for j in range(3)]
    assert kinds == ["w4x4_shift0_h1", "w4x4_shift2x2_h1", "w4x4_shift0_h1"]  # block j is shifted iff j is odd
    short = full.with_depths((1, 2, 1, 2))
    assert short.block_kind(1, 1) == full.block_kind(1, 1) == "w4x4_shift2x2_h1"
    with torch.no_grad():
        assert deeper(_image())[0].shape == (2, 16, 16, 24)


def test_swin_tiny_short_signatures_match_full() -> None:
    full = build_encoder("swin_tiny")
    short = full.with_depths((1, 2, 3, 2))  # [ST-NAS] Swin Short
    assert short.depths == (1, 2, 3, 2)
    for i, d in enumerate(short.depths):
        for j in range(d):
            assert short.block_signature(i, j) == full.block_signature(i, j)
    assert full.block_signature(2, 0) == "swin_tiny/s2/b0/w7x7_shift0_h12/1x20x36x384"
    assert full.block_signature(2, 1) == "swin_tiny/s2/b1/w7x7_shift3x3_h12/1x20x36x384"


def test_block_signatures() -> None:
    enc = _tiny("swin_test")
    unshifted, shifted = enc.block_signature(0, 0), enc.block_signature(0, 1)
    assert unshifted == "swin_test/s0/b0/w4x4_shift0_h1/1x16x24x16"
    assert shifted == "swin_test/s0/b1/w4x4_shift2x2_h1/1x16x24x16"
    assert unshifted.split("/")[3] != shifted.split("/")[3]  # the block kind differs, not only the index
    again = _tiny("swin_test", seed=5)
    sigs = {(i, j): enc.block_signature(i, j) for i in range(4) for j in range(enc.depths[i])}
    assert sigs == {(i, j): again.block_signature(i, j) for i in range(4) for j in range(again.depths[i])}
    assert len(set(sigs.values())) == len(sigs)
    assert enc.block_signature(0, 0, (128, 192)).endswith("/1x32x48x16")
    cnn = _tiny("efficientnet_lite0_test")
    assert cnn.block_signature(3, 2) == "efficientnet_lite0_test/s3/b2/ir_k5_e6/1x48x2x3"
    with pytest.raises(IndexError):
        cnn.block_signature(0, 1)


def test_swin_input_size() -> None:
    enc = _tiny("swin_test")
    with pytest.raises(ValueError, match="dynamic_img_size"):
        enc(_image(1, (32, 64)))
    dyn = _tiny("swin_test", dynamic_img_size=True)
    with torch.no_grad():
        outs = dyn(_image(1, (32, 64)))
    assert [tuple(o.shape[-2:]) for o in outs] == [(8, 16), (4, 8), (2, 4), (1, 2)]
    with pytest.raises(ValueError, match="multiples of 4"):
        build_encoder("swin_test", img_size=(66, 96))


@pytest.mark.parametrize("name", ["swin_test", "mobilenetv2_test"])
def test_imagenet_only_for_efficientnet_lite0(name: str) -> None:
    with pytest.raises(ValueError, match="only available for efficientnet_lite0"):
        build_encoder(name, img_size=HW, weights="imagenet")


@pytest.mark.slow
def test_full_swin_param_counts_and_padding() -> None:
    tiny = build_encoder("swin_tiny")
    assert tiny.out_channels == EXPECTED["swin_tiny"][0] and tiny.depths == EXPECTED["swin_tiny"][1]
    assert sum(p.numel() for p in tiny.parameters()) == pytest.approx(27.52e6, rel=0.005)
    # SPEC: at 320x576 the last stage is 10x18, padded to whole 7x7 windows: 14x21 = 294 tokens, 114 of them padding
    h, w = tiny.feature_hw(3)
    wh, ww = tiny.stages[3].blocks[0].window_size
    padded = math.ceil(h / wh) * wh * math.ceil(w / ww) * ww
    assert ((h, w), padded, padded - h * w) == ((10, 18), 294, 114)
    base = build_encoder("swin_base")
    assert base.out_channels == EXPECTED["swin_base"][0] and base.depths == EXPECTED["swin_base"][1]
    assert sum(p.numel() for p in base.parameters()) == pytest.approx(86.74e6, rel=0.005)
    assert sum(p.numel() for p in base.with_depths((1, 2, 3, 2)).parameters()) < 0.5 * 86.74e6


@pytest.mark.slow
@pytest.mark.parametrize("name", ["swin_tiny", "mobilenetv2", "efficientnet_lite0"])
def test_full_size_forward_320x576(name: str) -> None:
    enc = build_encoder(name).eval()
    with torch.no_grad():
        outs = enc(torch.randn(1, 3, 320, 576))
    channels, depths = EXPECTED[name]
    assert enc.depths == depths
    assert [tuple(o.shape) for o in outs] == [
        (1, c, 320 // s, 576 // s) for c, s in zip(channels, (4, 8, 16, 32), strict=True)
    ]
    assert all(torch.isfinite(o).all() for o in outs)


def test_efficientnet_taps_match_timm_feature_info() -> None:
    for name, timm_name in [("mobilenetv2", "mobilenetv2_100"), ("efficientnet_lite0", "efficientnet_lite0")]:
        info = timm.create_model(timm_name, pretrained=False).feature_info
        assert build_encoder(name).out_channels == [f["num_chs"] for f in info[1:]]
