"""The ST-NAS supernets [ST-NAS Sec. 3.2, 3.3]: architecture weights inside modules, the encoder depth supernet
(Eq. 1 and its latency penalty, Eq. 2) and the TCNNAS decoder supernet of mixed ops (DARTS).

* ``SearchModule`` and the walkers ``arch_parameters`` / ``weight_parameters`` / ``set_arch_trainable``: a search
  module owns its architecture weights as registered ``nn.Parameter``s (so ``.to()``, ``state_dict`` and DDP see
  them) and derives its own part of the architecture.
* ``DepthSearchStage`` wraps one encoder stage (downsample + same-shape blocks); ``DepthSupernet`` wraps every stage
  of an ``Encoder`` and returns the same four NCHW maps as ``Encoder.forward``. A stage derives its depth (the shrink
  rule, ``vidnas.search.stnas.derive.shrink_depth``), the supernet the depths of all stages and
  ``DepthSupernet.derived_encoder`` the shortened encoder with the trained weights (``Encoder.with_depths``).
* ``MixedOp`` mixes every candidate op by ``softmax(beta)``; ``DecoderSupernet`` is a decoder (the SP-TCN, or the
  multi-scale ``mstcn`` decoder: its temporal trunk and each finer scale's path and fusion ops) whose every searchable
  slot is a ``MixedOp``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vidnas.models.decoders.mstcn import OPS_PER_SCALE, MultiScaleDecoder
from vidnas.models.decoders.sptcn import SPTCNDecoder
from vidnas.models.ops import SEARCH_CANDIDATES, get_op, temporal_extent
from vidnas.search.stnas.derive import shrink_depth

if TYPE_CHECKING:
    from vidnas.models.encoders import Encoder
    from vidnas.search.latency import LatencyTable

__all__ = [
    "SearchModule",
    "search_modules",
    "arch_parameters",
    "weight_parameters",
    "set_arch_trainable",
    "DepthSearchStage",
    "DepthSupernet",
    "MixedOp",
    "DecoderSupernet",
    "build_decoder_supernet",
    "build_multiscale_supernet",
]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ architecture weights

class SearchModule(nn.Module):
    """Base class of modules that hold architecture weights.

    Subclasses implement ``own_arch_parameters()`` (their architecture weights only, not those of sub-modules) and
    ``derive()``.
    """

    def own_arch_parameters(self) -> list[nn.Parameter]:
        """This module's architecture weights (not its children's)."""
        raise NotImplementedError

    def derive(self) -> object:
        """This module's part of the derived architecture."""
        raise NotImplementedError


def search_modules(model: nn.Module) -> Iterator[SearchModule]:
    """Every ``SearchModule`` inside ``model`` (itself included), in ``model.modules()`` order, each once."""
    for module in model.modules():
        if isinstance(module, SearchModule):
            yield module


