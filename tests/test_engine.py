"""Training engine on tiny real models and the synthetic data: loss, exact resume, DDP with two real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidnas.checkpoint import CheckpointError, load_checkpoint
from vidnas.config import load_config
from vidnas.data import ClipDataset, open_source
from vidnas.engine.losses import segmentation_loss
from vidnas.engine.train import train, weights_fingerprint
from vidnas.metrics import ConfusionMatrix

REPO = Path(__file__).resolve().parents[1]
TINY = ["train.epochs=2", "data.synthetic_videos=3", "data.synthetic_frames=6", "train.batch_size=2",
        "train.max_steps_per_epoch=3"]


def tiny_cfg(*extra: str):
    return load_config(REPO / "configs" / "tiny.yaml", [*TINY, *extra])


def test_loss_ignores_unsupervised_pixels_and_never_nan():
    logits = torch.randn(1, 2, 3, 4, 4, requires_grad=True)
    masks = torch.full((1, 2, 4, 4), 255)
    loss = segmentation_loss(logits, masks, 255)
    assert loss.item() == 0.0
    loss.backward()  # a graph exists even with nothing supervised
    masks[0, 1, 0, 0] = 2
    expected = torch.nn.functional.cross_entropy(logits[0, 1, :, 0, 0][None], torch.tensor([2]))
    assert torch.allclose(segmentation_loss(logits, masks, 255), expected)


# Data built to be learnable and a model that learns it in a few dozen steps: clean synthetic frames (a pixel's colour
# gives its class), the per-frame arch2 decoder, a large learning rate; 3 epochs of 8 steps.
LEARNABLE = ["data.window=1", "data.synthetic_videos=6", "data.synthetic_frames=8", "data.synthetic_corruption=0",
             "model.encoder=mobilenetv2_test", "model.decoder=arch2", "train.epochs=3", "train.batch_size=4",
             "train.max_steps_per_epoch=8", "train.lr=1e-2"]


def majority_class_miou(cfg) -> float:
    """mIoU on the val clips of the trivial predictor: the train split's most frequent class at every pixel."""
    source = open_source(cfg.data)
    counts = torch.zeros(source.num_classes, dtype=torch.int64)
    for item in ClipDataset(source, "train", cfg.data, train=False):
        m = item["masks"][item["target"]]
        counts += torch.bincount(m[m != source.ignore_index].flatten(), minlength=source.num_classes)
    cm = ConfusionMatrix(source.num_classes, source.ignore_index)
    for item in ClipDataset(source, "val", cfg.data, train=False):
        m = item["masks"][item["target"]]
        cm.update(torch.full_like(m, int(counts.argmax())), m)
    return cm.compute()["miou"]


def test_train_writes_run_dir_and_learns(tmp_path):
    cfg = tiny_cfg(*LEARNABLE)
    res = train(cfg, tmp_path, show_progress=False)
    assert (tmp_path / "checkpoints" / "last.pt").exists()
    assert (tmp_path / "checkpoints" / "best.pt").exists()
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in recs} >= {"train", "epoch"}
    assert len(res.history) == 3 and all("val_miou" in h for h in res.history)
    assert list((tmp_path / "tb").iterdir())
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # it learns: the training loss falls epoch after epoch, and the model beats the majority-class predictor (which
    # every untrained or stuck model scores at best here) by a wide margin; with train.lr=0 both fail
    losses = [h["train_loss"] for h in res.history]
    assert losses[0] > losses[1] > losses[2] and losses[2] < 0.8 * losses[0], losses
    trivial = majority_class_miou(cfg)
    assert 0.0 < trivial < 0.3
    assert res.best_miou > 1.5 * trivial and res.history[-1]["val_miou"] > 1.5 * trivial, (res.history, trivial)


def test_resume_gives_same_weights_as_uninterrupted(tmp_path):
    full = train(tiny_cfg(), tmp_path / "full", show_progress=False)
    # "interrupted" run: stop after one epoch, then resume to two
    train(tiny_cfg("train.epochs=1"), tmp_path / "cut", show_progress=False)
    resumed = train(tiny_cfg(), tmp_path / "cut", resume=True, show_progress=False)
    a = load_checkpoint(full.last_checkpoint)["model"]
    b = load_checkpoint(resumed.last_checkpoint)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["epoch"] for h in resumed.history] == [0, 1]


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="last.pt"):
        train(tiny_cfg(), tmp_path, resume=True, show_progress=False)


def test_corrupt_checkpoint_named_in_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(bad)


