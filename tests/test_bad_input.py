"""Bad input, tried as a new user would: every case exits 2 with one line naming the culprit, before expensive work,
and changes no file that existed before (directories are hashed before and after). A few positive cases pin what
must keep working: resuming with the run's own config, replacing an earlier prediction, --overwrite.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from fixtures_data import make_folder, write_mp4
from vidnas.checkpoint import CheckpointError, save_checkpoint
from vidnas.cli.main import app
from vidnas.config import ConfigError, load_config, save_config
from vidnas.models import load_model
from vidnas.rundir import resume_config
from vidnas.search.cells import train_static

REPO = Path(__file__).resolve().parents[1]
TINY = ["--config", "tiny", "--set", "data.synthetic_videos=3", "--set", "data.synthetic_frames=6",
        "--set", "train.batch_size=2", "--set", "train.max_steps_per_epoch=2", "--set", "train.epochs=1",
        "--threads", "1", "-q"]
CELLS_TINY = ["--set", "data.height=32", "--set", "data.width=48", "--set", "data.synthetic_videos=3",
              "--set", "data.synthetic_frames=8", "--set", "train.batch_size=4", "--set", "cells.num_layers=2",
              "--set", "cells.cell_epochs=1", "--set", "cells.cell_batch_size=8", "--set", "cells.ops=[conv1x1,skip]",
              "--set", "cells.aggregations=[sum,concat]", "--set", "cells.latency_frames=2",
              "--set", "cells.latency_warmup=0", "--threads", "1", "-q"]


def tree_hash(*paths: Path) -> str:
    """Names and contents of every file under ``paths`` (what a command must not change)."""
    h = hashlib.sha256()
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            h.update(str(f).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def invoke(args: Sequence[str], cwd: Path | None = None) -> tuple[int, str]:
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        res = CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)
    out = res.output + ("" if res.exception is None or isinstance(res.exception, SystemExit)
                        else f"\nEXCEPTION {type(res.exception).__name__}: {res.exception}")
    return res.exit_code, out


def refused(args: Sequence[str], culprit: str, *protect: Path, cwd: Path | None = None) -> str:
    """``args`` exits 2 with an ``error:`` line naming ``culprit``, no traceback, and ``protect`` trees unchanged."""
    before = tree_hash(*protect)
    code, out = invoke(args, cwd)
    assert code == 2, out
    assert "Traceback" not in out and "EXCEPTION" not in out, out
    assert "error:" in out and culprit in out, out
    assert tree_hash(*protect) == before, "a refused command changed files it was given"
    return out


# ----------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad")


@pytest.fixture(scope="module")
def run(work: Path) -> Path:
    """A finished tiny training run (synthetic data, swin_test + SP-TCN)."""
    code, out = invoke(["train", *TINY, "--out", work / "run"])
    assert code == 0, out
    return work / "run"


@pytest.fixture(scope="module")
def ckpt(run: Path) -> Path:
    return run / "checkpoints" / "best.pt"


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    """A user's data set in the folder layout (frames, masks, classes.yaml, splits.yaml)."""
    return make_folder(tmp_path / "my_data", size=(32, 48))


@pytest.fixture(scope="module")
def video(work: Path) -> Path:
    return write_mp4(work / "clip.mp4", [np.full((64, 96, 3), 30 * i, np.uint8) for i in range(4)], fps=10)


@pytest.fixture()
def a_file(tmp_path: Path) -> Path:
    f = tmp_path / "notes.txt"
    f.write_text("a user's file")
    return f


# ------------------------------------------------------------------------------------------- data destroyed


def test_predict_never_writes_into_a_data_set(ckpt: Path, video: Path, dataset: Path) -> None:
    refused(["predict", video, "--checkpoint", ckpt, "--out", dataset / "clipA", "-q"], "looks like a data set",
            dataset)


def test_predict_refuses_a_folder_of_someone_elses_files(ckpt: Path, video: Path, a_file: Path) -> None:
    refused(["predict", video, "--checkpoint", ckpt, "--out", a_file.parent, "-q"], "not empty", a_file.parent)


