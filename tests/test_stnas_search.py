"""The ST-NAS search loop, `vidnas search stnas` and the lambda sweep, on tiny real models and the synthetic data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vidnas.checkpoint import load_checkpoint
from vidnas.cli.main import app
from vidnas.config import load_config
from vidnas.engine.logger import read_jsonl
from vidnas.experiments.candidates import lam_dirname
from vidnas.models import Arch, build_encoder, build_model
from vidnas.search import plots
from vidnas.search.latency import LatencyTable
from vidnas.search.stnas import ClippedAdam, load_search_summary, read_search_record, search_stnas, shrink_depth

REPO = Path(__file__).resolve().parents[1]
TINY_YAML = str(REPO / "configs" / "tiny.yaml")
# configs/tiny.yaml: swin_test (depths 2,2,2,2) at 64x96, window 3, SP-TCN width 8 with dilations 1,2 (8 slots).
# These tests pin the paper's shrink rule (Eq. 2 with lambda in training); the truncated rule, the default of user
# presets, has its own tests (test_stnas_depth.py).
TINY = ["data.synthetic_videos=3", "data.synthetic_frames=6", "train.batch_size=2", "train.max_steps_per_epoch=2",
        "stnas.encoder_epochs=2", "stnas.decoder_epochs=2", "stnas.warmup_epochs=1", "stnas.arch_lr=0.05",
        "stnas.lam=0.05", "stnas.depth_rule=paper"]
STEPS = 2  # steps per search epoch under TINY


def tiny_cfg(*extra: str):
    return load_config(TINY_YAML, [*TINY, *extra])


def _sets(items: list[str]) -> list[str]:
    return sum((["--set", s] for s in items), [])


@pytest.fixture(scope="module")
def fixed_table(tmp_path_factory) -> Path:
    """A hand-made latency table for swin_test at 64x96 (blocks of later stages dearer), so runs are comparable."""
    enc = build_encoder("swin_test", img_size=(64, 96))
    table = LatencyTable(blocks={enc.block_signature(i, j): 0.5 + i + 0.25 * j for i, d in enumerate(enc.depths)
                                 for j in range(d)},
                         meta={"encoder": "swin_test", "img_size": [64, 96]})
    return table.save(tmp_path_factory.mktemp("lat") / "table.json")


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One full tiny search that measures its own latency table."""
    run = tmp_path_factory.mktemp("stnas")
    res = search_stnas(tiny_cfg(), run, show_progress=False)
    return run, res


# ---------------------------------------------------------------------------------------------------- outputs


def test_arch_json_matches_supernet_and_builds(searched):
    run, res = searched
    rec = read_search_record(run / "arch.json")
    assert rec.method == "stnas" and rec.lam == pytest.approx(0.05) and rec.threshold == 1.0
    # the alphas and betas in the file are the supernets' final parameters (from their last checkpoints)
    enc_state = load_checkpoint(run / "checkpoints" / "encoder_search.pt")["model"]
    alphas = [enc_state[f"encoder.stages.{s}.alpha"].tolist() for s in range(4)]
    assert rec.alphas == alphas
    dec_state = load_checkpoint(run / "checkpoints" / "decoder_search.pt")["model"]
    betas = [v.tolist() for k, v in dec_state.items() if k.endswith(".beta")]
    assert len(betas) == 8 and rec.betas == betas
    # ... and imply the derived architecture: shrink rule per stage, argmax per slot
    assert rec.arch.depths == tuple(shrink_depth(row, 1.0) for row in alphas)
    assert rec.arch.decoder_ops == tuple(rec.beta_columns[row.index(max(row))] for row in betas)
    assert rec.latency_table_path == str(run / "latency_table.json") and rec.latency_table_device
    # the file alone builds the final model
    model = build_model(tiny_cfg(), Arch.load(run / "arch.json"), num_classes=4)
    assert model.encoder.depths == rec.arch.depths
    assert [n for n, _ in model.named_modules() if n.endswith("conv1.0")]  # searched slots, not 3x3x3 convs
    out = model(torch.randn(1, 3, 3, 64, 96))
    assert out.shape == (1, 3, 4, 64, 96)
    assert res.depths == rec.arch.depths and res.decoder_ops == rec.arch.decoder_ops


