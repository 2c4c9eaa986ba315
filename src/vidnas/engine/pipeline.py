"""Whole ST-NAS experiments: the lambda sweep (paper Fig. 3) and the demo pipeline (`vidnas demo`).

Both are sequences of the same resumable stages, each in its own sub-directory with a ``done.json`` marker once
finished, so an interrupted experiment started again with ``resume=True`` skips what is done and continues the
stage it was in (searches and trainings resume exactly from their checkpoints):

* **baseline**: the config's model trained for ``train.epochs`` (``baseline/``).
* **candidate** (one per lambda): ``search_stnas`` (``lam_<lambda>/search/``), then the derived model trained from
  scratch for ``train.epochs`` like the baseline (``lam_<lambda>/train/``), as the paper trains its final model.
* **benchmark**: every trained model timed **interleaved in one run** under the ST-NAS FPS protocol
  (``vidnas.bench.protocol``: encode one frame + decode the full window, per pushed frame), plus parameter and FLOP
  counts. Never cached: ratios are only meaningful when measured side by side.

``run_sweep`` adds ``sweep.json``, ``sweep.md`` and ``pareto.png`` (mIoU vs FPS with the baseline); ``run_demo``
(one lambda) also evaluates both models on the validation split, clip-wise and streaming with temporal consistency,
and writes ``report.md``, ``demo.json``, the table, and copies of the search's ``arch.json`` and plots.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidnas.config import Config, save_config
from vidnas.utils import atomic_write_json, atomic_write_text

__all__ = [
    "Candidate",
    "SweepResult",
    "DemoResult",
    "lam_dirname",
    "run_baseline",
    "run_candidate",
    "benchmark_candidates",
    "run_sweep",
    "run_demo",
    "sweep_table",
    "demo_table",
]

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]  # called with a one-line stage description (the CLI prints it)


@dataclass
class Candidate:
    """One trained model of an experiment.

    Attributes:
        name: row name (``baseline``, ``lam=0.001``...).
        lam: lambda of its search (None for the baseline).
        arch: its architecture as a dict (``Arch.to_dict``).
        checkpoint: the checkpoint evaluated and benchmarked (best by val mIoU).
        best_miou: best validation mIoU during training (clip protocol).
        train_seconds: wall time of its final training.
        search_seconds: wall time of its search (0 for the baseline).
        search_dir: its search run directory (None for the baseline).
        metrics: more results filled by later stages (benchmark, evaluation).
    """

    name: str
    lam: float | None
    arch: dict[str, Any]
    checkpoint: Path
    best_miou: float
    train_seconds: float
    search_seconds: float = 0.0
    search_dir: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``done.json``, ``sweep.json``, ``demo.json``)."""
        return {
            "name": self.name,
            "lam": self.lam,
            "arch": self.arch,
            "checkpoint": str(self.checkpoint),
            "best_miou": self.best_miou,
            "train_seconds": self.train_seconds,
            "search_seconds": self.search_seconds,
            "search_dir": None if self.search_dir is None else str(self.search_dir),
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        """Inverse of ``to_dict``."""
        return cls(
            name=d["name"],
            lam=d.get("lam"),
            arch=d["arch"],
            checkpoint=Path(d["checkpoint"]),
            best_miou=float(d["best_miou"]),
            train_seconds=float(d["train_seconds"]),
            search_seconds=float(d.get("search_seconds", 0.0)),
            search_dir=None if d.get("search_dir") is None else Path(d["search_dir"]),
            metrics=dict(d.get("metrics") or {}),
        )

    @property
    def depths(self) -> str:
        """Encoder depths as ``"1,2,3,2"`` (``"cfg"`` when the architecture keeps the encoder's own)."""
        d = self.arch.get("depths")
        return "cfg" if d is None else ",".join(str(x) for x in d)

    @property
    def decoder(self) -> str:
        """Decoder summary: ``"3x3x3"`` (baseline convs) or ``"{temporal}T/{spatial}S/{identity}I"`` slot counts."""
        ops = self.arch.get("decoder_ops")
        if ops is None:
            return "FC 3x3x3" if self.arch.get("full_channels") else "3x3x3"
        n_t = sum(o.startswith("temporal") for o in ops)
        n_i = sum(o == "identity" for o in ops)
        return f"{n_t}T/{len(ops) - n_t - n_i}S/{n_i}I"


def lam_dirname(lam: float) -> str:
    """Sub-directory of one lambda: ``lam_0.001``, ``lam_0``."""
    return f"lam_{lam:g}"


def _done(path: Path) -> Candidate | None:
    marker = path / "done.json"
    if not marker.is_file():
        return None
    return Candidate.from_dict(json.loads(marker.read_text()))


def _train_stage(cfg: Config, run_dir: Path, arch: Any, *, resume: bool, show_progress: bool) -> tuple[Any, float]:
    from vidnas.engine.train import train

    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    again = resume and (run_dir / "checkpoints" / "last.pt").is_file()
    t0 = time.perf_counter()
    res = train(cfg, run_dir, arch=arch, resume=again, show_progress=show_progress)
    return res, time.perf_counter() - t0


def run_baseline(cfg: Config, run_dir: str | Path, *, resume: bool = True, show_progress: bool = True) -> Candidate:
    """Train the config's model (the reference every searched model is compared with); skipped if done."""
    from vidnas.models import arch_from_config

    run_dir = Path(run_dir)
    if resume and (done := _done(run_dir)) is not None:
        logger.info("baseline already trained in %s", run_dir)
        return done
    arch = arch_from_config(cfg)
    res, seconds = _train_stage(cfg, run_dir / "train", None, resume=resume, show_progress=show_progress)
    cand = Candidate(name="baseline", lam=None, arch=arch.to_dict(),
                     checkpoint=res.best_checkpoint or res.last_checkpoint, best_miou=res.best_miou,
                     train_seconds=seconds)
    atomic_write_json(run_dir / "done.json", cand.to_dict())
    return cand


def run_candidate(
    cfg: Config,
    run_dir: str | Path,
    lam: float,
    *,
    resume: bool = True,
    show_progress: bool = True,
    skip_encoder: bool = False,
    skip_decoder: bool = False,
    progress: Progress | None = None,
) -> Candidate:
    """Search at ``lam`` (``run_dir/search``), then train the derived model (``run_dir/train``); skipped if done."""
    from vidnas.search.stnas import load_search_summary, search_stnas

    run_dir = Path(run_dir)
    if resume and (done := _done(run_dir)) is not None:
        logger.info("lambda %g already finished in %s", lam, run_dir)
        return done
    search_dir = run_dir / "search"
    try:
        found = load_search_summary(search_dir) if resume else None
    except FileNotFoundError:
        found = None
    if found is None:
        if progress:
            progress(f"search (lambda={lam:g}) -> {search_dir}")
        search_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, search_dir / "config.yaml")
        again = resume and any((search_dir / "checkpoints").glob("*_search.pt"))
        found = search_stnas(cfg, search_dir, resume=again, show_progress=show_progress, lam=lam,
                             skip_encoder=skip_encoder, skip_decoder=skip_decoder)
    if progress:
        progress(f"train the derived model (lambda={lam:g}) -> {run_dir / 'train'}")
    res, seconds = _train_stage(cfg, run_dir / "train", found.arch, resume=resume, show_progress=show_progress)
    cand = Candidate(name=f"lam={lam:g}", lam=lam, arch=found.arch.to_dict(),
                     checkpoint=res.best_checkpoint or res.last_checkpoint, best_miou=res.best_miou,
                     train_seconds=seconds, search_seconds=found.search_seconds, search_dir=search_dir)
    atomic_write_json(run_dir / "done.json", cand.to_dict())
    return cand