def test_predict_refuses_an_output_inside_its_input(ckpt: Path, dataset: Path) -> None:
    frames = dataset / "clipA" / "frames"
    refused(["predict", frames, "--checkpoint", ckpt, "--out", frames / "pred", "-q"], "inside the input", dataset)


def test_predict_replaces_only_its_own_earlier_outputs(ckpt: Path, video: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    code, text = invoke(["predict", video, "--checkpoint", ckpt, "--out", out, "-q"])
    assert code == 0, text
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i:06d}.png" for i in range(4)]
    (out / "masks" / "my_note.png").write_bytes(b"user")  # files the user adds are never touched
    (out / "mine.txt").write_text("user")
    code, text = invoke(["predict", video, "--checkpoint", ckpt, "--out", out, "--max-frames", "2", "-q"])
    assert code == 0, text
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["000000.png", "000001.png", "my_note.png"]
    assert (out / "mine.txt").read_text() == "user" and (out / "masks" / "my_note.png").read_bytes() == b"user"


def test_train_refuses_an_existing_run_without_resume(run: Path) -> None:
    out = refused(["train", *TINY, "--out", run], "--resume", run)
    assert "--overwrite" in out and "--out" in out


def test_stnas_refuses_an_existing_search(work: Path) -> None:
    s = work / "search"
    code, text = invoke(["search", "stnas", *TINY, "--set", "stnas.decoder_epochs=1", "--out", s])
    assert code == 0, text
    refused(["search", "stnas", *TINY, "--out", s], "already holds a run of this command (ST-NAS search)", s)


