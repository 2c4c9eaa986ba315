"""Operations of the SP-TCN / TCNNAS decoder: one ordered table of named factories with one signature.

Every factory is called as ``OPS[name](channels, dilation, *, causal=True)`` and returns an ``nn.Module`` mapping
``(B, C, T, h, w) -> (B, C, T, h, w)``: channels, time length and spatial size are all preserved. The order of
``SEARCH_CANDIDATES`` fixes the columns of the decoder's architecture weights (beta) [ST-NAS Sec. 3.3]; the names
are what architecture files store.

Conventions (decided here, see SPEC "Decoder supernet"):
    * Each non-identity op is ``conv -> BatchNorm3d -> ReLU`` (the separable op counts its depthwise + pointwise pair
      as one conv), so a derived decoder is a plain chain of normalised, rectified ops and a mixed op sums outputs of
      comparable scale.
    * Spatial padding is "same" (zeros). Temporal padding is explicit zero padding of ``(k - 1) * d`` frames: all of it
      on the past side when ``causal`` (the output at frame t never sees frames after t), split evenly otherwise.
    * ``dilation`` is the temporal dilation of the residual layer the op sits in. Dilated spatial convs use it as their
      spatial dilation; depthwise-separable convs are not dilated (as in DARTS, where "sep" and "dil" convs differ),
      so for them the argument is accepted and ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from vidnas.registry import Registry

__all__ = [
    "OpFactory",
    "OPS",
    "SEARCH_CANDIDATES",
    "BASELINE_OP",
    "STConv3d",
    "ConvBNReLU3d",
    "SepConv3d",
    "IdentityOp",
    "get_op",
    "make_op",
    "register_op",
    "temporal_extent",
]

logger = logging.getLogger(__name__)


class OpFactory(Protocol):
    """``factory(channels, dilation, *, causal=True) -> nn.Module`` mapping (B, C, T, h, w) to the same shape."""

    def __call__(self, channels: int, dilation: int, *, causal: bool = True) -> nn.Module: ...


def _temporal_pad(kernel_t: int, dilation_t: int, causal: bool) -> tuple[int, int]:
    """Frames of zero padding (past, future) that keep the time length for a temporal kernel."""
    total = (kernel_t - 1) * dilation_t
    if causal:
        return total, 0
    return total // 2, total - total // 2


class STConv3d(nn.Module):
    """Conv3d with "same" spatial padding and causal or centred temporal padding.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel: (k_t, k_h, k_w).
        dilation: (d_t, d_h, d_w).
        causal: pad all ``(k_t - 1) * d_t`` frames on the past side (True) or split them evenly (False).
        groups: Conv3d groups (``in_channels`` for a depthwise conv).
        bias: add a bias (False when a BatchNorm follows).

    Shapes:
        (B, C_in, T, h, w) -> (B, C_out, T, h, w).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int],
        dilation: tuple[int, int, int] = (1, 1, 1),
        *,
        causal: bool = True,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        kt, kh, kw = kernel
        dt, dh, dw = dilation
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"spatial kernel sizes must be odd for same padding, got {kernel}")
        self.time_pad = _temporal_pad(kt, dt, causal)
        self.temporal_extent = (kt - 1) * dt  # frames of context this conv adds (see temporal_extent())
        self.causal = causal
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size=kernel,
            dilation=dilation,
            padding=(0, dh * (kh - 1) // 2, dw * (kw - 1) // 2),
            groups=groups,
            bias=bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, T, h, w) -> (B, C_out, T, h, w)."""
        past, future = self.time_pad
        if past or future:
            # F.pad orders pairs from the last dim backwards: (w, w, h, h, T, T)
            x = F.pad(x, (0, 0, 0, 0, past, future))  # (B, C_in, T + past + future, h, w)
        return self.conv(x)


class ConvBNReLU3d(nn.Sequential):
    """``STConv3d -> BatchNorm3d -> ReLU``: (B, C_in, T, h, w) -> (B, C_out, T, h, w)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int],
        dilation: tuple[int, int, int] = (1, 1, 1),
        *,
        causal: bool = True,
        relu: bool = True,
    ) -> None:
        layers: list[nn.Module] = [
            STConv3d(in_channels, out_channels, kernel, dilation, causal=causal, bias=False),
            nn.BatchNorm3d(out_channels),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SepConv3d(nn.Sequential):
    """Depthwise-separable spatial conv: depthwise (1, k, k) -> pointwise 1x1x1 -> BN -> ReLU.

    Shapes:
        (B, C, T, h, w) -> (B, C, T, h, w).
    """

    def __init__(self, channels: int, kernel: int, *, causal: bool = True) -> None:
        super().__init__(
            STConv3d(channels, channels, (1, kernel, kernel), causal=causal, groups=channels, bias=False),
            STConv3d(channels, channels, (1, 1, 1), causal=causal, bias=False),
            nn.BatchNorm3d(channels),
            nn.ReLU(inplace=True),
        )


class IdentityOp(nn.Identity):
    """The ``identity`` candidate: (B, C, T, h, w) unchanged, no parameters."""

    temporal_extent = 0


def _identity(channels: int, dilation: int, *, causal: bool = True) -> nn.Module:
    return IdentityOp()


def _spatial(kernel: int) -> OpFactory:
    def factory(channels: int, dilation: int, *, causal: bool = True) -> nn.Module:
        return ConvBNReLU3d(channels, channels, (1, kernel, kernel), (1, dilation, dilation), causal=causal)

    factory.__doc__ = f"Dilated spatial conv, kernel (1, {kernel}, {kernel}), dilation (1, d, d), BN, ReLU."
    return factory


def _sep(kernel: int) -> OpFactory:
    def factory(channels: int, dilation: int, *, causal: bool = True) -> nn.Module:
        return SepConv3d(channels, kernel, causal=causal)

    factory.__doc__ = f"Depthwise-separable spatial conv, kernel (1, {kernel}, {kernel}) (not dilated), BN, ReLU."
    return factory


def _temporal(kernel: int) -> OpFactory:
    def factory(channels: int, dilation: int, *, causal: bool = True) -> nn.Module:
        return ConvBNReLU3d(channels, channels, (kernel, 1, 1), (dilation, 1, 1), causal=causal)

    factory.__doc__ = f"Dilated temporal conv, kernel ({kernel}, 1, 1), dilation (d, 1, 1), BN, ReLU."
    return factory


def _conv3d_k3(channels: int, dilation: int, *, causal: bool = True) -> nn.Module:
    """Full 3x3x3 conv with temporal dilation (d, 1, 1), BN, ReLU: the SP-TCN baseline op (not searched)."""
    return ConvBNReLU3d(channels, channels, (3, 3, 3), (dilation, 1, 1), causal=causal)


# The first seven entries are the decoder supernet's candidates [ST-NAS Sec. 3.3: identity, dilated 2D spatial,
# depth-separated 2D spatial, dilated 1D temporal, kernel sizes 3 and 5]; their order is the beta column order.
OPS: Registry[OpFactory] = Registry("decoder op", listed_as="ops")
OPS.register("identity", _identity)
OPS.register("spatial_k3", _spatial(3))
OPS.register("spatial_k5", _spatial(5))
OPS.register("sep_k3", _sep(3))
OPS.register("sep_k5", _sep(5))
OPS.register("temporal_k3", _temporal(3))
OPS.register("temporal_k5", _temporal(5))
OPS.register("conv3d_k3", _conv3d_k3)

SEARCH_CANDIDATES: tuple[str, ...] = (
    "identity",
    "spatial_k3",
    "spatial_k5",
    "sep_k3",
    "sep_k5",
    "temporal_k3",
    "temporal_k5",
)

BASELINE_OP = "conv3d_k3"


def get_op(name: str) -> OpFactory:
    """The factory registered as ``name``; a failed lookup (``UnknownNameError``, a KeyError) lists the valid names."""
    return OPS[name]


def make_op(name: str, channels: int, dilation: int = 1, *, causal: bool = True) -> nn.Module:
    """Build op ``name`` for ``channels`` channels at temporal dilation ``dilation``."""
    return get_op(name)(channels, dilation, causal=causal)


def register_op(name: str, factory: Callable[..., nn.Module]) -> None:
    """Add a factory to ``OPS`` (appended, so existing beta columns keep their meaning).

    Raises:
        DuplicateNameError: ``name`` is already registered.
    """
    OPS.register(name, factory)


def temporal_extent(module: nn.Module) -> int:
    """Frames of temporal context a chain of ops adds: the sum of ``(k_t - 1) * d_t`` along its main path.

    A module that defines ``temporal_extent`` (an int attribute or property) answers for itself and its children are
    not visited (a mixed op, for instance, reports the maximum over its candidates). Otherwise the children's extents
    are summed, which is right for sequential chains and residual blocks whose skip path adds no context.
    """
    own = getattr(module, "temporal_extent", None)
    if isinstance(own, int):
        return own
    return sum(temporal_extent(child) for child in module.children())
