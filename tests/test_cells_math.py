"""Cell search math on hand-computed cases: PPO clipping, the reward, the baseline, the controller's sampling."""

from __future__ import annotations

import math

import pytest
import torch

from vidnas.metrics import ConfusionMatrix
from vidnas.search.cells import (
    CellSearchSpace,
    Controller,
    EarlyStopRule,
    PPOTrainer,
    RewardBaseline,
    geometric_reward,
    ppo_loss,
    ppo_surrogate,
    reward_from_confusion,
)

EPS = 0.1

# ratio r, advantage A, expected loss -min(rA, clip(r)A), expected d loss / d log pi_new (0 when the clipped term wins)
PPO_CASES = [
    pytest.param(1.05, 2.0, -2.1, -2.1, id="inside-positive"),
    pytest.param(0.95, -2.0, 1.9, 1.9, id="inside-negative"),
    pytest.param(1.5, 2.0, -2.2, 0.0, id="above-positive-clipped"),
    pytest.param(1.5, -2.0, 3.0, 3.0, id="above-negative-unclipped"),
    pytest.param(0.5, 2.0, -1.0, -1.0, id="below-positive-unclipped"),
    pytest.param(0.5, -2.0, 1.8, 0.0, id="below-negative-clipped"),
]


@pytest.mark.parametrize(("ratio", "adv", "loss_value", "grad"), PPO_CASES)
def test_ppo_clipped_loss_value_and_gradient(ratio: float, adv: float, loss_value: float, grad: float) -> None:
    old = torch.tensor([-1.3])
    new = (old + math.log(ratio)).clone().requires_grad_(True)
    loss = ppo_loss(new, old, torch.tensor([adv]), clip=EPS)
    assert loss.item() == pytest.approx(loss_value, abs=1e-6)
    loss.backward()
    # d(-r A)/d log pi = -r A where the unclipped term is the minimum; the clipped term is constant in theta
    assert new.grad.item() == pytest.approx(grad, abs=1e-6)


def test_ppo_batch_is_the_mean_and_old_log_prob_carries_no_gradient() -> None:
    ratios = torch.tensor([c.values[0] for c in PPO_CASES])
    advs = torch.tensor([c.values[1] for c in PPO_CASES])
    old = torch.zeros(len(PPO_CASES), requires_grad=True)
    new = torch.log(ratios).requires_grad_(True)
    loss = ppo_loss(new, old, advs, clip=EPS)
    expected = sum(c.values[2] for c in PPO_CASES) / len(PPO_CASES)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert torch.allclose(new.grad, torch.tensor([c.values[3] for c in PPO_CASES]) / len(PPO_CASES), atol=1e-6)
    assert old.grad is None or torch.count_nonzero(old.grad) == 0
    # surrogate per sample: min(rA, clip(r)A)
    assert torch.allclose(ppo_surrogate(new, old, advs, EPS), -torch.tensor([c.values[2] for c in PPO_CASES]),
                          atol=1e-6)


def test_ppo_entropy_bonus() -> None:
    new, old, adv = torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([1.0, -1.0])
    ent = torch.tensor([2.0, 4.0])
    # ratio 1: surrogate mean = (1 - 1) / 2 = 0; bonus 0.5 * mean(H) = 1.5
    assert ppo_loss(new, old, adv, EPS, ent, entropy_weight=0.5).item() == pytest.approx(-1.5)
    assert ppo_loss(new, old, adv, EPS, ent, entropy_weight=0.0).item() == pytest.approx(0.0)


def test_reward_hand_computed() -> None:
    cm = ConfusionMatrix(2, ignore_index=255)
    cm.update(torch.tensor([0, 0, 1, 1, 0]), torch.tensor([0, 0, 0, 1, 255]))
    # mat = [[2, 1], [0, 1]]: IoU0 = 2/3, IoU1 = 1/2, fwIoU = 3/4*2/3 + 1/4*1/2, mAcc = (2/3 + 1)/2
    miou, fwiou, macc = (2 / 3 + 1 / 2) / 2, 0.75 * 2 / 3 + 0.25 * 0.5, (2 / 3 + 1) / 2
    expected = (miou * fwiou * macc) ** (1 / 3)
    reward, metrics = reward_from_confusion(cm)
    assert reward == pytest.approx(expected, abs=1e-12)
    assert metrics["miou"] == pytest.approx(miou) and metrics["fwiou"] == pytest.approx(fwiou)
    assert metrics["macc"] == pytest.approx(macc)
    assert geometric_reward(miou, fwiou, macc) == pytest.approx(expected)
    assert math.isnan(geometric_reward(math.nan, 1.0, 1.0))
    # nothing counted: undefined scores, reward 0 for the controller
    assert reward_from_confusion(ConfusionMatrix(2))[0] == 0.0


