"""Static cost of a model: parameter and FLOP counts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_params", "count_flops"]


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``model``; a parameter shared by several sub-modules is counted once.

    Args:
        model: any module.
        trainable_only: count only parameters with ``requires_grad``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(fn_or_module: Callable[..., Any] | nn.Module, *inputs: Any, **kwargs: Any) -> int:
    """FLOPs of one call ``fn_or_module(*inputs, **kwargs)`` as counted by ``torch.utils.flop_counter.FlopCounterMode``.

    FlopCounterMode counts one multiply-accumulate as **2 FLOPs** (a Conv2d with ``C_in`` inputs, ``C_out`` outputs,
    a ``k x k`` kernel and an ``H_o x W_o`` output costs ``2 * N * C_out * H_o * W_o * C_in * k * k / groups``; a
    Linear ``(N, I) -> (N, O)`` costs ``2 * N * I * O``). Only matrix products, convolutions and attention kernels are
    counted: biases, normalisation, activations, pooling and interpolation are free there, so the total is a lower
    bound dominated by the layers that matter. Papers that quote "FLOPs" meaning MACs report half of this.

    The call runs under ``torch.inference_mode`` (no autograd graph is recorded).

    Args:
        fn_or_module: a module or any callable running torch ops.
        *inputs: positional arguments of the call (e.g. a ``(1, 3, H, W)`` tensor).
        **kwargs: keyword arguments of the call.

    Returns:
        Total FLOPs of the call.
    """
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn_or_module(*inputs, **kwargs)
    return int(counter.get_total_flops())
