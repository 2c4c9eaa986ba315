"""Exact incremental decoding of causal temporal decoders: one decoder time step per new frame, same logits as the
window decode.

The window decode of a causal decoder (``WindowStreamer``, the ST-NAS FPS protocol) runs every layer over the ``w``
frames of the window each time a frame arrives, with zero temporal padding at the window's start. Most of that work
was already done for the previous frame. This module compiles a decoder into a flat *program* of nodes over
*registers* (one register per intermediate tensor) and runs it one time step at a time with carried state.

Program (``compile_decoder``):
    * ``tconv``: a causal temporal convolution ``y_t = sum_j W_j * x_{t - lag_j}``, ``lag_j = (k - 1 - j) * d``
      (the kernel taps, oldest first), plus pointwise post-ops (BatchNorm, ReLU) fused into the node;
    * ``map``: an op that treats time steps independently (spatial / separable / 1x1x1 convs, BatchNorm, ReLU, the
      per-frame head), applied to one time step;
    * ``add``: ``x_a + x_b`` then post-ops (the residual ``relu(conv2(conv1(x)) + skip(x))``);
    * ``upadd``: ``up(x_a, size of x_b) + x_b`` then post-ops, ``up`` the bilinear resize of each time step (the
      top-down fusion of a multi-scale decoder, ``vidnas.models.decoders.mstcn``).

Decoders describe their own dataflow. A window decoder (of every window family of ``vidnas.models.decoders``) has a
method ``incremental_program(g)``: it asks the ``ProgramBuilder`` ``g`` for one input register per feature map it
reads (``g.inputs(n)``; the SP-TCN reads one, ``MultiScaleDecoder`` one per encoder scale) and builds the program
with ``g.visit(module, register)``, ``g.map(module, register)``, ``g.add(a, b)`` and ``g.resize_add(a, b)``; a
composite block (the SP-TCN's ``ResidualLayer``) describes itself the same way with ``incremental_visit(g, r)``.
``visit`` knows the leaf modules (temporal convolutions, per-frame modules, BatchNorm, ReLU, ``nn.Sequential``), so
this module names no decoder. Every map is one more input register; nothing else changes below, since the plan
treats every node the same whatever its inputs are.

Each register ``r`` has a *context* ``R(r)``: the number of past frames it depends on (the sum of ``(k - 1) * d`` on
the longest path from the decoder input), so the decoder's temporal receptive field is ``RF = R(out) + 1``; and a
*reach* ``E(r)``: how many frames later the output still depends on it.

Exactness. Inside the window decode of the window that starts at frame ``s``, the value of register ``r`` at window
position ``p`` (frame ``s + p``) is

    * *clean* when ``p >= R(r)``: it never touched the zero padding, so it equals the value of an unbounded causal
      decode at frame ``s + p`` and is the same in every window that holds that frame;
    * *dirty* when ``p < R(r)``: it saw the zero padding of *this* window's start, so it belongs to this window only;
    * *needed* only when ``p >= w - 1 - E(r)`` (the target is the last position, ``w - 1``).

Each step therefore computes, per register: one clean value for the new frame (the unbounded stream ``U``, when
``R(r) <= w - 1``) and the dirty values of the windows still open, at positions ``max(0, w - 1 - E(r)) ..
min(R(r), w) - 1`` (one *slot* each; all of them in one batched call). A window's dirty value at position ``p`` is
computed when its frame arrives, i.e. by the window that is then at position ``p``, and read back from the state
later. When ``w >= RF`` nothing is ever dirty: the program is the classic streaming decoder in which every temporal
convolution keeps its last ``(k - 1) * d`` inputs (WaveNet's fast generation). When ``w < RF`` (SP-TCN's 43-frame
receptive field in an 11-frame window) the dirty triangle is recomputed every step, which is still well under the
full window: e.g. the expensive first conv reading 768 encoder channels runs for 3 positions instead of 11.

Video start. The window decode repeats the first frame ``x_0`` to fill the window. The first push therefore runs the
window decode of ``[x_0] * w`` once, recording every register at every position (``D_r[p]``), and builds the state
from it: a window that started ``q`` frames before frame 0 has seen only ``x_0``, so its dirty value at position
``q`` is ``D_r[q]``; a clean value at any frame ``<= 0`` is the steady state ``D_r[w - 1]``. Every later push is a
step. Both are exact by construction; ``tests/test_incremental.py`` checks them against ``WindowStreamer`` over
streams of 3w + 3 frames (every state lag is below ``w``, so those end in w + 4 frames of steady state).

State (``IncrementalDecoder``): a tuple of tensors, one per register read at a lag ``>= 1``, each
``(N_r, B, C_r, h, w)``: the entries ``(lag, slot)`` that a later step will read, lag-major, then one zero entry when
some tap reads before a window's start. Its layout is fixed for a given decoder and window, so the step is a static
graph (``vidnas.export.stepgraph`` exports it to ONNX with the states as explicit inputs and outputs), and
``vidnas.models.streaming.IncrementalStreamer`` runs it behind the ``Streamer`` protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidnas.models.layers import resize_to
from vidnas.models.ops import STConv3d, temporal_extent

__all__ = [
    "IncrementalError",
    "Node",
    "DecoderProgram",
    "ProgramBuilder",
    "compile_decoder",
    "incremental_support",
    "IncrementalDecoder",
]


class IncrementalError(ValueError):
    """A decoder (or mode) has no exact incremental form; the message says why and what to use instead."""


@dataclass(eq=False)
class Node:
    """One step of a decoder program.

    Attributes:
        kind: ``tconv``, ``map``, ``add`` or ``upadd``.
        inputs: input register ids (one; two for ``add`` and ``upadd``).
        out: output register id.
        conv: ``tconv``: the ``STConv3d`` whose ``conv`` (an ``nn.Conv3d``) is applied to the taps.
        lags: ``tconv``: lag of each kernel tap, oldest first: ``((k - 1) d, ..., d, 0)``; ``(0,)`` otherwise.
        post: modules applied after the node's core, each to a ``(N, C, 1, h, w)`` tensor (``nn.ReLU`` runs out of
            place, so no stored tensor is ever modified).
    """

    kind: str
    inputs: tuple[int, ...]
    out: int
    conv: STConv3d | None = None
    lags: tuple[int, ...] = (0,)
    post: list[nn.Module] = field(default_factory=list)

    @property
    def extent(self) -> int:
        """Frames of past context the node adds: ``(k - 1) * d`` for ``tconv``, 0 otherwise."""
        return max(self.lags)


@dataclass
class DecoderProgram:
    """A decoder flattened to nodes over registers (registers ``0 .. num_inputs - 1``: the decoder inputs, one
    encoder feature per frame each; a single-input decoder has register 0 only).

    Attributes:
        nodes: in execution order.
        num_registers: registers used (ids ``0 .. num_registers - 1``).
        output: the register holding the logits (B, K, h, w) per frame.
        context: ``R(r)`` per register: past frames it depends on.
        reach: ``E(r)`` per register: frames later the output still depends on it.
        num_inputs: input registers (feature maps per frame).
    """

    nodes: list[Node]
    num_registers: int
    output: int
    context: list[int]
    reach: list[int]
    num_inputs: int = 1

    @property
    def receptive_field(self) -> int:
        """Frames the output at t depends on: ``R(out) + 1`` (the decoder's ``temporal_receptive_field()``)."""
        return self.context[self.output] + 1


class ProgramBuilder:
    """Builds a program. A decoder's ``incremental_program(g)`` gets one as ``g``, calls ``inputs`` once, then
    ``visit`` (any module), ``add`` and ``resize_add``, and returns its output register; a composite module's
    ``incremental_visit(g, r)`` does the same from its input register ``r``."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.input_registers = [0]  # register 0 is the input of a single-input decoder
        self.n = 1

    def _new(self) -> int:
        self.n += 1
        return self.n - 1

    def inputs(self, count: int) -> list[int]:
        """The input registers of a decoder reading ``count`` feature maps per frame, in its input order."""
        if self.nodes or self.n != 1:
            raise RuntimeError("inputs() must be called once, before any node is built")
        if count < 1:
            raise ValueError(f"a decoder needs at least one input, got {count}")
        self.input_registers = list(range(count))
        self.n = count
        return list(self.input_registers)

    def add(self, a: int, b: int, *, post: Sequence[nn.Module] = ()) -> int:
        """``x_a + x_b`` (the same shape), then the pointwise ``post`` modules (e.g. a residual's ReLU)."""
        out = self._new()
        self.nodes.append(Node("add", (a, b), out, post=list(post)))
        return out

    def resize_add(self, a: int, b: int) -> int:
        """``up(x_a, size of x_b) + x_b``: bilinear resize of each time step of ``a`` to ``b``'s size, then add."""
        out = self._new()
        self.nodes.append(Node("upadd", (a, b), out))
        return out

    def map(self, module: nn.Module, r: int) -> int:
        """``module`` applied to each time step of ``x_r`` alone."""
        out = self._new()
        self.nodes.append(Node("map", (r,), out, post=[module]))
        return out

    def visit(self, m: nn.Module, r: int) -> int:
        """``m`` applied to ``x_r`` as program nodes; returns the output register."""
        if isinstance(m, nn.Identity):  # includes the decoder op IdentityOp
            return r
        own = getattr(m, "incremental_visit", None)
        if callable(own):  # a composite module describing its own dataflow (the SP-TCN's ``ResidualLayer``)
            return own(self, r)
        if getattr(m, "per_frame", False) is True:
            return self.map(m, r)  # per-frame modules (``PerFrame``): one time step at a time
        if isinstance(m, STConv3d):
            if m.temporal_extent == 0:
                return self.map(m, r)
            if not m.causal:
                raise IncrementalError("a centred temporal convolution reads later frames; only causal decoders "
                                       "decode incrementally")
            conv = m.conv
            if conv.stride != (1, 1, 1):
                raise IncrementalError(f"strided temporal convolution {conv} has no one-step form")
            kt, dt = conv.kernel_size[0], conv.dilation[0]
            out = self._new()
            self.nodes.append(Node("tconv", (r,), out, conv=m, lags=tuple((kt - 1 - j) * dt for j in range(kt))))
            return out
        if isinstance(m, nn.Sequential):
            for child in m:
                r = self.visit(child, r)
            return r
        if isinstance(m, nn.Conv3d):
            if m.kernel_size[0] != 1 or m.padding[0] != 0 or m.stride[0] != 1:
                raise IncrementalError(f"{m} mixes time steps outside an STConv3d; it has no one-step form")
            return self.map(m, r)
        if isinstance(m, nn.BatchNorm3d | nn.ReLU) or (not list(m.children()) and temporal_extent(m) == 0
                                                      and not isinstance(m, nn.modules.conv._ConvNd)):
            # leaf ops with no temporal context (BatchNorm, ReLU, a user op declaring temporal_extent 0) act on each
            # time step alone, which the decoder op contract requires of ops without temporal padding
            return self.map(m, r)
        raise IncrementalError(f"no incremental form for the decoder module {type(m).__name__}; only causal "
                               "SP-TCN / full-channels / TCNNAS-derived decoders, multi-scale (mstcn) decoders, "
                               "the per-frame head and modules describing their dataflow (incremental_program, "
                               "incremental_visit) have one")


def _fuse(nodes: list[Node], output: int) -> list[Node]:
    """Fold each ``map`` node into the node producing its input when nothing else reads that register."""
    uses: dict[int, int] = {output: 1}
    for n in nodes:
        for r in n.inputs:
            uses[r] = uses.get(r, 0) + 1
    producer = {n.out: n for n in nodes}
    out: list[Node] = []
    for n in nodes:
        src = producer.get(n.inputs[0])
        if n.kind == "map" and src is not None and uses.get(n.inputs[0], 0) == 1:
            src.post.extend(n.post)
            src.out = n.out
            producer[n.out] = src
            continue
        out.append(n)
    return out


def compile_decoder(decoder: nn.Module) -> DecoderProgram:
    """Flatten a causal decoder into a ``DecoderProgram``.

    Supported: any decoder with an ``incremental_program(g)`` method (its dataflow over ``ProgramBuilder``
    registers: ``SPTCNDecoder`` with baseline 3x3x3 convs, full channels or any ``layer_ops`` whose ops are built from
    ``STConv3d`` / BatchNorm / ReLU / identity, as every op of ``OPS`` is; the multi-input ``MultiScaleDecoder`` and
    ``StaticFusionDecoder``; the per-frame ``HeadDecoder``), and any module built from the modules ``visit`` knows.

    Raises:
        IncrementalError: a centred decoder, or a module with no one-step form (the message names it).
    """
    comp = ProgramBuilder()
    program = getattr(decoder, "incremental_program", None)
    if callable(program):  # the decoder describes its own dataflow
        if getattr(decoder, "causal", True) is False:
            raise IncrementalError("the decoder is centred: its output at frame t reads frames after t, so it "
                                   "cannot run one frame at a time")
        output = program(comp)
    else:
        output = comp.visit(decoder, 0)
    if output in comp.input_registers:
        output = comp.map(nn.Identity(), output)
    nodes = _fuse(comp.nodes, output)
    # renumber registers densely in execution order, the inputs first
    ids = {r: i for i, r in enumerate(comp.input_registers)}
    for n in nodes:
        ids[n.out] = len(ids)
    for n in nodes:
        n.inputs = tuple(ids[r] for r in n.inputs)
        n.out = ids[n.out]
    output = ids[output]
    num = len(ids)
    context = [0] * num
    for n in nodes:
        context[n.out] = max(context[r] for r in n.inputs) + n.extent
    reach = [-1] * num
    reach[output] = 0
    for n in reversed(nodes):
        for r in n.inputs:
            reach[r] = max(reach[r], reach[n.out] + n.extent)
    return DecoderProgram(nodes=nodes, num_registers=num, output=output, context=context, reach=reach,
                          num_inputs=len(comp.input_registers))


def incremental_support(model: Any, window: int | None = None) -> str | None:
    """None when ``model`` (a ``VideoSegmenter``) can stream incrementally, else the reason it cannot."""
    if not getattr(model, "causal", False):
        return ("the model is centred (its target frame sits in the middle of the window, so the decode reads later "
                "frames); it streams with the window decode")
    try:
        compile_decoder(model.decoder)
    except IncrementalError as e:
        return str(e)
    return None


# ------------------------------------------------------------------------------------------------------- the plan

_U = -1  # slot key of the clean (unbounded-stream) value


@dataclass
class _RegisterPlan:
    slots: list[int]  # window positions of the dirty slots, then _U when the register has a clean value
    context: int

    def slot(self, p: int) -> int:
        """Slot index holding the value at window position ``p`` (0 <= p < w)."""
        return self.slots.index(_U if p >= self.context else p)


@dataclass
class _StatePlan:
    register: int
    entries: list[tuple[int, int]]  # (lag >= 1, slot), lag-major; a zero entry follows when `zero`
    zero: bool
    update_from_cur: list[int]  # slots of the current value copied to the lag-1 entries
    update_from_old: list[int]  # old-state entries copied to the lag >= 2 entries (then the zero entry)

    def index(self, lag: int, slot: int) -> int:
        return self.entries.index((lag, slot))

    @property
    def zero_index(self) -> int:
        return len(self.entries)


@dataclass
class _NodePlan:
    out_slots: int
    # per input (map/add) or per tap (tconv): (lag, index list); lag 0 indexes the input's current slots, lag >= 1
    # its state entries (the zero entry included)
    reads: list[tuple[int, list[int]]]


class _Plan:
    """Slots, reads and state layout of a program streamed with window ``w`` (see the module docstring)."""

    def __init__(self, program: DecoderProgram, window: int) -> None:
        w = window
        self.window = w
        regs = []
        for r in range(program.num_registers):
            ctx, reach = program.context[r], program.reach[r]
            lo, hi = max(0, w - 1 - reach), min(ctx, w) - 1
            slots = list(range(lo, hi + 1)) + ([_U] if ctx <= w - 1 else [])
            regs.append(_RegisterPlan(slots=slots, context=ctx))
        self.registers = regs
        reads: dict[int, set[tuple[int, int]]] = {}  # register -> {(lag >= 1, slot)}; slot -2 = zero
        raw: list[list[tuple[int, int, list[int]]]] = []  # per node: (register, lag, slot list or -2 for zero)
        for n in program.nodes:
            out = regs[n.out]
            node_reads = []
            if n.kind == "tconv":
                src = regs[n.inputs[0]]
                for lag in n.lags:
                    idx = []
                    for s in out.slots:
                        if s == _U:
                            idx.append(src.slots.index(_U))
                        elif s - lag < 0:
                            idx.append(-2)
                        else:
                            idx.append(src.slot(s - lag))
                    node_reads.append((n.inputs[0], lag, idx))
            else:
                for r in n.inputs:
                    src = regs[r]
                    node_reads.append((r, 0, [src.slots.index(_U) if s == _U else src.slot(s) for s in out.slots]))
            for r, lag, idx in node_reads:
                if lag >= 1:
                    reads.setdefault(r, set()).update((lag, i) for i in idx)
            raw.append(node_reads)
        self.states: list[_StatePlan] = []
        state_of: dict[int, _StatePlan] = {}
        for r in sorted(reads):
            zero = any(i == -2 for _, i in reads[r])
            real = {(lag, i) for lag, i in reads[r] if i != -2}
            max_lag = max(lag for lag, _ in reads[r])
            entries: list[tuple[int, int]] = []
            for lag in range(1, max_lag + 1):  # keep a slot at every lag until its last read
                entries += [(lag, i) for i in sorted({i for lg, i in real if lg >= lag})]
            sp = _StatePlan(register=r, entries=entries, zero=zero, update_from_cur=[], update_from_old=[])
            sp.update_from_cur = [i for lag, i in entries if lag == 1]
            sp.update_from_old = [sp.index(lag - 1, i) for lag, i in entries if lag >= 2]
            if zero:
                sp.update_from_old.append(sp.zero_index)
            self.states.append(sp)
            state_of[r] = sp
        self.state_of = state_of
        self.nodes: list[_NodePlan] = []
        for n, node_reads in zip(program.nodes, raw, strict=True):
            plan_reads = []
            for r, lag, idx in node_reads:
                if lag == 0:
                    plan_reads.append((0, idx))
                else:
                    sp = state_of[r]
                    plan_reads.append((lag, [sp.zero_index if i == -2 else sp.index(lag, i) for i in idx]))
            self.nodes.append(_NodePlan(out_slots=len(regs[n.out].slots), reads=plan_reads))

    def state_slots(self) -> int:
        """Feature maps held in the state (all registers, all entries, zero entries included)."""
        return sum(len(sp.entries) + int(sp.zero) for sp in self.states)


def _take(src: torch.Tensor, idx: Sequence[int]) -> torch.Tensor:
    """``src[idx]`` along dim 0: the tensor itself, a slice when ``idx`` is a contiguous range, else a gather."""
    n = len(idx)
    if n == 0:
        return src[:0]
    if n == src.shape[0] and list(idx) == list(range(n)):
        return src
    if list(idx) == list(range(idx[0], idx[0] + n)):
        return src[idx[0] : idx[0] + n]
    return src.index_select(0, torch.tensor(list(idx), dtype=torch.long, device=src.device))


def _post(post: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for m in post:
        if isinstance(m, nn.ReLU):
            x = torch.relu(x)
        elif x.shape[2] == 1 and isinstance(m, STConv3d | nn.Conv3d) and _is_frame_conv(_conv3d(m)):
            x = _frame_conv(_conv3d(m), x)
        else:
            x = m(x)
    return x


def _conv3d(m: STConv3d | nn.Conv3d) -> nn.Conv3d:
    return m.conv if isinstance(m, STConv3d) else m


def _is_frame_conv(conv: nn.Conv3d) -> bool:
    return conv.kernel_size[0] == 1 and conv.padding[0] == 0 and conv.padding_mode == "zeros"


def _frame_conv(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """A per-frame conv (temporal kernel 1: a map node's) on one time step as the 2D conv it is: (N, C, 1, h, w) ->
    (N, C', 1, h, w). PyTorch's CPU Conv3d takes a slow path on such inputs; oneDNN's 2D one is several times
    faster. The window decode keeps the 3D conv (same values up to float rounding)."""
    y = F.conv2d(x.squeeze(2), conv.weight.squeeze(2), conv.bias, conv.stride[1:], conv.padding[1:],
                 conv.dilation[1:], conv.groups)
    return y.unsqueeze(2)


def _up_time(x: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of each time step: (B, C, T, h, w) -> (B, C, T, H, W) (``MultiScaleDecoder``'s ``up``)."""
    b, c, t, h, w = x.shape
    if (h, w) == tuple(hw):
        return x
    z = resize_to(x.transpose(1, 2).reshape(b * t, c, h, w), hw)  # (B*T, C, H, W)
    return z.reshape(b, t, c, *z.shape[-2:]).transpose(1, 2)


def _features(feature: torch.Tensor | Sequence[torch.Tensor], count: int) -> list[torch.Tensor]:
    """The decoder inputs of one frame as a list: one tensor, or a sequence of ``count`` (a multi-input decoder)."""
    feats = [feature] if isinstance(feature, torch.Tensor) else list(feature)
    if len(feats) != count:
        raise ValueError(f"expected {count} feature map(s) per frame (one per decoder input), got {len(feats)}")
    return feats


class IncrementalDecoder(nn.Module):
    """A causal decoder run one time step per call: exact equality with the window decode of window ``w``.

    ``forward(feature, state)`` with an empty state runs the first frame (the window decode of ``[x_0] * w``) and
    returns the initial state; with a state, one step. The decoder's modules are shared, not copied (this module is
    a view of the decoder; it moves with the model). A multi-input decoder (``MultiScaleDecoder``) takes ``feature``
    as a sequence of its per-frame maps, in its input order (what ``MultiScaleSegmenter.encode`` returns).

    Args:
        decoder: a causal decoder ``compile_decoder`` accepts.
        window: the window ``w`` whose decode is reproduced.

    Shapes:
        feature (B, C, h, w) (or a sequence of (B, C_i, h_i, w_i)), state: tuple of (N_r, B, C_r, h_r, w_r) ->
        logits (B, K, h, w), new state.

    Raises:
        IncrementalError: no incremental form (centred decoder, unknown module).
    """

    def __init__(self, decoder: nn.Module, window: int) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.decoder = decoder
        self.window = int(window)
        self.program = compile_decoder(decoder)
        self.plan = _Plan(self.program, self.window)
        self._weights: dict[int, tuple[Any, torch.Tensor]] = {}

    @property
    def receptive_field(self) -> int:
        """Temporal receptive field of the decoder (frames)."""
        return self.program.receptive_field

    @property
    def exact_window_free(self) -> bool:
        """True when ``w >= RF``: no dirty slots, each temporal conv keeps only its last ``(k - 1) d`` inputs."""
        return self.window >= self.receptive_field

    @property
    def num_inputs(self) -> int:
        """Feature maps per frame the decoder reads (1, or one per scale of a multi-scale decoder)."""
        return self.program.num_inputs

    def forward(self, feature: torch.Tensor | Sequence[torch.Tensor], state: tuple[torch.Tensor, ...] = ()
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(B, C, h, w) [+ state] -> logits (B, K, h, w), new state (``init`` when ``state`` is empty)."""
        if not state:
            return self.init(feature)
        return self.step(feature, state)

    # -------------------------------------------------------------------------------------------- first frame

    def init(self, feature: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """First frame of a video: the window decode of ``w`` copies of it, and the state that decode implies.

        Args:
            feature: (B, C, h, w), or one such map per decoder input.

        Returns:
            logits (B, K, h, w) of the frame, the state.
        """
        w = self.window
        seq: list[torch.Tensor | None] = [None] * self.program.num_registers
        for i, f in enumerate(_features(feature, self.program.num_inputs)):
            seq[i] = f.unsqueeze(2).expand(-1, -1, w, -1, -1).contiguous()  # (B, C, T=w, h, w)
        for n in self.program.nodes:
            if n.kind == "tconv":
                assert n.conv is not None
                y = n.conv(seq[n.inputs[0]])  # zero temporal padding at the window start, as the window decode
            elif n.kind == "add":
                a, b = seq[n.inputs[0]], seq[n.inputs[1]]
                assert a is not None and b is not None
                y = a + b
            elif n.kind == "upadd":
                a, b = seq[n.inputs[0]], seq[n.inputs[1]]
                assert a is not None and b is not None
                y = _up_time(a, b.shape[-2:]) + b
            else:
                y = seq[n.inputs[0]]
            seq[n.out] = _post(n.post, y)  # (B, C_r, T=w, h, w)
        states = []
        for sp in self.plan.states:
            d = seq[sp.register]
            assert d is not None
            slots = self.plan.registers[sp.register].slots
            positions = [w - 1 if slots[i] == _U else slots[i] for _, i in sp.entries]
            if not positions:  # only the zero entry: no empty gather (OpenVINO cannot read one in an ONNX graph)
                states.append(d.new_zeros((int(sp.zero), d.shape[0], d.shape[1], *d.shape[3:])))
                continue
            st = d.index_select(2, torch.tensor(positions, dtype=torch.long, device=d.device))  # (B, C, N, h, w)
            st = st.permute(2, 0, 1, 3, 4)  # (N, B, C, h, w)
            if sp.zero:
                st = torch.cat([st, st.new_zeros((1, *st.shape[1:]))])
            states.append(st.contiguous())
        out = seq[self.program.output]
        assert out is not None
        return out[:, :, w - 1], tuple(states)

    # ---------------------------------------------------------------------------------------------- one step

    def _conv_weight(self, n: Node) -> torch.Tensor:
        """The temporal conv's weight as a 2D conv over taps stacked along channels: (C_out, k * C_in, kh, kw)."""
        assert n.conv is not None
        weight = n.conv.conv.weight  # (C_out, C_in, k, kh, kw)
        key = (weight.data_ptr(), weight._version, weight.device, weight.dtype, weight.shape)
        cached = self._weights.get(id(n))
        if cached is not None and cached[0] == key and not torch.jit.is_tracing():
            return cached[1]
        w2 = weight.permute(0, 2, 1, 3, 4).reshape(weight.shape[0], -1, *weight.shape[3:])
        if not torch.jit.is_tracing():
            self._weights[id(n)] = (key, w2.contiguous())
            return self._weights[id(n)][1]
        return w2

    def _tconv(self, n: Node, taps: list[torch.Tensor]) -> torch.Tensor:
        """taps: k tensors (S, B, C, h, w), oldest first -> (S * B, C_out, 1, h, w)."""
        assert n.conv is not None
        conv = n.conv.conv
        s, b, c, h, w = taps[0].shape
        if conv.groups == 1:
            # a (k, kh, kw) conv with no temporal padding on k frames = a 2D conv over the taps stacked along channels
            x = torch.stack(taps, dim=2)  # (S, B, k, C, h, w)
            y = F.conv2d(x.reshape(s * b, len(taps) * c, h, w), self._conv_weight(n), conv.bias, 1,
                         conv.padding[1:], conv.dilation[1:])
            return y.unsqueeze(2)  # (S * B, C_out, 1, h, w)
        x = torch.stack(taps, dim=3).reshape(s * b, c, len(taps), h, w)  # (S * B, C, k, h, w)
        return F.conv3d(x, conv.weight, conv.bias, 1, (0, *conv.padding[1:]), (1, *conv.dilation[1:]), conv.groups)

    def step(self, feature: torch.Tensor | Sequence[torch.Tensor], state: Sequence[torch.Tensor]
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One frame after the first.

        Args:
            feature: (B, C, h, w), the new frame's encoder feature (one per decoder input).
            state: the state returned by the previous ``init`` or ``step``.

        Returns:
            logits (B, K, h, w) of the new frame, the new state.
        """
        plan = self.plan
        if len(state) != len(plan.states):
            raise ValueError(f"expected a state of {len(plan.states)} tensors, got {len(state)}")
        old = {sp.register: t for sp, t in zip(plan.states, state, strict=True)}
        cur: list[torch.Tensor | None] = [None] * self.program.num_registers
        feats = _features(feature, self.program.num_inputs)
        for i, f in enumerate(feats):
            cur[i] = f.unsqueeze(0)  # (S=1, B, C, h, w): an input has only its clean slot
        b = feats[0].shape[0]
        for n, npl in zip(self.program.nodes, plan.nodes, strict=True):
            gathered = []
            for (lag, idx), r in zip(npl.reads, n.inputs * len(npl.reads) if n.kind == "tconv" else n.inputs,
                                     strict=True):
                src = cur[r] if lag == 0 else old[r]
                assert src is not None
                gathered.append(_take(src, idx))  # (S_out, B, C, h, w)
            if n.kind == "tconv":
                y = self._tconv(n, gathered)
            elif n.kind == "upadd":
                a, c = (g.reshape(-1, *g.shape[2:]) for g in gathered)  # (S * B, C, h_a, w_a), (S * B, C, h, w)
                y = (resize_to(a, c.shape[-2:]) + c).unsqueeze(2)  # (S * B, C, 1, h, w)
            else:
                y = gathered[0] if n.kind == "map" else gathered[0] + gathered[1]
                y = y.reshape(-1, *y.shape[2:]).unsqueeze(2)  # (S * B, C, 1, h, w)
            y = _post(n.post, y)  # (S * B, C', 1, h, w)
            cur[n.out] = y.reshape(npl.out_slots, b, *y.shape[1:2], *y.shape[3:])  # (S, B, C', h, w)
        new_state = []
        for sp in plan.states:
            c = cur[sp.register]
            assert c is not None
            parts = [_take(c, sp.update_from_cur)] if sp.update_from_cur else []
            if sp.update_from_old:
                parts.append(_take(old[sp.register], sp.update_from_old))
            new_state.append(torch.cat(parts) if len(parts) > 1 else parts[0].clone())
        out = cur[self.program.output]
        assert out is not None
        return out[0], tuple(new_state)  # the output register has one slot: window position w - 1
