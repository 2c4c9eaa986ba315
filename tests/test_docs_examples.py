"""The code examples of the docs run as written.

docs/ARCHITECTURE.md's "Extend it" example (a new decoder op and cell aggregation, searched) runs in
``tests/test_layout.py::test_extend_example``; this file runs the others ("Add a decoder", "Add a search").
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from vidnas.models import DECODERS, Arch, ArchError, IncrementalStreamer, VideoSegmenter, compile_decoder
from vidnas.models.encoders import build_encoder
from vidnas.models.streaming import WindowStreamer

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_example(doc: str, heading: str) -> str:
    """The one ```python block of the section of ``doc`` (a file in docs/) whose heading starts with ``heading``."""
    text = (DOCS / doc).read_text()
    sections = re.split(r"^#{2,3} ", text, flags=re.M)
    section = [s for s in sections if s.startswith(heading)]
    assert len(section) == 1, f"one section {heading!r} expected in docs/{doc}"
    blocks = re.findall(r"```python\n(.*?)```", section[0], re.S)
    assert len(blocks) == 1, f"one python example expected in docs/{doc}'s section {heading!r}"
    return blocks[0]


def test_add_a_decoder_example(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/ARCHITECTURE.md's "Add a decoder" example: a family registered from outside the package is built by
    build_model, validated in architecture files, compiled and streamed incrementally with the window decode's
    logits."""
    code = python_example("ARCHITECTURE.md", "Add a decoder")
    try:
        namespace: dict = {}
        exec(compile(code, "ARCHITECTURE.md", "exec"), namespace)  # noqa: S102
        model, steps, logits = namespace["model"], namespace["steps"], namespace["logits"]
        assert isinstance(model, VideoSegmenter) and type(model.decoder).__name__ == "TemporalHead"
        assert isinstance(namespace["incremental"], IncrementalStreamer)
        assert isinstance(namespace["window"], WindowStreamer)
        assert compile_decoder(model.decoder).receptive_field == 3
        assert logits.shape == (1, 8, 3, 64, 96) and len(steps) == 8
        for a, b in steps:
            assert a.shape == (1, 3, 64, 96)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        assert capsys.readouterr().out.strip() == "IncrementalStreamer == WindowStreamer at every frame: True"
        assert Arch.from_dict({"schema_version": 1, "decoder": "temporal_head", "encoder": "swin_test"}).decoder \
            == "temporal_head"
    finally:  # leave the shared table as the other tests expect it
        DECODERS.pop("temporal_head", None)
    with pytest.raises(ArchError, match="valid decoders: sptcn, head, arch2, mstcn, arch2_space$"):
        Arch(decoder="temporal_head")


def test_add_a_search_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/ARCHITECTURE.md's "Add a search" example: a latency-budgeted random search writes an arch.json that loads,
    whose architecture is under the budget by the measured table, the best of the trained candidates, and builds."""
    code = python_example("ARCHITECTURE.md", "Add a search")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "ARCHITECTURE.md", "exec"), namespace)  # noqa: S102
    table, budget_ms, scored = namespace["table"], namespace["budget_ms"], namespace["scored"]
    saved = Arch.load(tmp_path / "runs" / "budget_search" / "arch.json")
    assert saved == namespace["best"] and saved.name == "budget_search" and saved.decoder_ops is not None
    assert saved.extra["search"]["budget_ms"] == budget_ms
    encoder = build_encoder(saved.encoder, img_size=(32, 48))  # the full-depth encoder the table was measured on
    latency = table.model_latency(encoder, saved.depths, saved, 4)
    assert latency == pytest.approx(saved.extra["search"]["latency_ms"]) and latency <= budget_ms
    assert 1 <= len(scored) <= 2 and saved.extra["search"]["val_miou"] == max(m for m, _, _ in scored)
    for _, _, arch in scored:
        assert (tmp_path / "runs" / "budget_search" / arch.name / "checkpoints" / "last.pt").is_file()
    model = namespace["model"]
    assert isinstance(model, VideoSegmenter) and tuple(model.encoder.depths) == tuple(saved.depths)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 3, 32, 48)).shape == (1, 3, 4, 32, 48)
