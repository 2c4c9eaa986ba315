"""`vidnas bench` (params, FLOPs, latency and FPS by the ST-NAS protocol) and `vidnas latency` (per-block table)."""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from vidnas.cli.common import ConfigOpt, SetOpt, fail, resolve_config, set_threads, setup_logging

if TYPE_CHECKING:
    from vidnas.bench import BenchRow
    from vidnas.config import Config
    from vidnas.models import Arch, VideoSegmenter

__all__ = [
    "RUNTIMES",
    "BENCH_COLUMNS",
    "ModelSource",
    "parse_sources",
    "build_source",
    "bench_cmd",
    "latency_cmd",
    "protocol_note",
    "device_line",
]

RUNTIMES: tuple[str, ...] = ("torch", "onnxruntime", "both")
BENCH_COLUMNS: tuple[str, ...] = (
    "name",
    "window",
    "params",
    "gflops",
    "encoder_ms",
    "decoder_ms",
    "latency_ms",
    "fps",
)
DEFAULT_CLASSES = 13  # CholecSeg8K, the ST-NAS data set; only the last 1x1x1 conv depends on it


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where one benchmarked model comes from.

    Attributes:
        kind: ``checkpoint`` (a `vidnas train` checkpoint), ``arch`` (an arch.json, random weights), ``row`` (a paper
            Table 1 row of ``PAPER_ROWS``, random weights) or ``config`` (the config's model, random weights).
        value: the path or row name ("" for ``config``).
        label: the row's name in the table; None = derived (file stem, row name, architecture name).
    """

    kind: str
    value: str = ""
    label: str | None = None


def _split_label(value: str) -> tuple[str | None, str]:
    # "fast=runs/a/best.pt" names the row; a plain path (which may itself contain '=' after a '/') does not
    head, sep, tail = value.partition("=")
    if sep and head and "/" not in head and tail:
        return head, tail
    return None, value


def parse_sources(
    checkpoints: Sequence[str] | None, archs: Sequence[str] | None, rows: Sequence[str] | None
) -> list[ModelSource]:
    """Sources in command-line group order (checkpoints, arch files, paper rows); ``--row all`` = every paper row.

    Raises:
        ValueError: an unknown paper row name (the message lists the valid ones).
    """
    from vidnas.models import PAPER_ROWS

    out = []
    for value in checkpoints or []:
        label, path = _split_label(value)
        out.append(ModelSource("checkpoint", path, label))
    for value in archs or []:
        label, path = _split_label(value)
        out.append(ModelSource("arch", path, label))
    for value in rows or []:
        names = list(PAPER_ROWS) if value == "all" else [value]
        for name in names:
            if name not in PAPER_ROWS:
                raise ValueError(f"unknown paper row {name!r}; valid rows: all, {', '.join(PAPER_ROWS)}")
            out.append(ModelSource("row", name))
    return out or [ModelSource("config")]


def _build_from_arch(cfg: Config, arch: Arch, hw: tuple[int, int], num_classes: int) -> VideoSegmenter:
    from vidnas.models import build_model

    # the model follows the architecture's window; matching data.window avoids build_model's mismatch warning
    data = dataclasses.replace(cfg.data, height=hw[0], width=hw[1], window=arch.window)
    return build_model(dataclasses.replace(cfg, data=data), arch, num_classes=num_classes)


def build_source(
    src: ModelSource,
    cfg: Config,
    *,
    hw: tuple[int, int] | None,
    window: int | None,
    num_classes: int,
    device: str = "cpu",
    key_interval: int | None = None,
) -> tuple[str, VideoSegmenter, tuple[int, int], dict[str, Any]]:
    """Build one source's model in eval mode.

    Args:
        src: the source.
        cfg: resolved config (image size, encoder weights and the model of a ``config`` source).
        hw: (H, W) to build and time at; None = the checkpoint's own size, else ``cfg.data``.
        window: frames decoded per pushed frame; None = the model's own (architecture, checkpoint or config).
        num_classes: K of models built with random weights (checkpoints keep their own).
        device: torch device.
        key_interval: dynamic-cell checkpoints: static network every ``key_interval`` frames (others ignore it).

    Returns:
        (name, model, (H, W), extra row entries describing the source).

    Raises:
        ValueError, OSError: unreadable file, invalid architecture, unknown row.
    """
    from vidnas.models import PAPER_ROWS, Arch, arch_from_config

    extra: dict[str, Any] = {"source": src.kind if src.kind == "config" else f"{src.kind}:{src.value}"}
    if src.kind == "checkpoint":
        from vidnas.config import config_from_dict
        from vidnas.engine.checkpoint import load_checkpoint
        from vidnas.engine.evaluate import load_model_from_checkpoint

        state = load_checkpoint(src.value)
        ck_cfg = config_from_dict(state["config"])
        size = hw or (ck_cfg.data.height, ck_cfg.data.width)
        ck_cfg = dataclasses.replace(ck_cfg, data=dataclasses.replace(ck_cfg.data, height=size[0], width=size[1]))
        is_cell = "cell" in state
        model, _, _ = load_model_from_checkpoint(src.value, cfg=ck_cfg, device=device,
                                                 key_interval=key_interval if is_cell else None)
        if is_cell:
            extra["key_interval"] = key_interval
        # name a checkpoint after its run directory (runs/<run>/checkpoints/best.pt): two trainings of the same
        # architecture differ there, not in the architecture's name
        path = Path(src.value)
        # and a dynamic-cell model (runs/<search>/top/cell0/model.pt) after its cell
        if src.label:
            name = src.label
        elif path.parent.name == "checkpoints":
            name = path.parent.parent.name
        elif path.stem == "model":
            name = path.parent.name
        else:
            name = path.stem
        extra["arch"] = ((state.get("arch") or {}).get("name") or (state.get("cell") or {}).get("name") or None)
        extra["num_classes"] = int(state["num_classes"])
    else:
        size = hw or (cfg.data.height, cfg.data.width)
        if src.kind == "arch":
            arch = Arch.load(src.value)
            name = src.label or arch.name or Path(src.value).stem
        elif src.kind == "row":
            arch = PAPER_ROWS[src.value].arch
            name = src.label or src.value
        elif src.kind == "config":
            arch = arch_from_config(cfg)
            name = src.label or (arch.name if cfg.model.arch else "config")
        else:
            raise ValueError(f"unknown source kind {src.kind!r}; valid: checkpoint, arch, row, config")
        model = _build_from_arch(cfg, arch, size, num_classes).to(device)
        extra["num_classes"] = num_classes
    if window is not None:
        # the decoders are convolutional in time: the window is only the streamer's ring-buffer length
        model.window = int(window)
    model.eval()
    return name, model, (int(size[0]), int(size[1])), extra


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 2
    while out in taken:
        out, i = f"{name}-{i}", i + 1
    taken.add(out)
    return out


def device_line() -> str:
    """One line describing the measuring machine (``vidnas.bench.device_signature``)."""
    from vidnas.bench import device_signature

    d = device_signature()
    where = d["cuda"] or d["cpu"]
    return (
        f"device: {where} ({d['cpu_count']} logical CPUs, {d['num_threads']} torch threads), torch {d['torch']}, "
        f"python {d['python']}, {d['platform']}"
    )


def protocol_note(frames: int, warmup: int) -> str:
    """How the latencies were measured, printed under every protocol table."""
    return (
        f"protocol [ST-NAS Sec. 4]: per frame = encode 1 frame + decode the full window (Streamer.push with the ring "
        f"buffer full), batch 1, float32; latency = mean over {frames} frames after {warmup} warm-up pushes, "
        f"FPS = 1000 / latency; models interleaved (one push each per round, rotated order); GFLOPs = encoder on 1 "
        f"frame + decoder on the window (1 MAC = 2 FLOPs); frame-by-frame models (arch2, dynamic cells: steady "
        f"state) run the encoder and their decoder (cell) once per frame"
    )


def _progress_bar(total: int, desc: str, quiet: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True, disable=True if quiet else None
    )


def _onnxruntime_available() -> bool:
    """Whether `--runtime onnxruntime` can run: onnxruntime installed and ``vidnas.export`` has its streamer."""
    try:
        import onnxruntime  # noqa: F401

        from vidnas.export import OrtStreamer, export_onnx  # noqa: F401
    except ImportError:
        return False
    return True


def _ort_streamers(
    models: dict[str, VideoSegmenter], sizes: dict[str, tuple[int, int]], out_dir: Path, threads: int
) -> dict[str, Any]:
    """Export every model as ONNX (encoder + window decoder) into ``out_dir`` and open an onnxruntime streamer each."""
    import onnxruntime as ort

    from vidnas.export import DeployError, OrtStreamer, export_onnx

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # onnxruntime's pool spin-waits after each run by default, stealing the cores from the PyTorch candidates timed
    # next to it (measured here: a tiny Swin pushed 30x slower); interleaved runs need idle threads to sleep
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    out = {}
    for i, (name, model) in enumerate(models.items()):
        path = out_dir / f"model{i}"
        try:
            export_onnx(model, path, img_size=sizes[name])
            out[name] = OrtStreamer(path, session_options=options)
        except (DeployError, RuntimeError, ValueError) as e:
            raise fail(f"{name}: ONNX export / onnxruntime failed: {e}") from e
    return out


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
    threads: Annotated[OptInt, typer.Option(help="torch intra-op threads (default: torch's).")] = None,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda.")] = "cpu",
    ref: Annotated[OptStr, typer.Option("--ref", help="Row name: adds an FPS ratio column against it.")] = None,
    json_out: Annotated[OptPath, typer.Option("--json", help="Write the rows as a JSON list.")] = None,
    flops: Annotated[bool, typer.Option("--flops/--no-flops", help="Count FLOPs per frame.")] = True,
    runtime: Annotated[
        str, typer.Option(help="torch | onnxruntime (ONNX export, CPU) | both (interleaved; ONNX rows named NAME@ort).")
    ] = "torch",
    key_interval: Annotated[int | None, typer.Option(  # noqa: UP007, UP045
        "--key-interval", help="Dynamic-cell checkpoints: run the static network every N frames (default: only the "
        "first, i.e. steady state = encoder + cell).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Benchmark models side by side by the ST-NAS FPS protocol: params, GFLOPs, latency, FPS.

    Every frame costs one encoder pass plus one decode of the full window (the model streams with a ring buffer of
    encoder features). All models are timed interleaved in one run, so their ratios are stable on a noisy machine.
    """
    from vidnas.bench import write_rows_json
    from vidnas.bench.protocol import protocol_rows

    setup_logging()
    if runtime not in RUNTIMES:
        raise fail(f"unknown --runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    if runtime != "torch" and not _onnxruntime_available():
        raise fail("--runtime onnxruntime is not available: install onnx and onnxruntime")
    if runtime != "torch" and device != "cpu":
        raise fail(f"--runtime {runtime} runs onnxruntime on the CPU: use --device cpu")
    if frames < 1 or warmup < 0:
        raise fail(f"need --frames >= 1 and --warmup >= 0, got {frames} and {warmup}")
    if (height is None) != (width is None):
        raise fail("give --height and --width together")
    if window is not None and window < 1:
        raise fail(f"--window must be >= 1, got {window}")
    set_threads(threads)
    cfg = resolve_config(config, set_)
    hw = (height, width) if height is not None and width is not None else None
    try:
        sources = parse_sources(checkpoint, arch, row)
    except ValueError as e:
        raise fail(str(e)) from e
    models: dict[str, VideoSegmenter] = {}
    sizes: dict[str, tuple[int, int]] = {}
    extras: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for src in sources:
        try:
            name, model, size, extra = build_source(src, cfg, hw=hw, window=window, num_classes=classes, device=device,
                                                    key_interval=key_interval)
        except (OSError, ValueError, KeyError) as e:
            raise fail(f"{src.kind} {src.value}: {e}" if src.value else str(e)) from e
        name = _unique(name, taken)
        models[name], sizes[name], extras[name] = model, size, {**extra, "runtime": "torch"}

    with tempfile.TemporaryDirectory(prefix="vidnas-bench-") as tmp:
        candidates: dict[str, Any] = {}
        cand_sizes: dict[str, tuple[int, int]] = {}
        cand_extras: dict[str, dict[str, Any]] = {}
        cost_models: dict[str, VideoSegmenter] = {}
        streamers: dict[str, Any] = {}
        if runtime != "torch":
            import torch

            streamers = _ort_streamers(models, sizes, Path(tmp), threads or torch.get_num_threads())
        for name, model in models.items():
            # both runtimes of one model side by side, so their ratio is measured under the same machine load
            if runtime in ("torch", "both"):
                candidates[name], cand_sizes[name], cand_extras[name] = model, sizes[name], extras[name]
            if runtime in ("onnxruntime", "both"):
                ort_name = f"{name}@ort" if runtime == "both" else name
                candidates[ort_name], cand_sizes[ort_name] = streamers[name], sizes[name]
                cand_extras[ort_name] = {**extras[name], "runtime": "onnxruntime"}
                cost_models[ort_name] = model
        if ref is not None and ref not in candidates:
            raise fail(f"--ref {ref!r} names no row; rows: {', '.join(candidates)}")
        bar = _progress_bar(len(candidates) * (warmup + frames), "bench", quiet)
        try:
            rows = protocol_rows(
                candidates,
                img_size=cand_sizes,
                warmup=warmup,
                frames=frames,
                flops=flops,
                extra=cand_extras,
                cost_models=cost_models,
                progress=bar.update,
            )
        finally:
            bar.close()
    _print_rows(rows, ref, frames, warmup)
    if json_out is not None:
        from vidnas.bench import device_signature

        dev = {**device_signature(), "torch_device": device}
        for r in rows:
            r.extra["device"] = dev
        typer.echo(f"written: {write_rows_json(json_out, rows)}")


def _print_rows(rows: Sequence[BenchRow], ref: str | None, frames: int, warmup: int) -> None:
    from vidnas.bench import format_table

    typer.echo(format_table(rows, BENCH_COLUMNS, ref=ref))
    typer.echo(device_line())
    typer.echo(protocol_note(frames, warmup))


def latency_cmd(
    encoder: Annotated[OptStr, typer.Option(help="Encoder name (default model.encoder), e.g. swin_tiny.")] = None,
    height: Annotated[OptInt, typer.Option(help="Input height (default data.height: 320).")] = None,
    width: Annotated[OptInt, typer.Option(help="Input width (default data.width: 576).")] = None,
    depths: Annotated[
        OptStr,
        typer.Option(
            help="Blocks per stage, e.g. 2,2,6,2 (default: full depth, which serves every shortened encoder)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Latency table JSON to write.")] = Path("latency.json"),
    iters: Annotated[int, typer.Option(help="Timed calls per block (the table stores the median).")] = 50,
    warmup: Annotated[int, typer.Option(help="Untimed calls per block first.")] = 10,
    threads: Annotated[OptInt, typer.Option(help="torch intra-op threads (default: torch's).")] = None,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda.")] = "cpu",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Build the per-block latency table of an encoder on this device (the s_i of the ST-NAS penalty, Eq. 2)."""
    from vidnas.bench import BenchRow, format_table
    from vidnas.models.encoders import build_encoder
    from vidnas.search.latency import downsample_signature, measure_encoder_blocks

    setup_logging()
    if iters < 1 or warmup < 0:
        raise fail(f"need --iters >= 1 and --warmup >= 0, got {iters} and {warmup}")
    if (height is None) != (width is None):
        raise fail("give --height and --width together")
    set_threads(threads)
    cfg = resolve_config(config, set_)
    name = encoder or cfg.model.encoder
    hw = (height, width) if height is not None and width is not None else (cfg.data.height, cfg.data.width)
    try:
        depth_list = None if depths is None else tuple(int(d) for d in depths.split(","))
        enc = build_encoder(name, img_size=hw, depths=depth_list).to(device)
    except (KeyError, ValueError) as e:
        raise fail(str(e).strip("\"'")) from e

    calls_per_module = warmup + iters + 1  # timed + untimed calls, then one pass to feed the next module
    modules = [m for stage in enc.stages for m in (stage.downsample, *stage.blocks)]
    bar = _progress_bar(len(modules) * calls_per_module, f"latency {name}", quiet)
    handles = [m.register_forward_hook(lambda *_: bar.update()) for m in modules]
    try:
        table = measure_encoder_blocks(enc, hw, warmup=warmup, iters=iters)
    finally:
        for h in handles:
            h.remove()
        bar.close()
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
        f"in downsamples (medians of {iters} calls after {warmup} warm-up, batch 1)"
    )
    typer.echo(device_line())
    typer.echo(f"written: {path}")
