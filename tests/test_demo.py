"""`vidnas demo` end to end at test size: the whole ST-NAS pipeline, its table, report and run directory."""

from __future__ import annotations

import json
from pathlib import Path

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
    cfg = load_config("demo")
    assert cfg.data.format == "synthetic" and cfg.data.root is None and cfg.data.synthetic_corruption > 0
    assert cfg.model.encoder_depths is not None and max(cfg.model.encoder_depths) > 2  # something to remove
    assert len(cfg.model.decoder_dilations) == 4  # 16 searchable decoder slots, as the paper


def test_embedded_demo_settings_equal_the_preset():
    from vidnas.config import config_from_dict
    from vidnas.experiments.demo import EMBEDDED_DEMO

    assert config_from_dict(EMBEDDED_DEMO) == load_config(REPO / "configs" / "demo.yaml")


def test_demo_runs_the_whole_pipeline(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", *sum((["--set", s] for s in TEST_SIZE), []), "--out", str(out), "--bench-frames", "3", "--quiet"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("name"))
    assert lines[header + 2].startswith("baseline") and lines[header + 3].startswith("searched")
    for col in ("params", "fps", "mIoU", "VC8", "flicker", "search_s", "train_s"):
        assert col in lines[header]
    assert "search time:" in res.output and "of the searched model's total training time" in res.output
    for name in ("report.md", "arch.json", "alphas.png", "betas.png", "decoder.png", "pareto.png", "demo.json",
                 "config.yaml"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "baseline" in report and "searched" in report and "```" in report
    demo = json.loads((out / "demo.json").read_text())
    for key in ("baseline", "searched"):
        m = demo[key]["metrics"]
        assert {"fps", "miou", "vc8", "flicker", "params"} <= m.keys()
        assert 0.0 <= m["miou"] <= 1.0 and m["fps"] > 0
    assert demo["searched"]["search_seconds"] > 0 and 0 < demo["search_share"] < 1
    # the copied arch.json is the searched model's architecture and builds
    arch = Arch.load(out / "arch.json")
    assert arch.to_dict() == demo["searched"]["arch"] | {"extra": arch.extra}
    cfg = load_config("demo", TEST_SIZE)
    assert build_model(cfg, arch, num_classes=cfg.data.synthetic_classes).encoder.depths == arch.depths
