"""Mixed operation of the decoder supernet [ST-NAS Sec. 3.3; DARTS]."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vidnas.models.ops import SEARCH_CANDIDATES, get_op, temporal_extent
from vidnas.search.dnas.base import SearchModule

__all__ = ["MixedOp"]


class MixedOp(SearchModule):
    """All candidate ops run in parallel on the same input, their outputs mixed by softmax weights (DARTS).

    With candidates ``op_1 .. op_M`` (names from ``vidnas.models.ops.OPS``, in order) and architecture weights
    ``beta`` (registered ``nn.Parameter`` of shape (M,), initialised to zeros, i.e. uniform mixing)::

        w   = softmax(beta)
        out = sum_{j=1}^{M} w_j * op_j(x)

    Derived op: ``argmax_j beta_j`` (the first one on ties). The column order of ``beta`` is the order of
    ``candidates``, which architecture files record as names.

    Args:
        channels: C of the (B, C, T, h, w) tensors.
        dilation: temporal dilation of the residual layer this op sits in (passed to every candidate).
        candidates: op names, default the seven of ``SEARCH_CANDIDATES``.
        causal: causal or centred temporal padding of the candidates.

    Shapes:
        (B, C, T, h, w) -> (B, C, T, h, w).
    """

    def __init__(
        self,
        channels: int,
        dilation: int,
        candidates: Sequence[str] = SEARCH_CANDIDATES,
        *,
        causal: bool = True,
    ) -> None:
        super().__init__()
        candidates = tuple(candidates)
        if not candidates:
            raise ValueError("a mixed op needs at least one candidate")
        if len(set(candidates)) != len(candidates):
            raise ValueError(f"duplicate candidates: {candidates}")
        self.channels = channels
        self.dilation = dilation
        self.causal = causal
        self.candidates = candidates
        self.ops = nn.ModuleList(get_op(name)(channels, dilation, causal=causal) for name in candidates)
        self.beta = nn.Parameter(torch.zeros(len(candidates)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, h, w) -> (B, C, T, h, w): ``sum_j softmax(beta)_j * op_j(x)``."""
        w = torch.softmax(self.beta, dim=0)
        out = w[0] * self.ops[0](x)
        for j in range(1, len(self.ops)):
            out = out + w[j] * self.ops[j](x)
        return out

    @property
    def temporal_extent(self) -> int:
        """Frames of temporal context: the largest of any candidate (what the mixture can see)."""
        return max(temporal_extent(op) for op in self.ops)

    def own_arch_parameters(self) -> list[nn.Parameter]:
        """``[beta]``."""
        return [self.beta]

    def weights(self) -> list[float]:
        """``softmax(beta)`` as floats, in candidate order."""
        return [float(v) for v in torch.softmax(self.beta.detach().float().cpu(), dim=0)]

    def betas(self) -> list[float]:
        """Raw ``beta`` values, in candidate order."""
        return [float(v) for v in self.beta.detach().cpu()]

    def derive(self) -> str:
        """Name of the candidate with the largest beta (the first one on ties)."""
        values = self.betas()
        return self.candidates[values.index(max(values))]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, dilation={self.dilation}, candidates={list(self.candidates)}"
