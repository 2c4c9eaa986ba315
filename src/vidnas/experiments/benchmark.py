"""Several models of any kind, timed side by side by the ST-NAS FPS protocol: what `vidnas bench` runs.

A model comes from a ``ModelSource``: a checkpoint of any kind (``vidnas.models.load_model``), an architecture file
or a paper Table 1 row (random weights), or the config's own model. Every model is timed **interleaved in one run**
(``vidnas.bench.protocol``), under PyTorch, onnxruntime or OpenVINO (both on an ONNX export of it), PyTorch and
onnxruntime side by side (``both``), or every runtime and precision available here (``all``: the deployment
table, with each row's agreement with PyTorch fp32), so the ratios hold on a noisy machine. Streaming settings
(``--window``, ``--key-interval``) are per-model stream options, never attributes changed on a loaded model.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidnas.bench import BenchRow, cpu_bf16_flags
from vidnas.bench.protocol import protocol_rows
from vidnas.config import Config
from vidnas.data import DataError, VideoFrames, open_source
from vidnas.export.exporter import DeployError
from vidnas.export.ort_streamers import openvino_available, openvino_bf16
from vidnas.export.quantize import DEFAULT_CALIB_FRAMES, calibration_frames, quantize_export
from vidnas.export.runtime import ORT_OPTIONS_NOTE, default_session_options, export_models, open_streamers
from vidnas.metrics import ConfusionMatrix
from vidnas.models import PAPER_ROWS, Arch, arch_from_config, build_model, load_model
from vidnas.models.fastpath import cnn_encoder, compile_parts, use_channels_last
from vidnas.precision import AMP_MODES, autocast

__all__ = [
    "RUNTIMES",
    "BENCH_PRECISIONS",
    "DEPLOY_COLUMNS",
    "DEFAULT_ACCURACY_FRAMES",
    "graph_plan",
    "row_name",
    "BENCH_COLUMNS",
    "BOTH_COLUMNS",
    "ROOFLINE_COLUMNS",
    "AMP_COLUMNS",
    "DEFAULT_CLASSES",
    "ModelSource",
    "BenchModel",
    "parse_sources",
    "build_source",
    "build_sources",
    "onnxruntime_available",
    "run_benchmark",
    "add_ratio_columns",
    "roofline_line",
    "fastpath_line",
    "CHANNELS_LAST_MODES",
    "COMPARE",
    "AGREEMENT_FRAMES",
    "amp_agreement",
    "stream_agreement",
    "COMPILE_BACKENDS",
    "COMPILE_COLUMNS",
    "deployment_agreement",
]

RUNTIMES: tuple[str, ...] = ("torch", "onnxruntime", "openvino", "both", "all")
# precisions of the exported rows: fp32 and int8 exports (int8: `vidnas export --precision int8`'s QDQ graphs), bf16
# = OpenVINO's inference precision on the fp32 export
BENCH_PRECISIONS: tuple[str, ...] = ("fp32", "int8", "bf16")
GRAPH_TAGS = {"onnxruntime": "@ort", "openvino": "@ov"}  # row-name tags of the exported runtimes (both, all)
OV_OPTIONS_NOTE = "openvino: {threads} inference thread(s), CPU plugin, latency hint, no thread pinning"
DEFAULT_ACCURACY_FRAMES = 32  # `--runtime all`: frames streamed through every row for its agreement with fp32
CHANNELS_LAST_MODES: tuple[str, ...] = ("auto", "on", "off")
# fast paths `--compare` measures with and without, interleaved: rows NAME (on) and NAME~off; amp: NAME and NAME@bf16;
# compile: NAME (eager) and NAME@compile (torch.compile of its encoder, decoder, cell: ``compile_parts``)
COMPARE: tuple[str, ...] = ("channels_last", "threads", "ort_options", "amp", "compile")
COMPILE_BACKENDS: tuple[str, ...] = ("inductor", "aot_eager")  # torch.compile's code generator; graph capture only
AGREEMENT_FRAMES = 8  # frames of `--compare amp`'s pixel agreement (float32 against the --amp mode)
BENCH_COLUMNS: tuple[str, ...] = ("name", "window", "params", "gflops", "encoder_ms", "decoder_ms", "latency_ms", "fps")
# both protocols side by side: the paper's (window decode) and the incremental one (inc_*, one decoder step)
BOTH_COLUMNS: tuple[str, ...] = ("name", "window", "params", "gflops", "inc_gflops", "encoder_ms", "decoder_ms",
                                 "inc_decoder_ms", "latency_ms", "inc_latency_ms", "fps", "inc_fps", "inc_speedup")
AMP_COLUMNS: tuple[str, ...] = ("name", "amp", "pixel_agreement", "agreement_miou", "agreement_frames",
                                "agreement_source")  # the accuracy beside `--compare amp`'s speed
COMPILE_COLUMNS: tuple[str, ...] = ("name", "compile", "compile_seconds", "pixel_agreement", "agreement_miou",
                                    "agreement_frames", "agreement_source")  # beside `--compare compile`'s speed
# `--runtime all`: one row per runtime x precision, its speed against PyTorch fp32 and its masks against PyTorch fp32's
DEPLOY_COLUMNS: tuple[str, ...] = ("name", "runtime", "precision", "fps", "x_torch", "inc_fps", "inc_x_torch",
                                   "pixel_agreement", "agreement_miou", "miou", "miou_delta")
ROOFLINE_COLUMNS: tuple[str, ...] = ("name", "gflops", "gflop_s", "roofline", "inc_gflops", "inc_gflop_s",
                                     "inc_roofline")
DEFAULT_CLASSES = 13  # CholecSeg8K, the ST-NAS data set; only the last 1x1x1 conv depends on it


@dataclass(frozen=True)
class ModelSource:
    """Where one benchmarked model comes from.

    Attributes:
        kind: ``checkpoint`` (any model checkpoint), ``arch`` (an arch.json, random weights), ``row`` (a paper
            Table 1 row of ``PAPER_ROWS``, random weights) or ``config`` (the config's model, random weights).
        value: the path or row name ("" for ``config``).
        label: the row's name in the table; None = derived (run directory, file stem, row name, architecture name).
    """

    kind: str
    value: str = ""
    label: str | None = None


@dataclass
class BenchModel:
    """One model ready to time.

    Attributes:
        name: its row name (unique in a run).
        model: the network, in eval mode.
        size: (H, W) it is timed at.
        extra: row entries describing it (source, architecture name, classes...).
        stream_options: keyword arguments of its ``model.stream`` (``window``, ``key_interval``).
        cfg: the config it was built from (a checkpoint's own; ``data``: where INT8 calibration frames come from).
    """

    name: str
    model: nn.Module
    size: tuple[int, int]
    extra: dict[str, Any] = field(default_factory=dict)
    stream_options: dict[str, Any] = field(default_factory=dict)
    cfg: Config | None = None


def _split_label(value: str) -> tuple[str | None, str]:
    # "fast=runs/a/best.pt" names the row; a plain path (which may itself contain '=' after a '/') does not
    head, sep, tail = value.partition("=")
    if sep and head and "/" not in head and tail:
        return head, tail
    return None, value


def parse_sources(
    checkpoints: Sequence[str] | None, archs: Sequence[str] | None, rows: Sequence[str] | None
) -> list[ModelSource]:
    """Sources in command-line group order (checkpoints, arch files, paper rows); ``row`` ``all`` = every paper row.

    Raises:
        ValueError: an unknown paper row name (the message lists the valid ones).
    """
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


def _checkpoint_name(path: Path) -> str:
    # a checkpoint is named after its run directory (runs/<run>/checkpoints/best.pt): two trainings of the same
    # architecture differ there, not in the architecture's name; a cell model (runs/<search>/top/cell0/model.pt)
    # after its cell
    if path.parent.name == "checkpoints":
        return path.parent.parent.name
    if path.stem == "model":
        return path.parent.name
    return path.stem


def build_source(
    src: ModelSource,
    cfg: Config,
    *,
    hw: tuple[int, int] | None,
    window: int | None,
    num_classes: int,
    device: str = "cpu",
    key_interval: int | None = None,
    channels_last: str = "auto",
) -> BenchModel:
    """Build one source's model in eval mode.

    Args:
        src: the source.
        cfg: resolved config (image size, encoder weights and the model of a ``config`` source).
        hw: (H, W) to build and time at; None = the checkpoint's own size, else ``cfg.data``.
        window: frames decoded per pushed frame; None = the model's own (architecture, checkpoint or config).
        num_classes: K of models built with random weights (checkpoints keep their own).
        device: torch device.
        key_interval: dynamic-cell checkpoints: static network every ``key_interval`` frames (others ignore it).
        channels_last: ``auto`` / ``on``: a CNN encoder runs channels-last (``vidnas.models.fastpath``; Swin is left
            alone), ``off``: never. Recorded as the row's ``channels_last``.

    Raises:
        ValueError, OSError: unreadable file, invalid architecture, unknown row.
    """
    if channels_last not in CHANNELS_LAST_MODES:
        raise ValueError(f"unknown channels_last mode {channels_last!r}; valid: {', '.join(CHANNELS_LAST_MODES)}")
    extra: dict[str, Any] = {"source": src.kind if src.kind == "config" else f"{src.kind}:{src.value}"}
    options: dict[str, Any] = {} if window is None else {"window": int(window)}
    if src.kind == "checkpoint":
        loaded = load_model(src.value, device=device, img_size=hw)
        model, size, model_cfg = loaded.model, loaded.img_size, loaded.cfg
        name = src.label or _checkpoint_name(Path(src.value))
        if loaded.kind == "cell":
            extra["key_interval"] = key_interval
            if key_interval is not None:
                options["key_interval"] = int(key_interval)
        extra["arch"] = loaded.name or None
        extra["num_classes"] = loaded.num_classes
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
        # the model follows the architecture's window; matching data.window avoids build_model's mismatch warning
        data = dataclasses.replace(cfg.data, height=size[0], width=size[1], window=arch.window)
        model_cfg = dataclasses.replace(cfg, data=data)
        model = build_model(model_cfg, arch, num_classes=num_classes).to(device).eval()
        extra["num_classes"] = num_classes
    extra["channels_last"] = use_channels_last(model) if channels_last != "off" else False
    return BenchModel(name=name, model=model, size=(int(size[0]), int(size[1])), extra=extra, stream_options=options,
                      cfg=model_cfg)


def build_sources(sources: Sequence[ModelSource], cfg: Config, **kwargs: Any) -> list[BenchModel]:
    """``build_source`` for each source, with unique row names (``name``, ``name-2``...)."""
    taken: set[str] = set()
    out = []
    for src in sources:
        bm = build_source(src, cfg, **kwargs)
        name, i = bm.name, 2
        while name in taken:
            name, i = f"{bm.name}-{i}", i + 1
        taken.add(name)
        bm.name = name
        out.append(bm)
    return out


def onnxruntime_available() -> bool:
    """Whether onnxruntime runs can be made: onnx and onnxruntime are importable."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _compiled(bm: BenchModel, backend: str, batch: int) -> BenchModel:
    """A deep copy of ``bm`` with its parts compiled (``compile_parts``), compiled now by streaming a few frames of
    ``batch`` at its size (the time that takes, ``compile_seconds``, is in the row)."""
    model = copy.deepcopy(bm.model).eval()
    parts = compile_parts(model, backend)
    device = next(iter(model.parameters())).device
    frame = torch.randn(batch, 3, *bm.size, generator=torch.Generator().manual_seed(0)).to(device)  # (B, 3, H, W)
    t0 = time.perf_counter()
    with torch.inference_mode():
        streamer = model.stream(batch_size=batch, **bm.stream_options)
        for _ in range(int(streamer.lag) + 2):  # the first decode and one steady-state push
            streamer.push(frame)
        streamer.reset()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return dataclasses.replace(bm, name=f"{bm.name}@compile", model=model, extra={
        **bm.extra, "compile": backend, "compiled_parts": parts, "compile_seconds": time.perf_counter() - t0})


def graph_plan(runtime: str, precisions: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """The exported rows of ``runtime``: (graph runtime, precision) pairs.

    ``onnxruntime`` / ``openvino``: that runtime at each of ``precisions`` (default fp32; bf16 is OpenVINO's only);
    ``both``: onnxruntime at each; ``torch``: none; ``all``: what this machine has, ``precisions`` ignored:
    onnxruntime fp32 and int8 (when onnx and onnxruntime are installed), OpenVINO fp32 and int8 and, on a CPU it
    computes bf16 on, bf16 (when openvino is installed).

    Raises:
        ValueError: an unknown runtime or precision, bf16 for onnxruntime, a repeated precision.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return []
    if runtime == "all":
        plan = [("onnxruntime", p) for p in ("fp32", "int8")] if onnxruntime_available() else []
        if openvino_available():
            plan += [("openvino", p) for p in ("fp32", "int8", *(["bf16"] if openvino_bf16() else []))]
        return plan
    precisions = list(precisions or ["fp32"])
    bad = [p for p in precisions if p not in BENCH_PRECISIONS]
    if bad or len(set(precisions)) < len(precisions):
        raise ValueError(f"precisions {', '.join(precisions)}: give each of {', '.join(BENCH_PRECISIONS)} at most once")
    graph = "openvino" if runtime == "openvino" else "onnxruntime"
    if graph == "onnxruntime" and "bf16" in precisions:
        raise ValueError("bf16 rows are OpenVINO's inference precision: --runtime openvino or all (PyTorch bf16: "
                         "--amp bf16 or --compare amp)")
    return [(graph, p) for p in precisions]


def row_name(base: str, runtime: str, graph: str | None = None, precision: str = "fp32") -> str:
    """A row's name: ``base`` for the PyTorch fp32 row, ``base@bf16`` for PyTorch bf16 (``all``); exported rows
    ``base[@ort|@ov][@int8|@bf16]``, the runtime tag only with ``both`` / ``all``."""
    tag = GRAPH_TAGS[graph] if graph is not None and runtime in ("both", "all") else ""
    return f"{base}{tag}{'' if precision == 'fp32' else '@' + precision}"


def _variants(models: Sequence[BenchModel], compare: str | None, thread_counts: Sequence[int], amp: str = "bf16",
              compile_backend: str = "inductor", batch: int = 1) -> tuple[list[BenchModel], dict[str, int]]:
    """The models to time for ``compare``: each model with and without the fast path (rows NAME and NAME~off), at
    each thread count (rows NAME@Nt), in float32 and under ``amp`` (rows NAME and NAME@amp, one module), or eager and
    compiled (rows NAME and NAME@compile, two modules of the same weights); name -> torch threads for ``threads``."""
    if compare in (None, "ort_options"):
        return list(models), {}
    out: list[BenchModel] = []
    threads: dict[str, int] = {}
    for bm in models:
        if compare == "amp":
            out += [dataclasses.replace(bm, extra={**bm.extra, "amp": "none"}),
                    dataclasses.replace(bm, name=f"{bm.name}@{amp}", extra={**bm.extra, "amp": amp})]
        elif compare == "compile":
            out += [dataclasses.replace(bm, extra={**bm.extra, "compile": "none"}),
                    _compiled(bm, compile_backend, batch)]
        elif compare == "channels_last":
            out.append(bm)
            if cnn_encoder(bm.model) is not None:
                plain = copy.deepcopy(bm.model)
                use_channels_last(plain, False)
                out.append(dataclasses.replace(bm, name=f"{bm.name}~off", model=plain,
                                               extra={**bm.extra, "channels_last": False}))
        elif compare == "threads":
            for n in thread_counts:
                name = f"{bm.name}@{n}t"
                out.append(dataclasses.replace(bm, name=name, extra={**bm.extra, "threads_variant": n}))
                threads[name] = int(n)
        else:
            raise ValueError(f"unknown --compare {compare!r}; valid: {', '.join(COMPARE)}")
    return out, threads


def run_benchmark(
    models: Sequence[BenchModel],
    *,
    runtime: str = "torch",
    frames: int,
    warmup: int,
    flops: bool = True,
    threads: int | None = None,
    progress: Callable[[], Any] | None = None,
    amp: str = "none",
    incremental: bool = True,
    ceiling: int | None = None,
    compare: str | None = None,
    thread_counts: Sequence[int] | None = None,
    precisions: Sequence[str] = ("fp32",),
    calib_frames: int = DEFAULT_CALIB_FRAMES,
    agreement_frames: int = AGREEMENT_FRAMES,
    batch: int = 1,
    compile_backend: str = "inductor",
    accuracy_frames: int = DEFAULT_ACCURACY_FRAMES,
) -> list[BenchRow]:
    """Time ``models`` interleaved under ``runtime`` (``RUNTIMES``), one row per model and runtime x precision.

    With onnxruntime each model is exported to a temporary directory first; with ``both`` its ``NAME@ort`` row sits
    beside its PyTorch row in the same interleaved run. With ``incremental`` every row also gets the incremental
    protocol's ``inc_*`` columns, measured in the same rounds (PyTorch: ``model.stream(incremental=True)``;
    onnxruntime: the ``decoder_step.onnx`` graph). ``ceiling``: the roofline's matmul size (``protocol_rows``).

    ``compare`` times a fast path on and off in the same rounds: ``channels_last`` (rows NAME and NAME~off for models
    with a CNN encoder), ``threads`` (rows NAME@Nt for each of ``thread_counts``, default 1 and every core; the
    onnxruntime sessions get the same counts), ``ort_options`` (onnxruntime rows with ``quiet_session_options``, the
    default, and NAME~off with onnxruntime's own defaults), ``amp`` (PyTorch rows NAME in float32 and NAME@AMP under
    ``amp``, ``bf16`` when ``amp`` is ``none``; the NAME@AMP row gets ``amp_agreement`` over ``agreement_frames``
    frames: ``pixel_agreement``, ``agreement_miou``, ``agreement_frames``, ``agreement_source``), ``compile``
    (PyTorch rows NAME eager and NAME@compile, a copy whose encoder, decoder and cell are ``torch.compile``d with
    ``compile_backend``, compiled before the timing: ``compile_seconds``; the same agreement columns, against the
    eager masks). Without it ``amp`` applies to every PyTorch row. ``batch``: frames per push of the PyTorch rows
    (``protocol_rows``; times per frame). Row extras: ``runtime``, ``precision`` plus what ``protocol_rows`` adds.

    ``precisions``: the exported rows' precisions (``graph_plan``: fp32, int8, and bf16 for OpenVINO); an ``int8``
    export is quantised as ``vidnas export --precision int8`` does (``vidnas.export.quantize``; ``calib_frames``
    frames of each model's training split), its rows named NAME@int8 (NAME@ort@int8 with ``both``). Each model is
    exported once per export precision (fp32, int8) into a temporary directory, deleted at the end, and every
    runtime's streamers open that export.

    ``all`` (``compare`` and ``amp`` must be left out): PyTorch fp32 (row NAME), PyTorch bf16 autocast where the CPU
    has native bf16 (NAME@bf16), and every exported row of ``graph_plan("all")`` (NAME@ort, NAME@ort@int8, NAME@ov,
    NAME@ov@int8, NAME@ov@bf16), all in the same rounds; each row then gets ``x_torch`` / ``inc_x_torch`` (its FPS
    over the PyTorch fp32 row's, per protocol) and ``deployment_agreement`` over ``accuracy_frames`` frames. A
    runtime that refuses one model's export (OpenVINO cannot compile onnxruntime's INT8 Swin encoder) leaves that row
    out; the PyTorch fp32 row lists it under ``left_out``, with the reason.

    Raises:
        ValueError: unknown runtime or comparison, or a model onnxruntime cannot take (the message names it).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    if compare == "ort_options" and runtime not in ("onnxruntime", "both"):
        raise ValueError("--compare ort_options needs --runtime onnxruntime or both")
    if runtime == "all" and (compare is not None or amp != "none"):
        raise ValueError("--runtime all times every runtime and precision itself: no --compare, no --amp")
    if amp not in AMP_MODES:
        raise ValueError(f"unknown amp {amp!r}; valid: {', '.join(AMP_MODES)}")
    if compare == "amp" and runtime != "torch":
        raise ValueError("--compare amp times PyTorch rows: it needs --runtime torch")
    if compare == "amp" and amp == "none":
        amp = "bf16"
    if compare == "compile" and runtime != "torch":
        raise ValueError("--compare compile times PyTorch rows: it needs --runtime torch")
    if compile_backend not in COMPILE_BACKENDS:
        raise ValueError(f"unknown compile backend {compile_backend!r}; valid: {', '.join(COMPILE_BACKENDS)}")
    if batch < 1 or (batch > 1 and runtime != "torch"):
        raise ValueError(f"batch {batch}: must be >= 1, and above 1 only with --runtime torch (onnxruntime streams "
                         "batch 1)")
    if runtime != "all" and (not precisions or any(p != "fp32" for p in precisions)) and (
            runtime == "torch" or compare is not None):
        raise ValueError("--precision int8 / bf16 times exported models: it needs --runtime onnxruntime, openvino or "
                         "both, and no --compare")
    plan = graph_plan(runtime, precisions)
    counts = list(thread_counts or sorted({1, os.cpu_count() or 1}))
    nthreads = threads or torch.get_num_threads()
    torch_bf16 = runtime == "all" and bool(cpu_bf16_flags())  # emulated bf16 is no deployment option
    variants, torch_threads = _variants(models, "amp" if torch_bf16 else compare, counts,
                                        "bf16" if torch_bf16 else amp, compile_backend, batch)
    candidates: dict[str, Any] = {}
    sizes: dict[str, tuple[int, int]] = {}
    extras: dict[str, dict[str, Any]] = {}
    options: dict[str, dict[str, Any]] = {}
    cost_models: dict[str, nn.Module] = {}
    inc: dict[str, Any] = {}
    amps: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="vidnas-bench-") as tmp:
        exports: dict[str, dict[str, Path]] = {}  # export precision (fp32, int8) -> model name -> its export

        def exported(prec: str) -> dict[str, Path]:
            key = "int8" if prec == "int8" else "fp32"  # bf16 is OpenVINO's hint on the fp32 export
            if key not in exports:
                exports[key] = export_models(models, Path(tmp) / key, incremental=incremental, prepare=(
                    (lambda bm, path: quantize_export(path, bm.cfg, calib_frames=calib_frames))
                    if key == "int8" else None))
            return exports[key]

        def note(graph: str, n: int) -> str:
            return (ORT_OPTIONS_NOTE if graph == "onnxruntime" else OV_OPTIONS_NOTE).format(threads=n)

        # exported rows: one streamer set per runtime x precision, thread count (--compare threads) or option set
        # (ort_options); (name suffix, streamers, steps, note, precision, graph runtime)
        sets: list[tuple[str, dict[str, Any], dict[str, Any], str, str, str]] = []
        left_out: dict[str, list[str]] = {bm.name: [] for bm in models}  # `all`: rows a runtime refused, and why

        def opened(graph: str, prec: str, n: int) -> tuple[dict[str, Any], dict[str, Any]]:
            hint = "bf16" if prec == "bf16" else "fp32"
            if runtime != "all":
                return open_streamers(models, exported(prec), n, incremental=incremental, runtime=graph,
                                      inference_precision=hint)
            streamers: dict[str, Any] = {}
            steps: dict[str, Any] = {}
            for bm in models:  # one model's refusal (OpenVINO and a quantised Swin) leaves the others' rows in
                try:
                    one, one_steps = open_streamers([bm], exported(prec), n, incremental=incremental, runtime=graph,
                                                    inference_precision=hint)
                except DeployError as e:  # its message starts with the model's name; the row's replaces it
                    why = str(e).removeprefix(f"{bm.name}: ")
                    left_out[bm.name].append(f"{row_name(bm.name, runtime, graph, prec)}: {why}")
                    continue
                streamers.update(one)
                steps.update(one_steps)
            return streamers, steps

        for graph, prec in plan:
            for n in (counts if compare == "threads" else [nthreads]):
                streamers, steps = opened(graph, prec, n)
                suffix = f"@{n}t" if compare == "threads" else ""
                sets.append((suffix, streamers, steps, note(graph, n), prec, graph))
            if compare == "ort_options" and graph == "onnxruntime":
                sets.append(("~off", *open_streamers(models, exported(prec), nthreads, incremental=incremental,
                                                     session_options=default_session_options(nthreads)),
                             f"onnxruntime defaults, {nthreads} intra-op thread(s)", prec, graph))
        for bm in variants:
            # every runtime of one model side by side, so their ratio is measured under the same machine load
            if runtime in ("torch", "both", "all"):
                candidates[bm.name], sizes[bm.name] = bm.model, bm.size
                mode = bm.extra["amp"] if compare == "amp" or torch_bf16 else amp
                amps[bm.name] = mode
                extras[bm.name] = {**bm.extra, "runtime": "torch", "precision": "fp32" if mode == "none" else mode}
                options[bm.name] = bm.stream_options
                inc[bm.name] = incremental
        for base in models:
            for suffix, streamers, steps, graph_note, prec, graph in sets:
                if base.name not in streamers:
                    continue
                name = row_name(base.name, runtime, graph, prec) + suffix
                candidates[name], sizes[name] = streamers[base.name], base.size
                extras[name] = {**base.extra, "runtime": graph, "channels_last": False, "precision": prec,
                                "ort_options" if graph == "onnxruntime" else "ov_options": graph_note}
                cost_models[name] = base.model
                inc[name] = steps.get(base.name)
        rows = protocol_rows(candidates, img_size=sizes, warmup=warmup, frames=frames, flops=flops, extra=extras,
                             cost_models=cost_models, progress=progress, stream_options=options, amp=amps,
                             incremental=inc if incremental else False, ceiling=ceiling, threads=torch_threads,
                             batch=batch)
        if runtime == "all":  # the streamers are still open: their masks against PyTorch fp32's
            by_name = {r.name: r for r in rows}
            for bm in models:
                names = [f"{bm.name}@bf16"] * torch_bf16 + [row_name(bm.name, runtime, g, p) for g, p in plan]
                names = [n for n in names if n in by_name]
                by_name[bm.name].extra["left_out"] = left_out[bm.name]
                _speed_ratios(by_name[bm.name], [by_name[bm.name], *(by_name[n] for n in names)])
                runners = {n: (bm.model, amps[n]) if n in amps else (candidates[n], None) for n in names}
                for name, result in deployment_agreement(bm, runners, frames=accuracy_frames).items():
                    by_name[name].extra.update(result)
    by_name = {r.name: r for r in rows}
    if compare == "amp":
        for bm in models:
            by_name[f"{bm.name}@{amp}"].extra.update(amp_agreement(bm, amp, frames=agreement_frames))
    if compare == "compile":
        compiled = {v.name: v for v in variants}
        for bm in models:
            by_name[f"{bm.name}@compile"].extra.update(
                stream_agreement(bm, compiled[f"{bm.name}@compile"], frames=agreement_frames))
    return rows


Video = list[tuple[np.ndarray, "np.ndarray | None"]]  # one video: frames (1, 3, H, W) float32, labels (H, W) or None


def _agreement_inputs(bm: BenchModel, frames: int) -> tuple[list[Video], str]:
    """``frames`` images (1, 3, H, W) of the model's training split (``calibration_frames``, seeded), or seeded
    random ones where its data set cannot be read, as one unlabelled video; and where they came from."""
    if bm.cfg is not None and (int(bm.cfg.data.height), int(bm.cfg.data.width)) == bm.size:
        try:
            images = calibration_frames(bm.cfg, frames)
            return [[(x, None) for x in images]], f"{bm.cfg.data.format}:{bm.cfg.data.train_split}"
        except (DataError, DeployError, OSError):
            pass
    gen = torch.Generator().manual_seed(0)
    return [[(torch.randn(1, 3, *bm.size, generator=gen).numpy(), None) for _ in range(frames)]], "random"


def _validation_videos(bm: BenchModel, frames: int) -> tuple[list[Video], str, int | None]:
    """The first ``frames`` frames of the model's validation split (``cfg.data.val_split``), video by video, with
    their labels (None on unannotated frames), preprocessed as in evaluation; where they are unreadable, empty or
    of another size than the model's, ``_agreement_inputs``' unlabelled frames. Also where they came from and the
    labels' ignore index."""
    if bm.cfg is not None and (int(bm.cfg.data.height), int(bm.cfg.data.width)) == bm.size:
        try:
            source = open_source(bm.cfg.data)
            videos: list[Video] = []
            seen = 0
            for video in source.videos(bm.cfg.data.val_split):
                if seen >= frames:
                    break
                clip: Video = []
                for img, mask, _ in VideoFrames(source, video, bm.cfg.data):
                    if seen >= frames:
                        break
                    clip.append((img[None].numpy(), None if mask is None else mask.numpy()))
                    seen += 1
                videos.append(clip)
            if seen:
                return videos, f"{bm.cfg.data.format}:{bm.cfg.data.val_split}", source.ignore_index
        except (DataError, OSError):
            pass
    videos, where = _agreement_inputs(bm, frames)
    return videos, where, None


def _stream_masks(bm: BenchModel, runner: Any, amp: str, videos: Sequence[Video]) -> list[np.ndarray]:
    """The argmax masks (H, W) of every frame of ``videos``, each video streamed from its start: through
    ``model.stream`` (the row's stream options) under ``autocast(amp)`` when ``runner`` is a module, else through
    ``runner``, a numpy streamer (onnxruntime, OpenVINO), reset first."""
    masks: list[np.ndarray] = []
    if isinstance(runner, nn.Module):
        device = next(iter(runner.parameters())).device
        with torch.inference_mode(), autocast(device, amp):
            for video in videos:
                streamer = runner.stream(batch_size=1, **bm.stream_options)
                outs = [streamer.push(torch.from_numpy(x).to(device)) for x, _ in video] + streamer.flush()
                masks += [o.float().argmax(1)[0].cpu().numpy() for o in outs if o is not None]
        return masks
    for video in videos:
        runner.reset()
        outs = [runner.push(x) for x, _ in video] + runner.flush()
        masks += [o.argmax(1)[0] for o in outs if o is not None]
    return masks


def _agreement(ref: Sequence[np.ndarray], masks: Sequence[np.ndarray], k: int) -> dict[str, Any]:
    """``pixel_agreement`` (share of pixels whose argmax equals ``ref``'s) and ``agreement_miou`` (``masks`` scored
    against ``ref`` as labels, mean IoU over the classes present in either)."""
    cm = ConfusionMatrix(k, None)
    equal = total = 0
    for a, b in zip(ref, masks, strict=True):
        cm.update(b, a)
        equal += int((a == b).sum())
        total += a.size
    return {"pixel_agreement": equal / max(total, 1), "agreement_miou": float(cm.compute()["miou"])}


def stream_agreement(bm: BenchModel, other: BenchModel, *, frames: int = AGREEMENT_FRAMES) -> dict[str, Any]:
    """How far ``other`` (e.g. the compiled copy of ``bm``) moves ``bm``'s masks: the same ``frames`` images streamed
    through both (``amp_agreement``'s images and columns, ``bm``'s masks the reference)."""
    videos, where = _agreement_inputs(bm, frames)
    ref, masks = _stream_masks(bm, bm.model, "none", videos), _stream_masks(other, other.model, "none", videos)
    return {**_agreement(ref, masks, int(bm.model.num_classes)), "agreement_frames": len(masks),
            "agreement_source": where}


def amp_agreement(bm: BenchModel, amp: str, *, frames: int = AGREEMENT_FRAMES) -> dict[str, Any]:
    """How far ``amp`` moves the model's masks: ``frames`` images streamed through ``model.stream`` (the row's stream
    options) in float32 and under ``torch.autocast`` (logits back to float32 before the argmax).

    Returns:
        ``pixel_agreement`` (share of pixels whose argmax is equal), ``agreement_miou`` (the ``amp`` masks scored
        against the float32 masks as labels, mean IoU over the classes present in either), ``agreement_frames`` and
        ``agreement_source`` (``format:split`` of the images, or ``random`` where the data set cannot be read).
    """
    videos, where = _agreement_inputs(bm, frames)
    ref, masks = (_stream_masks(bm, bm.model, mode, videos) for mode in ("none", amp))
    return {**_agreement(ref, masks, int(bm.model.num_classes)), "agreement_frames": len(masks),
            "agreement_source": where}


def deployment_agreement(bm: BenchModel, runners: dict[str, tuple[Any, str | None]], *,
                         frames: int = DEFAULT_ACCURACY_FRAMES) -> dict[str, dict[str, Any]]:
    """Every deployment of one model against its PyTorch fp32 masks, on the same ``frames`` frames
    (``_validation_videos``: the validation split with its labels where it can be read, else unlabelled frames).

    Args:
        bm: the model (its fp32 ``model.stream`` is the reference).
        runners: row name -> (``bm.model`` and an amp mode) or (a numpy streamer, None).
        frames: frames streamed through each.

    Returns:
        row name -> ``pixel_agreement``, ``agreement_miou`` (``_agreement``), ``agreement_frames``,
        ``agreement_source``, and on labelled frames ``miou`` (against the labels) and ``miou_delta`` = 100 x (its
        mIoU - fp32's), in points; the reference row ``bm.name`` gets its own ``miou`` (None without labels).
    """
    videos, where, ignore = _validation_videos(bm, frames)
    k = int(bm.model.num_classes)
    labels = [m for video in videos for _, m in video]
    labelled = any(m is not None for m in labels)

    def miou(masks: Sequence[np.ndarray]) -> float:
        cm = ConfusionMatrix(k, ignore)
        for p, m in zip(masks, labels, strict=True):
            if m is not None:
                cm.update(p, m)
        return float(cm.compute()["miou"])

    ref = _stream_masks(bm, bm.model, "none", videos)
    ref_miou = miou(ref) if labelled else None
    out: dict[str, dict[str, Any]] = {bm.name: {"agreement_frames": len(ref), "agreement_source": where,
                                                "miou": ref_miou}}
    for name, (runner, amp) in runners.items():
        masks = _stream_masks(bm, runner, amp or "none", videos)
        out[name] = {**_agreement(ref, masks, k), "agreement_frames": len(masks), "agreement_source": where}
        if ref_miou is not None:
            row_miou = miou(masks)
            out[name].update(miou=row_miou, miou_delta=100.0 * (row_miou - ref_miou))
    return out


def _speed_ratios(ref: BenchRow, rows: Sequence[BenchRow]) -> None:
    """``x_torch`` = FPS / ``ref``'s FPS and ``inc_x_torch`` = incremental FPS / ``ref``'s incremental FPS (None where
    either is missing), on every row (in place)."""
    for r in rows:
        inc, ref_inc = r.extra.get("inc_fps"), ref.extra.get("inc_fps")
        r.extra["x_torch"] = r.fps / ref.fps if r.fps and ref.fps else None
        r.extra["inc_x_torch"] = inc / ref_inc if inc and ref_inc else None


def add_ratio_columns(rows: Sequence[BenchRow], ref: str) -> list[BenchRow]:
    """Add ``fps_ratio`` (FPS / the paper-protocol FPS of row ``ref``) and ``inc_fps_ratio`` (incremental FPS / the
    same paper-protocol FPS) to every row (in place; None where a value is missing).

    Raises:
        ValueError: ``ref`` names no row.
    """
    by_name = {r.name: r for r in rows}
    if ref not in by_name:
        raise ValueError(f"reference row {ref!r} not found; rows: {', '.join(by_name)}")
    base = by_name[ref].fps
    for r in rows:
        inc_fps = r.extra.get("inc_fps")
        r.extra["fps_ratio"] = None if not base or r.fps is None else r.fps / base
        r.extra["inc_fps_ratio"] = None if not base or inc_fps is None else inc_fps / base
        r.extra["ratio_ref"] = ref
    return list(rows)


def roofline_line(rows: Sequence[BenchRow]) -> str | None:
    """One line naming the roofline's ceiling (None when the rows have none)."""
    rate = next((r.extra.get("ceiling_gflop_s") for r in rows if r.extra.get("ceiling_gflop_s")), None)
    if rate is None:
        return None
    size = next(r.extra.get("ceiling_size") for r in rows if r.extra.get("ceiling_gflop_s"))
    threads = rows[0].extra.get("torch_threads")
    return (f"roofline: ceiling = {size}x{size} float32 matmul, {rate:.1f} GFLOP/s with {threads} torch thread(s), "
            f"timed in the same interleaved rounds as the models; gflop_s = GFLOPs per frame / latency, roofline = "
            f"gflop_s / ceiling (GFLOPs count convolutions, matmuls and attention only)")


def fastpath_line(rows: Sequence[BenchRow]) -> str:
    """One line saying which CPU fast paths the rows ran with (the bench report's last word on them)."""
    cl = [r.name for r in rows if r.extra.get("channels_last")]
    threads = sorted({r.extra.get("torch_threads") for r in rows if r.extra.get("runtime") == "torch"} - {None})
    ort = sorted({r.extra[k] for r in rows for k in ("ort_options", "ov_options") if r.extra.get(k)})
    parts = [f"channels_last on for {', '.join(cl)}" if cl else "channels_last off (no CNN encoder, or --channels-last"
             " off)", f"torch threads {', '.join(str(t) for t in threads) or '-'}"]
    parts += ort
    return "fast paths: " + "; ".join(parts)
