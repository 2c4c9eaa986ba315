"""The ST-NAS depth decision: the truncated-loss rule, budget mode, the lambda path, flip lambdas and the task-only
alpha gradients, on hand-computed cases and the real tiny supernet."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from vidnas.cli.main import app
from vidnas.config import load_config
from vidnas.engine.logger import read_jsonl
from vidnas.engine.losses import segmentation_loss
from vidnas.models import VideoSegmenter, build_encoder, build_model
from vidnas.models.architecture import ArchError
from vidnas.search.latency import LatencyTable
from vidnas.search.stnas import (
    BudgetError,
    DepthSupernet,
    choose_depths,
    combined_loss,
    flip_lambdas,
    lambda_path,
    min_latency,
    read_search_record,
    recalibrate_batchnorm,
    search_stnas,
    truncated_losses,
    write_search_arch,
)

REPO = Path(__file__).resolve().parents[1]
TINY_YAML = str(REPO / "configs" / "tiny.yaml")  # swin_test 2,2,2,2 at 64x96, SP-TCN width 8, dilations 1,2

# Two stages: A has 3 blocks, B has 2. L_s(d) per stage, L_full = 1, block latencies (ms), fixed 10 ms.
LOSSES = [[1.30, 1.10, 1.00], [1.20, 1.00]]
LAT = [[1.0, 2.0, 3.0], [1.0, 4.0]]
# By hand, L(dA, dB) = 1 + (L_A(dA) - 1) + (L_B(dB) - 1) and T = 10 + prefix sums:
#   (1,1) 1.5 / 12   (1,2) 1.3 / 16   (2,1) 1.3 / 14   (2,2) 1.1 / 18   (3,1) 1.2 / 17   (3,2) 1.0 / 21
# lambda path: (3,2) from 0; (2,2) from (1.1-1.0)/(21-18) = 1/30; (2,1) from 0.2/4 = 0.05; (1,1) from 0.2/2 = 0.1.


def test_combined_loss_is_additive_by_hand():
    assert combined_loss(LOSSES, 1.0, (1, 1)) == pytest.approx(1.5)
    assert combined_loss(LOSSES, 1.0, (2, 2)) == pytest.approx(1.1)
    assert combined_loss(LOSSES, 1.0, (3, 2)) == pytest.approx(1.0)


@pytest.mark.parametrize(("lam", "depths"), [(0.0, (3, 2)), (0.02, (3, 2)), (0.04, (2, 2)), (0.07, (2, 1)),
                                             (0.2, (1, 1)), (10.0, (1, 1))])
def test_truncated_rule_on_hand_computed_losses(lam, depths):
    choice = choose_depths(LOSSES, 1.0, LAT, lam=lam, fixed_ms=10.0)
    assert choice.depths == depths
    assert choice.latency_ms == pytest.approx(10 + sum(sum(r[:d]) for r, d in zip(LAT, depths, strict=True)))


def test_lambda_path_by_hand_and_consistent_with_the_rule():
    path = lambda_path(LOSSES, 1.0, LAT, fixed_ms=10.0)
    assert [tuple(p["depths"]) for p in path] == [(3, 2), (2, 2), (2, 1), (1, 1)]
    assert [p["lambda_from"] for p in path] == pytest.approx([0.0, 1 / 30, 0.05, 0.1])
    assert [p["latency_ms"] for p in path] == pytest.approx([21.0, 18.0, 14.0, 12.0])
    # every lambda picks the path's segment it falls in, and latency never rises with lambda
    last = math.inf
    for lam in [0.0, 0.01, 0.03, 0.034, 0.045, 0.06, 0.099, 0.15, 1.0]:
        choice = choose_depths(LOSSES, 1.0, LAT, lam=lam, fixed_ms=10.0)
        seg = [p for p in path if p["lambda_from"] <= lam][-1]
        assert choice.depths == tuple(seg["depths"])
        assert choice.latency_ms <= last
        last = choice.latency_ms


# A small knapsack with a known answer that a greedy pick by loss-per-ms misses. Three stages of 2 blocks;
# the second block of each costs 5, 3, 3 ms and saves 1.0, 0.6, 0.5 of loss; first blocks cost 1 ms each.
KNAP_LOSSES = [[2.0, 1.0], [1.6, 1.0], [1.5, 1.0]]
KNAP_LAT = [[1.0, 5.0], [1.0, 3.0], [1.0, 3.0]]


@pytest.mark.parametrize(("budget", "depths", "loss"), [(9.0, (1, 2, 2), 2.0), (8.5, (2, 1, 1), 2.1),
                                                        (11.0, (2, 2, 1), 1.5), (3.0, (1, 1, 1), 3.1),
                                                        (100.0, (2, 2, 2), 1.0)])
def test_budget_mode_on_a_small_knapsack(budget, depths, loss):
    # by hand: budget 9 fits (1,2,2) [T 9, L 2.0] which beats (2,1,1) [T 8, L 2.1]; 8.5 leaves (2,1,1) best
    for fixed in (0.0, 10.0):
        choice = choose_depths(KNAP_LOSSES, 1.0, KNAP_LAT, budget_ms=budget + fixed, fixed_ms=fixed)
        assert choice.depths == depths
        assert choice.loss == pytest.approx(loss)
        assert choice.latency_ms <= budget + fixed
    # it is the exhaustive optimum
    fits = [d for d in itertools.product((1, 2), repeat=3)
            if sum(sum(r[:k]) for r, k in zip(KNAP_LAT, d, strict=True)) <= budget]
    assert min(combined_loss(KNAP_LOSSES, 1.0, d) for d in fits) == pytest.approx(loss)


def test_budget_that_nothing_fits_says_so():
    assert min_latency(KNAP_LAT, 10.0) == 13.0
    with pytest.raises(BudgetError, match=r"budget 12.5 ms.*13\.000 ms"):
        choose_depths(KNAP_LOSSES, 1.0, KNAP_LAT, budget_ms=12.5, fixed_ms=10.0)
    with pytest.raises(ValueError, match="exactly one"):
        choose_depths(KNAP_LOSSES, 1.0, KNAP_LAT, lam=0.1, budget_ms=20.0)


def test_flip_lambdas():
    # g < 0: the task wants the block; the paper rule drops it only above lambda = -g / s
    assert flip_lambdas([[-0.002, 0.001]], [[0.5, 0.25]]) == [[pytest.approx(0.004), pytest.approx(-0.004)]]


# --------------------------------------------------------------------------------------------- real tiny models


def _tiny_model():
    cfg = load_config(TINY_YAML, ["data.height=32", "data.width=48"])
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=3)
    supernet = DepthSupernet(model.encoder)
    model.encoder = supernet
    with torch.no_grad():  # alphas away from 1 so that truncation is not a pure rescaling
        for st in supernet.stages:
            st.alpha.copy_(torch.tensor([0.7, 1.3]))
    return cfg, model, supernet


def _batches(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [{"frames": torch.randn(2, 3, 3, 32, 48, generator=g),
             "masks": torch.randint(0, 3, (2, 3, 32, 48), generator=g)} for _ in range(n)]


def test_truncated_losses_equal_a_truncated_encoder_and_restore_the_supernet():
    cfg, model, supernet = _tiny_model()
    val = _batches(2, 1)
    alphas = [st.alpha.detach().clone() for st in supernet.stages]
    bn_before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}

    def loss_of(b):
        return segmentation_loss(model(b["frames"]), b["masks"], 255)

    full, losses = truncated_losses(supernet, loss_of, val, model=model)
    assert [len(r) for r in losses] == [2, 2, 2, 2] and all(r[-1] == full for r in losses)
    # L_s(1): the same as a supernet over an encoder that has only block 1 in stage s (alpha_1 kept)
    for s in range(4):
        depths = [2, 2, 2, 2]
        depths[s] = 1
        short = DepthSupernet(supernet.encoder.with_depths(depths))
        short.set_alphas([a.tolist()[:d] for a, d in zip(alphas, depths, strict=True)])
        other = VideoSegmenter(short, copy.deepcopy(model.decoder), 3, window=model.window, causal=model.causal)
        other.eval()
        with torch.no_grad():
            ref = sum(float(segmentation_loss(other(b["frames"]), b["masks"], 255)) for b in val) / len(val)
        assert losses[s][0] == pytest.approx(ref, rel=1e-5)
    assert losses != [[full, full]] * 4  # truncation does change the loss here
    for st, a in zip(supernet.stages, alphas, strict=True):
        assert torch.equal(st.alpha, a)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in bn_before.items())
    assert model.training  # mode restored


def test_recalibrate_batchnorm_averages_batch_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.Dropout(0.5))
    batches = [torch.randn(4, 2, 5, 5) * (k + 1) + k for k in range(3)]
    net.eval()
    n = recalibrate_batchnorm(net, batches, lambda b: net(b))
    assert n == 1
    with torch.no_grad():
        y = [net[0](b) for b in batches]
    mean = torch.stack([t.mean(dim=(0, 2, 3)) for t in y]).mean(0)
    var = torch.stack([t.var(dim=(0, 2, 3), unbiased=True) for t in y]).mean(0)
    assert torch.allclose(net[1].running_mean, mean, atol=1e-5)
    assert torch.allclose(net[1].running_var, var, atol=1e-4)
    assert not net.training and not net[1].training and net[1].momentum == 0.1


# ------------------------------------------------------------------------------------------------ the search

TINY = ["data.synthetic_videos=3", "data.synthetic_frames=6", "train.batch_size=2", "train.max_steps_per_epoch=2",
        "stnas.encoder_epochs=2", "stnas.decoder_epochs=2", "stnas.warmup_epochs=1", "stnas.arch_lr=0.05",
        "stnas.depth_val_batches=2", "stnas.bn_calib_batches=2"]


@pytest.fixture(scope="module")
def fixed_table(tmp_path_factory) -> Path:
    """Hand-made block latencies for swin_test at 64x96 (later stages dearer), so runs do not depend on timing."""
    enc = build_encoder("swin_test", img_size=(64, 96))
    table = LatencyTable(blocks={enc.block_signature(i, j): 0.5 + i + 0.25 * j for i, d in enumerate(enc.depths)
                                 for j in range(d)}, meta={"encoder": "swin_test", "img_size": [64, 96]})
    return table.save(tmp_path_factory.mktemp("lat") / "table.json")


def _cfg(table, *extra):
    return load_config(TINY_YAML, [*TINY, f"stnas.latency_table={table}", *extra])


@pytest.fixture(scope="module")
def truncated_run(tmp_path_factory, fixed_table):
    run = tmp_path_factory.mktemp("trunc")
    res = search_stnas(_cfg(fixed_table, "stnas.lam=0.01"), run, show_progress=False, skip_decoder=True,
                       plots=False, save_init=False)
    return run, res


def test_truncated_search_records_its_decision_and_it_is_checked(truncated_run, tmp_path):
    run, res = truncated_run
    rec = read_search_record(run / "arch.json")
    depth = rec.depth
    assert depth["rule"] == "truncated" and depth["lambda"] == 0.01 and depth["val_batches"] == 2
    assert rec.arch.depths == res.depths == tuple(depth["depths"])
    choice = choose_depths(depth["losses"], depth["full_loss"], depth["block_latencies"], lam=0.01)
    assert choice.depths == rec.arch.depths
    assert depth["path"][0]["lambda_from"] == 0.0
    # training ran on the task loss alone: lambda acts when deciding
    enc = [r for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "encoder_search"]
    assert all(r["lam_train"] == 0.0 and r["loss"] == pytest.approx(r["task_loss"]) for r in enc)
    # an arch.json whose depths the recorded losses do not give is refused
    wrong = tuple(1 if d == 2 else 2 for d in rec.arch.depths)
    with pytest.raises(ArchError, match="truncated rule"):
        write_search_arch(tmp_path / "bad.json", rec.arch.__class__(**{**rec.arch.__dict__, "depths": wrong}),
                          alphas=rec.alphas, betas=None, lam=0.01, latency_table_path=None,
                          latency_table_device=None, depth=depth)
    assert "Lambda path" in (run / "report.md").read_text()


def test_task_only_alpha_gradients_and_flip_lambdas(tmp_path, fixed_table):
    # paper rule, lambda in training: the logged alpha gradient must exclude the penalty's lambda * sign(alpha) * s
    runs = {}
    for lam in (0.0, 0.5):
        res = search_stnas(_cfg(fixed_table, "stnas.depth_rule=paper", f"stnas.lam={lam}"), tmp_path / str(lam),
                           show_progress=False, skip_decoder=True, plots=False, save_init=False)
        runs[lam] = (res, [r for r in read_jsonl(tmp_path / str(lam) / "metrics.jsonl") if r["kind"] == "alpha_grad"])
    (res, grads), (_, grads0) = runs[0.5], runs[0.0]
    assert len(grads) == 4  # one per arch step (2 epochs x 2 steps)
    # step 0: same weights, same batch, so the same task gradient whatever lambda, though the penalty's differs
    # (0.5 * s_i >= 0.25 here, 1000x the task gradient: equal up to float32 rounding of the summed gradient)
    keys = [k for k in grads[0] if k.startswith("s")]
    assert [grads[0][k] for k in keys] == pytest.approx([grads0[0][k] for k in keys], rel=1e-3, abs=2e-7)
    assert any(abs(grads[0][k]) > 0 for k in keys)
    # the record's mean and flip lambdas come from the logged gradients
    mean = [[sum(g[f"s{s}_b{i}"] for g in grads) / len(grads) for i in range(2)] for s in range(4)]
    depth = res.depth
    assert depth["task_grad_mean"] == [pytest.approx(row, rel=1e-6, abs=1e-12) for row in mean]
    lat = depth["block_latencies"]
    assert depth["flip_lambda"] == [[pytest.approx(-g / s) for g, s in zip(gr, sr, strict=True)]
                                    for gr, sr in zip(mean, lat, strict=True)]
    report = (tmp_path / "0.5" / "report.md").read_text()
    assert "flip lambda (paper)" in report and "depth rule: paper" in report


def test_budget_too_small_fails_before_training(tmp_path, fixed_table):
    res = CliRunner().invoke(app, ["search", "stnas", "--config", TINY_YAML, *sum((["--set", s] for s in TINY), []),
                                   "--latency-table", str(fixed_table), "--target-latency", "0.01",
                                   "--out", str(tmp_path), "--quiet"])
    assert res.exit_code != 0
    assert "no depth combination fits the latency budget 0.01 ms" in res.output
    assert not list((tmp_path / "checkpoints").glob("*.pt")) if (tmp_path / "checkpoints").exists() else True


def test_budget_search_fits_its_target(tmp_path, fixed_table):
    # the fixed table has blocks only: a budget search measures the stem, downsamples, outputs and decoder parts
    # it needs into the run's copy of the table
    first = search_stnas(_cfg(fixed_table, "stnas.target_latency_ms=1e6"), tmp_path / "probe", show_progress=False,
                         skip_decoder=True, plots=False, save_init=False)
    d0 = first.depth
    # everything fits: the most accurate combination, i.e. the lambda = 0 choice
    assert first.depths == choose_depths(d0["losses"], d0["full_loss"], d0["block_latencies"], lam=0.0).depths
    table = tmp_path / "probe" / "latency_table.json"
    full, lat = first.full_model_latency_ms, d0["block_latencies"]
    lowest = full - sum(sum(r[1:]) for r in lat)
    target = (full + lowest) / 2
    res = search_stnas(_cfg(table, f"stnas.target_latency_ms={target}"), tmp_path / "budget", show_progress=False,
                       skip_decoder=True, plots=False, save_init=False)
    assert res.depth["budget_ms"] == target
    assert res.model_latency_ms <= target
    # the most accurate combination that fits, by the recorded losses
    best = choose_depths(res.depth["losses"], res.depth["full_loss"], lat, budget_ms=target,
                         fixed_ms=res.depth["fixed_ms"])
    assert res.depths == best.depths
    assert res.model_latency_ms == pytest.approx(best.latency_ms)
