"""The training recipe (schedules with warm-up, decoder learning-rate multiplier, scale + crop augmentation, balanced
and OHEM losses) and the validation protocol whose spacing matches training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidnas.config import load_config
from vidnas.data import ClipDataset, open_source, val_data_config
from vidnas.data.transforms import ClipParams, ClipTransform
from vidnas.engine.evaluate import evaluate_stream
from vidnas.engine.losses import segmentation_loss
from vidnas.engine.train import build_optimizer, lr_factor, train, weights_fingerprint
from vidnas.models import build_model

RECIPE = ["train.epochs=2", "data.synthetic_videos=3", "data.synthetic_frames=6", "train.batch_size=2",
          "train.max_steps_per_epoch=3", "train.schedule=cosine", "train.warmup_epochs=0.5",
          "train.decoder_lr_scale=4", "train.encoder_lr_scale=0.5", "data.scale_range=0.5,2.0", "train.loss=balanced",
          "data.rotate_degrees=5"]


def test_lr_factor_by_hand() -> None:
    assert lr_factor(0, 10, schedule="constant") == 1.0
    assert lr_factor(0, 10, schedule="constant", warmup_steps=4) == pytest.approx(0.25)
    assert lr_factor(3, 10, schedule="constant", warmup_steps=4) == pytest.approx(1.0)
    assert lr_factor(5, 10, schedule="poly") == pytest.approx(0.5 ** 0.9)
    assert lr_factor(5, 10, schedule="cosine") == pytest.approx(0.5)
    expected = 0.5 * 0.5 * (1 + math.cos(0.1 * math.pi))  # warm-up 2/4 times the cosine at step 1
    assert lr_factor(1, 10, schedule="cosine", warmup_steps=4) == pytest.approx(expected)


def test_decoder_and_encoder_learning_rates() -> None:
    cfg = load_config("tiny", ["train.lr=1e-3", "train.decoder_lr_scale=4", "train.encoder_lr_scale=0.5"])
    model = build_model(cfg, num_classes=3)
    groups = build_optimizer(model, cfg).param_groups
    assert [g["lr"] for g in groups] == pytest.approx([4e-3, 5e-4])
    enc = {id(p) for p in model.encoder.parameters()}
    assert all(id(p) not in enc for p in groups[0]["params"]) and all(id(p) in enc for p in groups[1]["params"])


def test_losses_by_hand() -> None:
    # two pixels of class 0 (easy) and one of class 1 (hard), one ignored
    logits = torch.tensor([[4.0, 0.0], [4.0, 0.0], [0.0, 0.0], [9.0, 9.0]]).T.reshape(1, 1, 2, 1, 4)
    masks = torch.tensor([0, 0, 1, 255]).reshape(1, 1, 1, 4)
    ce = [-math.log(math.exp(4) / (math.exp(4) + 1))] * 2 + [math.log(2)]
    assert segmentation_loss(logits, masks, 255).item() == pytest.approx(sum(ce) / 3)
    w = torch.tensor([1.0, 3.0])
    assert segmentation_loss(logits, masks, 255, weight=w).item() == pytest.approx((ce[0] * 2 + 3 * ce[2]) / 5)
    assert segmentation_loss(logits, masks, 255, ohem_keep=0.3).item() == pytest.approx(ce[2])  # the hardest 1 of 3
    empty = torch.full_like(masks, 255)
    assert segmentation_loss(logits, empty, 255, ohem_keep=0.3).item() == 0.0


def test_scale_crop_is_identical_across_the_frames_of_a_clip() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (40, 60)).astype(np.int64)
    t = ClipTransform(40, 60, train=True, hflip=True, rotate_degrees=10, scale_range=(0.5, 2.0))
    gen = torch.Generator().manual_seed(3)
    for _ in range(6):
        params = t.sample(gen)
        frames, masks = t([img] * 4, [mask] * 4, params)
        assert all(torch.equal(frames[0], f) for f in frames[1:]) and all(torch.equal(masks[0], m) for m in masks[1:])
        assert set(masks.unique().tolist()) <= {0, 1, 2, 255}  # nearest-neighbour masks: no new label values


def test_scale_crop_geometry() -> None:
    """Zoom 2 at the top-left corner shows the top-left quarter, enlarged; zoom 0.5 pads with ignore / the mean."""
    h, w = 8, 12
    mask = torch.arange(h * w).reshape(h, w) % 7
    img = torch.zeros(3, h, w, dtype=torch.uint8)
    t = ClipTransform(h, w, train=True)
    _, m2 = t.apply(img[None], mask[None], ClipParams(scale=2.0, crop=(0.0, 0.0)))
    up = F.interpolate(mask[None, None].float(), size=(2 * h, 2 * w), mode="nearest-exact")[0, 0].long()
    assert torch.equal(m2[0], up[:h, :w])
    x5, m5 = t.apply(img[None], mask[None], ClipParams(scale=0.5, crop=(1.0, 1.0)))
    assert (m5[0, : h // 2] == 255).all() and (m5[0, :, : w // 2] == 255).all()  # padded top and left
    assert (m5[0, h // 2:, w // 2:] != 255).all()
    assert torch.allclose(x5[0, :, 0, 0], torch.zeros(3), atol=1e-5)  # the mean colour is 0 after normalisation


def test_recipe_repeats_bit_for_bit(tmp_path) -> None:
    cfg = load_config("tiny", RECIPE)
    a = train(cfg, tmp_path / "a", show_progress=False)
    b = train(cfg, tmp_path / "b", show_progress=False)
    assert a.history == b.history
    from vidnas.models import load_model

    fa = weights_fingerprint(load_model(tmp_path / "a" / "checkpoints" / "last.pt").model)
    fb = weights_fingerprint(load_model(tmp_path / "b" / "checkpoints" / "last.pt").model)
    assert fa == fb


def test_ohem_and_balanced_train(tmp_path) -> None:
    for loss in ("ohem", "balanced"):
        res = train(load_config("tiny", [*RECIPE, f"train.loss={loss}", "train.epochs=1"]), tmp_path / loss,
                    show_progress=False)
        assert math.isfinite(res.history[0]["train_loss"])


def test_val_frame_stride_matches_the_training_spacing() -> None:
    cfg = load_config("tiny", ["data.synthetic_videos=2", "data.synthetic_frames=12", "data.val_frame_stride=3"])
    source = open_source(cfg.data)
    dense = ClipDataset(source, "val", cfg.data)
    matched = ClipDataset(source, "val", val_data_config(cfg.data))
    assert len(dense) == len(matched)  # every annotated frame is still a target
    last = len(dense) - 1  # far from the video start, where windows repeat the first frame
    nums_dense = dense[last]["frame_numbers"].tolist()
    nums_matched = matched[last]["frame_numbers"].tolist()
    assert np.diff(nums_matched).tolist() == [3 * d for d in np.diff(nums_dense).tolist()]
    model = build_model(cfg, num_classes=source.num_classes).eval()
    full = evaluate_stream(model, source, "val", cfg.data)
    strided = evaluate_stream(model, source, "val", cfg.data, stride=3)
    assert strided["frames"] == full["frames"] and strided["annotated"] == full["annotated"]  # every frame, once
    assert strided["stride"] == 3


@pytest.mark.parametrize("decoder", ["sptcn", "mstcn"])
def test_context_frames_without_encoder_gradients(decoder: str) -> None:
    """``grad_frames``: the same logits; encoder gradients only through the flagged frames (checked against the
    context features detached by hand); the decoder's gradients unchanged."""
    from vidnas.models.layers import encode_clip

    cfg = load_config("tiny", [f"model.decoder={decoder}", "data.window=3"])
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=3).eval()  # eval: BatchNorm uses running statistics in both forwards
    frames = torch.randn(2, 3, 3, cfg.data.height, cfg.data.width)
    flags = [False, False, True]

    def grads(out: torch.Tensor) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        out[:, -1].square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    full = model(frames)
    g_full = grads(full)
    split = model(frames, grad_frames=flags)
    g_split = grads(split)
    torch.testing.assert_close(split, full, rtol=1e-5, atol=1e-6)
    # by hand: encode every frame, detach the context frames' features, decode as the model does
    feats = encode_clip(model.encode, frames)
    feats = [torch.cat([f[:, :, :2].detach(), f[:, :, 2:]], dim=2) for f in feats]
    h, w = frames.shape[-2:]
    if decoder == "sptcn":
        ref = model.decode(feats[0], (h, w))
    else:
        logits = model.decoder(feats)  # (B, K, T, h', w')
        b, k, t = logits.shape[:3]
        ref = model.upsample(logits.transpose(1, 2).reshape(b * t, k, *logits.shape[-2:]), (h, w))
        ref = ref.reshape(b, t, k, h, w)
    g_ref = grads(ref)
    assert g_split.keys() == g_ref.keys()
    for name in g_ref:
        torch.testing.assert_close(g_split[name], g_ref[name], rtol=1e-4, atol=1e-7, msg=name)
    enc = [n for n in g_ref if n.startswith("encoder.")]
    assert enc and any(not torch.allclose(g_full[n], g_split[n]) for n in enc)  # the context frames did count
    assert all(torch.allclose(g_full[n], g_split[n], rtol=1e-4, atol=1e-7) for n in g_ref if n not in enc)


