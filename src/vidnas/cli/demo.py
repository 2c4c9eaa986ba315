"""`vidnas demo`: the whole ST-NAS pipeline on the embedded synthetic data, on the CPU, in minutes."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from vidnas.cli.common import (
    ConfigOpt,
    DeviceOpt,
    OverwriteOpt,
    SetOpt,
    device_overrides,
    fail,
    output_dir,
    set_threads,
    setup_logging,
)

__all__ = ["demo_cmd"]

Opt = Optional  # noqa: UP007  (typer needs Optional on py3.10)

def demo_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[Opt[str], typer.Option("--out", "-o", help="Run directory (default runs/demo-<time>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip the stages a previous demo in --out finished.")]
    = False,
    bench_frames: Annotated[int, typer.Option("--bench-frames", help="Timed frames per model in the benchmark.")]
    = 100,
    random_k: Annotated[int, typer.Option("--random", help="Random architectures of the searched space, trained "
                                                           "and benchmarked beside the searched one.")] = 3,
    decoder_search: Annotated[Opt[bool], typer.Option(
        "--decoder-search/--no-decoder-search", help="Also search the decoder ops. Default: on over the arch2 space "
        "(model.decoder=arch2_space), off for the SP-TCN, whose searched decoders lose 7-12 mIoU points against "
        "the baseline's 3x3x3 convs on the demo data.")] = None,
    references: Annotated[Opt[str], typer.Option(
        "--references", help="The library's per-frame models trained with the same recipe (window 1) and shown "
                             "beside the others: head, arch2, both or none. Default: arch2 over the arch2 space "
                             "(with the space's cheapest point and latency-matched random models as controls), "
                             "both otherwise.")] = None,
    threads: Annotated[int, typer.Option(
        "--threads", help="torch intra-op threads. 1 by default: the demo's models are so small that a second thread "
                          "costs more in synchronisation than it saves (10x slower on a busy 2-core CPU).")] = 1,
    jobs: Annotated[int, typer.Option(
        "--jobs", "-j", help="Trainings at once, each in its own process with --threads threads (0: the cores this "
                             "process may use over --threads, at most 4). The scores are the same as with 1; the "
                             "benchmark runs afterwards, alone.")] = 0,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run ST-NAS end to end: baseline training, encoder search, decoder search, final training, random
    architectures of the same space, the library's per-frame models (head, arch2), evaluation (clip + streaming with
    temporal consistency) and one interleaved benchmark, then print them all in one table.

    Defaults to configs/demo.yaml (synthetic data, tiny Swin + SP-TCN): no download, no data files, a few minutes
    on a 2-core CPU.
    """
    from vidnas.config import ConfigError, save_config
    from vidnas.experiments.candidates import parse_references
    from vidnas.experiments.demo import demo_config, run_demo
    from vidnas.experiments.stages import default_jobs
    from vidnas.rundir import resume_config

    setup_logging()
    set_threads(threads)
    if resume and not out:
        raise fail("--resume needs --out RUN_DIR (the demo to continue)")
    if random_k < 0:
        raise fail(f"--random must be >= 0, got {random_k}")
    if jobs < 0:
        raise fail(f"--jobs must be >= 0 (0: automatic), got {jobs}")
    try:
        refs = None if references is None else parse_references(references)
    except ValueError as e:
        raise fail(str(e)) from e
    try:
        cfg = demo_config(config, [*device_overrides(device), *(set_ or [])])
    except ConfigError as e:
        raise fail(str(e)) from e
    run = Path(out) if out else Path(cfg.train.out_dir) / f"demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    output_dir(run, "demo", resume=resume, overwrite=overwrite)
    if resume and (run / "config.yaml").is_file():
        try:  # a resumed demo continues with the settings it started with
            cfg = resume_config(run, "demo", config=config, overrides=[*device_overrides(device), *(set_ or [])])
        except (ConfigError, ValueError) as e:
            raise fail(str(e)) from e
    save_config(cfg, run / "config.yaml")
    t0 = time.perf_counter()
    try:
        res = run_demo(cfg, run, resume=resume, show_progress=not quiet, bench_frames=bench_frames,
                       progress=lambda msg: typer.echo(f"== {msg}", err=True), random_k=random_k,
                       decoder_search=decoder_search, references=refs, jobs=jobs or default_jobs(threads))
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise fail(str(e)) from e
    typer.echo("")
    typer.echo(res.table)
    typer.echo("")
    typer.echo(f"run directory: {run}  (report.md, arch.json, plots)")
    typer.echo(f"total time: {time.perf_counter() - t0:.0f} s")
