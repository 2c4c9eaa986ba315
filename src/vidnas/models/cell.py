"""Dynamic cells [CELLS Sec. 3]: the op and aggregation tables, cell genotypes (tokens), the cell and the video model.

A dynamic cell predicts the current frame's labelling from five inputs (SPEC "Cell inputs")::

    pool[0] prev_layer4   encoder output of the previous frame, stride 32
    pool[1] prev_dec      decoder output (or the previous cell's output) of the previous frame, 64 ch, stride 8
    pool[2] layer2        encoder output of the current frame, stride 8
    pool[3] layer3        encoder output of the current frame, stride 16
    pool[4] layer4        encoder output of the current frame, stride 32

each adapted by Conv1x1-BN-ReLU to 64 channels and resized (bilinear) to stride 8. The controller emits five tokens
per layer, ``[input 1, input 2, op 1, op 2, aggregation]``; layer ``l`` (0-based) computes
``agg(op1(pool[input 1]), op2(pool[input 2]))`` and appends it to the pool as ``pool[5 + l]``, so layer ``l`` chooses
its inputs among ``5 + l`` entries (with replacement). The cell output is the concatenation of the layer outputs that
no later layer uses, then Conv1x1-BN-ReLU to 64 channels: that is the next frame's ``dec``, and a Conv1x1 classifier
on it gives ``pred`` (K channels, stride 8).

RECONSTRUCTION. The paper's Table 1 (operations) and Table 2 (aggregations) were lost. ``CELL_OPS`` and
``AGGREGATIONS`` implement the lists SPEC records; their order is this project's choice and is what the tokens index.
Where an aggregation is asymmetric the first argument drives and the second is transformed:

============== =========================================================================================
aggregation    ``agg(x1, x2)``
============== =========================================================================================
sum            ``w1 * x1 + w2 * x2`` with learned scalars (init 1)
concat         ``Conv1x1-BN-ReLU(cat(x1, x2))``
attention      dense non-local attention, queries from x1, keys and values from x2:
               ``x1 + BN(Conv1x1(softmax(q k^T / sqrt(d)) v))`` (BN weight init 0, so it starts as x1)
predictive     per-pixel 3x3 filters predicted from x1 (Conv3x3 -> 9 ch, softmax over the 9 taps) applied to x2
affine         spatial transformer: a 2x3 matrix predicted from x1 (GAP -> Linear, init identity) warps x2 by
               bilinear sampling
conv3d         ``Conv3d`` kernel (2, 3, 3) over ``stack(x1, x2)`` along time -> BN -> ReLU
============== =========================================================================================

Architectures are data: a ``CellGenotype`` (frozen, JSON with a schema version) is all that is needed to rebuild a
cell; this module never imports ``vidnas.search``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidnas.models.arch2 import ARCH2_CHANNELS, Arch2Segmenter, ConvBNReLU, FrameStreamer, resize_to
from vidnas.utils import atomic_write_text

__all__ = [
    "CELL_SCHEMA_VERSION",
    "CELL_INPUTS",
    "NUM_CELL_INPUTS",
    "TOKENS_PER_LAYER",
    "CELL_OPS",
    "AGGREGATIONS",
    "CellRegistry",
    "CellError",
    "SepConv",
    "GlobalPoolOp",
    "DeformConv3x3",
    "WeightedSum",
    "ConcatConv",
    "DenseAttention",
    "PredictiveFilter",
    "AffineSampling",
    "Conv3dAggregation",
    "CellLayer",
    "CellGenotype",
    "Cell",
    "CellOutput",
    "DynamicCellModel",
    "build_cell_model",
    "load_cell_model",
    "resolve_names",
    "cell_in_channels",
]

logger = logging.getLogger(__name__)

CELL_SCHEMA_VERSION = 1
CELL_INPUTS: tuple[str, ...] = ("prev_layer4", "prev_dec", "layer2", "layer3", "layer4")  # [CELLS Sec. 3.1]
NUM_CELL_INPUTS = len(CELL_INPUTS)
TOKENS_PER_LAYER = 5  # [CELLS Sec. 3.2] input 1, input 2, op 1, op 2, aggregation


class CellError(ValueError):
    """A cell genotype (or its file) is invalid; the message names the file (if any) and the field."""


class CellRegistry(dict[str, Callable[[int], nn.Module]]):
    """An ordered table of named factories ``factory(channels) -> nn.Module``.

    The order is the token order (an op token ``i`` means the ``i``-th name of the active list). Registering a name
    twice raises; a failed lookup lists the valid names.
    """

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def register(self, name: str) -> Callable[[Callable[[int], nn.Module]], Callable[[int], nn.Module]]:
        """Decorator adding ``factory`` under ``name`` (appended at the end)."""

        def deco(factory: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
            if name in self:
                raise KeyError(f"{self.what} {name!r} is already registered")
            self[name] = factory
            return factory

        return deco

    def __missing__(self, name: str) -> Callable[[int], nn.Module]:
        raise KeyError(f"unknown {self.what} {name!r}; valid names: {', '.join(self)}")


# ------------------------------------------------------------------------------------------------------------ ops
# Every op maps (B, C, h, w) -> (B, C, h, w); each conv op is conv -> BN -> ReLU as in the static search [18].

CELL_OPS = CellRegistry("cell op")


class SepConv(nn.Sequential):
    """Depthwise kxk (dilated) -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU. (B, C, h, w) -> same."""

    def __init__(self, channels: int, kernel: int, dilation: int = 1) -> None:
        super().__init__(
            ConvBNReLU(channels, channels, kernel, dilation=dilation, groups=channels),
            ConvBNReLU(channels, channels, 1),
        )


class GlobalPoolOp(nn.Module):
    """Global average pooling -> Conv1x1 -> ReLU, broadcast back over the map. (B, C, h, w) -> same.

    No BatchNorm: a pooled (B, C, 1, 1) map has one value per channel and sample, BN would fail at batch size 1.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = F.relu(self.conv(F.adaptive_avg_pool2d(x, 1)))  # (B, C, 1, 1)
        return g.expand_as(x)


