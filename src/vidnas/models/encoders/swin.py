"""Swin Transformer encoders (timm ``SwinTransformer``) with block-level access [ST-NAS Sec. 3.2].

timm's Swin is built for one explicit input size (``img_size``): the patch grid, each block's window / shift and the
shifted-window attention masks are fixed from it, and the patch embedding asserts that inputs match. Feature maps
whose size is not a multiple of the window are padded inside every block's attention (timm pads on the bottom/right):
at 320x576 the stage grids are 80x144, 40x72, 20x36, 10x18 and, with window 7, the last stage attends over 14x21 =
294 tokens of which 114 are padding. ``dynamic_img_size=True`` accepts any size (multiple of 4) by building the
masks on every forward (slower); windows and shifts still come from ``img_size``.

Mapping of timm modules to the contract (``Encoder``): ``stem`` = ``patch_embed`` (conv 4x4 / 4 + LayerNorm, NHWC
out); stage i = ``layers[i]`` with ``downsample`` = its ``PatchMerging`` (``nn.Identity`` in stage 0) and ``blocks``
= its ``SwinTransformerBlock`` list (block j uses shifted windows iff j is odd, as in timm); ``output_layers`` =
identity for stages 0-2 and timm's final ``norm`` on stage 3 (the only place timm applies a norm to features: its
``forward_intermediates(norm=True)``), so an ImageNet checkpoint's final norm is used. Internal layout NHWC; the
returned maps are NCHW.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from timm.models.swin_transformer import SwinTransformer
from torch import nn

from vidnas.models.encoders.base import Encoder, EncoderStage
from vidnas.models.weights import load_weights_into

__all__ = ["SWIN_VARIANTS", "SwinEncoder", "build_swin"]

logger = logging.getLogger(__name__)

# A variant is data: timm SwinTransformer arguments [ST-NAS Sec. 4 / SPEC "Models"].
SWIN_VARIANTS: dict[str, dict] = {
    "swin_tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7),
    "swin_base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=7),
    # tiny CPU test variant: window 4 so 64x96 inputs still have shifted windows and padded attention in stage 2
    "swin_test": dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2), window_size=4),
}


class SwinEncoder(Encoder):
    """A timm ``SwinTransformer`` re-arranged into the ``Encoder`` contract (internal layout NHWC).

    Args:
        model: a timm ``SwinTransformer`` (its classifier head is dropped).
        name: registry name, used in block signatures.
        img_size: (H, W) the model was built for.
        dynamic_img_size: whether the model accepts other input sizes.
    """

    def __init__(self, model: SwinTransformer, *, name: str, img_size: tuple[int, int], dynamic_img_size: bool):
        layers = list(model.layers)
        stages = [EncoderStage(layer.downsample, list(layer.blocks)) for layer in layers]
        channels = [int(layer.blocks[0].dim) if len(layer.blocks) else _stage_dim(layer) for layer in layers]
        timm_map = [
            {
                "downsample": [] if isinstance(layer.downsample, nn.Identity) else [f"layers.{i}.downsample"],
                "blocks": [f"layers.{i}.blocks.{j}" for j in range(len(layer.blocks))],
                "output": ["norm"] if i == len(layers) - 1 else [],
            }
            for i, layer in enumerate(layers)
        ]
        super().__init__(
            name=name,
            img_size=img_size,
            layout="NHWC",
            stem=model.patch_embed,
            stages=stages,
            output_layers=[nn.Identity() for _ in layers[:-1]] + [model.norm],
            out_channels=channels,
            block_channels=channels,
            timm_map={"stem": ["patch_embed"], "stages": timm_map},
        )
        self.dynamic_img_size = dynamic_img_size
        self.num_heads = [_stage_heads(layer) for layer in layers]

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if torch.jit.is_tracing():  # shapes are fixed by the example input when exporting
            return
        hw = (int(x.shape[-2]), int(x.shape[-1]))
        if self.dynamic_img_size:
            if hw[0] % 4 or hw[1] % 4:
                raise ValueError(f"{self.name}: input H and W must be multiples of the patch size 4, got {hw}")
        elif hw != self.img_size:
            raise ValueError(
                f"{self.name} was built for inputs of {self.img_size} (timm's Swin fixes its windows and masks from "
                f"the input size), got {hw}; build it with img_size={hw} or dynamic_img_size=True"
            )

    def feature_hw(self, i: int, input_hw: tuple[int, int] | None = None) -> tuple[int, int]:
        """Patch embedding floors H / 4, W / 4; every patch merging pads odd sizes, i.e. rounds up."""
        h, w = self.img_size if input_hw is None else input_hw
        h, w = h // 4, w // 4
        for _ in range(i):
            h, w = -(-h // 2), -(-w // 2)
        return h, w

    def block_kind(self, i: int, j: int) -> str:
        """``w{wh}x{ww}_shift{sh}x{sw}_h{heads}`` or ``..._shift0_...``, from the block's actual window and shift.

        timm shrinks the window and drops the shift along a side that is no larger than the window, so the stored
        values (not the parity of j alone) decide; for big enough stages block j is shifted iff j is odd.
        """
        block = self.stages[i].blocks[j]
        wh, ww = block.window_size
        sh, sw = block.shift_size
        shift = f"shift{sh}x{sw}" if (sh or sw) else "shift0"
        return f"w{wh}x{ww}_{shift}_h{block.attn.num_heads}"


def _stage_dim(layer: nn.Module) -> int:
    ds = layer.downsample
    return int(ds.out_dim) if hasattr(ds, "out_dim") else int(layer.dim)


def _stage_heads(layer: nn.Module) -> int:
    return int(layer.blocks[0].attn.num_heads) if len(layer.blocks) else 0


def build_swin(
    name: str,
    *,
    img_size: tuple[int, int] = (320, 576),
    depths: Sequence[int] | None = None,
    weights: str | Path | None = None,
    dynamic_img_size: bool = False,
    drop_path_rate: float | None = None,
) -> SwinEncoder:
    """Build a registered Swin variant at ``img_size``.

    Args:
        name: a key of ``SWIN_VARIANTS``.
        img_size: (H, W) of the inputs; multiples of 4 (multiples of 32 avoid rounding).
        depths: blocks per stage; shorter stages keep their first blocks (so block j keeps its shift and its
            pretrained weights), deeper stages add freshly initialised blocks. None = the variant's depths.
        weights: None, or a local timm checkpoint path loaded into the full-depth timm model before truncation.
            ("imagenet" exists only for efficientnet_lite0: no ImageNet Swin weights ship offline.)
        dynamic_img_size: accept any input size (attention masks rebuilt per forward).
        drop_path_rate: stochastic depth; None = timm's default (0.1).
    """
    cfg = dict(SWIN_VARIANTS[name])
    full = tuple(cfg.pop("depths"))
    want = full if depths is None else tuple(int(d) for d in depths)
    if len(want) != len(full) or min(want) < 0:
        raise ValueError(f"{name}: depths must be {len(full)} non-negative ints, got {depths}")
    h, w = int(img_size[0]), int(img_size[1])
    if h % 4 or w % 4 or h < 32 or w < 32:
        raise ValueError(f"{name}: img_size must be multiples of 4 and at least 32, got {img_size}")
    build_depths = tuple(max(a, b) for a, b in zip(full, want, strict=True))
    if weights is not None and str(weights) == "imagenet":
        raise ValueError(
            f"weights='imagenet' is only available for efficientnet_lite0; for {name} pass a local timm checkpoint path"
        )
    kwargs = dict(drop_path_rate=drop_path_rate) if drop_path_rate is not None else {}
    model = SwinTransformer(
        img_size=(h, w),
        patch_size=4,
        num_classes=0,
        depths=build_depths,
        strict_img_size=not dynamic_img_size,
        **cfg,
        **kwargs,
    )
    if weights is not None:
        load_weights_into(model, weights, ignore_prefixes=("head.",))
    encoder = SwinEncoder(model, name=name, img_size=(h, w), dynamic_img_size=dynamic_img_size)
    if want != build_depths:
        encoder.truncate_(want)
    logger.debug("built %s depths=%s img_size=%s", name, encoder.depths, encoder.img_size)
    return encoder
