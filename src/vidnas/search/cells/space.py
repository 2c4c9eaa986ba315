"""The dynamic-cell search space [CELLS Sec. 3.2]: which decisions the controller makes, in which order, over what.

A cell of ``L`` layers is ``5 L`` decisions; layer ``l`` (0-based) makes, in this order::

    input 1, input 2   over the pool of 5 + l entries (the five cell inputs, then the outputs of layers 0..l-1)
    op 1, op 2         over the active op list (``cells.ops``, default every name of ``CELL_OPS``)
    aggregation        over the active aggregation list (``cells.aggregations``, default all of ``AGGREGATIONS``)

The token of each decision is the chosen index; ``CellGenotype.from_tokens`` turns a token list into a cell.

Op presets (``cells.op_preset``; an explicit ``cells.ops`` / ``cells.aggregations`` list overrides its part):

* ``paper``: every registered op and aggregation (the paper's eleven and six, then any registered by the user);
* ``cpu``: the paper's lists without ``deform3x3`` (about 29x a plain 3x3 conv on the development CPU), dense
  ``attention`` (O((h w)^2) memory and time; 48 ms at 360x480) and ``conv3d`` (12 ms): ten ops, four aggregations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vidnas.models.cells import (
    AGGREGATIONS,
    CELL_OPS,
    NUM_CELL_INPUTS,
    TOKENS_PER_LAYER,
    CellError,
    CellGenotype,
    resolve_names,
)

__all__ = ["DECISION_KINDS", "OP_PRESETS", "Decision", "CellSearchSpace"]

DECISION_KINDS: tuple[str, ...] = ("input", "input", "op", "op", "agg")  # per layer, the token order

# name -> (ops, aggregations); None = every registered name
OP_PRESETS: dict[str, tuple[tuple[str, ...] | None, tuple[str, ...] | None]] = {
    "paper": (None, None),
    "cpu": (("conv1x1", "conv3x3", "sep3x3", "sep5x5", "gap", "conv3x3_d3", "conv3x3_d12", "sep3x3_d3", "sep5x5_d6",
             "skip"), ("sum", "concat", "predictive", "affine")),
}


@dataclass(frozen=True)
class Decision:
    """One controller decision: its kind (``input``, ``op``, ``agg``), layer, and number of valid choices."""

    kind: str
    layer: int
    size: int


@dataclass(frozen=True)
class CellSearchSpace:
    """Layers, op and aggregation vocabularies of a cell search.

    Attributes:
        num_layers: emitted layers per cell (5 on CamVid, 4 on CityScapes [CELLS Sec. 4.1]).
        ops: active op names (token order).
        aggregations: active aggregation names (token order).
    """

    num_layers: int = 5
    ops: tuple[str, ...] = tuple(CELL_OPS)
    aggregations: tuple[str, ...] = tuple(AGGREGATIONS)

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise CellError(f"cells.num_layers must be >= 1, got {self.num_layers}")
        object.__setattr__(self, "ops", resolve_names(self.ops, CELL_OPS))
        object.__setattr__(self, "aggregations", resolve_names(self.aggregations, AGGREGATIONS))

    @classmethod
    def from_config(cls, cells_cfg: Any) -> CellSearchSpace:
        """From a ``CellsConfig``: ``num_layers``, ``op_preset``, and ``ops`` / ``aggregations`` (None = the
        preset's list)."""
        preset = getattr(cells_cfg, "op_preset", "paper")
        if preset not in OP_PRESETS:
            raise CellError(f"cells.op_preset={preset!r}: valid presets are {', '.join(OP_PRESETS)}")
        ops, aggs = OP_PRESETS[preset]
        ops = cells_cfg.ops if cells_cfg.ops is not None else ops
        aggs = cells_cfg.aggregations if cells_cfg.aggregations is not None else aggs
        return cls(int(cells_cfg.num_layers), resolve_names(ops, CELL_OPS), resolve_names(aggs, AGGREGATIONS))

    @property
    def num_inputs(self) -> int:
        return NUM_CELL_INPUTS

    @property
    def max_pool(self) -> int:
        """Pool size of the last layer: the widest input decision."""
        return NUM_CELL_INPUTS + self.num_layers - 1

    @property
    def num_decisions(self) -> int:
        return TOKENS_PER_LAYER * self.num_layers

    def decisions(self) -> list[Decision]:
        """Every decision in token order."""
        sizes = {"op": len(self.ops), "agg": len(self.aggregations)}
        return [Decision(kind, layer, NUM_CELL_INPUTS + layer if kind == "input" else sizes[kind])
                for layer in range(self.num_layers) for kind in DECISION_KINDS]

    def log10_size(self) -> float:
        """log10 of the number of distinct token sequences."""
        return sum(math.log10(d.size) for d in self.decisions())

    def genotype(self, tokens: Sequence[int], *, name: str = "", extra: dict[str, Any] | None = None) -> CellGenotype:
        """The cell these tokens describe (raises ``CellError`` on an invalid token)."""
        if len(tokens) != self.num_decisions:
            raise CellError(f"expected {self.num_decisions} tokens ({self.num_layers} layers), got {len(tokens)}")
        return CellGenotype.from_tokens(list(tokens), ops=self.ops, aggregations=self.aggregations, name=name,
                                        extra=extra)

    def to_dict(self) -> dict[str, Any]:
        return {"num_layers": self.num_layers, "ops": list(self.ops), "aggregations": list(self.aggregations)}
