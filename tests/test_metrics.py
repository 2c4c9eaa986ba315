"""Metrics: the IoU family against torchmetrics and hand-computed cases; temporal consistency on tiny sequences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from vidnas.metrics import ConfusionMatrix, TemporalConsistency, flicker, vc

IGNORE = 255


def _random_labels(seed: int, k: int, shape: tuple[int, ...], p_ignore: float = 0.15) -> tuple[torch.Tensor, ...]:
    """Random predictions/targets with ignored pixels; every class appears in the ground truth."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, k, shape, generator=g)
    # predictions agree with the target ~60% of the time, so IoUs are neither ~0 nor ~1
    noise = torch.randint(0, k, shape, generator=g)
    pred = torch.where(torch.rand(shape, generator=g) < 0.6, target, noise)
    target = torch.where(torch.rand(shape, generator=g) < p_ignore, torch.full_like(target, IGNORE), target)
    target.view(-1)[:k] = torch.arange(k)  # guarantee every class in the ground truth
    return pred, target


def _tm(metric_cls: type, k: int, average: str | None, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    m = metric_cls(num_classes=k, average=average, ignore_index=IGNORE)
    return m(pred.reshape(-1), target.reshape(-1)).double()


# ------------------------------------------------------------------------------------------------ vs torchmetrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_family_matches_torchmetrics_when_every_class_in_gt(seed: int) -> None:
    k = 5
    pred, target = _random_labels(seed, k, (2, 7, 9))
    cm = ConfusionMatrix(k, ignore_index=IGNORE)
    cm.update(pred, target)
    r = cm.compute()

    np.testing.assert_allclose(r["per_class_iou"], _tm(MulticlassJaccardIndex, k, None, pred, target), atol=1e-6)
    assert r["miou"] == pytest.approx(float(_tm(MulticlassJaccardIndex, k, "macro", pred, target)), abs=1e-6)
    np.testing.assert_allclose(r["per_class_acc"], _tm(MulticlassAccuracy, k, None, pred, target), atol=1e-6)
    assert r["macc"] == pytest.approx(float(_tm(MulticlassAccuracy, k, "macro", pred, target)), abs=1e-6)
    assert r["pixel_acc"] == pytest.approx(float(_tm(MulticlassAccuracy, k, "micro", pred, target)), abs=1e-6)
    assert r["num_pixels"] == int((target != IGNORE).sum())


def test_absent_and_predicted_only_classes_vs_torchmetrics() -> None:
    """torchmetrics gives IoU 0 (not NaN) to a class absent from both, and its macro accuracy counts a class that is
    only predicted with recall 0; our mIoU still equals its macro Jaccard (both skip empty unions), our mAcc does not.
    """
    k = 5
    pred, target = _random_labels(3, k, (3, 8, 8))
    pred = torch.where(pred == 4, torch.zeros_like(pred), pred)  # class 4: in neither prediction ...
    target = torch.where(target == 4, torch.full_like(target, IGNORE), target)  # ... nor ground truth
    target = torch.where(target == 3, torch.ones_like(target), target)  # class 3: predicted only
    assert bool((pred == 3).any())
    cm = ConfusionMatrix(k, ignore_index=IGNORE)
    cm.update(pred, target)
    r = cm.compute()

    tm_iou = _tm(MulticlassJaccardIndex, k, None, pred, target)
    assert math.isnan(r["per_class_iou"][4]) and float(tm_iou[4]) == 0.0
    np.testing.assert_allclose(r["per_class_iou"][:4], tm_iou[:4], atol=1e-6)
    assert r["per_class_iou"][3] == 0.0
    assert r["miou"] == pytest.approx(float(_tm(MulticlassJaccardIndex, k, "macro", pred, target)), abs=1e-6)

    tm_acc = _tm(MulticlassAccuracy, k, None, pred, target)
    np.testing.assert_allclose(r["per_class_acc"][:3], tm_acc[:3], atol=1e-6)
    assert math.isnan(r["per_class_acc"][3]) and math.isnan(r["per_class_acc"][4])
    assert r["macc"] == pytest.approx(float(tm_acc[:3].mean()), abs=1e-6)
    # torchmetrics averages 4 classes (recall 0 for the predicted-only class 3): smaller than ours
    assert float(_tm(MulticlassAccuracy, k, "macro", pred, target)) == pytest.approx(float(tm_acc[:4].mean()))
    assert r["macc"] > float(tm_acc[:4].mean())


# ------------------------------------------------------------------------------------------------ hand-computed


def test_hand_computed_absent_and_predicted_only() -> None:
    # K = 4. The ignored pixel predicts class 3, which must not count: class 3 is absent from both.
    target = torch.tensor([0, 0, 0, 1, 1, IGNORE])
    pred = torch.tensor([0, 0, 2, 1, 0, 3])
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    # rows gt, cols pred: gt 0 -> pred 0,0,2; gt 1 -> pred 1,0
    expected = torch.tensor([[2, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert torch.equal(cm.mat, expected)
    r = cm.compute()
    # tp = [2,1,0,0], gt = [3,2,0,0], pred = [3,1,1,0], union = gt + pred - tp = [4,2,1,0]
    assert r["per_class_iou"][:3] == pytest.approx([0.5, 0.5, 0.0])
    assert math.isnan(r["per_class_iou"][3])
    assert r["miou"] == pytest.approx(1 / 3)  # (0.5 + 0.5 + 0) / 3: class 2 (predicted only) counts, class 3 not
    assert r["fwiou"] == pytest.approx(0.5)  # 3/5 * 0.5 + 2/5 * 0.5
    assert r["pixel_acc"] == pytest.approx(3 / 5)
    assert r["per_class_acc"][:2] == pytest.approx([2 / 3, 1 / 2])
    assert math.isnan(r["per_class_acc"][2]) and math.isnan(r["per_class_acc"][3])
    assert r["macc"] == pytest.approx(7 / 12)  # (2/3 + 1/2) / 2: class 2 is not in the ground truth
    assert r["reward"] == pytest.approx((1 / 3 * 1 / 2 * 7 / 12) ** (1 / 3))  # (7/72) ** (1/3)
    assert r["num_pixels"] == 5


def test_fwiou_weights_by_ground_truth_frequency() -> None:
    # gt 0,0,0,1 / pred 0,0,1,1: IoU_0 = 2 / (3 + 2 - 2) = 2/3, IoU_1 = 1 / (1 + 2 - 1) = 1/2
    cm = ConfusionMatrix(2, ignore_index=None)
    cm.update(torch.tensor([[0, 0], [1, 1]]), torch.tensor([[0, 0], [0, 1]]))
    r = cm.compute()
    assert r["fwiou"] == pytest.approx(3 / 4 * 2 / 3 + 1 / 4 * 1 / 2)  # 5/8, not the mIoU 7/12
    assert r["miou"] == pytest.approx(7 / 12)
    assert r["macc"] == pytest.approx((2 / 3 + 1) / 2)
    assert r["reward"] == pytest.approx((7 / 12 * 5 / 8 * 5 / 6) ** (1 / 3))


def test_empty_matrix_is_nan() -> None:
    cm = ConfusionMatrix(3)
    cm.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), IGNORE))
    r = cm.compute()
    assert r["num_pixels"] == 0
    assert all(math.isnan(r[key]) for key in ("miou", "fwiou", "pixel_acc", "macc", "reward"))


# --------------------------------------------------------------------------------------------- streaming, state


def test_streaming_chunks_merge_and_state_dict_equal_one_shot() -> None:
    k = 6
    pred, target = _random_labels(7, k, (4, 6, 10))
    whole = ConfusionMatrix(k)
    whole.update(pred, target)

    chunked = ConfusionMatrix(k)
    for p, t in zip(pred.split(1), target.split(1), strict=True):
        chunked.update(p, t)
    assert torch.equal(chunked.mat, whole.mat)

    a, b = ConfusionMatrix(k), ConfusionMatrix(k)
    a.update(pred[:3], target[:3])
    b.update(pred[3:].numpy(), target[3:].numpy())  # numpy inputs are accepted too
    assert torch.equal(a.merge(b).mat, whole.mat)

    restored = ConfusionMatrix(k)
    restored.load_state_dict(whole.state_dict())
    assert torch.equal(restored.mat, whole.mat) and restored.compute() == whole.compute()
    whole.reset()
    assert int(whole.mat.sum()) == 0 and int(restored.mat.sum()) > 0  # state_dict was a copy

    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(k + 1).load_state_dict(restored.state_dict())
    with pytest.raises(ValueError, match="merge"):
        ConfusionMatrix(k + 1).merge(restored)


def test_all_reduce_without_process_group_is_a_noop() -> None:
    assert not torch.distributed.is_initialized()
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 2]), torch.tensor([0, 2, 2]))
    before = cm.mat.clone()
    cm.all_reduce()
    assert torch.equal(cm.mat, before)


