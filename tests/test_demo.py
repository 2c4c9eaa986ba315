"""`vidnas demo` end to end at test size: the whole ST-NAS pipeline, its table, report and run directory."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vidnas.cli.main import app
from vidnas.config import load_config
from vidnas.models import Arch, build_model

REPO = Path(__file__).resolve().parents[1]
# shrink configs/demo.yaml to seconds: the same stages, a few steps each
TEST_SIZE = ["data.height=64", "data.width=96", "data.window=3", "data.synthetic_videos=3", "data.synthetic_frames=6",
             "model.decoder_channels=8", "model.decoder_dilations=1,2", "train.epochs=1", "train.batch_size=2",
             "train.max_steps_per_epoch=2", "stnas.encoder_epochs=1", "stnas.decoder_epochs=2",
             "stnas.warmup_epochs=1"]


def test_demo_config_is_the_documented_default():
    """The demo searches the space that contains arch2 (issue 26), with arch2 as a control: arch2's width, and the
    encoder at its own depths (the per-frame arch2 builds those), a window the temporal candidates can read."""
    from vidnas.experiments.demo import DEFAULT_CONFIG

    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.data.format == "synthetic" and cfg.data.root is None and cfg.data.synthetic_corruption > 0
    assert cfg.model.decoder == "arch2_space" and cfg.model.fuse_channels == 64 and cfg.model.encoder_depths is None
    assert cfg.data.window >= 3 and cfg.stnas.decoder_latency


def test_embedded_demo_settings_equal_the_preset():
    from vidnas.config import config_from_dict
    from vidnas.experiments.demo import EMBEDDED_DEMO

    assert config_from_dict(EMBEDDED_DEMO) == load_config(REPO / "configs" / "demo_arch2_space.yaml")


def test_demo_uses_the_shipped_latency_table():
    from vidnas.experiments.demo import DEMO_LATENCY_TABLE, DEMO_SPACE_LATENCY_TABLE, EMBEDDED_DEMO, demo_latency_table
    from vidnas.search.latency import LatencyTable

    assert demo_latency_table(load_config("demo_arch2_space")) == str(DEMO_SPACE_LATENCY_TABLE)
    from vidnas.config import config_from_dict

    assert demo_latency_table(config_from_dict(EMBEDDED_DEMO)) == str(DEMO_SPACE_LATENCY_TABLE)
    assert LatencyTable.load(DEMO_SPACE_LATENCY_TABLE).meta["img_size"] == [64, 96]
    # the SP-TCN demo of before (configs/demo.yaml) keeps its own table
    assert demo_latency_table(load_config("demo")) == str(DEMO_LATENCY_TABLE)
    assert LatencyTable.load(DEMO_LATENCY_TABLE).meta["depths"] == [2, 2, 4, 2]
    # another size is not covered: the search measures its own table
    assert demo_latency_table(load_config("demo_arch2_space", ["data.height=32", "data.width=48"])) is None
    assert demo_latency_table(load_config("demo", TEST_SIZE)) is None
    assert demo_latency_table(load_config("demo", ["stnas.latency_table=x.json"])) == "x.json"


@pytest.mark.slow
def test_demo_repeats_its_arch_json(tmp_path):
    """The same command (seeded, with a fixed latency table, as the shipped one for the default demo) gives the
    same arch.json, byte for byte (the SP-TCN demo's encoder search: the whole pipeline below runs the space's)."""
    from vidnas.models import build_encoder
    from vidnas.search.latency import LatencyTable

    enc = build_encoder("swin_test", img_size=(64, 96), depths=(2, 2, 4, 2))
    table = LatencyTable(blocks={enc.block_signature(i, j): 0.3 + 0.1 * i + 0.05 * j for i, d in
                                 enumerate(enc.depths) for j in range(d)}, meta={"encoder": "swin_test"})
    path = table.save(tmp_path / "table.json")
    sets = ["--config", "demo", *sum((["--set", s] for s in [*TEST_SIZE, f"stnas.latency_table={path}",
                                                              "stnas.lam=0.001"]), [])]
    files, scores = [], []
    for k, jobs in enumerate(("1", "2")):  # the second run trains the baseline and the searched model side by side
        out = tmp_path / f"demo{k}"
        res = CliRunner().invoke(app, ["demo", *sets, "--out", str(out), "--bench-frames", "2", "--random", "0",
                                       "--references", "none", "--quiet", "--jobs", jobs])
        assert res.exit_code == 0, res.output
        files.append((out / "arch.json").read_bytes())
        demo = json.loads((out / "demo.json").read_text())
        scores.append([(demo[n]["best_miou"], demo[n]["metrics"]["miou"]) for n in ("baseline", "searched")])
    assert files[0] == files[1]
    assert scores[0] == scores[1]  # in worker processes, the same weights: the same scores
    arch = Arch.load(tmp_path / "demo0" / "arch.json")
    assert arch.decoder_ops is None and arch.extra["search"]["depth"]["rule"] == "truncated"  # SP-TCN: depths only


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path):
    """The default demo over the arch2 space: depths and decoder slots searched, and its controls (per-frame arch2,
    the cheapest point, random architectures latency-matched to the searched one) in the table and the verdict."""
    out = tmp_path / "demo"
    args = ["demo", *sum((["--set", s] for s in TEST_SIZE), []), "--out", str(out), "--bench-frames", "3", "--quiet",
            "--random", "2", "--jobs", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("name"))
    assert lines[header + 2].startswith("baseline")
    # the controls: the hand-made per-frame arch2 (same recipe, window 1) and the space's cheapest point
    assert lines[header + 3].startswith("per-frame arch2") and lines[header + 4].startswith("cheapest")
    assert lines[header + 5].startswith("searched")
    # the random architectures of the same space, in the same table and the same interleaved benchmark
    assert lines[header + 6].startswith("random0") and lines[header + 7].startswith("random1")
    assert "random architectures: the searched model dominates" in res.output
    assert re.search(r"^- searched dominates \d of 4 controls on window-protocol FPS and mIoU", res.output, re.M)
    assert "- searched vs 2 latency-matched random architectures:" in res.output
    assert re.search(r"^- searched vs per-frame arch2: [0-9.]+x its deployed FPS \([0-9.]+x window protocol\), "
                     r"[-+][0-9.]+ mIoU points$", res.output, re.M)
    assert re.search(r"^aim \(issue 26\) (MET|NOT MET): ", res.output, re.M)
    for col in ("params", "fps", "fps_inc", "mIoU", "VC8", "flicker", "search_s", "train_s"):
        assert col in lines[header]
    assert "search time:" in res.output and "of the searched model's total training time" in res.output
    for name in ("report.md", "arch.json", "alphas.png", "betas.png", "pareto.png", "demo.json", "config.yaml"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "baseline" in report and "searched" in report and "```" in report
    demo = json.loads((out / "demo.json").read_text())
    for m in [demo["baseline"]["metrics"], demo["searched"]["metrics"], *(r["metrics"] for r in demo["random"])]:
        assert {"fps", "miou", "vc8", "flicker", "params"} <= m.keys()
        assert 0.0 <= m["miou"] <= 1.0 and m["fps"] > 0
    assert len(demo["random"]) == 2 and demo["dominance"]["random"] == 2
    assert all(r["kind"] == "random" and r["train_seconds"] > 0 for r in demo["random"])
    for r in demo["random"]:  # matched by the whole model's table latency, within 10%
        extra = r["arch"]["extra"]
        assert extra["matched_to"] == demo["searched"]["name"]
        assert abs(extra["table_latency_ms"] - extra["target_ms"]) <= 0.1 * extra["target_ms"] + 1e-9
    (cheap,) = demo["controls"]
    assert cheap["name"] == "cheapest" and cheap["arch"]["depths"] == [1, 1, 1, 1] and cheap["metrics"]["fps"] > 0
    v = demo["verdict"]
    assert v["met"] == (v["close_to_arch2"] and v["faster_than_arch2"] and v["above_cheapest"])
    assert v["close_to_arch2"] == (v["miou_points_vs_arch2"] >= -2)
    assert demo["control_summary"]["matched"]["n"] == 2
    assert "aim (issue 26)" in (out / "report.md").read_text()
    refs = {r["arch"]["decoder"]: r for r in demo["references"]}
    assert sorted(refs) == ["arch2"] and all(r["kind"] == "reference" for r in refs.values())
    for r in refs.values():  # trained like the others, evaluated and benchmarked in the same run
        assert r["arch"]["window"] == 1 and r["arch"]["encoder"] == "swin_test" and r["metrics"]["fps"] > 0
        assert 0.0 <= r["metrics"]["miou"] <= 1.0
        assert yaml_value(out / f"ref_{r['arch']['decoder']}" / "train" / "config.yaml", "train", "epochs") == \
            yaml_value(Path(demo["searched"]["search_dir"]).parent / "train" / "config.yaml", "train", "epochs")
    # the config's model is arch2's point of the space: the reference's one training is the baseline row too
    assert demo["baseline"]["checkpoint"] == refs["arch2"]["checkpoint"] and not (out / "baseline").exists()
    assert demo["searched"]["search_seconds"] > 0 and 0 < demo["search_share"] < 1
    # the copied arch.json is the searched model's architecture and builds
    arch = Arch.load(out / "arch.json")
    assert arch.to_dict() == demo["searched"]["arch"] | {"extra": arch.extra}
    cfg = load_config("demo_arch2_space", TEST_SIZE)
    assert build_model(cfg, arch, num_classes=cfg.data.synthetic_classes).encoder.depths == arch.depths


def yaml_value(path, section, key):
    import yaml

    return yaml.safe_load(path.read_text())[section][key]
