"""The output policy (issue 30), replayed: every path option of every command pointed at a data set, at another
command's outputs, at its own input and at a file of another kind exits 2 with one ``error:`` line and leaves every
existing file byte-identical (``tree_hash`` before and after); runs that diverge or cannot start fail loudly.

One tiny training run, ST-NAS search, export, stats file and preview are shared by the module; almost every case is
refused before any expensive work.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures_data import make_folder, write_mp4
from test_bad_input import TINY, invoke, tree_hash
from vidnas.checkpoint import save_checkpoint
from vidnas.rundir import RUN_MANIFEST, run_kind_of


def refused(args: list, culprit: str, *protect: Path) -> str:
    """``args`` exits 2 with exactly one ``error:`` line naming ``culprit``, no traceback, ``protect`` unchanged."""
    before = tree_hash(*protect)
    code, out = invoke(args)
    assert code == 2, out
    assert "Traceback" not in out and "EXCEPTION" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and culprit in errors[0], out
    assert tree_hash(*protect) == before, "a refused command changed files it was given"
    return errors[0]


# ----------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("policy")


@pytest.fixture(scope="module")
def run(work: Path) -> Path:
    code, out = invoke(["train", *TINY, "--out", work / "run"])
    assert code == 0, out
    return work / "run"


@pytest.fixture(scope="module")
def ckpt(run: Path) -> Path:
    return run / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def search(work: Path) -> Path:
    code, out = invoke(["search", "stnas", *TINY, "--set", "stnas.decoder_epochs=1", "--skip-encoder",
                        "--no-init", "--out", work / "search"])
    assert code == 0, out
    return work / "search"


@pytest.fixture(scope="module")
def export(work: Path, ckpt: Path) -> Path:
    code, out = invoke(["export", ckpt, "--out", work / "export", "--parity-frames", "0", "--no-incremental"])
    assert code == 0, out
    return work / "export"


@pytest.fixture(scope="module")
def dataset(work: Path) -> Path:
    return make_folder(work / "my_data", size=(32, 48))


@pytest.fixture(scope="module")
def stats_json(work: Path, dataset: Path) -> Path:
    code, out = invoke(["data", "stats", "--format", "folder", "--root", dataset, "--json", work / "stats.json"])
    assert code == 0, out
    return work / "stats.json"


@pytest.fixture(scope="module")
def preview_png(work: Path, dataset: Path) -> Path:
    code, out = invoke(["data", "preview", "--format", "folder", "--root", dataset, "--out", work / "grid.png",
                        "--n", "1", "--tile-width", "16"])
    assert code == 0, out
    return work / "grid.png"


@pytest.fixture(scope="module")
def video(work: Path) -> Path:
    return write_mp4(work / "clip.mp4", [np.full((64, 96, 3), 30 * i, np.uint8) for i in range(3)], fps=10)


@pytest.fixture()
def copy_of(tmp_path: Path) -> Callable[[Path], Path]:
    def copy(src: Path) -> Path:
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst

    return copy


# ------------------------------------------------------------------------------- the seven data-loss cases


def test_overwrite_never_deletes_the_init_checkpoint(run: Path, copy_of: Callable[[Path], Path]) -> None:
    r = copy_of(run)
    err = refused(["train", *TINY, "--out", r, "--init", r / "checkpoints" / "best.pt", "--overwrite"], "--init", r)
    assert "would delete" in err


def test_train_overwrite_never_replaces_a_search(search: Path) -> None:
    err = refused(["train", *TINY, "--out", search], "ST-NAS search", search)
    assert "training run" in err and "not a training run" in err  # names the kind it found, not the command's
    refused(["train", *TINY, "--out", search, "--overwrite"], "holds an ST-NAS search", search)


def test_search_overwrite_never_replaces_a_training_run(run: Path) -> None:
    refused(["search", "stnas", *TINY, "--out", run, "--overwrite"], "holds a training run", run)


def test_predict_never_rewrites_another_models_export(export: Path, ckpt: Path, video: Path, tmp_path: Path) -> None:
    refused(["predict", video, "--runtime", "onnxruntime", "--onnx", export, "--checkpoint", ckpt, "--out",
             tmp_path / "p", "-q"], "never writes into an export it did not make", export)
    assert not (tmp_path / "p").exists()


def test_data_stats_json_never_writes_into_the_data_set(dataset: Path) -> None:
    for flags in ([], ["--overwrite"]):
        refused(["data", "stats", "--format", "folder", "--root", dataset, "--json", dataset / "splits.yaml",
                 *flags], "looks like a data set", dataset)


def test_bench_json_never_writes_into_a_data_set(dataset: Path) -> None:
    refused(["bench", "--row", "swin_t", "--json", dataset / "classes.yaml", "--overwrite"], "looks like a data set",
            dataset)


def test_preview_never_overwrites_a_ground_truth_mask(dataset: Path) -> None:
    refused(["data", "preview", "--format", "synthetic", "--out", dataset / "clipA" / "masks" / "frame_0000.png",
             "--overwrite"], "looks like a data set", dataset)


def test_refusals_say_what_overwrite_deletes(run: Path) -> None:
    err = refused(["train", *TINY, "--out", run], "training run", run)
    assert "--overwrite to replace it (deletes checkpoints" in err and "metrics.jsonl" in err


# --------------------------------------------------------------------------------------------- fail loudly


def test_a_diverging_loss_stops_training_and_keeps_the_last_finite_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vidnas.engine.train as engine_train

    real = engine_train.segmentation_loss
    calls = {"n": 0}

    def diverging(*args, **kwargs):  # the real loss, made NaN from the third step on (epoch 2): a diverged run
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 2 else loss

    monkeypatch.setattr(engine_train, "segmentation_loss", diverging)
    r = tmp_path / "r"
    code, out = invoke(["train", *TINY, "--set", "train.epochs=3", "--out", r])
    assert code == 2, out
    err = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "diverged" in err[0] and "step 2 (epoch 2, batch 1)" in err[0], out
    assert "train.lr" in err[0] and f"last finite checkpoint is kept: {r / 'checkpoints' / 'last.pt'}" in err[0]
    state = torch.load(r / "checkpoints" / "last.pt", weights_only=False)
    assert state["epoch"] == 0 and all(torch.isfinite(v).all() for v in state["model"].values()
                                       if v.is_floating_point())


def test_a_huge_learning_rate_fails_loudly(tmp_path: Path) -> None:
    err = refused(["train", *TINY, "--set", "train.lr=1e30", "--out", tmp_path / "r"], "training diverged")
    assert "Lower the learning rate" in err


@pytest.fixture(scope="module")
def nan_ckpt(work: Path, ckpt: Path) -> Path:
    state = torch.load(ckpt, weights_only=False)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    return save_checkpoint(work / "nan.pt", state)


@pytest.mark.parametrize("command", ["export", "predict", "eval"])
def test_a_diverged_checkpoint_is_refused(command: str, nan_ckpt: Path, video: Path, tmp_path: Path) -> None:
    args = {"export": ["export", nan_ckpt], "eval": ["eval", nan_ckpt, "--no-stream", "-q"],
            "predict": ["predict", video, "--checkpoint", nan_ckpt, "-q"]}[command]
    refused([*args, "--out", tmp_path / "o"], "hold NaN or inf", nan_ckpt)


def test_an_earlier_export_survives_a_checkpoint_that_fails_to_load(nan_ckpt: Path, export: Path,
                                                                    copy_of: Callable[[Path], Path]) -> None:
    earlier = copy_of(export)  # an export is replaced without --overwrite, but only once the new model has loaded
    refused(["export", nan_ckpt, "--out", earlier], "hold NaN or inf", earlier)



def test_an_earlier_evaluation_survives_a_checkpoint_that_fails_to_load(nan_ckpt: Path, ckpt: Path,
                                                                         tmp_path: Path) -> None:
    """``eval --overwrite`` replaces an earlier evaluation only once the new model and its data have loaded."""
    earlier = tmp_path / "eval"
    code, out = invoke(["eval", ckpt, "--out", earlier, "--no-stream", "-q"])
    assert code == 0 and (earlier / "eval.json").is_file(), out
    refused(["eval", nan_ckpt, "--out", earlier, "--overwrite", "-q"], "hold NaN or inf", earlier)

def test_parity_fails_on_nan_logits() -> None:
    from vidnas.export import DeployError
    from vidnas.export.ort_streamers import logit_difference

    a = np.full((1, 3, 4, 4), np.nan, np.float32)
    with pytest.raises(DeployError, match="not finite"):
        logit_difference(a, a.copy())  # NaN against NaN is no agreement
    assert logit_difference(np.zeros(3), np.full(3, 0.5)) == 0.5


def test_init_from_an_unrelated_model_needs_init_partial(ckpt: Path, tmp_path: Path) -> None:
    state = torch.load(ckpt, weights_only=False)
    own = state["model"]
    state["model"] = {f"other.{k}": v for k, v in own.items()}
    state["model"]["decoder_probe"] = torch.zeros(1)
    first = next(iter(own))
    state["model"][first] = own[first]  # one tensor of the model's: far below the stated share
    unrelated = save_checkpoint(tmp_path / "unrelated.pt", state)
    err = refused(["train", *TINY, "--init", unrelated, "--out", tmp_path / "r"], f"fills 1 of the model's "
                  f"{len(own)} tensors", tmp_path)
    assert "--init-partial" in err and "below 50%" in err
    assert not (tmp_path / "r").exists()
    code, out = invoke(["train", *TINY, "--init", unrelated, "--init-partial", "--out", tmp_path / "r"])
    assert code == 0, out


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "older-run"])
def test_a_run_that_died_before_its_first_checkpoint(manifest: bool, run: Path,
                                                     copy_of: Callable[[Path], Path]) -> None:
    r = copy_of(run)  # what a training stopped by bad data mid-epoch leaves: config.yaml, tb/, metrics.jsonl
    for name in ("checkpoints", "train_summary.json", "curves.png", *(() if manifest else (RUN_MANIFEST,))):
        shutil.rmtree(r / name) if (r / name).is_dir() else (r / name).unlink()
    assert run_kind_of(r) == "train"
    err = refused(["train", *TINY, "--out", r], "stopped before its first checkpoint", r)
    assert "cannot be resumed" in err and "pass --overwrite to start it again (deletes" in err
    err = refused(["train", "--out", r, "--resume", "-q"], "stopped before its first checkpoint", r)
    assert "nothing to continue" in err and "--overwrite instead of --resume" in err
    code, out = invoke(["train", *TINY, "--out", r, "--overwrite"])
    assert code == 0, out
    assert (r / "checkpoints" / "last.pt").is_file()


# ------------------------------------------------------------------ every path option, against four targets

# Each case: (id, args, culprit, protected). In args and protected, a string "{name}" is a fixture's path (a file
# or folder below it with "{name}/sub"). The targets: a data set, another command's outputs, the command's own
# input, a file of another kind; every output option is tried with --overwrite where it has one (the strongest).
T = "{train}"
CASES: list[tuple[str, list[str], str, list[str]]] = [
    # train --out / --init / --arch
    ("train --out: dataset", ["train", *TINY, "--out", "{dataset}", "--overwrite"], "data set", ["{dataset}"]),
    ("train --out: search", ["train", *TINY, "--out", "{search}", "--overwrite"], "ST-NAS search", ["{search}"]),
    ("train --out: export", ["train", *TINY, "--out", "{export}", "--overwrite"], "ONNX export", ["{export}"]),
    ("train --out: own-init", ["train", *TINY, "--out", T, "--init", T + "/checkpoints/last.pt", "--overwrite"],
     "--init", [T]),
    ("train --out: file", ["train", *TINY, "--out", "{stats}", "--overwrite"], "is a file", ["{stats}"]),
    ("train --out: inside-run", ["train", *TINY, "--out", T + "/checkpoints", "--overwrite"], "training run", [T]),
    ("train --init: other-kind", ["train", *TINY, "--init", "{stats}", "--out", "{tmp}/r"], "stats.json", ["{stats}"]),
    ("train --init: dataset", ["train", *TINY, "--init", "{dataset}", "--out", "{tmp}/r"], "--init", ["{dataset}"]),
    ("train --arch: other-kind", ["train", *TINY, "--arch", "{ckpt}", "--out", "{tmp}/r"], "best.pt", [T]),
    ("train --root: run", ["train", *TINY, "--format", "folder", "--root", T, "--out", "{tmp}/r"], "run", [T]),
    # eval CHECKPOINT --out
    ("eval --root: run", ["eval", "{ckpt}", "--format", "folder", "--root", T, "--out", "{tmp}/e"], "run", [T]),
    ("eval --out: dataset", ["eval", "{ckpt}", "--out", "{dataset}", "--overwrite"], "data set", ["{dataset}"]),
    ("eval --out: run", ["eval", "{ckpt}", "--out", T, "--overwrite"], "holds a training run", [T]),
    ("eval --out: own-input", ["eval", "{ckpt}", "--out", T + "/checkpoints", "--overwrite"], "training run", [T]),
    ("eval --out: file", ["eval", "{ckpt}", "--out", "{stats}", "--overwrite"], "is a file", ["{stats}"]),
    ("eval CHECKPOINT: other-kind", ["eval", "{stats}", "--out", "{tmp}/e"], "stats.json", ["{stats}"]),
    # search stnas --out / --latency-table
    ("search stnas --root: export", ["search", "stnas", *TINY, "--format", "folder", "--root", "{export}",
                                     "--out", "{tmp}/s"], "export", ["{export}"]),
    ("search stnas --out: dataset", ["search", "stnas", *TINY, "--out", "{dataset}", "--overwrite"], "data set",
     ["{dataset}"]),
    ("search stnas --out: run", ["search", "stnas", *TINY, "--out", T, "--overwrite"], "holds a training run", [T]),
    ("search stnas --out: own-table", ["search", "stnas", *TINY, "--out", "{search}", "--latency-table",
                             "{search}/latency_table.json", "--overwrite"], "--latency-table", ["{search}"]),
    ("search stnas --out: file", ["search", "stnas", *TINY, "--out", "{stats}", "--overwrite"], "is a file",
     ["{stats}"]),
    ("search stnas --latency-table: other-kind", ["search", "stnas", *TINY, "--latency-table", "{stats}", "--out",
                                                  "{tmp}/s"], "stats.json", ["{stats}"]),
    # search cells --out / --static
    ("search cells --root: search", ["search", "cells", *TINY, "--format", "folder", "--root", "{search}",
                                     "--out", "{tmp}/c"], "search", ["{search}"]),
    ("search cells --out: dataset", ["search", "cells", *TINY, "--out", "{dataset}", "--overwrite"], "data set",
     ["{dataset}"]),
    ("search cells --out: run", ["search", "cells", *TINY, "--out", T, "--overwrite"], "holds a training run", [T]),
    ("search cells --out: file", ["search", "cells", *TINY, "--out", "{stats}", "--overwrite"], "is a file",
     ["{stats}"]),
    ("search cells --static: other-kind", ["search", "cells", *TINY, "--static", "{stats}", "--out", "{tmp}/c"],
     "stats.json", ["{stats}"]),
    # demo --out
    ("demo --out: dataset", ["demo", "--out", "{dataset}", "--overwrite"], "data set", ["{dataset}"]),
    ("demo --out: run", ["demo", "--out", T, "--overwrite"], "holds a training run", [T]),
    ("demo --out: file", ["demo", "--out", "{stats}", "--overwrite"], "is a file", ["{stats}"]),
    # export CHECKPOINT --out
    ("export --out: dataset", ["export", "{ckpt}", "--out", "{dataset}", "--overwrite"], "data set", ["{dataset}"]),
    ("export --out: run", ["export", "{ckpt}", "--out", T, "--overwrite"], "holds a training run", [T]),
    ("export --out: own-input", ["export", "{ckpt}", "--out", T + "/checkpoints", "--overwrite"], "training run",
     [T]),
    ("export --out: file", ["export", "{ckpt}", "--out", "{stats}", "--overwrite"], "is a file", ["{stats}"]),
    ("export CHECKPOINT: other-kind", ["export", "{stats}", "--out", "{tmp}/x"], "stats.json", ["{stats}"]),
    # predict INPUT --out / --checkpoint / --onnx
    ("predict --out: dataset", ["predict", "{video}", "--checkpoint", "{ckpt}", "--out", "{dataset}/clipA",
                             "--overwrite", "-q"], "data set", ["{dataset}"]),
    ("predict --out: export", ["predict", "{video}", "--checkpoint", "{ckpt}", "--out", "{export}", "--overwrite",
                            "-q"], "holds an ONNX export", ["{export}"]),
    ("predict --out: own-onnx", ["predict", "{video}", "--runtime", "onnxruntime", "--onnx", "{export}", "--out",
                              "{export}", "--overwrite", "-q"], "ONNX export", ["{export}"]),
    ("predict --out: file", ["predict", "{video}", "--checkpoint", "{ckpt}", "--out", "{stats}", "--overwrite", "-q"],
     "is a file", ["{stats}"]),
    ("predict --onnx: dataset", ["predict", "{video}", "--runtime", "onnxruntime", "--checkpoint", "{ckpt}", "--onnx",
                              "{dataset}", "--out", "{tmp}/p", "-q"], "--onnx", ["{dataset}"]),
    ("predict --onnx: run", ["predict", "{video}", "--runtime", "onnxruntime", "--onnx", T, "--out", "{tmp}/p", "-q"],
     "run", [T]),
    ("predict INPUT: other-kind", ["predict", "{ckpt}", "--checkpoint", "{ckpt}", "--out", "{tmp}/p", "-q"],
     "best.pt", [T]),
    ("predict --checkpoint: other-kind", ["predict", "{video}", "--checkpoint", "{stats}", "--out", "{tmp}/p", "-q"],
     "stats.json", ["{stats}"]),
    # bench --json / --checkpoint / --arch
    ("bench --json: dataset", ["bench", "--row", "swin_t", "--json", "{dataset}/splits.yaml", "--overwrite"],
     "data set", ["{dataset}"]),
    ("bench --json: run", ["bench", "--row", "swin_t", "--json", T + "/metrics.jsonl", "--overwrite"], "training run",
     [T]),
    ("bench --json: own-input", ["bench", "--checkpoint", "{ckpt}", "--json", "{ckpt}", "--overwrite"],
     "training run", [T]),
    ("bench --json: other-kind", ["bench", "--row", "swin_t", "--json", "{stats}", "--overwrite"],
     "not a benchmark table", ["{stats}"]),
    ("bench --checkpoint: other-kind", ["bench", "--checkpoint", "{stats}", "--frames", "1", "-q"], "stats.json",
     ["{stats}"]),
    ("bench --arch: other-kind", ["bench", "--arch", "{ckpt}", "--frames", "1", "-q"], "best.pt", [T]),
    # latency --out
    ("latency --out: dataset", ["latency", "--encoder", "swin_test", "--out", "{dataset}/classes.yaml", "--overwrite",
                             "-q"], "data set", ["{dataset}"]),
    ("latency --out: search", ["latency", "--encoder", "swin_test", "--out", "{search}/latency_table.json",
                            "--overwrite", "-q"], "ST-NAS search", ["{search}"]),
    ("latency --out: other-kind", ["latency", "--encoder", "swin_test", "--out", "{stats}", "--overwrite", "-q"],
     "not a latency table", ["{stats}"]),
    ("latency --out: dir", ["latency", "--encoder", "swin_test", "--out", "{tmp}", "--overwrite", "-q"],
     "is a directory", []),
    # data stats --json / --root
    ("data stats --json: in-dataset", ["data", "stats", "--format", "folder", "--root", "{dataset}", "--json",
                               "{dataset}/clipA/new.json"], "data set", ["{dataset}"]),
    ("data stats --json: run", ["data", "stats", "--format", "folder", "--root", "{dataset}", "--json",
                        T + "/train_summary.json", "--overwrite"], "training run", [T]),
    ("data stats --json: other-kind", ["data", "stats", "--format", "folder", "--root", "{dataset}", "--json",
                               "{preview}", "--overwrite"], "not a data statistics file", ["{preview}"]),
    ("data stats --json: without-overwrite", ["data", "stats", "--format", "folder", "--root", "{dataset}", "--json",
                                      "{stats}"], "--overwrite", ["{stats}"]),
    ("data stats --root: run", ["data", "stats", "--format", "folder", "--root", T], "run", [T]),
    # data preview --out / --root
    ("data preview --out: run", ["data", "preview", "--format", "synthetic", "--out", T + "/curves.png", "--overwrite"],
     "training run", [T]),
    ("data preview --out: other-kind", ["data", "preview", "--format", "synthetic", "--out", "{stats}", "--overwrite"],
     "not a preview grid", ["{stats}"]),
    ("data preview --out: own-input", ["data", "preview", "--format", "folder", "--root", "{dataset}", "--out",
                               "{dataset}/preview.png"], "data set", ["{dataset}"]),
    ("data preview --root: export", ["data", "preview", "--format", "folder", "--root", "{export}", "--out",
                             "{tmp}/g.png"], "export", ["{export}"]),
]


@pytest.fixture(scope="module")
def targets(run: Path, ckpt: Path, search: Path, export: Path, dataset: Path, stats_json: Path, preview_png: Path,
            video: Path) -> dict[str, Path]:
    return {"train": run, "ckpt": ckpt, "search": search, "export": export, "dataset": dataset,
            "stats": stats_json, "preview": preview_png, "video": video}


@pytest.mark.parametrize(("args", "culprit", "protect"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_path_option(args: list[str], culprit: str, protect: list[str], targets: dict[str, Path],
                           tmp_path: Path) -> None:
    names = {**targets, "tmp": tmp_path}

    def fill(a: str) -> str:
        return a.format(**{k: str(v) for k, v in names.items()}) if "{" in a else a

    refused([fill(a) for a in args], culprit, *(Path(fill(p)) for p in protect))


def test_every_path_option_is_covered() -> None:
    """Each option and argument of each command that takes a path (a ``Path`` type, or an ``--out`` / ``--root``
    string) has a case here: a new path option needs its own. ``--config`` (a preset name or a YAML file, only read)
    is left to the config tests."""
    import click
    import typer.main

    from vidnas.cli.main import app

    tried = {c[0].split(":")[0] for c in CASES}
    missing = []

    def walk(cmd: click.Command, name: str) -> None:
        if isinstance(cmd, click.Group):
            for sub, c in cmd.commands.items():
                walk(c, f"{name} {sub}".strip())
            return
        for p in cmd.params:
            if isinstance(p.type, click.Path) or p.name in ("out", "root"):
                opt = next((o for o in p.opts if o.startswith("--")), None) or p.name.upper()
                if f"{name} {opt}" not in tried:
                    missing.append(f"{name} {opt}")

    walk(typer.main.get_command(app), "")
    assert not missing, f"path options without a case: {missing}"


# ----------------------------------------------------------------------------------------- what still works


def test_own_earlier_file_outputs_are_replaced_with_overwrite(stats_json: Path, preview_png: Path,
                                                              dataset: Path, tmp_path: Path) -> None:
    stats, grid = shutil.copy(stats_json, tmp_path), shutil.copy(preview_png, tmp_path)
    code, out = invoke(["data", "stats", "--format", "folder", "--root", dataset, "--json", stats, "--overwrite"])
    assert code == 0, out
    code, out = invoke(["data", "preview", "--format", "folder", "--root", dataset, "--out", grid, "--n", "1",
                        "--tile-width", "16", "--overwrite"])
    assert code == 0, out


def test_an_export_beside_its_checkpoint_is_allowed(run: Path, ckpt: Path, copy_of: Callable[[Path], Path]) -> None:
    r = copy_of(run)  # README: vidnas export runs/cv/checkpoints/best.pt --out runs/cv/onnx
    before = tree_hash(r)
    code, out = invoke(["export", r / "checkpoints" / "best.pt", "--out", r / "onnx", "--parity-frames", "0",
                        "--no-incremental"])
    assert code == 0, out
    shutil.rmtree(r / "onnx")
    assert tree_hash(r) == before  # the run itself is untouched


def test_run_directories_record_their_kind(run: Path, search: Path, export: Path) -> None:
    assert [run_kind_of(p) for p in (run, search, export)] == ["train", "stnas", "export"]
    (search / RUN_MANIFEST).rename(search / "kept")  # a search written before manifests: its files say what it is
    try:
        assert run_kind_of(search) == "stnas"  # although a search writes metrics.jsonl, a training run's marker
    finally:
        (search / "kept").rename(search / RUN_MANIFEST)


def test_an_arch2_space_sweep_interrupted_before_any_stage_finished_can_resume(tmp_path: Path) -> None:
    """Over the arch2 space with the arch2 reference a sweep has no baseline/: its reference's (or cheapest point's)
    training in progress is what a --resume continues, not a run that "stopped before its first checkpoint"."""
    from vidnas.rundir import RUN_KINDS

    for kind in ("sweep", "demo"):
        for started in ("ref_arch2/train", "cheapest/train"):
            run = tmp_path / kind / started.split("/")[0]
            (run / started).mkdir(parents=True)
            assert RUN_KINDS[kind].can_resume(run)
    assert not RUN_KINDS["sweep"].can_resume(tmp_path / "empty")
