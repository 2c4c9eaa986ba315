"""The demo pipeline (`vidnas demo`): the whole ST-NAS pipeline on small synthetic data, on the CPU, in minutes.

Baseline training, encoder search, decoder search, final training, evaluation (clip + streaming with temporal
consistency), interleaved benchmark, table and report; the stages are those of ``vidnas.experiments.candidates``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from vidnas.bench import BenchRow, format_table
from vidnas.config import Config, ConfigError, apply_overrides, config_from_dict, load_config, save_config
from vidnas.data import ClipDataset, open_source
from vidnas.engine.evaluate import evaluate_clips, evaluate_stream
from vidnas.experiments.candidates import (
    Candidate,
    Progress,
    benchmark_candidates,
    lam_dirname,
    run_baseline,
    run_candidate,
)
from vidnas.models import load_model
from vidnas.search.plots import plot_pareto
from vidnas.utils import atomic_write_json, atomic_write_text

__all__ = ["DEFAULT_CONFIG", "EMBEDDED_DEMO", "demo_config", "DemoResult", "demo_table", "run_demo"]

DEFAULT_CONFIG = "demo"  # configs/demo.yaml
# The same settings as configs/demo.yaml (a test keeps them equal), used when the preset file is not reachable, e.g.
# after a non-editable `pip install`: the demo must run anywhere with nothing but the package.
EMBEDDED_DEMO: dict = {
    "data": {"format": "synthetic", "height": 128, "width": 192, "window": 4, "synthetic_videos": 6,
             "synthetic_frames": 16, "synthetic_classes": 4, "synthetic_corruption": 0.3},
    "model": {"encoder": "swin_test", "encoder_depths": [2, 2, 4, 2], "decoder": "sptcn", "decoder_channels": 16,
              "decoder_dilations": [1, 2, 4, 8]},
    "train": {"epochs": 20, "batch_size": 4, "lr": 1.0e-3, "log_every": 5},
    "stnas": {"encoder_epochs": 2, "decoder_epochs": 2, "warmup_epochs": 1, "lam": 2.0e-4, "arch_lr": 0.01},
}


def demo_config(config: str | None, overrides: list[str] | None) -> Config:
    """``config`` (default the ``demo`` preset, or ``EMBEDDED_DEMO`` if the preset file is not found) + ``--set``.

    Raises:
        ConfigError: a bad preset or override (the message names it).
    """
    if config is not None:
        return load_config(config, list(overrides or []))
    try:
        cfg = load_config(DEFAULT_CONFIG)
    except ConfigError:
        cfg = config_from_dict(EMBEDDED_DEMO)
    return apply_overrides(cfg, list(overrides or []))


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
    model = load_model(cand.checkpoint, device=cfg.train.device).model
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
