"""The reward of a sampled cell and the moving-average baseline [CELLS Sec. 3.3, SPEC].

Accuracy reward: the geometric mean of three scores on meta-val, as in the authors' static search (ref. 18)::

    R_acc = (mIoU * fwIoU * mAcc) ** (1/3)

computed by ``vidnas.metrics.ConfusionMatrix.compute()["reward"]`` (the formulas of each score are in its docstring).
A cell evaluated on no counted pixel has an undefined (NaN) reward; ``reward_from_confusion`` returns 0 then.

Latency-aware reward (MnasNet, Tan et al. 2019, soft constraint; SPEC "Cell reward")::

    R = R_acc * (L / T) ** w

with ``L`` the candidate's steady-state frame latency (encoder + cell, measured in the worker), ``T`` the target
(default: the static network's frame, measured side by side with it) and ``w <= 0`` (``cells.latency_weight``).
``w = 0`` is the paper's reward. MnasNet's ``w = -0.07`` trades a 2x slower model for about 5 % of reward; at the
development CPU's reward scale (about 0.55-0.6) that is 0.5 mIoU points for 1.2x FPS, the trade the issue asks for.

Baseline: an exponential moving average with decay ``d = 0.95`` (``cells.baseline_decay``). For a batch of rewards
``R_1..R_n`` (candidate order) the advantages use the baseline ``b`` from before the batch, ``A_i = R_i - b``; then
``b <- d b + (1 - d) R_i`` for each ``R_i`` in turn. Before any reward has been seen the baseline is initialised to the
mean reward of the first batch (so the first batch's advantages are centred).

Advantage normalisation (``cells.advantage_norm``, off in the paper preset): the baseline also tracks the moving
average of the squared deviation, ``v <- d v + (1 - d) (R_i - b)^2`` (``b`` before the update; initialised to the first
batch's variance), and the advantages are divided by ``sqrt(v)``: ``A_i = (R_i - b) / sqrt(v)``. Rewards of one cell
search differ by a few hundredths, so raw advantages are tiny and the step the controller takes depends on the reward
scale; normalised ones are O(1), which makes the learning rate mean the same on any data set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from vidnas.metrics import ConfusionMatrix

__all__ = ["geometric_reward", "reward_from_confusion", "latency_reward", "RewardBaseline"]


def geometric_reward(miou: float, fwiou: float, macc: float) -> float:
    """``(miou * fwiou * macc) ** (1/3)``; NaN if any score is NaN."""
    if any(math.isnan(v) for v in (miou, fwiou, macc)):
        return math.nan
    return (miou * fwiou * macc) ** (1.0 / 3.0)


def reward_from_confusion(cm: ConfusionMatrix) -> tuple[float, dict[str, Any]]:
    """The reward of a filled confusion matrix and its scores.

    Returns:
        (reward, metrics) where metrics holds ``miou``, ``fwiou``, ``macc``, ``pixel_acc``, ``reward`` as floats;
        the reward is 0.0 when no pixel was counted (NaN scores).
    """
    m = cm.compute()
    reward = m["reward"]
    if reward != reward:  # NaN: nothing counted
        reward = 0.0
    keep = {k: float(m[k]) for k in ("miou", "fwiou", "macc", "pixel_acc")}
    keep["reward"] = float(reward)
    return float(reward), keep


def latency_reward(accuracy: float, latency_ms: float | None, target_ms: float | None, weight: float) -> float:
    """``accuracy * (latency_ms / target_ms) ** weight``; exactly ``accuracy`` when ``weight`` is 0.

    Raises:
        ValueError: a positive weight (it would reward slow cells), or a missing / non-positive latency or target
            with a non-zero weight.
    """
    if weight > 0:
        raise ValueError(f"cells.latency_weight must be <= 0 (the exponent of latency / target; MnasNet uses -0.07), "
                         f"got {weight}")
    if weight == 0:
        return float(accuracy)
    if latency_ms is None or target_ms is None or not latency_ms > 0 or not target_ms > 0:
        raise ValueError(f"a latency-aware reward needs a positive latency and target, got {latency_ms} and "
                         f"{target_ms} ms")
    return float(accuracy) * (float(latency_ms) / float(target_ms)) ** float(weight)


class RewardBaseline:
    """Exponential-moving-average reward baseline, optionally normalising advantages (rules in the module docstring).

    Args:
        decay: d (0.95).
    """

    def __init__(self, decay: float = 0.95) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"baseline decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.value: float | None = None
        self.var: float | None = None
        self.count = 0

    def advantages(self, rewards: Sequence[float], *, normalize: bool = False) -> list[float]:
        """Advantages ``R_i - b`` of a batch with the current baseline (divided by ``sqrt(v)`` when ``normalize``),
        then fold the batch into the baseline."""
        rewards = [float(r) for r in rewards]
        if not rewards:
            return []
        if self.value is None:
            self.value = sum(rewards) / len(rewards)
        if self.var is None and len(rewards) > 1:
            self.var = sum((r - self.value) ** 2 for r in rewards) / len(rewards)
        adv = [r - self.value for r in rewards]
        if normalize and self.var:
            scale = math.sqrt(self.var)
            adv = [a / scale for a in adv]
        for r in rewards:
            self.update(r)
        return adv

    def update(self, reward: float) -> float:
        """``b <- d b + (1 - d) R`` (``b <- R`` if there is no baseline yet) and the squared-deviation average;
        returns the new baseline."""
        if self.value is None:
            self.value = float(reward)
        else:
            dev2 = (reward - self.value) ** 2
            self.var = dev2 if self.var is None else self.decay * self.var + (1 - self.decay) * dev2
            self.value = self.decay * self.value + (1 - self.decay) * reward
        self.count += 1
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "value": self.value, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.value = None if state["value"] is None else float(state["value"])
        self.var = None if state.get("var") is None else float(state["var"])
        self.count = int(state["count"])
