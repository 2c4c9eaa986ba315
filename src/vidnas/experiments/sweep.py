"""The lambda sweep [ST-NAS Fig. 3]: a baseline and one search + final training per lambda, benchmarked together.

``vidnas search stnas --lambdas ...`` runs it; the stages are those of ``vidnas.experiments.candidates``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidnas.config import Config, save_config
from vidnas.experiments.candidates import (
    Candidate,
    Progress,
    benchmark_candidates,
    lam_dirname,
    run_baseline,
    run_candidate,
)
from vidnas.search.plots import plot_pareto
from vidnas.utils import atomic_write_json, atomic_write_text

__all__ = ["SweepResult", "sweep_table", "run_sweep"]


@dataclass
class SweepResult:
    """A lambda sweep: the baseline and one candidate per lambda, benchmarked together."""

    run_dir: Path
    baseline: Candidate
    candidates: list[Candidate]
    files: list[Path] = field(default_factory=list)


def sweep_table(baseline: Candidate, candidates: Sequence[Candidate]) -> str:
    """Markdown table of a sweep: lambda, depths, decoder, params, FPS, mIoU, search and training time."""
    lines = ["| model | lambda | depths | decoder | params (M) | GFLOPs | FPS | mIoU | search s | train s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in [baseline, *candidates]:
        m = c.metrics
        lines.append(
            f"| {c.name} | {'-' if c.lam is None else f'{c.lam:g}'} | {c.depths} | {c.decoder} | "
            f"{_num(m.get('params'), 1e-6, '.3f')} | {_num(m.get('gflops'), 1.0, '.3f')} | "
            f"{_num(m.get('fps'), 1.0, '.1f')} | {c.best_miou:.4f} | {c.search_seconds:.1f} | {c.train_seconds:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _num(v: Any, scale: float, spec: str) -> str:
    return "-" if v is None else format(float(v) * scale, spec)


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
) -> SweepResult:
    """Search once per lambda, train each derived model and the baseline, benchmark all together, plot the Pareto
    front of mIoU vs FPS [ST-NAS Fig. 3].

    Args:
        cfg: resolved config.
        run_dir: the sweep's directory (``baseline/``, ``lam_<lambda>/``, ``sweep.json``, ``sweep.md``,
            ``pareto.png``).
        lambdas: the lambdas of Eq. 2 to search with.
        resume: skip finished stages and continue interrupted ones (default on: a sweep is long).
        show_progress: tqdm bars.
        skip_encoder: search the decoder only.
        skip_decoder: search the encoder depths only.
        bench_frames: timed pushes per model (the paper: 1000).
        bench_warmup: untimed pushes per model.
        progress: called with a line per stage.
    """
    run_dir = Path(run_dir)
    lambdas = [float(v) for v in lambdas]
    if not lambdas:
        raise ValueError("the sweep needs at least one lambda")
    if len(set(lambdas)) != len(lambdas):
        raise ValueError(f"duplicate lambdas in {lambdas}")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    if progress:
        progress(f"baseline training -> {run_dir / 'baseline'}")
    baseline = run_baseline(cfg, run_dir / "baseline", resume=resume, show_progress=show_progress)
    cands = []
    for lam in lambdas:
        cands.append(run_candidate(cfg, run_dir / lam_dirname(lam), lam, resume=resume, show_progress=show_progress,
                                   skip_encoder=skip_encoder, skip_decoder=skip_decoder, progress=progress))
    if progress:
        progress(f"benchmark {1 + len(cands)} models interleaved ({bench_frames} frames each)")
    benchmark_candidates([baseline, *cands], frames=bench_frames, warmup=bench_warmup, device=cfg.train.device)
    result = SweepResult(run_dir=run_dir, baseline=baseline, candidates=cands)
    atomic_write_json(run_dir / "sweep.json", {
        "lambdas": lambdas,
        "baseline": baseline.to_dict(),
        "candidates": [c.to_dict() for c in cands],
        "bench": {"frames": bench_frames, "warmup": bench_warmup, "protocol": "encode 1 frame + decode window"},
    })
    ops = [f"- {c.name}: depths {c.depths}; decoder ops {', '.join(c.arch.get('decoder_ops') or ['baseline'])}"
           for c in cands]
    atomic_write_text(run_dir / "sweep.md", "# ST-NAS lambda sweep\n\n" + sweep_table(baseline, cands)
                      + "\nFPS: all models benchmarked together, interleaved (encode 1 frame + decode the window); "
                      "mIoU: best validation mIoU of each training.\n\n" + "\n".join(ops) + "\n")
    points = [{"name": c.name, "label": c.name if c.lam is None else f"λ={c.lam:g} ({c.depths})",
               "fps": c.metrics.get("fps"), "miou": c.best_miou} for c in [baseline, *cands]]
    plot_pareto(points, run_dir / "pareto.png", title="ST-NAS lambda sweep: mIoU vs FPS")
    result.files = [run_dir / "sweep.json", run_dir / "sweep.md", run_dir / "pareto.png"]
    return result
