"""The one training loop (``vidnas.engine.loop``): ``fit``'s order of hooks, resume, early stop and seeding, and
``backward_step`` against the hand-written AMP step it replaces (fp16 loss scaling with a skipped step, clipping)."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from vidnas.engine.loop import EpochResult, backward_step, epoch_seed, fit


def test_fit_calls_its_hooks_in_order_and_resumes_at_start_epoch() -> None:
    calls: list[tuple] = []

    def step(epoch: int, i: int, batch: int) -> dict[str, float]:
        calls.append(("step", epoch, i, batch))
        return {"loss": float(batch)}

    def end(res: EpochResult) -> None:
        calls.append(("end", res.epoch, res.loss, dict(res.val)))

    out = fit(step, lambda e: [10 * e + k for k in range(5)], epochs=3, steps=2, start_epoch=1,
              begin=lambda e: calls.append(("begin", e)), validate=lambda e: {"v": e} if e == 2 else {}, end=end)
    assert calls == [("begin", 1), ("step", 1, 0, 10), ("step", 1, 1, 11), ("end", 1, 10.5, {}),
                     ("begin", 2), ("step", 2, 0, 20), ("step", 2, 1, 21), ("end", 2, 20.5, {"v": 2})]
    assert [r.epoch for r in out] == [1, 2] and [len(r.logs) for r in out] == [2, 2]
    assert fit(step, lambda e: [0], epochs=2, steps=1, start_epoch=2) == []  # a finished run runs nothing


def test_fit_stops_when_end_says_so() -> None:
    out = fit(lambda e, i, b: {"loss": 1.0}, lambda e: [0, 1], epochs=10, steps=5, end=lambda r: r.epoch == 3)
    assert [r.epoch for r in out] == [0, 1, 2, 3]


def test_fit_reseeds_every_epoch_from_the_run_seed() -> None:
    def draws(start: int) -> list[tuple[float, float]]:
        seen: list[tuple[float, float]] = []
        fit(lambda e, i, b: {"loss": 0.0}, lambda e: [0], epochs=3, steps=1, start_epoch=start, seed=7,
            begin=lambda e: seen.append((torch.rand(()).item(), random.random())))
        return seen

    full = draws(0)
    assert draws(2) == full[2:]  # a resumed run draws what the uninterrupted one did
    torch.manual_seed(epoch_seed(7, 1))
    assert full[1][0] == torch.rand(()).item()
    assert len(set(full)) == 3
    torch.manual_seed(123)
    before = torch.rand(()).item()
    torch.manual_seed(123)
    fit(lambda e, i, b: {"loss": 0.0}, lambda e: [0], epochs=2, steps=1)  # seed=None leaves the generators alone
    assert torch.rand(()).item() == before


def _net() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3))
    return net, torch.optim.SGD(net[0].parameters(), lr=0.1, momentum=0.9), torch.optim.Adam(net[2].parameters())


def _flat(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in net.parameters()])


@pytest.mark.parametrize("amp", ["none", "fp16"])
def test_backward_step_is_the_scaled_step_it_replaces(amp: str) -> None:
    """Two optimisers on one scaler, one step with an overflowing loss (fp16: skipped, the scale halves)."""
    x, y = torch.randn(16, 6, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 1] * 4)
    nets, scales = [], []
    for written_once in (False, True):
        net, opt_a, opt_b = _net()
        scaler = torch.amp.GradScaler("cpu", enabled=amp == "fp16", init_scale=2.0**16)
        for it in range(4):
            with torch.autocast("cpu", dtype=torch.float16, enabled=amp == "fp16"):
                loss = F.cross_entropy(net(x).float(), y) * (1e30 if it == 1 else 1.0)
            if written_once:
                backward_step(loss, (opt_a, opt_b), scaler)
            else:
                opt_a.zero_grad(set_to_none=True)
                opt_b.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt_a)
                scaler.step(opt_b)
                scaler.update()
        nets.append(_flat(net))
        scales.append(scaler.get_scale() if amp == "fp16" else None)
    assert torch.equal(nets[0], nets[1]) and scales[0] == scales[1]
    if amp == "fp16":
        assert scales[1] < 2.0**16  # the overflow was seen and its step skipped


def test_backward_step_clips_and_shows_unscaled_gradients_before_the_step() -> None:
    x, y = torch.randn(16, 6, generator=torch.Generator().manual_seed(2)), torch.tensor([2, 0, 1, 1] * 4)
    net, opt, _ = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    ref = _net()[0]
    F.cross_entropy(ref(x), y).mul(100.0).backward()
    expected = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
    seen: list[torch.Tensor] = []
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    norm = backward_step(F.cross_entropy(net(x), y) * 100.0, opt, scaler, clip=0.5,
                         before_step=lambda: seen.append(net[0].weight.grad.clone()))
    assert norm is not None and norm.item() == pytest.approx(expected.item(), rel=1e-5)  # unscaled, before clipping
    torch.testing.assert_close(seen[0], ref[0].weight.grad)  # the hook sees the clipped, unscaled gradient
    assert backward_step(F.cross_entropy(net(x), y), opt) is None  # no clip, no norm
