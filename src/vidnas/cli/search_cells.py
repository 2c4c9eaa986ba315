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
from vidnas.config import Config

__all__ = ["cells_cmd"]

Opt = Optional  # noqa: UP007  (typer needs Optional on py3.10)


def _shortcuts(**values: object) -> list[str]:
    return [f"{k}={v}" for k, v in values.items() if v is not None]


def _size(text: str | None) -> str | None:
    """``HxW`` -> ``H,W`` (a config tuple); a bad value fails naming it."""
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise fail(f"--latency-size {text!r}: expected HxW, e.g. 360x480")
    return f"{int(parts[0])},{int(parts[1])}"


def cells_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    fmt: Annotated[Opt[str], typer.Option("--format", help="Data format (overrides data.format).")] = None,
    root: Annotated[Opt[str], typer.Option("--root", help="Data set root (overrides data.root).")] = None,
    static: Annotated[Opt[Path], typer.Option(
        "--static", help="Trained per-frame static network: arch2 on any encoder, or a per-frame arch2_space model "
                         "(e.g. ST-NAS's result trained by `vidnas train --arch`). Without it arch2 is trained first "
                         "on a small budget (--static-epochs).")] = None,
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
    proxy_check: Annotated[int, typer.Option(
        "--proxy-check", help="After the search, before the top-k training: train N genotypes (the top-k and others "
                              "spread over the reward range, N >= 3) again at the full size (cell only, "
                              "--final-cell-epochs), score them on meta-val and write the rank correlation of proxy "
                              "reward and full-size mIoU to proxy_check.json. 0 = off. The check alone on a "
                              "finished run: --resume --proxy-check N --top-k 0 (finished genotypes are kept).")] = 0,
    max_steps: Annotated[Opt[int], typer.Option("--max-steps", help="Cap on steps per epoch everywhere (quick "
                                                                   "runs).")] = None,
    ray_address: Annotated[Opt[str], typer.Option("--ray-address", help="Existing Ray cluster (with --executor "
                                                                        "ray).")] = None,
    random: Annotated[bool, typer.Option(
        "--random", help="Random baseline: sample every cell from a frozen uniform controller (no PPO update), "
                         "everything else as in the search (cells.sampler=random). Compare at equal -n with "
                         "benchmarks/cells_compare.py.")] = False,
    latency_weight: Annotated[Opt[float], typer.Option(
        "--latency-weight", help="w of the latency-aware reward accuracy * (latency / target) ** w "
                                 "(cells.latency_weight, <= 0; MnasNet: -0.07). 0 = the paper's accuracy-only "
                                 "reward.")] = None,
    latency_target: Annotated[Opt[float], typer.Option(
        "--latency-target", help="Target T in ms (cells.latency_target_ms); default: the static network's frame "
                                 "(encoder + static decoder), timed beside each candidate.")] = None,
    latency_size: Annotated[Opt[str], typer.Option(
        "--latency-size", help="Deployment size HxW at which each candidate is timed (encoder + cell vs the "
                               "static network, benchmark protocol, in the worker; cells.latency_size); default the "
                               "data size.")] = None,
    proxy_scale: Annotated[Opt[float], typer.Option(
        "--proxy-scale", help="Proxy budget: cache the static features at the data size times this (multiples of "
                              "32; cells.proxy_scale), e.g. 0.5; with --cell-epochs 2 about 300 CamVid candidates fit "
                              "in an hour on 2 cores. Top-k cells train at the full size.")] = None,
    cell_epochs: Annotated[Opt[int], typer.Option("--cell-epochs", help="Epochs per candidate (cells.cell_epochs; "
                                                                        "paper 20).")] = None,
    op_preset: Annotated[Opt[str], typer.Option(
        "--op-preset", help="paper: the 11 ops and 6 aggregations | cpu: without deform3x3, dense attention and "
                            "conv3d, slow on CPUs (cells.op_preset; cells.ops / cells.aggregations override).")] = None,
    inject_failure: Annotated[Opt[str], typer.Option("--inject-failure", hidden=True,
                                                     help="Testing aid: candidates using this op/aggregation "
                                                          "raise in the worker.")] = None,
    overwrite: OverwriteOpt = False,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    amp: Annotated[Opt[str], typer.Option("--amp", help="Mixed precision of the cell training (candidates, top-k "
                                                        "phases): none | bf16 | fp16 (train.amp). Use it on GPUs; "
                                                        "scoring and the cost measurement stay float32.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Search a dynamic cell with an LSTM controller trained by PPO, then train the top-k cells end to end.

    Every candidate is trained on cached static outputs, scored on a meta-val split that shares no frame with
    meta-train, and timed against the static network (encoder + cell vs encoder + static decoder, at --latency-size).
    Its reward is accuracy * (latency / target) ** w (--latency-weight; 0 = the paper's reward). Presets:
    configs/paper_cells.yaml (the paper), configs/camvid_cells_cpu.yaml (a 2-core CPU: proxy budget, cpu op preset,
    latency weight -0.07, a controller that learns within 300 candidates).

    Writes candidates.jsonl (reward, accuracy reward, latency, FLOPs, params per candidate), controller.pt, plots/
    (rewards, sampling proportions, accuracy vs latency, top cells), search_summary.json, top/cell{k}.json and
    top/cell{k}/model.pt, report.md into the run directory.
    """
    from vidnas.data import DataError
    from vidnas.models.cells import CellError
    from vidnas.search.cells import (
        CellSearchSpace,
        ExecutorError,
        FinalOptions,
        SearchOptions,
        adopt_static_model,
        prepare_static,
        run_cell_search,
        static_network_config,
        train_top_cells,
    )
    from vidnas.search.cells.options import check_cells_config

    setup_logging()
    set_threads(threads)
    if max_steps is not None and max_steps < 1:
        raise fail(f"--max-steps must be >= 1, got {max_steps}")
    if proxy_check < 0 or 0 < proxy_check < 3:
        raise fail(f"--proxy-check {proxy_check}: a rank correlation needs at least 3 genotypes (0 turns it off)")
    if proxy_check and final_cell_epochs < 1:
        raise fail(f"--final-cell-epochs {final_cell_epochs}: the proxy check trains each cell for it, >= 1")

    def as_started(c: Config) -> tuple[Config, str | None]:
        """A new run's step from its preset to the config it saves (and a note for the user): the static network's
        own model section wins, since the saved cell models must load with it; without --static, the encoder the
        static network is trained with."""
        try:
            if static is not None:
                return adopt_static_model(c, static)
            return static_network_config(c, encoder_chosen=encoder is not None)
        except ValueError as e:
            raise fail(str(e)) from e

    cfg = run_config("cells", out, resume=resume, config=config, adjust=lambda c: as_started(c)[0],
                     overrides=set_, extra=_shortcuts(**{
        "data.format": fmt, "data.root": root, "cells.candidates": candidates, "cells.workers": workers,
        "cells.executor": executor, "cells.cache": cache, "cells.top_k": top_k, "model.encoder": encoder,
        "cells.sampler": "random" if random else None, "cells.latency_weight": latency_weight,
        "cells.latency_target_ms": latency_target, "cells.latency_size": _size(latency_size),
        "cells.proxy_scale": proxy_scale, "cells.cell_epochs": cell_epochs, "cells.op_preset": op_preset,
    }) + device_overrides(device, amp))
    # a resumed run's saved config took that step when the run started
    cfg, note = static_network_config(cfg, encoder_chosen=encoder is not None) if resume else as_started(cfg)
    if note:
        typer.echo(note)
    check_run_inputs(cfg)
    if proxy_check > cfg.cells.candidates:
        raise fail(f"--proxy-check {proxy_check}: more genotypes than the search's {cfg.cells.candidates} candidates")
    try:  # every cells.* value of the loop, named, before the static network is trained or any feature cached
        check_cells_config(cfg.cells)
        CellSearchSpace.from_config(cfg.cells)
    except ValueError as e:
        raise fail(str(e)) from e
    run = make_run_dir(cfg, "cells", out, resume=resume, overwrite=overwrite, inputs={"--static": static})
    show = not quiet
    try:
        static = prepare_static(cfg, run, static, resume=resume, epochs=static_epochs, max_steps_per_epoch=max_steps,
                                show_progress=show, say=typer.echo)
        options = SearchOptions(batch_size=batch, max_steps_per_epoch=max_steps, inject_failure=inject_failure,
                                ray_address=ray_address, worker_threads=threads, show_progress=show)
        result = run_cell_search(cfg, run, static, resume=resume, options=options)
    except (FileExistsError, ValueError, ExecutorError, CellError, DataError, OSError) as e:
        raise fail(str(e)) from e
    ok = [r for r in result.records if not r["failed"]]
    n_failed = len(result.records) - len(ok)
    typer.echo(f"search: {len(result.records)} candidates ({result.evaluated} evaluated now, {n_failed} failed, "
               f"{sum(bool(r.get('early_stopped')) for r in ok)} early-stopped); log {run / 'candidates.jsonl'}")
    from vidnas.search.cells import select_top

    for rank, rec in enumerate(select_top(result.records, max(cfg.cells.top_k, 3))):
        cost = rec.get("cost") or {}
        timing = (f", {cost['latency_ms']:.1f} ms/frame ({cost['fps_ratio']:.2f}x the static network's FPS)"
                  if cost.get("latency_ms") else "")
        typer.echo(f"  top{rank}: candidate {rec['cid']}, reward {rec['reward']:.4f}{timing}, tokens {rec['tokens']}")
    sections = []
    if proxy_check:
        from vidnas.search.cells.proxy_check import format_proxy_check, run_proxy_check

        try:
            check = run_proxy_check(cfg, result, proxy_check, cell_epochs=final_cell_epochs,
                                    batch_size=final_batch_size, max_steps_per_epoch=max_steps, show_progress=show)
        except (ValueError, DataError, OSError) as e:
            raise fail(str(e)) from e
        corr = check["correlations"]["proxy_reward_vs_full_miou"]
        c = {k: "n/a" if corr[k] is None else f"{corr[k]:.3f}" for k in ("spearman", "kendall_tau_b")}
        typer.echo(f"proxy check: {check['n']} genotypes at {'x'.join(map(str, check['full_size']))} on "
                   f"{check['decided_on']}, proxy reward vs full-size mIoU: Spearman {c['spearman']}, Kendall tau-b "
                   f"{c['kendall_tau_b']}; {run / 'proxy_check.json'}")
        sections.append(format_proxy_check(check))
    if cfg.cells.top_k > 0 and result.top:
        final = FinalOptions(cell_epochs=final_cell_epochs, epochs=final_epochs, batch_size=final_batch_size,
                             max_steps_per_epoch=max_steps, show_progress=show)
        try:
            summaries = train_top_cells(cfg, result, options=final, report_sections=sections)
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
