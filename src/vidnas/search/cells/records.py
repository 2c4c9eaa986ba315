"""The search log, ``candidates.jsonl`` (one line per finished candidate), and what is read from it: the records by
candidate id, the best distinct cells, and the comparison of several runs at equal numbers of candidates.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from vidnas.search.cells.summary import equal_n_stats

__all__ = ["LOG_NAME", "PPO_LOG_NAME", "read_log", "append_jsonl", "select_top", "compare_runs"]

logger = logging.getLogger(__name__)

LOG_NAME = "candidates.jsonl"
PPO_LOG_NAME = "ppo.jsonl"


def read_log(path: str | Path) -> dict[int, dict[str, Any]]:
    """Records of a search log by candidate id (the last record of an id wins; a torn last line is skipped)."""
    path = Path(path)
    out: dict[int, dict[str, Any]] = {}
    if not path.exists():
        return out
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s:%d: unreadable line skipped (interrupted write?)", path, n)
            continue
        out[int(rec["cid"])] = rec
    return out


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line and flush it to disk (an interrupted search keeps every finished line)."""
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def select_top(records: list[dict[str, Any]] | dict[int, dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The ``k`` best distinct cells: successful candidates by reward (fully trained ones before early-stopped ones
    of equal reward, then lower id), one per token sequence."""
    if k <= 0:
        return []
    recs = list(records.values()) if isinstance(records, dict) else list(records)
    ok = [r for r in recs if not r.get("failed") and r.get("reward") is not None]
    ok.sort(key=lambda r: (-r["reward"], bool(r.get("early_stopped")), r["cid"]))
    seen: set[tuple[int, ...]] = set()
    top = []
    for r in ok:
        key = tuple(r["tokens"])
        if key in seen:
            continue
        seen.add(key)
        top.append(r)
        if len(top) == k:
            break
    return top


def compare_runs(run_dirs: dict[str, str | Path], *, key: str = "reward") -> dict[str, dict[str, Any]]:
    """``summary.equal_n_stats`` (of ``key``: ``reward`` or ``accuracy_reward``) of the ``candidates.jsonl`` of
    several run directories (name -> directory), e.g. a search and its random baseline; each entry also names its
    ``run_dir``."""
    logs = {name: list(read_log(Path(d) / LOG_NAME).values()) for name, d in run_dirs.items()}
    for name, d in run_dirs.items():
        if not logs[name]:
            raise ValueError(f"{name}: no candidates in {Path(d) / LOG_NAME}")
    out = equal_n_stats(logs, key=key)
    for name, d in run_dirs.items():
        out[name]["run_dir"] = str(d)
    return out