def arch_parameters(model: nn.Module) -> list[nn.Parameter]:
    """All architecture weights inside ``model`` (alphas, betas), each once, in module order."""
    seen: set[int] = set()
    out: list[nn.Parameter] = []
    for module in search_modules(model):
        for p in module.own_arch_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def weight_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter of ``model`` that is not an architecture weight, each once (shared modules are deduplicated)."""
    arch = {id(p) for p in arch_parameters(model)}
    return [p for p in model.parameters() if id(p) not in arch]


def set_arch_trainable(model: nn.Module, trainable: bool) -> None:
    """Switch gradients of all architecture weights in ``model`` on or off (warm-up: off).

    While off, the architecture weights are constants of the forward pass: ``backward()`` leaves their ``.grad``
    as it was (None after ``zero_grad(set_to_none=True)``) and an optimiser skips them, weight decay included.

    DistributedDataParallel registers only the parameters that require gradients when it is constructed; wrap the
    model with ``find_unused_parameters=True`` if the switch happens after wrapping, or re-wrap after the warm-up.
    """
    params = arch_parameters(model)
    for p in params:
        p.requires_grad_(trainable)
    logger.debug("architecture weights %s (%d tensors)", "trainable" if trainable else "frozen", len(params))


# ------------------------------------------------------------------------------------------ encoder depth search

def _latency_tensor(latencies_ms: Sequence[float] | torch.Tensor, like: torch.Tensor, n: int) -> torch.Tensor:
    s = torch.as_tensor(latencies_ms, dtype=like.dtype, device=like.device).reshape(-1)
    if s.numel() != n:
        raise ValueError(f"expected {n} block latencies, got {s.numel()}")
    return s


class DepthSearchStage(SearchModule):
    """One encoder stage turned into a depth-search supernet stage [ST-NAS Eq. 1].

    With ``x`` the stage input, ``e_1 .. e_N`` its same-shape blocks and ``alpha_1 .. alpha_N`` unconstrained
    scalars (registered ``nn.Parameter`` ``alpha`` of shape (N,), initialised to 1)::

        x'  = downsample(x)
        f_1 = e_1(x'),   f_i = e_i(alpha_{i-1} * f_{i-1})   (i = 2 .. N)
        out = sum_{i=1}^{N} alpha_i * f_i                                       (Eq. 1)

    Every f_i has the shape of x' (the encoder's internal layout: [B, h, w, C] for Swin, [B, C, h, w] for CNNs), and
    so has ``out``. Note that with all alphas equal to 1 the stage computes ``sum_i f_i``, not the plain stage's
    ``f_N``: the single weight per block scales both the block's contribution to the output and the next block's
    input, so no setting of alpha reproduces the plain stage exactly.

    A stage without blocks (``N = 0``, e.g. a CNN stage whose group has a single, stride-changing block) has no
    ``alpha`` (the attribute is None) and passes ``downsample(x)`` through.

    Latency regulariser [ST-NAS Eq. 2], this stage's term: ``sum_i |alpha_i| * s_i`` with ``s_i`` block i's latency
    in ms. The paper writes ``alpha_i * s_i``; SPEC records the absolute value because the alphas are unconstrained:
    without it a negative alpha would *lower* the loss without bound (the penalty is an L1 term, as the paper says).

    Args:
        stage: a module with ``downsample`` (``nn.Identity`` if none) and ``blocks`` (an ``nn.ModuleList``), e.g. an
            ``EncoderStage``. It is used, not copied: training the supernet trains the encoder's own blocks.
        init: initial value of every alpha (paper: 1).
    """

    def __init__(self, stage: nn.Module, *, init: float = 1.0) -> None:
        super().__init__()
        if not hasattr(stage, "downsample") or not isinstance(getattr(stage, "blocks", None), nn.ModuleList):
            raise TypeError(f"expected a stage with `downsample` and a `blocks` ModuleList, got {type(stage).__name__}")
        self.stage = stage
        n = len(stage.blocks)
        device = next(iter(stage.parameters()), torch.empty(0)).device  # on the stage's device, like its weights
        self.alpha: nn.Parameter | None = nn.Parameter(torch.full((n,), float(init), device=device)) if n else None

    @property
    def num_blocks(self) -> int:
        """N, the searchable blocks of this stage."""
        return len(self.stage.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 1; the output has the shape of ``downsample(x)``."""
        x = self.stage.downsample(x)
        if self.alpha is None:
            return x
        alpha = self.alpha
        f = self.stage.blocks[0](x)
        out = alpha[0] * f
        for i in range(1, self.num_blocks):
            f = self.stage.blocks[i](alpha[i - 1] * f)
            out = out + alpha[i] * f
        return out

    def own_arch_parameters(self) -> list[nn.Parameter]:
        """``[alpha]``, or ``[]`` for a stage without blocks."""
        return [] if self.alpha is None else [self.alpha]

    def alphas(self) -> list[float]:
        """Current alpha values, block 1 first."""
        return [] if self.alpha is None else [float(a) for a in self.alpha.detach().cpu()]

    def derive(self, threshold: float = 1.0, *, min_blocks: int = 1) -> int:
        """The depth to keep, by the shrink rule (``shrink_depth``) on the current alphas."""
        return shrink_depth(self.alphas(), threshold, min_blocks=min_blocks)

    def latency_penalty(self, latencies_ms: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """This stage's Eq. 2 term without lambda: ``sum_i |alpha_i| * s_i`` (scalar, differentiable in alpha).

        Its gradient is ``d/d alpha_i = sign(alpha_i) * s_i``.

        Args:
            latencies_ms: s_i for every block of the stage, in ms (N values).
        """
        if self.alpha is None:
            if len(latencies_ms) != 0:
                raise ValueError(f"expected 0 block latencies for a stage without blocks, got {len(latencies_ms)}")
            return torch.zeros((), device=self.stage.downsample.weight.device) if hasattr(
                self.stage.downsample, "weight") else torch.zeros(())
        s = _latency_tensor(latencies_ms, self.alpha, self.num_blocks)
        return (self.alpha.abs() * s).sum()

    def expected_latency(self, latencies_ms: Sequence[float] | torch.Tensor, threshold: float = 1.0) -> float:
        """Block latency (ms) of the depth the current alphas derive: ``sum_{i <= derive(threshold)} s_i``.

        This is what the stage would cost if the search stopped now (downsample not included); logged beside the
        penalty to watch the search approach a latency.
        """
        if self.alpha is None:
            return 0.0
        s = _latency_tensor(latencies_ms, self.alpha, self.num_blocks)
        return float(s[: self.derive(threshold)].sum())

    def extra_repr(self) -> str:
        return f"num_blocks={self.num_blocks}"


class DepthSupernet(nn.Module):
    """An ``Encoder`` whose every stage is a ``DepthSearchStage`` [ST-NAS Eq. 1, Eq. 2, shrink rule].

    ``forward`` is ``Encoder.forward`` with the block loop of each stage replaced by Eq. 1::

        x = stem(x); for each stage s: x = DepthSearchStage_s(x); outs.append(encoder.stage_output(s, x))

    so it returns the same four NCHW maps ``[N, out_channels[s], h_s, w_s]`` and can stand in for the encoder of a
    ``VideoSegmenter``. The encoder's modules are used, not copied (registered here as ``stem``, ``stages[s].stage``
    and ``output_layers``; the encoder object itself is kept as a plain reference so ``state_dict`` holds each tensor
    once): training the supernet trains the encoder, and ``derived_encoder`` returns a shortened copy of it.

    Loss of the search [ST-NAS Eq. 2]: ``task_loss + lam * supernet.penalty(table)`` with
    ``penalty = sum_s sum_i |alpha_{s,i}| * s_{s,i}`` (see ``DepthSearchStage`` for the absolute value).

    Args:
        encoder: an ``Encoder`` (``vidnas.models.encoders``) with ``stem``, ``stages``, ``stage_output``.
        init: initial value of every alpha (paper: 1).
    """

    def __init__(self, encoder: Encoder, *, init: float = 1.0) -> None:
        super().__init__()
        object.__setattr__(self, "_encoder", encoder)  # plain reference: its sub-modules are registered below
        self.stem = encoder.stem
        self.stages = nn.ModuleList(DepthSearchStage(stage, init=init) for stage in encoder.stages)
        self.output_layers = encoder.output_layers
        logger.debug("depth supernet over %s, depths %s", getattr(encoder, "name", "encoder"), self.depths)

    @property
    def encoder(self) -> Encoder:
        """The wrapped encoder (sharing every module with this supernet)."""
        return self._encoder

    @property
    def depths(self) -> tuple[int, ...]:
        """Searchable blocks per stage (the full depths)."""
        return tuple(stage.num_blocks for stage in self.stages)

    @property
    def out_channels(self) -> list[int]:
        """Channels of the four returned maps (the encoder's)."""
        return list(self._encoder.out_channels)

    @property
    def strides(self) -> list[int]:
        """Strides of the four returned maps (the encoder's)."""
        return list(self._encoder.strides)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[N, 3, H, W] -> four maps [N, out_channels[s], h_s, w_s], as ``Encoder.forward``."""
        check = getattr(self._encoder, "check_input", None)
        if check is not None:
            check(x)
        x = self.stem(x)
        outs = []
        for s, stage in enumerate(self.stages):
            x = stage(x)
            outs.append(self._encoder.stage_output(s, x))
        return outs

    # --- architecture weights -------------------------------------------------------------------------------------

    def arch_parameters(self) -> list[nn.Parameter]:
        """The alpha vector of every stage that has blocks (their sizes sum to the total number of blocks)."""
        return [p for stage in self.stages for p in stage.own_arch_parameters()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other parameter (the encoder's weights)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def alphas(self) -> list[list[float]]:
        """Alpha values per stage, per block."""
        return [stage.alphas() for stage in self.stages]

    @torch.no_grad()
    def set_alphas(self, values: Sequence[Sequence[float]]) -> None:
        """Overwrite the alphas (e.g. from a search record); one list per stage, one value per block."""
        if len(values) != len(self.stages):
            raise ValueError(f"expected alphas for {len(self.stages)} stages, got {len(values)}")
        for s, (stage, vals) in enumerate(zip(self.stages, values, strict=True)):
            if len(vals) != stage.num_blocks:
                raise ValueError(f"stage {s} has {stage.num_blocks} blocks, got {len(vals)} alphas")
            if stage.alpha is not None:
                stage.alpha.copy_(torch.as_tensor(list(vals), dtype=stage.alpha.dtype))

    # --- latency --------------------------------------------------------------------------------------------------

    def _latencies(self, latencies: LatencyTable | Sequence[Sequence[float]]) -> list[list[float]]:
        if hasattr(latencies, "latencies_for"):
            table: Any = latencies
            return table.latencies_for(self._encoder)
        lat = [list(v) for v in latencies]  # type: ignore[union-attr]
        if len(lat) != len(self.stages):
            raise ValueError(f"expected latencies for {len(self.stages)} stages, got {len(lat)}")
        return lat

    def penalty(self, latencies: LatencyTable | Sequence[Sequence[float]]) -> torch.Tensor:
        """Eq. 2 regulariser without lambda: ``sum_s sum_i |alpha_{s,i}| * s_{s,i}`` (scalar tensor).

        Args:
            latencies: a ``LatencyTable`` measured for this encoder (looked up by block signature), or the block
                latencies in ms per stage, per block.
        """
        lat = self._latencies(latencies)
        terms = [stage.latency_penalty(ls) for stage, ls in zip(self.stages, lat, strict=True)]
        device = next((p.device for p in self.arch_parameters()), None)
        return torch.stack([t.to(device) if device is not None else t for t in terms]).sum()

    def expected_latency(self, latencies: LatencyTable | Sequence[Sequence[float]], threshold: float = 1.0) -> float:
        """Block latency (ms) of the encoder the current alphas derive (downsamples and stem not included)."""
        lat = self._latencies(latencies)
        return sum(stage.expected_latency(ls, threshold) for stage, ls in zip(self.stages, lat, strict=True))

    # --- derive ---------------------------------------------------------------------------------------------------

    def derive(self, threshold: float = 1.0, *, min_blocks: int = 1) -> tuple[int, ...]:
        """Depth per stage by the shrink rule on the current alphas."""
        return tuple(stage.derive(threshold, min_blocks=min_blocks) for stage in self.stages)

    def derived_encoder(self, threshold: float = 1.0) -> Encoder:
        """A copy of the encoder keeping the derived depths, with the weights trained so far.

        (The paper trains the final model from scratch; this copy serves to inspect or fine-tune the search's one.)
        """
        return self._encoder.with_depths(self.derive(threshold))


# ------------------------------------------------------------------------------------------------ decoder search

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


class DecoderSupernet(nn.Module):
    """A decoder whose every searchable slot is a ``MixedOp`` (TCNNAS supernet, [ST-NAS Fig. 2]).

    Any decoder exposing ``searchable_slots()`` / ``set_slot()`` can be searched:

    * ``SPTCNDecoder`` (built with ``layer_ops``): each 3x3x3 conv of the residual layers is two slots in sequence,
      16 mixed ops for four layers. ``reduce``, ``final`` and the head stay as they are (not searched).
    * ``MultiScaleDecoder`` (``decoder: mstcn``): the trunk's 4 slots per residual layer (when built with
      ``layer_ops``), then per finer scale its two path ops and its fusion op. Lateral projections, ``proj`` and the
      head stay fixed. Whether a finer scale's derived ops include a temporal op is the search deciding whether
      temporal context pays at that scale.

    Every slot mixes the same ``candidates``, ``out = sum_j softmax(beta)_j op_j(x)``. ``derive()`` is the argmax op
    of every slot, in ``searchable_slots()`` order; ``split_ops`` cuts it into ``Arch.decoder_ops`` (the SP-TCN's
    slots or the mstcn trunk's) and ``Arch.scale_ops`` (the mstcn finer scales', None for SP-TCN).

    Args:
        decoder: an ``SPTCNDecoder`` built with ``layer_ops`` (any ops: they are replaced) or a
            ``MultiScaleDecoder``; see ``build_decoder_supernet`` / ``build_multiscale_supernet`` to build one
            directly. Modified in place and kept as ``self.decoder``.
        candidates: candidate op names of every slot.

    Shapes:
        As the decoder: SP-TCN (B, C, T, h, w) -> (B, K, T, h, w); multi-scale a list of maps, coarse first ->
        (B, K, T, h_last, w_last).
    """

    def __init__(self, decoder: nn.Module, candidates: Sequence[str] = SEARCH_CANDIDATES) -> None:
        super().__init__()
        if not (hasattr(decoder, "searchable_slots") and hasattr(decoder, "set_slot")):
            raise TypeError(f"the decoder supernet needs a decoder with searchable_slots() and set_slot(), got "
                            f"{type(decoder).__name__}")
        if isinstance(decoder, SPTCNDecoder) and decoder.layer_ops is None:
            raise ValueError(
                "the decoder supernet needs an SPTCNDecoder built with layer_ops (its slots are then swapped for mixed "
                "ops); the baseline 3x3x3 decoder has no slots. Use build_decoder_supernet(...)"
            )
        slots = decoder.searchable_slots()
        if not slots:
            raise ValueError(f"{type(decoder).__name__} has no searchable slot")
        self.candidates = tuple(candidates)
        self.slots = [name for name, _, _ in slots]
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
            costs: (S, M) latency (ms) of candidate j in slot s (``decoder_op_costs``), slots in ``self.slots``
                order, candidates in ``self.candidates`` order.

        Returns:
            A scalar tensor (ms).
        """
        ops = self.mixed_ops()
        if tuple(costs.shape) != (len(ops), len(self.candidates)):
            raise ValueError(f"expected op costs of shape ({len(ops)}, {len(self.candidates)}), got "
                             f"{tuple(costs.shape)}")
        weights = torch.stack([torch.softmax(op.beta, dim=0) for op in ops])  # (S, M)
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

    def derived_decoder(self, ops: Sequence[str] | None = None, *, fold: bool = True) -> nn.Module:
        """A plain decoder (``SPTCNDecoder`` or ``MultiScaleDecoder``) with the derived ops, carrying the weights
        trained in the supernet.

        The fixed layers are copied, and each slot gets the weights of its chosen candidate ``k``. In the supernet
        the slot output was ``sum_j w_j op_j(x)`` with ``w = softmax(beta)``; with ``fold`` the chosen op keeps its
        share ``w_k``: its output is scaled by ``w_k`` through its last affine layer (``ReLU(w z) = w ReLU(z)`` for
        ``w > 0``, so scaling the final BatchNorm's weight and bias, or a final conv's, is exact). An ``identity``
        slot cannot carry a scale. In a residual branch its weight multiplies into the last parametric op before it
        in the same branch (a scale *before* a conv + BatchNorm is undone by that BatchNorm once recalibrated, a scale
        at the end of the branch sets its weight against the skip path). On a multi-scale decoder's finer scale the
        scale goes exactly where the identity's input comes from: a path identity into the op before it (or the
        lateral projection), a fusion identity into both terms of its sum (the coarser result, through its own
        fusion op or ``proj``, and the path). The other candidates' contributions are dropped, so the BatchNorm
        statistics of later layers must be recalibrated (``derive.recalibrate_batchnorm``, done by
        ``save_derived_init``). (The paper trains the final model from scratch; this is for inspection and
        fine-tuning.)

        Args:
            ops: op per slot (default ``derive()``); e.g. the consensus of several decoder searches.
            fold: fold the mixing weights as above (False: the chosen op's weights as they are).
        """
        d = self.decoder
        ops = self.derive() if ops is None else tuple(ops)
        if len(ops) != len(self.slots):
            raise ValueError(f"expected {len(self.slots)} ops, got {len(ops)}")
        plain = self._plain(ops).to(next(iter(d.parameters())).device)
        chosen = {slot: self.candidates.index(op) for slot, op in zip(self.slots, ops, strict=True)}
        state: dict[str, torch.Tensor] = {}
        for key, value in d.state_dict().items():
            slot = next((s for s in self.slots if key.startswith(s + ".")), None)
            if slot is None:
                state[key] = value
                continue
            rest = key[len(slot) + 1 :]
            prefix = f"ops.{chosen[slot]}."
            if rest.startswith(prefix):
                state[f"{slot}.{rest[len(prefix) :]}"] = value
        plain.load_state_dict(state, strict=True)
        if fold:
            self._fold_mixing_weights(plain, ops)
        return plain

    def _plain(self, ops: tuple[str, ...]) -> nn.Module:
        """The plain decoder of the searched one's shape with ``ops`` in its slots (fresh weights)."""
        d = self.decoder
        if isinstance(d, MultiScaleDecoder):
            trunk, scale = self.split_ops(ops)
            return MultiScaleDecoder(d.in_channels, d.num_classes, channels=d.channels,
                                     fuse_channels=d.fuse_channels, dilations=d.dilations,
                                     full_channels=d.full_channels, causal=d.causal, layer_ops=trunk,
                                     scale_ops=scale)
        return SPTCNDecoder(
            d.in_channels,
            d.num_classes,
            channels=d.channels,
            dilations=d.dilations,
            full_channels=d.full_channels,
            causal=d.causal,
            layer_ops=ops,
        )

    @torch.no_grad()
    def _fold_mixing_weights(self, plain: nn.Module, ops: Sequence[str]) -> None:
        """Scale each chosen op of ``plain`` by its mixing weight (see ``derived_decoder``)."""
        weights = self.op_weights()
        per_branch = 2  # slots per conv: each residual branch conv1 -> conv2 is 4 slots, scales carry within it
        branch = 2 * per_branch
        for start in range(0, self.num_trunk_slots, branch):
            pending = 1.0
            last_param: nn.Module | None = None
            for k in range(start, start + branch):
                w = weights[k][self.candidates.index(ops[k])]
                module = plain.get_submodule(self.slots[k])
                if _scale_output_(module, w):
                    last_param, pending = module, 1.0
                else:
                    pending *= w  # an op without an affine output layer (identity): carry its weight on
            if last_param is not None and pending != 1.0:
                _scale_output_(last_param, pending)
        if isinstance(plain, MultiScaleDecoder):
            n = self.num_trunk_slots
            scale_w = [weights[k][self.candidates.index(ops[k])] for k in range(n, len(self.slots))]
            _fold_scales(plain, scale_w)


def _fold_scales(plain: MultiScaleDecoder, weights: Sequence[float]) -> None:
    """Fold the mixing weights of a multi-scale decoder's finer-scale slots (3 per scale: path 1, path 2, fusion)
    exactly: ``y_s = fuse_s(up(y_{s-1}) + path_s(lateral_s(x_s)))`` with every map linear in the scale of its
    producer's last affine layer."""

    def scale_path(s: int, upto: int, w: float) -> None:
        # the output of path s's op ``upto - 1`` (upto 0: the lateral projection)
        for j in range(upto - 1, -1, -1):
            if _scale_output_(plain.paths[s][j], w):
                return
        scaled = _scale_output_(plain.laterals[s], w)
        assert scaled, "a lateral projection ends in a BatchNorm"

    def scale_y(s: int, w: float) -> None:
        # y_s: the output of scale s's fusion (s = -1: the trunk's projection)
        if s < 0:
            scaled = _scale_output_(plain.proj, w)
            assert scaled, "the trunk projection ends in a BatchNorm"
        elif not _scale_output_(plain.fuses[s][0], w):
            scale_y(s - 1, w)  # an identity fusion: y_s = up(y_{s-1}) + path_s, scale both terms
            scale_path(s, 2, w)

    for s in range(len(plain.paths)):
        w1, w2, w3 = weights[3 * s:3 * s + 3]
        scale_path(s, 1, w1)
        scale_path(s, 2, w2)
        scale_y(s, w3)


def _scale_output_(module: nn.Module, w: float) -> bool:
    """Multiply ``module``'s output by ``w > 0`` in place through its last affine layer; False if it has none.

    The last leaf module that has parameters must be a BatchNorm (affine) or a convolution and only positively
    homogeneous leaves (ReLU, identity, dropout) may follow it.
    """
    leaves = [m for m in module.modules() if not list(m.children())]
    for leaf in reversed(leaves):
        if isinstance(leaf, nn.ReLU | nn.Identity | nn.Dropout):
            continue
        if isinstance(leaf, nn.modules.batchnorm._BatchNorm) and leaf.affine:
            leaf.weight.mul_(w)
            leaf.bias.mul_(w)
            return True
        if isinstance(leaf, nn.modules.conv._ConvNd):
            leaf.weight.mul_(w)
            if leaf.bias is not None:
                leaf.bias.mul_(w)
            return True
        return False
    return False


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