def test_resume_starts_from_the_runs_own_config(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    subprocess.run(["cp", "-r", str(run), str(copy)], check=True)
    code, text = invoke(["train", "--out", copy, "--resume", "--set", "train.epochs=2", "--threads", "1", "-q"])
    assert code == 0, text
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    assert cfg["model"]["encoder"] == "swin_test" and cfg["train"]["epochs"] == 2  # not the defaults (Swin-T)


@pytest.mark.parametrize("change", ["train.lr=0.5", "data.height=32", "model.decoder_channels=16"])
def test_resume_refuses_changes_the_checkpoint_cannot_honour(run: Path, change: str) -> None:
    key = change.split("=")[0]
    out = refused(["train", "--out", run, "--resume", "--set", change, "-q"], key, run)
    assert "train.epochs" in out  # the message lists the keys a resume may change


def test_a_failed_resume_leaves_the_run_resumable(run: Path) -> None:
    refused(["train", "--out", run, "--resume", "--config", "tiny", "--set", "train.lr=0.5", "-q"], "train.lr", run)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == 1e-3


def test_cell_search_resume_allows_top_k_only() -> None:
    import tempfile

    from vidnas.config import load_config

    with tempfile.TemporaryDirectory() as d:
        save_config(load_config("tiny", ["model.encoder=mobilenetv2_test"]), Path(d) / "config.yaml")
        cfg = resume_config(d, "cells", overrides=["cells.top_k=0", "cells.candidates=60"])
        assert cfg.cells.top_k == 0 and cfg.cells.candidates == 60 and cfg.model.encoder == "mobilenetv2_test"
        with pytest.raises(ConfigError, match="cells.cell_lr"):
            resume_config(d, "cells", overrides=["cells.cell_lr=0.1"])


def test_cell_search_models_load_when_the_static_encoder_differs(work: Path) -> None:
    """--static of efficientnet_lite0_test while the config says mobilenetv2_test: the static network's own model
    config wins, so `top/cell0/model.pt` loads (before: a size-mismatch traceback after the search)."""
    from vidnas.config import load_config
    from vidnas.search.cells import train_static

    static_cfg = load_config(None, ["data.height=32", "data.width=48", "data.synthetic_videos=3",
                                    "data.synthetic_frames=8", "model.encoder=efficientnet_lite0_test",
                                    "train.batch_size=4"])
    static = train_static(static_cfg, work / "static_eff", epochs=1, max_steps_per_epoch=1)
    out = work / "cells_eff"
    code, text = invoke(["search", "cells", *CELLS_TINY, "--static", static, "--set", "model.encoder=mobilenetv2_test",
                         "--candidates", "1", "--workers", "0", "--top-k", "1", "--final-cell-epochs", "1",
                         "--final-epochs", "1", "--max-steps", "1", "--out", out])
    assert code == 0, text
    loaded = load_model(out / "top" / "cell0" / "model.pt")
    assert loaded.kind == "cell" and loaded.cfg.model.encoder == "efficientnet_lite0_test"
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["encoder"] == "efficientnet_lite0_test"


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _search_in_fork(args: list[str]) -> None:
    """`vidnas search cells ...` in a process forked from this one (torch, timm and vidnas already imported: 4 s less
    than a new interpreter); multiprocessing ends it with os._exit, never through pytest."""
    app(args, prog_name="vidnas")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the worker processes")
def test_cell_search_workers_die_with_a_killed_parent(work: Path) -> None:
    import multiprocessing as mp

    cfg = load_config(None, ["data.height=32", "data.width=48", "data.synthetic_videos=3", "data.synthetic_frames=8",
                             "model.encoder=mobilenetv2_test", "train.batch_size=4"])
    static = train_static(cfg, work / "static_kill", epochs=1, max_steps_per_epoch=1)
    args = ["search", "cells", *CELLS_TINY, "--static", str(static), "--candidates", "200", "--workers", "1",
            "--top-k", "0", "--out", str(work / "cells_kill")]
    # the search process: a fork of this one (its pool's workers are spawned, fresh interpreters, as always)
    proc = mp.get_context("fork").Process(target=_search_in_fork, args=(args,))
    proc.start()
    try:
        workers: list[int] = []
        deadline = time.time() + 180
        # the pool's spawned worker (one: each is a fresh interpreter importing torch, and each installs the same
        # parent-death hook), not its resource tracker
        while time.time() < deadline and len(workers) < 1:
            workers = [c for c in _children(proc.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
            time.sleep(0.2)
        assert len(workers) == 1, "the search never started its worker"
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=30)
        assert proc.exitcode == -signal.SIGKILL
        # a worker still importing torch when its parent dies ends once it reaches die_with_parent: give it the time
        # a loaded machine needs (an orphan without it would wait on its call queue for ever)
        deadline = time.time() + 90
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "worker processes outlived the killed search"
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=30)
        for w in workers:  # no orphan left behind when the test fails
            if _alive(w):
                os.kill(w, signal.SIGKILL)


# ------------------------------------------------------------------------------------------------ output paths


@pytest.mark.parametrize("command", [
    ["train", *TINY],
    ["search", "stnas", *TINY],
    ["search", "cells", *CELLS_TINY],
    ["demo", "-q"],
])
def test_out_that_is_a_file(command: list[str], a_file: Path) -> None:
    refused([*command, "--out", a_file], str(a_file), a_file)


def test_export_out_that_is_a_file(ckpt: Path, a_file: Path) -> None:
    refused(["export", ckpt, "--out", a_file], str(a_file), a_file)


def test_predict_out_that_is_a_file(ckpt: Path, video: Path, a_file: Path) -> None:
    refused(["predict", video, "--checkpoint", ckpt, "--out", a_file, "-q"], str(a_file), a_file)


def test_eval_out_that_is_a_file_fails_before_any_work(ckpt: Path, a_file: Path) -> None:
    t0 = time.perf_counter()
    refused(["eval", ckpt, "--out", a_file, "-q"], str(a_file), a_file)
    assert time.perf_counter() - t0 < 10


@pytest.mark.skipif(not Path("/proc/sys").is_dir(), reason="needs a read-only file system (/proc/sys)")
def test_read_only_output_directory() -> None:
    refused(["train", *TINY, "--out", "/proc/sys"], "/proc/sys")
    refused(["train", *TINY, "--out", "/proc/sys/vidnas-run"], "/proc/sys/vidnas-run")


def test_full_disk_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC in the middle of writing a checkpoint: a clear error that says the previous one is intact (it is)."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "epoch": 0})
    before = path.read_bytes()

    def full_disk(obj: object, f: str) -> None:
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="no space left on device.*previous last.pt is intact"):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "epoch": 1})
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


