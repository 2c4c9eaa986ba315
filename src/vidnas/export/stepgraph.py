"""The incremental decoder as ONNX graphs with explicit state, and its onnxruntime streamer.

A causal model's export directory (``vidnas.export.export_onnx``) gets two more graphs next to ``encoder.onnx`` and
the window decoder ``decoder.onnx``; ``export.json`` lists them under ``"incremental"``:

* ``decoder_init.onnx``: ``feature`` (1, C, h, w) of a video's **first** frame -> ``logits`` (1, K, H, W) and the
  initial state ``state0 .. state{n-1}``. It runs the window decode of ``w`` copies of the frame once (the edge rule
  of the window decode) and keeps what the later steps need (``vidnas.models.incremental``).
* ``decoder_step.onnx``: ``feature`` (1, C, h, w) of every **later** frame plus ``state0 .. state{n-1}`` ->
  ``logits`` (1, K, H, W) and ``next_state0 .. next_state{n-1}``, fed back as ``state0 ..`` on the next frame.

Every shape is static (batch 1, the export's input size and window); the state is a handful of float32 tensors of
fixed size, so a C++ or any other runtime needs no knowledge of the decoder to stream it: run ``encoder`` then
``decoder_init`` on frame 0, ``encoder`` then ``decoder_step`` on frame t > 0, and carry the ``next_state*`` outputs.
The logits equal the window decode of ``decoder.onnx`` (tested over 60-frame streams against PyTorch).

A multi-scale model's graphs take one feature per scale, named as ``encoder.onnx``'s outputs (``feature0 ..
feature{n-1}``, coarse first) and listed under ``"features"`` in the ``"incremental"`` section (a single-input
model's section has ``"feature"``); the states follow them in ``decoder_step.onnx``'s inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidnas.export.exporter import (
    DeployError,
    _export_graphs,
    _set_output_shape,
    export_paths,
    feature_specs,
    ort_session,
    parity_mode,
    read_export_meta,
)
from vidnas.models import IncrementalDecoder, IncrementalError, incremental_support
from vidnas.utils import atomic_write_json

__all__ = [
    "INIT_FILE",
    "STEP_FILE",
    "export_step_graphs",
    "has_step_graphs",
    "OrtStepStreamer",
    "step_parity_check",
]

logger = logging.getLogger(__name__)

INIT_FILE = "decoder_init.onnx"
STEP_FILE = "decoder_step.onnx"


def _decoder_features(feats: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """The decoder's per-frame input: the tensor itself for one feature map, the list for several."""
    return feats[0] if len(feats) == 1 else list(feats)


