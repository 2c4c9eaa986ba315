"""The encoder contract (``Encoder``, ``EncoderStage``); the registry ``ENCODERS`` is in ``vidnas.models.encoders``.

Every encoder is a real timm architecture re-arranged into the same four pieces (stem, stages of
downsample + same-shape blocks, per-stage output conversion), so that a depth-search supernet [ST-NAS Eq. 1] can run a
stage's blocks itself without knowing which architecture it is.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["Encoder", "EncoderStage", "EncoderFactory", "STRIDES", "describe"]

STRIDES: tuple[int, ...] = (4, 8, 16, 32)


class EncoderStage(nn.Module):
    """One stage of an encoder: a ``downsample`` module, then ``blocks`` run one after the other.

    Every block maps a tensor to a tensor of the same shape (internal layout of the encoder), which is what lets the
    depth search weight and drop blocks (Eq. 1). ``downsample`` carries the stride / channel change (Swin's patch
    merging, the first block of a CNN stage) and is ``nn.Identity`` where there is none.

    Args:
        downsample: module run first; ``nn.Identity()`` for none.
        blocks: the same-shape blocks in order (may be empty).
    """

    def __init__(self, downsample: nn.Module, blocks: Iterable[nn.Module]) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``downsample`` then every block, in the encoder's internal layout."""
        x = self.downsample(x)
        for block in self.blocks:
            x = block(x)
        return x


