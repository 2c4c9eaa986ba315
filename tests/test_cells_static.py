"""The cell search on any per-frame static network vidnas builds (issue 27): a per-frame point of ``arch2_space`` (as
an ST-NAS search over it derives and ``vidnas train --arch`` trains) and arch2 on a shallower encoder run the search
end to end, their cell models load and export, the key frame is the static network's output, and a temporal
checkpoint is refused in one line before any work."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from vidnas.config import config_to_dict, load_config
from vidnas.engine.train import train
from vidnas.models import Arch, build_model, load_model
from vidnas.models.cells import CellError, CellGenotype, as_static_network, build_cell_model, static_network_error
from vidnas.models.decoders import ARCH2_OPS
from vidnas.models.static_segmenter import StaticSegmenter

TINY = [
    "data.height=32", "data.width=48", "data.synthetic_videos=3", "data.synthetic_frames=8",
    "model.encoder=mobilenetv2_test", "train.batch_size=4", "train.epochs=1", "train.max_steps_per_epoch=2",
    "cells.num_layers=2", "cells.cell_epochs=1", "cells.cell_batch_size=8", "cells.ops=conv1x1,sep3x3,skip",
    "cells.aggregations=sum,concat", "cells.latency_frames=2", "cells.latency_warmup=0",
]  # fmt: skip
SHALLOW = (1, 1, 1, 1)  # a searched depth rule's result: one block per stage (mobilenetv2_test has 1, 2, 2, 2)
# a per-frame encoding an ST-NAS search over arch2_space can derive: cheap laterals, no temporal op
SEARCHED = ("gconv1x1", "conv1x1", "gconv1x1", "conv1x1", "sep_block", "skip", "block", "sep3x3_s2")
TEMPORAL = ("temporal_k3", "conv1x1", "conv1x1", "conv1x1", "block", "block", "block", "conv3x3_s2")


def _space(ops: tuple[str, ...], depths: tuple[int, ...] | None, name: str) -> Arch:
    return Arch(encoder="mobilenetv2_test", depths=depths, decoder="arch2_space", decoder_ops=ops, window=1,
                name=name)


def _trained(tmp: Path, arch: Arch) -> Path:
    """``vidnas train --arch`` of ``arch`` for two steps (the search needs a checkpoint, not a good one)."""
    cfg = load_config(None, [*TINY, "model.decoder=arch2_space", "data.window=1"])
    res = train(cfg, tmp, arch=arch, show_progress=False)
    return Path(res.last_checkpoint)


@pytest.fixture(scope="module")
def searched_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _trained(tmp_path_factory.mktemp("searched"), _space(SEARCHED, SHALLOW, "searched"))


@pytest.fixture(scope="module")
def shallow_arch2_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _trained(tmp_path_factory.mktemp("shallow"), _space(ARCH2_OPS, SHALLOW, "arch2_shallow"))


def _cells_app() -> typer.Typer:
    from vidnas.cli.search_cells import cells_cmd

    app = typer.Typer()
    app.command()(cells_cmd)
    return app


def _search(static: Path, out: Path) -> Path:
    """``vidnas search cells --static`` at toy size: 2 candidates, the best trained end to end; its model.pt."""
    args = ["--static", str(static), "--out", str(out), "-n", "2", "--workers", "0", "--top-k", "1",
            "--final-cell-epochs", "1", "--final-epochs", "1", "--final-batch-size", "4", "--max-steps", "1", "-q"]
    result = CliRunner().invoke(_cells_app(), args + [a for item in TINY for a in ("--set", item)])
    assert result.exit_code == 0, result.output
    return out / "top" / "cell0" / "model.pt"


def _key_frame_equals_static(cell_ckpt: Path, static_ckpt: Path) -> None:
    """Frame 0 of the cell model is the static network's output with the cell model's static weights."""
    cell = load_model(cell_ckpt)
    static = load_model(static_ckpt).model  # the MultiScaleSegmenter `vidnas train` wrote
    state = {k[len("static."):]: v for k, v in cell.model.state_dict().items() if k.startswith("static.")}
    static.load_state_dict(state)  # the same keys: the frame decoder holds the space decoder's modules
    x = torch.randn(1, 3, 3, 32, 48)
    with torch.no_grad():
        ours, ref = cell.model(x), static(x[:, :1])
    assert ours.shape == (1, 3, 4, 32, 48)
    torch.testing.assert_close(ours[:, 0], ref[:, 0], rtol=1e-4, atol=1e-5)


def test_searched_per_frame_static_network_end_to_end(searched_ckpt: Path, tmp_path: Path) -> None:
    cell_ckpt = _search(searched_ckpt, tmp_path / "run")
    loaded = load_model(cell_ckpt)
    state = torch.load(cell_ckpt, weights_only=False)
    assert Arch.from_dict(state["static_arch"]).decoder_ops == SEARCHED and loaded.cfg.model.decoder == "arch2_space"
    assert loaded.model.static.encoder.depths == SHALLOW and loaded.cfg.model.encoder_depths == SHALLOW
    _key_frame_equals_static(cell_ckpt, searched_ckpt)
    # `vidnas export`: key.onnx runs the whole static network, cell.onnx the truncated encoder and the cell
    from vidnas.cli.main import app as vidnas_app

    res = CliRunner().invoke(vidnas_app, ["export", str(cell_ckpt), "--out", str(tmp_path / "onnx"),
                                          "--parity-frames", "4"])
    assert res.exit_code == 0, res.output
    assert "OK" in res.output and (tmp_path / "onnx" / "cell.onnx").exists()


def test_shallow_arch2_static_network_end_to_end(shallow_arch2_ckpt: Path, tmp_path: Path) -> None:
    cell_ckpt = _search(shallow_arch2_ckpt, tmp_path / "run")
    loaded = load_model(cell_ckpt)
    assert loaded.model.static.encoder.depths == SHALLOW
    _key_frame_equals_static(cell_ckpt, shallow_arch2_ckpt)


def test_what_a_static_network_is() -> None:
    assert static_network_error(_space(SEARCHED, SHALLOW, "s")) is None
    assert static_network_error(dataclasses.replace(_space(SEARCHED, None, "s"), decoder="arch2",
                                                    decoder_ops=None)) is None
    assert "temporal_k3" in static_network_error(_space(TEMPORAL, None, "t"))
    assert "'sptcn'" in static_network_error(Arch(encoder="mobilenetv2_test", decoder="sptcn"))
    cfg = load_config(None, TINY)
    with pytest.raises(CellError, match="temporal_k3"):
        build_cell_model(cfg, CellGenotype.from_tokens([1, 2, 0, 0, 0, 0, 5, 1, 1, 0]), num_classes=4,
                         static_arch=_space(TEMPORAL, None, "t"))
    with pytest.raises(CellError, match="VideoSegmenter"):
        as_static_network(build_model(cfg, Arch(encoder="mobilenetv2_test", decoder="head", window=1),
                                      num_classes=4))
    net = as_static_network(build_model(cfg, _space(ARCH2_OPS, None, "a"), num_classes=4).eval())
    assert isinstance(net, StaticSegmenter) and not net.training and net.channels == 64


@pytest.mark.parametrize("ops", [TEMPORAL, None])
def test_cli_refuses_a_temporal_or_non_arch2_checkpoint_before_work(ops: tuple[str, ...] | None,
                                                                     tmp_path: Path) -> None:
    cfg = load_config(None, TINY)
    arch = _space(ops, None, "t") if ops else Arch(encoder="mobilenetv2_test", decoder="sptcn", window=1)
    model = build_model(cfg, arch, num_classes=4)
    ckpt = tmp_path / "bad.pt"
    torch.save({"model": model.state_dict(), "config": config_to_dict(cfg), "num_classes": 4,
                "arch": arch.to_dict()}, ckpt)
    out = tmp_path / "run"
    res = CliRunner().invoke(_cells_app(), ["--static", str(ckpt), "--out", str(out), "-n", "2", "-q"])
    assert res.exit_code == 2, res.output
    assert str(ckpt) in res.output and ("temporal_k3" if ops else "'sptcn'") in res.output
    assert not out.exists()  # refused before the run directory was made


def test_cli_refuses_a_swin_static_network_at_another_size(tmp_path: Path) -> None:
    """arch2 on Swin is a static network, at its training size only: timm's Swin fixes its windows from it."""
    cfg = load_config(None, [*TINY, "model.encoder=swin_test", "model.decoder=arch2", "data.window=1",
                             "data.height=64", "data.width=96"])
    ckpt = tmp_path / "swin.pt"
    torch.save({"model": build_model(cfg, num_classes=4).state_dict(), "config": config_to_dict(cfg),
                "num_classes": 4}, ckpt)
    out = tmp_path / "run"
    res = CliRunner().invoke(_cells_app(), ["--static", str(ckpt), "--out", str(out), "-n", "2", "-q",
                                            *(a for item in TINY for a in ("--set", item))])
    assert res.exit_code == 2, res.output
    assert str(ckpt) in res.output and "training size 64x96" in res.output and "top-k training 32x48" in res.output
    assert not out.exists()
