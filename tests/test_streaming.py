"""Streaming in one room (``vidnas.models.streaming``): every model's streamers follow the one ``Streamer`` protocol,
``stream()`` checks its options in one place (one refusal of ``key_interval``), the key-frame rule, and the
multi-scale model as a ``VideoSegmenter`` (tiny, CPU)."""

from __future__ import annotations

import pytest
import torch

from vidnas.config import Config, DataConfig, ModelConfig
from vidnas.models import (
    FrameStreamer,
    IncrementalStreamer,
    Streamer,
    VideoSegmenter,
    WindowStreamer,
    build_model,
)
from vidnas.models.cells import CellGenotype, build_cell_model
from vidnas.models.multiscale import MultiScaleSegmenter
from vidnas.models.static_segmenter import build_static_segmenter
from vidnas.models.streaming import is_key_frame

H, W, K = 32, 48, 3


def _cfg(decoder: str, window: int = 3, temporal: str = "causal") -> Config:
    return Config(data=DataConfig(height=H, width=W, window=window, temporal=temporal),
                  model=ModelConfig(encoder="mobilenetv2_test", decoder=decoder, decoder_channels=16,
                                    decoder_dilations=(1, 2), fuse_channels=8))


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    static = build_static_segmenter(_cfg("arch2"), num_classes=K).eval()
    genotype = CellGenotype.from_tokens([2, 1, 3, 1, 1] * 2, ops=("conv1x1", "sep3x3", "skip", "gap"),
                                        aggregations=("sum", "concat"))
    return {
        "sptcn": build_model(_cfg("sptcn"), num_classes=K).eval(),
        "sptcn_centred": build_model(_cfg("sptcn", temporal="centred"), num_classes=K).eval(),
        "mstcn": build_model(_cfg("mstcn"), num_classes=K).eval(),
        "arch2": static,
        "cell": build_cell_model(_cfg("arch2"), genotype, num_classes=K, static=static).eval(),
    }


def test_every_streamer_follows_the_protocol(models: dict[str, torch.nn.Module]) -> None:
    expected = {"sptcn": (IncrementalStreamer, "incremental", True), "sptcn_centred": (WindowStreamer, "window", False),
                "mstcn": (IncrementalStreamer, "incremental", True), "arch2": (FrameStreamer, "frame", True),
                "cell": (FrameStreamer, "frame", True)}
    frame = torch.randn(1, 3, H, W)
    for name, model in models.items():
        kind, protocol, causal = expected[name]
        streamers = [model.stream()] + ([model.stream(incremental=False)] if protocol == "incremental" else [])
        for s in streamers:
            assert isinstance(s, Streamer), name
            assert s.runtime == "torch" and s.causal is causal and s.lag == (0 if causal else 1), name
        assert isinstance(streamers[0], kind) and streamers[0].protocol == protocol, name
        out = streamers[0].push(frame)
        assert (out is None) is (not causal), name


def test_key_interval_refused_with_one_message(models: dict[str, torch.nn.Module]) -> None:
    for name in ("sptcn", "mstcn", "arch2"):
        model = models[name]
        decoder = type(model.decoder).__name__
        with pytest.raises(ValueError, match=f"^key_interval applies to dynamic-cell models only; this "
                                             f"{type(model).__name__} \\({decoder} decoder\\) has no key frames$"):
            model.stream(key_interval=2)
    cell = models["cell"]
    assert cell.stream(key_interval=2) is not None
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="key interval must be >= 1"):
            cell.stream(key_interval=bad)
        with pytest.raises(ValueError, match="key interval must be >= 1"):
            cell(torch.randn(1, 2, 3, H, W), key_interval=bad)


def test_key_frame_rule() -> None:
    assert [t for t in range(8) if is_key_frame(t, None)] == [0]
    assert [t for t in range(8) if is_key_frame(t, 3)] == [0, 3, 6]
    assert all(is_key_frame(t, 1) for t in range(5))


def test_multiscale_model_is_a_video_segmenter(models: dict[str, torch.nn.Module]) -> None:
    model = models["mstcn"]
    assert isinstance(model, MultiScaleSegmenter) and isinstance(model, VideoSegmenter)
    assert {k.split(".")[0] for k in model.state_dict()} == {"encoder", "decoder"}  # no state of its own
    frames = torch.randn(1, 3, 3, H, W)  # one window (w = 3)
    with torch.no_grad():
        clip = model(frames)  # (1, T, K, H, W)
    assert clip.shape == (1, 3, K, H, W)
    for incremental in (True, False):
        s = model.stream(incremental=incremental)
        with torch.no_grad():
            outs = torch.stack([s.push(frames[:, t]) for t in range(3)], dim=1)
        # the last frame's window is the clip: the same logits
        torch.testing.assert_close(outs[:, -1], clip[:, -1], rtol=1e-4, atol=1e-4)