def test_baseline_update_hand_computed() -> None:
    b = RewardBaseline(decay=0.95)
    assert b.advantages([0.5, 0.7]) == pytest.approx([-0.1, 0.1])  # first batch: baseline = its mean, 0.6
    assert b.value == pytest.approx(0.95 * (0.95 * 0.6 + 0.05 * 0.5) + 0.05 * 0.7)  # 0.60025
    assert b.advantages([0.9]) == pytest.approx([0.9 - 0.60025])
    assert b.value == pytest.approx(0.95 * 0.60025 + 0.05 * 0.9)
    assert b.count == 3
    c = RewardBaseline(0.95)
    c.load_state_dict(b.state_dict())
    assert c.value == b.value and c.count == 3
    with pytest.raises(ValueError):
        RewardBaseline(1.0)


def test_early_stop_rule_shrinking_tolerance() -> None:
    rule = EarlyStopRule(mean=0.5, count=4, tolerance=0.1, min_history=2)
    assert rule.threshold() == pytest.approx(0.5 - 0.1 / 2)  # tol / sqrt(4)
    assert rule.should_stop(0.44) and not rule.should_stop(0.46)
    assert EarlyStopRule(mean=0.5, count=16, tolerance=0.1).threshold() == pytest.approx(0.475)  # tighter later
    assert EarlyStopRule(mean=0.5, count=1, tolerance=0.1, min_history=2).threshold() is None
    assert not EarlyStopRule().should_stop(0.0)


# ------------------------------------------------------------------------------------------------------- controller


@pytest.fixture()
def controller() -> Controller:
    torch.manual_seed(0)
    space = CellSearchSpace(num_layers=3, ops=("conv1x1", "sep3x3", "skip", "deform3x3"),
                            aggregations=("sum", "concat", "affine"))
    return Controller(space, hidden=100)


def test_controller_init_and_shapes(controller: Controller) -> None:
    assert controller.lstm.num_layers == 2 and controller.lstm.hidden_size == 100
    for p in controller.parameters():
        assert float(p.detach().abs().max()) <= 0.1
    s = controller.sample(7, generator=torch.Generator().manual_seed(1))
    assert s.tokens.shape == (7, 15) and s.log_prob.shape == (7,) and s.entropy.shape == (7,)
    assert not s.log_prob.requires_grad


def test_controller_sampling_respects_the_pool_size(controller: Controller) -> None:
    s = controller.sample(300, generator=torch.Generator().manual_seed(2))
    space = controller.space
    for step, d in enumerate(space.decisions()):
        col = s.tokens[:, step]
        assert int(col.min()) >= 0 and int(col.max()) < d.size
        if d.kind == "input":
            assert d.size == 5 + d.layer
    # the last layer can pick the previous layers' outputs (pool indices 5, 6): the mask does not forbid them
    assert int(s.tokens[:, 10].max()) >= 5
    probs = controller.probabilities(s.tokens[:3])
    for step, d in enumerate(space.decisions()):
        p = probs[step]
        assert torch.allclose(p.sum(-1), torch.ones(3))
        if d.kind == "input":
            assert torch.all(p[:, d.size:] == 0)  # masked choices have probability exactly 0
            assert torch.all(p[:, :d.size] > 0)
    for t in s.tokens[:20]:
        space.genotype(t.tolist())  # every sample is a valid cell


def test_controller_log_prob_recomputed_equals_sampled(controller: Controller) -> None:
    s = controller.sample(6, generator=torch.Generator().manual_seed(3))
    lp, ent = controller.evaluate(s.tokens)
    assert torch.allclose(lp, s.log_prob, atol=1e-5)
    assert torch.allclose(ent, s.entropy, atol=1e-5)
    assert lp.requires_grad
    # log-prob = sum of the chosen entries' log-probabilities
    probs = controller.probabilities(s.tokens)
    manual = sum(torch.log(p[torch.arange(6), s.tokens[:, i]]) for i, p in enumerate(probs))
    assert torch.allclose(manual, s.log_prob, atol=1e-5)
    bad = s.tokens[:1].clone()
    bad[0, 0] = 5  # layer 0 has a pool of 5 entries
    with pytest.raises(ValueError, match="tokens 0..4"):
        controller.evaluate(bad)


def test_sampling_is_reproducible_from_the_generator_state(controller: Controller) -> None:
    g = torch.Generator().manual_seed(4)
    state = g.get_state()
    a = controller.sample(3, generator=g).tokens
    g.set_state(state)
    assert torch.equal(controller.sample(3, generator=g).tokens, a)


