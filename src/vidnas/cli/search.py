"""`vidnas search stnas`: the ST-NAS search (encoder depths, decoder ops), or a lambda sweep with ``--lambdas``.

The sub-app ``app`` is registered as ``vidnas search`` in ``cli/main.py``; the dynamic-cell search (``cells``) is
added to the same sub-app there.
"""

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

__all__ = ["app", "stnas_cmd", "parse_lambdas"]

Opt = Optional  # noqa: UP007  (typer needs Optional on py3.10)

app = typer.Typer(help="Architecture search: ST-NAS (`stnas`) and dynamic cells (`cells`).", no_args_is_help=True)


def parse_lambdas(text: str) -> list[float]:
    """``"0,1e-3,0.01"`` -> ``[0.0, 0.001, 0.01]``; raises ValueError naming the bad entry."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise ValueError(f"--lambdas: {part!r} is not a number (give e.g. 0,1e-3,1e-2)") from None
    if not out:
        raise ValueError("--lambdas: no values given")
    return out


def _shortcuts(**values: object) -> list[str]:
    return [f"{k}={v}" for k, v in values.items() if v is not None]


@app.command("stnas")
def stnas_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    fmt: Annotated[Opt[str], typer.Option("--format", help="Data format (overrides data.format).")] = None,
    root: Annotated[Opt[str], typer.Option("--root", help="Data set root (overrides data.root).")] = None,
    out: Annotated[Opt[str], typer.Option("--out", "-o", help="Run directory (default runs/stnas-<time>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the --out search (or sweep) from its "
                                                          "checkpoints.")] = False,
    lam: Annotated[Opt[float], typer.Option("--lambda", help="Lambda of Eq. 2 (overrides stnas.lam).")] = None,
    lambdas: Annotated[Opt[str], typer.Option(
        "--lambdas", help="Sweep: comma-separated lambdas, e.g. 0,1e-3,1e-2. Searches once per lambda, trains each "
                          "derived model and the baseline for train.epochs, benchmarks all interleaved and draws "
                          "the mIoU-vs-FPS Pareto plot. Resumable with --resume.")] = None,
    skip_encoder: Annotated[bool, typer.Option("--skip-encoder", help="Keep the config's encoder depths; search "
                                                                      "the decoder only.")] = False,
    skip_decoder: Annotated[bool, typer.Option("--skip-decoder", help="Keep the config's decoder; search the "
                                                                      "encoder depths only.")] = False,
    latency_table: Annotated[Opt[Path], typer.Option(
        "--latency-table", help="Latency table from `vidnas latency` (overrides stnas.latency_table); default: "
                                "measure the encoder's blocks now.")] = None,
    bench_frames: Annotated[int, typer.Option("--bench-frames", help="Sweep: timed frames per model.")] = 100,
    no_init: Annotated[bool, typer.Option("--no-init", help="Do not write derived_init.pt.")] = False,
    overwrite: OverwriteOpt = False,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    amp: Annotated[Opt[str], typer.Option("--amp", help="Mixed precision of the supernet phases: none | bf16 | "
                                                        "fp16 (train.amp; alphas and betas stay float32).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """ST-NAS: search the encoder depths (Eq. 1, 2, shrink rule) and the decoder ops (TCNNAS), write arch.json.

    Train the result with `vidnas train --arch RUN/arch.json` (add `--init RUN/derived_init.pt` to inherit the
    supernets' weights). Runs under torchrun too (every rank derives the same architecture).
    """
    from vidnas.engine.distributed import cleanup_distributed, is_main

    setup_logging()
    set_threads(threads)
    if skip_encoder and skip_decoder:
        raise fail("--skip-encoder and --skip-decoder together leave nothing to search")
    if lam is not None and lambdas is not None:
        raise fail("give either --lambda or --lambdas")
    if latency_table is not None and not latency_table.is_file():
        raise fail(f"--latency-table {latency_table}: file not found (build one with `vidnas latency`)")
    values = None
    if lambdas is not None:
        try:
            values = parse_lambdas(lambdas)
        except ValueError as e:
            raise fail(str(e)) from e
    kind = "sweep" if lambdas else "stnas"
    cfg = run_config(kind, out, resume=resume, config=config, overrides=set_, extra=_shortcuts(**{
        "data.format": fmt, "data.root": root, "stnas.lam": lam, "stnas.latency_table": latency_table})
        + device_overrides(device, amp))
    check_run_inputs(cfg)
    run = make_run_dir(cfg, kind, out, resume=resume, overwrite=overwrite)
    if values is not None:
        _sweep(cfg, run, values, resume=resume, quiet=quiet, skip_encoder=skip_encoder, skip_decoder=skip_decoder,
               bench_frames=bench_frames)
        return
    from vidnas.search.stnas import search_stnas

    try:
        res = search_stnas(cfg, run, resume=resume, show_progress=not quiet, skip_encoder=skip_encoder,
                           skip_decoder=skip_decoder, save_init=not no_init)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise fail(str(e)) from e
    finally:
        cleanup_distributed()
    if not is_main():
        return
    typer.echo(f"run directory: {run}")
    if res.alphas is not None:
        saving = res.latency_saving
        typer.echo(f"encoder depths: {_depths(res.full_depths)} -> {_depths(res.depths)}  "
                   f"(block latency {res.full_latency_ms:.2f} -> {res.derived_latency_ms:.2f} ms"
                   + (f", {saving:.0%} saved" if saving is not None else "") + f"; lambda {res.lam:g})")
    if res.decoder_ops is not None:
        n_t = sum(o.startswith("temporal") for o in res.decoder_ops)
        n_i = sum(o == "identity" for o in res.decoder_ops)
        typer.echo(f"decoder ops ({n_t} temporal, {len(res.decoder_ops) - n_t - n_i} spatial, {n_i} identity):")
        per = 4
        for i in range(0, len(res.decoder_ops), per):
            typer.echo(f"  layer {i // per + 1}: " + ", ".join(res.decoder_ops[i:i + per]))
    typer.echo(f"search time: encoder {res.encoder_seconds:.1f} s, decoder {res.decoder_seconds:.1f} s")
    typer.echo("written: " + ", ".join(p.name for p in res.files))
    typer.echo(f"next: vidnas train --arch {res.arch_path}" + (
        f" [--init {res.init_checkpoint}]" if res.init_checkpoint else ""))


def _depths(d: object) -> str:
    return "default" if d is None else ",".join(str(x) for x in d)  # type: ignore[union-attr]


def _sweep(cfg, run: Path, values: list[float], *, resume: bool, quiet: bool, skip_encoder: bool, skip_decoder: bool,
           bench_frames: int) -> None:
    from vidnas.engine.distributed import cleanup_distributed
    from vidnas.experiments.sweep import run_sweep, sweep_table

    try:
        res = run_sweep(cfg, run, values, resume=resume, show_progress=not quiet, skip_encoder=skip_encoder,
                        skip_decoder=skip_decoder, bench_frames=bench_frames,
                        progress=lambda msg: typer.echo(f"== {msg}", err=True))
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise fail(str(e)) from e
    finally:
        cleanup_distributed()
    typer.echo(f"run directory: {run}")
    typer.echo(sweep_table(res.baseline, res.candidates))
    typer.echo("written: " + ", ".join(p.name for p in res.files))