def benchmark_candidates(
    candidates: Sequence[Candidate],
    *,
    frames: int,
    warmup: int,
    device: str = "cpu",
) -> list[Any]:
    """Time every candidate interleaved in one run (ST-NAS protocol) and count params / FLOPs.

    Returns the ``BenchRow``s (name = candidate name); each candidate's ``metrics`` gets ``fps``, ``latency_ms``,
    ``params`` and ``gflops``.
    """
    from vidnas.bench.protocol import protocol_rows
    from vidnas.engine.evaluate import load_model_from_checkpoint

    models: dict[str, Any] = {}
    size: tuple[int, int] | None = None
    for cand in candidates:
        model, ck_cfg, _ = load_model_from_checkpoint(cand.checkpoint, device=device)
        models[cand.name] = model
        size = (ck_cfg.data.height, ck_cfg.data.width)
    assert size is not None
    rows = protocol_rows(models, img_size=size, warmup=warmup, frames=frames, flops=True)
    for cand, row in zip(candidates, rows, strict=True):
        cand.metrics.update(fps=row.fps, latency_ms=row.latency_ms, params=row.params, gflops=row.gflops,
                            encoder_ms=row.extra.get("encoder_ms"), decoder_ms=row.extra.get("decoder_ms"))
    return rows


# ------------------------------------------------------------------------------------------------------ the sweep


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
    from vidnas.search.plots import plot_pareto

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


