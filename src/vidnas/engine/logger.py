"""Per-run metric logging: one JSON line per record in ``metrics.jsonl`` plus TensorBoard events."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

__all__ = ["RunLogger", "read_jsonl"]


class RunLogger:
    """Append-only metrics log of a run directory.

    Args:
        run_dir: the run directory; writes ``metrics.jsonl`` and ``tb/`` inside it.
        enabled: False on non-main ranks, so only rank 0 writes.
        tensorboard: also write TensorBoard scalars.
    """

    def __init__(self, run_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._tb = None
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(str(self.run_dir / "tb"))
                except ImportError:  # tensorboard is a declared dependency; stay usable without it
                    self._tb = None

    def truncate_after(self, kind: str, key: str, last: int) -> None:
        """Drop records of ``kind`` whose ``key`` exceeds ``last`` (a resumed run rewrites them)."""
        path = self.run_dir / "metrics.jsonl"
        if not self.enabled or not path.exists():
            return
        keep = [r for r in read_jsonl(path) if not (r.get("kind") == kind and r.get(key, -1) > last)]
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
        tmp.replace(path)

    def log(self, kind: str, step: int, **values: Any) -> None:
        """Write one record ``{"kind", "step", "time", **values}``; numeric values also go to TensorBoard."""
        if not self.enabled:
            return
        rec = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec, default=_default) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None


def _default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file, skipping a torn last line (a crash mid-write)."""
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
