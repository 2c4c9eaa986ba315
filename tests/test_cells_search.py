"""The cell search end to end on synthetic data at 32x48: cache, workers, failures, log, checkpoint, resume, CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from fixtures_data import write_mp4
from vidnas.config import Config, load_config
from vidnas.models import load_model
from vidnas.models.cells import CellGenotype
from vidnas.search.cells import (
    ExecutorError,
    SearchOptions,
    make_executor,
    read_log,
    run_cell_search,
    split_meta,
    train_static,
)
from vidnas.search.cells.cache import CacheInfo, build_caches
from vidnas.search.cells.evaluate import CandidateJob
from vidnas.search.cells.options import search_data_config
from vidnas.search.cells.records import LOG_NAME
from vidnas.search.cells.search import CHECKPOINT_NAME

TINY = [
    "data.height=32", "data.width=48", "data.synthetic_videos=3", "data.synthetic_frames=8",
    "model.encoder=mobilenetv2_test", "train.batch_size=4",
    "cells.num_layers=2", "cells.cell_epochs=2", "cells.cell_batch_size=8",
    "cells.ops=conv1x1,sep3x3,skip,deform3x3", "cells.aggregations=sum,concat,conv3d",
    "cells.latency_frames=2", "cells.latency_warmup=0",  # every candidate is still timed, on 2 frames (not 10 + 2)
]  # fmt: skip


def tiny_cfg(*extra: str) -> Config:
    return load_config(None, [*TINY, *extra])


@pytest.fixture(scope="module")
def static_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny arch2 static network trained for two steps (the search needs a checkpoint, not a good one)."""
    return train_static(tiny_cfg(), tmp_path_factory.mktemp("static"), epochs=1, max_steps_per_epoch=2)


def test_split_meta_is_seeded_and_disjoint() -> None:
    tr, va = split_meta(30, 0.1, seed=3)
    assert len(va) == 3 and len(tr) == 27 and not set(tr) & set(va) and sorted(tr + va) == list(range(30))
    assert split_meta(30, 0.1, seed=3) == (tr, va) and split_meta(30, 0.1, seed=4) != (tr, va)
    assert len(split_meta(5, 0.1)[1]) == 1  # at least one meta-val window
    with pytest.raises(ValueError):
        split_meta(1)


def test_static_checkpoint_round_trip(static_ckpt: Path) -> None:
    loaded = load_model(static_ckpt, kinds=("arch2",))
    model, cfg, state = loaded.model, loaded.cfg, loaded.checkpoint
    assert cfg.model.decoder == "arch2" and cfg.model.encoder == "mobilenetv2_test" and state["num_classes"] == 4
    assert not model.training
    with pytest.raises(ValueError, match="not found"):
        load_model(static_ckpt.parent / "missing.pt", kinds=("arch2",))


def test_disk_cache_equals_memory_cache(static_ckpt: Path, tmp_path: Path) -> None:
    from vidnas.data import ClipDataset, open_source

    cfg = tiny_cfg()
    static = load_model(static_ckpt, kinds=("arch2",)).model
    data_cfg = search_data_config(cfg)
    ds = ClipDataset(open_source(data_cfg), "train", data_cfg, train=False)
    info = CacheInfo(4, 255, 3, (80, 64, 8, 24, 80), (32, 48))
    mem = build_caches(static, ds, info, val_fraction=0.1, seed=0, kind="memory")
    disk = build_caches(static, ds, info, val_fraction=0.1, seed=0, kind="disk", directory=tmp_path, key="k",
                        shard_size=5)
    # 16 windows, frame-disjoint blocks: 2 meta-val, 6 dropped as gaps, 8 meta-train in shards of 5
    assert (len(mem[0]), len(mem[1]), len(mem[0].split.dropped)) == (8, 2, 6) and len(disk[0].shards) == 2
    for m, d in zip(mem, disk, strict=True):
        assert len(m) == len(d)
        bm, bd = list(m.batches(4)), list(d.batches(4))
        for key in ("dec0", "layer4", "layer2", "layer3", "masks"):
            assert torch.equal(torch.cat([b[key] for b in bm]), torch.cat([b[key] for b in bd]))
    assert mem[0].tensors["masks"].shape == (8, 2, 32, 48)  # frames 1..T-1 are supervised
    again = build_caches(static, ds, info, val_fraction=0.1, seed=0, kind="disk", directory=tmp_path, key="k")
    assert again[0].shards == disk[0].shards  # same key: reused, not rebuilt


