"""The selection split (``data.selection_videos``): whole train videos held out for decisions, the val split read
only at the end; on the synthetic data and on real CamVid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vidnas.checkpoint import load_checkpoint
from vidnas.config import load_config
from vidnas.data import DataError, build_datasets, open_source, selection_datasets
from vidnas.engine.train import train

REPO = Path(__file__).resolve().parents[1]
TINY = ["train.epochs=2", "data.synthetic_videos=3", "data.synthetic_frames=6", "train.batch_size=2",
        "train.max_steps_per_epoch=3"]


def tiny_cfg(*extra: str):
    return load_config(REPO / "configs" / "tiny.yaml", [*TINY, *extra])


def frames_of(ds) -> set[tuple[str, int]]:
    return {(f.video, int(f.index)) for i in range(len(ds)) for f in ds.window_frames(i)}


def test_selection_videos_leave_training_and_pick_the_best_epoch(tmp_path):
    cfg = tiny_cfg("data.synthetic_videos=4")
    source, full_train, _ = build_datasets(cfg)
    names = [v.name for v in full_train.videos]
    cfg = tiny_cfg("data.synthetic_videos=4", f"data.selection_videos=[{names[1]}]", "train.epochs=3")
    train_ds, select_ds = selection_datasets(cfg, source)
    assert [v.name for v in select_ds.videos] == [names[1]]
    assert names[1] not in {v.name for v in train_ds.videos} and len(train_ds.videos) == len(names) - 1
    assert not frames_of(train_ds) & frames_of(select_ds) and len(train_ds) + len(select_ds) == len(full_train)

    res = train(cfg, tmp_path, show_progress=False)
    # every epoch is scored on the selection videos only, and best.pt is the epoch of the highest selection mIoU
    assert all("select_miou" in h and "val_miou" not in h for h in res.history)
    sel = [h["select_miou"] for h in res.history]
    assert res.best_epoch == sel.index(max(sel)) and res.best_miou == max(sel)
    assert load_checkpoint(res.best_checkpoint)["epoch"] == res.best_epoch
    # the val split is read once, at the end, on best.pt and on the last weights, and recorded apart
    rep = res.reported
    assert rep["split"] == "val" and rep["best"]["epoch"] == res.best_epoch and rep["last"]["epoch"] == 2
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["decided_on"]["videos"] == [names[1]] and summary["reported"] == rep
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    report = [r for r in recs if r["kind"] == "report"]
    assert len(report) == 1 and report[0]["best_val_miou"] == rep["best"]["val_miou"]
    assert not any("val_miou" in r for r in recs if r["kind"] == "epoch")


def test_bad_selection_is_refused_in_one_line(tmp_path):
    source = open_source(tiny_cfg().data)
    names = [v.name for v in source.videos("train")]
    with pytest.raises(DataError, match=r"data.selection_videos: nope not a video of split 'train'"):
        selection_datasets(tiny_cfg("data.selection_videos=[nope]"), source)
    with pytest.raises(DataError, match="no training video is left"):
        selection_datasets(tiny_cfg(f"data.selection_videos=[{','.join(names)}]"), source)
    with pytest.raises(DataError, match="nope"):  # train() refuses it before building any model
        train(tiny_cfg("data.selection_videos=[nope]"), tmp_path, show_progress=False)


def test_camvid_selection_0001TP_shares_no_frame_with_val_or_train(camvid_root):
    cfg = load_config(REPO / "configs" / "tiny.yaml", ["data.format=camvid", f"data.root={camvid_root}",
                                                       "data.window=3", "data.selection_videos=[0001TP]"])
    source, full_train, val_ds = build_datasets(cfg)
    train_ds, select_ds = selection_datasets(cfg, source)
    assert {v.name for v in select_ds.videos} == {"0001TP"} and len(select_ds) > 0
    assert "0001TP" not in {v.name for v in train_ds.videos}
    assert "0001TP" in {v.name for v in full_train.videos}
    sel, rep, tr = frames_of(select_ds), frames_of(val_ds), frames_of(train_ds)
    assert sel and rep and tr
    assert not sel & rep, "the selection split and the reported split share frames"
    assert not sel & tr, "training still holds 0001TP frames"
    # the same by file (every image of every window, and the annotated masks) and by recorded frame number
    for key in (lambda f: f.image, lambda f: f.mask, lambda f: (f.video, f.frame_number)):
        files = {ds_name: {key(f) for i in range(len(ds)) for f in ds.window_frames(i)} - {None}
                 for ds_name, ds in (("select", select_ds), ("val", val_ds), ("train", train_ds))}
        assert files["select"] and not files["select"] & (files["val"] | files["train"])
    assert len(train_ds) + len(select_ds) == len(full_train)


def test_train_cli_says_which_split_gave_which_number(tmp_path):
    from typer.testing import CliRunner

    from vidnas.cli.main import app

    names = [v.name for v in open_source(tiny_cfg().data).videos("train")]
    sets = [x for t in [*TINY, "train.epochs=1", "train.max_steps_per_epoch=1"] for x in ("--set", t)]
    base = ["train", "--config", str(REPO / "configs" / "tiny.yaml"), *sets, "--threads", "1", "-q"]
    runner = CliRunner()
    threads = torch.get_num_threads()
    try:
        bad = runner.invoke(app, [*base, "--set", "data.selection_videos=[nope]", "--out", str(tmp_path / "bad")])
        ok = runner.invoke(app, [*base, "--set", f"data.selection_videos=[{names[0]}]", "--out", str(tmp_path / "ok")])
    finally:
        torch.set_num_threads(threads)  # the CLI sets it process-wide
    assert bad.exit_code == 2 and "nope not a video of split 'train'" in bad.output
    assert not (tmp_path / "bad").exists(), "a refused selection must not create the run directory"
    assert ok.exit_code == 0, ok.output
    assert "best selection mIoU" in ok.output and f"({names[0]}) at epoch 1" in ok.output
    assert "reported split 'val', best epoch 1: mIoU" in ok.output
    assert "reported split 'val', last epoch 1: mIoU" in ok.output
    # `vidnas eval` of that best.pt names the split it scored and the selection videos that chose the checkpoint
    try:
        ev = runner.invoke(app, ["eval", str(tmp_path / "ok" / "checkpoints" / "best.pt"), "--no-stream",
                                 "--threads", "1", "-q", "--out", str(tmp_path / "ev")])
    finally:
        torch.set_num_threads(threads)
    assert ev.exit_code == 0, ev.output
    assert f"scored on split 'val'; the checkpoint was chosen on the selection split ({names[0]} of 'train')" \
        in ev.output
    written = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert written["split"] == "val" and written["chosen_on"] == {"split": "train", "videos": [names[0]], "epoch": 0}
    assert abs(written["clips"]["miou"] - json.loads((tmp_path / "ok" / "train_summary.json").read_text())
               ["reported"]["best"]["val_miou"]) < 1e-6


def test_searches_refuse_a_selection_split_they_do_not_use_yet(tmp_path):
    from vidnas.search.cells.search import CellSearch
    from vidnas.search.stnas.runner import check_stnas_config, refuse_selection_split

    cfg = tiny_cfg("data.selection_videos=[synth000]")
    check_stnas_config(cfg)  # one search decides on it (test_search_decides_depths_on_the_selection_split)
    with pytest.raises(ValueError, match="the demo does not use a selection split yet"):
        refuse_selection_split(cfg, "the demo")  # the sweep does (test_stnas_random's sweep)
    with pytest.raises(ValueError, match="the cell search does not use it"):
        CellSearch(cfg, tmp_path, tmp_path / "static.pt")
    check_stnas_config(tiny_cfg())  # the default (no selection split) passes


def test_resume_with_a_selection_split_matches_the_uninterrupted_run(tmp_path):
    sel = "data.selection_videos=[synth001]"
    full = train(tiny_cfg(sel), tmp_path / "full", show_progress=False)
    train(tiny_cfg(sel, "train.epochs=1"), tmp_path / "cut", show_progress=False)
    resumed = train(tiny_cfg(sel), tmp_path / "cut", resume=True, show_progress=False)
    a, b = load_checkpoint(full.last_checkpoint)["model"], load_checkpoint(resumed.last_checkpoint)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (resumed.best_epoch, resumed.best_miou) == (full.best_epoch, full.best_miou)
    assert resumed.reported == full.reported
    recs = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["kind"] == "report"] == [2], "the 1-epoch run's report is dropped"


def test_search_decides_depths_on_the_selection_split(tmp_path):
    """One ST-NAS search measures the depth rule's truncated losses on the selection videos, held out of its training
    data, and arch.json says so; without a selection split it names the validation split."""
    from vidnas.models import Arch
    from vidnas.search.stnas import search_stnas

    sets = ["stnas.encoder_epochs=1", "stnas.depth_rule=truncated", "stnas.depth_val_batches=1",
            "stnas.bn_calib_batches=1", "train.max_steps_per_epoch=2", "data.synthetic_videos=4"]
    decided = {}
    for name, extra in (("sel", ["data.selection_videos=[synth001]"]), ("val", [])):
        cfg = tiny_cfg(*sets, *extra)
        res = search_stnas(cfg, tmp_path / name, show_progress=False, skip_decoder=True)
        decided[name] = Arch.load(res.arch_path).extra["search"]["depth"]["decided_on"]
    assert decided == {"sel": {"split": "train", "videos": ["synth001"]}, "val": {"split": "val"}}
    source = open_source(tiny_cfg(*sets).data)
    train_ds, select_ds = selection_datasets(tiny_cfg(*sets, "data.selection_videos=[synth001]"), source)
    assert {w.video for i in range(len(select_ds)) for w in select_ds.window_frames(i)} == {"synth001"}
    assert "synth001" not in {w.video for i in range(len(train_ds)) for w in train_ds.window_frames(i)}
