"""Random architectures of the ST-NAS space: sampling covers the space, every sample builds, latency matching, and
the sweep trains and benchmarks them beside the searched models."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vidnas.cli.main import app
from vidnas.config import load_config
from vidnas.experiments.candidates import Candidate, dominance_counts, dominated
from vidnas.models import SEARCH_CANDIDATES, Arch, arch_from_config, build_encoder, build_model
from vidnas.search.latency import LatencyTable
from vidnas.search.stnas import depth_latency, latency_matched_depths, sample_random_archs

REPO = Path(__file__).resolve().parents[1]
TINY_YAML = str(REPO / "configs" / "tiny.yaml")


def test_uniform_sampling_covers_the_space_and_every_sample_builds():
    cfg = load_config("demo", ["data.height=32", "data.width=48"])  # swin_test 2,2,4,2, 16 decoder slots
    base = arch_from_config(cfg)
    full = (2, 2, 4, 2)
    archs = sample_random_archs(base, full, 300, candidates=SEARCH_CANDIDATES, seed=3)
    assert len({(a.depths, a.decoder_ops) for a in archs}) == 300  # distinct
    for s, n in enumerate(full):  # every depth of every stage, about uniformly
        counts = Counter(a.depths[s] for a in archs)
        assert set(counts) == set(range(1, n + 1))
        assert min(counts.values()) > 0.6 * 300 / n
    for k in range(16):  # every op in every slot
        counts = Counter(a.decoder_ops[k] for a in archs)
        assert set(counts) == set(SEARCH_CANDIDATES)
        assert min(counts.values()) > 0.4 * 300 / 7
    # the same seed gives the same architectures
    assert sample_random_archs(base, full, 5, candidates=SEARCH_CANDIDATES, seed=3) == archs[:5]
    # every sample builds through build_model and runs
    x = torch.randn(1, 4, 3, 32, 48)
    for arch in archs[:25]:
        model = build_model(cfg, arch, num_classes=4).eval()
        assert model.encoder.depths == arch.depths
        with torch.no_grad():
            assert model(x).shape == (1, 4, 4, 32, 48)
        Arch.from_dict(arch.to_dict())  # a valid architecture file


def test_latency_matched_sampling_stays_within_tolerance():
    lat = [[0.4, 0.4], [0.3, 0.3], [0.25, 0.25, 0.25, 0.25], [0.25, 0.25]]
    full, ref = (2, 2, 4, 2), (1, 1, 2, 1)
    target = depth_latency(lat, ref)
    pool = latency_matched_depths(full, lat, ref, 0.1)
    assert ref in pool and len(pool) > 1
    assert all(abs(depth_latency(lat, d) - target) <= 0.1 * target + 1e-12 for d in pool)
    base = arch_from_config(load_config("demo"))
    archs = sample_random_archs(base, full, 10, candidates=None, seed=0, mode="latency", block_latencies=lat,
                                reference_depths=ref, tolerance=0.1)
    assert all(a.depths in pool and a.decoder_ops is None for a in archs)
    with pytest.raises(ValueError, match="mode"):
        sample_random_archs(base, full, 1, candidates=None, mode="grid")


def _cand(name, fps, miou, kind="random"):
    return Candidate(name=name, lam=None, arch={}, checkpoint=Path("x"), best_miou=miou, train_seconds=0.0,
                     metrics={"fps": fps}, kind=kind)


def test_dominance_counts_by_hand():
    s = _cand("lam=0", 10.0, 0.5, "searched")
    rs = [_cand("r0", 9.0, 0.4), _cand("r1", 10.0, 0.5), _cand("r2", 11.0, 0.45), _cand("r3", 12.0, 0.6),
          _cand("r4", 10.0, 0.49)]
    assert [dominated(s, r) for r in rs] == [True, False, False, False, True]
    assert dominance_counts([s], rs) == {"lam=0": {"dominates": 2, "dominated_by": 1, "random": 5}}


def test_sweep_with_random_architectures(tmp_path):
    enc = build_encoder("swin_test", img_size=(64, 96))
    table = LatencyTable(blocks={enc.block_signature(i, j): 0.5 + i + 0.25 * j for i, d in enumerate(enc.depths)
                                 for j in range(d)}, meta={"encoder": "swin_test", "img_size": [64, 96]})
    table_path = table.save(tmp_path / "table.json")
    # issue 26's protocol: the selection video synth001 (held out of every training) decides the depth rule and each
    # training's best epoch; the val split is read once per training, at its end, and is what the table reports
    sets = ["data.synthetic_videos=4", "data.synthetic_frames=6", "train.batch_size=2", "train.max_steps_per_epoch=2",
            "train.epochs=1", "stnas.encoder_epochs=1", "stnas.decoder_epochs=1", "stnas.warmup_epochs=0",
            "stnas.depth_val_batches=1", "stnas.bn_calib_batches=1", "data.selection_videos=[synth001]"]
    out = tmp_path / "sweep"
    res = CliRunner().invoke(app, ["search", "stnas", "--config", TINY_YAML, *sum((["--set", s] for s in sets), []),
                                   "--latency-table", str(table_path), "--lambda", "0.01", "--random", "2",
                                   "--random-mode", "latency", "--bench-frames", "3", "--out", str(out),
                                   "--references", "arch2", "--quiet", "--jobs", "2"])
    assert res.exit_code == 0, res.output  # --jobs 2: the search, baseline and reference side by side, then the
    sweep = json.loads((out / "sweep.json").read_text())  # random architectures matched to the finished search
    assert [c["name"] for c in sweep["candidates"]] == ["lam=0.01"]
    assert [r["name"] for r in sweep["random"]] == ["random0", "random1"]
    assert all(r["kind"] == "random" and r["metrics"]["fps"] > 0 for r in sweep["random"])
    # latency-matched to the searched model by the table's block latencies
    searched = sweep["candidates"][0]["arch"]
    lat = searched["extra"]["search"]["depth"]["block_latencies"]
    for r in sweep["random"]:
        assert (abs(depth_latency(lat, r["arch"]["depths"]) - depth_latency(lat, searched["depths"]))
                <= 0.1 * depth_latency(lat, searched["depths"]) + 1e-9)
        assert (out / r["name"].replace("random", "random_") / "arch.json").is_file()
    md = (out / "sweep.md").read_text()
    assert "lam=0.01 dominates" in md and "of 2 random architectures" in md and "random1" in md
    assert "dominates" in res.output and sweep["dominance"]["lam=0.01"]["random"] == 2
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    # the per-frame reference, trained with the same recipe at window 1, in the table and the benchmark
    (ref,) = sweep["references"]
    assert ref["name"] == "per-frame arch2" and ref["arch"]["window"] == 1 and ref["metrics"]["fps"] > 0
    assert "| per-frame arch2 |" in md and "lam=0.01 vs per-frame arch2:" in md and "vs per-frame arch2" in res.output
    rows = [sweep["baseline"], *sweep["candidates"], *sweep["random"], ref]
    for r in rows:  # every row: best.pt chosen on the selection video, its val mIoU read once at the end
        summary = json.loads((Path(r["checkpoint"]).parents[1] / "train_summary.json").read_text())
        assert summary["decided_on"]["videos"] == ["synth001"]
        assert r["reported_miou"] == summary["reported"]["best"]["val_miou"]
    assert sweep["decided_on"]["split"] == "train:synth001" and sweep["decided_on"]["reported"] == "val"
    assert sweep["candidates"][0]["arch"]["extra"]["search"]["depth"]["decided_on"] == {"split": "train",
                                                                                       "videos": ["synth001"]}
    assert f"| {sweep['candidates'][0]['reported_miou']:.4f} |" in md and "read once after training" in md
    bad = CliRunner().invoke(app, ["search", "stnas", "--config", TINY_YAML, "--lambdas", "0.1,0.2", "--references",
                                   "unet", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "unknown per-frame model 'unet'" in bad.output
    assert not (tmp_path / "bad").exists()