def test_search_with_worker_processes_records_failures_and_goes_on(static_ckpt: Path, tmp_path: Path) -> None:
    """Real spawned workers; candidates whose cell uses `concat` raise inside the worker (injected on purpose)."""
    cfg = tiny_cfg("cells.candidates=4", "cells.workers=2", "cells.top_k=2")
    opts = SearchOptions(batch_size=2, inject_failure="concat", show_progress=False)
    res = run_cell_search(cfg, tmp_path, static_ckpt, options=opts)
    recs = read_log(tmp_path / LOG_NAME)
    assert sorted(recs) == [0, 1, 2, 3] and res.evaluated == 4
    uses_concat = {c for c, r in recs.items() if any(layer["aggregation"] == "concat" for layer in r["cell"])}
    failed = {c for c, r in recs.items() if r["failed"]}
    assert failed == uses_concat and 0 < len(failed) < 4  # some failed, the search went on
    for c in failed:
        assert recs[c]["reward"] is None and "InjectedFailure" in recs[c]["error"]
    for c in set(recs) - failed:
        r = recs[c]
        assert 0.0 <= r["reward"] <= 1.0 and r["error"] is None and r["epochs_run"] in (1, 2)
        assert set(r["metrics"]) >= {"miou", "fwiou", "macc"} and r["seconds"] > 0
        assert not r["worker"].endswith(f":{os.getpid()}")  # ran in another process
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert state["candidates_done"] == 4 and state["batches_done"] == 2
    ppo_log = [json.loads(line) for line in (tmp_path / "ppo.jsonl").read_text().splitlines()]
    assert [set(p["updated_on"]) for p in ppo_log] == [{0, 1} - failed, {2, 3} - failed]  # failures excluded
    for name in ("rewards.png", "sampling.png", "top0.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 0
    assert [r["cid"] for r in res.top] == sorted(set(recs) - failed, key=lambda c: -recs[c]["reward"])[:2]
    summary = json.loads((tmp_path / "search_summary.json").read_text())
    assert summary["failed"] == len(failed) and summary["candidates"] == 4


def test_resume_continues_without_rerunning_finished_candidates(static_ckpt: Path, tmp_path: Path) -> None:
    opts = SearchOptions(batch_size=2, show_progress=False, plots=False)
    run = tmp_path / "run"
    first = run_cell_search(tiny_cfg("cells.candidates=2", "cells.workers=0"), run, static_ckpt, options=opts)
    assert first.evaluated == 2
    with pytest.raises(FileExistsError, match="--resume"):
        run_cell_search(tiny_cfg("cells.candidates=2", "cells.workers=0"), run, static_ckpt, options=opts)
    shutil.copy(run / CHECKPOINT_NAME, tmp_path / "after_batch0.pt")

    cfg4 = tiny_cfg("cells.candidates=4", "cells.workers=0")
    second = run_cell_search(cfg4, run, static_ckpt, resume=True, options=opts)  # extends the search
    assert second.evaluated == 2
    full_log = read_log(run / LOG_NAME)
    assert sorted(full_log) == [0, 1, 2, 3]
    final_state = torch.load(run / CHECKPOINT_NAME, weights_only=False)

    # simulate an interruption inside batch 1: candidate 2 finished and was logged, candidate 3 and the update not
    shutil.copy(tmp_path / "after_batch0.pt", run / CHECKPOINT_NAME)
    lines = (run / LOG_NAME).read_text().splitlines()
    (run / LOG_NAME).write_text("\n".join(line for line in lines if json.loads(line)["cid"] != 3) + "\n")
    third = run_cell_search(cfg4, run, static_ckpt, resume=True, options=opts)
    assert third.evaluated == 1  # only candidate 3 ran again
    log = read_log(run / LOG_NAME)
    assert log[2] == full_log[2]  # reused as logged
    assert log[3]["tokens"] == full_log[3]["tokens"]  # the replayed sample is the one of the uninterrupted run
    assert log[3]["reward"] == pytest.approx(full_log[3]["reward"])  # candidates are deterministic
    state = torch.load(run / CHECKPOINT_NAME, weights_only=False)
    for k, v in final_state["controller"].items():
        assert torch.allclose(state["controller"][k], v), k  # same controller as without the interruption
    assert state["candidates_done"] == 4


def test_cli_search_and_top_k(static_ckpt: Path, tmp_path: Path) -> None:
    from vidnas.cli.search_cells import cells_cmd

    app = typer.Typer()
    app.command()(cells_cmd)
    out = tmp_path / "cli"
    args = ["--static", str(static_ckpt), "--out", str(out), "-n", "2", "--workers", "0", "--top-k", "1",
            "--final-cell-epochs", "1", "--final-epochs", "1", "--final-batch-size", "4", "--max-steps", "2", "-q"]
    for item in TINY:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "top0: candidate" in result.output
    geno = CellGenotype.load(out / "top" / "cell0.json")
    data = json.loads((out / "top" / "cell0.json").read_text())
    assert data["schema_version"] == 1 and data["ops"] == ["conv1x1", "sep3x3", "skip", "deform3x3"]
    assert data["aggregations"] == ["sum", "concat", "conv3d"] and len(data["tokens"]) == 2
    loaded = load_model(out / "top" / "cell0" / "model.pt")
    model, cfg, state = loaded.model, loaded.cfg, loaded.checkpoint
    assert model.genotype.to_tokens() == geno.to_tokens() and "miou" in state["val"]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 3, 32, 48)).shape == (1, 3, 4, 32, 48)
    from vidnas.data import open_source
    from vidnas.engine.evaluate import evaluate_stream

    streamed = evaluate_stream(model, open_source(cfg.data), "val", cfg.data)  # the deployment protocol
    assert streamed["frames"] == 8 and 0.0 <= streamed["miou"] <= 1.0
    # `vidnas eval` takes the cell model's checkpoint like any other
    from vidnas.cli.main import app as vidnas_app

    res = CliRunner().invoke(vidnas_app, ["eval", str(out / "top" / "cell0" / "model.pt"), "--out",
                                          str(tmp_path / "cell_eval"), "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "cell_eval" / "eval.json").read_text())["stream"]["frames"] == 8
    # --key-interval: the static network every 2 frames changes the streamed predictions; refused for other models
    res = CliRunner().invoke(vidnas_app, ["eval", str(out / "top" / "cell0" / "model.pt"), "--key-interval", "2",
                                          "--out", str(tmp_path / "cell_eval_k2"), "-q"])
    assert res.exit_code == 0, res.output
    k2 = json.loads((tmp_path / "cell_eval_k2" / "eval.json").read_text())
    assert k2["key_interval"] == 2 and k2["stream"]["frames"] == 8
    res = CliRunner().invoke(vidnas_app, ["eval", str(static_ckpt), "--key-interval", "2", "--out",
                                          str(tmp_path / "static_eval"), "-q"])
    assert res.exit_code == 2 and "dynamic-cell models only" in res.output
    # `vidnas bench` times the static network and the cell model side by side (steady state: encoder + cell)
    bench_json = tmp_path / "bench.json"
    res = CliRunner().invoke(vidnas_app, ["bench", "--checkpoint", f"static={static_ckpt}", "--checkpoint",
                                          str(out / "top" / "cell0" / "model.pt"), "--height", "64", "--width", "96",
                                          "--frames", "4", "--warmup", "1", "--threads", "1", "--ceiling", "64",
                                          "--json", str(bench_json), "-q"])  # a 64x64 roofline matmul, not 2048x2048
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(bench_json.read_text())}
    assert set(rows) == {"static", "cell0"}, rows
    static_state = torch.load(static_ckpt, weights_only=False)
    assert rows["static"]["params"] == sum(v.numel() for k, v in static_state["model"].items()
                                           if "running" not in k and "num_batches" not in k)
    assert rows["cell0"]["params"] == sum(p.numel() for p in model.parameters())
    for r in rows.values():
        assert r["latency_ms"] > 0 and r["extra"]["decoder_ms"] > 0 and r["extra"]["height"] == 64
        assert r["gflops"] > r["extra"]["encoder_gflops"] > 0  # encoder + decoder (cell) both counted
    # `vidnas predict` streams a video through it; `vidnas export` says clearly that it cannot export it yet
    import numpy as np

    rng = np.random.default_rng(0)
    video = write_mp4(tmp_path / "clip.mp4", [rng.integers(0, 255, (32, 48, 3), dtype=np.uint8) for _ in range(6)],
                      fps=15)
    res = CliRunner().invoke(vidnas_app, ["predict", str(video), "--checkpoint",
                                          str(out / "top" / "cell0" / "model.pt"), "--out", str(tmp_path / "pred"),
                                          "-q"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "pred" / "masks").glob("*.png"))) == 6
    res = CliRunner().invoke(vidnas_app, ["predict", str(video), "--checkpoint", str(static_ckpt), "--key-interval",
                                          "3", "--out", str(tmp_path / "pred_static"), "-q"])
    assert res.exit_code == 2 and "dynamic-cell models only" in res.output
    assert json.loads((tmp_path / "pred" / "summary.json").read_text())["frames"] == 6
    # `vidnas export` writes the key and cell-step graphs and checks them against PyTorch (issue 13: it refused)
    res = CliRunner().invoke(vidnas_app, ["export", str(out / "top" / "cell0" / "model.pt"), "--out",
                                          str(tmp_path / "onnx"), "--parity-frames", "12"])
    assert res.exit_code == 0, res.output
    assert "parity over 12 streamed frames" in res.output and "OK" in res.output
    assert (tmp_path / "onnx" / "key.onnx").exists() and (tmp_path / "onnx" / "cell.onnx").exists()
    # `vidnas predict --runtime onnxruntime` runs them, with a key interval, and gives the torch runtime's masks
    for runtime in ("torch", "onnxruntime"):
        res = CliRunner().invoke(vidnas_app, ["predict", str(video), "--checkpoint",
                                              str(out / "top" / "cell0" / "model.pt"), "--runtime", runtime,
                                              "--key-interval", "2", "--out", str(tmp_path / f"pred_{runtime}"),
                                              "--no-overlay", "-q"])
        assert res.exit_code == 0, res.output
    from PIL import Image

    for f in sorted((tmp_path / "pred_torch" / "masks").glob("*.png")):
        a = np.asarray(Image.open(f))
        b = np.asarray(Image.open(tmp_path / "pred_onnxruntime" / "masks" / f.name))
        assert (a == b).mean() > 0.99, f.name
    assert json.loads((tmp_path / "pred_onnxruntime" / "summary.json").read_text())["runtime"] == "onnxruntime"
    # `vidnas bench --runtime both`: the paper's Table 5 rows under PyTorch and onnxruntime
    res = CliRunner().invoke(vidnas_app, ["bench", "--checkpoint", f"static={static_ckpt}", "--checkpoint",
                                          str(out / "top" / "cell0" / "model.pt"), "--runtime", "both", "--frames",
                                          "3", "--warmup", "1", "--threads", "1", "--no-flops", "--ceiling", "64",
                                          "--json",
                                          str(tmp_path / "bench_both.json"), "-q"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads((tmp_path / "bench_both.json").read_text())}
    assert set(rows) == {"static", "static@ort", "cell0", "cell0@ort"}
    assert rows["cell0@ort"]["latency_ms"] > 0 and rows["cell0@ort"]["extra"]["encoder_ms"] is None  # one graph
    assert rows["cell0"]["extra"]["encoder_ms"] > 0
    report = (out / "report.md").read_text()
    assert "per-frame baseline" in report and "w/ cell0" in report
    assert (out / "top" / "runtime.json").exists() and (out / "config.yaml").exists()
    # resuming a finished search evaluates nothing new
    result = CliRunner().invoke(app, ["--out", str(out), "--resume", "--static", str(static_ckpt), "--top-k", "0",
                                      "-q"])
    assert result.exit_code == 0, result.output
    assert "0 evaluated now" in result.output
    assert "--top-k 0: no end-to-end training" in result.output and "top1: candidate" in result.output  # best listed
    assert len(json.loads((out / "search_summary.json").read_text())["best"]) == 2  # 2 candidates, both reported


def test_cli_resume_with_the_preset_it_started_from(static_ckpt: Path, tmp_path: Path) -> None:
    """`--resume` with the same `--config` as the start (as `benchmarks/cells_camvid.sh` does): the saved config
    holds the static network's model section, so the preset must go through the same adoption before the two are
    compared (it was refused: "--resume cannot change model.decoder: 'arch2' -> 'sptcn'")."""
    from vidnas.cli.search_cells import cells_cmd
    from vidnas.config import save_config

    app = typer.Typer()
    app.command()(cells_cmd)
    preset = tmp_path / "preset.yaml"
    save_config(tiny_cfg(), preset)
    assert tiny_cfg().model.decoder != "arch2"  # the preset's model section is not the static network's
    out = tmp_path / "run"
    args = ["--config", str(preset), "--static", str(static_ckpt), "--out", str(out), "-n", "2", "--workers", "0",
            "--max-steps", "2", "-q"]
    result = CliRunner().invoke(app, [*args, "--top-k", "0"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, [*args, "--resume", "--top-k", "0"])
    assert result.exit_code == 0, result.output
    assert "0 evaluated now" in result.output
    # a change a resume cannot honour is still refused, named
    result = CliRunner().invoke(app, [*args, "--resume", "--top-k", "0", "--set", "cells.cell_lr=0.1"])
    assert result.exit_code == 2 and "cells.cell_lr" in result.output


def test_ray_executor_missing_extra_names_it(static_ckpt: Path, tmp_path: Path, monkeypatch) -> None:
    # make `import ray` fail as on a machine without the extra (None in sys.modules raises ImportError)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ExecutorError, match=r"vidnas\[ray\]"):
        make_executor("ray", None, None, workers=2)  # type: ignore[arg-type]
    with pytest.raises(ExecutorError, match="valid executors: local, ray"):
        make_executor("dask", None, None, workers=2)  # type: ignore[arg-type]
    with pytest.raises(ExecutorError, match=r"vidnas\[ray\]"):  # before any work is done
        run_cell_search(tiny_cfg("cells.executor=ray"), tmp_path, static_ckpt)
    assert not (tmp_path / LOG_NAME).exists()


def test_ray_executor_local_cluster(static_ckpt: Path) -> None:
    ray = pytest.importorskip("ray")
    from vidnas.data import ClipDataset, open_source

    cfg = tiny_cfg()
    static = load_model(static_ckpt, kinds=("arch2",)).model
    data_cfg = search_data_config(cfg)
    ds = ClipDataset(open_source(data_cfg), "train", data_cfg, train=False)
    info = CacheInfo(4, 255, 3, (80, 64, 8, 24, 80), (32, 48))
    train_cache, val_cache = build_caches(static, ds, info, val_fraction=0.1, seed=0)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        # one actor (a fresh interpreter importing torch) runs both jobs: the failed one does not take it down
        ex = make_executor("ray", train_cache, val_cache, workers=1)
        jobs = [CandidateJob(cid=i, tokens=(2, 1, 0, 1, 1, 5, 3, 2, 1, 0), ops=("conv1x1", "sep3x3", "skip"),
                             aggregations=("sum", "concat"), num_classes=4, in_channels=info.in_channels, epochs=1,
                             batch_size=8, seed=i, inject_failure="concat" if i == 1 else None) for i in range(2)]
        results = {r.cid: r for r in ex.run(jobs)}
        ex.close()
    finally:
        ray.shutdown()
    assert not results[0].failed and results[0].reward is not None
    assert results[1].failed and "InjectedFailure" in results[1].error


def test_cost_meter_times_the_cell_against_the_static_network(static_ckpt: Path) -> None:
    from vidnas.bench import count_flops
    from vidnas.bench.protocol import component_flops
    from vidnas.models.cells import Cell, DynamicCellModel, cell_in_channels
    from vidnas.search.cells import CostMeter

    static = load_model(static_ckpt, kinds=("arch2",)).model
    geno = CellGenotype.from_tokens([2, 1, 0, 1, 1, 5, 3, 2, 1, 0], ops=("conv1x1", "sep3x3", "skip"),
                                    aggregations=("sum", "concat"))
    cell = Cell(geno, in_channels=cell_in_channels(static), num_classes=4)
    cost = CostMeter(static, (64, 96), frames=3, warmup=1).measure(cell)
    assert cost["latency_ms"] > 0 and cost["static_latency_ms"] > 0 and (cost["height"], cost["width"]) == (64, 96)
    assert cost["fps_ratio"] == pytest.approx(1 / cost["latency_ratio"])
    # the ratio is the median of the per-round ratios: close to the ratio of the medians on a quiet machine
    assert 0.5 < cost["latency_ratio"] / (cost["latency_ms"] / cost["static_latency_ms"]) < 2
    assert 0 < cost["cell_ms"] < cost["latency_ms"] and 0 < cost["encoder_ms"] < cost["latency_ms"]
    flops = component_flops(DynamicCellModel(static, cell), (64, 96))  # encoder + cell at the deployment size
    assert cost["gflops"] == pytest.approx(flops["total"] / 1e9) and cost["cell_gflops"] == pytest.approx(
        flops["decoder"] / 1e9)
    assert cost["model_params"] == sum(p.numel() for p in static.parameters()) + sum(p.numel() for p in
                                                                                      cell.parameters())
    # the cell reads layer2, layer3 and prev_dec: its frames run the encoder's first three stages, and are timed so
    x = torch.zeros(1, 3, 64, 96)
    assert cost["encoder_stages"] == 3 and cost["gflops"] - cost["cell_gflops"] == pytest.approx(
        count_flops(static.encode, x, 3) / 1e9) and count_flops(static.encode, x, 3) < count_flops(static.encode, x)


def test_latency_aware_search_random_baseline_and_proxy(static_ckpt: Path, tmp_path: Path) -> None:
    from vidnas.search.cells import compare_runs, format_comparison

    common = ("cells.candidates=4", "cells.workers=0", "cells.latency_frames=2", "cells.latency_warmup=0",
              "cells.latency_weight=-0.5", "cells.proxy_scale=0.5", "cells.latency_size=64,96")
    opts = SearchOptions(batch_size=2, show_progress=False)
    no_plots = SearchOptions(batch_size=2, show_progress=False, plots=False)  # the first run draws and checks them
    res = run_cell_search(tiny_cfg(*common), tmp_path / "search", static_ckpt, options=opts)
    assert res.train_cache.info.image_hw == (32, 32)  # 32x48 * 0.5, rounded to multiples of 32 (at least 32)
    for r in res.records:
        c = r["cost"]
        assert (c["height"], c["width"]) == (64, 96) and c["latency_ms"] > 0 and c["gflops"] > c["cell_gflops"] > 0
        assert r["reward"] == pytest.approx(r["accuracy_reward"] * c["latency_ratio"] ** -0.5)
    summary = json.loads((tmp_path / "search" / "search_summary.json").read_text())
    assert summary["sampler"] == "ppo" and summary["reward"]["latency_weight"] == -0.5
    assert summary["static_saw_meta_val"]  # static_ckpt trained on every video (a block split shares them anyway)
    assert summary["stats"]["n"] == 4 and summary["stats"]["best_of_n"]["reward"] == max(r["reward"]
                                                                                         for r in res.records)
    assert (tmp_path / "search" / "plots" / "pareto.png").stat().st_size > 0
    ppo_log = [json.loads(line) for line in (tmp_path / "search" / "ppo.jsonl").read_text().splitlines()]
    assert all("loss" in p for p in ppo_log)

    rnd = run_cell_search(tiny_cfg(*common, "cells.sampler=random"), tmp_path / "random", static_ckpt,
                          options=no_plots)
    ppo_log = [json.loads(line) for line in (tmp_path / "random" / "ppo.jsonl").read_text().splitlines()]
    assert len(ppo_log) == 2 and not any("loss" in p for p in ppo_log)  # no controller update
    state = torch.load(tmp_path / "random" / CHECKPOINT_NAME, weights_only=False)
    assert state["sampler"] == "random"
    assert all(float(v.abs().max()) == 0 for k, v in state["controller"].items() if k.startswith("heads."))
    assert all(r["cost"]["latency_ms"] > 0 for r in rnd.records)  # everything else as in the search
    with pytest.raises(ValueError, match="cells.sampler=random"):  # a random run resumes only as a random run
        run_cell_search(tiny_cfg(*common, "cells.candidates=6"), tmp_path / "random", static_ckpt, resume=True,
                        options=no_plots)
    # the top cells of a proxy search train end to end at the full size, from a full-size cache of the train split
    from vidnas.search.cells import FinalOptions, train_top_cells

    top = train_top_cells(tiny_cfg(*common, "cells.sampler=random", "cells.top_k=1"), rnd, options=FinalOptions(
        cell_epochs=1, epochs=1, batch_size=4, max_steps_per_epoch=1, runtime_repeats=1, show_progress=False))
    assert top[0]["runtime"]["input_hw"] == [32, 48] and "miou" in top[0]["val"]
    stats = compare_runs({"search": tmp_path / "search", "random": tmp_path / "random"})
    assert stats["search"]["candidates_compared"] == stats["random"]["candidates_compared"] == 4
    table = format_comparison(stats)
    assert "| search | 4 |" in table and "| random | 4 |" in table

    w0 = run_cell_search(tiny_cfg(*common, "cells.latency_weight=0", "cells.candidates=2"), tmp_path / "paper",
                         static_ckpt, options=no_plots)
    assert all(r["reward"] == r["accuracy_reward"] and r["cost"]["latency_ms"] > 0 for r in w0.records)


@pytest.mark.parametrize(("override", "message"), [
    ("cells.latency_weight=0.07", "must be <= 0"),
    ("cells.sampler=greedy", "valid values are ppo, random"),
    ("cells.proxy_scale=2", r"must be in \(0, 1\]"),
    ("cells.meta_split=random", "valid values are auto, video, block, window"),
    ("cells.op_preset=gpu", "valid presets are paper, cpu"),
])
def test_cli_refuses_bad_cells_values_before_work(tmp_path: Path, override: str, message: str) -> None:
    from vidnas.cli.search_cells import cells_cmd

    app = typer.Typer()
    app.command()(cells_cmd)
    res = CliRunner().invoke(app, ["--out", str(tmp_path / "run"), "--set", override, "-q", *sum(
        (["--set", item] for item in TINY), [])])
    assert res.exit_code == 2, res.output
    assert re.search(message, " ".join(res.output.split())), res.output
    assert not (tmp_path / "run" / "static").exists()  # failed before training a static network


def test_cli_help_documents_the_issue_13_options() -> None:
    from vidnas.cli.main import app as vidnas_app

    res = CliRunner().invoke(vidnas_app, ["search", "cells", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    for option in ("--latency-weight", "--latency-target", "--latency-size", "--proxy-scale", "--cell-epochs",
                   "--random", "--op-preset"):
        assert option in text, option
    assert "paper's reward" in text and "frozen uniform controller" in text and "deform3x3" in text


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cell_training_under_amp_keeps_float32_weights_and_finite_losses(static_ckpt: Path, amp: str) -> None:
    """``train.amp`` reaches the cell training (candidates and the top-k phases): autocast forward, float32 weights,
    loss scaling for fp16; the result differs from float32 (autocast did run) but stays close."""
    from vidnas.data import ClipDataset, open_source
    from vidnas.models.cells import Cell, DynamicCellModel, cell_in_channels
    from vidnas.search.cells.evaluate import train_cell
    from vidnas.search.cells.topk import finetune

    cfg = tiny_cfg()
    static = load_model(static_ckpt, kinds=("arch2",)).model
    data_cfg = search_data_config(cfg)
    ds = ClipDataset(open_source(data_cfg), "train", data_cfg, train=False)
    train_cache, val_cache = build_caches(static, ds, CacheInfo(4, 255, 3, tuple(cell_in_channels(static)), (32, 48)),
                                          val_fraction=0.1, seed=0, kind="memory")
    geno = CellGenotype.from_tokens([0, 1, 0, 1, 0] * 2, ops=("conv1x1", "sep3x3"), aggregations=("sum",))
    runs = {}
    for mode in ("none", amp):
        torch.manual_seed(0)
        cell = Cell(geno, in_channels=cell_in_channels(static), num_classes=4)
        runs[mode] = train_cell(cell, train_cache, val_cache, epochs=2, lr=1e-2, batch_size=4, seed=0, amp=mode)
        assert all(p.dtype == torch.float32 for p in cell.parameters())
        assert all(torch.isfinite(torch.tensor(loss)) for loss in runs[mode]["losses"])
    assert runs[amp]["losses"] != runs["none"]["losses"]  # autocast changed the arithmetic
    assert runs[amp]["losses"][0] == pytest.approx(runs["none"]["losses"][0], rel=0.1)
    model = DynamicCellModel(static, cell, window=3)
    history = finetune(model, ClipDataset(open_source(data_cfg), "train", data_cfg, train=True), epochs=1,
                       cell_lr=1e-3, batch_size=2, ignore_index=255, max_steps_per_epoch=2, amp=amp)
    assert len(history) == 1 and torch.isfinite(torch.tensor(history[0]))
    assert all(p.dtype == torch.float32 for p in model.parameters())