class Encoder(nn.Module):
    """Base class of all vidnas encoders: four feature maps at strides 4, 8, 16, 32 with block-level access.

    Output contract:
        ``forward(x)`` takes ``x`` of shape [N, 3, H, W] (ImageNet-normalised RGB) and returns a list of four NCHW
        tensors ``[N, out_channels[i], h_i, w_i]`` at ``strides == [4, 8, 16, 32]``. With H and W multiples of 32
        (320x576 is), ``h_i = H / s_i`` and ``w_i = W / s_i`` exactly. Otherwise every stride-2 step rounds up:
        CNNs give ``ceil(H / s_i)``; Swin gives ``H // 4`` at stride 4 (H, W must be multiples of 4) then rounds up
        at each patch merging. ``feature_hw(i, (H, W))`` computes it for any size.

    Block-level contract (what a depth-search supernet may rely on, never on the architecture):
        - ``stem``: ``nn.Module``, ``stem(x: [N, 3, H, W]) -> Tensor`` in the internal ``layout``.
        - ``stages``: ``nn.ModuleList`` of four ``EncoderStage``; each has ``downsample`` (``nn.Identity`` where
          there is none) and ``blocks`` (``nn.ModuleList`` of same-shape blocks, possibly empty).
        - ``forward_stage(i, x) -> Tensor``: ``x = stages[i].downsample(x); for b in stages[i].blocks: x = b(x)``,
          internal layout in and out; its result is the input of stage ``i + 1``.
        - ``stage_output(i, x) -> Tensor``: converts stage ``i``'s internal result to the returned NCHW map,
          applying ``output_layers[i]`` first (Swin: the final LayerNorm on the last stage; CNNs: the stride-1
          channel-changing timm group of the last stride, see ``vidnas.models.encoders.efficientnet``). It is never
          on the path to the next stage.
        - ``forward(x)`` is exactly ``x = stem(x); for i: x = forward_stage(i, x); outs.append(stage_output(i, x))``
          (``forward(x, stages=n)``: the first ``n`` iterations only).
          Eq. 1 replaces the block loop of ``forward_stage``:
          ``f_1 = b_1(downsample(x)); f_j = b_j(alpha_{j-1} * f_{j-1}); stage result = sum_j alpha_j * f_j``.
        - ``depths``: blocks per stage now; ``with_depths(d)`` returns a copy keeping the first ``d[i]`` blocks of
          every stage (``truncate_(d)`` does it in place); Swin block j keeps its shift (shifted iff j is odd).
        - ``block_input_shape(i, input_hw)`` (batch 1, internal layout) and
          ``block_signature(i, j, input_hw) -> str``: the latency-table key of block j of stage i at that image size,
          ``"{name}/s{i}/b{j}/{kind}/{shape}"``, e.g. ``"swin_tiny/s2/b1/w7x7_shift3x3_h12/1x20x36x384"``.
          Block j of a shortened encoder has the same signature as block j of the full one.

    Other attributes: ``name`` (registry name), ``img_size`` ((H, W) the encoder was built for; Swin checks it unless
    built with ``dynamic_img_size``), ``layout`` (``"NHWC"`` or ``"NCHW"``, internal), ``out_channels`` (per stage,
    returned maps), ``block_channels`` (per stage, channels of the blocks' tensors), ``strides``,
    ``timm_map`` (``{"stem": [...], "stages": [{"downsample": [...], "blocks": [...], "output": [...]}] * 4}``: the
    timm module names that went into each piece).
    """

    def __init__(
        self,
        *,
        name: str,
        img_size: tuple[int, int],
        layout: str,
        stem: nn.Module,
        stages: Sequence[EncoderStage],
        output_layers: Sequence[nn.Module],
        out_channels: Sequence[int],
        block_channels: Sequence[int],
        timm_map: dict[str, Any],
    ) -> None:
        super().__init__()
        if len(stages) != len(STRIDES) or len(output_layers) != len(STRIDES):
            raise ValueError(
                f"an encoder has {len(STRIDES)} stages, got {len(stages)} and {len(output_layers)} outputs"
            )
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be NCHW or NHWC, got {layout!r}")
        self.name = name
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.layout = layout
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.output_layers = nn.ModuleList(output_layers)
        self.out_channels = [int(c) for c in out_channels]
        self.block_channels = [int(c) for c in block_channels]
        self.strides = list(STRIDES)
        self.timm_map = copy.deepcopy(timm_map)

    @property
    def depths(self) -> tuple[int, ...]:
        """Blocks per stage (the downsample is not counted)."""
        return tuple(len(stage.blocks) for stage in self.stages)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for an input this encoder cannot take (subclasses add checks)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected input (N, 3, H, W), got {tuple(x.shape)}")

    def forward_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Stage ``i``: downsample, then its blocks one by one (internal layout in and out)."""
        stage = self.stages[i]
        x = stage.downsample(x)
        for block in stage.blocks:
            x = block(x)
        return x

    def stage_output(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Stage ``i``'s internal result -> the returned map [N, out_channels[i], h, w]."""
        x = self.output_layers[i](x)
        if self.layout == "NHWC":
            x = x.permute(0, 3, 1, 2).contiguous()  # [N, h, w, C] -> [N, C, h, w]
        return x

    def forward(self, x: torch.Tensor, stages: int | None = None) -> list[torch.Tensor]:
        """[N, 3, H, W] -> four maps [N, out_channels[i], h_i, w_i] at strides 4, 8, 16, 32.

        ``stages=n`` (0..4) runs the stem and the first ``n`` stages only and returns their ``n`` maps (the first
        ``n`` of the full forward's, the same values): a consumer that reads no deeper map (a dynamic cell that reads
        layers 2-3 of its frame) skips the rest. ``stages=0`` runs nothing and returns ``[]``.
        """
        self.check_input(x)
        n = len(self.stages) if stages is None else int(stages)
        if not 0 <= n <= len(self.stages):
            raise ValueError(f"{self.name}: stages must be in 0..{len(self.stages)}, got {stages}")
        outs: list[torch.Tensor] = []
        if n == 0:
            return outs
        x = self.stem(x)
        for i in range(n):
            x = self.forward_stage(i, x)
            outs.append(self.stage_output(i, x))
        return outs

    # --- shapes and signatures -------------------------------------------------------------------------------------

    def feature_hw(self, i: int, input_hw: tuple[int, int] | None = None) -> tuple[int, int]:
        """Spatial size (h, w) of stage ``i``'s features for an image of ``input_hw`` (default ``img_size``).

        CNNs: every stride-2 conv (kernel k, padding k // 2) gives ceil(size / 2). Swin overrides this.
        """
        h, w = self.img_size if input_hw is None else input_hw
        for _ in range(int(math.log2(self.strides[i]))):
            h, w = -(-h // 2), -(-w // 2)
        return h, w

    def block_input_shape(self, i: int, input_hw: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
        """Shape of the tensor every block of stage ``i`` takes and returns, batch 1, internal ``layout``."""
        h, w = self.feature_hw(i, input_hw)
        c = self.block_channels[i]
        return (1, h, w, c) if self.layout == "NHWC" else (1, c, h, w)

    def block_kind(self, i: int, j: int) -> str:
        """Architecture-specific description of block ``j`` of stage ``i`` (no shape); subclasses override."""
        return type(self.stages[i].blocks[j]).__name__

    def block_signature(self, i: int, j: int, input_hw: tuple[int, int] | None = None) -> str:
        """Stable latency-table key of block ``j`` of stage ``i`` at image size ``input_hw`` (default ``img_size``).

        ``"{name}/s{i}/b{j}/{kind}/{shape}"`` with shape = ``block_input_shape`` joined by ``x`` (batch 1, internal
        layout). Blocks keep their index when an encoder is shortened, so tables measured on the full encoder
        serve every shortened one.
        """
        if not 0 <= i < len(self.stages):
            raise IndexError(f"{self.name}: stage {i} out of range 0..{len(self.stages) - 1}")
        if not 0 <= j < len(self.stages[i].blocks):
            raise IndexError(f"{self.name}: stage {i} has {len(self.stages[i].blocks)} blocks, no block {j}")
        shape = "x".join(str(d) for d in self.block_input_shape(i, input_hw))
        return f"{self.name}/s{i}/b{j}/{self.block_kind(i, j)}/{shape}"

    # --- depth --------------------------------------------------------------------------------------------------

    def truncate_(self, depths: Sequence[int]) -> Encoder:
        """In place: keep the first ``depths[i]`` blocks of stage ``i``. Returns ``self``."""
        depths = self._check_depths(depths)
        for stage, m, d in zip(self.stages, self.timm_map["stages"], depths, strict=True):
            stage.blocks = nn.ModuleList(list(stage.blocks)[:d])
            m["blocks"] = m["blocks"][:d]
        return self

    def with_depths(self, depths: Sequence[int]) -> Encoder:
        """A copy keeping the first ``depths[i]`` blocks of every stage (same weights; ``self`` is unchanged).

        Raises:
            ValueError: wrong number of stages, a negative depth, or more blocks than the stage has (build a deeper
                Swin with ``build_encoder(name, depths=...)``).
        """
        self._check_depths(depths)
        return copy.deepcopy(self).truncate_(depths)

    def _check_depths(self, depths: Sequence[int]) -> tuple[int, ...]:
        depths = tuple(int(d) for d in depths)
        if len(depths) != len(self.stages):
            raise ValueError(f"{self.name}: depths needs {len(self.stages)} values, got {depths}")
        for i, (d, have) in enumerate(zip(depths, self.depths, strict=True)):
            if d < 0 or d > have:
                raise ValueError(
                    f"{self.name}: stage {i} has {have} blocks, cannot keep {d} (asked {depths}, have {self.depths})"
                )
        return depths

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, img_size={self.img_size}, depths={self.depths}, out_channels={self.out_channels}, "
            f"layout={self.layout}"
        )


EncoderFactory = Callable[..., Encoder]


def describe(encoder: Encoder) -> dict[str, Any]:
    """A JSON-able summary (name, depths, channels, strides, timm module map) for logs and reports."""
    return {
        "name": encoder.name,
        "img_size": list(encoder.img_size),
        "depths": list(encoder.depths),
        "out_channels": encoder.out_channels,
        "block_channels": encoder.block_channels,
        "strides": encoder.strides,
        "timm_map": encoder.timm_map,
    }
