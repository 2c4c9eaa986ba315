"""Device placement and mixed precision.

* Meta-device runs (CPU-side, every machine): a model moved to the ``meta`` device computes shapes only, and any
  tensor created on a hard-coded device (the CPU) inside a model, a streamer or a search module meets a meta tensor
  and raises. So these tests prove that every model kind, its streamer and the supernets create tensors on the
  model's device.
* AMP on the CPU: bf16 (and fp16 with a GradScaler) training steps give finite losses; bf16 inference agrees with
  float32 within a stated tolerance.
* ``device``-marked tests run on ``pytest --device`` (cpu here; ``benchmarks/gpu_check.sh`` passes cuda): training
  steps in every precision, the supernets' search step, streaming == clip for every model kind, the benchmark
  protocol and the confusion matrix on that device.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from vidnas.bench.protocol import protocol_rows
from vidnas.config import Config, DataConfig, ModelConfig, load_config
from vidnas.engine.losses import segmentation_loss
from vidnas.metrics import ConfusionMatrix
from vidnas.models import Arch, build_model
from vidnas.models.cells import Cell, CellGenotype, DynamicCellModel, build_static_segmenter, cell_in_channels
from vidnas.precision import AMP_MODES, autocast, grad_scaler
from vidnas.search.stnas import (
    ClippedAdam,
    DepthSupernet,
    arch_parameters,
    build_decoder_supernet,
    encoder_search_loss,
    search_step,
    weight_parameters,
)

H, W, K = 32, 48, 3
OPS = ("identity", "spatial_k3", "sep_k3", "temporal_k3", "temporal_k5", "sep_k5", "spatial_k5", "identity")


def window_model(causal: bool = True) -> torch.nn.Module:
    cfg = Config(data=DataConfig(height=H, width=W, window=3),
                 model=ModelConfig(encoder="swin_test", decoder_channels=8, decoder_dilations=(1, 2)))
    arch = Arch(encoder="swin_test", depths=(1, 2, 1, 1), decoder_ops=OPS, full_channels=True, window=3, channels=8,
                dilations=(1, 2), causal=causal)
    return build_model(cfg, arch, num_classes=K)


def frame_models() -> tuple[torch.nn.Module, torch.nn.Module]:
    cfg = Config(data=DataConfig(height=H, width=W, window=1), model=ModelConfig(encoder="mobilenetv2_test"))
    static = build_static_segmenter(cfg, num_classes=K)
    geno = CellGenotype.from_tokens([[2, 1, 0, 3, 0], [5, 0, 1, 2, 3], [6, 4, 2, 0, 4]],
                                    ops=("conv1x1", "conv3x3", "sep3x3", "skip", "gap"),
                                    aggregations=("sum", "concat", "attention", "predictive", "affine", "conv3d"))
    cell = Cell(geno, in_channels=cell_in_channels(static), num_classes=K)
    return static, DynamicCellModel(static, cell, window=3)


def multiscale_model() -> torch.nn.Module:
    cfg = Config(data=DataConfig(height=H, width=W, window=3),
                 model=ModelConfig(encoder="mobilenetv2_test", decoder="mstcn", decoder_channels=8,
                                   decoder_dilations=(1, 2), fuse_channels=8))
    return build_model(cfg, num_classes=K)


def all_models() -> dict[str, torch.nn.Module]:
    static, cell = frame_models()
    return {"window_causal": window_model(True), "window_centred": window_model(False), "arch2": static,
            "cell": cell, "mstcn": multiscale_model()}


def stream_all(model: torch.nn.Module, frames: torch.Tensor, **options: object) -> torch.Tensor:
    streamer = model.stream(batch_size=frames.shape[0], **options)
    outs = [streamer.push(frames[:, t]) for t in range(frames.shape[1])]
    return torch.stack([o for o in outs if o is not None] + list(streamer.flush()), dim=1)


# -------------------------------------------------------------------------------------- meta device (CPU-side)


@pytest.mark.parametrize("name", ["window_causal", "window_centred", "arch2", "cell", "mstcn"])
def test_no_tensor_is_created_on_a_hard_coded_device(name: str) -> None:
    model = all_models()[name].eval().to("meta")
    frames = torch.empty(2, 4, 3, H, W, device="meta")
    with torch.no_grad():
        clip = model(frames)
        streamed = stream_all(model, frames, **({"key_interval": 2} if name == "cell" else {}))
    assert clip.device.type == streamed.device.type == "meta"
    assert clip.shape == streamed.shape == (2, 4, K, H, W)


@pytest.mark.parametrize("incremental", [True, False])
def test_both_window_streamers_create_nothing_on_a_hard_coded_device(incremental: bool) -> None:
    """The incremental streamer (its state, gather indices, first-frame window decode) and the window decode."""
    from vidnas.models import IncrementalStreamer, WindowStreamer

    model = window_model(True).eval().to("meta")  # receptive field 13 > window 3: dirty slots, zero entries
    frames = torch.empty(2, 6, 3, H, W, device="meta")
    streamer = model.stream(batch_size=2, incremental=incremental)
    assert isinstance(streamer, IncrementalStreamer if incremental else WindowStreamer)
    with torch.no_grad():
        outs = [streamer.push(frames[:, t]) for t in range(6)]
    assert all(o.device.type == "meta" and o.shape == (2, K, H, W) for o in outs)
    if incremental:
        assert streamer._state and all(t.device.type == "meta" for t in streamer._state)


def test_supernets_create_nothing_on_a_hard_coded_device() -> None:
    model = window_model().to("meta")
    model.encoder = DepthSupernet(model.encoder)
    model.decoder = build_decoder_supernet(model.encoder.out_channels[-1], K, channels=8, dilations=(1, 2)).to("meta")
    lat = [[1.0] * d for d in model.encoder.depths]
    logits = model(torch.empty(1, 3, 3, H, W, device="meta"))
    loss = logits.float().mean() + 1e-3 * model.encoder.penalty(lat)  # Eq. 2 (its logged floats need real values)
    assert loss.device.type == "meta" and all(p.device.type == "meta" for p in arch_parameters(model))


# ----------------------------------------------------------------------------------------------- AMP on the CPU


def test_bf16_inference_agrees_with_float32() -> None:
    """Stated tolerance: bf16 keeps 8 mantissa bits, so logits agree to ~1% of their spread and the predicted class
    of at least 95% of the pixels is the same."""
    torch.manual_seed(0)
    model = window_model().eval()
    frames = torch.randn(1, 3, 3, H, W)
    with torch.no_grad():
        ref = model(frames)
        with autocast("cpu", "bf16"):
            low = model(frames)
    assert low.dtype == torch.bfloat16
    err = (low.float() - ref).abs().max().item()
    assert err < 0.05 * ref.std().item() + 1e-3, err
    assert (low.float().argmax(2) == ref.argmax(2)).float().mean().item() >= 0.95


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_steps_on_the_cpu_are_finite(amp: str) -> None:
    torch.manual_seed(0)
    model = window_model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = grad_scaler("cpu", amp)
    frames, masks = torch.randn(2, 3, 3, H, W), torch.randint(0, K, (2, 3, H, W))
    losses = []
    for _ in range(3):
        with autocast("cpu", amp):
            loss = segmentation_loss(model(frames).float(), masks, 255)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and all(p.dtype == torch.float32 for p in model.parameters())


def test_unknown_amp_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="bf8"):
        autocast("cpu", "bf8")
    with pytest.raises(ValueError, match="train.amp"):
        load_config("tiny", ["train.amp=bf8"])


# --------------------------------------------------------------------------------- on `pytest --device` (device)


@pytest.mark.device
@pytest.mark.parametrize("name", ["window_causal", "window_centred", "arch2", "cell", "mstcn"])
def test_stream_equals_clip_on_device(name: str, device: str) -> None:
    torch.manual_seed(0)
    model = all_models()[name].eval().to(device)
    frames = torch.randn(1, 5, 3, H, W, device=device)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            clip = model(frames)
            streamed = stream_all(model, frames)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    if name.startswith("window") or name == "mstcn":  # a window model decodes each target inside a window
        clip = torch.stack([model(_window(frames, t, model))[:, model.target_index] for t in range(5)], dim=1)
    assert streamed.device.type == torch.device(device).type
    torch.testing.assert_close(streamed, clip, atol=1e-4, rtol=1e-4)


def multiscale_temporal_paths_model() -> torch.nn.Module:
    """A causal mstcn model with temporal ops in the finer paths and a fusion too (every kind of incremental node)."""
    cfg = Config(data=DataConfig(height=H, width=W, window=3))
    arch = Arch(encoder="mobilenetv2_test", decoder="mstcn", channels=8, dilations=(1, 2), scales=(32, 8, 4),
                fuse_channels=8, window=3, causal=True,
                scale_ops=("temporal_k3", "identity", "spatial_k3", "sep_k3", "temporal_k5", "temporal_k3"))
    return build_model(cfg, arch, num_classes=K)


@pytest.mark.device
@pytest.mark.parametrize("name", ["sptcn", "mstcn"])
def test_incremental_equals_window_decode_on_device(name: str, device: str) -> None:
    """30 frames from a video start: the incremental streamer (receptive field > window 3: carried and recomputed
    slots) against the window decode, both on the device; SP-TCN / TCNNAS ops, and a multi-scale model."""
    torch.manual_seed(0)
    model = (window_model(True) if name == "sptcn" else multiscale_temporal_paths_model()).eval().to(device)
    frames = torch.randn(2, 30, 3, H, W, device=device)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            inc = stream_all(model, frames, incremental=True)
            win = stream_all(model, frames, incremental=False)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    assert inc.device.type == torch.device(device).type
    torch.testing.assert_close(inc, win, atol=1e-4, rtol=1e-4)


def _window(frames: torch.Tensor, t: int, model: torch.nn.Module) -> torch.Tensor:
    w, target = model.window, model.target_index
    idx = [min(max(t - target + i, 0), frames.shape[1] - 1) for i in range(w)]
    return frames[:, idx]


@pytest.mark.device
@pytest.mark.parametrize("amp", AMP_MODES)
def test_training_steps_on_device(amp: str, device: str) -> None:
    if amp == "fp16" and torch.device(device).type == "cpu":
        pytest.skip("fp16 autocast on the CPU is covered by test_amp_training_steps_on_the_cpu_are_finite")
    torch.manual_seed(0)
    static, model = frame_models()
    model = model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    scaler = grad_scaler(device, amp)
    frames = torch.randn(2, 3, 3, H, W, device=device)
    masks = torch.randint(0, K, (2, 3, H, W), device=device)
    for _ in range(2):
        with autocast(device, amp):
            loss = segmentation_loss(model(frames).float(), masks, 255)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    assert math.isfinite(loss.item())


@pytest.mark.device
@pytest.mark.parametrize("mode", ["joint", "alternating"])
def test_search_step_on_device(mode: str, device: str) -> None:
    torch.manual_seed(0)
    model = window_model().to(device)
    model.encoder = DepthSupernet(model.encoder)
    model.decoder = build_decoder_supernet(model.encoder.out_channels[-1], K, channels=8, dilations=(1, 2)).to(device)
    lat = [[0.5] * d for d in model.encoder.depths]
    w_opt = torch.optim.AdamW(weight_parameters(model), lr=1e-3)
    a_opt = ClippedAdam(arch_parameters(model), max_norm=1.0, lr=1e-2)
    batch = {"frames": torch.randn(2, 3, 3, H, W, device=device), "masks": torch.randint(0, K, (2, 3, H, W),
                                                                                          device=device)}

    def loss_fn(b: dict) -> tuple[torch.Tensor, dict]:
        return encoder_search_loss(segmentation_loss(model(b["frames"]), b["masks"], 255), model.encoder, lat, 1e-3)

    before = [p.detach().clone() for p in arch_parameters(model)]
    logs = search_step(model, loss_fn, w_opt, a_opt, batch, mode=mode, arch_batch=batch,
                       scaler=grad_scaler(device, "none"))
    assert math.isfinite(logs["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, arch_parameters(model), strict=True))
    assert all(p.dtype == torch.float32 and p.device.type == torch.device(device).type for p in arch_parameters(model))


@pytest.mark.device
def test_bench_protocol_and_confusion_matrix_on_device(device: str) -> None:
    models = {k: m.to(device) for k, m in all_models().items()}
    rows = protocol_rows(models, img_size=(H, W), warmup=1, frames=2, flops=False,
                         stream_options={"window_causal": {"window": 5}})
    assert [r.name for r in rows] == list(models) and all(r.latency_ms > 0 for r in rows)
    assert rows[0].extra["window"] == 5
    cm = ConfusionMatrix(K, ignore_index=255)
    pred = torch.randint(0, K, (2, H, W), device=device)
    cm.update(pred, pred.clone())
    assert cm.compute()["miou"] == pytest.approx(1.0)


@pytest.mark.device
def test_train_command_on_device(device: str, tmp_path) -> None:
    from vidnas.engine.train import train

    cfg = load_config("tiny", ["train.epochs=1", "train.max_steps_per_epoch=2", "data.synthetic_videos=3",
                               "data.synthetic_frames=6", "train.batch_size=2", f"train.device={device}"])
    for amp in ("none", "bf16"):
        res = train(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, amp=amp)), tmp_path / amp,
                    show_progress=False)
        assert math.isfinite(res.history[0]["train_loss"])