def test_derived_init_loads_strictly_into_built_model(searched):
    run, res = searched
    state = load_checkpoint(run / "derived_init.pt")
    model = build_model(tiny_cfg(), Arch.load(run / "arch.json"), num_classes=state["num_classes"])
    model.load_state_dict(state["model"], strict=True)
    # the encoder weights are the decoder search's: its checkpoint holds the same tensors
    dec_state = load_checkpoint(run / "checkpoints" / "decoder_search.pt")["model"]
    key = "encoder.stem.proj.weight"
    assert torch.equal(state["model"][key], dec_state[key])


def test_every_step_logs_loss_penalty_latency_and_arch_weights(searched):
    run, res = searched
    recs = read_jsonl(run / "metrics.jsonl")
    enc = [r for r in recs if r["kind"] == "encoder_search"]
    alpha = [r for r in recs if r["kind"] == "alpha"]
    assert [r["step"] for r in enc] == list(range(2 * STEPS)) == [r["step"] for r in alpha]
    table = LatencyTable.load(run / "latency_table.json")
    lat = table.latencies_for(build_encoder("swin_test", img_size=(64, 96)))
    for prev, rec in zip(alpha, enc[1:], strict=False):
        assert {"task_loss", "penalty", "expected_latency_ms", "loss"} <= rec.keys()
        # Eq. 2: the penalty of step k is sum |alpha| * s over the alphas left by step k - 1
        expected = sum(abs(prev[f"s{s}_b{i}"]) * lat[s][i] for s in range(4) for i in range(2))
        assert rec["penalty"] == pytest.approx(expected, rel=1e-5)
        assert rec["loss"] == pytest.approx(rec["task_loss"] + 0.05 * rec["penalty"], rel=1e-5)
    assert enc[-1]["expected_latency_ms"] == pytest.approx(res.derived_latency_ms)
    dec = [r for r in recs if r["kind"] == "decoder_search"]
    beta = [r for r in recs if r["kind"] == "beta"]
    assert len(dec) == len(beta) == 2 * STEPS
    assert [r["arch_trainable"] for r in dec] == [0.0] * STEPS + [1.0] * STEPS  # warm-up epoch: betas frozen
    first, last = beta[STEPS - 1], beta[-1]
    assert all(v == pytest.approx(1 / 7) for k, v in first.items() if k[:2].isdigit())
    assert any(v != pytest.approx(1 / 7) for k, v in last.items() if k[:2].isdigit())
    assert list((run / "tb").iterdir())


def test_plots_and_report_written(searched):
    run, res = searched
    for name in ("alphas.png", "betas.png", "decoder.png", "report.md", "search_summary.json"):
        assert (run / name).stat().st_size > 0, name
    assert (run / "alphas.png").read_bytes()[:4] == b"\x89PNG"
    report = (run / "report.md").read_text()
    assert "->" in report and res.decoder_ops[0] in report
    again = load_search_summary(run)
    assert again.arch == res.arch and again.alphas == res.alphas


# ---------------------------------------------------------------------------------------------------- resume


class _Crash(RuntimeError):
    pass


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, fixed_table):
    """The search the interrupted ones must reproduce (the same for every crash point): its run dir and result."""
    run = tmp_path_factory.mktemp("full")
    cfg = tiny_cfg(f"stnas.latency_table={fixed_table}")
    return run, search_stnas(cfg, run, show_progress=False, plots=False, save_init=False)