# ---------------------------------------------------------------------------------------------- config values


@pytest.mark.parametrize(("setting", "culprit"), [
    ("train.batch_size=0", "train.batch_size"),
    ("train.epochs=0", "train.epochs"),
    ("train.epochs=-3", "train.epochs"),
    ("train.lr=-1", "train.lr"),
    ("data.window=0", "data.window"),
    ("train.epochs=abc", "train.epochs"),
    ("stnas.mode=sideways", "stnas.mode"),
    ("data.temporal=backwards", "data.temporal"),
    ("nosuch.key=1", "nosuch"),
    ("train.nosuchkey=1", "nosuchkey"),
])
def test_bad_config_values(setting: str, culprit: str, tmp_path: Path) -> None:
    refused(["train", *TINY, "--set", setting, "--out", tmp_path / "r"], culprit, tmp_path)
    assert not (tmp_path / "r").exists()  # refused before the run directory exists


def test_negative_lambda(tmp_path: Path) -> None:
    refused(["search", "stnas", *TINY, "--lambda", "-1", "--out", tmp_path / "s"], "stnas.lam", tmp_path)


def test_cells_negative_workers(tmp_path: Path) -> None:
    refused(["search", "cells", *CELLS_TINY, "--workers", "-1", "--out", tmp_path / "c"], "cells.workers", tmp_path)


def test_cells_max_steps_zero(tmp_path: Path) -> None:
    refused(["search", "cells", *CELLS_TINY, "--max-steps", "0", "--out", tmp_path / "c"], "--max-steps", tmp_path)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("command", [["demo", "-q"], ["search", "stnas", *TINY, "--lambdas", "0,0.1"]])
def test_negative_jobs(tmp_path: Path, command: list[str]) -> None:
    refused([*command, "--jobs", "-1", "--out", tmp_path / "r"], "--jobs", tmp_path)
    assert not (tmp_path / "r").exists()


def test_classes_yaml_with_a_bad_ignore_index(dataset: Path) -> None:
    (dataset / "classes.yaml").write_text("names: [a, b, c]\nignore_index: abc\n")
    refused(["data", "stats", "--format", "folder", "--root", dataset], "classes.yaml", dataset)


@pytest.mark.parametrize("command", ["stats", "preview"])
def test_classes_yaml_colours_of_the_wrong_length(command: str, dataset: Path, tmp_path: Path) -> None:
    (dataset / "classes.yaml").write_text("names: [a, b, c]\ncolors: [[0, 0, 0], [255, 0, 0]]\n")
    args = ["data", command, "--format", "folder", "--root", dataset]
    refused([*args, *(["--out", tmp_path / "grid.png"] if command == "preview" else [])], "colors", dataset)


def test_init_from_a_different_model_names_both(ckpt: Path, tmp_path: Path) -> None:
    out = refused(["train", *TINY, "--set", "model.decoder_channels=16", "--init", ckpt, "--out", tmp_path / "r"],
                  "--init", ckpt)
    assert "width 8" in out and "width 16" in out  # which model each side is


def test_unknown_encoder_fails_before_the_run_directory(tmp_path: Path) -> None:
    refused(["train", *TINY, "--encoder", "swin_huge", "--out", tmp_path / "r"], "swin_huge", tmp_path)
    assert not (tmp_path / "r").exists()


def test_unknown_data_format(tmp_path: Path) -> None:
    refused(["train", *TINY, "--format", "nosuch", "--out", tmp_path / "r"], "nosuch", tmp_path)


