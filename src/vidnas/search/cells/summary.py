"""Numbers that say whether a cell search learned: its reward curve by thirds, best-of-N, and a side-by-side table
of several runs (a search and the random baseline at equal N).

For the successful candidates of a run, in candidate order (``N`` of them), ``reward_stats`` gives:

* ``mean_reward`` (the reward the controller learned from), ``mean_accuracy_reward``;
* ``best_of_n``: the highest reward among the N, with its candidate id and accuracy reward;
* ``thirds``: mean and standard error (``std / sqrt(n)``, ``std`` with ddof 1) of the reward over the first, middle
  and last third (``N // 3`` candidates in the first and last, the rest in the middle); a search that learns has a
  last third clearly above its first, where a random baseline's thirds agree within their errors;
* with cost records: ``mean_latency_ms``, ``mean_fps_ratio``, their medians ``median_latency_ms`` and
  ``median_fps_ratio``, and ``faster_than_static`` (share of candidates whose steady state beats the static network's
  frame);
* ``early_stopped`` and ``full_epochs``: how many of the N stopped at the halfway rule and how many ran every cell
  epoch, and ``full``: the mean reward and thirds over the full-epoch candidates only. An early-stopped candidate's
  reward is its reward after half of its epochs, so two runs that stop different shares early (a search and its
  random baseline do) compare at equal training only there [issue 27].

``equal_n_stats`` summarises several runs at equal N (``search.compare_runs`` reads them from run directories) and
``format_comparison`` prints them as one markdown table.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["mean_se", "reward_stats", "equal_n_stats", "format_comparison"]


def mean_se(values: Sequence[float]) -> dict[str, float | int | None]:
    """``{"mean", "se", "n"}``: the mean and its standard error (``std / sqrt(n)``, ddof 1; None for n < 2)."""
    xs = [float(v) for v in values]
    if not xs:
        return {"mean": None, "se": None, "n": 0}
    se = statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else None
    return {"mean": statistics.fmean(xs), "se": se, "n": len(xs)}


def _accuracy(r: dict[str, Any]) -> float:
    """A record's accuracy reward (logs written before the latency term have only ``reward``)."""
    return float(r["accuracy_reward"] if r.get("accuracy_reward") is not None else r["reward"])


def reward_stats(records: Sequence[dict[str, Any]], *, key: str = "reward") -> dict[str, Any]:
    """Summary of a search log's successful candidates (module docstring).

    Args:
        records: log records.
        key: the reward the statistics are about: ``reward`` (what the controller learned from) or
            ``accuracy_reward`` (e.g. to compare with a search run at latency weight 0).
    """
    if key not in ("reward", "accuracy_reward"):
        raise ValueError(f"key must be reward or accuracy_reward, got {key!r}")
    ok = sorted((r for r in records if not r.get("failed") and r.get("reward") is not None), key=lambda r: r["cid"])
    acc = [_accuracy(r) for r in ok]
    rewards = acc if key == "accuracy_reward" else [float(r["reward"]) for r in ok]
    out: dict[str, Any] = {"n": len(ok), "key": key, "mean_reward": mean_se(rewards)["mean"],
                           "mean_accuracy_reward": mean_se(acc)["mean"]}
    if ok:
        b = max(range(len(ok)), key=lambda i: (rewards[i], -ok[i]["cid"]))
        out["best_of_n"] = {"reward": rewards[b], "accuracy_reward": acc[b], "cid": ok[b]["cid"],
                            "cost": ok[b].get("cost") or {}}
        k = len(ok) // 3
        out["thirds"] = {"first": mean_se(rewards[:k]), "middle": mean_se(rewards[k:len(ok) - k]),
                         "last": mean_se(rewards[len(ok) - k:] if k else [])}
        out["accuracy_thirds"] = {"first": mean_se(acc[:k]), "last": mean_se(acc[len(ok) - k:] if k else [])}
    full = [x for r, x in zip(ok, rewards, strict=True) if not r.get("early_stopped")]
    out["early_stopped"] = len(ok) - len(full)
    out["full_epochs"] = len(full)
    k = len(full) // 3
    out["full"] = {"mean_reward": mean_se(full)["mean"],
                   "thirds": {"first": mean_se(full[:k]), "middle": mean_se(full[k:len(full) - k]),
                              "last": mean_se(full[len(full) - k:] if k else [])}}
    costs = [r["cost"] for r in ok if (r.get("cost") or {}).get("latency_ms")]
    if costs:
        out["mean_latency_ms"] = statistics.fmean(c["latency_ms"] for c in costs)
        out["mean_fps_ratio"] = statistics.fmean(c["fps_ratio"] for c in costs)
        out["median_latency_ms"] = statistics.median(c["latency_ms"] for c in costs)
        out["median_fps_ratio"] = statistics.median(c["fps_ratio"] for c in costs)
        out["faster_than_static"] = sum(c["fps_ratio"] > 1.0 for c in costs) / len(costs)
        k = len(costs) // 3
        if k:
            out["latency_thirds"] = {"first": mean_se([c["latency_ms"] for c in costs[:k]]),
                                     "last": mean_se([c["latency_ms"] for c in costs[len(costs) - k:]])}
    return out


