"""`vidnas demo`: the whole ST-NAS pipeline on the embedded synthetic data, on the CPU, in minutes."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from vidnas.cli.common import ConfigOpt, SetOpt, fail, resolve_config, set_threads, setup_logging
from vidnas.config import Config

__all__ = ["demo_cmd", "demo_config", "DEFAULT_CONFIG", "EMBEDDED_DEMO"]

Opt = Optional  # noqa: UP007  (typer needs Optional on py3.10)

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
    """``config`` (default the ``demo`` preset, or ``EMBEDDED_DEMO`` if the preset file is not found) + ``--set``."""
    from vidnas.config import ConfigError, apply_overrides, config_from_dict, load_config

    if config is not None:
        return resolve_config(config, overrides)
    try:
        cfg = load_config(DEFAULT_CONFIG)
    except ConfigError:
        cfg = config_from_dict(EMBEDDED_DEMO)
    try:
        return apply_overrides(cfg, list(overrides or []))
    except ConfigError as e:
        raise fail(str(e)) from e


def demo_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[Opt[str], typer.Option("--out", "-o", help="Run directory (default runs/demo-<time>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip the stages a previous demo in --out finished.")]
    = False,
    bench_frames: Annotated[int, typer.Option("--bench-frames", help="Timed frames per model in the benchmark.")]
    = 100,
    threads: Annotated[int, typer.Option(
        "--threads", help="torch intra-op threads. 1 by default: the demo's models are so small that a second thread "
                          "costs more in synchronisation than it saves (10x slower on a busy 2-core CPU).")] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run ST-NAS end to end: baseline training, encoder search, decoder search, final training, evaluation
    (clip + streaming with temporal consistency) and an interleaved benchmark, then print baseline vs searched.

    Defaults to configs/demo.yaml (synthetic data, tiny Swin + SP-TCN): no download, no data files, a few minutes
    on a 2-core CPU.
    """
    from vidnas.config import save_config
    from vidnas.engine.pipeline import run_demo

    setup_logging()
    set_threads(threads)
    if resume and not out:
        raise fail("--resume needs --out RUN_DIR (the demo to continue)")
    cfg = demo_config(config, set_)
    run = Path(out) if out else Path(cfg.train.out_dir) / f"demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "config.yaml")
    t0 = time.perf_counter()
    try:
        res = run_demo(cfg, run, resume=resume, show_progress=not quiet, bench_frames=bench_frames,
                       progress=lambda msg: typer.echo(f"== {msg}", err=True))
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise fail(str(e)) from e
    typer.echo("")
    typer.echo(res.table)
    typer.echo("")
    typer.echo(f"run directory: {run}  (report.md, arch.json, plots)")
    typer.echo(f"total time: {time.perf_counter() - t0:.0f} s")
