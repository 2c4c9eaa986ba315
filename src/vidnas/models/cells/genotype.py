"""Cell genotypes: a dynamic cell as data (tokens, layers, the vocabularies they index), with a versioned JSON file.

A genotype is all that is needed to rebuild a cell (``vidnas.models.cells.Cell``); the search writes one per top cell
(``top/cell{k}.json``). See ``vidnas.models.cells`` for the cell layout the tokens describe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vidnas.jsonfile import JsonFile, check_header
from vidnas.models.cells.aggregations import AGGREGATIONS
from vidnas.models.cells.ops import CELL_OPS
from vidnas.registry import Registry

__all__ = [
    "CELL_SCHEMA_VERSION",
    "CELL_INPUTS",
    "NUM_CELL_INPUTS",
    "TOKENS_PER_LAYER",
    "CellError",
    "CellLayer",
    "CellGenotype",
    "resolve_names",
]

CELL_SCHEMA_VERSION = 1
CELL_INPUTS: tuple[str, ...] = ("prev_layer4", "prev_dec", "layer2", "layer3", "layer4")  # [CELLS Sec. 3.1]
NUM_CELL_INPUTS = len(CELL_INPUTS)
# encoder stages a non-key frame runs for each input: prev_layer4 is the previous non-key frame's layer4
INPUT_STAGES: dict[str, int] = {"prev_layer4": 4, "prev_dec": 0, "layer2": 2, "layer3": 3, "layer4": 4}
TOKENS_PER_LAYER = 5  # [CELLS Sec. 3.2] input 1, input 2, op 1, op 2, aggregation


class CellError(ValueError):
    """A cell genotype (or its file) is invalid; the message names the file (if any) and the field."""


def resolve_names(names: Sequence[str] | None, registry: Registry) -> tuple[str, ...]:
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




@dataclass(frozen=True)
class CellLayer:
    """One layer of a cell: ``aggregation(ops[0](pool[inputs[0]]), ops[1](pool[inputs[1]]))``."""

    inputs: tuple[int, int]
    ops: tuple[str, str]
    aggregation: str


@dataclass(frozen=True)
class CellGenotype(JsonFile):
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

    FILE_KIND = "cell file"
    FILE_ERROR = CellError

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

    def encoder_stages(self) -> int:
        """Encoder stages (0..4) a non-key frame must run: up to the deepest current-frame map the cell reads.

        ``layer2``, ``layer3``, ``layer4`` are the outputs of stages 2, 3, 4 (strides 8, 16, 32); a cell that reads
        ``prev_layer4`` needs stage 4 on every frame too, since this frame's ``layer4`` is the next one's
        ``prev_layer4``. A cell that reads ``prev_dec`` only needs no encoder on a non-key frame (0).
        """
        return max((INPUT_STAGES[CELL_INPUTS[i]] for i in self.used_inputs()), default=0)

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

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> CellGenotype:
        """Inverse of ``to_dict``; a missing or unknown schema version, unknown keys or bad tokens raise CellError."""
        where = f"{source}: " if source else ""
        check_header(data, version=CELL_SCHEMA_VERSION, error=CellError, source=source,
                     fields=("name", "tokens", "ops", "aggregations", "layers", "extra"))
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
