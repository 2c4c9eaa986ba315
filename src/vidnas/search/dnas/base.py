"""What every search module shares: its own architecture weights, kept apart from the network weights.

A *search module* (``DepthSearchStage``, ``MixedOp``) owns its architecture weights as registered ``nn.Parameter``s
(so ``.to()``, ``state_dict`` and DistributedDataParallel see them) and derives its own part of the architecture.
The functions here walk any model, including a ``VideoSegmenter`` whose encoder or decoder is a supernet, and split
its parameters into architecture weights and network weights.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from torch import nn

__all__ = ["SearchModule", "arch_parameters", "weight_parameters", "set_arch_trainable", "search_modules"]

logger = logging.getLogger(__name__)


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
