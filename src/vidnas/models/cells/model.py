"""The dynamic cell and the video model it plugs into [CELLS Sec. 3] (layout in ``vidnas.models.cells``).

``Cell`` computes one frame's ``dec`` and ``pred`` from the previous frame's tensors and the current encoder maps;
``DynamicCellModel`` runs the static segmenter on the first (key) frame and the encoder + cell on the following ones.

The static network. Any per-frame network vidnas builds whose decoder has arch2's tail (``STATIC_DECODERS``) is one,
held as a ``StaticSegmenter`` (``as_static_network``, ``build_static_network``):

* ``arch2`` on any encoder (``vidnas train --model arch2``; the encoder's own depths: ``decoder: arch2`` never reads
  ``model.encoder_depths``);
* an ``arch2_space`` point without a temporal op (``arch.decoder_ops`` free of ``TEMPORAL_OPS``), at any encoder
  depths: the per-frame result of ``vidnas search stnas --model arch2_space`` trained by ``vidnas train --arch``, or
  the space's arch2 point (``ARCH2_OPS``) on a searched, shallower encoder (``arch.depths``). Its decoder runs per
  frame as an ``Arch2SpaceFrameDecoder`` holding the same weights.

What the cell reads from it, whichever it is: the encoder outputs ``layer2``, ``layer3``, ``layer4`` (strides 8, 16,
32; the encoder's channels ``C2, C3, C4``, whatever its depths) and ``dec``, the static decoder's final feature
before its classifier (F channels at stride 8: F = 64 for arch2, ``arch.fuse_channels`` for an ``arch2_space``
point): the output of arch2's last residual block (``block3``; ``blocks.2`` in the space), whose Conv1x1 gives
``pred``. A key frame runs the whole static network; a non-key frame its encoder up to the deepest map the cell reads,
then the cell. A decoder with a temporal op, or of another family (SP-TCN, MS-TCN, the per-frame head: no ``dec``),
is refused (``static_network_error``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vidnas.config import Config
from vidnas.models.architecture import Arch
from vidnas.models.build import build_model
from vidnas.models.cells.aggregations import AGGREGATIONS
from vidnas.models.cells.genotype import CELL_INPUTS, NUM_CELL_INPUTS, CellError, CellGenotype, CellLayer
from vidnas.models.cells.ops import CELL_OPS
from vidnas.models.decoders.arch2_space import ARCH2_OPS, TEMPORAL_OPS, Arch2SpaceDecoder, Arch2SpaceFrameDecoder
from vidnas.models.decoders.static import ARCH2_CHANNELS
from vidnas.models.layers import ConvBNReLU, resize_to
from vidnas.models.multiscale import MultiScaleSegmenter
from vidnas.models.static_segmenter import StaticSegmenter, build_static_segmenter
from vidnas.models.streaming import FrameStreamer, check_key_interval, check_stream_options, is_key_frame

__all__ = [
    "STATIC_DECODERS",
    "CellOutput",
    "Cell",
    "DynamicCellModel",
    "cell_in_channels",
    "static_network_error",
    "as_static_network",
    "build_static_network",
    "build_cell_model",
]

STATIC_DECODERS: tuple[str, ...] = ("arch2", "arch2_space")  # decoder families with arch2's dec (module docstring)


class _CellLayerModule(nn.Module):
    def __init__(self, layer: CellLayer, channels: int) -> None:
        super().__init__()
        self.inputs = layer.inputs
        self.op1 = CELL_OPS[layer.ops[0]](channels)
        self.op2 = CELL_OPS[layer.ops[1]](channels)
        self.agg = AGGREGATIONS[layer.aggregation](channels)

    def forward(self, pool: list[torch.Tensor]) -> torch.Tensor:
        return self.agg(self.op1(pool[self.inputs[0]]), self.op2(pool[self.inputs[1]]))


@dataclass
class CellOutput:
    """``dec`` (B, 64, h8, w8): the next frame's dec; ``pred`` (B, K, h8, w8): logits at stride 8."""

    dec: torch.Tensor
    pred: torch.Tensor


