"""`vidnas search stnas`: the ST-NAS search (encoder depths, decoder ops), or a lambda sweep with ``--lambdas`` and
random architectures of the same space with ``--random K``.

The sub-app ``app`` is registered as ``vidnas search`` in ``cli/main.py``; the dynamic-cell search (``cells``) is
added to the same sub-app there.
"""

from __future__ import annotations

import os
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
from vidnas.cli.train import MODEL_SHORTCUTS

__all__ = ["app", "stnas_cmd", "parse_lambdas"]

Opt = Optional  # noqa: UP007  (typer needs Optional on py3.10)

SEARCH_MODELS: tuple[str, ...] = ("sptcn", "mstcn", "arch2_space")  # decoders with op slots (``--model``)

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
    target_latency: Annotated[Opt[float], typer.Option(
        "--target-latency", help="Budget mode (truncated depth rule): the most accurate depths whose table latency "
                                 "of encoder + decoder (ms per frame) fits MS; an error says when none fits. "
                                 "Overrides stnas.target_latency_ms.")] = None,
    target_fps: Annotated[Opt[float], typer.Option(
        "--target-fps", help="Budget mode as frames per second: --target-latency 1000/FPS.")] = None,
    decoder_latency: Annotated[Opt[bool], typer.Option(
        "--decoder-latency/--no-decoder-latency", help="Add lambda x the expected table latency of the decoder "
                                                       "ops to the decoder search's loss, so lambda prices decoder "
                                                       "milliseconds too (overrides stnas.decoder_latency; the "
                                                       "paper: off).")] = None,
    random_k: Annotated[Opt[int], typer.Option(
        "--random", help="Also train K random architectures of the same space (depths per stage, decoder ops) "
                         "exactly like the searched model(s) and benchmark all interleaved (a sweep; with no "
                         "--lambdas the config's lambda or --target-latency). Default 0, or 8 with --random-mode "
                         "matched.")] = None,
    random_mode: Annotated[str, typer.Option(
        "--random-mode", help="Random architectures: uniform (depths per stage and decoder ops), latency (depths "
                              "matched to the searched model's encoder block latency within 10%, by the table) or "
                              "matched (uniform draws of the whole space kept when the whole model's table "
                              "latency is within 10% of the searched model's: the latency-matched controls).")
    ] = "uniform",
    random_seed: Annotated[int, typer.Option("--random-seed", help="Seed of the random architectures.")] = 0,
    references: Annotated[str, typer.Option(
        "--references", help="Sweep: the library's per-frame models trained with the same recipe (window 1) and "
                             "tabled, plotted and benchmarked beside the others: head, arch2, both (default) or "
                             "none.")] = "head,arch2",
    model: Annotated[Opt[str], typer.Option(
        "--model", help="Decoder shortcut: sptcn (the paper's TCN decoder) or mstcn (multi-scale: temporal trunk at "
                        "stride 32 fused with paths at strides 8 and 4; the search decides per scale whether "
                        "temporal context pays) or arch2_space (arch2's decoder with candidate ops per slot, "
                        "temporal ones at strides 32 and 16: arch2 is a point of it). --set still wins.")] = None,
    bench_frames: Annotated[int, typer.Option("--bench-frames", help="Sweep: timed frames per model.")] = 100,
    jobs: Annotated[int, typer.Option(
        "--jobs", "-j", help="Sweep: stages at once (searches, trainings), each in its own process with --threads "
                             "threads; 0: the cores this process may use over --threads, at most 4. The scores are "
                             "the same as with 1; the benchmark runs afterwards, alone.")] = 1,
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
    from vidnas.experiments.candidates import parse_references

    setup_logging()
    set_threads(threads)
    if skip_encoder and skip_decoder:
        raise fail("--skip-encoder and --skip-decoder together leave nothing to search")
    if lam is not None and lambdas is not None:
        raise fail("give either --lambda or --lambdas")
    if latency_table is not None and not latency_table.is_file():
        raise fail(f"--latency-table {latency_table}: file not found (build one with `vidnas latency`)")
    if target_latency is not None and target_fps is not None:
        raise fail("give either --target-latency or --target-fps")
    if target_fps is not None:
        if not target_fps > 0:
            raise fail(f"--target-fps must be > 0, got {target_fps}")
        target_latency = 1000.0 / target_fps
    if target_latency is not None and not target_latency > 0:
        raise fail(f"--target-latency must be > 0 ms, got {target_latency}")
    if target_latency is not None and lambdas is not None:
        raise fail("give either --target-latency (budget mode) or --lambdas (a lambda sweep)")
    if random_mode not in ("uniform", "latency", "matched"):
        raise fail(f"--random-mode {random_mode!r}: use uniform, latency or matched")
    if random_k is None:
        from vidnas.experiments.sweep import MATCHED_K

        random_k = MATCHED_K if random_mode == "matched" else 0
    if random_k < 0:
        raise fail(f"--random must be >= 0, got {random_k}")
    if jobs < 0:
        raise fail(f"--jobs must be >= 0 (0: automatic), got {jobs}")
    if jobs != 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise fail(f"--jobs {jobs}: under torchrun a sweep runs its stages one after the other, each on every rank")
    try:
        refs = parse_references(references)
    except ValueError as e:
        raise fail(str(e)) from e
    if model is not None and model not in SEARCH_MODELS:
        raise fail(f"--model {model!r}: valid models: {', '.join(SEARCH_MODELS)}")
    values = None
    if lambdas is not None:
        try:
            values = parse_lambdas(lambdas)
        except ValueError as e:
            raise fail(str(e)) from e
    sweep = lambdas is not None or random_k > 0
    kind = "sweep" if sweep else "stnas"
    presets = [] if model is None else MODEL_SHORTCUTS[model]
    cfg = run_config(kind, out, resume=resume, config=config, overrides=set_, extra=presets + _shortcuts(**{
        "data.format": fmt, "data.root": root, "stnas.lam": lam, "stnas.latency_table": latency_table,
        "stnas.target_latency_ms": target_latency, "stnas.decoder_latency": decoder_latency})
        + device_overrides(device, amp))
    check_run_inputs(cfg)
    if not skip_decoder:  # a decoder the search cannot search, before the run directory exists
        from vidnas.models import arch_from_config
        from vidnas.search.stnas import check_searchable_decoder

        try:
            check_searchable_decoder(arch_from_config(cfg))
        except ValueError as e:
            raise fail(str(e)) from e
    if cfg.stnas.latency_table:  # read before --overwrite may delete anything: a bad table fails here
        from vidnas.search.latency import LatencyTable

        try:
            LatencyTable.load(cfg.stnas.latency_table)
        except (OSError, ValueError) as e:
            raise fail(str(e)) from e
    run = make_run_dir(cfg, kind, out, resume=resume, overwrite=overwrite,
                       inputs={"--latency-table": cfg.stnas.latency_table})
    if sweep:
        _sweep(cfg, run, values if values is not None else [cfg.stnas.lam], resume=resume, quiet=quiet,
               skip_encoder=skip_encoder, skip_decoder=skip_decoder, bench_frames=bench_frames, random_k=random_k,
               random_mode=random_mode, random_seed=random_seed, references=refs, jobs=jobs)
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
        depth = res.depth or {}
        how = (f"budget {depth['budget_ms']:g} ms" if depth.get("budget_ms") is not None else f"lambda {res.lam:g}")
        typer.echo(f"encoder depths: {_depths(res.full_depths)} -> {_depths(res.depths)}  "
                   f"(block latency {res.full_latency_ms:.2f} -> {res.derived_latency_ms:.2f} ms"
                   + (f", {saving:.0%} saved" if saving is not None else "") + f"; {res.depth_rule} rule, {how})")
        if res.model_latency_ms is not None:
            line = (f"model latency (table, per frame): {res.full_model_latency_ms:.2f} -> "
                    f"{res.model_latency_ms:.2f} ms")
            if depth.get("budget_ms") is not None:
                over = res.model_latency_ms > depth["budget_ms"]
                line += f" ({'OVER' if over else 'within'} the budget of {depth['budget_ms']:g} ms)"
            typer.echo(line)
        path = depth.get("path") or []
        if len(path) > 1:
            typer.echo("lambda path: " + "; ".join(f"{_depths(p['depths'])} from {p['lambda_from']:.3g}"
                                                   for p in path))
    if res.decoder_ops is not None:
        n_t = sum(o.startswith("temporal") for o in res.decoder_ops)
        n_i = sum(o == "identity" for o in res.decoder_ops)
        typer.echo(f"decoder ops ({n_t} temporal, {len(res.decoder_ops) - n_t - n_i} spatial, {n_i} identity):")
        per = 4
        trunk = res.arch.decoder_ops if res.arch.decoder == "mstcn" else res.decoder_ops
        if res.arch.decoder == "arch2_space":
            from vidnas.search.stnas.report import decoder_slot_labels

            trunk = None
            for label, op in zip(decoder_slot_labels(res.arch), res.decoder_ops, strict=True):
                typer.echo(f"  {label}: {op}")
        for i in range(0, len(trunk or ()), per):
            typer.echo(f"  {'trunk ' if res.arch.decoder == 'mstcn' else ''}layer {i // per + 1}: "
                       + ", ".join(trunk[i:i + per]))  # type: ignore[index]
        if res.arch.decoder == "mstcn":
            from vidnas.search.stnas.report import scale_decisions

            for d in scale_decisions(res.arch)[1:]:
                typer.echo(f"  stride {d['stride']} (path, path, fusion): {', '.join(d['ops'])} -> "
                           + (f"temporal ({d['frames']} frames)" if d["temporal"] else "per frame"))
    typer.echo(f"search time: encoder {res.encoder_seconds:.1f} s, decoder {res.decoder_seconds:.1f} s")
    typer.echo("written: " + ", ".join(p.name for p in res.files))
    typer.echo(f"next: vidnas train --arch {res.arch_path}" + (
        f" [--init {res.init_checkpoint}]" if res.init_checkpoint else ""))


