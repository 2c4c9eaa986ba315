"""`vidnas search cells`: the dynamic-cell search [CELLS], then end-to-end training of the top-k cells."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vidnas.cli.common import (
    ConfigOpt,
    DeviceOpt,
    OverwriteOpt,
    SetOpt,
    ThreadsOpt,
    check_run_inputs,
    device_overrides,
    fail,
    make_run_dir,
    run_config,
    set_threads,
    setup_logging,
)

__all__ = ["cells_cmd"]

Opt = Optional  # noqa: UP007  (typer needs Optional on py3.10)


def _shortcuts(**values: object) -> list[str]:
    return [f"{k}={v}" for k, v in values.items() if v is not None]


def cells_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    fmt: Annotated[Opt[str], typer.Option("--format", help="Data format (overrides data.format).")] = None,
    root: Annotated[Opt[str], typer.Option("--root", help="Data set root (overrides data.root).")] = None,
    static: Annotated[Opt[Path], typer.Option(
        "--static", help="Trained arch2 checkpoint (static network). Without it one is trained first on a small "
                         "budget (--static-epochs).")] = None,
    candidates: Annotated[Opt[int], typer.Option("--candidates", "-n", help="Cells to sample and evaluate "
                                                                           "(cells.candidates).")] = None,
    workers: Annotated[Opt[int], typer.Option("--workers", help="Parallel evaluation workers (cells.workers); "
                                                               "0 = in this process.")] = None,
    executor: Annotated[Opt[str], typer.Option(
        "--executor", help="local (default) | ray (needs the optional extra: pip install vidnas\\[ray]).")] = None,
    cache: Annotated[Opt[str], typer.Option("--cache", help="Where the static outputs are cached: memory | disk.")]
    = None,
    out: Annotated[Opt[str], typer.Option("--out", "-o", help="Run directory.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the --out search from its log and controller "
                                                          "checkpoint.")] = False,
    top_k: Annotated[Opt[int], typer.Option("--top-k", help="Best cells trained end to end after the search "
                                                           "(cells.top_k); 0 skips it.")] = None,
    encoder: Annotated[Opt[str], typer.Option("--encoder", help="Static network encoder when one is trained here "
                                                               "(default mobilenetv2 unless model.encoder is a CNN).")]
    = None,
    static_epochs: Annotated[int, typer.Option("--static-epochs", help="Budget of the static network trained "
                                                                      "when --static is not given.")] = 5,
    batch: Annotated[Opt[int], typer.Option("--batch", help="Candidates per PPO update (default: one per worker).")]
    = None,
    final_cell_epochs: Annotated[int, typer.Option(help="Top-k: cell-only epochs on cached outputs.")] = 10,
    final_epochs: Annotated[int, typer.Option(help="Top-k: end-to-end fine-tuning epochs.")] = 100,
    final_batch_size: Annotated[int, typer.Option(help="Top-k: sequences per step.")] = 16,
    max_steps: Annotated[Opt[int], typer.Option("--max-steps", help="Cap on steps per epoch everywhere (quick "
                                                                   "runs).")] = None,
    ray_address: Annotated[Opt[str], typer.Option("--ray-address", help="Existing Ray cluster (with --executor "
                                                                        "ray).")] = None,
    inject_failure: Annotated[Opt[str], typer.Option("--inject-failure", hidden=True,
                                                     help="Testing aid: candidates using this op/aggregation "
                                                          "raise in the worker.")] = None,
    overwrite: OverwriteOpt = False,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Search a dynamic cell with an LSTM controller trained by PPO, then train the top-k cells end to end.

    Writes candidates.jsonl, controller.pt, plots/ (rewards, sampling proportions, top cells), top/cell{k}.json and
    top/cell{k}/model.pt, report.md into the run directory.
    """
    from vidnas.data import DataError
    from vidnas.models.cells import CellError
    from vidnas.search.cells import (
        ExecutorError,
        FinalOptions,
        SearchOptions,
        adopt_static_model,
        prepare_static,
        run_cell_search,
        static_network_config,
        train_top_cells,
    )

    setup_logging()
    set_threads(threads)
    cfg = run_config("cells", out, resume=resume, config=config, overrides=set_, extra=_shortcuts(**{
        "data.format": fmt, "data.root": root, "cells.candidates": candidates, "cells.workers": workers,
        "cells.executor": executor, "cells.cache": cache, "cells.top_k": top_k, "model.encoder": encoder,
    }) + device_overrides(device))
    if static is not None and not resume:
        try:  # the static network's own model config wins: the saved cell models must load with it
            cfg, note = adopt_static_model(cfg, static)
        except ValueError as e:
            raise fail(str(e)) from e
    else:
        cfg, note = static_network_config(cfg, encoder_chosen=encoder is not None)
    if note:
        typer.echo(note)
    check_run_inputs(cfg)
    run = make_run_dir(cfg, "cells", out, resume=resume, overwrite=overwrite)
    show = not quiet
    try:
        static = prepare_static(cfg, run, static, resume=resume, epochs=static_epochs, max_steps_per_epoch=max_steps,
                                show_progress=show, say=typer.echo)
        options = SearchOptions(batch_size=batch, max_steps_per_epoch=max_steps, inject_failure=inject_failure,
                                ray_address=ray_address, show_progress=show)
        result = run_cell_search(cfg, run, static, resume=resume, options=options)
    except (FileExistsError, ValueError, ExecutorError, CellError, DataError, OSError) as e:
        raise fail(str(e)) from e
    ok = [r for r in result.records if not r["failed"]]
    n_failed = len(result.records) - len(ok)
    typer.echo(f"search: {len(result.records)} candidates ({result.evaluated} evaluated now, {n_failed} failed, "
               f"{sum(bool(r.get('early_stopped')) for r in ok)} early-stopped); log {run / 'candidates.jsonl'}")
    from vidnas.search.cells import select_top

    for rank, rec in enumerate(select_top(result.records, max(cfg.cells.top_k, 3))):
        typer.echo(f"  top{rank}: candidate {rec['cid']}, reward {rec['reward']:.4f}, tokens {rec['tokens']}")
    if cfg.cells.top_k > 0 and result.top:
        final = FinalOptions(cell_epochs=final_cell_epochs, epochs=final_epochs, batch_size=final_batch_size,
                             max_steps_per_epoch=max_steps, show_progress=show)
        try:
            summaries = train_top_cells(cfg, result, options=final)
        except (ValueError, DataError, OSError) as e:
            raise fail(str(e)) from e
        for s in summaries:
            v = s["val"]
            typer.echo(f"  {s['name']}: val mIoU {v.get('miou', float('nan')):.4f}, reward "
                       f"{v.get('reward', float('nan')):.4f}; {s['cell_json']}")
        typer.echo(f"report: {run / 'report.md'}")
    elif cfg.cells.top_k == 0:
        typer.echo("--top-k 0: no end-to-end training (resume with --top-k K to train the best K cells)")
    else:
        typer.echo("no successful candidate: nothing to train end to end")
    typer.echo(f"run directory: {run}")
