"""Latency tables priced in the deployment runtime (`vidnas latency --runtime/--precision`), on the tiny config:
ONNX graphs per module in onnxruntime (fp32, INT8) and OpenVINO, the refusals, and a search priced by an INT8 table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vidnas.cli.main import app
from vidnas.export import DeployError
from vidnas.export.graph_timing import GraphTimer
from vidnas.export.ort_streamers import openvino_available
from vidnas.models import arch_from_config, build_encoder
from vidnas.search.latency import LatencyTable, complete_model_parts, measure_latency_table
from vidnas.search.stnas import read_search_record

REPO = Path(__file__).resolve().parents[1]
TINY_YAML = str(REPO / "configs" / "tiny.yaml")  # swin_test at 64x96, SP-TCN width 8, dilations 1,2
FAST = ["--iters", "2", "--warmup", "1", "--repeats", "1", "--threads", "1", "--quiet"]
runner = CliRunner()


def _latency(out: Path, *extra: str) -> tuple[int, str]:
    res = runner.invoke(app, ["latency", "--config", TINY_YAML, "--decoder", *FAST, "--out", str(out), *extra])
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, Path]:
    """The tiny model's table (encoder blocks and parts, SP-TCN decoder parts) in torch, ORT fp32, ORT int8 and ORT
    int8 with the decoder in fp32."""
    d = tmp_path_factory.mktemp("lat")
    out = {}
    for name, args in {"torch": (), "ort_fp32": ("--runtime", "onnxruntime"),
                       "ort_int8": ("--runtime", "onnxruntime", "--precision", "int8"),
                       "ort_int8_dec32": ("--runtime", "onnxruntime", "--precision", "int8", "--fp32-decoder")}.items():
        code, output = _latency(d / f"{name}.json", *args)
        assert code == 0, output
        out[name] = d / f"{name}.json"
    return out


@pytest.mark.parametrize("name,runtime,precision", [("ort_fp32", "onnxruntime", "fp32"),
                                                    ("ort_int8", "onnxruntime", "int8"),
                                                    ("ort_int8_dec32", "onnxruntime", "int8")])
def test_runtime_tables_have_every_key_of_the_torch_table(tables, name: str, runtime: str, precision: str) -> None:
    ref = json.loads(tables["torch"].read_text())
    got = json.loads(tables[name].read_text())
    for field in ("blocks", "downsample", "parts"):
        assert sorted(got[field]) == sorted(ref[field]) and got[field], field
        assert all(v > 0 for v in got[field].values()), field
    assert len(got["parts"]) > 10  # stem, outputs, both fixed decoders, 7 ops x 2 dilations, upsampling
    assert (got["meta"]["runtime"], got["meta"]["precision"]) == (runtime, precision)
    assert "onnxruntime" in got["meta"]["runtime_version"]
    assert got["device"]["cpu"] == ref["device"]["cpu"]
    assert (ref["meta"]["runtime"], ref["meta"]["precision"]) == ("torch", "fp32")
    assert LatencyTable.load(tables[name]).pricing == (runtime, precision)
    assert LatencyTable.load(tables[name]).decoder_precision == ("fp32" if name.endswith("dec32") else precision)


def test_fp32_decoder_is_recorded(tables) -> None:
    """``--fp32-decoder`` (the decoder as ``vidnas export --precision int8`` deploys a window model) is in the table's
    record; a plain INT8 table has no such key (its decoder precision is its precision)."""
    t = json.loads(tables["ort_int8_dec32"].read_text())
    assert t["meta"]["decoder_precision"] == "fp32" and t["meta"]["precision"] == "int8"
    assert "decoder_precision" not in json.loads(tables["ort_int8"].read_text())["meta"]


def test_a_table_without_runtime_reads_as_torch_fp32(tables) -> None:
    data = json.loads(tables["torch"].read_text())
    del data["meta"]["runtime"], data["meta"]["precision"]
    assert LatencyTable.from_dict(data).pricing == ("torch", "fp32")


@pytest.mark.skipif(not openvino_available(), reason="openvino not installed (extra vidnas[openvino])")
def test_openvino_fp32_blocks() -> None:
    enc = build_encoder("swin_test", img_size=(64, 96))
    with GraphTimer("openvino", "fp32", threads=1) as timer:
        table = measure_latency_table(enc, (64, 96), warmup=1, iters=2, repeats=1, timer=timer)
    assert len(table.blocks) == 8 and all(v > 0 for v in table.blocks.values())
    assert table.pricing == ("openvino", "fp32") and "openvino" in table.meta["runtime_version"]


@pytest.mark.parametrize("args,message", [
    (["--runtime", "onnxruntime", "--fp32-decoder"], "--fp32-decoder prices the decoder parts of an INT8 table in "
                                                     "fp32: it needs --precision int8 and --decoder"),
    (["--precision", "int8"], "--precision int8: the torch runtime runs fp32 only; INT8 is priced in onnxruntime or "
                              "openvino (--runtime)"),
    (["--runtime", "onnxruntime", "--device", "cuda"],
     "--device cuda: the onnxruntime runtime is timed on the CPU; use --device cpu"),
    (["--runtime", "tensorrt"], "unknown runtime 'tensorrt'; valid runtimes: torch, onnxruntime, openvino"),
    (["--runtime", "onnxruntime", "--precision", "fp16"], "unknown precision 'fp16'; valid precisions: fp32, int8"),
])
def test_bad_combinations_fail_in_one_line_before_timing(tmp_path: Path, args: list[str], message: str) -> None:
    code, output = _latency(tmp_path / "t.json", *args)
    assert code == 2
    assert output.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / "t.json").exists()


def test_openvino_missing_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # what `import openvino` meets where it is not installed
    code, output = _latency(tmp_path / "t.json", "--runtime", "openvino")
    assert code == 2
    assert output.strip().splitlines() == [
        "error: the openvino runtime needs the openvino package: pip install 'vidnas[openvino]'"]


class _Svd(torch.nn.Module):
    """A module with an operator the ONNX exporter has no translation for (``aten::linalg_svd``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.svd(x)[0]


def test_a_module_the_runtime_refuses_is_named() -> None:
    m = _Svd()
    with GraphTimer("onnxruntime", "int8") as timer, pytest.raises(DeployError) as err:
        timer("enc/s0/b1/1x4x4", m, m, [torch.randn(1, 4, 4)])
    assert str(err.value).startswith("enc/s0/b1/1x4x4: onnxruntime int8: ") and "linalg_svd" in str(err.value)


def test_parts_are_not_completed_in_another_runtime(tables) -> None:
    from vidnas.config import load_config

    cfg = load_config(TINY_YAML)
    enc = build_encoder("swin_test", img_size=(64, 96))
    for name, want in (("ort_int8", "int8` for"), ("ort_int8_dec32", "int8 --fp32-decoder` for")):
        table = LatencyTable.load(tables[name])
        assert not complete_model_parts(table, enc, arch_from_config(cfg), 4)  # complete: nothing to time
        table.parts = {k: v for k, v in table.parts.items() if not k.startswith("decoder/")}
        with pytest.raises(ValueError, match=f"--runtime onnxruntime --precision {want} this model"):
            complete_model_parts(table, enc, arch_from_config(cfg), 4)  # eager PyTorch would mix two runtimes
    with GraphTimer("onnxruntime", "int8") as timer, pytest.raises(ValueError, match="onnxruntime/fp32 and lacks"):
        complete_model_parts(table, enc, arch_from_config(cfg), 4, timer=timer)  # int8 decoder in an fp32-decoder table


@pytest.mark.parametrize("name,line", [("ort_int8", "onnxruntime int8 (latency table)"),
                                       ("ort_int8_dec32", "onnxruntime int8, decoder fp32 (latency table)")])
def test_search_priced_by_an_int8_table_records_it(tables, tmp_path: Path, name: str, line: str) -> None:
    sets = ["data.synthetic_videos=3", "data.synthetic_frames=6", "train.batch_size=2", "train.max_steps_per_epoch=2",
            "stnas.encoder_epochs=1", "stnas.decoder_epochs=1", "stnas.warmup_epochs=0", "stnas.lam=0.05",
            "stnas.depth_rule=paper"]
    out = tmp_path / "search"
    res = runner.invoke(app, ["search", "stnas", "--config", TINY_YAML, *sum((["--set", s] for s in sets), []),
                              "--latency-table", str(tables[name]), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    record = json.loads((out / "arch.json").read_text())["extra"]["search"]["latency_table"]
    assert (record["runtime"], record["precision"]) == ("onnxruntime", "int8")
    assert record["decoder_precision"] == ("fp32" if name.endswith("dec32") else "int8")
    assert read_search_record(out / "arch.json").latency_table_path == str(tables[name])
    assert f"- latencies priced in: {line}" in (out / "report.md").read_text()
    assert LatencyTable.load(out / "latency_table.json").pricing == ("onnxruntime", "int8")


def test_compare_script_prints_every_slot_under_both_tables(tmp_path: Path, capsys) -> None:
    import importlib.util

    from vidnas.models.decoders.arch2_space import SLOTS

    space = ["--set", "model.decoder=arch2_space", "--set", "model.fuse_channels=8"]
    for name, args in {"a": (), "b": ("--runtime", "onnxruntime", "--precision", "int8")}.items():
        code, output = _latency(tmp_path / f"{name}.json", *space, *args)
        assert code == 0, output
    spec = importlib.util.spec_from_file_location("latency_runtime_compare",
                                                  REPO / "benchmarks" / "latency_runtime_compare.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([f"torch={tmp_path / 'a.json'}", f"int8={tmp_path / 'b.json'}", "--config", TINY_YAML,
                     *space, "--classes", "4"]) == 0
    out = capsys.readouterr().out
    assert "torch: torch fp32; int8: onnxruntime int8" in out.splitlines()[0]
    assert all(f"{k} {name} (" in out for k, (name, *_) in enumerate(SLOTS))
    assert out.count("cheapest first: torch:") == len(SLOTS)
    assert "table latency of the arch2 point: torch" in out and "cheapest candidate changes in: " in out
