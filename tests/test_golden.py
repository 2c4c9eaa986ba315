"""Golden outputs (torchvision style): fixed-seed models at tiny sizes must keep computing the same numbers.

Each case seeds torch, builds a model through the public builders, runs a fixed input through the clip forward and the
streaming path, and compares with tensors stored in ``tests/golden/``. A refactor that changes what a model computes,
or how its weights are initialised, fails here loudly. When such a change is intended, regenerate the files
explicitly and say why in the commit::

    VIDNAS_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py

(the test then writes the files and fails, so a regeneration never passes silently).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from vidnas.config import Config, DataConfig, ModelConfig
from vidnas.models import Arch, build_model
from vidnas.models.cells import Cell, CellGenotype, DynamicCellModel, build_static_segmenter, cell_in_channels

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("VIDNAS_REGEN_GOLDEN", "") == "1"
H, W = 32, 48
ATOL = 1e-5

# every decoder op kind appears at least once: identity, spatial, separable, temporal (k3 and k5)
DERIVED_OPS = (
    "identity", "spatial_k3", "sep_k3", "temporal_k3",
    "temporal_k5", "sep_k5", "spatial_k5", "identity",
)  # fmt: skip


def _frames(t: int) -> torch.Tensor:
    return torch.randn(1, t, 3, H, W, generator=torch.Generator().manual_seed(123))  # (1, T, 3, H, W)


def _stream(model: torch.nn.Module, frames: torch.Tensor) -> torch.Tensor:
    streamer = model.stream(batch_size=1)
    outs = [streamer.push(frames[:, i]) for i in range(frames.shape[1])]
    outs = [o for o in outs if o is not None] + list(streamer.flush())
    return torch.stack(outs, dim=1)  # (1, T, K, H, W)


def _sub(logits: torch.Tensor) -> torch.Tensor:
    """Every 4th pixel of (1, T, K, H, W) logits: small files, and still every layer's output shows in them."""
    return logits[..., ::4, ::4].contiguous()


def _check(name: str, outputs: dict[str, torch.Tensor]) -> None:
    path = GOLDEN / f"{name}.pt"
    if REGEN:
        GOLDEN.mkdir(exist_ok=True)
        torch.save({k: v.detach().clone() for k, v in outputs.items()}, path)  # already subsampled: a few kB
        pytest.fail(f"regenerated {path}; rerun without VIDNAS_REGEN_GOLDEN to check it")
    expected = torch.load(path)
    assert set(expected) == set(outputs)
    for key, value in outputs.items():
        torch.testing.assert_close(value, expected[key], atol=ATOL, rtol=1e-4, msg=f"{name}: {key} changed")


@torch.no_grad()
def test_golden_derived_stnas_model() -> None:
    """A derived ST-NAS model (shortened Swin, searched decoder with every op kind), window 3, causal."""
    cfg = Config(data=DataConfig(height=H, width=W, window=3),
                 model=ModelConfig(encoder="swin_test", decoder_channels=8, decoder_dilations=(1, 2)))
    arch = Arch(encoder="swin_test", depths=(1, 2, 1, 1), decoder_ops=DERIVED_OPS, full_channels=True, window=3,
                channels=8, dilations=(1, 2), name="golden")
    torch.manual_seed(0)
    model = build_model(cfg, arch, num_classes=3).eval()
    frames = _frames(5)
    _check("stnas_derived", {"clip": _sub(model(frames)), "stream": _sub(_stream(model, frames))})


@torch.no_grad()
def test_golden_cell_model() -> None:
    """A fixed dynamic cell (two layers, reading prev_dec, the current encoder maps and an earlier layer) on arch2."""
    cfg = Config(data=DataConfig(height=H, width=W, window=1),
                 model=ModelConfig(encoder="mobilenetv2_test", decoder="arch2"))
    geno = CellGenotype.from_tokens([[2, 1, 0, 3, 0], [5, 3, 1, 9, 3]],
                                    ops=("conv1x1", "conv3x3", "sep3x3", "skip", "gap", "conv3x3_d3", "sep5x5",
                                         "sep3x3_d3", "sep5x5_d6", "deform3x3"),
                                    aggregations=("sum", "concat", "attention", "predictive", "affine", "conv3d"))
    torch.manual_seed(0)
    static = build_static_segmenter(cfg, num_classes=3).eval()
    cell = Cell(geno, in_channels=cell_in_channels(static), num_classes=3)
    model = DynamicCellModel(static, cell, window=3).eval()
    frames = _frames(4)
    _check("cell_model", {"clip": _sub(model(frames)), "stream": _sub(_stream(model, frames))})


# the multi-scale family (``mstcn``): its trunk reads every decoder op kind; stride 8 and 4 paths read a temporal op
MS_TRUNK_OPS = ("identity", "temporal_k3", "sep_k3", "spatial_k3", "temporal_k5", "sep_k5", "spatial_k5", "identity")
MS_SCALE_OPS = ("temporal_k3", "sep_k3", "spatial_k3", "identity", "spatial_k3", "sep_k3")


def _ms_cfg() -> Config:
    return Config(data=DataConfig(height=H, width=W, window=3),
                  model=ModelConfig(encoder="mobilenetv2_test", decoder="mstcn", decoder_channels=8,
                                    decoder_dilations=(1, 2), fuse_channels=8))


@torch.no_grad()
def test_golden_mstcn_fpn_model() -> None:
    """The multi-scale decoder with FPN-style fusion (strides 32, 8, 4), searched ops on trunk and paths, causal."""
    arch = Arch(encoder="mobilenetv2_test", decoder="mstcn", window=3, causal=True, channels=8, dilations=(1, 2),
                scales=(32, 8, 4), fuse_channels=8, decoder_ops=MS_TRUNK_OPS, scale_ops=MS_SCALE_OPS, name="golden")
    torch.manual_seed(0)
    model = build_model(_ms_cfg(), arch, num_classes=3).eval()
    frames = _frames(5)
    _check("mstcn_fpn", {"clip": _sub(model(frames)), "stream": _sub(_stream(model, frames))})


@pytest.mark.parametrize("fusion", ["arch2", "arch2_res"])
@torch.no_grad()
def test_golden_mstcn_arch2_fusion_model(fusion: str) -> None:
    """The arch2 fusions: arch2's per-frame decoder on the temporal trunk (``arch2``) or the trunk as a branch on its
    stride-32 lateral (``arch2_res``, whose zero-initialised branch gets fixed weights so that the past counts)."""
    arch = Arch(encoder="mobilenetv2_test", decoder="mstcn", window=3, causal=True, channels=8, dilations=(1, 2),
                scales=(32, 16, 8, 4), fuse_channels=8, decoder_ops=MS_TRUNK_OPS, fusion=fusion, name="golden")
    torch.manual_seed(0)
    model = build_model(_ms_cfg(), arch, num_classes=3).eval()
    if fusion == "arch2_res":
        bn = model.decoder.proj[1]
        bn.weight.copy_(torch.linspace(0.5, 1.5, bn.weight.numel()))
    frames = _frames(5)
    _check(f"mstcn_{fusion}", {"clip": _sub(model(frames)), "stream": _sub(_stream(model, frames))})
