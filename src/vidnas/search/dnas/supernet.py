"""Decoder supernet (TCNNAS) [ST-NAS Sec. 3.3], warm-up, one search step, and deriving an ``Arch``.

Training schedules of a supernet (``StnasConfig.mode``):

* ``"joint"`` (the paper's default, single-level): each step computes the loss on one batch and updates network
  weights and architecture weights together (one backward, a weight-optimiser step and an arch-optimiser step on the
  same gradients).
* ``"alternating"`` (option, first-order DARTS): a weight step on batch A (from one half of the training data), then
  an architecture step on batch B (from the other half); each step recomputes the loss with the current weights.

Warm-up: during the first ``warmup_epochs`` epochs the architecture weights are frozen (``arch_warmup``), because a
supernet whose ops are still untrained drifts to ``identity`` (SPEC "Decoder supernet").
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vidnas.models.architecture import Arch
from vidnas.models.decoders import SPTCNDecoder
from vidnas.models.ops import SEARCH_CANDIDATES
from vidnas.search.dnas.base import arch_parameters, set_arch_trainable, weight_parameters
from vidnas.search.dnas.depth import DepthSupernet
from vidnas.search.dnas.mixed import MixedOp

__all__ = [
    "DecoderSupernet",
    "build_decoder_supernet",
    "arch_warmup",
    "search_step",
    "derive_arch",
    "SEARCH_MODES",
]

logger = logging.getLogger(__name__)

SEARCH_MODES: tuple[str, ...] = ("joint", "alternating")


class DecoderSupernet(nn.Module):
    """An SP-TCN decoder whose every searchable slot is a ``MixedOp`` (TCNNAS supernet, [ST-NAS Fig. 2]).

    Each 3x3x3 conv of the four residual layers is two slots in sequence, so there are 16 mixed ops, each over the
    seven candidates, ``out = sum_j softmax(beta)_j op_j(x)``. ``reduce``, ``final`` and the head stay as they are
    (not searched). ``derive()`` is the argmax op of every slot, in ``searchable_slots()`` order, which is the
    order of ``Arch.decoder_ops``.

    Args:
        decoder: an ``SPTCNDecoder`` built with ``layer_ops`` (any ops: they are replaced); see
            ``build_decoder_supernet`` to build one directly. Modified in place and kept as ``self.decoder``.
        candidates: candidate op names of every slot.

    Shapes:
        (B, C, T, h, w) -> (B, K, T, h, w), as the decoder.
    """

    def __init__(self, decoder: SPTCNDecoder, candidates: Sequence[str] = SEARCH_CANDIDATES) -> None:
        super().__init__()
        if getattr(decoder, "layer_ops", None) is None:
            raise ValueError(
                "the decoder supernet needs an SPTCNDecoder built with layer_ops (its slots are then swapped for mixed "
                "ops); the baseline 3x3x3 decoder has no slots. Use build_decoder_supernet(...)"
            )
        self.candidates = tuple(candidates)
        self.slots = [name for name, _, _ in decoder.searchable_slots()]
        for name, channels, dilation in decoder.searchable_slots():
            decoder.set_slot(name, MixedOp(channels, dilation, self.candidates, causal=decoder.causal))
        self.decoder = decoder
        logger.debug("decoder supernet: %d mixed ops x %d candidates", len(self.slots), len(self.candidates))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, h, w) -> (B, K, T, h, w)."""
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
        """The 16 beta vectors, in slot order."""
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
        """The argmax op of every slot, in slot order (``Arch.decoder_ops``)."""
        return tuple(op.derive() for op in self.mixed_ops())

    def derived_decoder(self) -> SPTCNDecoder:
        """A plain ``SPTCNDecoder`` with the derived ops, carrying the weights trained in the supernet.

        The fixed layers are copied, and each slot gets the weights of its chosen candidate; with betas concentrated
        on the chosen ops it computes what the supernet computes. (The paper trains the final model from scratch;
        this is for inspection and fine-tuning.)
        """
        d = self.decoder
        ops = self.derive()
        plain = SPTCNDecoder(
            d.in_channels,
            d.num_classes,
            channels=d.channels,
            dilations=d.dilations,
            full_channels=d.full_channels,
            causal=d.causal,
            layer_ops=ops,
        ).to(next(iter(d.parameters())).device)
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
        return plain


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


