"""Proximal policy optimisation of the controller [CELLS Sec. 4.1, ref. 23], written in the project (SPEC).

For a batch of sampled cells with tokens ``a_i``, the log-probability ``log pi_old(a_i)`` recorded when they were
sampled, and advantages ``A_i = R_i - b`` (reward minus the moving-average baseline, see ``reward.RewardBaseline``),
the controller minimises the negative clipped surrogate::

    r_i(theta) = exp(log pi_theta(a_i) - log pi_old(a_i))
    L(theta)   = - mean_i min(r_i A_i, clip(r_i, 1 - eps, 1 + eps) A_i)  -  beta * mean_i H_i(theta)

with ``eps = 0.1`` (``cells.ppo_clip``), an optional entropy bonus ``beta`` (``cells.entropy_weight``, default 0),
Adam at lr 1e-4 (``cells.controller_lr``) and the gradient norm clipped to 2 (``cells.grad_clip``). The ``min`` makes
the objective pessimistic: when the ratio has moved past the clip range in the direction the advantage favours
(``r > 1 + eps`` with ``A > 0``, ``r < 1 - eps`` with ``A < 0``) the clipped, constant term is the minimum and the
sample carries no gradient; otherwise the unclipped term ``r A`` is the minimum and carries gradient ``A r`` with
respect to ``log pi_theta``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from vidnas.engine.loop import backward_step
from vidnas.search.cells.controller import Controller

__all__ = ["ppo_surrogate", "ppo_loss", "PPOTrainer"]

logger = logging.getLogger(__name__)


def ppo_surrogate(new_log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantage: torch.Tensor,
                  clip: float = 0.1) -> torch.Tensor:
    """Per-sample clipped surrogate ``min(r A, clip(r, 1 - eps, 1 + eps) A)`` (to be maximised).

    Args:
        new_log_prob: (N,) log pi_theta(a_i), with gradient.
        old_log_prob: (N,) log pi_old(a_i) (treated as a constant).
        advantage: (N,) A_i (a constant).
        clip: eps.

    Returns:
        (N,) surrogate values.
    """
    ratio = torch.exp(new_log_prob - old_log_prob.detach())
    adv = advantage.detach()
    return torch.minimum(ratio * adv, torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * adv)


def ppo_loss(new_log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantage: torch.Tensor, clip: float = 0.1,
             entropy: torch.Tensor | None = None, entropy_weight: float = 0.0) -> torch.Tensor:
    """The scalar loss ``-mean(surrogate) - entropy_weight * mean(entropy)`` (formula in the module docstring)."""
    loss = -ppo_surrogate(new_log_prob, old_log_prob, advantage, clip).mean()
    if entropy is not None and entropy_weight:
        loss = loss - entropy_weight * entropy.mean()
    return loss


class PPOTrainer:
    """Runs PPO updates of a controller on batches of (tokens, old log-probs, advantages).

    Args:
        controller: the policy.
        lr: Adam learning rate (1e-4 [CELLS]).
        clip: eps (0.1).
        grad_clip: maximum gradient norm (2.0).
        entropy_weight: entropy bonus beta (0 = none).
        epochs: optimisation passes over each batch (each pass one full-batch step).
    """

    def __init__(self, controller: Controller, *, lr: float = 1e-4, clip: float = 0.1, grad_clip: float = 2.0,
                 entropy_weight: float = 0.0, epochs: int = 4) -> None:
        if epochs < 1:
            raise ValueError(f"PPO epochs must be >= 1, got {epochs}")
        self.controller = controller
        self.clip = clip
        self.grad_clip = grad_clip
        self.entropy_weight = entropy_weight
        self.epochs = epochs
        self.optimizer = torch.optim.Adam(controller.parameters(), lr=lr)

    def update(self, tokens: torch.Tensor, old_log_prob: torch.Tensor, advantage: torch.Tensor) -> dict[str, float]:
        """``epochs`` clipped-surrogate steps on one batch.

        Args:
            tokens: (N, S) int64 sampled token sequences.
            old_log_prob: (N,) their log-probabilities when sampled.
            advantage: (N,) reward minus baseline.

        Returns:
            Statistics of the last pass: ``loss``, ``clip_fraction`` (share of ratios outside the clip range),
            ``approx_kl`` (mean of old - new log-prob), ``entropy``, ``grad_norm`` (before clipping).
        """
        tokens = torch.as_tensor(tokens, dtype=torch.int64)
        old = torch.as_tensor(old_log_prob, dtype=torch.float32)
        adv = torch.as_tensor(advantage, dtype=torch.float32)
        stats: dict[str, float] = {}
        self.controller.train()
        for _ in range(self.epochs):
            new, ent = self.controller.evaluate(tokens)
            loss = ppo_loss(new, old, adv, self.clip, ent, self.entropy_weight)
            grad_norm = backward_step(loss, self.optimizer, clip=self.grad_clip)
            with torch.no_grad():
                ratio = torch.exp(new - old)
                stats = {
                    "loss": loss.item(),
                    "clip_fraction": float(((ratio < 1 - self.clip) | (ratio > 1 + self.clip)).float().mean()),
                    "approx_kl": float((old - new).mean()),
                    "entropy": float(ent.mean()),
                    "grad_norm": float(grad_norm),
                }
        logger.debug("PPO update on %d cells: %s", len(tokens), stats)
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
