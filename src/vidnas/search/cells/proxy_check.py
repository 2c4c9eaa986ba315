"""Does the search's proxy reward rank cells as the full size does? (issue 27, ``vidnas search cells --proxy-check N``)

The search scores every candidate after a short training at the proxy budget (``cells.proxy_scale``,
``cells.cell_epochs``); the top-k cells are then trained at the full size. The check measures whether the proxy's
order survives the full size, on the split the search decides on.

Protocol:

1. **Selection** (``select_for_check``) of ``N`` genotypes (default 8, at least 3) among the search's distinct
   successful genotypes, ranked by proxy reward (``records.select_top``: a genotype sampled several times counts once,
   with its best record): the ``k`` best (``k = cells.top_k``, at most ``N``: the cells the top-k training takes;
   with ``cells.top_k = 0``, e.g. ``--resume --top-k 0 --proxy-check N`` on a finished run, the default k = 2 of the
   paper, so that a check alone needs no new top-k training), then ``m = N - k`` others spread over the remaining
   ``L`` ranks by rank quantiles: those ranks are cut into ``m`` contiguous bins, bin ``j`` holding ranks
   ``k + floor(j L / m) .. k + floor((j + 1) L / m) - 1``, and one rank is drawn uniformly in each bin by a generator
   seeded with ``train.seed`` (stratified: every part of the reward range is represented; rerunning with the same
   seed and k picks the same genotypes). An early-stopped candidate takes part with the reward the search gave it
   (its halfway reward).
2. **Full-size training** of each, as step 1 of the top-k training (``topk``) does: a fresh cell (initialised from
   ``torch.manual_seed(s)``, ``s`` the candidate's search seed ``train.seed * 1000003 + cid``) trained with Adam at
   ``cells.cell_lr`` for ``final_cell_epochs`` epochs of ``final_batch_size`` windows (``evaluate.train_cell``) on the
   static network's outputs cached at the full size, but on **meta-train only** (the same meta split as the search,
   ``cells.meta_split``, made at the full size), then scored on **meta-val at the full size**
   (``evaluate.score_cell``): the split every search decision is made on. The val split is never read here (the JSON
   says so: ``decided_on``). End-to-end fine-tuning (the top-k training's step 2) is NOT done: the check ranks cells
   trained on frozen static features, as the search does, only at the full size and budget.
3. **Correlations** over the ``N`` genotypes, between the proxy reward ``x`` (what the controller learned from and
   what the top-k is chosen by; latency-aware when ``cells.latency_weight`` is not 0) and the full-size meta-val
   mIoU ``y``; between the proxy meta-val mIoU and ``y``; and between the proxy accuracy reward and the full-size
   accuracy reward (the same geometric mean of mIoU, fwIoU and mAcc at both sizes):

   * Spearman's rho: the Pearson correlation of the average ranks (tied values share the mean of their ranks),
     ``rho = sum_i (r_i - mean r)(s_i - mean s) / sqrt(sum_i (r_i - mean r)^2 sum_i (s_i - mean s)^2)``;
   * Kendall's tau-b: over the ``n0 = N (N - 1) / 2`` pairs ``i < j``, with ``P - Q = sum sign(x_i - x_j)
     sign(y_i - y_j)`` (concordant minus discordant pairs) and ``n1``, ``n2`` the pairs tied in ``x``, in ``y``:
     ``tau_b = (P - Q) / sqrt((n0 - n1) (n0 - n2))``.

   Both are undefined (NaN; ``null`` in the JSON) when one side is constant.

Files in the run directory: ``proxy_check/cand{cid}.json`` per finished genotype (kept: a rerun with the same settings
skips it, so an interrupted check resumes), ``proxy_check/cache/`` (the full-size cache with ``cells.cache=disk``),
``proxy_check.json`` (every genotype: tokens, role, proxy rank, proxy reward, proxy accuracy reward, proxy mIoU,
proxy latency ratio when the search timed it, full-size meta-val mIoU and scores, seconds; the correlations; N; the
split), ``plots/proxy_check.png`` (proxy reward vs full-size mIoU, the top-k marked) and ``proxy_check.md`` (the
table; the top-k training's ``report.md`` carries the same section).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidnas.config import CellsConfig, Config, config_to_dict
from vidnas.data import ClipDataset, open_source
from vidnas.models.cells import Cell, cell_in_channels
from vidnas.plotting import plt, save_figure
from vidnas.search.cells.cache import FeatureCache, build_caches, cache_key
from vidnas.search.cells.evaluate import score_cell, train_cell
from vidnas.search.cells.options import search_data_config
from vidnas.search.cells.records import select_top
from vidnas.search.cells.search import CellSearchResult
from vidnas.search.cells.static import static_identity
from vidnas.utils import atomic_write_json, atomic_write_text

__all__ = [
    "PROXY_CHECK_NAME",
    "DECIDED_ON",
    "spearman_rho",
    "kendall_tau_b",
    "select_for_check",
    "run_proxy_check",
    "format_proxy_check",
    "format_proxy_correlations",
    "plot_proxy_check",
]

logger = logging.getLogger(__name__)

PROXY_CHECK_NAME = "proxy_check.json"
DECIDED_ON = "meta-val"  # the split the full-size mIoU is measured on (never the val split)


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``a``; tied values share the mean of their ranks."""
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(1, len(a) + 1)
    _, inverse = np.unique(a, return_inverse=True)
    return (np.bincount(inverse, weights=ranks) / np.bincount(inverse))[inverse]