class _InitGraph(nn.Module):
    """feature(s) (1, C, h, w) -> logits (1, K, H, W), state tensors: the first frame of a video."""

    def __init__(self, model: nn.Module, step: IncrementalDecoder, out_hw: tuple[int, int]) -> None:
        super().__init__()
        self.model, self.step, self.out_hw = model, step, out_hw

    def forward(self, *features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, state = self.step.init(_decoder_features(features))
        return (self.model.upsample(logits, self.out_hw), *state)


class _StepGraph(nn.Module):
    """feature(s) (1, C, h, w), state tensors -> logits (1, K, H, W), next state tensors: every later frame."""

    def __init__(self, model: nn.Module, step: IncrementalDecoder, out_hw: tuple[int, int]) -> None:
        super().__init__()
        self.model, self.step, self.out_hw = model, step, out_hw

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = self.step.num_inputs
        logits, new_state = self.step.step(_decoder_features(inputs[:n]), inputs[n:])
        return (self.model.upsample(logits, self.out_hw), *new_state)


def has_step_graphs(meta: dict[str, Any]) -> bool:
    """Whether an ``export.json`` lists the incremental graphs."""
    return isinstance(meta.get("incremental"), dict)


def export_step_graphs(model: nn.Module, export_dir: str | Path, *, opset: int | None = None) -> dict[str, Any]:
    """Add ``decoder_init.onnx`` and ``decoder_step.onnx`` to an export directory of ``model`` and list them in its
    ``export.json`` (rewritten atomically, last).

    Args:
        model: the causal ``VideoSegmenter`` the directory was exported from (same input size and window).
        export_dir: a directory written by ``export_onnx``.
        opset: ONNX opset; None = the export's own.

    Returns:
        The ``"incremental"`` section written to ``export.json``.

    Raises:
        DeployError: not an export directory, or a model without an incremental decode (centred; the message says
            why).
    """
    import onnx

    paths = export_paths(export_dir)
    meta = read_export_meta(paths.out_dir)
    reason = incremental_support(model)
    if reason is not None:
        raise DeployError(f"no incremental graphs for {paths.out_dir}: {reason}")
    window = int(meta["window"])
    opset = int(opset or meta["opset"])
    out_hw = (int(meta["output_size"][0]), int(meta["output_size"][1]))
    specs = feature_specs(meta)  # one encoder output, or one per scale
    feat_names = [str(f["name"]) for f in specs]
    was_training = model.training
    model.eval()
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        step = IncrementalDecoder(model.decoder, window)
        if step.num_inputs != len(specs):
            raise DeployError(f"{paths.meta} lists {len(specs)} encoder output(s) but the decoder reads "
                              f"{step.num_inputs} feature map(s) per frame: not an export of this model")
        features = tuple(torch.zeros(*(int(s) for s in f["shape"]), device=device) for f in specs)  # (1, C, h, w)
        with torch.no_grad():
            _, state = step.init(_decoder_features(features))
        n = len(state)
        state_names = [f"state{i}" for i in range(n)]
        next_names = [f"next_state{i}" for i in range(n)]
        _export_graphs(_InitGraph(model, step, out_hw).eval(), features, paths.out_dir / INIT_FILE, feat_names,
                       ["logits", *state_names], opset)
        _export_graphs(_StepGraph(model, step, out_hw).eval(), (*features, *state), paths.out_dir / STEP_FILE,
                       [*feat_names, *state_names], ["logits", *next_names], opset)
    except IncrementalError as e:
        raise DeployError(f"no incremental graphs for {paths.out_dir}: {e}") from e
    finally:
        model.train(was_training)
    for name in (INIT_FILE, STEP_FILE):
        _set_output_shape(paths.out_dir / name, (1, int(model.num_classes), *out_hw))  # logits; states are static
        onnx.checker.check_model(str(paths.out_dir / name))
    k = int(model.num_classes)
    n_in = len(specs)
    feats: dict[str, Any] = ({"feature": {"name": feat_names[0], "shape": list(specs[0]["shape"])}} if n_in == 1
                             else {"features": [{"name": f["name"], "shape": list(f["shape"])} for f in specs]})
    section = {
        "init": INIT_FILE,
        "step": STEP_FILE,
        "receptive_field": step.receptive_field,
        "window_free": step.exact_window_free,
        **feats,
        "logits": {"name": "logits", "shape": [1, k, *out_hw], "frame": "the frame just pushed"},
        "states": [{"input": s, "output": o, "shape": list(t.shape), "dtype": "float32"}
                   for s, o, t in zip(state_names, next_names, state, strict=True)],
        "state_bytes": int(sum(t.numel() * 4 for t in state)),
        "usage": f"frame 0: encoder -> decoder_init (logits, state*); frame t > 0: encoder -> "
                 f"decoder_step({'feature' if n_in == 1 else 'feature0..'}, state*) -> (logits, next_state*); "
                 "next_state_i becomes state_i. Causal: logits of the frame just pushed; a new video starts with "
                 "decoder_init again.",
    }
    atomic_write_json(paths.meta, {**meta, "incremental": section})
    logger.info("exported %s and %s (%d state tensors, %.2f MB)", INIT_FILE, STEP_FILE, n,
                section["state_bytes"] / 1e6)
    return section


class OrtStepStreamer:
    """Frame-by-frame inference with onnxruntime and the incremental graphs: one encoder run and one decoder step
    per push. The ``Streamer`` / ``FrameRunner`` interface of ``OrtStreamer`` (numpy in and out, batch 1, causal).
    A multi-scale export's ``encode`` returns one array per scale and ``decode`` takes that list.

    The state lives in onnxruntime ``OrtValue``s passed from one step to the next without copies through numpy.

    Args:
        export_dir: an export directory with the incremental graphs (``export_step_graphs``).
        providers: onnxruntime execution providers (default CPU).
        intra_op_threads: threads per graph run; None = onnxruntime's default.
        session_options: a prepared ``onnxruntime.SessionOptions`` (overrides ``intra_op_threads``).

    Raises:
        DeployError: not an export directory, no incremental graphs, or a graph onnxruntime cannot load.
    """

    runtime = "onnxruntime"
    protocol = "incremental"
    lag = 0
    target_index: int

    def __init__(self, export_dir: str | Path, *, providers: Sequence[str] | None = None,
                 intra_op_threads: int | None = None, session_options: Any = None) -> None:
        import onnxruntime as ort

        self._ort = ort
        self.export_dir = Path(export_dir)
        self.meta = read_export_meta(self.export_dir)
        if not has_step_graphs(self.meta):
            raise DeployError(f"{self.export_dir} has no incremental graphs (a centred model, or an export made "
                              "before they existed): use OrtStreamer, or re-export the checkpoint")
        inc = self.meta["incremental"]
        if session_options is None:
            session_options = ort.SessionOptions()
            if intra_op_threads is not None:
                session_options.intra_op_num_threads = int(intra_op_threads)
        self.session_options = session_options
        providers = list(providers or ("CPUExecutionProvider",))
        self.encoder_session = ort_session(ort, self.export_dir / self.meta["encoder"], session_options, providers)
        self.init_session = ort_session(ort, self.export_dir / inc["init"], session_options, providers)
        self.step_session = ort_session(ort, self.export_dir / inc["step"], session_options, providers)
        self._in_name = self.meta["io"]["encoder"]["input"]["name"]
        self._state_in = [s["input"] for s in inc["states"]]
        self._state_out = [s["output"] for s in inc["states"]]
        self._init_out = ["logits", *self._state_in]
        self._step_out = ["logits", *self._state_out]
        self.window = int(self.meta["window"])
        self.causal = True
        self.target_index = self.window - 1
        self.input_size = (int(self.meta["input_size"][0]), int(self.meta["input_size"][1]))
        self.num_classes = int(self.meta["num_classes"])
        self.class_names: list[str] = list(self.meta.get("class_names") or [])
        pal = self.meta.get("palette")
        self.palette: np.ndarray | None = None if pal is None else np.asarray(pal, dtype=np.uint8)
        specs = [inc["feature"]] if "feature" in inc else list(inc["features"])
        self.feature_names = [str(f["name"]) for f in specs]
        self.feature_shapes = [tuple(int(s) for s in f["shape"]) for f in specs]  # (1, C_i, h_i, w_i) each
        self.feature_shape = self.feature_shapes[0]
        self.multi = len(specs) > 1
        self.state_nbytes = int(inc["state_bytes"])
        self._state: list[Any] = []

    @property
    def providers(self) -> list[str]:
        """The execution providers onnxruntime actually uses."""
        return list(self.encoder_session.get_providers())

    @property
    def pending(self) -> int:
        """Frames pushed whose logits have not been returned: always 0 (causal)."""
        return 0

    def reset(self) -> None:
        """Forget the state (start of a new video)."""
        self._state = []

    def encode(self, frame: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Run ``encoder.onnx``: (1, 3, H, W) float32 -> (1, C, h, w) (a multi-scale export: a list, one per
        scale)."""
        frame = np.ascontiguousarray(frame, dtype=np.float32)
        want = (1, 3, *self.input_size)
        if frame.shape != want:
            raise ValueError(f"expected a frame of shape {want} (batch 1, ImageNet-normalised RGB), got {frame.shape}")
        outs = self.encoder_session.run(self.feature_names, {self._in_name: frame})
        return outs if self.multi else outs[0]

    def decode(self, feature: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """One decoder step on a (1, C, h, w) feature, or a multi-scale export's list of them (``decoder_init`` at a
        video start), updating the state; returns the (1, K, H, W) logits of that frame."""
        ort = self._ort
        arrays = list(feature) if self.multi else [feature]
        if len(arrays) != len(self.feature_names):
            raise ValueError(f"expected {len(self.feature_names)} feature maps, got {len(arrays)}")
        feats = {n: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a, dtype=np.float32))
                 for n, a in zip(self.feature_names, arrays, strict=True)}
        if not self._state:
            outs = self.init_session.run_with_ort_values(self._init_out, feats)
        else:
            feeds = {**feats, **dict(zip(self._state_in, self._state, strict=True))}
            outs = self.step_session.run_with_ort_values(self._step_out, feeds)
        self._state = list(outs[1:])
        return outs[0].numpy()

    def push(self, frame: np.ndarray) -> np.ndarray:
        """Add one frame (1, 3, H, W) float32, ImageNet-normalised; returns its (1, K, H, W) logits."""
        return self.decode(self.encode(frame))

    def flush(self) -> list[np.ndarray]:
        """End of a video: nothing is pending; resets and returns []."""
        self.reset()
        return []

    def __repr__(self) -> str:
        return (f"OrtStepStreamer({str(self.export_dir)!r}, input={self.input_size}, window={self.window}, "
                f"providers={self.providers})")


def step_parity_check(model: nn.Module, export_dir: str | Path, *, frames: int = 60, seed: int = 0,
                      providers: Sequence[str] | None = None) -> float:
    """Stream random frames through PyTorch's incremental streamer and ``OrtStepStreamer``; max |logit difference|.

    Args:
        model: the exported causal ``VideoSegmenter`` (eval mode for the check, then restored).
        export_dir: its export directory, with the incremental graphs.
        frames: frames pushed from a video start (more than the window and the receptive field exercise the
            state's wrap-around).
        seed: seed of the standard-normal frames.
        providers: onnxruntime execution providers.

    Raises:
        DeployError: no incremental graphs, or the two streams disagree in shape.
    """
    ort_stream = OrtStepStreamer(export_dir, providers=providers)
    h, w = ort_stream.input_size
    gen = torch.Generator().manual_seed(seed)
    diff = 0.0
    with parity_mode(model) as device, torch.no_grad():
        torch_stream = model.stream(batch_size=1, window=ort_stream.window, incremental=True)
        for _ in range(frames):
            x = torch.randn(1, 3, h, w, generator=gen)
            a = torch_stream.push(x.to(device)).cpu().numpy()
            b = ort_stream.push(x.numpy())
            if a.shape != b.shape:
                raise DeployError(f"logit shapes differ: PyTorch {a.shape}, onnxruntime {b.shape}")
            diff = max(diff, float(np.abs(a - b).max()))
    logger.info("incremental parity over %d frames: max |torch - onnxruntime| = %.3g", frames, diff)
    return diff