def test_ppo_update_moves_probability_towards_positive_advantage(controller: Controller) -> None:
    s = controller.sample(2, generator=torch.Generator().manual_seed(5))
    ppo = PPOTrainer(controller, lr=1e-2, clip=EPS, grad_clip=2.0, epochs=3)
    stats = ppo.update(s.tokens, s.log_prob, torch.tensor([1.0, -1.0]))
    new, _ = controller.evaluate(s.tokens)
    assert new[0] > s.log_prob[0] and new[1] < s.log_prob[1]
    assert set(stats) >= {"loss", "clip_fraction", "approx_kl", "entropy", "grad_norm"}


# ----------------------------------------------------------------------------------------- latency-aware reward


def test_latency_reward_hand_computed() -> None:
    from vidnas.search.cells import latency_reward

    # MnasNet's soft constraint: a cell twice as slow as the target loses 1 - 2 ** -0.07 = 4.7 % of its reward
    assert latency_reward(0.6, 20.0, 10.0, -0.07) == pytest.approx(0.6 * 2 ** -0.07)
    assert latency_reward(0.6, 5.0, 10.0, -0.07) == pytest.approx(0.6 * 0.5 ** -0.07)  # faster: a bonus
    assert latency_reward(0.6, 10.0, 10.0, -1.0) == pytest.approx(0.6)
    assert latency_reward(0.6, 123.0, 1.0, 0.0) == 0.6  # w = 0: the paper's reward, exactly
    assert latency_reward(0.6, None, None, 0.0) == 0.6
    with pytest.raises(ValueError, match="must be <= 0"):
        latency_reward(0.6, 20.0, 10.0, 0.07)
    with pytest.raises(ValueError, match="positive latency and target"):
        latency_reward(0.6, None, 10.0, -0.07)


def test_baseline_advantage_normalisation_hand_computed() -> None:
    b = RewardBaseline(decay=0.5)
    # first batch: b = 0.6, v = its variance 0.01, so the advantages are (+-0.1) / 0.1
    assert b.advantages([0.5, 0.7], normalize=True) == pytest.approx([-1.0, 1.0])
    # updates: R = 0.5: v = 0.5 * 0.01 + 0.5 * (0.5 - 0.6)^2 = 0.01, b = 0.55;
    #          R = 0.7: v = 0.5 * 0.01 + 0.5 * (0.7 - 0.55)^2 = 0.01625, b = 0.625
    assert b.value == pytest.approx(0.625) and b.var == pytest.approx(0.01625)
    assert b.advantages([0.725], normalize=True) == pytest.approx([0.1 / 0.01625 ** 0.5])
    c = RewardBaseline(0.5)
    c.load_state_dict(b.state_dict())
    assert (c.value, c.var, c.count) == (b.value, b.var, 3)
    old = {"decay": 0.95, "value": 0.5, "count": 2}  # a checkpoint written before normalisation existed
    c.load_state_dict(old)
    assert c.var is None and c.advantages([0.6], normalize=True) == pytest.approx([0.1])  # no scale yet: raw


def test_reward_stats_count_early_stops_and_compare_full_epoch_candidates_alone() -> None:
    """Issue 27: an early-stopped candidate's reward is its halfway reward, so the statistics also say how many
    stopped early and give the mean and thirds over the candidates that ran every cell epoch."""
    from vidnas.search.cells.summary import format_comparison, reward_stats

    rewards = [0.50, 0.10, 0.52, 0.54, 0.12, 0.56, 0.58, 0.60, 0.14]
    recs = [{"cid": i, "reward": r, "failed": False, "early_stopped": r < 0.2,
             "cost": {"latency_ms": 10.0 + i, "fps_ratio": 0.9 + 0.1 * i}} for i, r in enumerate(rewards)]
    recs.append({"cid": 9, "reward": None, "failed": True})
    s = reward_stats(recs)
    assert (s["n"], s["early_stopped"], s["full_epochs"]) == (9, 3, 6)
    full = [r for r in rewards if r >= 0.2]
    assert s["full"]["mean_reward"] == pytest.approx(sum(full) / 6)
    assert s["full"]["thirds"]["first"]["mean"] == pytest.approx((0.50 + 0.52) / 2)
    assert s["full"]["thirds"]["last"]["mean"] == pytest.approx((0.58 + 0.60) / 2)
    assert s["mean_reward"] < s["full"]["mean_reward"]  # the halfway rewards pull the plain mean down
    assert s["median_latency_ms"] == 14.0 and s["median_fps_ratio"] == pytest.approx(1.3)
    assert "| run | 9 |" in format_comparison({"run": s}) and "3 of 9" in format_comparison({"run": s})