@pytest.mark.slow
def test_ddp_two_cpu_processes_end_with_identical_weights(tmp_path):
    """Two real torchrun processes (gloo); both ranks must hold bit-identical weights at the end."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "vidnas.cli.main", "train", "--config", str(REPO / "configs" / "tiny.yaml"), "--out", str(out),
           "--quiet", *sum((["--set", s] for s in TINY), []), "--set", "train.epochs=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = sorted((out / "ranks").glob("rank*.json"))
    assert [p.name for p in ranks] == ["rank0.json", "rank1.json"]
    shas = {json.loads(p.read_text())["weights_sha256"] for p in ranks}
    assert len(shas) == 1
    ck = load_checkpoint(out / "checkpoints" / "last.pt")
    from vidnas.models import load_model

    model = load_model(out / "checkpoints" / "last.pt").model
    assert weights_fingerprint(model) in shas
    assert ck["epoch"] == 0



def test_train_without_validation_frames_says_so(tmp_path):
    """A validation split with no annotation: training runs, last.pt is written, the CLI says why there is no best."""
    from typer.testing import CliRunner

    from fixtures_data import make_folder
    from vidnas.cli.main import app

    root = make_folder(tmp_path / "data")  # its val video (clipB) has frames but no masks
    out = tmp_path / "run"
    sets = [x for t in ["data.height=64", "data.width=96", "train.epochs=1", "train.max_steps_per_epoch=1",
                        "data.window=2"] for x in ("--set", t)]
    res = CliRunner().invoke(app, ["train", "--config", str(REPO / "configs" / "tiny.yaml"), "--format", "folder",
                                   "--root", str(root), *sets, "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert "no annotated frames in validation split 'val'" in res.output
    assert (out / "checkpoints" / "last.pt").exists()
    assert not (out / "checkpoints" / "best.pt").exists()


def test_frozen_encoder_keeps_weights_and_bn_stats(tmp_path):
    from vidnas.models import build_model
    from vidnas.utils import seed_everything

    # a CNN encoder, so there are BatchNorm statistics to keep
    cfg = tiny_cfg("train.encoder_lr_scale=0", "train.epochs=1", "model.encoder=efficientnet_lite0_test")
    seed_everything(cfg.train.seed)  # the same initial weights as train()'s
    before = build_model(cfg, None, num_classes=cfg.data.synthetic_classes).state_dict()
    train(cfg, tmp_path, show_progress=False)
    after = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"]
    enc_keys = [k for k in after if k.startswith("encoder.")]
    dec_keys = [k for k in after if k.startswith("decoder.") and after[k].is_floating_point()]
    assert enc_keys and dec_keys
    assert any("running_mean" in k for k in enc_keys)
    for k in enc_keys:
        assert torch.equal(before[k], after[k]), f"frozen encoder changed: {k}"
    assert any(not torch.equal(before[k], after[k]) for k in dec_keys), "the decoder did not train"


def test_encoder_lr_scale_makes_its_own_group():
    from vidnas.engine.train import _set_lr, build_optimizer
    from vidnas.models import build_model

    cfg = tiny_cfg("train.encoder_lr_scale=0.1", "train.lr=0.01")
    model = build_model(cfg, None, num_classes=4)
    opt = build_optimizer(model, cfg)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.001])
    n_enc = sum(1 for _ in model.encoder.parameters())
    assert len(opt.param_groups[1]["params"]) == n_enc
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(1 for _ in model.parameters())
    _set_lr(opt, 0.5)  # the poly schedule keeps the ratio
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5, 0.05])
    with pytest.raises(ValueError, match="encoder_lr_scale"):
        train(tiny_cfg("train.encoder_lr_scale=-1"), "/nonexistent", show_progress=False)


def test_train_cli_model_shortcut_arch2(tmp_path):
    """`vidnas train --model arch2` trains the cell search's static network per frame (aux losses, poly + SGD)."""
    from typer.testing import CliRunner

    from vidnas.cli.main import app

    out = tmp_path / "arch2"
    sets = [x for t in [*TINY, "train.epochs=1", "train.max_steps_per_epoch=2", "model.encoder=mobilenetv2_test",
                        "train.optimizer=sgd", "train.schedule=poly", "train.lr=0.01"] for x in ("--set", t)]
    threads = torch.get_num_threads()
    try:
        res = CliRunner().invoke(app, ["train", "--config", str(REPO / "configs" / "tiny.yaml"), "--model", "arch2",
                                       *sets, "--threads", "1", "--out", str(out), "-q"])
    finally:
        torch.set_num_threads(threads)  # the CLI sets it process-wide
    assert res.exit_code == 0, res.output
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["config"]["model"]["decoder"] == "arch2" and state["config"]["data"]["window"] == 1
    assert any(k.startswith("decoder.aux") for k in state["model"]), "arch2 has auxiliary heads"
    assert json.loads((out / "train_summary.json").read_text())["torch_threads"] == 1
    res = CliRunner().invoke(app, ["train", "--model", "unet", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "valid values are sptcn, head, arch2" in res.output
