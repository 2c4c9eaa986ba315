"""The TCNNAS decoder supernet of the ST-NAS search [ST-NAS Sec. 3.3, Fig. 2]: mixed ops (DARTS) in every searchable
slot of a decoder.

``MixedOp`` mixes every candidate op by ``softmax(beta)``; ``DecoderSupernet`` is a decoder (the SP-TCN, or the
multi-scale ``mstcn`` decoder: its temporal trunk and each finer scale's path and fusion ops) whose every searchable
slot is a ``MixedOp``. ``vidnas.search.stnas.derive.derived_decoder`` reduces it to the plain decoder of the derived
ops.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from vidnas.models.decoders import OPS_PER_SCALE, Arch2SpaceDecoder, MultiScaleDecoder, Slotted, SPTCNDecoder
from vidnas.models.ops import SEARCH_CANDIDATES, IdentityOp, get_op, temporal_extent
from vidnas.search.stnas.supernet import SearchModule, weight_parameters

__all__ = ["MASKED_BETA", "MixedOp", "DecoderSupernet", "build_decoder_supernet", "build_multiscale_supernet"]

logger = logging.getLogger(__name__)

MASKED_BETA = -30.0  # the recorded beta of a candidate a slot does not allow (exp(-30) < 1e-13)


class MixedOp(SearchModule):
    """All candidate ops run in parallel on the same input, their outputs mixed by softmax weights (DARTS).

    With candidates ``op_1 .. op_M`` (names from ``vidnas.models.ops.OPS``, in order) and architecture weights
    ``beta`` (registered ``nn.Parameter`` of shape (M,), initialised to zeros, i.e. uniform mixing)::

        w   = softmax(beta)
        out = sum_{j=1}^{M} w_j * op_j(x)

    Derived op: ``argmax_j beta_j`` (the first one on ties). The column order of ``beta`` is the order of
    ``candidates``, which architecture files record as names.

    A slot whose candidates are a subset of the supernet's columns (the ``arch2_space`` decoder: each slot has its
    own list) passes ``modules`` (name -> built op) for the ones it allows: the others are masked out, their weight
    ``softmax(beta)_j`` is 0 (``beta_j`` at minus infinity inside the softmax, so it never moves and never wins) and
    their place in ``ops`` holds a parameter-free identity that is never run.

    Args:
        channels: C of the (B, C, T, h, w) output tensors.
        dilation: temporal dilation of the residual layer this op sits in (passed to every candidate).
        candidates: op names, default the seven of ``SEARCH_CANDIDATES``.
        causal: causal or centred temporal padding of the candidates.
        modules: None = build every candidate from ``OPS``; else the built candidates this slot allows, by name.

    Shapes:
        (B, C_in, T, h, w) -> (B, C, T, h', w') (``OPS`` candidates: C_in = C, the same size).
    """

    def __init__(
        self,
        channels: int,
        dilation: int,
        candidates: Sequence[str] = SEARCH_CANDIDATES,
        *,
        causal: bool = True,
        modules: Mapping[str, nn.Module] | None = None,
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
        if modules is None:
            self.allowed = (True,) * len(candidates)
            self.ops = nn.ModuleList(get_op(name)(channels, dilation, causal=causal) for name in candidates)
        else:
            unknown = sorted(set(modules) - set(candidates))
            if unknown or not modules:
                raise ValueError(f"a mixed op's modules must be some of its candidates {list(candidates)}, got "
                                 f"{list(modules)}")
            self.allowed = tuple(name in modules for name in candidates)
            self.ops = nn.ModuleList(modules[name] if name in modules else IdentityOp() for name in candidates)
        self.register_buffer("_mask", torch.tensor([0.0 if a else float("-inf") for a in self.allowed]),
                             persistent=False)
        self.beta = nn.Parameter(torch.zeros(len(candidates)))

    def mixing(self) -> torch.Tensor:
        """``softmax(beta)`` over the allowed candidates (0 for the masked ones), shape (M,)."""
        return torch.softmax(self.beta + self._mask.to(self.beta), dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, h, w) -> (B, C, T, h, w): ``sum_j softmax(beta)_j * op_j(x)`` over the allowed candidates."""
        w = self.mixing()
        out: torch.Tensor | None = None
        for j, allowed in enumerate(self.allowed):
            if allowed:
                y = w[j] * self.ops[j](x)
                out = y if out is None else out + y
        assert out is not None
        return out

    @property
    def temporal_extent(self) -> int:
        """Frames of temporal context: the largest of any candidate (what the mixture can see)."""
        return max(temporal_extent(op) for op in self.ops)

    def own_arch_parameters(self) -> list[nn.Parameter]:
        """``[beta]``."""
        return [self.beta]

    def weights(self) -> list[float]:
        """``softmax(beta)`` as floats, in candidate order (0 for a masked candidate)."""
        with torch.no_grad():
            return [float(v) for v in self.mixing().float().cpu()]

    def betas(self) -> list[float]:
        """Raw ``beta`` values, in candidate order; a masked candidate reads ``MASKED_BETA`` (its softmax weight,
        below 1e-13, prints as 0 wherever the recorded betas are read: the report, the figures)."""
        return [float(v) if a else MASKED_BETA for v, a in zip(self.beta.detach().cpu(), self.allowed, strict=True)]

    def derive(self) -> str:
        """Name of the allowed candidate with the largest beta (the first one on ties)."""
        values = [v if a else float("-inf") for v, a in zip(self.betas(), self.allowed, strict=True)]
        return self.candidates[values.index(max(values))]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, dilation={self.dilation}, candidates={list(self.candidates)}"


