"""The lambda sweep [ST-NAS Fig. 3]: a baseline, one search + final training per lambda (or one budget search), and
random architectures of the same space, all trained alike and benchmarked together.

Over the ``arch2_space`` space the sweep adds its controls: the space's cheapest point (``cheapest/``), beside the
per-frame references (``--references``) and, with ``random_mode="matched"``, random architectures whose whole-model
table latency is within 10% of each searched model's. Every model is timed under both protocols (window and
incremental); ``sweep.json``'s ``control_summary`` (``candidates.control_summary``) says per searched model how many
controls it dominates and where its mIoU sits against the matched random models' mean and spread.

``vidnas search stnas --lambdas ...`` (and ``--random K``) runs it; the stages are those of
``vidnas.experiments.candidates``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidnas.config import Config, save_config
from vidnas.experiments.candidates import (
    Candidate,
    Progress,
    benchmark_candidates,
    cheapest_arch,
    check_space_reference,
    control_lines,
    control_summary,
    dominance_counts,
    lam_dirname,
    random_archs_for,
    reference_lines,
    run_baseline,
    run_candidate,
    run_random,
    run_reference,
)
from vidnas.experiments.stages import Stages
from vidnas.models import arch_from_config
from vidnas.search.plots import plot_miou_fps
from vidnas.search.stnas import RANDOM_MODES, check_searchable_decoder, check_stnas_config
from vidnas.utils import atomic_write_json, atomic_write_text

__all__ = ["SweepResult", "sweep_table", "dominance_lines", "run_sweep", "MATCHED_K"]

MATCHED_K = 8  # latency-matched random architectures when --random-mode matched is asked for without --random


@dataclass
class SweepResult:
    """A lambda sweep: the baseline, one candidate per lambda and the random architectures, benchmarked together."""

    run_dir: Path
    baseline: Candidate
    candidates: list[Candidate]
    randoms: list[Candidate] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    references: list[Candidate] = field(default_factory=list)
    controls: list[Candidate] = field(default_factory=list)

    @property
    def dominance(self) -> dict[str, dict[str, int]]:
        """Per searched model: random architectures it dominates (FPS and best val mIoU), and that dominate it."""
        return dominance_counts(self.candidates, self.randoms)

    @property
    def control_summary(self) -> dict[str, dict[str, Any]]:
        """Per searched model against the references, the cheapest point and its matched random models
        (``candidates.control_summary``)."""
        return control_summary(self.candidates, self.randoms, [*self.references, *self.controls])


def sweep_table(baseline: Candidate, candidates: Sequence[Candidate], randoms: Sequence[Candidate] = (),
                references: Sequence[Candidate] = (), controls: Sequence[Candidate] = ()) -> str:
    """Markdown table of a sweep: lambda, depths, decoder, params, FPS under the window protocol (and its ratio to
    the baseline's) and the incremental one (``-``: the model has no incremental decode), mIoU, search and train
    time; after the baseline the per-frame references and the controls (the cheapest point), then the searched and
    the random models."""
    lines = ["| model | lambda | depths | decoder | params (M) | GFLOPs | FPS | FPS / baseline | FPS inc | mIoU | "
             "search s | train s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base_fps = baseline.metrics.get("fps")
    for c in [baseline, *references, *controls, *candidates, *randoms]:
        m = c.metrics
        ratio = "-" if not base_fps or m.get("fps") is None else f"{m['fps'] / base_fps:.2f}x"
        lines.append(
            f"| {c.name} | {'-' if c.lam is None else f'{c.lam:g}'} | {c.depths} | {c.decoder} | "
            f"{_num(m.get('params'), 1e-6, '.3f')} | {_num(m.get('gflops'), 1.0, '.3f')} | "
            f"{_num(m.get('fps'), 1.0, '.1f')} | {ratio} | {_num(m.get('inc_fps'), 1.0, '.1f')} | "
            f"{c.score:.4f} | {c.search_seconds:.1f} | "
            f"{c.train_seconds:.1f} |"
        )
    return "\n".join(lines) + "\n"


def dominance_lines(counts: dict[str, dict[str, int]], what: str = "best val mIoU") -> list[str]:
    """One line per searched model: how many random architectures it dominates on FPS and mIoU."""
    return [f"- {name} dominates {c['dominates']} of {c['random']} random architectures on FPS and {what} "
            f"({c['dominated_by']} dominate it)" for name, c in counts.items()]


def _num(v: Any, scale: float, spec: str) -> str:
    return "-" if v is None else format(float(v) * scale, spec)


def decided_on(cfg: Config) -> dict[str, Any]:
    """Which split made the sweep's decisions and which one its mIoU column reports (issue 26's protocol).

    With ``data.selection_videos``: the depth rule of every search and the best epoch of every training (searched,
    random, controls, references alike) are decided on those videos of the train split, which no model trains on, and
    the mIoU is the validation split's, read once per training at its end. Without: the validation split does both,
    which flatters every row alike."""
    if cfg.data.selection_videos:
        videos = ",".join(cfg.data.selection_videos)
        return {"split": f"{cfg.data.train_split}:{videos}", "decides": "depth rule, best epoch (best.pt)",
                "reported": cfg.data.val_split,
                "miou": f"the {cfg.data.val_split} split's mIoU of each training's best.pt, read once after training; "
                        f"best.pt and every depth rule were chosen on the selection videos {videos}"}
    return {"split": cfg.data.val_split, "decides": "depth rule, best epoch (best.pt)", "reported": cfg.data.val_split,
            "miou": f"best {cfg.data.val_split} mIoU of each training (the same split chose best.pt and the depth "
                    "rules: set data.selection_videos to separate them)"}


def run_sweep(
    cfg: Config,
    run_dir: str | Path,
    lambdas: Sequence[float],
    *,
    resume: bool = True,
    show_progress: bool = True,
    skip_encoder: bool = False,
    skip_decoder: bool = False,
    bench_frames: int = 100,
    bench_warmup: int = 10,
    progress: Progress | None = None,
    random_k: int = 0,
    random_mode: str = "uniform",
    random_seed: int = 0,
    references: Sequence[str] = (),
    jobs: int = 1,
) -> SweepResult:
    """Search once per lambda, train each derived model, the baseline and ``random_k`` random architectures, benchmark
    all together, plot the Pareto front of mIoU vs FPS [ST-NAS Fig. 3].

    With ``cfg.stnas.target_latency_ms`` set, the one searched model is the budget search (``target_<ms>ms/``) and
    ``lambdas`` is ignored.

    Args:
        cfg: resolved config.
        run_dir: the sweep's directory (``baseline/``, ``lam_<lambda>/``, ``random_<i>/``, ``sweep.json``,
            ``sweep.md``, ``pareto.png``).
        lambdas: the lambdas to search with.
        resume: skip finished stages and continue interrupted ones (default on: a sweep is long).
        show_progress: tqdm bars.
        skip_encoder: search the decoder only.
        skip_decoder: search the encoder depths only.
        bench_frames: timed pushes per model (the paper: 1000).
        bench_warmup: untimed pushes per model.
        progress: called with a line per stage.
        random_k: random architectures of the same space (``random_archs_for``), trained like the others.
        random_mode: ``uniform``, ``latency`` (encoder block latency matched to the searched models in turn) or
            ``matched`` (the whole model's table latency within 10% of a searched model's: the latency-matched
            controls).
        random_seed: seed of the random architectures (independent of ``train.seed``, so every training seed sees
            the same ones).
        references: per-frame models of the library (``head``, ``arch2``) trained with the same recipe
            (``ref_<decoder>/``), benchmarked and tabled beside the others. Over ``arch2_space`` the per-frame arch2
            is the space's arch2 point on the full-depth encoder (``check_space_reference``), and the space's
            cheapest point (``cheapest_arch``) is trained as a control (``cheapest/``).
        jobs: stages at once, each in its own process (``vidnas.experiments.stages``; 1: one after the other in this
            process): the searches, the baseline, the references and the uniform random architectures side by side,
            latency-matched random architectures once the searches are done. The benchmark runs afterwards, alone.
    """
    run_dir = Path(run_dir)
    lambdas = [float(v) for v in lambdas]
    budget = cfg.stnas.target_latency_ms
    if budget is None and not lambdas:
        raise ValueError("the sweep needs at least one lambda")
    if len(set(lambdas)) != len(lambdas):
        raise ValueError(f"duplicate lambdas in {lambdas}")
    if random_k < 0:
        raise ValueError(f"--random must be >= 0, got {random_k}")
    if random_mode not in RANDOM_MODES:
        raise ValueError(f"random mode {random_mode!r}; valid modes: {', '.join(RANDOM_MODES)}")
    check_stnas_config(cfg)
    if not skip_decoder:  # before any stage starts (search_stnas checks it again in its own)
        check_searchable_decoder(arch_from_config(cfg))
    space = arch_from_config(cfg).decoder == "arch2_space"
    check_space_reference(cfg, references)
    if random_mode == "matched" and skip_encoder:
        raise ValueError("--random-mode matched draws depths too: it needs the encoder search (no --skip-encoder)")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    runs = ([(cfg.stnas.lam, f"target_{budget:g}ms", f"target={budget:g}ms")] if budget is not None
            else [(lam, lam_dirname(lam), None) for lam in lambdas])
    with Stages(jobs, progress=progress) as stages:
        # the searches first (a budget nothing fits fails before any training), then the stages that need no search
        f_cands = [stages.submit(f"{name or f'lam={lam:g}'}: search, then train the derived model -> {run_dir / sub}",
                                 run_candidate, cfg, run_dir / sub, lam, resume=resume, show_progress=show_progress,
                                 skip_encoder=skip_encoder, skip_decoder=skip_decoder, name=name)
                   for lam, sub, name in runs]
        # over the arch2 space the config's model is arch2's point (tests/test_arch2_space.py): with the per-frame
        # arch2 reference beside it, that one training is the baseline too, not a second initialisation of it
        shared = space and "arch2" in references
        f_baseline = None if shared else stages.submit(f"baseline training -> {run_dir / 'baseline'}", run_baseline,
                                                       cfg, run_dir / "baseline", resume=resume,
                                                       show_progress=show_progress)
        # these random architectures need the searches
        matched = random_mode in ("latency", "matched") and not skip_encoder
        archs = [] if matched else random_archs_for(cfg, [], random_k, mode=random_mode, seed=random_seed,
                                                    skip_encoder=skip_encoder, skip_decoder=skip_decoder)
        f_randoms = [stages.submit(f"train random architecture {i + 1}/{random_k} -> {run_dir / f'random_{i}'}",
                                   run_random, cfg, run_dir / f"random_{i}", arch, resume=resume,
                                   show_progress=show_progress) for i, arch in enumerate(archs)]
        f_refs = [stages.submit(f"train the per-frame {name} reference -> {run_dir / f'ref_{name}'}", run_reference,
                                cfg, run_dir / f"ref_{name}", name, resume=resume, show_progress=show_progress)
                  for name in references]
        f_controls = [stages.submit(f"train the space's cheapest point -> {run_dir / 'cheapest'}", run_random, cfg,
                                    run_dir / "cheapest", cheapest_arch(cfg), resume=resume,
                                    show_progress=show_progress, kind="control")] if space else []
        cands = [f.result() for f in f_cands]
        if matched:
            archs = random_archs_for(cfg, cands, random_k, mode=random_mode, seed=random_seed,
                                     skip_encoder=skip_encoder, skip_decoder=skip_decoder)
            f_randoms = [stages.submit(f"train random architecture {i + 1}/{random_k} ({random_mode}-matched) -> "
                                       f"{run_dir / f'random_{i}'}", run_random, cfg, run_dir / f"random_{i}", arch,
                                       resume=resume, show_progress=show_progress) for i, arch in enumerate(archs)]
    randoms = [f.result() for f in f_randoms]
    refs = [f.result() for f in f_refs]
    controls = [f.result() for f in f_controls]
    everything = [*refs, *controls, *cands, *randoms]
    if f_baseline is not None:
        everything.insert(0, f_baseline.result())
    if progress:
        progress(f"benchmark {len(everything)} models interleaved ({bench_frames} frames each)")
    benchmark_candidates(everything, frames=bench_frames, warmup=bench_warmup, device=cfg.train.device)
    if f_baseline is None:  # the arch2 reference, timed once, is the baseline row too
        arch2 = refs[list(references).index("arch2")]
        baseline = dataclasses.replace(arch2, name="baseline", kind="baseline", metrics=dict(arch2.metrics))
    else:
        baseline = everything[0]
    result = SweepResult(run_dir=run_dir, baseline=baseline, candidates=cands, randoms=randoms, references=refs,
                         controls=controls)
    summary = result.control_summary if controls or random_mode == "matched" else {}
    atomic_write_json(run_dir / "sweep.json", {
        "lambdas": lambdas,
        "target_latency_ms": budget,
        "baseline": baseline.to_dict(),
        "candidates": [c.to_dict() for c in cands],
        "random": [c.to_dict() for c in randoms],
        "references": [c.to_dict() for c in refs],
        "controls": [c.to_dict() for c in controls],
        "random_mode": random_mode,
        "random_seed": random_seed,
        "dominance": result.dominance,
        "control_summary": summary,
        "decided_on": decided_on(cfg),
        "bench": {"frames": bench_frames, "warmup": bench_warmup,
                  "protocol": "encode 1 frame + decode window (fps); incremental: one decoder step (inc_fps)"},
    })
    ops = [f"- {c.name}: depths {c.depths}; decoder ops {', '.join(c.arch.get('decoder_ops') or ['baseline'])}"
           + (f"; scale ops {', '.join(c.arch['scale_ops'])}" if c.arch.get("scale_ops") else "")
           for c in [*controls, *cands, *randoms]]
    text = "# ST-NAS lambda sweep\n\n" + sweep_table(baseline, cands, randoms, refs, controls) + (
        "\nFPS: all models benchmarked together, interleaved (encode 1 frame + decode the window); FPS inc: the "
        "incremental protocol in the same rounds (one decoder step per frame; `-`: no incremental decode); "
        f"mIoU: {decided_on(cfg)['miou']}.\n\n")
    if randoms:
        how = ("uniform depths and decoder ops, kept when the whole model's table latency is within 10% of the "
               "searched model's" if random_mode == "matched" else f"{random_mode} depths, uniform decoder ops")
        text += (f"Random architectures: {len(randoms)} drawn from the same space ({how}, seed {random_seed}), "
                 "trained exactly like the searched ones.\n\n" + "\n".join(dominance_lines(result.dominance))
                 + "\n\n")
    if summary:
        text += ("Controls (the per-frame references, the space's cheapest point, the latency-matched random "
                 "architectures); deployed FPS: incremental where a model streams so, else the window protocol:\n"
                 + "\n".join(control_lines(summary)) + "\n\n")
    if refs and not summary:
        text += ("Per-frame models of the library, same encoder and recipe, window 1:\n"
                 + "\n".join(reference_lines(cands, refs)) + "\n\n")
    atomic_write_text(run_dir / "sweep.md", text + "\n".join(ops) + "\n")
    points = [{"name": c.name, "label": c.name if c.kind == "baseline" else f"{c.name} ({c.depths})",
               "fps": c.metrics.get("fps"), "miou": c.score, "kind": c.kind} for c in [baseline, *cands]]
    points += [{"name": c.name, "fps": c.metrics.get("fps"), "miou": c.score, "kind": "random"} for c in randoms]
    points += [{"name": c.name, "fps": c.metrics.get("fps"), "miou": c.score, "kind": "reference"}
               for c in [*refs, *controls]]
    plot_miou_fps(points, run_dir / "pareto.png", title="ST-NAS lambda sweep: mIoU vs FPS")
    result.files = [run_dir / "sweep.json", run_dir / "sweep.md", run_dir / "pareto.png"]
    return result