def equal_n_stats(logs: Mapping[str, Sequence[dict[str, Any]]], *, key: str = "reward") -> dict[str, dict[str, Any]]:
    """``reward_stats`` (of ``key``) of each run's records (candidate order), every run cut to the smallest N."""
    if not logs:
        raise ValueError("no runs to compare")
    for name, recs in logs.items():
        if not recs:
            raise ValueError(f"{name}: no candidates to compare")
    n = min(len(v) for v in logs.values())
    out = {}
    for name, recs in logs.items():
        stats = reward_stats(sorted(recs, key=lambda r: r["cid"])[:n], key=key)
        stats["candidates_compared"] = n
        out[name] = stats
    return out


def _pm(d: dict[str, Any] | None) -> str:
    if not d or d.get("mean") is None:
        return "-"
    return f"{d['mean']:.4f} +- {d['se']:.4f}" if d.get("se") is not None else f"{d['mean']:.4f}"


def format_comparison(stats: Mapping[str, dict[str, Any]]) -> str:
    """One markdown table: per run N, mean reward, first and last third (mean +- SE), the same over the candidates
    that ran every cell epoch (and how many stopped early), best-of-N, mean and median latency and FPS ratio."""
    lines = ["| run | N | mean reward | first third | last third | early-stopped | full-epoch mean | full-epoch first "
             "third | full-epoch last third | best of N (candidate) | mean accuracy reward | mean (median) latency, ms "
             "| mean (median) FPS / static | faster than static |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in stats.items():
        best = s.get("best_of_n") or {}
        th = s.get("thirds") or {}
        lat = f"{s['mean_latency_ms']:.1f} ({s['median_latency_ms']:.1f})" if "mean_latency_ms" in s else "-"
        fps = f"{s['mean_fps_ratio']:.3f}x ({s['median_fps_ratio']:.3f}x)" if "mean_fps_ratio" in s else "-"
        full = s.get("full") or {}
        fth = full.get("thirds") or {}
        full_mean = f"{full['mean_reward']:.4f}" if full.get("mean_reward") is not None else "-"
        stopped = f"{s['early_stopped']} of {s['n']}" if "early_stopped" in s else "-"
        fast = f"{s['faster_than_static']:.0%}" if "faster_than_static" in s else "-"
        best_txt = f"{best['reward']:.4f} ({best['cid']})" if best else "-"
        mean = f"{s['mean_reward']:.4f}" if s.get("mean_reward") is not None else "-"
        macc = f"{s['mean_accuracy_reward']:.4f}" if s.get("mean_accuracy_reward") is not None else "-"
        lines.append(f"| {name} | {s['n']} | {mean} | {_pm(th.get('first'))} | {_pm(th.get('last'))} | {stopped} | "
                     f"{full_mean} | {_pm(fth.get('first'))} | {_pm(fth.get('last'))} | {best_txt} | {macc} | {lat} | "
                     f"{fps} | {fast} |")
    return "\n".join(lines) + "\n"