class DecoderSupernet(nn.Module):
    """A decoder whose every searchable slot is a ``MixedOp`` (TCNNAS supernet, [ST-NAS Fig. 2]).

    Any ``Slotted`` decoder (``vidnas.models.decoders.Slotted``: ``searchable_slots()`` / ``set_slot()``) can be
    searched:

    * ``SPTCNDecoder`` (built with ``layer_ops``): each 3x3x3 conv of the residual layers is two slots in sequence,
      16 mixed ops for four layers. ``reduce``, ``final`` and the head stay as they are (not searched).
    * ``MultiScaleDecoder`` (``decoder: mstcn``): the trunk's 4 slots per residual layer (when built with
      ``layer_ops``), then per finer scale its two path ops and its fusion op. Lateral projections, ``proj`` and the
      head stay fixed. Whether a finer scale's derived ops include a temporal op is the search deciding whether
      temporal context pays at that scale.
    * ``Arch2SpaceDecoder`` (``decoder: arch2_space``): arch2's eight slots (four laterals, three blocks, the
      stride-4 ``down``), each mixing its own candidates (``slot_candidates``; the columns are their union, the
      others masked: ``MixedOp``'s ``modules``); ``candidates`` is not read.

    Every slot mixes ``candidates`` (or its allowed ones), ``out = sum_j softmax(beta)_j op_j(x)``. ``derive()`` is
    the argmax op of every slot, in ``searchable_slots()`` order; ``split_ops`` cuts it into ``Arch.decoder_ops``
    (the SP-TCN's slots, the mstcn trunk's, arch2_space's) and ``Arch.scale_ops`` (the mstcn finer scales', else
    None).

    Args:
        decoder: a ``Slotted`` decoder, e.g. an ``SPTCNDecoder`` built with ``layer_ops`` (any ops: they are
            replaced) or a ``MultiScaleDecoder``; see ``build_decoder_supernet`` / ``build_multiscale_supernet`` to
            build one directly. Modified in place and kept as ``self.decoder``.
        candidates: candidate op names of every slot.

    Shapes:
        As the decoder: SP-TCN (B, C, T, h, w) -> (B, K, T, h, w); multi-scale a list of maps, coarse first ->
        (B, K, T, h_last, w_last).
    """

    def __init__(self, decoder: nn.Module, candidates: Sequence[str] = SEARCH_CANDIDATES) -> None:
        super().__init__()
        if not isinstance(decoder, Slotted):
            raise TypeError(f"the decoder supernet needs a Slotted decoder (vidnas.models.decoders.Slotted: "
                            f"searchable_slots() and set_slot()), got {type(decoder).__name__}")
        if isinstance(decoder, SPTCNDecoder) and decoder.layer_ops is None:
            raise ValueError(
                "the decoder supernet needs an SPTCNDecoder built with layer_ops (its slots are then swapped for mixed "
                "ops); the baseline 3x3x3 decoder has no slots. Use build_decoder_supernet(...)"
            )
        slots = decoder.searchable_slots()
        if not slots:
            raise ValueError(f"{type(decoder).__name__} has no searchable slot")
        self.slots = [name for name, _, _ in slots]
        if isinstance(decoder, Arch2SpaceDecoder):  # its own candidates per slot: the columns are their union
            per_slot = decoder.slot_candidates()
            self.candidates = tuple(dict.fromkeys(name for cands in per_slot for name in cands))
            for k, ((name, channels, dilation), cands) in enumerate(zip(slots, per_slot, strict=True)):
                decoder.set_slot(name, MixedOp(channels, dilation, self.candidates, causal=decoder.causal,
                                               modules={op: decoder.slot_op(k, op) for op in cands}))
        else:
            self.candidates = tuple(candidates)
            for name, channels, dilation in slots:
                decoder.set_slot(name, MixedOp(channels, dilation, self.candidates, causal=decoder.causal))
        self.decoder = decoder
        logger.debug("decoder supernet: %d mixed ops x %d candidates", len(self.slots), len(self.candidates))

    @property
    def multiscale(self) -> bool:
        """Whether the searched decoder is a ``MultiScaleDecoder`` (``mstcn``)."""
        return isinstance(self.decoder, MultiScaleDecoder)

    @property
    def num_trunk_slots(self) -> int:
        """Slots of the temporal residual layers (all of an SP-TCN's; the mstcn trunk's, 0 without ``layer_ops``)."""
        return sum(name.startswith("res_layers.") for name in self.slots)

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """SP-TCN: (B, C, T, h, w) -> (B, K, T, h, w); multi-scale: maps coarse first -> (B, K, T, h', w')."""
        return self.decoder(x)

    def mixed_ops(self) -> list[MixedOp]:
        """The mixed op of every slot, in slot order."""
        ops = [self.decoder.get_submodule(name) for name in self.slots]
        assert all(isinstance(op, MixedOp) for op in ops)
        return ops  # type: ignore[return-value]

    def temporal_receptive_field(self) -> int:
        """Frames of context (each mixed op counts its widest candidate)."""
        return self.decoder.temporal_receptive_field()

    def arch_parameters(self) -> list[nn.Parameter]:
        """The beta vector of every slot, in slot order."""
        return [op.beta for op in self.mixed_ops()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other parameter (the candidates' and the fixed layers' weights)."""
        return weight_parameters(self)

    def betas(self) -> list[list[float]]:
        """Raw betas per slot, in candidate order."""
        return [op.betas() for op in self.mixed_ops()]

    def op_weights(self) -> list[list[float]]:
        """``softmax(beta)`` per slot, in candidate order."""
        return [op.weights() for op in self.mixed_ops()]

    def expected_latency(self, costs: torch.Tensor) -> torch.Tensor:
        """The decoder's expected op latency under the mixing weights (differentiable in the betas)::

            E[T] = sum_s sum_j softmax(beta_s)_j * costs[s, j]

        Args:
            costs: (S, M) latency (ms) of candidate j in slot s (``LatencyTable.decoder_op_costs``), slots in
                ``self.slots`` order, candidates in ``self.candidates`` order.

        Returns:
            A scalar tensor (ms).
        """
        ops = self.mixed_ops()
        if tuple(costs.shape) != (len(ops), len(self.candidates)):
            raise ValueError(f"expected op costs of shape ({len(ops)}, {len(self.candidates)}), got "
                             f"{tuple(costs.shape)}")
        weights = torch.stack([op.mixing() for op in ops])  # (S, M)
        return (weights * costs.to(weights)).sum()

    @torch.no_grad()
    def set_betas(self, values: Sequence[Sequence[float]]) -> None:
        """Overwrite the betas (e.g. from a search record): one list per slot, one value per candidate."""
        ops = self.mixed_ops()
        if len(values) != len(ops):
            raise ValueError(f"expected betas for {len(ops)} slots, got {len(values)}")
        for op, vals in zip(ops, values, strict=True):
            if len(vals) != len(op.candidates):
                raise ValueError(f"expected {len(op.candidates)} betas per slot, got {len(vals)}")
            op.beta.copy_(torch.as_tensor(list(vals), dtype=op.beta.dtype))

    def derive(self) -> tuple[str, ...]:
        """The argmax op of every slot, in slot order (SP-TCN: ``Arch.decoder_ops``; mstcn: see ``split_ops``)."""
        return tuple(op.derive() for op in self.mixed_ops())

    def split_ops(self, ops: Sequence[str] | None = None) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
        """``(decoder_ops, scale_ops)`` of an ``Arch`` from one op per slot (default ``derive()``).

        SP-TCN: ``(ops, None)``. Multi-scale: the trunk's slots (None when the trunk is the fixed 3x3x3 one) and the
        finer scales' slots (path op 1, path op 2, fusion op per scale, coarse to fine).
        """
        ops = self.derive() if ops is None else tuple(ops)
        if len(ops) != len(self.slots):
            raise ValueError(f"expected {len(self.slots)} ops, got {len(ops)}")
        if not self.multiscale:
            return ops, None
        n = self.num_trunk_slots
        return (ops[:n] if n else None), ops[n:]


def build_decoder_supernet(
    in_channels: int,
    num_classes: int,
    *,
    channels: int = 128,
    dilations: Sequence[int] = (1, 2, 4, 8),
    full_channels: bool = False,
    causal: bool = True,
    candidates: Sequence[str] = SEARCH_CANDIDATES,
) -> DecoderSupernet:
    """An SP-TCN decoder supernet (arguments as ``SPTCNDecoder``), every slot a ``MixedOp`` over ``candidates``.

    Shapes:
        (B, in_channels, T, h, w) -> (B, num_classes, T, h, w).
    """
    placeholder = ("identity",) * (4 * len(tuple(dilations)))  # parameter-free, replaced right away
    decoder = SPTCNDecoder(
        in_channels,
        num_classes,
        channels=channels,
        dilations=dilations,
        full_channels=full_channels,
        causal=causal,
        layer_ops=placeholder,
    )
    return DecoderSupernet(decoder, candidates)


def build_multiscale_supernet(
    in_channels: Sequence[int],
    num_classes: int,
    *,
    channels: int = 128,
    fuse_channels: int = 64,
    dilations: Sequence[int] = (1, 2),
    full_channels: bool = False,
    causal: bool = True,
    candidates: Sequence[str] = SEARCH_CANDIDATES,
) -> DecoderSupernet:
    """A multi-scale (``mstcn``) decoder supernet (arguments as ``MultiScaleDecoder``): every trunk slot (4 per
    residual layer) and every finer scale's two path ops and fusion op a ``MixedOp`` over ``candidates``.

    Shapes:
        ``[(B, C_0, T, h_0, w_0), (B, C_1, T, h_1, w_1), ...]`` (coarse first) -> (B, K, T, h_last, w_last).
    """
    fine = len(tuple(in_channels)) - 1
    decoder = MultiScaleDecoder(
        in_channels,
        num_classes,
        channels=channels,
        fuse_channels=fuse_channels,
        dilations=dilations,
        full_channels=full_channels,
        causal=causal,
        layer_ops=("identity",) * (4 * len(tuple(dilations))),  # parameter-free placeholders, replaced right away
        scale_ops=("identity",) * (OPS_PER_SCALE * fine),
    )
    return DecoderSupernet(decoder, candidates)