class DeformConv3x3(nn.Module):
    """Deformable 3x3 conv [CELLS ref. 31] (torchvision.ops) -> BN -> ReLU. (B, C, h, w) -> same.

    A 3x3 conv predicts the 2 * 9 sampling offsets; it is initialised to zero so the op starts as a plain 3x3 conv.
    About 29x slower than a plain 3x3 conv on the development CPU (SPEC).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        from torchvision.ops import DeformConv2d

        self.offset = nn.Conv2d(channels, 2 * 3 * 3, 3, padding=1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x, self.offset(x))))


@CELL_OPS.register("conv1x1")
def _conv1x1(c: int) -> nn.Module:
    return ConvBNReLU(c, c, 1)


@CELL_OPS.register("conv3x3")
def _conv3x3(c: int) -> nn.Module:
    return ConvBNReLU(c, c, 3)


@CELL_OPS.register("sep3x3")
def _sep3x3(c: int) -> nn.Module:
    return SepConv(c, 3)


@CELL_OPS.register("sep5x5")
def _sep5x5(c: int) -> nn.Module:
    return SepConv(c, 5)


@CELL_OPS.register("gap")
def _gap(c: int) -> nn.Module:
    return GlobalPoolOp(c)


@CELL_OPS.register("conv3x3_d3")
def _conv3x3_d3(c: int) -> nn.Module:
    return ConvBNReLU(c, c, 3, dilation=3)


@CELL_OPS.register("conv3x3_d12")
def _conv3x3_d12(c: int) -> nn.Module:
    return ConvBNReLU(c, c, 3, dilation=12)


@CELL_OPS.register("sep3x3_d3")
def _sep3x3_d3(c: int) -> nn.Module:
    return SepConv(c, 3, dilation=3)


@CELL_OPS.register("sep5x5_d6")
def _sep5x5_d6(c: int) -> nn.Module:
    return SepConv(c, 5, dilation=6)


@CELL_OPS.register("skip")
def _skip(c: int) -> nn.Module:
    return nn.Identity()


@CELL_OPS.register("deform3x3")
def _deform3x3(c: int) -> nn.Module:
    return DeformConv3x3(c)


# --------------------------------------------------------------------------------------------------- aggregations
# Every aggregation maps two (B, C, h, w) tensors to one (B, C, h, w) tensor.

AGGREGATIONS = CellRegistry("aggregation")


class WeightedSum(nn.Module):
    """``w1 * x1 + w2 * x2`` with learned scalars initialised to 1 (the plain sum of the static search [18])."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.weight[0] * x1 + self.weight[1] * x2


