"""The dynamic-cell search loop [CELLS Sec. 3.3, 4.1]: sample cells, evaluate them in parallel, update the controller.

One iteration ("batch") samples ``B`` cells from the controller (``B = SearchOptions.batch_size``, default the number
of workers), trains and scores them on the cached static outputs (``evaluate.evaluate_candidate``) through an executor,
then runs one PPO update (``ppo.PPOTrainer``) on the batch's successful candidates with advantages from the
moving-average baseline (``reward.RewardBaseline``; divided by the rewards' moving std with ``cells.advantage_norm``).
Each worker also times its candidate against the static network (``cost.CostMeter``) and the reward becomes
``accuracy * (latency / target) ** cells.latency_weight`` (0: the paper's reward).

The random baseline (``cells.sampler=random``, ``vidnas search cells --random``) is the same loop with a frozen
uniform controller (``Controller.make_uniform``) and no PPO update: same caches, training, early stopping, cost,
log and top-k, so the two runs compare at equal numbers of candidates.

The settings beyond the config, the checks of ``cells.*`` and the proxy budget (``cells.proxy_scale`` < 1: candidates
train and are scored on smaller maps, timed at the deployment size) are in ``options``; the log and what is read from
it (``read_log``, ``select_top``, ``compare_runs``) in ``records``.

Failed candidates (an exception in the worker, a dead worker) are logged with their error text and excluded from the
PPO update and the baseline: a crash says nothing reliable about a cell's accuracy, and giving it reward 0 would teach
the controller to avoid whatever happened to crash.

Run directory::

    candidates.jsonl     one line per finished candidate (tokens, cell, reward, accuracy reward, cost (latency,
                         FLOPs, FPS ratio), scores, halfway reward, time, early_stopped, failed, error, log-prob
                         when sampled, worker); appended as candidates finish
    ppo.jsonl            one line per PPO update (batch, loss, clip fraction, KL, entropy, baseline)
    controller.pt        controller, optimiser, baseline, sampling RNG, early-stop statistics; after every update
    cache/               feature cache shards (``--cache disk``)
    plots/rewards.png    reward over the search with its running mean [Fig. 3]
    plots/pareto.png     accuracy reward vs measured latency of every candidate, Pareto front, target
    plots/sampling.png   sampling proportions of ops, aggregations, inputs [Fig. 4]
    plots/top{k}.png     drawing of each top cell [Fig. 7]
    search_summary.json  counts, the best cells, timings

Resume (``resume=True``): the controller checkpoint holds the sampling generator's state after the last completed
batch, so the next batch is re-sampled exactly as it was before the interruption; candidates of that batch already in
``candidates.jsonl`` (same id, same tokens) are reused, not re-run, and the search continues to ``cells.candidates``.
Raising ``cells.candidates`` and resuming extends a finished search.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vidnas.config import Config, config_to_dict
from vidnas.data import ClipDataset, open_source
from vidnas.models import StaticSegmenter
from vidnas.models.architecture import Arch
from vidnas.models.cells import CellGenotype, cell_in_channels
from vidnas.search.cells.cache import CacheInfo, FeatureCache, build_caches, cache_key
from vidnas.search.cells.controller import Controller
from vidnas.search.cells.cost import CostMeter
from vidnas.search.cells.evaluate import CandidateJob, CandidateResult, EarlyStopRule
from vidnas.search.cells.executors import EXECUTORS, Executor, ExecutorError, import_ray, make_executor
from vidnas.search.cells.options import (
    SearchOptions,
    check_cells_config,
    deployment_size,
    proxy_size,
    search_data_config,
)
from vidnas.search.cells.plots import draw_cell, plot_reward_latency, plot_rewards, plot_sampling
from vidnas.search.cells.ppo import PPOTrainer
from vidnas.search.cells.records import LOG_NAME, PPO_LOG_NAME, append_jsonl, read_log, select_top
from vidnas.search.cells.reward import RewardBaseline
from vidnas.search.cells.space import CellSearchSpace
from vidnas.search.cells.static import load_static_network, meta_val_seen, static_identity
from vidnas.search.cells.summary import reward_stats
from vidnas.utils import atomic_write, atomic_write_json

__all__ = ["CHECKPOINT_NAME", "CellSearchResult", "CellSearch", "run_cell_search", "top_genotypes"]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "controller.pt"
CHECKPOINT_VERSION = 1


@dataclass
class CellSearchResult:
    """What a search leaves behind for the top-k training."""

    run_dir: Path
    space: CellSearchSpace
    records: list[dict[str, Any]]
    top: list[dict[str, Any]]
    static: StaticSegmenter
    static_path: Path
    train_cache: FeatureCache
    val_cache: FeatureCache
    evaluated: int = 0  # candidates run by this invocation (the others came from the log)
    static_arch: Arch | None = None  # the static network's architecture when it is an arch2_space model
    plots: dict[str, Path] = field(default_factory=dict)


class CellSearch:
    """A cell search in a run directory (layout in the module docstring).

    Args:
        cfg: resolved config (``cells``, ``data``, ``train.seed``, ``train.device``).
        run_dir: the run directory.
        static_path: checkpoint of the trained static network (``load_static_network``: arch2, or a per-frame
            arch2_space model).
        options: settings beyond the config.
    """

    def __init__(self, cfg: Config, run_dir: str | Path, static_path: str | Path,
                 options: SearchOptions | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.static_path = Path(static_path)
        self.options = options or SearchOptions()
        check_cells_config(cfg.cells)
        if cfg.data.selection_videos:
            raise ValueError(f"data.selection_videos={','.join(cfg.data.selection_videos)}: the cell search does not "
                             "use it (its own meta split, cells.meta_split, carves the train videos; top-k reads "
                             "data.val_split): leave it empty here")
        self.space = CellSearchSpace.from_config(cfg.cells)
        if self.options.inject_failure is not None and self.options.inject_failure not in (
                *self.space.ops, *self.space.aggregations):
            raise ValueError(f"inject_failure={self.options.inject_failure!r} is not an active op or aggregation "
                             f"({', '.join((*self.space.ops, *self.space.aggregations))})")
        if cfg.cells.executor not in EXECUTORS:
            raise ExecutorError(f"unknown executor {cfg.cells.executor!r}; valid executors: {', '.join(EXECUTORS)}")
        if cfg.cells.executor == "ray":
            import_ray()  # fail before the static outputs are cached, naming the optional extra
        self.log_path = self.run_dir / LOG_NAME
        self.ckpt_path = self.run_dir / CHECKPOINT_NAME
        self.static_saw_meta_val: list[str] = []  # set by _prepare
        self.static_arch: Arch | None = None  # set by _prepare: an arch2_space static network's architecture

    # -- setup -------------------------------------------------------------------------------------------------
    def _prepare(self) -> tuple[StaticSegmenter, FeatureCache, FeatureCache, CostMeter | None]:
        cfg = self.cfg
        static, static_cfg, self.static_arch = load_static_network(self.static_path, device=cfg.train.device)
        data_cfg = search_data_config(cfg)
        source = open_source(data_cfg)
        if source.num_classes != static.num_classes:
            raise ValueError(f"{self.static_path} predicts {static.num_classes} classes but the data has "
                             f"{source.num_classes}")
        if (static_cfg.data.height, static_cfg.data.width) != (data_cfg.height, data_cfg.width):
            how = f"the proxy size (cells.proxy_scale={cfg.cells.proxy_scale})" if cfg.cells.proxy_scale != 1 else ""
            logger.warning("static network trained at %dx%d, searching at %dx%d %s", static_cfg.data.height,
                           static_cfg.data.width, data_cfg.height, data_cfg.width, how)
        ds = ClipDataset(source, data_cfg.train_split, data_cfg, train=False)
        info = CacheInfo(source.num_classes, data_cfg.ignore_index, data_cfg.window, cell_in_channels(static),
                         (data_cfg.height, data_cfg.width))
        key = cache_key(static=static_identity(self.static_path), data=config_to_dict(data_cfg),
                        val_fraction=cfg.cells.meta_val_fraction, seed=cfg.train.seed, split=cfg.cells.meta_split)
        train_cache, val_cache = build_caches(
            static, ds, info, val_fraction=cfg.cells.meta_val_fraction, seed=cfg.train.seed, kind=cfg.cells.cache,
            directory=self.run_dir / "cache", key=key, batch_size=self.options.cache_batch_size,
            shard_size=self.options.shard_size, device=cfg.train.device, split=cfg.cells.meta_split,
            show_progress=self.options.show_progress)
        self.static_saw_meta_val = meta_val_seen(static_cfg, train_cache.split)
        if self.static_saw_meta_val:
            logger.warning("the static network %s trained on the meta-val frames of %s, on which every reward is "
                           "scored: that favours cells that copy its output. Train it with --set "
                           "data.selection_videos=%s (or let the search train its own: no --static)",
                           self.static_path, ", ".join(self.static_saw_meta_val), ",".join(self.static_saw_meta_val))
        meter = None
        if cfg.cells.latency_frames > 0:
            meter = CostMeter(copy.deepcopy(static).cpu(), deployment_size(cfg), frames=cfg.cells.latency_frames,
                              warmup=cfg.cells.latency_warmup)
        return static, train_cache, val_cache, meter

    # -- checkpoint ----------------------------------------------------------------------------------------------
    def _save(self, controller: Controller, ppo: PPOTrainer, baseline: RewardBaseline, gen: torch.Generator,
              done: int, batches: int, batch_size: int, half_stats: tuple[float, int]) -> None:
        state = {
            "version": CHECKPOINT_VERSION,
            "space": self.space.to_dict(),
            "controller": controller.state_dict(),
            "ppo": ppo.state_dict(),
            "baseline": baseline.state_dict(),
            "generator": gen.get_state(),
            "candidates_done": done,
            "batches_done": batches,
            "batch_size": batch_size,
            "half_stats": list(half_stats),
            "sampler": self.cfg.cells.sampler,
            "config": config_to_dict(self.cfg),
        }
        atomic_write(self.ckpt_path, lambda tmp: torch.save(state, tmp))

    # -- main loop -----------------------------------------------------------------------------------------------
    def run(self, *, resume: bool = False) -> CellSearchResult:
        """Search until ``cells.candidates`` candidates have been evaluated; returns the log and the top-k cells."""
        cfg, opts = self.cfg, self.options
        self.run_dir.mkdir(parents=True, exist_ok=True)
        records = read_log(self.log_path)
        if records and not resume:
            raise FileExistsError(f"{self.log_path} already holds {len(records)} candidates: pass --resume to "
                                  f"continue that search, or choose another --out")
        t0 = time.perf_counter()
        static, train_cache, val_cache, meter = self._prepare()
        seed = cfg.train.seed
        torch.manual_seed(seed)  # the controller's initial weights
        controller = Controller(self.space, hidden=cfg.cells.controller_hidden)
        learn = cfg.cells.sampler == "ppo"
        if not learn:
            controller.make_uniform()
        ppo = PPOTrainer(controller, lr=cfg.cells.controller_lr, clip=cfg.cells.ppo_clip,
                         grad_clip=cfg.cells.grad_clip, entropy_weight=cfg.cells.entropy_weight,
                         epochs=opts.ppo_epochs)
        baseline = RewardBaseline(cfg.cells.baseline_decay)
        gen = torch.Generator().manual_seed(seed)
        done, batches = 0, 0
        half_sum, half_n = 0.0, 0
        batch_size = opts.batch_size or max(1, cfg.cells.workers)
        if resume and self.ckpt_path.exists():
            state = torch.load(self.ckpt_path, map_location="cpu", weights_only=False)
            if state.get("space") != self.space.to_dict():
                raise ValueError(f"{self.ckpt_path} was written for search space {state.get('space')}, the config "
                                 f"now gives {self.space.to_dict()}: resume with the same cells.num_layers, "
                                 f"cells.ops and cells.aggregations")
            if state.get("sampler", "ppo") != cfg.cells.sampler:
                raise ValueError(f"{self.ckpt_path} was written by a search with cells.sampler="
                                 f"{state.get('sampler', 'ppo')}, the config now says {cfg.cells.sampler}: resume "
                                 "with the same sampler (--random or not)")
            controller.load_state_dict(state["controller"])
            ppo.load_state_dict(state["ppo"])
            baseline.load_state_dict(state["baseline"])
            gen.set_state(state["generator"])
            done, batches = int(state["candidates_done"]), int(state["batches_done"])
            half_sum, half_n = float(state["half_stats"][0]), int(state["half_stats"][1])
            if state["batch_size"] != batch_size:
                logger.info("resuming with the original batch size %d (not %d) so the sampling replays exactly",
                            state["batch_size"], batch_size)
            batch_size = int(state["batch_size"])
            logger.info("resumed the search after %d candidates (%d PPO updates)", done, batches)
        elif resume:
            logger.info("no controller checkpoint in %s: starting the search from its beginning (logged candidates "
                        "with matching tokens are reused)", self.run_dir)

        total = cfg.cells.candidates
        in_channels = cell_in_channels(static)
        executor: Executor | None = None
        evaluated = 0
        bar = tqdm(total=total, initial=min(done, total), desc="cells", disable=not opts.show_progress,
                   dynamic_ncols=True)
        try:
            while done < total:
                n = min(batch_size, total - done)
                ids = list(range(done, done + n))
                sample = controller.sample(n, generator=gen)
                rule = EarlyStopRule(mean=half_sum / half_n if half_n else None, count=half_n,
                                     tolerance=opts.early_stop_tolerance, min_history=opts.early_stop_min_history)
                results: dict[int, dict[str, Any]] = {}
                jobs = []
                for i, cid in enumerate(ids):
                    tokens = sample.tokens[i].tolist()
                    old = records.get(cid)
                    if old is not None and old["tokens"] == tokens:
                        results[cid] = old
                        continue
                    if old is not None:
                        logger.warning("candidate %d: logged tokens differ from the replayed sample; re-running it",
                                       cid)
                    jobs.append(CandidateJob(
                        cid=cid, tokens=tuple(tokens), ops=self.space.ops, aggregations=self.space.aggregations,
                        num_classes=train_cache.info.num_classes, in_channels=in_channels,
                        ignore_index=train_cache.info.ignore_index, epochs=cfg.cells.cell_epochs,
                        lr=cfg.cells.cell_lr, batch_size=cfg.cells.cell_batch_size,
                        seed=seed * 1_000_003 + cid, early_stop=rule, max_steps_per_epoch=opts.max_steps_per_epoch,
                        inject_failure=opts.inject_failure, device=cfg.train.device,
                        latency_weight=cfg.cells.latency_weight, latency_target_ms=cfg.cells.latency_target_ms,
                        amp=cfg.train.amp))
                bar.update(n - len(jobs))
                if jobs and executor is None:
                    executor = make_executor(cfg.cells.executor, train_cache, val_cache, workers=cfg.cells.workers,
                                             address=opts.ray_address, meter=meter, threads=opts.worker_threads)
                for res in executor.run(jobs) if jobs else ():
                    i = res.cid - done
                    rec = self._record(res, batches, float(sample.log_prob[i]), float(sample.entropy[i]))
                    append_jsonl(self.log_path, rec)
                    records[res.cid] = rec
                    results[res.cid] = rec
                    evaluated += 1
                    bar.update(1)
                    if res.failed:
                        logger.warning("candidate %d failed: %s", res.cid, (res.error or "").splitlines()[0])
                    else:
                        bar.set_postfix(reward=f"{res.reward:.3f}")
                ok = [i for i, cid in enumerate(ids) if not results[cid]["failed"]]
                stats: dict[str, Any] = {}
                if ok:
                    rewards = [results[ids[i]]["reward"] for i in ok]
                    adv = baseline.advantages(rewards, normalize=cfg.cells.advantage_norm)
                    if learn:
                        stats = ppo.update(sample.tokens[ok], sample.log_prob[ok], torch.tensor(adv))
                    for i in ok:
                        half = results[ids[i]].get("half_reward")
                        if half is not None:
                            half_sum += float(half)
                            half_n += 1
                done += n
                batches += 1
                self._save(controller, ppo, baseline, gen, done, batches, batch_size, (half_sum, half_n))
                append_jsonl(self.run_dir / PPO_LOG_NAME, {"batch": batches - 1, "candidates": ids,
                                                             "updated_on": [ids[i] for i in ok],
                                                             "baseline": baseline.value, **stats})
        finally:
            bar.close()
            if executor is not None:
                executor.close()

        ordered = [records[c] for c in sorted(records) if c < total]
        top = select_top(ordered, cfg.cells.top_k)
        best = select_top(ordered, max(cfg.cells.top_k, 3))  # reported and drawn even when nothing is trained
        result = CellSearchResult(self.run_dir, self.space, ordered, top, static, self.static_path, train_cache,
                                  val_cache, evaluated=evaluated, static_arch=self.static_arch)
        if opts.plots:
            result.plots = self.write_plots(ordered, best)
        self._summary(ordered, best, time.perf_counter() - t0, evaluated)
        return result

    def _record(self, res: CandidateResult, batch: int, log_prob: float, entropy: float) -> dict[str, Any]:
        rec = res.to_record()
        rec.update(batch=batch, log_prob=log_prob, entropy=entropy,
                   finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        try:
            rec["cell"] = self.space.genotype(res.tokens).to_dict()["layers"]
        except ValueError:  # pragma: no cover - controller tokens are always valid
            rec["cell"] = None
        return rec

    def write_plots(self, records: list[dict[str, Any]], top: list[dict[str, Any]]) -> dict[str, Path]:
        """Reward curve, sampling proportions and a drawing of each top cell under ``run_dir/plots``."""
        out = {"rewards": plot_rewards(records, self.run_dir / "plots" / "rewards.png"),
               "sampling": plot_sampling(records, self.space, self.run_dir / "plots" / "sampling.png")}
        pareto = plot_reward_latency(records, self.run_dir / "plots" / "pareto.png",
                                     target_ms=self.cfg.cells.latency_target_ms)
        if pareto is not None:
            out["pareto"] = pareto
        for rank, rec in enumerate(top):
            geno = self.space.genotype(rec["tokens"], name=f"top{rank}")
            out[f"top{rank}"] = draw_cell(geno, self.run_dir / "plots" / f"top{rank}.png",
                                          title=f"top{rank}: candidate {rec['cid']}, reward {rec['reward']:.4f}")
        return out

    def _summary(self, records: list[dict[str, Any]], top: list[dict[str, Any]], seconds: float,
                 evaluated: int) -> None:
        ok = [r for r in records if not r["failed"]]
        cells = self.cfg.cells
        atomic_write_json(self.run_dir / "search_summary.json", {
            "space": self.space.to_dict(),
            "log10_space_size": self.space.log10_size(),
            "sampler": cells.sampler,
            "reward": {"latency_weight": cells.latency_weight, "latency_target_ms": cells.latency_target_ms,
                       "deployment_size": list(deployment_size(self.cfg)) if cells.latency_frames else None},
            "search_size": list(proxy_size(self.cfg.data.height, self.cfg.data.width, cells.proxy_scale)),
            "static_saw_meta_val": self.static_saw_meta_val,  # meta-val videos the static network trained on
            "stats": reward_stats(records),
            "candidates": len(records),
            "evaluated_this_run": evaluated,
            "failed": sum(r["failed"] for r in records),
            "early_stopped": sum(bool(r.get("early_stopped")) for r in ok),
            "mean_reward": sum(r["reward"] for r in ok) / len(ok) if ok else None,
            "best": [{"cid": r["cid"], "reward": r["reward"], "tokens": r["tokens"], "cell": r.get("cell")}
                     for r in top],
            "seconds_this_run": seconds,
            "candidate_seconds_total": sum(r["seconds"] for r in records),
        })


def run_cell_search(cfg: Config, run_dir: str | Path, static_path: str | Path, *, resume: bool = False,
                    options: SearchOptions | None = None) -> CellSearchResult:
    """``CellSearch(cfg, run_dir, static_path, options).run(resume=resume)``."""
    return CellSearch(cfg, run_dir, static_path, options).run(resume=resume)


def top_genotypes(result: CellSearchResult) -> list[CellGenotype]:
    """The top cells of a search as genotypes named ``cell0``, ``cell1``..."""
    return [result.space.genotype(r["tokens"], name=f"cell{k}",
                                  extra={"candidate": r["cid"], "search_reward": r["reward"]})
            for k, r in enumerate(result.top)]