def test_context_grad_false_trains_and_repeats(tmp_path) -> None:
    from vidnas.engine.train import context_grad_frames

    cfg = load_config("tiny", [*RECIPE, "train.epochs=1", "train.context_grad=false", "data.window=3"])
    assert context_grad_frames(cfg) == [False, False, True]
    assert context_grad_frames(load_config("tiny", ["train.context_grad=false", "data.temporal=centred",
                                                    "data.window=3"])) == [False, True, False]
    assert context_grad_frames(load_config("tiny", ["data.window=3"])) is None
    a = train(cfg, tmp_path / "a", show_progress=False)
    b = train(cfg, tmp_path / "b", show_progress=False)
    assert a.history == b.history and math.isfinite(a.history[0]["train_loss"])
    full = train(load_config("tiny", [*RECIPE, "train.epochs=1", "data.window=3"]), tmp_path / "full",
                 show_progress=False)
    assert full.history[0]["train_loss"] != a.history[0]["train_loss"]


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).parents[1] / "configs").glob("*.yaml")))
def test_every_preset_loads_and_builds(name: str) -> None:
    """Every shipped preset resolves and its model builds (random init, tiny input; the paper presets included)."""
    cfg = load_config(name, ["model.weights=null", "data.height=64", "data.width=96"])
    model = build_model(cfg, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(1, cfg.data.window, 3, 64, 96))
    assert out.shape[-2:] == (64, 96) and torch.isfinite(out).all()


def test_temporal_user_presets_default_to_the_multi_scale_decoder() -> None:
    """The user presets' temporal model is mstcn; the paper's SP-TCN stays in the *_sptcn_cpu presets."""
    for name in ("camvid_effnet_cpu", "davis_effnet_cpu"):
        cfg = load_config(name)
        assert (cfg.model.decoder, cfg.data.window, cfg.data.temporal) == ("mstcn", 3, "causal"), name
    for name in ("camvid_sptcn_cpu", "davis_sptcn_cpu"):
        assert load_config(name).model.decoder == "sptcn", name
