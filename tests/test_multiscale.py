"""The multi-scale spatial-temporal decoder family (``mstcn``): shapes, streaming equals the clip forward (causal and
centred), architecture files round-trip, searchable slots, and the per-scale temporal ops reach across frames."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vidnas.config import Config, DataConfig, ModelConfig
from vidnas.models import Arch, build_model, load_model
from vidnas.models.decoders import MultiScaleDecoder
from vidnas.models.multiscale import MultiScaleSegmenter

H, W, K = 64, 96, 3
TRUNK_OPS = ("identity", "temporal_k3", "sep_k3", "spatial_k3") * 2


def cfg(window: int = 3) -> Config:
    return Config(data=DataConfig(height=H, width=W, window=window),
                  model=ModelConfig(encoder="mobilenetv2_test", decoder="mstcn", decoder_channels=16,
                                    decoder_dilations=(1, 2), fuse_channels=8))


def arch(causal: bool = True, **kw: object) -> Arch:
    base = Arch(encoder="mobilenetv2_test", decoder="mstcn", window=3, causal=causal, channels=16, dilations=(1, 2),
                scales=(32, 8, 4), fuse_channels=8, name="ms")
    return dataclasses.replace(base, **kw)


def test_shapes_and_default_from_config() -> None:
    model = build_model(cfg(), num_classes=K)
    assert isinstance(model, MultiScaleSegmenter) and model.scales == (32, 8, 4)
    out = model(torch.randn(2, 3, 3, H, W))
    assert out.shape == (2, 3, K, H, W)
    # reduce (k 3: 2 frames) + layer d=1 (conv1 2 + conv2 2) + layer d=2 (conv1 4 + conv2 2); per-frame paths add 0
    assert model.decoder.temporal_receptive_field() == 1 + 2 + (2 + 2) + (4 + 2)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("scale_ops", [None, ("temporal_k3", "identity", "spatial_k3", "sep_k3", "temporal_k3",
                                              "spatial_k3")])
def test_stream_equals_clip(causal: bool, scale_ops: tuple[str, ...] | None) -> None:
    torch.manual_seed(0)
    c = cfg()
    assert_stream_equals_clip(build_model(c, arch(causal, decoder_ops=TRUNK_OPS, scale_ops=scale_ops),
                                          num_classes=K).eval())


def assert_stream_equals_clip(model: torch.nn.Module) -> None:
    """Six frames pushed through ``model.stream()`` give the clip forward of each frame's window (edges repeated)."""
    frames = torch.randn(1, 6, 3, H, W)
    streamer = model.stream(batch_size=1)
    outs = [streamer.push(frames[:, t]) for t in range(6)]
    streamed = torch.stack([o for o in outs if o is not None] + streamer.flush(), dim=1)  # (1, 6, K, H, W)
    target = model.target_index
    with torch.no_grad():
        for t in range(6):
            idx = [min(max(t - target + i, 0), 5) for i in range(3)]  # the data layer's window, edges repeated
            ref = model(frames[:, idx])[:, target]
            torch.testing.assert_close(streamed[:, t], ref, atol=1e-5, rtol=1e-4)


def test_a_temporal_fine_path_reads_other_frames_and_a_spatial_one_does_not() -> None:
    torch.manual_seed(0)
    for ops, reads in ((("identity", "identity", "spatial_k3"), False), (("temporal_k3", "identity", "spatial_k3"),
                                                                          True)):
        dec = MultiScaleDecoder([8, 4], K, channels=8, fuse_channels=4, dilations=(1,), layer_ops=("identity",) * 4,
                                scale_ops=ops).eval()
        coarse, fine = torch.randn(1, 8, 3, 2, 3), torch.randn(1, 4, 3, 8, 12)
        base = dec([coarse, fine])[:, :, -1]
        fine2 = fine.clone()
        fine2[:, :, 0] += 5.0  # change the fine map of the first frame only
        changed = not torch.allclose(dec([coarse, fine2])[:, :, -1], base)
        assert changed == reads


def test_arch_file_round_trip_and_load(tmp_path) -> None:
    a = arch(decoder_ops=TRUNK_OPS, scale_ops=("temporal_k3", "identity", "spatial_k3", "sep_k3", "identity",
                                               "spatial_k5"))
    path = a.save(tmp_path / "arch.json")
    b = Arch.load(path)
    assert b == a and b.scale_ops == a.scale_ops and b.scales == (32, 8, 4)
    model = build_model(cfg(), b, num_classes=K)
    slots = model.decoder.searchable_slots()
    assert len(slots) == 8 + 6 and slots[8][0] == "paths.0.0" and slots[-1][0] == "fuses.1.0"
    from vidnas.checkpoint import save_checkpoint
    from vidnas.config import config_to_dict

    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "config": config_to_dict(cfg()),
                                        "arch": b.to_dict(), "num_classes": K})
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.kind == "window" and isinstance(loaded.model, MultiScaleSegmenter)