@pytest.mark.parametrize("crash_after", [1, 3], ids=["mid-encoder", "mid-decoder"])
def test_resume_continues_exactly(tmp_path, monkeypatch, fixed_table, uninterrupted, crash_after):
    cfg = tiny_cfg(f"stnas.latency_table={fixed_table}")
    full_dir, full = uninterrupted

    import vidnas.search.stnas.runner as stnas

    # kill the run one step into the epoch after checkpoint number `crash_after`: that step is logged already and
    # must be dropped and redone by the resumed run
    real_save, real_step, saves, after = stnas.save_checkpoint, stnas.search_step, [], []

    def counting_save(path, state):
        saves.append(path)
        return real_save(path, state)

    def crashing_step(*args, **kwargs):
        if len(saves) >= crash_after:
            after.append(1)
            if len(after) == 2:
                raise _Crash("killed")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(stnas, "save_checkpoint", counting_save)
    monkeypatch.setattr(stnas, "search_step", crashing_step)
    with pytest.raises(_Crash):
        search_stnas(cfg, tmp_path / "cut", show_progress=False, plots=False, save_init=False)
    monkeypatch.undo()
    resumed = search_stnas(cfg, tmp_path / "cut", resume=True, show_progress=False, plots=False, save_init=False)
    assert resumed.alphas == full.alphas  # bit-identical floats
    assert resumed.betas == full.betas
    assert resumed.arch == full.arch

    def losses(run):
        return [(r["kind"], r["step"], r.get("loss")) for r in read_jsonl(run / "metrics.jsonl")
                if r["kind"] in ("encoder_search", "decoder_search", "alpha", "beta", "encoder_epoch", "decoder_epoch")]

    assert losses(tmp_path / "cut") == losses(full_dir)  # no step lost or logged twice


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, fixed_table):
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        search_stnas(tiny_cfg(f"stnas.latency_table={fixed_table}"), tmp_path, resume=True, show_progress=False)


def test_alternating_decoder_only_search(tmp_path):
    cfg = tiny_cfg("stnas.mode=alternating", "stnas.decoder_epochs=2")
    res = search_stnas(cfg, tmp_path, skip_encoder=True, show_progress=False, plots=False, save_init=False)
    rec = read_search_record(tmp_path / "arch.json")
    assert rec.alphas is None and rec.arch.depths is None and len(rec.arch.decoder_ops) == 8
    dec = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["kind"] == "decoder_search"]
    assert all("arch_loss" in r for r in dec if r["arch_trainable"]) and res.encoder_seconds == 0.0


# ---------------------------------------------------------------------------------------------------- pieces


def test_clipped_adam_bounds_the_arch_gradient():
    p = torch.nn.Parameter(torch.zeros(4))
    opt = ClippedAdam([p], max_norm=1.0, lr=0.1)
    p.grad = torch.tensor([30.0, 40.0, 0.0, 0.0])  # norm 50
    opt.step()
    assert torch.allclose(p.grad, torch.tensor([0.6, 0.8, 0.0, 0.0]))


def test_pareto_front_by_hand():
    fps_miou = [(10.0, 0.5), (20.0, 0.4), (15.0, 0.3), (20.0, 0.45), (5.0, 0.6)]
    # (cost, quality): FPS, higher better, enters as its negative; the front comes ordered by cost
    assert plots.pareto_front([(-fps, miou) for fps, miou in fps_miou]) == [3, 0, 4]
    latency_miou = [(1000.0 / fps, miou) for fps, miou in fps_miou]
    assert plots.pareto_front(latency_miou) == [3, 0, 4]


