"""`vidnas bench` (params, FLOPs, latency and FPS by the ST-NAS protocol) and `vidnas latency` (per-block table)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from vidnas.cli.common import (
    AmpOpt,
    ConfigOpt,
    OverwriteOpt,
    SetOpt,
    ThreadsOpt,
    data_roots_of,
    device_overrides,
    fail,
    output_file,
    resolve_config,
    set_threads,
    setup_logging,
)

DEFAULT_CLASSES = 13  # CholecSeg8K (kept equal to vidnas.experiments.benchmark.DEFAULT_CLASSES, which loads late)

__all__ = ["bench_cmd", "latency_cmd"]


def _progress_bar(total: int, desc: str, quiet: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True, disable=True if quiet else None
    )


OptStr = Optional[str]  # noqa: UP007, UP045  (typer needs Optional on py3.10)
OptInt = Optional[int]  # noqa: UP007, UP045
OptPath = Optional[Path]  # noqa: UP007, UP045
OptList = Optional[list[str]]  # noqa: UP007, UP045


def bench_cmd(
    checkpoint: Annotated[
        OptList,
        typer.Option("--checkpoint", help="Checkpoint of `vidnas train`, optionally NAME=PATH (repeatable)."),
    ] = None,
    arch: Annotated[
        OptList, typer.Option("--arch", help="arch.json (random weights), optionally NAME=PATH (repeatable).")
    ] = None,
    row: Annotated[
        OptList,
        typer.Option(
            "--row",
            help="Paper Table 1 row (swin_b, swin_t, sptcn_base, sptcn_tiny, swin_short, "
            "full_channels, stnas) or `all` (repeatable).",
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    height: Annotated[OptInt, typer.Option(help="Input height (default data.height: 320).")] = None,
    width: Annotated[OptInt, typer.Option(help="Input width (default data.width: 576).")] = None,
    window: Annotated[OptInt, typer.Option(help="Frames decoded per frame (default: each model's own).")] = None,
    classes: Annotated[
        int, typer.Option("--classes", help="Classes of models with random weights (checkpoints keep theirs).")
    ] = DEFAULT_CLASSES,
    frames: Annotated[int, typer.Option(help="Timed frames per model (the paper averages 1000).")] = 100,
    warmup: Annotated[int, typer.Option(help="Untimed frames per model first.")] = 10,
    threads: Annotated[OptStr, typer.Option(
        "--threads", help="torch (and onnxruntime) intra-op threads: N, or auto (default: the cores the load average "
        "leaves free, at least 1). With --compare threads: a list, e.g. 1,2.")] = None,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda.")] = "cpu",
    ref: Annotated[OptStr, typer.Option("--ref", help="Row name: adds an FPS ratio column against it.")] = None,
    json_out: Annotated[OptPath, typer.Option("--json", help="Write the rows as a JSON list.")] = None,
    flops: Annotated[bool, typer.Option("--flops/--no-flops", help="Count FLOPs per frame.")] = True,
    runtime: Annotated[str, typer.Option(
        help="torch | onnxruntime (ONNX export, CPU) | openvino (the same export; extra vidnas[openvino]) | both "
        "(torch and onnxruntime interleaved; ONNX rows named NAME@ort) | all (every runtime x precision available "
        "here in one interleaved run, with each row's FPS ratio and mask agreement against PyTorch fp32: the table "
        "to choose a deployment from).")] = "torch",
    key_interval: Annotated[int | None, typer.Option(  # noqa: UP007, UP045
        "--key-interval", help="Dynamic-cell checkpoints: run the static network every N frames (default: only the "
        "first, i.e. steady state = encoder + cell).")] = None,
    overwrite: OverwriteOpt = False,
    amp: AmpOpt = "none",
    incremental: Annotated[bool, typer.Option(
        "--incremental/--paper-only", help="Also time the incremental protocol (one decoder step per frame; inc_* "
        "columns), interleaved with the paper's window decode.")] = True,
    ceiling: Annotated[int, typer.Option(
        "--ceiling", help="Roofline: size N of the NxN float32 matmul timed in the same rounds (0: no roofline).")
    ] = 2048,
    channels_last: Annotated[str, typer.Option(
        "--channels-last", help="auto|on: CNN encoders (MobileNetV2, EfficientNet-Lite0) run channels-last; off: "
        "never.")] = "auto",
    compare: Annotated[OptStr, typer.Option(
        "--compare", help="Time a CPU fast path on and off in the same rounds: channels_last (rows NAME, NAME~off), "
        "threads (rows NAME@Nt), ort_options (onnxruntime rows with vidnas's session options and NAME~off with "
        "onnxruntime's defaults), amp (PyTorch rows NAME in float32 and NAME@bf16 under --amp, default bf16, with "
        "their pixel agreement), compile (PyTorch rows NAME eager and NAME@compile: torch.compile of the encoder, "
        "decoder and cell, with the compile time and their pixel agreement).")] = None,
    compile_backend: Annotated[str, typer.Option(
        "--compile-backend", help="--compare compile: inductor (torch.compile's default, generated kernels) or "
        "aot_eager (the graph capture without code generation: seconds, not minutes, to compile).")] = "inductor",
    batch: Annotated[int, typer.Option(
        "--batch", help="Frames per push of the PyTorch rows: B streams side by side (e.g. 8 on a GPU); times and FPS "
        "are per frame, batch_latency_ms per push.")] = 1,
    precision: Annotated[OptStr, typer.Option(
        "--precision", help="exported rows: fp32, int8 (quantised as `vidnas export --precision int8` does; rows "
        "NAME@int8), bf16 (openvino only: its bf16 inference precision; rows NAME@bf16), or a list, e.g. fp32,int8 "
        "(interleaved). Default fp32; --runtime all takes every one.")] = None,
    calib_frames: Annotated[int, typer.Option(
        "--calib-frames", help="int8: calibration frames from each model's training split (random-weight models: "
        "the config's data).")] = 32,
    accuracy_frames: Annotated[int, typer.Option(
        "--accuracy-frames", help="--runtime all: frames of each model's validation split (labelled: mIoU and its "
        "delta; unreadable: random frames) streamed through every row for its agreement with PyTorch fp32.")] = 32,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Benchmark models side by side by the ST-NAS FPS protocol: params, GFLOPs, latency, FPS.

    Paper protocol: every frame costs one encoder pass plus one decode of the full window (the model streams with a
    ring buffer of encoder features). Incremental protocol (inc_* columns, on by default): one encoder pass plus one
    decoder time step, the same logits, for causal window models. All models and both protocols are timed
    interleaved in one run, so their ratios are stable on a noisy machine; a matmul ceiling timed in the same rounds
    gives each model's share of the machine's GFLOP/s (roofline). Any checkpoint kind benchmarks: window models,
    ST-NAS-derived models, arch2, dynamic-cell models.
    """
    from vidnas.bench import (
        BenchRow,
        amp_note,
        auto_threads,
        cpu_bf16_flags,
        cpu_flags_line,
        device_line,
        device_signature,
        format_table,
        protocol_note,
        write_rows_json,
    )
    from vidnas.experiments.benchmark import (
        AMP_COLUMNS,
        BENCH_COLUMNS,
        BENCH_PRECISIONS,
        BOTH_COLUMNS,
        CHANNELS_LAST_MODES,
        COMPARE,
        COMPILE_BACKENDS,
        COMPILE_COLUMNS,
        DEPLOY_COLUMNS,
        ROOFLINE_COLUMNS,
        RUNTIMES,
        add_ratio_columns,
        build_sources,
        fastpath_line,
        graph_plan,
        onnxruntime_available,
        parse_sources,
        roofline_line,
        row_name,
        run_benchmark,
    )
    from vidnas.export import DeployError
    from vidnas.export.ort_streamers import OPENVINO_INSTALL, openvino_available, openvino_bf16, require_openvino

    setup_logging()
    if runtime not in RUNTIMES:
        raise fail(f"unknown --runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    if runtime == "all" and (precision is not None or compare is not None or amp != "none"):
        raise fail("--runtime all times every runtime and precision available: leave out --precision, --compare and "
                   "--amp")
    if runtime == "all" and accuracy_frames < 1:
        raise fail(f"--accuracy-frames must be >= 1, got {accuracy_frames}")
    precisions = [p.strip() for p in (precision or "fp32").split(",") if p.strip()]
    if not precisions or any(p not in BENCH_PRECISIONS for p in precisions) or len(set(precisions)) < len(precisions):
        raise fail(f"--precision {precision!r}: give each of {', '.join(BENCH_PRECISIONS)} at most once, e.g. "
                   "fp32,int8")
    if precisions != ["fp32"] and (runtime == "torch" or compare is not None or calib_frames < 1):
        raise fail("--precision int8 / bf16 times exported models: it needs --runtime onnxruntime, openvino or both, "
                   f"no --compare, and --calib-frames >= 1 (got {calib_frames})")
    if "bf16" in precisions and runtime != "openvino":
        raise fail("--precision bf16 is OpenVINO's inference precision: use --runtime openvino (PyTorch bf16: --amp "
                   "bf16 or --compare amp)")
    if runtime not in ("torch", "openvino", "all") and not onnxruntime_available():
        raise fail(f"--runtime {runtime} is not available: install onnx and onnxruntime")
    if runtime == "openvino":
        try:
            require_openvino()
            if "bf16" in precisions and not openvino_bf16():
                raise DeployError("--precision bf16: OpenVINO reports no bf16 on this CPU (no AVX-512 BF16 or AMX)")
        except DeployError as e:
            raise fail(str(e)) from e
    if runtime in ("openvino", "all") and not onnxruntime_available():  # torch.onnx.export writes with onnx
        raise fail(f"--runtime {runtime} runs ONNX exports: install onnx and onnxruntime")
    if runtime != "torch" and device != "cpu":
        raise fail(f"--runtime {runtime} runs the exported graphs on the CPU: use --device cpu")
    device_overrides(device, amp)  # an unknown device, CUDA where there is none, or a bad --amp fails here
    if frames < 1 or warmup < 0:
        raise fail(f"need --frames >= 1 and --warmup >= 0, got {frames} and {warmup}")
    if (height is None) != (width is None):
        raise fail("give --height and --width together")
    if window is not None and window < 1:
        raise fail(f"--window must be >= 1, got {window}")
    if ceiling < 0:
        raise fail(f"--ceiling must be >= 0 (0: no roofline), got {ceiling}")
    if channels_last not in CHANNELS_LAST_MODES:
        raise fail(f"--channels-last {channels_last!r}: valid modes are {', '.join(CHANNELS_LAST_MODES)}")
    if compare is not None and compare not in COMPARE:
        raise fail(f"--compare {compare!r}: valid comparisons are {', '.join(COMPARE)}")
    if compare == "ort_options" and runtime not in ("onnxruntime", "both"):
        raise fail("--compare ort_options needs --runtime onnxruntime or both")
    if compare == "amp" and runtime != "torch":
        raise fail("--compare amp times PyTorch rows in float32 and under --amp: it needs --runtime torch")
    if compare == "amp" and amp == "none":
        amp = "bf16"
    if compare == "compile" and runtime != "torch":
        raise fail("--compare compile times PyTorch rows eager and compiled: it needs --runtime torch")
    if compile_backend not in COMPILE_BACKENDS:
        raise fail(f"--compile-backend {compile_backend!r}: valid backends are {', '.join(COMPILE_BACKENDS)}")
    if batch < 1 or (batch > 1 and runtime != "torch"):
        raise fail(f"--batch {batch}: must be >= 1, and above 1 only with --runtime torch (onnxruntime streams "
                   "batch 1)")
    try:
        counts = [] if threads in (None, "auto") else [int(t) for t in threads.split(",") if t.strip()]
    except ValueError:
        raise fail(f"--threads {threads!r}: give a number, a list like 1,2 (with --compare threads) or auto") from None
    if any(n < 1 for n in counts) or (len(counts) > 1 and compare != "threads"):
        raise fail(f"--threads {threads!r}: thread counts must be >= 1, and a list needs --compare threads")
    n_threads = counts[0] if len(counts) == 1 else auto_threads()
    if not (checkpoint or arch or row or config or set_):
        raise fail("no model to benchmark: give --checkpoint, --arch, --row (e.g. --row all), or --config / --set "
                   "(the config's model)")
    cfg = resolve_config(config, set_)
    if json_out is not None:
        output_file(json_out, "bench", overwrite=overwrite, option="--json", data_roots=data_roots_of(cfg.data))
    set_threads(n_threads)
    hw = (height, width) if height is not None and width is not None else None
    try:
        sources = parse_sources(checkpoint, arch, row)
    except ValueError as e:
        raise fail(str(e)) from e
    try:
        models = build_sources(sources, cfg, hw=hw, window=window, num_classes=classes, device=device,
                               key_interval=key_interval, channels_last=channels_last)
    except (OSError, ValueError, KeyError) as e:
        raise fail(str(e)) from e
    plan = graph_plan(runtime, precisions)
    torch_rows = 0 if runtime in ("onnxruntime", "openvino") else 2 if runtime == "all" and cpu_bf16_flags() else 1
    if ref is not None and compare is None:
        row_names = [n for m in models for n in [m.name, f"{m.name}@bf16"][:torch_rows]
                     + [row_name(m.name, runtime, g, p) for g, p in plan]]
        if ref not in row_names:
            raise fail(f"--ref {ref!r} names no row; rows: {', '.join(row_names)}")
    runs = (len(plan) + torch_rows) * (2 if incremental else 1) * (1 if compare is None else 2)
    bar = _progress_bar(len(models) * runs * (warmup + frames), "bench", quiet)
    try:
        rows: list[BenchRow] = run_benchmark(models, runtime=runtime, frames=frames, warmup=warmup, flops=flops,
                                             threads=n_threads, progress=bar.update, amp=amp, incremental=incremental,
                                             ceiling=ceiling or None, compare=compare,
                                             thread_counts=counts if len(counts) > 1 else None,
                                             precisions=precisions, calib_frames=calib_frames, batch=batch,
                                             compile_backend=compile_backend, accuracy_frames=accuracy_frames)
    except (ValueError, RuntimeError) as e:
        raise fail(str(e)) from e
    finally:
        bar.close()
    if ref is not None and ref not in {r.name for r in rows}:
        raise fail(f"--ref {ref!r} names no row; rows: {', '.join(r.name for r in rows)}")
    columns = list(BOTH_COLUMNS if incremental else BENCH_COLUMNS)
    if amp != "none":
        columns.insert(1, "amp")
    if batch > 1:
        columns[2:2] = ["batch", "batch_latency_ms"]
    if ref is not None:
        add_ratio_columns(rows, ref)
        columns += ["fps_ratio", "inc_fps_ratio"] if incremental else ["fps_ratio"]
    typer.echo(format_table(rows, columns))
    if ceiling:
        typer.echo("")
        typer.echo(format_table(rows, ROOFLINE_COLUMNS if incremental else ROOFLINE_COLUMNS[:4]))
        typer.echo(roofline_line(rows) or "roofline: no FLOP counts (--no-flops)")
    if compare == "amp":
        typer.echo("")
        typer.echo(format_table([r for r in rows if "pixel_agreement" in r.extra], AMP_COLUMNS))
        typer.echo(f"pixel_agreement = share of pixels whose argmax under {amp} equals float32's; agreement_miou = "
                   f"the {amp} masks scored against the float32 masks; frames streamed through model.stream")
    if compare == "compile":
        typer.echo("")
        typer.echo(format_table([r for r in rows if "pixel_agreement" in r.extra], COMPILE_COLUMNS))
        typer.echo(f"NAME@compile: torch.compile ({compile_backend}) of the encoder, decoder and cell forward, "
                   "compiled before the timing (compile_seconds); pixel_agreement = share of pixels whose argmax "
                   "equals the eager model's; frames streamed through model.stream")
    if runtime == "all":
        typer.echo("")
        typer.echo(device_line())
        typer.echo(cpu_flags_line())
        typer.echo(format_table(rows, DEPLOY_COLUMNS))
        src = next((r.extra["agreement_source"] for r in rows if r.extra.get("agreement_source")), "-")
        typer.echo(f"x_torch = FPS / the PyTorch fp32 row's FPS (inc_x_torch: incremental protocol, each against "
                   f"its own); pixel_agreement / agreement_miou = masks against PyTorch fp32's over "
                   f"{accuracy_frames} frames ({src}); miou = against the labels, miou_delta = mIoU points against "
                   f"PyTorch fp32 ('-': no labels)")
        for r in rows:
            for why in r.extra.get("left_out") or []:
                typer.echo(f"left out: {why}")
        if not openvino_available():
            typer.echo(f"openvino rows left out: the openvino package is not installed ({OPENVINO_INSTALL})")
    typer.echo(fastpath_line(rows))
    if runtime != "all":  # printed above the deployment table
        typer.echo(device_line())
    note = amp_note(amp, device)
    if note is not None:
        typer.echo(note)
    precision_words = {"none": "float32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}[amp]
    if runtime == "all":
        precision_words = "each row's runtime and precision (columns runtime, precision)"
    if compare == "amp":
        precision_words = f"float32 and {precision_words} (PyTorch rows NAME and NAME@{amp})"
    typer.echo(protocol_note(frames, warmup, incremental=incremental, precision=precision_words, batch=batch))
    if ref is not None:
        typer.echo(f"fps_ratio = FPS / paper-protocol FPS of {ref}; inc_fps_ratio = incremental FPS / the same "
                   "paper-protocol FPS" if incremental else f"fps_ratio = FPS / FPS of {ref}")
    if json_out is not None:
        dev = {**device_signature(), "torch_device": device}
        for r in rows:
            r.extra["device"] = dev
        typer.echo(f"written: {write_rows_json(json_out, rows)}")


def latency_cmd(
    encoder: Annotated[OptStr, typer.Option(help="Encoder name (default model.encoder), e.g. swin_tiny.")] = None,
    height: Annotated[OptInt, typer.Option(help="Input height (default data.height: 320).")] = None,
    width: Annotated[OptInt, typer.Option(help="Input width (default data.width: 576).")] = None,
    depths: Annotated[
        OptStr,
        typer.Option(
            help="Blocks per stage, e.g. 2,2,6,2 (default: the config's model.encoder_depths for its encoder, else "
            "the encoder's full depth; the full depth serves every shortened encoder)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Latency table JSON to write.")] = Path("latency.json"),
    iters: Annotated[int, typer.Option(help="Timed calls per block and pass.")] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed calls per block before the first pass.")] = 3,
    repeats: Annotated[int, typer.Option(help="Whole-encoder passes; each block keeps the median over passes of "
                                         "its per-pass median (a stall hits one pass, not the table).")] = 5,
    threads: ThreadsOpt = None,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda.")] = "cpu",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
    decoder: Annotated[bool, typer.Option(
        "--decoder", help="Also time the config's SP-TCN decoder parts (baseline, fixed parts, every candidate op) "
                          "on the window, so budgets (--target-latency) read whole-model latencies from the table.")]
    = False,
    classes: Annotated[OptInt, typer.Option("--classes", help="With --decoder: classes K of the head (default: "
                                                              "the config's data set).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    runtime: Annotated[str, typer.Option(
        help="Where each module is timed: torch (eager) | onnxruntime | openvino (each block, stage part and decoder "
             "candidate exported to ONNX and run in that runtime on the CPU, --threads intra-op threads).")] = "torch",
    precision: Annotated[str, typer.Option(
        help="fp32 | int8 (onnxruntime / openvino: each graph quantised by the quantiser of `vidnas export "
             "--precision int8`, calibrated on the random inputs it is timed on: enough for latency, not accuracy).")]
    = "fp32",
    fp32_decoder: Annotated[bool, typer.Option(
        "--fp32-decoder", help="With --precision int8 and --decoder: time the decoder parts in fp32, as `vidnas export "
                               "--precision int8` deploys window models (their decoder.onnx stays fp32).")] = False,
) -> None:
    """Build the per-block latency table of an encoder on this device (the s_i of the ST-NAS penalty, Eq. 2).

    The search measures its table by the same policy when it is given none (vidnas.search.latency). With --runtime
    and --precision the table prices the deployed model (the table records both; the search reads it unchanged).
    """
    from vidnas.bench import BenchRow, device_line, format_table
    from vidnas.export import DeployError
    from vidnas.export.graph_timing import GraphTimer, check_pricing
    from vidnas.models.encoders import build_encoder
    from vidnas.search.latency import downsample_signature, measure_latency_table

    setup_logging()
    if iters < 1 or warmup < 0 or repeats < 1:
        raise fail(f"need --iters >= 1, --warmup >= 0 and --repeats >= 1, got {iters}, {warmup} and {repeats}")
    try:
        check_pricing(runtime, precision, device)
    except DeployError as e:
        raise fail(str(e)) from e
    if fp32_decoder and (precision != "int8" or not decoder):
        raise fail("--fp32-decoder prices the decoder parts of an INT8 table in fp32: it needs --precision int8 and "
                   "--decoder")
    if (height is None) != (width is None):
        raise fail("give --height and --width together")
    cfg = resolve_config(config, set_)
    output_file(out, "latency", overwrite=overwrite, data_roots=data_roots_of(cfg.data))
    device_overrides(device)
    set_threads(threads)
    name = encoder or cfg.model.encoder
    hw = (height, width) if height is not None and width is not None else (cfg.data.height, cfg.data.width)
    try:
        depth_list = None if depths is None else tuple(int(d) for d in depths.split(","))
        if depth_list is None and name == cfg.model.encoder and cfg.model.encoder_depths is not None:
            depth_list = tuple(cfg.model.encoder_depths)  # the config's (deeper) encoder, e.g. the demo's 2,2,4,2
        enc = build_encoder(name, img_size=hw, depths=depth_list).to(device)
    except (KeyError, ValueError) as e:
        raise fail(str(e).strip("\"'")) from e

    modules = sum(1 + len(stage.blocks) for stage in enc.stages)
    bar = _progress_bar(modules * repeats, f"latency {name}", quiet)
    timer = GraphTimer(runtime, precision, threads=threads) if runtime != "torch" else None
    try:
        table = measure_latency_table(enc, hw, warmup=warmup, iters=iters, repeats=repeats, progress=bar.update,
                                      timer=timer)
        if decoder:
            if fp32_decoder:
                table.meta["decoder_precision"] = "fp32"
            _decoder_parts(table, enc, cfg, name, depth_list, classes, timer,
                           GraphTimer(runtime, "fp32", threads=threads) if fp32_decoder else timer)
    except DeployError as e:
        raise fail(str(e)) from e
    finally:
        bar.close()
        if timer is not None:
            timer.close()
    path = table.save(out)

    rows = []
    for i, stage in enumerate(enc.stages):
        sig = downsample_signature(enc, i, hw)
        rows.append(
            BenchRow(sig, extra={"stage": i, "block": "down", "signature": sig, "median_ms": table.downsample[sig]})
        )
        for j in range(len(stage.blocks)):
            sig = enc.block_signature(i, j, hw)
            rows.append(BenchRow(sig, extra={"stage": i, "block": j, "signature": sig, "median_ms": table.blocks[sig]}))
    typer.echo(format_table(rows, ("stage", "block", "signature", "median_ms")))
    total = sum(table.blocks.values())
    down = sum(table.downsample.values())
    typer.echo(
        f"{len(table.blocks)} blocks of {name} at {hw[0]}x{hw[1]}: {total:.2f} ms in blocks + {down:.2f} ms "
        f"in downsamples (median over {repeats} passes of the median of {iters} calls, {warmup} warm-up, batch 1, "
        f"{runtime} {precision}{', decoder fp32' if fp32_decoder else ''})"
    )
    typer.echo(device_line())
    typer.echo(f"written: {path}")


def _decoder_parts(table: Any, enc: Any, cfg: Any, name: str, depth_list: tuple[int, ...] | None,
                   classes: int | None, timer: Any, decoder_timer: Any) -> None:
    """``vidnas latency --decoder``: the config's decoder parts into ``table`` (``complete_model_parts``), timed by
    ``decoder_timer``."""
    import dataclasses

    from vidnas.models import SEARCH_CANDIDATES, arch_from_config
    from vidnas.search.latency import complete_model_parts

    try:
        if classes is None:
            from vidnas.data import open_source

            classes = open_source(cfg.data).num_classes
        base = dataclasses.replace(arch_from_config(cfg), encoder=name, depths=depth_list)
        complete_model_parts(table, enc, base, int(classes), cfg.stnas.candidates or SEARCH_CANDIDATES, timer=timer,
                             decoder_timer=decoder_timer)
    except (KeyError, ValueError, OSError) as e:
        raise fail(str(e).strip("\"'")) from e
    finally:
        if decoder_timer is not timer:
            decoder_timer.close()