# ------------------------------------------------------------------------------------------------------ the demo


@dataclass
class DemoResult:
    """The demo pipeline's outcome: the baseline and the searched model, evaluated and benchmarked together."""

    run_dir: Path
    baseline: Candidate
    searched: Candidate
    total_seconds: float
    table: str
    files: list[Path] = field(default_factory=list)

    @property
    def search_share(self) -> float:
        """Search time over the searched model's total training time (search + final training) [ST-NAS: 9.7%]."""
        total = self.searched.search_seconds + self.searched.train_seconds
        return self.searched.search_seconds / total if total > 0 else float("nan")


def _evaluate(cand: Candidate, cfg: Config, show_progress: bool) -> None:
    from vidnas.data import ClipDataset, open_source
    from vidnas.engine.evaluate import evaluate_clips, evaluate_stream, load_model_from_checkpoint

    model, _, _ = load_model_from_checkpoint(cand.checkpoint, device=cfg.train.device)
    source = open_source(cfg.data)
    split = cfg.data.val_split
    clips = evaluate_clips(model, ClipDataset(source, split, cfg.data, train=False), source.num_classes,
                           source.ignore_index, device=cfg.train.device, batch_size=cfg.train.batch_size)
    stream = evaluate_stream(model, source, split, cfg.data, device=cfg.train.device, show_progress=show_progress)
    cand.metrics.update(clip_miou=clips["miou"], miou=stream["miou"], fwiou=stream["fwiou"],
                        vc2=stream.get("vc2"), vc8=stream.get("vc8"), flicker=stream.get("flicker"),
                        stream_frames=stream.get("frames"))


def demo_table(baseline: Candidate, searched: Candidate) -> str:
    """The demo's closing table (plain text, aligned), baseline first, with the searched/baseline ratios."""
    from vidnas.bench import BenchRow, format_table

    rows = []
    for c in (baseline, searched):
        m = c.metrics
        rows.append(BenchRow(
            name="baseline" if c.lam is None else "searched",
            params=m.get("params"), gflops=m.get("gflops"), latency_ms=m.get("latency_ms"),
            extra={"depths": c.depths, "decoder": c.decoder, "mIoU": m.get("miou"), "clip_mIoU": m.get("clip_miou"),
                   "VC8": m.get("vc8"), "flicker": m.get("flicker"), "search_s": round(c.search_seconds, 1),
                   "train_s": round(c.train_seconds, 1)},
        ))
    cols = ("name", "depths", "decoder", "params", "gflops", "fps", "mIoU", "clip_mIoU", "VC8", "flicker",
            "search_s", "train_s")
    text = format_table(rows, cols, ref="baseline", ratio_of="fps")
    share = searched.search_seconds / max(searched.search_seconds + searched.train_seconds, 1e-9)
    text += (f"\nsearch time: {searched.search_seconds:.1f} s = {share:.1%} of the searched model's total training "
             f"time (search + final training; paper: 9.7%)")
    return text