def test_pareto_front_ties():
    # equal points are all on the front; same cost with lower quality, or same quality at a higher cost, are not
    pts = [(2.0, 0.5), (1.0, 0.4), (2.0, 0.5), (2.0, 0.45), (3.0, 0.5), (1.0, 0.4), (0.5, 0.1)]
    assert plots.pareto_front(pts) == [6, 1, 5, 0, 2]
    assert plots.pareto_front([]) == []
    assert plots.pareto_front([(1.0, 0.0)]) == [0]
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):  # against the definition, on a coarse grid (many ties)
        pts = [(float(c), float(q)) for c, q in torch.randint(0, 4, (12, 2), generator=gen).tolist()]
        undominated = {i for i, (c, q) in enumerate(pts)
                       if not any(c2 <= c and q2 >= q and (c2, q2) != (c, q) for c2, q2 in pts)}
        front = plots.pareto_front(pts)
        assert set(front) == undominated and front == sorted(front, key=lambda i: (pts[i][0], i))


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_search_then_train_from_arch_file_alone(tmp_path, fixed_table):
    runner = CliRunner()
    out = tmp_path / "search"
    res = runner.invoke(app, ["search", "stnas", "--config", TINY_YAML, *_sets(TINY), "--latency-table",
                              str(fixed_table), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "encoder depths: 2,2,2,2 ->" in res.output and "decoder ops" in res.output and "arch.json" in res.output
    arch = Arch.load(out / "arch.json")
    # the model section of the config disagrees with the file on purpose: the file wins
    train_dir = tmp_path / "train"
    res = runner.invoke(app, ["train", "--config", TINY_YAML, *_sets(TINY), "--set", "train.epochs=1",
                              "--set", "model.decoder_channels=4", "--set", "model.encoder_depths=2,2,2,2",
                              "--arch", str(out / "arch.json"), "--init", str(out / "derived_init.pt"),
                              "--out", str(train_dir), "--quiet"])
    assert res.exit_code == 0, res.output
    from vidnas.models import load_model

    loaded = load_model(train_dir / "checkpoints" / "last.pt")
    model, state = loaded.model, loaded.checkpoint
    assert Arch.from_dict(state["arch"]) == arch
    assert model.encoder.depths == arch.depths
    assert model.decoder.channels == arch.channels == 8


def test_lambda_sweep_writes_table_and_pareto_and_resumes(tmp_path, fixed_table):
    runner = CliRunner()
    args = ["search", "stnas", "--config", TINY_YAML, *_sets(TINY), "--set", "train.epochs=1",
            "--set", "stnas.encoder_epochs=1", "--set", "stnas.decoder_epochs=1", "--set", "stnas.warmup_epochs=0",
            "--latency-table", str(fixed_table), "--lambdas", "0,0.5", "--bench-frames", "3",
            "--out", str(tmp_path), "--quiet"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    assert sweep["lambdas"] == [0.0, 0.5]
    rows = [sweep["baseline"], *sweep["candidates"]]
    assert [r["name"] for r in rows] == ["baseline", "lam=0", "lam=0.5"]
    for r in rows:
        assert r["metrics"]["fps"] > 0 and r["metrics"]["params"] > 0 and 0.0 <= r["best_miou"] <= 1.0
    assert rows[2]["arch"]["depths"] is not None and rows[0]["search_seconds"] == 0.0
    # each candidate searched at its own lambda (the sweep sets stnas.lam of its search's config)
    assert [r["arch"]["extra"]["search"]["lambda"] for r in rows[1:]] == [0.0, 0.5]
    saved = [load_config(str(tmp_path / lam_dirname(v) / "search" / "config.yaml")) for v in (0.0, 0.5)]
    assert [c.stnas.lam for c in saved] == [0.0, 0.5]
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert "lam=0.5" in (tmp_path / "sweep.md").read_text() and "lam=0.5" in res.output
    # a resumed sweep skips every finished lambda: nothing is searched or trained again
    ckpts = sorted(tmp_path.glob("lam_*/**/*.pt"))
    stamps = [p.stat().st_mtime_ns for p in ckpts]
    res = runner.invoke(app, [*args, "--resume"])
    assert res.exit_code == 0, res.output
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps


def test_cli_rejects_bad_lambdas(tmp_path):
    res = CliRunner().invoke(app, ["search", "stnas", "--config", TINY_YAML, "--lambdas", "0,abc",
                                   "--out", str(tmp_path)])
    assert res.exit_code != 0 and "abc" in res.output


@pytest.mark.slow
def test_ddp_two_processes_derive_the_same_architecture(tmp_path, fixed_table):
    """Two real torchrun processes (gloo): every rank must derive the same depths, ops, alphas and betas."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "vidnas.cli.main", "search", "stnas", "--config", TINY_YAML, *_sets(TINY),
           "--latency-table", str(fixed_table), "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = [read_search_record(out / "ranks" / f"rank{r}_arch.json") for r in (0, 1)]
    main = read_search_record(out / "arch.json")
    for rec in recs:
        assert rec.arch.depths == main.arch.depths and rec.arch.decoder_ops == main.arch.decoder_ops
        assert rec.alphas == main.alphas and rec.betas == main.betas
    # the betas trained after the warm-up (DDP had to cope with frozen parameters in epoch 0)
    assert any(abs(b) > 0 for row in main.betas for b in row)
