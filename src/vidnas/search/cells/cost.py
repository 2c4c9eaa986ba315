"""What a candidate cell costs on the target device: measured in the worker, by the benchmark protocol.

A cell model replaces the static decoder on every frame but the key frames, so its steady-state frame is the static
network's encoder plus the cell, and the frame it competes with is the static network's (encoder plus static decoder).
The encoder of that frame runs only up to the deepest map the cell reads (``Cell.encoder_stages``,
``DynamicCellModel.encode_non_key``): a cell that reads layers 2-3 of its frame is timed without the stride-32 stage,
as it deploys.
``CostMeter`` times both **side by side** (``vidnas.bench.protocol.measure_protocol``: one push per model per round,
the order rotated, so a noisy machine slows both alike) at the deployment size, batch 1, after ``warmup`` untimed
pushes, and counts FLOPs (``vidnas.bench.protocol.component_flops``: encoder on one frame plus the cell). Weights do
not change the cost, so the trained cell is timed as it is.

Measured on the development CPU (EfficientNet-Lite0, 176x240, 1 thread, 8 frames each): one candidate's ratio
``cell frame / static frame`` repeats within about +-4 % and costs about 0.5 s; at 360x480 a few seconds.

Recorded per candidate (medians over the timed pushes, ms): ``latency_ms`` (cell model frame), ``static_latency_ms``
(static network frame), ``encoder_ms``, ``cell_ms`` (the cell inside the cell model's frame), ``static_decoder_ms``;
``latency_ratio``, the median over rounds of ``cell frame / static frame`` of the same round (the two pushes of a
round run back to back, so a slow phase of the machine cancels out of the ratio: a load spike that tripled one
round's times moved the ratio of medians by 30 % on the development machine), ``fps_ratio = 1 / latency_ratio``;
``gflops`` (truncated encoder + cell), ``cell_gflops``, ``encoder_stages`` (0..4, the stages a non-key frame runs),
``model_params`` (static network + cell), the deployment ``height`` and
``width``, the timed ``frames`` and the torch ``threads``.
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vidnas.bench.protocol import component_flops, measure_protocol
from vidnas.models.cells import Cell, DynamicCellModel

__all__ = ["CostMeter"]


@dataclass
class CostMeter:
    """Steady-state cost of cells on this device (module docstring); picklable, sent once to every worker.

    Attributes:
        static: the static arch2 network (its device is where timing runs).
        img_size: deployment (H, W).
        frames: timed pushes per model.
        warmup: untimed pushes per model first.
    """

    static: nn.Module
    img_size: tuple[int, int]
    frames: int = 10
    warmup: int = 2

    def __post_init__(self) -> None:
        if self.frames < 1 or self.warmup < 0:
            raise ValueError(f"cost measurement needs frames >= 1 and warmup >= 0, got {self.frames} and "
                             f"{self.warmup}")
        self.img_size = (int(self.img_size[0]), int(self.img_size[1]))
        self.static.eval()

    def measure(self, cell: Cell) -> dict[str, Any]:
        """Time ``cell`` (encoder + cell) against the static network; returns the record described above."""
        device = next(iter(self.static.parameters())).device
        cell = copy.deepcopy(cell).to(device).eval()
        # the cell model gets its own copy of the static network: the protocol's timing hooks sit on each model's
        # encoder, and a shared encoder would mix the two models' encoder times
        model = DynamicCellModel(copy.deepcopy(self.static), cell).eval()
        res = measure_protocol({"static": self.static, "cell": model}, img_size=self.img_size, warmup=self.warmup,
                               frames=self.frames)
        flops = component_flops(model, self.img_size)
        s, c = res["static"], res["cell"]
        ratio = statistics.median(a / b for a, b in zip(c.frame.samples_ms, s.frame.samples_ms, strict=True))
        return {
            "latency_ms": c.frame.median_ms,
            "static_latency_ms": s.frame.median_ms,
            "latency_ratio": ratio,
            "fps_ratio": 1.0 / ratio,
            "encoder_ms": c.encoder.median_ms,
            "cell_ms": c.decoder.median_ms,
            "static_decoder_ms": s.decoder.median_ms,
            "gflops": flops["total"] / 1e9,
            "cell_gflops": flops["decoder"] / 1e9,
            "encoder_stages": cell.encoder_stages,
            "model_params": sum(p.numel() for p in model.parameters()),
            "height": self.img_size[0],
            "width": self.img_size[1],
            "frames": self.frames,
            "threads": torch.get_num_threads(),
        }