def _fill(rank: int) -> tuple[ConfusionMatrix, TemporalConsistency]:
    """Rank ``rank``'s share of the counts: a confusion matrix and the temporal counts of a 4-frame video."""
    pred, target = _random_labels(10 + rank, 4, (4, 6, 6))
    cm, tc = ConfusionMatrix(4), TemporalConsistency(n=(2, 3))
    cm.update(pred, target)
    for p, t in zip(pred, target, strict=True):
        tc.update(p, t)
    return cm, tc


def _all_reduce_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cm, tc = _fill(rank)
        cm.all_reduce()
        tc.all_reduce()
        torch.save({"mat": cm.mat, "counts": tc.counts}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_the_counts_of_every_rank(tmp_path) -> None:
    import torch.multiprocessing as mp

    mp.start_processes(_all_reduce_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")  # forked from this worker: torch and vidnas are already imported
    (cm, tc), (cm1, tc1) = _fill(0), _fill(1)
    cm.merge(cm1)
    tc.merge(tc1)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(got["mat"], cm.mat) and torch.equal(got["counts"], tc.counts)


def test_update_errors() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="pred values"):
        cm.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="pred values"):
        cm.update(torch.tensor([-1, 0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="target values"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="target values"):  # 255 is a class value once nothing is ignored
        ConfusionMatrix(3, ignore_index=None).update(torch.tensor([0, 1]), torch.tensor([0, IGNORE]))
    with pytest.raises(TypeError, match="argmax"):
        cm.update(torch.rand(2, 2), torch.zeros(2, 2, dtype=torch.long))
    assert int(cm.mat.sum()) == 0  # a rejected batch leaves no partial counts


# ------------------------------------------------------------------------------------------ temporal consistency

# Three 2x2 frames; pixels a=(0,0), b=(0,1), c=(1,0), d=(1,1). X = ignored (255).
#   gt:   a 0 0 0 | b 0 0 1 | c 1 1 1 | d X X 1
#   pred: a 0 0 0 | b 0 1 1 | c 1 1 0 | d 0 1 1
_X = IGNORE
GT = torch.tensor([[[0, 0], [1, _X]], [[0, 0], [1, _X]], [[0, 1], [1, 1]]])
PRED = torch.tensor([[[0, 0], [1, 0]], [[0, 1], [1, 1]], [[0, 1], [0, 1]]])


def test_vc_hand_computed() -> None:
    # VC_2, window (0,1): eligible a, b, c (d ignored); consistent a, c (b: 0 -> 1)     -> 2 / 3
    #       window (1,2): eligible a, c (b's gt changes, d ignored at t=1); consistent a  -> 1 / 2
    #       pixel-weighted: (2 + 1) / (3 + 2) = 3/5 (the mean of window ratios would be 7/12)
    assert vc(PRED, GT, 2) == pytest.approx(3 / 5)
    # VC_3, one window: eligible a, c; consistent a (c: 1, 1, 0) -> 1/2
    assert vc(PRED, GT, 3) == pytest.approx(1 / 2)
    assert math.isnan(vc(PRED, GT, 4))  # no window of 4 frames in a 3-frame video


def test_flicker_hand_computed() -> None:
    # valid pairs (gt not ignored in both frames): (0,1): a, b, c; (1,2): a, b, c (d ignored at t=1) -> 6
    # gt same and pred changed: (0,1): b (0 -> 1); (1,2): c (1 -> 0); b's gt changes at (1,2), so it is no flicker
    assert flicker(PRED, GT) == pytest.approx(2 / 6)
    # relation from the docstring: static-gt share S = 5/6, flicker = S * (1 - VC_2) = 5/6 * 2/5
    assert flicker(PRED, GT) == pytest.approx(5 / 6 * (1 - vc(PRED, GT, 2)))
    assert flicker(GT.clamp_max(1), GT) == 0.0  # predictions that follow the ground truth never flicker


def test_temporal_errors() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        vc(PRED, GT[:2], 2)
    with pytest.raises(ValueError, match="n must be"):
        vc(PRED, GT, 1)
    with pytest.raises(ValueError, match="n must be"):
        TemporalConsistency(n=(1, 2))
    tc = TemporalConsistency()
    tc.update(PRED[0], GT[0])
    with pytest.raises(ValueError, match="reset_video"):
        tc.update(torch.zeros(3, 3, dtype=torch.long), torch.zeros(3, 3, dtype=torch.long))


def _sticky_sequence(seed: int, t: int, k: int = 3, shape: tuple[int, int] = (4, 5)) -> tuple[torch.Tensor, ...]:
    """Labels that mostly persist from frame to frame (so long constant runs exist), with ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    frames = [torch.randint(0, k, shape, generator=g)]
    for _ in range(t - 1):
        flip = torch.rand(shape, generator=g) < 0.15
        frames.append(torch.where(flip, torch.randint(0, k, shape, generator=g), frames[-1]))
    gt = torch.stack(frames)  # (T, H, W)
    pred = torch.where(torch.rand(gt.shape, generator=g) < 0.1, torch.randint(0, k, gt.shape, generator=g), gt)
    gt = torch.where(torch.rand(gt.shape, generator=g) < 0.1, torch.full_like(gt, IGNORE), gt)
    return pred, gt


def test_streaming_accumulator_equals_functional_form() -> None:
    pred, gt = _sticky_sequence(0, 12)
    tc = TemporalConsistency(n=(2, 3, 8))
    for p, t in zip(pred, gt, strict=True):
        tc.update(p, t)
    r = tc.compute()
    assert set(r) == {"vc2", "vc3", "vc8", "flicker"}
    for n in (2, 3, 8):
        assert r[f"vc{n}"] == pytest.approx(vc(pred, gt, n), abs=1e-12)
    assert r["flicker"] == pytest.approx(flicker(pred, gt), abs=1e-12)
    assert 0.0 < r["vc8"] < r["vc2"] < 1.0  # the sequence is neither trivial nor degenerate

    tc_hand = TemporalConsistency(n=(2, 3))
    for p, t in zip(PRED, GT, strict=True):
        tc_hand.update(p, t)
    assert tc_hand.compute() == pytest.approx({"vc2": 3 / 5, "vc3": 1 / 2, "flicker": 1 / 3})


def test_streaming_pools_videos_without_straddling() -> None:
    (pa, ga), (pb, gb) = _sticky_sequence(1, 9), _sticky_sequence(2, 7)
    pooled = TemporalConsistency(n=(2, 4))
    for pred, gt in ((pa, ga), (pb, gb)):
        pooled.reset_video()
        for p, t in zip(pred, gt, strict=True):
            pooled.update(p, t)

    parts = []
    for pred, gt in ((pa, ga), (pb, gb)):
        part = TemporalConsistency(n=(2, 4))
        for p, t in zip(pred, gt, strict=True):
            part.update(p, t)
        parts.append(part)
    assert torch.equal(parts[0].merge(parts[1]).counts, pooled.counts)

    # without reset_video the windows that straddle the cut are counted: a different result
    straddling = TemporalConsistency(n=(2, 4))
    for p, t in zip(torch.cat([pa, pb]), torch.cat([ga, gb]), strict=True):
        straddling.update(p, t)
    assert not torch.equal(straddling.counts, pooled.counts)
    assert straddling.compute()["vc4"] == pytest.approx(vc(torch.cat([pa, pb]), torch.cat([ga, gb]), 4))