def _pair(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"rank correlation of {xa.shape} and {ya.shape} values: need two equal-length lists")
    if len(xa) < 3:
        raise ValueError(f"rank correlation of {len(xa)} values: need at least 3")
    return xa, ya


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho with average ranks for ties (formula in the module docstring); NaN when a side is constant."""
    rx, ry = (_average_ranks(a) for a in _pair(x, y))
    dx, dy = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    return float((dx * dy).sum() / den) if den > 0 else math.nan


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (formula in the module docstring); NaN when a side is constant."""
    xa, ya = _pair(x, y)
    iu = np.triu_indices(len(xa), k=1)  # the pairs i < j
    sx = np.sign(xa[:, None] - xa[None, :])[iu]
    sy = np.sign(ya[:, None] - ya[None, :])[iu]
    n0 = len(sx)
    den = math.sqrt(float((n0 - (sx == 0).sum()) * (n0 - (sy == 0).sum())))
    return float((sx * sy).sum() / den) if den > 0 else math.nan


def select_for_check(records: Sequence[dict[str, Any]], n: int, top_k: int, seed: int) -> list[dict[str, Any]]:
    """The ``n`` genotypes of the check (protocol step 1): the ``top_k`` best, then one per rank bin of the others.

    Returns:
        ``{"rank", "role", "record"}`` per genotype, by proxy rank (0 = best); ``role`` is ``top-k`` or ``spread``.
    """
    if n < 3:
        raise ValueError(f"--proxy-check {n}: a rank correlation needs at least 3 genotypes (0 turns the check off)")
    ranked = select_top(list(records), len(records))  # distinct successful genotypes, best proxy reward first
    if len(ranked) < n:
        raise ValueError(f"--proxy-check {n}: the search has only {len(ranked)} distinct successful genotypes")
    k = min(max(top_k, 0), n)
    rest, m = len(ranked) - k, n - k
    gen = np.random.default_rng(seed)
    ranks = list(range(k))
    for j in range(m):
        lo, hi = k + j * rest // m, k + (j + 1) * rest // m
        ranks.append(int(lo + gen.integers(hi - lo)))
    return [{"rank": r, "role": "top-k" if r < k else "spread", "record": ranked[r]} for r in ranks]


def _full_size_caches(cfg: Config, result: CellSearchResult, *, show_progress: bool) -> tuple[FeatureCache,
                                                                                            FeatureCache]:
    """Meta-train and meta-val caches at the full size: the search's own when it ran at the full size, else the same
    meta split cached again from the full-size windows."""
    data_cfg = search_data_config(cfg, proxy=False)
    hw = (data_cfg.height, data_cfg.width)
    if result.train_cache.info.image_hw == hw:
        return result.train_cache, result.val_cache
    ds = ClipDataset(open_source(data_cfg), data_cfg.train_split, data_cfg, train=False)
    key = cache_key(static=static_identity(result.static_path), data=config_to_dict(data_cfg),
                    val_fraction=cfg.cells.meta_val_fraction, seed=cfg.train.seed, split=cfg.cells.meta_split)
    return build_caches(result.static, ds, dataclasses.replace(result.train_cache.info, image_hw=hw),
                        val_fraction=cfg.cells.meta_val_fraction, seed=cfg.train.seed, kind=cfg.cells.cache,
                        directory=result.run_dir / "proxy_check" / "cache", key=key, device=cfg.train.device,
                        split=cfg.cells.meta_split, show_progress=show_progress)