@pytest.mark.parametrize(("change", "field"), [({"scales": (8, 32)}, "scales"), ({"scales": (32, 6)}, "scales"),
                                               ({"scale_ops": ("identity",)}, "scale_ops")])
def test_bad_multiscale_arch(change: dict, field: str) -> None:
    from vidnas.models import ArchError

    with pytest.raises(ArchError, match=field):
        arch(**change)


def test_protocol_flops_follow_the_window_and_the_step() -> None:
    """The paper count decodes one window per scale of the requested length; the incremental count is one step."""
    from vidnas.bench import count_flops
    from vidnas.bench.protocol import component_flops

    model = build_model(cfg(), arch(decoder_ops=TRUNK_OPS), num_classes=K).eval()
    feats = model.encode(torch.zeros(1, 3, H, W))
    by_window = {}
    for w in (3, 5):
        counted = component_flops(model, (H, W), window=w)
        windows = [f.unsqueeze(2).expand(-1, -1, w, -1, -1).contiguous() for f in feats]
        assert counted["decoder"] == count_flops(model.decoder, windows) > 0
        assert counted["encoder"] == count_flops(model.encode, torch.zeros(1, 3, H, W))
        by_window[w] = counted["decoder"]
    assert by_window[5] > by_window[3]
    (_, _), (dec_fn, dec_args) = model.protocol_parts(torch.zeros(1, 3, H, W))
    assert count_flops(dec_fn, *dec_args) == by_window[3]  # the model's own window: as protocol_parts says
    inc = component_flops(model, (H, W), incremental=True)
    assert 0 < inc["decoder"] < by_window[3] and inc["encoder"] == component_flops(model, (H, W))["encoder"]
    centred = build_model(cfg(), arch(False, decoder_ops=TRUNK_OPS), num_classes=K).eval()
    assert component_flops(centred, (H, W), incremental=True) is None


# ------------------------------------------------------------------ fusion arch2: arch2's decoder on the trunk


def a2(causal: bool = True, **kw: object) -> Arch:
    return arch(causal, **{"fusion": "arch2", "scales": (32, 16, 8, 4), **kw})


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("fusion", ["arch2", "arch2_res"])
def test_arch2_fusion_stream_equals_clip(causal: bool, fusion: str) -> None:
    torch.manual_seed(0)
    model = build_model(cfg(), a2(causal, decoder_ops=TRUNK_OPS, fusion=fusion), num_classes=K).eval()
    assert type(model.decoder).__name__ == "StaticFusionDecoder" and model.scales == (32, 16, 8, 4)
    if fusion == "arch2_res":  # its branch starts at zero: give it weight, so the past reaches the output
        torch.nn.init.uniform_(model.decoder.proj[1].weight, 0.5, 1.5)
    assert_stream_equals_clip(model)


def test_arch2_res_starts_as_the_arch2_checkpoint_it_is_initialised_from(tmp_path) -> None:
    """``--init`` from a per-frame arch2 checkpoint: every arch2 tensor lands (renamed, 2-D weights given a time axis)
    and, its branch at zero, the temporal model's logits are arch2's on every frame; training the branch makes the
    previous frames count."""
    from vidnas.checkpoint import save_checkpoint
    from vidnas.config import config_to_dict
    from vidnas.engine.train import init_from

    per_frame = dataclasses.replace(cfg(1), model=dataclasses.replace(cfg().model, decoder="arch2"))
    torch.manual_seed(3)
    arch2 = build_model(per_frame, num_classes=K)
    with torch.no_grad():  # trained-looking BatchNorm statistics, so a mapping mistake cannot hide behind defaults
        for m in arch2.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    save_checkpoint(tmp_path / "arch2.pt", {"model": arch2.state_dict(), "config": config_to_dict(per_frame),
                                            "num_classes": K})
    temporal_cfg = dataclasses.replace(cfg(), model=dataclasses.replace(cfg().model, fusion="arch2_res",
                                                                         fuse_channels=64,
                                                                         decoder_scales=(32, 16, 8, 4)))
    torch.manual_seed(4)
    model = build_model(temporal_cfg, num_classes=K)
    theirs = model.translate_init_state(arch2.state_dict())
    assert set(theirs) <= set(model.state_dict())  # every arch2 tensor has a place
    assert {k for k in model.state_dict() if k not in theirs} == {k for k in model.state_dict()
                                                                   if ".res_layers." in k or ".proj." in k}
    init_from(model, tmp_path / "arch2.pt", temporal_cfg)
    arch2.eval()
    model.eval()
    clip = torch.randn(2, 3, 3, H, W)
    with torch.no_grad():
        out = model(clip)  # (B, T, K, H, W)
        ref = torch.stack([arch2(clip[:, t:t + 1])[:, 0] for t in range(3)], dim=1)
        assert float((out - ref).abs().max()) <= 1e-4
        torch.nn.init.uniform_(model.decoder.proj[1].weight, 0.5, 1.5)  # the branch, once trained
        moved = model(torch.cat([clip[:, :1] + 1.0, clip[:, 1:]], dim=1))[:, -1]
        assert float((moved - model(clip)[:, -1]).abs().max()) > 1e-3