def arch_warmup(model: nn.Module, epoch: int, warmup_epochs: int) -> bool:
    """Freeze the architecture weights of ``model`` during warm-up; call at the start of every epoch.

    Epochs ``0 .. warmup_epochs - 1`` train the network weights only; from epoch ``warmup_epochs`` on the
    architecture weights train too. See ``set_arch_trainable`` for what freezing means (and the DDP note).

    Returns:
        Whether the architecture weights are trainable in this epoch.
    """
    trainable = epoch >= warmup_epochs
    set_arch_trainable(model, trainable)
    if epoch == warmup_epochs and warmup_epochs > 0:
        logger.info("warm-up over after %d epoch(s): architecture weights now train", warmup_epochs)
    return trainable


LossFn = Callable[[Any], "torch.Tensor | tuple[torch.Tensor, Mapping[str, float]]"]


def _loss(loss_fn: LossFn, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
    out = loss_fn(batch)
    if isinstance(out, tuple):
        loss, logs = out
        return loss, {k: float(v) for k, v in logs.items()}
    return out, {}


def search_step(
    model: nn.Module,
    loss_fn: LossFn,
    weight_optimizer: torch.optim.Optimizer,
    arch_optimizer: torch.optim.Optimizer,
    batch: Any,
    *,
    mode: str = "joint",
    arch_batch: Any = None,
) -> dict[str, float]:
    """One step of supernet training (see the module docstring for the two modes).

    The optimisers must hold disjoint parameters: ``weight_parameters(model)`` and ``arch_parameters(model)``
    (usually AdamW for the weights and Adam without weight decay for the architecture weights, so decay does not
    pull the alphas towards 0 on top of Eq. 2). While the architecture weights are frozen (warm-up) the
    architecture update is skipped.

    Args:
        model: the supernet (or a model containing one).
        loss_fn: ``loss_fn(batch) -> loss`` or ``(loss, logs)``; the loss includes any regulariser, e.g.
            ``task + lam * depth_supernet.penalty(table)`` (Eq. 2); ``logs`` are floats to report.
        weight_optimizer: optimiser of the network weights.
        arch_optimizer: optimiser of the architecture weights.
        batch: the batch of this step (``"alternating"``: of the weight half of the data).
        mode: ``"joint"`` or ``"alternating"``.
        arch_batch: ``"alternating"`` only: a batch from the architecture half of the data.

    Returns:
        ``{"loss": ..., **logs}`` of the weight step, plus ``"arch_loss"`` and ``arch_*`` logs of the architecture
        step in alternating mode.
    """
    if mode not in SEARCH_MODES:
        raise ValueError(f"unknown search mode {mode!r}; valid modes: {', '.join(SEARCH_MODES)}")
    arch_on = any(p.requires_grad for p in arch_parameters(model))
    weight_optimizer.zero_grad(set_to_none=True)
    arch_optimizer.zero_grad(set_to_none=True)
    loss, logs = _loss(loss_fn, batch)
    loss.backward()
    weight_optimizer.step()
    result = {"loss": float(loss.detach()), **logs}
    if not arch_on:
        return result
    if mode == "joint":
        arch_optimizer.step()  # same gradients as the weight step: single-level optimisation
        return result
    if arch_batch is None:
        raise ValueError("mode 'alternating' needs arch_batch (a batch from the other half of the data)")
    weight_optimizer.zero_grad(set_to_none=True)
    arch_optimizer.zero_grad(set_to_none=True)
    arch_loss, arch_logs = _loss(loss_fn, arch_batch)
    arch_loss.backward()
    arch_optimizer.step()
    weight_optimizer.zero_grad(set_to_none=True)  # the arch step's weight gradients are not applied
    result["arch_loss"] = float(arch_loss.detach())
    result.update({f"arch_{k}": v for k, v in arch_logs.items()})
    return result


def derive_arch(
    base: Arch,
    *,
    depth_supernet: DepthSupernet | None = None,
    decoder_supernet: DecoderSupernet | None = None,
    threshold: float = 1.0,
    name: str | None = None,
) -> Arch:
    """``base`` with the depths and / or decoder ops derived by the given supernets (the search record is not added;
    see ``vidnas.search.arch.write_search_arch``)."""
    changes: dict[str, Any] = {}
    if depth_supernet is not None:
        changes["depths"] = depth_supernet.derive(threshold)
    if decoder_supernet is not None:
        changes["decoder_ops"] = decoder_supernet.derive()
        changes["decoder"] = "sptcn"
    if name is not None:
        changes["name"] = name
    return dataclasses.replace(base, **changes)