class ConcatConv(nn.Module):
    """``Conv1x1-BN-ReLU(cat(x1, x2))``: 2C -> C channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(2 * channels, channels, 1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x1, x2], dim=1))  # (B, 2C, h, w) -> (B, C, h, w)


class DenseAttention(nn.Module):
    """Dense (non-local) attention of every position of x1 over all positions of x2.

    ``q = Wq x1, k = Wk x2, v = Wv x2`` (1x1 convs to d = C / 2 channels),
    ``y = softmax(q^T k / sqrt(d)) v`` over the h*w positions of x2, output ``x1 + BN(Wo y)`` with the BN weight
    initialised to 0, so a fresh block is the identity on x1 (the non-local block's initialisation).
    Memory is O((h w)^2) per sample: at stride 8 of a 360x480 frame, 2700^2 floats.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        d = max(1, channels // 2)
        self.d = d
        self.q = nn.Conv2d(channels, d, 1)
        self.k = nn.Conv2d(channels, d, 1)
        self.v = nn.Conv2d(channels, d, 1)
        self.out = nn.Conv2d(d, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x1.shape
        q = self.q(x1).flatten(2).transpose(1, 2)  # (B, hw, d)
        k = self.k(x2).flatten(2)  # (B, d, h'w')
        v = self.v(x2).flatten(2).transpose(1, 2)  # (B, h'w', d)
        attn = torch.softmax(torch.bmm(q, k) / math.sqrt(self.d), dim=-1)  # (B, hw, h'w')
        y = torch.bmm(attn, v).transpose(1, 2).reshape(b, self.d, h, w)  # (B, d, h, w)
        return x1 + self.bn(self.out(y))


class PredictiveFilter(nn.Module):
    """Per-pixel dynamic kxk filters predicted from x1 and applied to x2 (cf. Li et al. [CELLS ref. 14]).

    ``f = softmax_taps(Conv3x3(x1))`` gives k*k weights per pixel (shared across channels, summing to 1);
    ``y[c, p] = sum_j f[j, p] * x2[c, p + offset_j]`` with zero padding. The filter conv is initialised to zero, so a
    fresh op is a kxk box filter of x2.
    """

    def __init__(self, channels: int, kernel: int = 3) -> None:
        super().__init__()
        self.kernel = kernel
        self.filters = nn.Conv2d(channels, kernel * kernel, 3, padding=1)
        nn.init.zeros_(self.filters.weight)
        nn.init.zeros_(self.filters.bias)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x2.shape
        kk = self.kernel * self.kernel
        f = torch.softmax(self.filters(x1), dim=1).reshape(b, 1, kk, h * w)  # (B, 1, k*k, hw)
        patches = F.unfold(x2, self.kernel, padding=self.kernel // 2).reshape(b, c, kk, h * w)  # (B, C, k*k, hw)
        return (patches * f).sum(2).reshape(b, c, h, w)


class AffineSampling(nn.Module):
    """Spatial transformer [CELLS ref. 11]: a 2x3 affine matrix predicted from x1 warps x2 by bilinear sampling.

    ``theta = Linear(GAP(ReLU(Conv1x1(x1))))`` with the Linear layer initialised to the identity transform (weight 0,
    bias [1, 0, 0, 0, 1, 0]), so a fresh op returns x2 unchanged; ``out = grid_sample(x2, affine_grid(theta))``
    (zeros outside, align_corners=False).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)
        self.fc = nn.Linear(channels, 6)
        nn.init.zeros_(self.fc.weight)
        with torch.no_grad():
            self.fc.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        g = F.adaptive_avg_pool2d(F.relu(self.conv(x1)), 1).flatten(1)  # (B, C)
        theta = self.fc(g).reshape(-1, 2, 3)  # (B, 2, 3)
        grid = F.affine_grid(theta, list(x2.shape), align_corners=False)  # (B, h, w, 2)
        return F.grid_sample(x2, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class Conv3dAggregation(nn.Module):
    """3D conv over the two inputs stacked along time: ``Conv3d(C, C, (2, 3, 3))`` -> BN -> ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, (2, 3, 3), padding=(0, 1, 1), bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        x = torch.stack([x1, x2], dim=2)  # (B, C, 2, h, w)
        return F.relu(self.bn(self.conv(x).squeeze(2)))  # (B, C, 1, h, w) -> (B, C, h, w)


AGGREGATIONS.register("sum")(WeightedSum)
AGGREGATIONS.register("concat")(ConcatConv)
AGGREGATIONS.register("attention")(DenseAttention)
AGGREGATIONS.register("predictive")(PredictiveFilter)
AGGREGATIONS.register("affine")(AffineSampling)
AGGREGATIONS.register("conv3d")(Conv3dAggregation)


def resolve_names(names: Sequence[str] | None, registry: CellRegistry) -> tuple[str, ...]:
    """The active vocabulary: ``names`` (checked against ``registry``, no duplicates) or the whole registry.

    Raises:
        CellError: an unknown or repeated name, or an empty list.
    """
    if names is None:
        return tuple(registry)
    names = tuple(names)
    if not names:
        raise CellError(f"the {registry.what} list is empty; valid names: {', '.join(registry)}")
    for n in names:
        if n not in registry:
            raise CellError(f"unknown {registry.what} {n!r}; valid names: {', '.join(registry)}")
    if len(set(names)) != len(names):
        raise CellError(f"repeated {registry.what} names in {list(names)}")
    return names


# ------------------------------------------------------------------------------------------------------- genotype


@dataclass(frozen=True)
class CellLayer:
    """One layer of a cell: ``aggregation(ops[0](pool[inputs[0]]), ops[1](pool[inputs[1]]))``."""

    inputs: tuple[int, int]
    ops: tuple[str, str]
    aggregation: str


@dataclass(frozen=True)
class CellGenotype:
    """A dynamic cell as data.

    Tokens (what the controller emits): per layer ``[input 1, input 2, op 1, op 2, aggregation]`` where inputs index
    the pool (``CELL_INPUTS`` then earlier layer outputs), op tokens index ``ops`` and aggregation tokens index
    ``aggregations``: the vocabularies the search used, stored alongside so a file is self-contained.

    JSON (schema version 1)::

        {"schema_version": 1, "name": "cell0", "tokens": [[2, 1, 10, 2, 1], ...], "ops": [...], "aggregations": [...],
         "layers": [{"inputs": ["layer2", "prev_dec"], "ops": ["deform3x3", "sep3x3"], "aggregation": "concat"}, ...],
         "extra": {...}}

    ``layers`` is a readable copy of the tokens; the reader checks it agrees with them.

    Attributes:
        layers: the layers in order.
        ops: op vocabulary (names from ``CELL_OPS``).
        aggregations: aggregation vocabulary (names from ``AGGREGATIONS``).
        name: a label.
        extra: search record (reward, candidate id...); opaque, JSON-serialisable.
    """

    layers: tuple[CellLayer, ...]
    ops: tuple[str, ...] = tuple(CELL_OPS)
    aggregations: tuple[str, ...] = tuple(AGGREGATIONS)
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "aggregations", tuple(self.aggregations))
        self.validate()

    def validate(self, source: str | None = None) -> None:
        """Raise ``CellError`` naming ``source`` and the field if anything is inconsistent."""
        where = f"{source}: " if source else ""
        if not self.layers:
            raise CellError(f"{where}field 'layers': a cell needs at least one layer")
        try:
            resolve_names(self.ops, CELL_OPS)
            resolve_names(self.aggregations, AGGREGATIONS)
        except CellError as e:
            raise CellError(f"{where}{e}") from None
        for l_idx, layer in enumerate(self.layers):
            pool = NUM_CELL_INPUTS + l_idx
            if len(layer.inputs) != 2 or len(layer.ops) != 2:
                raise CellError(f"{where}layer {l_idx}: expected two inputs and two ops, got {layer}")
            for i in layer.inputs:
                if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < pool:
                    raise CellError(f"{where}layer {l_idx}: input {i!r} outside the pool 0..{pool - 1}")
            for op in layer.ops:
                if op not in self.ops:
                    raise CellError(f"{where}layer {l_idx}: op {op!r} not in the op list {list(self.ops)}")
            if layer.aggregation not in self.aggregations:
                raise CellError(f"{where}layer {l_idx}: aggregation {layer.aggregation!r} not in "
                                f"{list(self.aggregations)}")

    # -- tokens --------------------------------------------------------------------------------------------------
    @classmethod
    def from_tokens(cls, tokens: Sequence[int] | Sequence[Sequence[int]], *, ops: Sequence[str] | None = None,
                    aggregations: Sequence[str] | None = None, name: str = "",
                    extra: dict[str, Any] | None = None) -> CellGenotype:
        """Build from tokens: a flat list of ``5 * layers`` ints or one list of 5 per layer.

        Args:
            tokens: ``[input 1, input 2, op 1, op 2, aggregation]`` per layer.
            ops: op vocabulary the op tokens index (None = all of ``CELL_OPS``).
            aggregations: aggregation vocabulary (None = all of ``AGGREGATIONS``).
            name: a label.
            extra: search record.
        """
        ops_t = resolve_names(ops, CELL_OPS)
        aggs_t = resolve_names(aggregations, AGGREGATIONS)
        flat = [int(t) for row in tokens for t in (row if isinstance(row, list | tuple) else [row])]
        if not flat or len(flat) % TOKENS_PER_LAYER:
            raise CellError(f"expected {TOKENS_PER_LAYER} tokens per layer, got {len(flat)} tokens")
        layers = []
        for l_idx in range(len(flat) // TOKENS_PER_LAYER):
            i1, i2, o1, o2, a = flat[l_idx * TOKENS_PER_LAYER:(l_idx + 1) * TOKENS_PER_LAYER]
            for o in (o1, o2):
                if not 0 <= o < len(ops_t):
                    raise CellError(f"layer {l_idx}: op token {o} outside 0..{len(ops_t) - 1}")
            if not 0 <= a < len(aggs_t):
                raise CellError(f"layer {l_idx}: aggregation token {a} outside 0..{len(aggs_t) - 1}")
            layers.append(CellLayer((i1, i2), (ops_t[o1], ops_t[o2]), aggs_t[a]))
        return cls(tuple(layers), ops_t, aggs_t, name=name, extra=dict(extra or {}))

    def to_tokens(self) -> list[int]:
        """Flat token list, ``5 * num_layers`` ints."""
        out: list[int] = []
        for layer in self.layers:
            out += [*layer.inputs, *(self.ops.index(o) for o in layer.ops), self.aggregations.index(layer.aggregation)]
        return out

    # -- structure -----------------------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def pool_name(self, index: int) -> str:
        """Readable name of pool entry ``index``: a cell input or ``layer{l}`` (0-based layer ``l``)."""
        return CELL_INPUTS[index] if index < NUM_CELL_INPUTS else f"cell_layer{index - NUM_CELL_INPUTS}"

    def used_inputs(self) -> tuple[int, ...]:
        """Indices of the five cell inputs read by some layer, sorted."""
        return tuple(sorted({i for layer in self.layers for i in layer.inputs if i < NUM_CELL_INPUTS}))

    def unused(self) -> tuple[int, ...]:
        """Pool indices of the layer outputs no later layer uses: the entries concatenated into the cell output."""
        used = {i for layer in self.layers for i in layer.inputs}
        return tuple(NUM_CELL_INPUTS + l_idx for l_idx in range(self.num_layers)
                     if NUM_CELL_INPUTS + l_idx not in used)

    def describe(self) -> str:
        """Readable multi-line description, one line per layer plus the output."""
        lines = [f"cell {self.name!r}" if self.name else "cell"]
        for l_idx, layer in enumerate(self.layers):
            a, b = (f"{op}({self.pool_name(i)})" for op, i in zip(layer.ops, layer.inputs, strict=True))
            lines.append(f"  cell_layer{l_idx} = {layer.aggregation}({a}, {b})")
        outs = ", ".join(self.pool_name(i) for i in self.unused())
        lines.append(f"  dec = conv1x1(cat({outs})); pred = classifier(dec)")
        return "\n".join(lines)

    # -- (de)serialise -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, ``schema_version`` first (layout in the class docstring)."""
        toks = self.to_tokens()
        return {
            "schema_version": CELL_SCHEMA_VERSION,
            "name": self.name,
            "tokens": [toks[i:i + TOKENS_PER_LAYER] for i in range(0, len(toks), TOKENS_PER_LAYER)],
            "ops": list(self.ops),
            "aggregations": list(self.aggregations),
            "layers": [{"inputs": [self.pool_name(i) for i in layer.inputs], "ops": list(layer.ops),
                        "aggregation": layer.aggregation} for layer in self.layers],
            "extra": self.extra,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=_json_default)

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> CellGenotype:
        """Inverse of ``to_dict``; a missing or unknown schema version, unknown keys or bad tokens raise CellError."""
        where = f"{source}: " if source else ""
        if not isinstance(data, dict):
            raise CellError(f"{where}expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != CELL_SCHEMA_VERSION:
            raise CellError(f"{where}field 'schema_version': unsupported version {version!r}; this reader "
                            f"understands {CELL_SCHEMA_VERSION}")
        valid = {"schema_version", "name", "tokens", "ops", "aggregations", "layers", "extra"}
        for key in data:
            if key not in valid:
                raise CellError(f"{where}unknown field {key!r}; valid fields: {', '.join(sorted(valid))}")
        if "tokens" not in data:
            raise CellError(f"{where}field 'tokens' is missing")
        try:
            geno = cls.from_tokens(data["tokens"], ops=data.get("ops"), aggregations=data.get("aggregations"),
                                   name=data.get("name", ""), extra=data.get("extra") or {})
        except (CellError, TypeError, ValueError) as e:
            raise CellError(f"{where}{e}") from None
        if "layers" in data and data["layers"] != geno.to_dict()["layers"]:
            raise CellError(f"{where}field 'layers' disagrees with 'tokens' (the tokens are authoritative; "
                            f"expected {geno.to_dict()['layers']})")
        return geno

    @classmethod
    def from_json(cls, text: str, source: str | None = None) -> CellGenotype:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CellError(f"{source + ': ' if source else ''}invalid JSON: {e}") from e
        return cls.from_dict(data, source=source)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``to_json()`` atomically."""
        return atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> CellGenotype:
        p = Path(path)
        if not p.is_file():
            raise CellError(f"cell file not found: {p}")
        return cls.from_json(p.read_text(), source=str(p))


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, tuple | set):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable in a cell record: {type(o).__name__}")


# ----------------------------------------------------------------------------------------------------------- cell


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

    ``VideoSegmenter``-compatible: ``forward(frames (B, T, 3, H, W)) -> (B, T, K, H, W)``; ``stream()`` returns a
    ``FrameStreamer`` (push / flush / reset) that carries ``dec`` and ``layer4`` from frame to frame, runs the static
    decoder on the first frame after a reset and every ``key_interval`` frames (None: only the first), so streaming a
    sequence gives the clip forward's outputs (tested). The static decoder's auxiliary heads are never used.

    Args:
        static: the arch2 network (encoder, decoder with ``dec`` and ``pred``).
        cell: the dynamic cell (its ``in_channels`` must match the static encoder's).
        key_interval: run the full static network every ``key_interval`` frames (None: only on frame 0).
        window: sequence length the model was trained on (informational: ``forward`` takes any T).
    """

    causal = True

    def __init__(self, static: Arch2Segmenter, cell: Cell, *, key_interval: int | None = None, window: int = 3) -> None:
        super().__init__()
        c = static.encoder_channels
        expected = (c[3], static.channels, c[1], c[2], c[3])
        if tuple(cell.in_channels) != expected:
            raise CellError(f"cell input channels {cell.in_channels} do not match the static network's {expected}")
        if key_interval is not None and key_interval < 1:
            raise ValueError(f"key_interval must be >= 1 or None, got {key_interval}")
        self.static = static
        self.cell = cell
        self.key_interval = key_interval
        self.window = int(window)
        self.num_classes = static.num_classes
        self.out_size = static.out_size

    @property
    def target_index(self) -> int:
        return self.window - 1

    # The benchmark protocol (``vidnas.bench``) times ``encoder`` and ``decoder`` with forward hooks. In steady state
    # (every frame after the first, ``key_interval`` None) a streamed frame runs the static encoder and the cell: those
    # two are this model's encoder and decoder. Properties, so the state dict keeps a single copy of every weight.
    @property
    def encoder(self) -> nn.Module:
        """The static network's encoder (runs on every frame)."""
        return self.static.encoder

    @property
    def decoder(self) -> nn.Module:
        """The dynamic cell (replaces the static decoder on every non-key frame)."""
        return self.cell

    def protocol_parts(self, frame: torch.Tensor) -> tuple[tuple[Any, tuple[Any, ...]], tuple[Any, tuple[Any, ...]]]:
        """The encoder call and the cell call of one steady-state streamed frame, as ``(fn, args)`` pairs.

        The cell's previous-frame inputs come from the static network on the same frame (their values do not change
        the cost). Used by ``vidnas.bench`` to count FLOPs.

        Args:
            frame: (1, 3, H, W).
        """
        with torch.inference_mode():
            feats = self.static.encode(frame)  # 4 x (1, C_i, h_i, w_i)
            dec = self.static.decode(feats)["dec"]  # (1, 64, h/8, w/8)
        inputs = (feats[3], dec, feats[1], feats[2], feats[3])
        return (self.static.encode, (frame,)), (self.cell, (inputs,))

    @property
    def genotype(self) -> CellGenotype:
        return self.cell.genotype

    def _is_key(self, t: int) -> bool:
        return t == 0 or (self.key_interval is not None and t % self.key_interval == 0)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Clip forward.

        Args:
            frames: (B, T, 3, H, W), ImageNet-normalised.

        Returns:
            (B, T, K, H_out, W_out) logits: frame 0 (and key frames) from the static network, the others from the cell.
        """
        if frames.dim() != 5:
            raise ValueError(f"expected frames of shape (B, T, 3, H, W), got {tuple(frames.shape)}")
        b, t, c, h, w = frames.shape
        out_hw = self.out_size or (h, w)
        feats = self.static.encode(frames.reshape(b * t, c, h, w))  # every frame's encoder in one batch
        feats = [f.reshape(b, t, *f.shape[1:]) for f in feats]  # 4 x (B, T, C_i, h_i, w_i)
        logits = []
        dec = None
        for i in range(t):
            cur = [f[:, i] for f in feats]
            if self._is_key(i):
                out = self.static.decode(cur)
                dec, pred = out["dec"], out["pred"]
            else:
                o = self.cell((feats[3][:, i - 1], dec, cur[1], cur[2], cur[3]))
                dec, pred = o.dec, o.pred
            logits.append(resize_to(pred, out_hw))  # (B, K, H_out, W_out)
        return torch.stack(logits, dim=1)  # (B, T, K, H_out, W_out)

    def step(self, frame: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """One streamed frame (B, 3, H, W); ``state`` = (frame index, prev layer4, prev dec) or None at a video start.

        Returns:
            (logits (B, K, H_out, W_out), new state).
        """
        feats = self.static.encode(frame)
        t = 0 if state is None else state[0]
        if self._is_key(t):
            out = self.static.decode(feats)
            dec, pred = out["dec"], out["pred"]
        else:
            _, prev_l4, prev_dec = state
            o = self.cell((prev_l4, prev_dec, feats[1], feats[2], feats[3]))
            dec, pred = o.dec, o.pred
        return resize_to(pred, self.out_size or frame.shape[-2:]), (t + 1, feats[3], dec)

    def stream(self, batch_size: int = 1) -> FrameStreamer:
        """A streamer with the ``Streamer`` interface. Put the model in eval mode first; ``reset()`` per video."""
        return FrameStreamer(self, batch_size=batch_size)

    def cell_parameters(self) -> Iterator[nn.Parameter]:
        return self.cell.parameters()

    def static_parameters(self) -> Iterator[nn.Parameter]:
        return self.static.parameters()


def set_key_interval(model: Any, key_interval: int | None, source: str = "the model") -> None:
    """Re-run the full static network every ``key_interval`` frames of a dynamic-cell model (None: only the first).

    Raises:
        CellError: ``model`` is not a dynamic-cell model (``source`` names it), or ``key_interval < 1``.
    """
    if not isinstance(model, DynamicCellModel):
        raise CellError(f"--key-interval applies to dynamic-cell models only; {source} is not one")
    if key_interval is not None and key_interval < 1:
        raise CellError(f"key interval must be >= 1, got {key_interval}")
    model.key_interval = key_interval


def cell_in_channels(static: Arch2Segmenter) -> tuple[int, int, int, int, int]:
    """Channels of the five cell inputs for a static network: (C4, 64, C2, C3, C4)."""
    c = static.encoder_channels
    return (c[3], static.channels, c[1], c[2], c[3])


def build_cell_model(cfg: Any, genotype: CellGenotype, *, num_classes: int,
                     static: Arch2Segmenter | None = None, key_interval: int | None = None) -> DynamicCellModel:
    """Static arch2 network (built from ``cfg`` unless given) + a cell built from ``genotype``.

    Args:
        cfg: a ``vidnas.config.Config`` (``model.encoder``, ``model.weights``, ``data.height/width``,
            ``cells.seq_len``).
        genotype: the cell.
        num_classes: K.
        static: an existing static network (e.g. a trained one) instead of a fresh one.
        key_interval: see ``DynamicCellModel``.
    """
    from vidnas.models.arch2 import build_arch2

    if static is None:
        static = build_arch2(cfg, num_classes=num_classes)
    cell = Cell(genotype, in_channels=cell_in_channels(static), num_classes=num_classes)
    return DynamicCellModel(static, cell, key_interval=key_interval, window=cfg.cells.seq_len)


def load_cell_model(path: str | os.PathLike, device: str = "cpu") -> tuple[DynamicCellModel, Any, dict[str, Any]]:
    """Rebuild a dynamic-cell model saved by the cell search's top-k training (``model.pt``) and load its weights.

    The checkpoint holds ``model`` (state dict), ``config`` (a ``config_to_dict``), ``cell`` (a genotype dict) and
    ``num_classes``.

    Returns:
        (model in eval mode, config, checkpoint state).
    """
    from vidnas.config import config_from_dict

    state = torch.load(Path(path), map_location=device, weights_only=False)
    if not isinstance(state, dict) or "cell" not in state or "model" not in state:
        raise CellError(f"{path} is not a dynamic-cell checkpoint (needs 'model' and 'cell' entries)")
    cfg = config_from_dict(state["config"])
    # the checkpoint holds every weight: do not load pretrained encoder weights first
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=None))
    geno = CellGenotype.from_dict(state["cell"], source=str(path))
    model = build_cell_model(cfg, geno, num_classes=int(state["num_classes"]))
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return model, cfg, state