def test_missing_data_root(tmp_path: Path) -> None:
    refused(["data", "stats", "--format", "camvid", "--root", tmp_path / "nowhere"], "nowhere", tmp_path)


def test_missing_config_file(tmp_path: Path) -> None:
    refused(["train", "--config", tmp_path / "nope.yaml", "--out", tmp_path / "r"], "nope.yaml", tmp_path)


def test_bad_architecture_file(tmp_path: Path) -> None:
    bad = tmp_path / "arch.json"
    bad.write_text("{not json")
    refused(["train", *TINY, "--arch", bad, "--out", tmp_path / "r"], "arch.json", tmp_path)
    refused(["train", *TINY, "--arch", tmp_path / "none.json", "--out", tmp_path / "r"], "none.json", tmp_path)


def test_missing_latency_table(tmp_path: Path) -> None:
    refused(["search", "stnas", *TINY, "--latency-table", tmp_path / "lat.json", "--out", tmp_path / "s"],
            "lat.json", tmp_path)


# ------------------------------------------------------------------------------------------------------- inputs


def test_predict_an_image_as_a_video(ckpt: Path, dataset: Path, tmp_path: Path) -> None:
    image = dataset / "clipA" / "frames" / "frame_0000.png"
    refused(["predict", image, "--checkpoint", ckpt, "--out", tmp_path / "p", "-q"], "is an image", dataset)


def test_predict_missing_input_and_checkpoint(ckpt: Path, video: Path, tmp_path: Path) -> None:
    refused(["predict", tmp_path / "none.mp4", "--checkpoint", ckpt, "--out", tmp_path / "p", "-q"], "none.mp4")
    refused(["predict", video, "--checkpoint", tmp_path / "none.pt", "--out", tmp_path / "p", "-q"], "none.pt")


@pytest.mark.parametrize("command", ["eval", "export"])
def test_missing_checkpoint(command: str, tmp_path: Path) -> None:
    refused([command, tmp_path / "missing.pt", "--out", tmp_path / "o"], "missing.pt", tmp_path)
    assert not (tmp_path / "o").exists()


def test_export_of_a_supernet_checkpoint_is_refused(tmp_path: Path, ckpt: Path) -> None:
    """An ST-NAS search checkpoint (it carries a ``phase``) is not a model: export refuses it, names it a supernet
    and says how to get the model (train the derived arch.json), and leaves the file as it was."""
    state = torch.load(ckpt, weights_only=False)
    state["phase"] = "encoder"  # an ST-NAS supernet checkpoint is not a model
    save_checkpoint(tmp_path / "supernet.pt", state)
    out = refused(["export", tmp_path / "supernet.pt", "--out", tmp_path / "o"], "supernet",
                  tmp_path / "supernet.pt")
    assert "not a model" in out and "vidnas train --arch" in out, out


def test_eval_key_interval_on_a_window_model(ckpt: Path, tmp_path: Path) -> None:
    refused(["eval", ckpt, "--key-interval", "2", "--out", tmp_path / "e", "-q"], "dynamic-cell models only")
    assert not (tmp_path / "e").exists(), "a refused evaluation left its output directory behind"


def test_eval_context_ablation_scores_the_windows_without_their_context(ckpt: Path, tmp_path: Path) -> None:
    code, out = invoke(["eval", ckpt, "--context-ablation", "--no-stream", "--out", tmp_path / "e", "-q"])
    assert code == 0, out
    res = json.loads((tmp_path / "e" / "eval.json").read_text())
    real, alone = res["clips"], res["clips_target_context"]
    assert alone["num_pixels"] == real["num_pixels"] > 0 and 0.0 <= alone["miou"] <= 1.0
    assert 0.0 <= res["context_changed_pixels"] <= 1.0
    assert "with the target frame repeated" in out and "of the target pixels' labels" in out


# --------------------------------------------------------------------------------------------------------- runs


def test_bench_without_a_model() -> None:
    refused(["bench", "-q"], "no model to benchmark")


