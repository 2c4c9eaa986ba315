"""The reward of a sampled cell and the moving-average baseline [CELLS Sec. 3.3, SPEC].

Reward: the geometric mean of three scores on meta-val, as in the authors' static search (ref. 18)::

    R = (mIoU * fwIoU * mAcc) ** (1/3)

computed by ``vidnas.metrics.ConfusionMatrix.compute()["reward"]`` (the formulas of each score are in its docstring).
A cell evaluated on no counted pixel has an undefined (NaN) reward; ``reward_from_confusion`` returns 0 then.

Baseline: an exponential moving average with decay ``d = 0.95`` (``cells.baseline_decay``). For a batch of rewards
``R_1..R_n`` (candidate order) the advantages use the baseline ``b`` from before the batch, ``A_i = R_i - b``; then
``b <- d b + (1 - d) R_i`` for each ``R_i`` in turn. Before any reward has been seen the baseline is initialised to the
mean reward of the first batch (so the first batch's advantages are centred).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from vidnas.metrics import ConfusionMatrix

__all__ = ["geometric_reward", "reward_from_confusion", "RewardBaseline"]


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


class RewardBaseline:
    """Exponential-moving-average reward baseline (update rule in the module docstring).

    Args:
        decay: d (0.95).
    """

    def __init__(self, decay: float = 0.95) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"baseline decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.value: float | None = None
        self.count = 0

    def advantages(self, rewards: Sequence[float]) -> list[float]:
        """Advantages ``R_i - b`` of a batch with the current baseline, then fold the batch into the baseline."""
        rewards = [float(r) for r in rewards]
        if not rewards:
            return []
        if self.value is None:
            self.value = sum(rewards) / len(rewards)
        adv = [r - self.value for r in rewards]
        for r in rewards:
            self.update(r)
        return adv

    def update(self, reward: float) -> float:
        """``b <- d b + (1 - d) R`` (``b <- R`` if there is no baseline yet); returns the new baseline."""
        self.value = float(reward) if self.value is None else self.decay * self.value + (1 - self.decay) * reward
        self.count += 1
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "value": self.value, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.value = None if state["value"] is None else float(state["value"])
        self.count = int(state["count"])
