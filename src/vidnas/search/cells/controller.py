"""The LSTM controller that samples dynamic cells [CELLS Sec. 3.2, 4.1].

A two-layer LSTM with 100 hidden units, every weight drawn from U(-0.1, 0.1) [CELLS, following ref. 18]. Decisions are
made one per step in the order of ``CellSearchSpace.decisions()``; the step's input is a learned start vector (step 0)
or the embedding of the previous decision's token (one embedding table per decision kind). Each decision kind has its
own linear head on the top LSTM layer's output:

* ``input``: ``max_pool`` logits; entries ``>= 5 + layer`` (beyond the current pool) are masked to -inf, so they have
  probability exactly 0;
* ``op``: one logit per active op;
* ``agg``: one logit per active aggregation.

The log-probability of a cell is the sum of its decisions' log-probabilities; its entropy the sum of the per-decision
entropies (each over the valid choices only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vidnas.search.cells.space import CellSearchSpace

__all__ = ["Controller", "ControllerSample"]


@dataclass
class ControllerSample:
    """``tokens`` (N, S) int64, ``log_prob`` (N,), ``entropy`` (N,) for N sampled cells of S decisions."""

    tokens: torch.Tensor
    log_prob: torch.Tensor
    entropy: torch.Tensor


class Controller(nn.Module):
    """LSTM policy over cell token sequences.

    Args:
        space: the search space (layers, op and aggregation lists).
        hidden: LSTM width (100 [CELLS]).
        lstm_layers: LSTM depth (2 [CELLS]).
        init_range: every parameter ~ U(-init_range, init_range) (0.1 [CELLS, ref. 18]).
    """

    def __init__(self, space: CellSearchSpace, *, hidden: int = 100, lstm_layers: int = 2,
                 init_range: float = 0.1) -> None:
        super().__init__()
        self.space = space
        self.hidden = hidden
        self.lstm_layers = lstm_layers
        self.decisions = space.decisions()
        n_choices = {"input": space.max_pool, "op": len(space.ops), "agg": len(space.aggregations)}
        self.start = nn.Parameter(torch.empty(1, hidden))
        self.embed = nn.ModuleDict({k: nn.Embedding(n, hidden) for k, n in n_choices.items()})
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, n) for k, n in n_choices.items()})
        self.lstm = nn.LSTM(hidden, hidden, num_layers=lstm_layers)
        self.init_range = init_range
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-init_range, init_range)."""
        for p in self.parameters():
            nn.init.uniform_(p, -self.init_range, self.init_range)

    @property
    def num_decisions(self) -> int:
        return len(self.decisions)

    def make_uniform(self) -> Controller:
        """Freeze this controller as the uniform policy of the random baseline: every head's weights and bias are
        zeroed, so each decision's logits are 0 and its choices (within the pool mask) equally likely whatever the
        LSTM computes; no parameter takes gradients. Returns ``self``."""
        with torch.no_grad():
            for head in self.heads.values():
                head.weight.zero_()
                head.bias.zero_()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def _masked_log_probs(self, step: int, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities (N, n_choices) of decision ``step`` and the validity mask (n_choices,)."""
        d = self.decisions[step]
        logits = self.heads[d.kind](out)  # (N, n_choices)
        valid = torch.arange(logits.shape[-1], device=logits.device) < d.size  # (n_choices,)
        logits = logits.masked_fill(~valid, float("-inf"))
        return F.log_softmax(logits, dim=-1), valid

    def _sample(self, n: int, generator: torch.Generator | None) -> ControllerSample:
        """Sample ``n`` cells step by step (each step's input is the previous step's token)."""
        x = self.start.expand(n, -1)  # (N, hidden)
        state: tuple[torch.Tensor, torch.Tensor] | None = None
        chosen, log_prob, entropy = [], torch.zeros(n, device=x.device), torch.zeros(n, device=x.device)
        for step, d in enumerate(self.decisions):
            out, state = self.lstm(x.unsqueeze(0), state)  # (1, N, hidden)
            logp, valid = self._masked_log_probs(step, out[0])  # (N, n_choices)
            tok = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)  # (N,)
            log_prob = log_prob + logp.gather(1, tok.unsqueeze(1)).squeeze(1)
            # p log p over valid choices only: masked entries have p = 0 and log p = -inf
            entropy = entropy - (logp.exp() * logp.masked_fill(~valid, 0.0)).sum(-1)
            chosen.append(tok)
            x = self.embed[d.kind](tok)  # (N, hidden)
        return ControllerSample(torch.stack(chosen, 1), log_prob, entropy)

    def _score(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Teacher-forced pass over known tokens (N, S), the values ``_sample`` computes along them (to float
        rounding), in a few large ops instead of S small ones: the LSTM runs the whole sequence in one call (inputs:
        the start vector, then the embeddings of tokens 0..S-2), and each decision kind's embedding and head run once
        over all of that kind's steps. The PPO update calls it ``epochs`` times per batch; forward and backward take
        about 2-3x less time than S single-step LSTM calls.

        Returns:
            log_prob (N,), entropy (N,), and each step's log-probabilities (N, n_choices of its kind), in decision
            order.
        """
        device = self.start.device
        tokens = tokens.to(device)
        n, s = tokens.shape
        sizes = torch.tensor([d.size for d in self.decisions], device=device)  # (S,)
        bad = ((tokens < 0) | (tokens >= sizes)).any(0)  # (S,)
        if bool(bad.any()):
            step = int(bad.nonzero()[0])
            d = self.decisions[step]
            raise ValueError(f"decision {step} ({d.kind}, layer {d.layer}) takes tokens 0..{d.size - 1}, "
                             f"got {tokens[:, step].tolist()}")
        steps = {k: torch.tensor([i for i, d in enumerate(self.decisions) if d.kind == k], device=device)
                 for k in self.embed}
        steps = {k: idx for k, idx in steps.items() if len(idx)}
        order = torch.cat(list(steps.values()))  # kind by kind
        emb = torch.cat([self.embed[k](tokens[:, idx]) for k, idx in steps.items()], 1)  # (N, S, hidden), kind order
        emb = emb[:, torch.argsort(order)]  # step order
        x = torch.cat([self.start.expand(n, -1).unsqueeze(1), emb[:, :-1]], 1).transpose(0, 1)  # (S, N, hidden)
        out, _ = self.lstm(x)  # (S, N, hidden)
        log_prob, entropy = torch.zeros(n, device=device), torch.zeros(n, device=device)
        per_step: list[torch.Tensor | None] = [None] * s
        for k, idx in steps.items():
            logits = self.heads[k](out[idx])  # (S_k, N, n_choices)
            valid = (torch.arange(logits.shape[-1], device=device) < sizes[idx].unsqueeze(1)).unsqueeze(1)
            logp = F.log_softmax(logits.masked_fill(~valid, float("-inf")), dim=-1)  # (S_k, N, n_choices)
            log_prob = log_prob + logp.gather(2, tokens[:, idx].T.unsqueeze(2)).squeeze(2).sum(0)
            entropy = entropy - (logp.exp() * logp.masked_fill(~valid, 0.0)).sum(-1).sum(0)
            for j, step in enumerate(idx.tolist()):
                per_step[step] = logp[j]
        return log_prob, entropy, per_step  # type: ignore[return-value]

    def sample(self, n: int = 1, *, generator: torch.Generator | None = None) -> ControllerSample:
        """Sample ``n`` cells (no gradient).

        Args:
            n: number of cells.
            generator: torch RNG for reproducible sampling (its state is checkpointed by the search).

        Returns:
            ``ControllerSample`` with tokens (n, S), log_prob (n,), entropy (n,), all detached.
        """
        with torch.no_grad():
            return self._sample(n, generator)

    def evaluate(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability and entropy of given token sequences, with gradient (the PPO update).

        Args:
            tokens: (N, S) int64.

        Returns:
            (log_prob (N,), entropy (N,)).
        """
        tokens = torch.as_tensor(tokens, dtype=torch.int64)
        if tokens.dim() == 1:
            tokens = tokens.unsqueeze(0)
        if tokens.shape[1] != self.num_decisions:
            raise ValueError(f"expected {self.num_decisions} tokens per cell, got {tokens.shape[1]}")
        log_prob, entropy, _ = self._score(tokens)
        return log_prob, entropy

    def probabilities(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Per-decision probability vectors (N, n_choices) along given token sequences (for inspection and tests)."""
        tokens = torch.as_tensor(tokens, dtype=torch.int64).reshape(-1, self.num_decisions)
        with torch.no_grad():
            return [logp.exp() for logp in self._score(tokens)[2]]
