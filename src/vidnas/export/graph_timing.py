"""One module as a deployment runtime runs it: what ``vidnas latency --runtime/--precision`` times.

``GraphTimer(runtime, precision, threads=...)`` turns a module and the tensors it receives into a zero-argument
callable (for ``vidnas.bench.time_fn``):

* ``torch`` (fp32 only): the module itself, eager;
* ``onnxruntime`` / ``openvino``: the module traced to ONNX once (``exporter._export_graphs``: the exporter of
  ``vidnas export``, static shapes, opset ``DEFAULT_OPSET`` or what the module needs), with ``precision`` int8
  quantised by the quantiser of ``vidnas export --precision int8`` (``quantize.quantize_graph``: QDQ, per-channel
  INT8 weights, INT8 activations), and opened by the session builder of the streamers (``ort_streamers``:
  onnxruntime with ``quiet_session_options(threads)``, OpenVINO's CPU plugin with ``threads`` inference threads);
  the callable runs the graph on the module's inputs as numpy arrays.

Calibration of an INT8 graph uses the very tensors the module is timed on (random images through the encoder, random
decoder windows), not training frames: a latency table needs the graph's shape, not accurate scales. Every node is
quantised except, where ``keep_first_conv``, the first Conv (the stem's, which ``vidnas export`` keeps in float).

Graphs live in a temporary directory removed by ``close()`` (or the ``with`` block); one export per key.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidnas.export.exporter import DEFAULT_OPSET, DeployError, _export_graphs
from vidnas.export.frame_models import required_opset
from vidnas.export.ort_streamers import GRAPH_RUNTIMES, _open_graphs, require_openvino
from vidnas.export.quantize import quantize_graph
from vidnas.export.runtime import RUNTIMES, quiet_session_options

__all__ = ["GraphTimer", "check_pricing", "runtime_versions", "TABLE_PRECISIONS"]

TABLE_PRECISIONS = ("fp32", "int8")  # what a latency table can be priced in (bf16 tables: not built)


def check_pricing(runtime: str, precision: str, device: str = "cpu") -> None:
    """Refuse a runtime / precision / torch device combination before any work (``DeployError``, one line)."""
    if runtime not in RUNTIMES:
        raise DeployError(f"unknown runtime {runtime!r}; valid runtimes: {', '.join(RUNTIMES)}")
    if precision not in TABLE_PRECISIONS:
        raise DeployError(f"unknown precision {precision!r}; valid precisions: {', '.join(TABLE_PRECISIONS)}")
    if runtime == "torch" and precision != "fp32":
        raise DeployError(f"--precision {precision}: the torch runtime runs fp32 only; INT8 is priced in onnxruntime "
                          "or openvino (--runtime)")
    if runtime in GRAPH_RUNTIMES and torch.device(device).type != "cpu":
        raise DeployError(f"--device {device}: the {runtime} runtime is timed on the CPU; use --device cpu")
    if runtime == "openvino":
        require_openvino()


def runtime_versions(runtime: str) -> dict[str, str]:
    """The version of the runtime package that timed a table (``{"torch": ...}`` etc.)."""
    if runtime == "onnxruntime":
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__}
    if runtime == "openvino":
        return {"openvino": str(require_openvino().__version__)}
    return {"torch": torch.__version__}


class _Call(nn.Module):
    """``fn(*inputs)`` as a module for the tracer; ``owner`` registers the parameters ``fn`` reads."""

    def __init__(self, fn: Callable[..., Any], owner: nn.Module) -> None:
        super().__init__()
        self.owner = owner
        self.fn = fn

    def forward(self, *inputs: torch.Tensor) -> Any:
        return self.fn(*inputs)


class GraphTimer:
    """Callables running one module each in ``runtime`` at ``precision`` (module docstring).

    Args:
        runtime: ``torch``, ``onnxruntime`` or ``openvino``.
        precision: ``fp32`` or ``int8`` (not with ``torch``).
        threads: intra-op threads of the graph runtimes (None: the runtime's own count).

    Raises:
        DeployError: a combination ``check_pricing`` refuses.
    """

    def __init__(self, runtime: str = "torch", precision: str = "fp32", *, threads: int | None = None) -> None:
        check_pricing(runtime, precision)
        self.runtime, self.precision, self.threads = runtime, precision, threads
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._graphs: dict[str, tuple[Any, list[str]]] = {}

    def __enter__(self) -> GraphTimer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the sessions and remove the graphs' directory."""
        self._graphs.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __call__(self, key: str, fn: Callable[..., Any], owner: nn.Module, inputs: Sequence[torch.Tensor], *,
                 keep_first_conv: bool = False) -> Callable[[], Any]:
        """A zero-argument callable running ``fn(*inputs)`` (``owner``: the module holding ``fn``'s parameters) in
        the runtime; graph runtimes export and open ``key``'s graph on the first call and reuse it after.

        Raises:
            DeployError: a module the exporter, the quantiser or the runtime refuses (the message names ``key``).
        """
        if self.runtime == "torch":
            return functools.partial(fn, *inputs)
        if key not in self._graphs:
            try:
                self._graphs[key] = self._open(key, fn, owner, inputs, keep_first_conv)
            except DeployError as e:
                raise DeployError(f"{key}: {e}") from e
            except (RuntimeError, ValueError, TypeError) as e:  # the tracer's and onnxruntime's own errors
                raise DeployError(f"{key}: {self.runtime} {self.precision}: {' '.join(str(e).split())[:300]}") from e
        graph, names = self._graphs[key]
        feeds = {n: t.detach().cpu().contiguous().numpy() for n, t in zip(names, inputs, strict=True)}
        return functools.partial(graph.run, None, feeds)

    def _open(self, key: str, fn: Callable[..., Any], owner: nn.Module, inputs: Sequence[torch.Tensor],
              keep_first_conv: bool) -> tuple[Any, list[str]]:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="vidnas-latency-")
        d = Path(self._tmp.name)
        file = f"g{len(self._graphs)}.onnx"
        names = [f"x{i}" for i in range(len(inputs))]
        module = _Call(fn, owner).eval()
        _export_graphs(module, tuple(inputs), d / file, names, ["out"], max(DEFAULT_OPSET, required_opset(owner)))
        meta: dict[str, Any] = {"precision": self.precision}
        if self.precision == "int8":
            feeds = {n: t.detach().cpu().contiguous().numpy().astype(np.float32) for n, t in zip(names, inputs,
                                                                                                 strict=True)}
            quantize_graph(d / file, d / file, [feeds], keep=None if keep_first_conv else [])
            meta["quantization"] = {"int8_graphs": [file]}
        options = quiet_session_options(self.threads) if self.threads and self.runtime == "onnxruntime" else None
        graph = _open_graphs(d, {key: file}, meta, runtime=self.runtime, providers=None,
                             intra_op_threads=self.threads, session_options=options,
                             inference_precision="fp32")[key]
        return graph, names
