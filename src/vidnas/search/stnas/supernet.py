"""The ST-NAS supernets [ST-NAS Sec. 3.2]: architecture weights inside modules and the encoder depth supernet (Eq. 1
and its latency penalty, Eq. 2); the TCNNAS decoder supernet of mixed ops is ``decoder_supernet``.

* ``SearchModule`` and the walkers ``arch_parameters`` / ``weight_parameters`` / ``set_arch_trainable``: a search
  module owns its architecture weights as registered ``nn.Parameter``s (so ``.to()``, ``state_dict`` and DDP see
  them) and derives its own part of the architecture.
* ``DepthSearchStage`` wraps one encoder stage (downsample + same-shape blocks); ``DepthSupernet`` wraps every stage
  of an ``Encoder`` and returns the same four NCHW maps as ``Encoder.forward``. A stage derives its depth by the
  shrink rule (``shrink_depth``), the supernet the depths of all stages and ``DepthSupernet.derived_encoder`` the
  shortened encoder with the trained weights (``Encoder.with_depths``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from vidnas.models.encoders import Encoder
    from vidnas.search.latency import LatencyTable

__all__ = [
    "SearchModule",
    "search_modules",
    "arch_parameters",
    "weight_parameters",
    "set_arch_trainable",
    "shrink_depth",
    "DepthSearchStage",
    "DepthSupernet",
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

def shrink_depth(alphas: Sequence[float], threshold: float = 1.0, *, min_blocks: int = 1) -> int:
    """The shrink rule [ST-NAS Sec. 3.2]: how many leading blocks of a stage to keep.

    From the last block backwards, block i is removed while ``alpha_i < threshold``; the first block met with
    ``alpha_i >= threshold`` stops the scan, and it and all blocks before it are kept. At least ``min_blocks`` blocks
    are kept (fewer only if the stage has fewer). Blocks can only go from the end because block i + 1 reads block i.

    Examples (threshold 1): ``[1.2, 0.5, 0.9] -> 1``, ``[0.3, 1.5, 0.2, 0.1] -> 2``, ``[0.2, 0.4] -> 1``,
    ``[] -> 0``.

    Args:
        alphas: the stage's alpha values, block 1 first.
        threshold: keep the last block whose alpha reaches it (paper: 1).
        min_blocks: lower bound on the kept blocks (paper: 1).

    Returns:
        The number of blocks kept (a prefix of the stage).
    """
    keep = len(alphas)
    floor = min(max(min_blocks, 0), keep)
    while keep > floor and float(alphas[keep - 1]) < threshold:
        keep -= 1
    return keep


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