def _depths(d: object) -> str:
    return "default" if d is None else ",".join(str(x) for x in d)  # type: ignore[union-attr]


def _sweep(cfg, run: Path, values: list[float], *, resume: bool, quiet: bool, skip_encoder: bool, skip_decoder: bool,
           bench_frames: int, random_k: int = 0, random_mode: str = "uniform", random_seed: int = 0,
           references: tuple[str, ...] = (), jobs: int = 1) -> None:
    from vidnas.engine.distributed import cleanup_distributed
    from vidnas.experiments.candidates import control_lines, reference_lines
    from vidnas.experiments.stages import default_jobs
    from vidnas.experiments.sweep import dominance_lines, run_sweep, sweep_table

    if jobs == 0:
        import torch

        jobs = default_jobs(torch.get_num_threads())
    try:
        res = run_sweep(cfg, run, values, resume=resume, show_progress=not quiet, skip_encoder=skip_encoder,
                        skip_decoder=skip_decoder, bench_frames=bench_frames,
                        progress=lambda msg: typer.echo(f"== {msg}", err=True), random_k=random_k,
                        random_mode=random_mode, random_seed=random_seed, references=references, jobs=jobs)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise fail(str(e)) from e
    finally:
        cleanup_distributed()
    typer.echo(f"run directory: {run}")
    typer.echo(sweep_table(res.baseline, res.candidates, res.randoms, res.references, res.controls))
    if res.randoms:
        typer.echo("\n".join(dominance_lines(res.dominance)))
    if res.controls or random_mode == "matched":
        typer.echo("\n".join(control_lines(res.control_summary)))
    elif res.references:
        typer.echo("\n".join(reference_lines(res.candidates, res.references)))
    typer.echo("written: " + ", ".join(p.name for p in res.files))