class Cell(nn.Module):
    """A dynamic cell built from a genotype (layout in the module docstring).

    Only the cell inputs some layer reads get an adapter (and are computed).

    Args:
        genotype: the architecture.
        in_channels: channels of the five inputs, in ``CELL_INPUTS`` order: (C4, 64, C2, C3, C4) for arch2.
        num_classes: K.
        channels: cell width (64).

    Shapes:
        inputs: five tensors ``prev_layer4 (B, C4, H/32, W/32)``, ``prev_dec (B, 64, H/8, W/8)``,
        ``layer2 (B, C2, H/8, W/8)``, ``layer3 (B, C3, H/16, W/16)``, ``layer4 (B, C4, H/32, W/32)`` (entries the
        cell does not read may be None) -> ``CellOutput(dec (B, 64, H/8, W/8), pred (B, K, H/8, W/8))``.
    """

    def __init__(self, genotype: CellGenotype, *, in_channels: Sequence[int], num_classes: int,
                 channels: int = ARCH2_CHANNELS) -> None:
        super().__init__()
        if len(in_channels) != NUM_CELL_INPUTS:
            raise CellError(f"a cell has {NUM_CELL_INPUTS} inputs ({', '.join(CELL_INPUTS)}), got "
                            f"{len(in_channels)} channel counts")
        self.genotype = genotype
        self.in_channels = tuple(int(c) for c in in_channels)
        self.channels = channels
        self.num_classes = num_classes
        self.used_inputs = genotype.used_inputs()
        self.encoder_stages = genotype.encoder_stages()
        self.unused = genotype.unused()
        self.adapters = nn.ModuleDict({str(i): ConvBNReLU(self.in_channels[i], channels, 1) for i in self.used_inputs})
        self.layers = nn.ModuleList(_CellLayerModule(layer, channels) for layer in genotype.layers)
        self.out_conv = ConvBNReLU(channels * len(self.unused), channels, 1)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    @classmethod
    def from_tokens(cls, tokens: Sequence[int], *, in_channels: Sequence[int], num_classes: int,
                    ops: Sequence[str] | None = None, aggregations: Sequence[str] | None = None,
                    channels: int = ARCH2_CHANNELS) -> Cell:
        """``Cell(CellGenotype.from_tokens(tokens, ops=ops, aggregations=aggregations), ...)``."""
        geno = CellGenotype.from_tokens(tokens, ops=ops, aggregations=aggregations)
        return cls(geno, in_channels=in_channels, num_classes=num_classes, channels=channels)

    def to_tokens(self) -> list[int]:
        return self.genotype.to_tokens()

    def describe(self) -> str:
        return self.genotype.describe()

    def forward(self, inputs: Sequence[torch.Tensor | None], out_hw: Sequence[int] | None = None) -> CellOutput:
        """Run the cell (shapes in the class docstring); ``out_hw`` = stride-8 size, default ``layer2``'s."""
        if len(inputs) != NUM_CELL_INPUTS:
            raise ValueError(f"a cell takes {NUM_CELL_INPUTS} inputs ({', '.join(CELL_INPUTS)}), got {len(inputs)}")
        if out_hw is None:
            ref = inputs[2] if inputs[2] is not None else inputs[1]
            if ref is None:
                raise ValueError("out_hw is needed when neither layer2 nor prev_dec is given")
            out_hw = ref.shape[-2:]
        pool: list[torch.Tensor] = []
        for i in range(NUM_CELL_INPUTS):
            x = inputs[i]
            if i in self.used_inputs:
                if x is None:
                    raise ValueError(f"the cell reads {CELL_INPUTS[i]} but it was not given")
                pool.append(resize_to(self.adapters[str(i)](x), out_hw))  # (B, 64, h8, w8)
            else:
                pool.append(x)  # type: ignore[arg-type]  # never read
        for layer in self.layers:
            pool.append(layer(pool))
        dec = self.out_conv(torch.cat([pool[i] for i in self.unused], dim=1))  # (B, 64 * n_unused, h8, w8) -> 64
        return CellOutput(dec=dec, pred=self.classifier(dec))

    def unroll(self, dec0: torch.Tensor, layer4: torch.Tensor, layer2: torch.Tensor,
               layer3: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Run the cell over frames 1..T-1 of a sequence whose frame 0 went through the static network.

        Args:
            dec0: (B, 64, h8, w8), the static decoder's dec on frame 0.
            layer4: (B, T, C4, h32, w32), encoder layer4 of frames 0..T-1.
            layer2: (B, T-1, C2, h8, w8), encoder layer2 of frames 1..T-1.
            layer3: (B, T-1, C3, h16, w16), encoder layer3 of frames 1..T-1.

        Returns:
            (preds, dec): ``preds[t-1]`` (B, K, h8, w8) for frames t = 1..T-1 and the last frame's dec.
        """
        dec = dec0
        preds = []
        for t in range(1, layer4.shape[1]):
            out = self((layer4[:, t - 1], dec, layer2[:, t - 1], layer3[:, t - 1], layer4[:, t]))
            dec = out.dec
            preds.append(out.pred)
        return preds, dec


# ---------------------------------------------------------------------------------------------------- video model


class DynamicCellModel(nn.Module):
    """The static network on the first frame of a sequence, encoder + dynamic cell on every following frame.

    A streamed non-key frame (``step``) runs the encoder only up to the deepest map the cell reads
    (``Cell.encoder_stages``, from the genotype: a cell that reads layers 2-3 of its frame and not ``prev_layer4``
    skips the stride-32 stage); the clip ``forward`` (training, clip evaluation) still encodes every frame in full,
    in one batch. Both give the same logits: only unread maps are skipped.

    ``VideoSegmenter``-compatible: ``forward(frames (B, T, 3, H, W)) -> (B, T, K, H, W)``; ``stream()`` returns a
    ``FrameStreamer`` (push / flush / reset) that carries ``dec`` and ``layer4`` from frame to frame and runs the static
    decoder on the first frame after a reset and, with ``key_interval=N``, on every N-th frame (the key-frame rule,
    ``vidnas.models.streaming.is_key_frame``); so streaming a sequence gives the clip forward's outputs with the same
    ``key_interval`` (tested). The static decoder's auxiliary heads are never used.

    Args:
        static: the static network (``as_static_network``: encoder, decoder with ``dec`` and ``pred``).
        cell: the dynamic cell (its ``in_channels`` must match the static encoder's).
        window: sequence length the model was trained on (informational: ``forward`` takes any T).
    """

    causal = True

    def __init__(self, static: StaticSegmenter, cell: Cell, *, window: int = 3) -> None:
        super().__init__()
        c = static.encoder_channels
        expected = (c[3], static.channels, c[1], c[2], c[3])
        if tuple(cell.in_channels) != expected:
            raise CellError(f"cell input channels {cell.in_channels} do not match the static network's {expected}")
        self.static = static
        self.cell = cell
        self.window = int(window)
        self.num_classes = static.num_classes
        self.out_size = static.out_size

    @property
    def target_index(self) -> int:
        return self.window - 1

    # The benchmark protocol (``vidnas.bench``) times ``encoder`` and ``decoder`` with forward hooks. In steady state
    # (every frame after the first, no key interval) a streamed frame runs the static encoder (up to the deepest map
    # the cell reads) and the cell: those two are this model's encoder and decoder. Properties, so the state dict
    # keeps a single copy of every weight.
    @property
    def encoder(self) -> nn.Module:
        """The static network's encoder (runs on every frame)."""
        return self.static.encoder

    @property
    def decoder(self) -> nn.Module:
        """The dynamic cell (replaces the static decoder on every non-key frame)."""
        return self.cell

    def protocol_parts(self, frame: torch.Tensor) -> tuple[tuple[Any, tuple[Any, ...]], tuple[Any, tuple[Any, ...]]]:
        """The encoder call (truncated: ``encode_non_key``) and the cell call of one steady-state streamed frame, as
        ``(fn, args)`` pairs.

        The cell's previous-frame inputs come from the static network on the same frame (their values do not change
        the cost). Used by ``vidnas.bench`` to count FLOPs.

        Args:
            frame: (1, 3, H, W).
        """
        with torch.inference_mode():
            feats = self.static.encode(frame)  # 4 x (1, C_i, h_i, w_i)
            dec = self.static.decode(feats)["dec"]  # (1, 64, h/8, w/8)
        inputs = (feats[3], dec, feats[1], feats[2], feats[3])
        return (self.encode_non_key, (frame,)), (self.cell, (inputs,))

    def encode_non_key(self, frame: torch.Tensor) -> list[torch.Tensor | None]:
        """The encoder of a non-key frame, up to the deepest map the cell reads (``Cell.encoder_stages``).

        Args:
            frame: (B, 3, H, W).

        Returns:
            ``[layer1, layer2, layer3, layer4]`` as the full encoder gives them, None for the maps past
            ``encoder_stages`` (never computed). The encoder module is always called (with ``stages=0`` it runs
            nothing), so the benchmark's timing hooks see every frame.
        """
        feats: list[torch.Tensor | None] = list(self.static.encode(frame, self.cell.encoder_stages))
        return feats + [None] * (len(self.static.encoder_channels) - len(feats))

    @property
    def genotype(self) -> CellGenotype:
        return self.cell.genotype

    def forward(self, frames: torch.Tensor, *, key_interval: int | None = None) -> torch.Tensor:
        """Clip forward.

        Args:
            frames: (B, T, 3, H, W), ImageNet-normalised.
            key_interval: also run the static network on every ``key_interval``-th frame (None: frame 0 only).

        Returns:
            (B, T, K, H_out, W_out) logits: frame 0 (and key frames) from the static network, the others from the cell.
        """
        if frames.dim() != 5:
            raise ValueError(f"expected frames of shape (B, T, 3, H, W), got {tuple(frames.shape)}")
        check_key_interval(key_interval)
        b, t, c, h, w = frames.shape
        out_hw = self.out_size or (h, w)
        feats = self.static.encode(frames.reshape(b * t, c, h, w))  # every frame's encoder in one batch
        feats = [f.reshape(b, t, *f.shape[1:]) for f in feats]  # 4 x (B, T, C_i, h_i, w_i)
        logits = []
        dec = None
        for i in range(t):
            cur = [f[:, i] for f in feats]
            if is_key_frame(i, key_interval):
                out = self.static.decode(cur)
                dec, pred = out["dec"], out["pred"]
            else:
                o = self.cell((feats[3][:, i - 1], dec, cur[1], cur[2], cur[3]))
                dec, pred = o.dec, o.pred
            logits.append(resize_to(pred, out_hw))  # (B, K, H_out, W_out)
        return torch.stack(logits, dim=1)  # (B, T, K, H_out, W_out)

    def step(self, frame: torch.Tensor, state: Any = None, *,
             key_interval: int | None = None) -> tuple[torch.Tensor, Any]:
        """One streamed frame (B, 3, H, W); ``state`` = (frame index, prev layer4, prev dec) or None at a video start.

        A key frame runs the whole static network; a non-key frame the encoder only up to the deepest map the cell
        reads (``encode_non_key``), then the cell; its carried ``layer4`` is then None when the cell reads neither
        layer4 (the next non-key frame does not read ``prev_layer4`` either).

        Returns:
            (logits (B, K, H_out, W_out), new state).
        """
        t = 0 if state is None else state[0]
        if is_key_frame(t, key_interval):
            feats: list[torch.Tensor | None] = list(self.static.encode(frame))
            out = self.static.decode(feats)
            dec, pred = out["dec"], out["pred"]
        else:
            _, prev_l4, prev_dec = state
            feats = self.encode_non_key(frame)  # only the stages the cell reads; layer4 is None without stage 4
            o = self.cell((prev_l4, prev_dec, feats[1], feats[2], feats[3]))
            dec, pred = o.dec, o.pred
        return resize_to(pred, self.out_size or frame.shape[-2:]), (t + 1, feats[3], dec)

    def stream(self, batch_size: int = 1, *, key_interval: int | None = None,
               window: int | None = None, incremental: bool | None = None) -> FrameStreamer:
        """A ``FrameStreamer`` (``vidnas.models.streaming``); eval mode first, ``reset()`` per video.

        Args:
            batch_size: B of every pushed frame.
            key_interval: re-run the full static network every ``key_interval`` frames (None: only on a video's first
                frame, the steady state being encoder + cell).
            window: accepted and ignored, so one call streams any model: the cell carries the previous frame itself.
            incremental: accepted and ignored: a frame model already runs one step per frame.
        """
        key_interval = check_stream_options(self, key_interval=key_interval, key_frames=True)
        return FrameStreamer(functools.partial(self.step, key_interval=key_interval), batch_size=batch_size,
                             training=self.training)

    def cell_parameters(self) -> Iterator[nn.Parameter]:
        return self.cell.parameters()

    def static_parameters(self) -> Iterator[nn.Parameter]:
        return self.static.parameters()


def cell_in_channels(static: StaticSegmenter) -> tuple[int, int, int, int, int]:
    """Channels of the five cell inputs for a static network: (C4, 64, C2, C3, C4)."""
    c = static.encoder_channels
    return (c[3], static.channels, c[1], c[2], c[3])


def static_network_error(arch: Arch) -> str | None:
    """Why a model of ``arch`` cannot be a cell model's static network (module docstring), or None."""
    if arch.decoder not in STATIC_DECODERS:
        return (f"its decoder is {arch.decoder!r}, which has no per-frame arch2 feature 'dec' for the cell to read; "
                f"the static network must be {' or '.join(STATIC_DECODERS)} (per frame)")
    temporal = [op for op in arch.decoder_ops or ARCH2_OPS if op in TEMPORAL_OPS] if arch.decoder == "arch2_space" \
        else []
    if temporal:
        return (f"its arch2_space decoder has the temporal op(s) {', '.join(temporal)}: the cell's key frame needs a "
                "per-frame static network (an encoding without temporal_k3 / temporal_block)")
    return None


def as_static_network(model: nn.Module) -> StaticSegmenter:
    """``model`` as the cell's static network, sharing its weights: a ``StaticSegmenter`` as it is; a per-frame
    ``arch2_space`` ``MultiScaleSegmenter`` as ``StaticSegmenter(encoder, K, decoder=Arch2SpaceFrameDecoder)`` (the
    same state-dict keys, so its checkpoint loads onto either).

    Raises:
        CellError: another model, or an ``arch2_space`` decoder with a temporal op.
    """
    if isinstance(model, StaticSegmenter):
        return model
    if isinstance(model, MultiScaleSegmenter) and isinstance(model.decoder, Arch2SpaceDecoder):
        try:
            decoder = Arch2SpaceFrameDecoder(model.decoder)
        except ValueError as e:
            raise CellError(f"not a static network: {e}") from e
        network = StaticSegmenter(model.encoder, model.num_classes, decoder=decoder, out_size=model.out_size)
        return network.train(model.training)
    raise CellError(f"a {type(model).__name__} is not a static network of the cell search (arch2 or a per-frame "
                    "arch2_space model)")


def build_static_network(cfg: Config, arch: Arch | None, *, num_classes: int) -> StaticSegmenter:
    """A fresh static network: arch2 on ``cfg.model.encoder`` (``build_static_segmenter``) when ``arch`` is None,
    else the model of ``arch`` (``build_model``; per frame, see ``static_network_error``) as a ``StaticSegmenter``.

    Raises:
        CellError: ``arch`` is not a per-frame arch2 or arch2_space architecture.
    """
    if arch is None:
        return build_static_segmenter(cfg, num_classes=num_classes)
    error = static_network_error(arch)
    if error:
        raise CellError(f"architecture {arch.name or arch.decoder!r}: {error}")
    # a per-frame model reads one frame whatever the window: build it at the config's, which build_model expects
    return as_static_network(build_model(cfg, dataclasses.replace(arch, window=cfg.data.window),
                                         num_classes=num_classes))


def build_cell_model(cfg: Config, genotype: CellGenotype, *, num_classes: int,
                     static: StaticSegmenter | None = None, static_arch: Arch | None = None) -> DynamicCellModel:
    """Static network (built from ``cfg`` and ``static_arch`` unless given) + a cell built from ``genotype``.

    Args:
        cfg: a ``vidnas.config.Config`` (``model.encoder``, ``model.weights``, ``data.height/width``,
            ``cells.seq_len``).
        genotype: the cell.
        num_classes: K.
        static: an existing static network (e.g. a trained one) instead of a fresh one.
        static_arch: the static network's architecture (``build_static_network``); None = arch2 on
            ``cfg.model.encoder``.
    """
    if static is None:
        static = build_static_network(cfg, static_arch, num_classes=num_classes)
    cell = Cell(genotype, in_channels=cell_in_channels(static), num_classes=num_classes)
    return DynamicCellModel(static, cell, window=cfg.cells.seq_len)