def run_demo(
    cfg: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    show_progress: bool = True,
    bench_frames: int = 100,
    bench_warmup: int = 10,
    progress: Progress | None = None,
) -> DemoResult:
    """The whole ST-NAS pipeline on ``cfg``: baseline training, encoder search, decoder search, final training,
    evaluation (clip + streaming, temporal consistency), interleaved benchmark, table and report.

    Args:
        cfg: resolved config (``configs/demo.yaml`` by default in the CLI).
        run_dir: where everything goes (``baseline/``, ``lam_<lambda>/search``, ``lam_<lambda>/train``, and at the
            top: ``report.md``, ``demo.json``, ``arch.json``, ``alphas.png``, ``betas.png``, ``decoder.png``,
            ``pareto.png``).
        resume: skip finished stages of a previous run in ``run_dir``.
        show_progress: tqdm bars.
        bench_frames: timed pushes per model.
        bench_warmup: untimed pushes per model.
        progress: called with a line per stage.
    """
    from vidnas.search.plots import plot_pareto

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    lam = cfg.stnas.lam
    if progress:
        progress(f"1/5 baseline training ({cfg.train.epochs} epochs) -> {run_dir / 'baseline'}")
    baseline = run_baseline(cfg, run_dir / "baseline", resume=resume, show_progress=show_progress)

    def step(msg: str) -> None:
        if progress:
            progress(("2/5 " if msg.startswith("search") else "3/5 ") + msg)

    searched = run_candidate(cfg, run_dir / lam_dirname(lam), lam, resume=resume, show_progress=show_progress,
                             progress=step)
    if progress:
        progress("4/5 evaluation on the validation split (clips + streaming, temporal consistency)")
    for cand in (baseline, searched):
        _evaluate(cand, cfg, show_progress)
    if progress:
        progress(f"5/5 benchmark baseline vs searched, interleaved ({bench_frames} frames each)")
    benchmark_candidates([baseline, searched], frames=bench_frames, warmup=bench_warmup, device=cfg.train.device)

    files: list[Path] = []
    assert searched.search_dir is not None
    for name in ("arch.json", "alphas.png", "betas.png", "decoder.png"):
        src = searched.search_dir / name
        if src.is_file():
            files.append(Path(shutil.copy2(src, run_dir / name)))
    points = [{"name": "baseline", "label": f"baseline ({baseline.depths})", "fps": baseline.metrics.get("fps"),
               "miou": baseline.metrics.get("miou")},
              {"name": "searched", "label": f"searched λ={lam:g} ({searched.depths})",
               "fps": searched.metrics.get("fps"), "miou": searched.metrics.get("miou")}]
    files.append(plot_pareto(points, run_dir / "pareto.png", title="vidnas demo: mIoU (streaming) vs FPS"))
    table = demo_table(baseline, searched)
    total = time.perf_counter() - t0
    result = DemoResult(run_dir=run_dir, baseline=baseline, searched=searched, total_seconds=total, table=table)
    atomic_write_json(run_dir / "demo.json", {
        "baseline": baseline.to_dict(), "searched": searched.to_dict(), "total_seconds": total,
        "search_share": result.search_share, "bench": {"frames": bench_frames, "warmup": bench_warmup},
    })
    atomic_write_text(run_dir / "report.md", _demo_report(result, cfg))
    files += [run_dir / "demo.json", run_dir / "report.md"]
    result.files = files
    return result


def _demo_report(res: DemoResult, cfg: Config) -> str:
    b, s = res.baseline, res.searched
    fps_b, fps_s = b.metrics.get("fps"), s.metrics.get("fps")
    search_dir = s.search_dir.relative_to(res.run_dir) if s.search_dir is not None else None
    lines = [
        "# vidnas demo: ST-NAS on the synthetic data", "",
        f"Data: {cfg.data.format}, {cfg.data.height}x{cfg.data.width}, window {cfg.data.window} "
        f"({cfg.data.temporal}), {cfg.data.synthetic_videos} videos x {cfg.data.synthetic_frames} frames, "
        f"corruption {cfg.data.synthetic_corruption}. Model: {cfg.model.encoder} depths "
        f"{b.depths}, SP-TCN decoder width {cfg.model.decoder_channels}, dilations "
        f"{list(cfg.model.decoder_dilations)}.",
        f"Schedule: baseline and final model {cfg.train.epochs} epochs each; encoder search {cfg.stnas.encoder_epochs}"
        f" epochs (lambda {cfg.stnas.lam:g}), decoder search {cfg.stnas.decoder_epochs} epochs "
        f"({cfg.stnas.warmup_epochs} warm-up, {cfg.stnas.mode}).", "",
        "```", res.table, "```", "",
        "mIoU, VC8 and flicker: streaming evaluation (every validation frame pushed in order, as `vidnas predict`"
        " does); clip_mIoU: the training protocol. FPS: one interleaved run, encode one frame + decode the window.",
        "",
    ]
    if fps_b and fps_s:
        lines.append(f"Speed-up: {fps_s / fps_b:.2f}x FPS; mIoU change "
                     f"{100 * ((s.metrics.get('miou') or 0) - (b.metrics.get('miou') or 0)):+.1f} points.")
    lines += [f"Total wall time: {res.total_seconds:.0f} s.", "",
              f"Searched architecture: `arch.json` (search run: `{search_dir}`, its own `report.md` lists the alphas "
              "and betas). Retrain it anywhere with `vidnas train --arch arch.json`.", ""]
    for png in ("pareto.png", "alphas.png", "betas.png", "decoder.png"):
        if (res.run_dir / png).exists():
            lines.append(f"![{png}]({png})")
    return "\n".join(lines) + "\n"