def test_bench_unknown_row() -> None:
    refused(["bench", "--row", "swin_huge", "-q"], "swin_huge")


@pytest.mark.parametrize("command", [
    ["latency", "--encoder", "swin_test", "--height", "32", "--width", "48", "-q"],
    ["bench", "--row", "swin_t", "--height", "64", "--width", "96", "--frames", "1", "--json"],
    ["data", "preview", "--format", "synthetic"],
])
def test_file_outputs_never_overwrite_an_existing_file(command: list[str], a_file: Path) -> None:
    args = [*command[:-1], command[-1], a_file] if command[-1] == "--json" else [*command, "--out", a_file]
    refused(args, str(a_file), a_file)


def test_resume_with_nothing_to_resume(tmp_path: Path, a_file: Path) -> None:
    refused(["train", "--out", tmp_path / "nothing", "--resume", "-q"], "nothing")
    refused(["train", *TINY, "--out", a_file.parent, "--resume"], "config.yaml", a_file.parent)


def test_resume_and_overwrite_together(run: Path) -> None:
    refused(["train", *TINY, "--out", run, "--resume", "--overwrite"], "contradict", run)


def test_overwrite_replaces_the_run_and_nothing_else(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    subprocess.run(["cp", "-r", str(run), str(copy)], check=True)
    (copy / "my_notes.txt").write_text("keep me")
    old_lines = len((copy / "metrics.jsonl").read_text().splitlines())
    code, text = invoke(["train", *TINY, "--set", "train.log_every=1", "--out", copy, "--overwrite"])
    assert code == 0, text
    new = [line for line in (copy / "metrics.jsonl").read_text().splitlines() if '"epoch"' in line]
    assert len(new) == 3 and old_lines > 0  # two train records (log_every 1, 2 steps) + one epoch: nothing appended
    assert (copy / "my_notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("command", [["search", "cells", *CELLS_TINY], ["eval", "X"], ["export", "X", "--out", "o"]])
def test_threads_everywhere(command: list[str], ckpt: Path, tmp_path: Path) -> None:
    args = [str(ckpt) if a == "X" else a for a in command]
    refused([*args, "--threads", "0", *(["--out", tmp_path / "c"] if command[0] == "search" else [])], "--threads")


# ------------------------------------------------------------------------------------------- paths and files


def test_relative_data_root_works_from_another_directory(tmp_path: Path) -> None:
    make_folder(tmp_path / "a" / "my_data", size=(32, 48))
    code, text = invoke(["train", *TINY, "--format", "folder", "--root", "my_data", "--set", "data.window=1",
                         "--set", "data.height=32", "--set", "data.width=48", "--out", "run"], cwd=tmp_path / "a")
    assert code == 0, text
    assert Path(yaml.safe_load((tmp_path / "a" / "run" / "config.yaml").read_text())["data"]["root"]).is_absolute()
    (tmp_path / "b").mkdir()
    code, text = invoke(["eval", tmp_path / "a" / "run" / "checkpoints" / "last.pt", "--no-stream", "-q"],
                        cwd=tmp_path / "b")
    assert code == 0, text


def test_eval_writes_into_the_run_it_evaluates(run: Path) -> None:
    code, text = invoke(["eval", run / "checkpoints" / "last.pt", "--no-stream", "-q"])
    assert code == 0, text
    assert (run / "eval" / "last" / "eval.json").is_file()


def test_orphan_temporaries_are_removed_on_resume(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    subprocess.run(["cp", "-r", str(run), str(copy)], check=True)
    orphan = copy / "checkpoints" / ".best.pt.k3j2h1.tmp"  # what a SIGKILL during a save leaves
    orphan.write_bytes(b"half")
    (copy / "checkpoints" / "keep.tmp").write_text("not ours")
    code, text = invoke(["train", "--out", copy, "--resume", "--set", "train.epochs=2", "--threads", "1", "-q"])
    assert code == 0, text
    assert not orphan.exists() and (copy / "checkpoints" / "keep.tmp").exists()