def test_arch2_fusion_trains_with_auxiliary_heads_from_the_config() -> None:
    c = dataclasses.replace(cfg(), model=dataclasses.replace(cfg().model, fusion="arch2",
                                                             decoder_scales=(32, 16, 8, 4)))
    model = build_model(c, num_classes=K).train()
    logits, aux = model(torch.randn(2, 3, 3, H, W))
    assert logits.shape == (2, 3, K, H, W) and [a.shape for a in aux] == [(2, 3, K, H, W)] * 2
    assert model.eval()(torch.randn(1, 3, 3, H, W)).shape == (1, 3, K, H, W)  # eval: the logits only
    # the trunk is the fpn decoder's (same receptive field); everything after it is per frame
    assert model.decoder.temporal_receptive_field() == 1 + 2 + (2 + 2) + (4 + 2)


def test_arch2_fusion_arch_file_round_trip_and_load(tmp_path) -> None:
    a = a2(decoder_ops=TRUNK_OPS)
    b = Arch.load(a.save(tmp_path / "arch.json"))
    assert b == a and b.fusion == "arch2"
    assert '"fusion": "arch2"' in (tmp_path / "arch.json").read_text()
    model = build_model(cfg(), b, num_classes=K)
    assert [s[0] for s in model.decoder.searchable_slots()][:1] == ["res_layers.0.conv1.0"]
    from vidnas.checkpoint import save_checkpoint
    from vidnas.config import config_to_dict

    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "config": config_to_dict(cfg()),
                                        "arch": b.to_dict(), "num_classes": K})
    loaded = load_model(tmp_path / "m.pt")
    assert type(loaded.model.decoder).__name__ == "StaticFusionDecoder"
    # an older arch.json without the field is an fpn model
    assert Arch.from_dict({k: v for k, v in arch().to_dict().items() if k != "fusion"}).fusion == "fpn"


@pytest.mark.parametrize(("change", "field"), [({"fusion": "unet"}, "fusion"),
                                               ({"fusion": "arch2"}, "scales"),
                                               ({"fusion": "arch2", "scales": (32, 16, 8, 4),
                                                 "scale_ops": ("identity",) * 9}, "scale_ops"),
                                               ({"fusion": "arch2_res", "scales": (32, 16, 8, 4),
                                                 "full_channels": True}, "full_channels")])
def test_bad_fusion(change: dict, field: str) -> None:
    from vidnas.models import ArchError

    with pytest.raises(ArchError, match=field):
        arch(**change)


def test_context_ablation_replaces_each_window_by_its_target_frame() -> None:
    """``evaluate_clips(context="target")`` scores each window with its frames replaced by the target frame (what
    ``vidnas eval --context-ablation`` reports): equal to scoring such windows by hand, unequal to the real ones."""
    from vidnas.engine.evaluate import context_changed_pixels, evaluate_clips

    torch.manual_seed(0)
    model = build_model(cfg(), arch(decoder_ops=TRUNK_OPS, scale_ops=("temporal_k3", "identity", "spatial_k3") * 2),
                        num_classes=K).eval()
    gen = torch.Generator().manual_seed(1)
    clips = [{"frames": torch.randn(3, 3, H, W, generator=gen), "masks": torch.randint(0, K, (3, H, W), generator=gen),
              "target": 2} for _ in range(4)]
    repeated = [{**c, "frames": c["frames"][2:3].expand(3, -1, -1, -1).clone()} for c in clips]
    alone = evaluate_clips(model, clips, K, 255, context="target")
    assert alone["per_class_iou"] == evaluate_clips(model, repeated, K, 255)["per_class_iou"]
    assert alone["per_class_iou"] != evaluate_clips(model, clips, K, 255)["per_class_iou"]
    assert 0.0 < context_changed_pixels(model, clips) < 1.0
    assert context_changed_pixels(model, repeated) == 0.0
