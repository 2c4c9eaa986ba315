"""The controller learns within the budget its preset ships with (issue 13): an oracle reward that favours one op.

The reward imitates the spread measured on CamVid: ``0.55 + 0.06 * share + N(0, 0.03)``, with ``share`` the fraction
of the cell's op decisions that chose the favoured op. The real Controller, PPOTrainer and RewardBaseline run with the
settings of a preset file, two candidates per update (two workers), in the CPU preset's space (5 layers, 10 ops, 4
aggregations: every op starts at probability 0.1).

The searches run with oneDNN (mkldnn) off: at batch 2 its LSTM kernels are three times slower on the CPU than torch's
own (300 candidates: 43 s against 29 s), and the controller, its settings and the claims tested are the same.
"""

from __future__ import annotations

import pytest
import torch

from vidnas.config import CellsConfig, load_config
from vidnas.search.cells import CellSearchSpace, Controller, PPOTrainer, RewardBaseline

BUDGET = 300  # candidates: what configs/camvid_cells_cpu.yaml ships with


def _oracle(cells: CellsConfig, favoured: int, *, seed: int, budget: int = BUDGET) -> tuple[int | None, list[float]]:
    """Search with the oracle reward; returns (candidates until p(favoured) > 0.5 or None, the op probabilities
    averaged over the op decisions of the last batch)."""
    space = CellSearchSpace.from_config(cells)
    op_steps = [i for i, d in enumerate(space.decisions()) if d.kind == "op"]
    torch.manual_seed(seed)
    ctrl = Controller(space, hidden=cells.controller_hidden)
    ppo = PPOTrainer(ctrl, lr=cells.controller_lr, clip=cells.ppo_clip, grad_clip=cells.grad_clip,
                     entropy_weight=cells.entropy_weight)
    baseline = RewardBaseline(cells.baseline_decay)
    gen, noise = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    op_probs: list[float] = []
    mkldnn, torch.backends.mkldnn.enabled = torch.backends.mkldnn.enabled, False
    try:
        for done in range(2, budget + 1, 2):
            s = ctrl.sample(2, generator=gen)
            share = (s.tokens[:, op_steps] == favoured).float().mean(1)  # (2,)
            reward = 0.55 + 0.06 * share + 0.03 * torch.randn(2, generator=noise)
            adv = baseline.advantages(reward.tolist(), normalize=cells.advantage_norm)
            ppo.update(s.tokens, s.log_prob, torch.tensor(adv))
            probs = ctrl.probabilities(s.tokens)
            op_probs = torch.stack([probs[i] for i in op_steps]).mean((0, 1)).tolist()  # (n_ops,)
            if op_probs[favoured] > 0.5:
                return done, op_probs
    finally:
        torch.backends.mkldnn.enabled = mkldnn
    return None, op_probs


@pytest.mark.slow
@pytest.mark.parametrize(("favoured", "seed"), [(2, 0), (7, 1)])  # sep3x3, then sep3x3_d3 with another seed
def test_user_preset_controller_learns_the_favoured_op(favoured: int, seed: int) -> None:
    cells = load_config("camvid_cells_cpu").cells
    assert cells.advantage_norm and cells.controller_lr > CellsConfig().controller_lr and cells.candidates == BUDGET
    reached, probs = _oracle(cells, favoured, seed=seed)
    assert reached is not None, f"p(op {favoured}) stayed at most 0.5 over {BUDGET} candidates: {probs}"
    # it went to the op the reward favours, not another one (the collapse seen at lr 1e-2 without a bonus)
    assert max(range(len(probs)), key=probs.__getitem__) == favoured


@pytest.mark.slow
def test_paper_settings_do_not_learn_within_the_preset_budget() -> None:
    """Why user presets differ: at the paper's lr 1e-4 on raw advantages (rewards a few hundredths apart) the
    controller barely moves in 300 candidates (the issue measured 0.09 -> 0.19)."""
    cells = load_config("paper_cells", ["cells.op_preset=cpu"]).cells
    assert (cells.controller_lr, cells.entropy_weight, cells.advantage_norm) == (1e-4, 0.0, False)
    reached, probs = _oracle(cells, 2, seed=0)
    assert reached is None and probs[2] < 0.3


def test_uniform_controller_is_frozen_and_uniform() -> None:
    space = CellSearchSpace(3, ("conv1x1", "sep3x3", "skip"), ("sum", "concat"))
    torch.manual_seed(0)
    ctrl = Controller(space).make_uniform()
    s = ctrl.sample(500, generator=torch.Generator().manual_seed(0))
    for step, p in enumerate(ctrl.probabilities(s.tokens)):
        size = space.decisions()[step].size
        assert torch.allclose(p[:, :size], torch.full((500, size), 1.0 / size))  # exactly uniform on the pool
    assert not any(p.requires_grad for p in ctrl.parameters())  # frozen: nothing for an optimiser to move
    counts = torch.bincount(s.tokens[:, 2], minlength=3).float() / 500  # op 1 of layer 0: sampled uniformly
    assert torch.all((counts - 1 / 3).abs() < 0.07)