def run_proxy_check(cfg: Config, result: CellSearchResult, n: int, *, cell_epochs: int, batch_size: int,
                    max_steps_per_epoch: int | None = None, show_progress: bool = False) -> dict[str, Any]:
    """Select, train at the full size, correlate and write the files (protocol and files in the module docstring).

    Args:
        cfg: the search's config.
        result: the finished search.
        n: N, genotypes to check (>= 3).
        cell_epochs: epochs of each full-size cell training (``--final-cell-epochs``).
        batch_size: windows per step (``--final-batch-size``).
        max_steps_per_epoch: cap on steps per epoch (quick runs).
        show_progress: tqdm bar while caching.

    Returns:
        What ``proxy_check.json`` holds.
    """
    top_k = cfg.cells.top_k or CellsConfig().top_k  # --top-k 0: the k best a top-k training would take
    picks = select_for_check(result.records, n, top_k, cfg.train.seed)  # refuses a bad N before any work
    if cell_epochs < 1:
        raise ValueError(f"--final-cell-epochs must be >= 1 for the proxy check, got {cell_epochs}")
    data_cfg = search_data_config(cfg, proxy=False)
    full_hw = [data_cfg.height, data_cfg.width]
    train_cache, val_cache = _full_size_caches(cfg, result, show_progress=show_progress)
    settings = {"cell_epochs": cell_epochs, "batch_size": batch_size, "max_steps_per_epoch": max_steps_per_epoch,
                "lr": cfg.cells.cell_lr, "full_size": full_hw, "meta_split": cfg.cells.meta_split,
                "meta_val_fraction": cfg.cells.meta_val_fraction, "seed": cfg.train.seed}
    rows = []
    for i, pick in enumerate(picks):
        rec = pick["record"]
        path = result.run_dir / "proxy_check" / f"cand{rec['cid']}.json"
        done = json.loads(path.read_text()) if path.is_file() else None
        if done is None or done.get("tokens") != rec["tokens"] or done.get("settings") != settings:
            logger.info("proxy check %d/%d: candidate %d (proxy rank %d, reward %.4f) at %dx%d", i + 1, len(picks),
                        rec["cid"], pick["rank"], rec["reward"], *full_hw)
            t0 = time.perf_counter()
            seed = cfg.train.seed * 1_000_003 + rec["cid"]  # the candidate's seed in the search
            torch.manual_seed(seed)
            cell = Cell(result.space.genotype(rec["tokens"]), in_channels=cell_in_channels(result.static),
                        num_classes=train_cache.info.num_classes).to(cfg.train.device)
            train_cell(cell, train_cache, None, epochs=cell_epochs, lr=cfg.cells.cell_lr, batch_size=batch_size,
                       seed=seed, max_steps_per_epoch=max_steps_per_epoch, amp=cfg.train.amp)
            full_reward, metrics = score_cell(cell, val_cache, batch_size=batch_size)
            done = {"cid": rec["cid"], "tokens": rec["tokens"], "settings": settings, "full_reward": full_reward,
                    "full_metrics": metrics, "seconds": time.perf_counter() - t0}
            atomic_write_json(path, done)
        else:
            logger.info("proxy check %d/%d: candidate %d already done (%s)", i + 1, len(picks), rec["cid"], path)
        rows.append({"cid": rec["cid"], "tokens": rec["tokens"], "role": pick["role"], "proxy_rank": pick["rank"],
                     "proxy_reward": rec["reward"], "proxy_accuracy_reward": rec.get("accuracy_reward"),
                     "proxy_miou": (rec.get("metrics") or {}).get("miou"),
                     "proxy_latency_ratio": (rec.get("cost") or {}).get("latency_ratio"),
                     "early_stopped": bool(rec.get("early_stopped")),
                     "full_miou": done["full_metrics"]["miou"], "full_reward": done["full_reward"],
                     "full_metrics": done["full_metrics"], "seconds": done["seconds"]})

    def corr(key: str, full: str = "full_miou") -> dict[str, float | None]:
        pairs = [(r[key], r[full]) for r in rows if r[key] is not None]
        if len(pairs) < 3:
            return {"spearman": None, "kendall_tau_b": None, "n": len(pairs)}
        x, y = zip(*pairs, strict=True)
        rho, tau = spearman_rho(x, y), kendall_tau_b(x, y)
        return {"spearman": None if math.isnan(rho) else rho, "kendall_tau_b": None if math.isnan(tau) else tau,
                "n": len(pairs)}

    split = train_cache.split
    data = {
        "n": len(rows),
        "top_k": sum(r["role"] == "top-k" for r in rows),
        "decided_on": DECIDED_ON,
        "meta_split": split.to_dict() if split is not None else None,
        "proxy_size": list(result.train_cache.info.image_hw),
        "full_size": full_hw,
        "proxy_cell_epochs": cfg.cells.cell_epochs,
        "settings": settings,
        "distinct_genotypes": len(select_top(result.records, len(result.records))),
        "correlations": {"proxy_reward_vs_full_miou": corr("proxy_reward"),
                         "proxy_miou_vs_full_miou": corr("proxy_miou"),
                         "proxy_accuracy_reward_vs_full_reward": corr("proxy_accuracy_reward", "full_reward")},
        "genotypes": rows,
        "end_to_end": False,  # cell-only training on cached features, as the search; no fine-tuning
    }
    atomic_write_json(result.run_dir / PROXY_CHECK_NAME, data)
    plot_proxy_check(data, result.run_dir / "plots" / "proxy_check.png")
    atomic_write_text(result.run_dir / "proxy_check.md", format_proxy_check(data))
    return data


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def format_proxy_check(data: dict[str, Any]) -> str:
    """A markdown section: the correlations, then one row per genotype by proxy rank."""
    c = data["correlations"]
    ph, pw = data["proxy_size"]
    fh, fw = data["full_size"]
    lines = [
        "## Proxy check: does the proxy reward rank cells as the full size does?",
        "",
        f"{data['n']} of {data['distinct_genotypes']} distinct genotypes (the top {data['top_k']} and others spread "
        f"over the reward range), each trained again at {fh}x{fw} (proxy: {ph}x{pw}, {data['proxy_cell_epochs']} "
        f"cell epochs) for {data['settings']['cell_epochs']} cell-only epochs on meta-train and scored on "
        f"{data['decided_on']} (no end-to-end fine-tuning; the val split is not read).",
        "",
        "| proxy score vs full-size score | Spearman rho | Kendall tau-b | N |",
        "|---|---|---|---|",
    ]
    for name, key in (("proxy reward vs full-size mIoU", "proxy_reward_vs_full_miou"),
                      ("proxy mIoU vs full-size mIoU", "proxy_miou_vs_full_miou"),
                      ("proxy accuracy reward vs full-size accuracy reward", "proxy_accuracy_reward_vs_full_reward")):
        lines.append(f"| {name} | {_num(c[key]['spearman'])} | {_num(c[key]['kendall_tau_b'])} | {c[key]['n']} |")
    lines += ["", "| proxy rank | candidate | role | proxy reward | proxy mIoU | latency ratio | full-size mIoU | "
              "seconds |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(data["genotypes"], key=lambda r: r["proxy_rank"]):
        lines.append(f"| {r['proxy_rank']} | {r['cid']} | {r['role']} | {r['proxy_reward']:.4f} | "
                     f"{_num(r['proxy_miou'])} | {_num(r['proxy_latency_ratio'])} | {r['full_miou']:.4f} | "
                     f"{r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def format_proxy_correlations(checks: dict[str, dict[str, Any]]) -> str:
    """One markdown table of several runs' proxy checks (name -> ``proxy_check.json``): N, sizes, and Spearman rho /
    Kendall tau-b of proxy reward and of proxy mIoU vs the full-size meta-val mIoU."""
    lines = ["| run | N | proxy size -> full size | cell epochs (proxy -> full) | reward vs mIoU: rho | tau-b | "
             "proxy mIoU vs mIoU: rho | tau-b | top-k full-size mIoU rank |", "|---|---|---|---|---|---|---|---|---|"]
    for name, d in checks.items():
        a, b = d["correlations"]["proxy_reward_vs_full_miou"], d["correlations"]["proxy_miou_vs_full_miou"]
        by_full = sorted(d["genotypes"], key=lambda r: -r["full_miou"])
        ranks = ", ".join(str(by_full.index(r) + 1) for r in d["genotypes"] if r["role"] == "top-k") or "-"
        lines.append(f"| {name} | {d['n']} | {'x'.join(map(str, d['proxy_size']))} -> "
                     f"{'x'.join(map(str, d['full_size']))} | {d['proxy_cell_epochs']} -> "
                     f"{d['settings']['cell_epochs']} | {_num(a['spearman'])} | {_num(a['kendall_tau_b'])} | "
                     f"{_num(b['spearman'])} | {_num(b['kendall_tau_b'])} | {ranks} of {d['n']} |")
    return "\n".join(lines) + "\n"


def plot_proxy_check(data: dict[str, Any], path: str | Path) -> Path:
    """Scatter of proxy reward (x) vs full-size meta-val mIoU (y), the top-k marked, rho and tau in the title."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for role, marker, colour in (("spread", "o", "#4c72b0"), ("top-k", "*", "#dd8452")):
        rs = [r for r in data["genotypes"] if r["role"] == role]
        if rs:
            ax.scatter([r["proxy_reward"] for r in rs], [r["full_miou"] for r in rs], marker=marker, c=colour,
                       s=140 if role == "top-k" else 40, label=role, zorder=3)
            for r in rs:
                ax.annotate(str(r["cid"]), (r["proxy_reward"], r["full_miou"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
    c = data["correlations"]["proxy_reward_vs_full_miou"]
    ax.set_title(f"Proxy vs full size, N={data['n']}: Spearman {_num(c['spearman'])}, Kendall tau-b "
                 f"{_num(c['kendall_tau_b'])}", fontsize=9)
    ph, pw = data["proxy_size"]
    fh, fw = data["full_size"]
    ax.set_xlabel(f"proxy reward ({ph}x{pw}, search budget)")
    ax.set_ylabel(f"mIoU at {fh}x{fw} on {data['decided_on']} (cell only)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
