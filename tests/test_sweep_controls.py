"""The sweep over the ``arch2_space`` space with its controls: the per-frame arch2 reference, the space's cheapest
point and random architectures latency-matched to the searched model by the whole model's table latency, all trained
alike, timed under both protocols in one interleaved run, and the verdict written from code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vidnas.cli.main import app
from vidnas.config import load_config
from vidnas.experiments.candidates import Candidate, cheapest_arch, check_space_reference, control_summary
from vidnas.models import arch_from_config, build_encoder
from vidnas.models.decoders import CHEAPEST_OPS
from vidnas.search.stnas import sample_matched_archs

REPO = Path(__file__).resolve().parents[1]
TINY_YAML = str(REPO / "configs" / "tiny.yaml")
SETS = ["data.height=32", "data.width=48", "data.synthetic_videos=2", "data.synthetic_frames=4",
        "train.batch_size=2", "train.max_steps_per_epoch=1", "train.epochs=1", "stnas.encoder_epochs=1",
        "stnas.decoder_epochs=1", "stnas.warmup_epochs=0", "stnas.depth_val_batches=1", "stnas.bn_calib_batches=1"]


def test_matched_sampling_stays_in_the_band_and_names_the_target_when_it_cannot() -> None:
    base = arch_from_config(load_config(TINY_YAML, ["model.decoder=arch2_space"]))
    full = (2, 2, 2, 2)

    def price(a) -> float:  # a stand-in cost of the right shape: blocks plus non-skip slots
        return sum(a.depths) + sum(op != "skip" for op in a.decoder_ops)

    archs = sample_matched_archs(base, full, 5, candidates=(), price=price, target_ms=10.0, seed=1)
    assert len({(a.depths, a.decoder_ops) for a in archs}) == 5
    assert all(9.0 <= price(a) <= 11.0 for a in archs)
    assert all(a.window == (3 if any(op.startswith("temporal") for op in a.decoder_ops) else 1) for a in archs)
    assert sample_matched_archs(base, full, 3, candidates=(), price=price, target_ms=10.0, seed=1) == archs[:3]
    with pytest.raises(ValueError, match=r"within 10% of the table latency 100.000 ms after 50 uniform draws"):
        sample_matched_archs(base, full, 1, candidates=(), price=price, target_ms=100.0, draws=50)


def test_the_cheapest_point_is_one_block_per_stage_and_the_cheapest_ops() -> None:
    cfg = load_config(TINY_YAML, ["model.decoder=arch2_space"])
    arch = cheapest_arch(cfg)
    assert arch.name == "cheapest" and arch.decoder_ops == CHEAPEST_OPS and arch.window == 1
    assert arch.depths == (1,) * len(build_encoder("swin_test", img_size=(64, 96)).depths)
    with pytest.raises(ValueError, match="arch2_space decoder, not 'sptcn'"):
        cheapest_arch(load_config(TINY_YAML))


def _cand(name: str, fps: float, miou: float, inc: float | None = None, **extra) -> Candidate:
    return Candidate(name=name, lam=None, arch={"extra": extra}, checkpoint=Path("x"), best_miou=miou,
                     train_seconds=0.0, metrics={"fps": fps, "inc_fps": inc})


def test_control_summary_by_hand() -> None:
    s = _cand("lam=0", 10.0, 0.50, inc=20.0)
    refs = [_cand("per-frame arch2", 8.0, 0.60), _cand("cheapest", 30.0, 0.40)]
    randoms = [_cand("random0", 9.0, 0.40, matched_to="lam=0"), _cand("random1", 11.0, 0.48, matched_to="lam=0"),
               _cand("random2", 10.0, 0.70, matched_to="other")]
    c = control_summary([s], randoms, refs)["lam=0"]
    assert c["controls"] == 4 and c["matched"]["names"] == ["random0", "random1"]
    # window FPS: dominates random0 only; deployed (inc 20): random0, random1, arch2 stays better in mIoU
    assert (c["dominates"], c["dominated_by"]) == (1, 0)
    assert (c["dominates_deployed"], c["dominated_by_deployed"]) == (2, 0)
    assert c["matched"]["mean"] == pytest.approx(0.44) and c["matched"]["std"] == pytest.approx(0.04)
    assert c["matched"]["delta"] == pytest.approx(0.06) and c["matched"]["max"] == 0.48
    assert c["vs"]["per-frame arch2"]["deployed_fps_ratio"] == pytest.approx(2.5)
    assert c["vs"]["per-frame arch2"]["fps_ratio"] == pytest.approx(1.25)
    assert c["vs"]["cheapest"]["miou_delta"] == pytest.approx(0.10)


def test_sweep_over_the_arch2_space_with_its_controls(tmp_path) -> None:
    out = tmp_path / "sweep"
    res = CliRunner().invoke(app, ["search", "stnas", "--config", TINY_YAML, *sum((["--set", s] for s in SETS), []),
                                   "--model", "arch2_space", "--decoder-latency", "--lambda", "0.01",
                                   "--random", "2", "--random-mode", "matched", "--references", "arch2",
                                   "--bench-frames", "2", "--out", str(out), "--threads", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    sweep = json.loads((out / "sweep.json").read_text())
    (searched,) = sweep["candidates"]
    assert searched["arch"]["decoder"] == "arch2_space"
    (ref,) = sweep["references"]
    assert ref["name"] == "per-frame arch2" and ref["arch"]["depths"] in (None, [2, 2, 2, 2])  # the full encoder
    # the config's model is arch2's point of the space: the reference's one training is the baseline row too
    assert sweep["baseline"]["checkpoint"] == ref["checkpoint"] and not (out / "baseline").exists()
    (cheap,) = sweep["controls"]
    assert cheap["name"] == "cheapest" and cheap["kind"] == "control"
    assert cheap["arch"]["decoder_ops"] == list(CHEAPEST_OPS) and cheap["arch"]["depths"] == [1, 1, 1, 1]
    # a per-frame point trains on its target frames alone (window 1), not on the search's 3-frame clips
    assert load_config(out / "cheapest" / "train" / "config.yaml").data.window == 1
    # two random architectures whose whole-model table latency is within 10% of the searched model's
    assert [r["name"] for r in sweep["random"]] == ["random0", "random1"]
    for r in sweep["random"]:
        extra = r["arch"]["extra"]
        assert extra["matched_to"] == searched["name"]
        assert abs(extra["table_latency_ms"] - extra["target_ms"]) <= 0.1 * extra["target_ms"] + 1e-9
    # every model timed under both protocols in the one run; per-frame ones are the same model under both
    for c in [sweep["baseline"], ref, cheap, searched, *sweep["random"]]:
        assert c["metrics"]["fps"] > 0 and "inc_fps" in c["metrics"]
    summary = sweep["control_summary"][searched["name"]]
    assert summary["controls"] == 4 and summary["matched"]["n"] == 2
    assert set(summary["vs"]) == {"per-frame arch2", "cheapest"}
    md = (out / "sweep.md").read_text()
    for row in ("| per-frame arch2 |", "| cheapest |", "| random0 |", "| random1 |"):
        assert row in md
    assert f"{searched['name']} vs 2 latency-matched random architectures:" in md
    assert f"{searched['name']} vs cheapest:" in md and "of 4 controls" in res.output


def test_the_arch2_reference_must_be_the_space_s_arch2_point() -> None:
    """The arch2 family builds its encoder at the encoder's own depths: over the space, a config with other depths
    (or another width) would compare the search with a different model, so it is refused in one line."""
    ok = load_config(TINY_YAML, ["model.decoder=arch2_space"])
    check_space_reference(ok, ("arch2",))
    deeper = load_config(TINY_YAML, ["model.decoder=arch2_space", "model.encoder_depths=[2,2,4,2]"])
    with pytest.raises(ValueError, match=r"model.encoder_depths=\[2, 2, 4, 2\]: the per-frame arch2 reference builds "
                                         r"swin_test at its own depths \[2, 2, 2, 2\]"):
        check_space_reference(deeper, ("arch2",))
    check_space_reference(deeper, ())  # no arch2 reference: nothing to compare
