"""`vidnas export` (ONNX streaming pair + onnxruntime parity check) and `vidnas predict` (video in, masks out)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from vidnas.cli.common import (
    AmpOpt,
    DeviceOpt,
    OverwriteOpt,
    ThreadsOpt,
    device_overrides,
    fail,
    output_dir,
    set_threads,
    setup_logging,
)

__all__ = ["export_cmd", "predict_cmd"]

CausalOpt = Annotated[
    bool | None,
    typer.Option("--causal/--centred", help="Temporal window: causal or centred (default: as the model was trained)."),
]


def _fmt_size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.2f} MB"


def export_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt) written by `vidnas train` or `vidnas search "
                                               "cells` (top/cellN/model.pt).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory for encoder.onnx, decoder.onnx (causal "
                                      "models also decoder_init.onnx, decoder_step.onnx; cell and arch2 models: "
                                      "key.onnx, cell.onnx), export.json.")],
    opset: Annotated[int | None, typer.Option(help="ONNX opset (>= 17; default 17, or what a cell needs: affine "
                                                   "20, deform3x3 19).")] = None,
    height: Annotated[int | None, typer.Option(help="Input height (default: the training size).")] = None,
    width: Annotated[int | None, typer.Option(help="Input width (default: the training size).")] = None,
    causal: CausalOpt = None,
    parity_frames: Annotated[int, typer.Option("--parity-frames", help="Random frames streamed through PyTorch and "
                                               "onnxruntime for the parity check (0 skips it).")] = 8,
    tol: Annotated[float, typer.Option("--tol", help="Largest accepted |PyTorch - onnxruntime| logit "
                                       "difference; exit 1 above it.")] = 1e-4,
    incremental: Annotated[bool, typer.Option(
        "--incremental/--no-incremental", help="Also write decoder_init.onnx + decoder_step.onnx (one decoder step "
        "per frame, state as explicit inputs/outputs; causal window models).")] = True,
    precision: Annotated[str, typer.Option(
        "--precision", help="fp32 | int8: onnxruntime static quantisation (QDQ, per-channel weights) of the graphs "
        "that take images (key.onnx, encoder.onnx); the graphs that take features stay fp32 | bf16: the fp32 graphs, "
        "deployed with OpenVINO's bf16 precision hint (CPUs with AVX-512 BF16 or AMX; --runtime openvino --amp "
        "bf16). int8 and bf16 check their accuracy against the fp32 model on the validation split.")] = "fp32",
    calib_frames: Annotated[int, typer.Option(
        "--calib-frames", help="int8: calibration frames drawn (seeded) from the model's training split.")] = 32,
    calib_seed: Annotated[int, typer.Option("--calib-seed", help="int8: seed of the calibration draw.")] = 0,
    calib: Annotated[Path | None, typer.Option(
        "--calib", help="int8: calibrate on this video file or frame folder (--calib-frames frames spread evenly "
                        "over it) instead of the model's training split.")] = None,
    keep_float: Annotated[str, typer.Option(
        "--keep-float", help="int8: the parts kept in float: a comma-separated list of stem (the first Conv) and "
                             "head (the classifier's last Conv), or none (every Conv quantised).")] = "stem,head",
    accuracy_frames: Annotated[int, typer.Option(
        "--accuracy-frames", help="int8, bf16: validation frames streamed through the fp32 model and the export for "
                                  "the accuracy check.")] = 64,
    max_miou_drop: Annotated[float, typer.Option(
        "--max-miou-drop", help="int8, bf16: warn when the export loses more than this many mIoU points.")] = 1.0,
    overwrite: OverwriteOpt = False,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Export a checkpoint to ONNX and check it against PyTorch on a stream of random frames.

    Window models: encoder.onnx (per frame) + decoder.onnx (per window); a causal one also gets the incremental
    decoder (decoder_init.onnx, decoder_step.onnx: one decoder time step per frame, the same logits), checked over its
    own stream. arch2 and dynamic-cell models (`vidnas search cells` top/cellN/model.pt): key.onnx (the static
    network) + cell.onnx (encoder + cell, carrying dec and layer4). --out must be new, empty, or an earlier export
    (replaced); any other directory needs --overwrite.

    --precision int8 then quantises key.onnx / encoder.onnx (calibrated on the model's training frames) and checks
    its accuracy against the fp32 model and the labels on the validation split (export.json: accuracy).
    """
    import vidnas.export
    from vidnas.export import DEFAULT_OPSET, PRECISIONS, export_onnx, export_step_graphs
    from vidnas.export.frame_models import export_frame_onnx, is_frame_model, read_frame_meta
    from vidnas.export.quantize import check_int8_data, parse_keep_float
    from vidnas.export.video import open_frames
    from vidnas.models import incremental_support, load_model

    setup_logging()
    if precision not in PRECISIONS:
        raise fail(f"unknown --precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "int8" and min(calib_frames, accuracy_frames) < 1:
        raise fail(f"--calib-frames and --accuracy-frames must be >= 1, got {calib_frames} and {accuracy_frames}")
    if calib is not None and precision != "int8":
        raise fail("--calib calibrates an INT8 export: add --precision int8")
    if precision == "bf16":  # OpenVINO and a CPU that computes in bf16, before any work
        from vidnas.export.ort_streamers import openvino_bf16

        try:
            if not openvino_bf16():
                raise fail("--precision bf16: OpenVINO reports no bf16 on this CPU (it needs AVX-512 BF16 or AMX); "
                           "export --precision fp32 or int8")
        except ValueError as e:  # DeployError: openvino not installed
            raise fail(f"--precision bf16: {e}") from e
        if accuracy_frames < 1:
            raise fail(f"--accuracy-frames must be >= 1, got {accuracy_frames}")
    try:
        float_parts = parse_keep_float(keep_float)
        if calib is not None:  # exists and holds enough frames (a folder's count is exact), before any work
            with open_frames(calib) as reader:
                if reader.kind == "folder" and (reader.num_frames or 0) < calib_frames:
                    raise fail(f"--calib {calib}: {reader.num_frames} frame(s), {calib_frames} calibration frames "
                               "asked: lower --calib-frames")
    except ValueError as e:  # DeployError, VideoError
        raise fail(str(e)) from e
    set_threads(threads)
    if (height is None) != (width is None):
        raise fail("give both --height and --width, or neither")
    if not checkpoint.is_file():
        raise fail(f"checkpoint not found: {checkpoint}")
    img_size = (height, width) if height is not None and width is not None else None
    device_overrides(device)  # checked here: an unknown device or CUDA where there is none fails at once
    output_dir(out, "export", overwrite=overwrite, inputs={"CHECKPOINT": checkpoint}, check_only=True)
    try:  # then the model: an earlier export in --out is replaced only once the checkpoint has loaded
        loaded = load_model(checkpoint, img_size=img_size, causal=causal, device=device or "cpu")
    except ValueError as e:  # CheckpointError
        raise fail(str(e)) from e
    if precision in ("int8", "bf16"):  # the calibration and validation frames exist, before the export
        try:
            check_int8_data(loaded.cfg, 1 if calib is not None or precision == "bf16" else calib_frames)
        except ValueError as e:  # DeployError, DataError
            raise fail(str(e)) from e
    output_dir(out, "export", overwrite=overwrite, inputs={"CHECKPOINT": checkpoint})
    step = None
    try:
        extra = {"checkpoint": str(checkpoint), "palette_source": loaded.palette_source}
        if is_frame_model(loaded.model):  # arch2 / dynamic-cell model: key.onnx (+ cell.onnx)
            fpaths = export_frame_onnx(loaded.model, out, img_size=loaded.img_size, opset=opset,
                                       class_names=loaded.class_names, palette=loaded.palette, extra=extra)
        else:
            paths = export_onnx(loaded.model, out, img_size=loaded.img_size, opset=opset or DEFAULT_OPSET,
                                class_names=loaded.class_names, palette=loaded.palette, extra=extra)
            why_not = incremental_support(loaded.model)
            if incremental and why_not is None:
                step = export_step_graphs(loaded.model, out, opset=opset or DEFAULT_OPSET)
    except ValueError as e:  # DeployError, CheckpointError
        raise fail(str(e)) from e
    model = loaded.model
    if is_frame_model(model):
        typer.echo(f"{loaded.kind} model, input {loaded.img_size[0]}x{loaded.img_size[1]}, {model.num_classes} "
                   f"classes, opset {read_frame_meta(out)['opset']}")
        for p in (fpaths.key, fpaths.cell):
            if p is not None:
                typer.echo(f"wrote {p} ({_fmt_size(p)})")
        typer.echo(f"wrote {fpaths.meta}")
        _parity(model, out, parity_frames, tol, [(None, vidnas.export.parity_check)])
        if precision == "int8":
            _int8(loaded, out, calib_frames, calib_seed, accuracy_frames, max_miou_drop, calib, float_parts)
        elif precision == "bf16":
            _bf16(loaded, out, accuracy_frames, max_miou_drop)
        return
    mode = "causal" if model.causal else "centred"
    typer.echo(f"input {loaded.img_size[0]}x{loaded.img_size[1]}, window {model.window} {mode}, "
               f"{model.num_classes} classes, opset {opset or DEFAULT_OPSET}")
    files = [paths.encoder, paths.decoder]
    if step is not None:
        files += [paths.out_dir / step["init"], paths.out_dir / step["step"]]
    for p in files:
        typer.echo(f"wrote {p} ({_fmt_size(p)})")
    typer.echo(f"wrote {paths.meta}")
    if step is not None:
        typer.echo(f"incremental decoder: {len(step['states'])} state tensors, {step['state_bytes'] / 1e6:.2f} MB; "
                   f"receptive field {step['receptive_field']} frames, window {model.window}")
    elif incremental:
        typer.echo(f"no incremental decoder: {why_not}")
    checks = [("window decode", vidnas.export.parity_check)]
    if step is not None:
        checks.append(("incremental decode", vidnas.export.step_parity_check))
    _parity(model, paths.out_dir, parity_frames, tol, checks)
    if precision == "int8":
        _int8(loaded, out, calib_frames, calib_seed, accuracy_frames, max_miou_drop, calib, float_parts)
    elif precision == "bf16":
        _bf16(loaded, out, accuracy_frames, max_miou_drop)


def _accuracy_lines(acc: dict, label: str, max_drop: float) -> None:
    """Print an accuracy check (``vidnas.export.quantize.accuracy_check``); warn, naming --precision fp32, above
    ``max_drop`` points lost."""
    agree = (f"agreement with fp32: mIoU {acc['agreement_miou']:.4f}, pixels {acc['pixel_agreement']:.4f}")
    if acc["miou_drop_points"] is None:
        typer.echo(f"{label} accuracy over {acc['frames']} {acc['split']!r} frames (no labels): {agree}")
        return
    typer.echo(f"{label} accuracy over {acc['frames']} {acc['split']!r} frames: mIoU {acc[f'miou_{label}']:.4f} "
               f"(fp32 {acc['miou_fp32']:.4f}, drop {acc['miou_drop_points']:.2f} points); {agree}")
    if acc["miou_drop_points"] > max_drop:
        typer.echo(f"WARNING: the {label} export loses {acc['miou_drop_points']:.2f} mIoU points (more than "
                   f"--max-miou-drop {max_drop:g}); export with --precision fp32 to keep full accuracy", err=True)


def _bf16(loaded: object, out: Path, frames: int, max_drop: float) -> None:
    """Mark the fp32 export in ``out`` as a bf16 deployment (``mark_bf16``), check its accuracy in OpenVINO bf16."""
    from vidnas.export import accuracy_check, mark_bf16

    try:
        mark_bf16(out)
        acc = accuracy_check(loaded, out, frames=frames, precision="bf16")
    except ValueError as e:  # DeployError, DataError
        raise fail(str(e)) from e
    typer.echo("bf16: the fp32 graphs, deployed with OpenVINO's bf16 precision hint (`vidnas predict --onnx "
               f"{out} --runtime openvino --amp bf16`)")
    _accuracy_lines(acc, "bf16", max_drop)


def _int8(loaded: object, out: Path, calib_frames: int, seed: int, frames: int, max_drop: float,
          calib: Path | None, keep_float: tuple[str, ...]) -> None:
    """Quantise the fp32 export in ``out`` to INT8 (``vidnas.export.quantize``), check its accuracy, print both; a
    warning naming ``--precision fp32`` when it loses more than ``max_drop`` mIoU points."""
    from vidnas.export import accuracy_check, quantize_export

    try:
        q = quantize_export(out, loaded.cfg, calib_frames=calib_frames, seed=seed, calib=calib,
                            keep_float=keep_float)
        acc = accuracy_check(loaded, out, frames=frames)
    except ValueError as e:  # DeployError, DataError
        raise fail(str(e)) from e
    for name in q["int8_graphs"]:
        typer.echo(f"int8: {out / name} ({_fmt_size(out / name)}), QDQ, per-channel weights; kept in float: "
                   f"{', '.join(q['float_nodes'][name]) or 'nothing'}")
    cal = q["calibration"]
    where = f"of {cal['path']} (spread evenly)" if "path" in cal else f"of the {cal['split']!r} split (seed {seed})"
    typer.echo(f"int8: calibrated on {calib_frames} frames {where}; "
               f"fp32 graphs (they take features): {', '.join(q['fp32_graphs']) or 'none'}")
    _accuracy_lines(acc, "int8", max_drop)


def _parity(model: object, out_dir: Path, frames: int, tol: float, checks: list) -> None:
    """Stream ``frames`` random frames through PyTorch and onnxruntime with each ``(name, check)``; exit 1 above
    ``tol``."""
    from vidnas.export import DeployError

    if frames <= 0:
        typer.echo("parity check skipped")
        return
    failed = False
    for what, check in checks:
        try:
            diff = check(model, out_dir, frames=frames)
        except DeployError as e:
            raise fail(f"parity check failed: {e}", code=1) from e
        ok = diff <= tol
        failed |= not ok
        label = "parity" if what is None else f"parity ({what})"
        typer.echo(f"{label} over {frames} streamed frames: max |torch - onnxruntime| logit "
                   f"difference {diff:.3g} ({'OK' if ok else 'FAILED'}, tolerance {tol:g})")
    if failed:
        raise typer.Exit(1)


def predict_cmd(
    input: Annotated[Path, typer.Argument(help="Video file (mp4, avi, mov, mkv, ...) or folder of *.png / *.jpg "
                                          "frames.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (masks/, overlay.mp4, summary.json).")],
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", "-m", help="Checkpoint (.pt) written by "
                                                       "`vidnas train`.")] = None,
    runtime: Annotated[str, typer.Option(help="torch (eager), onnxruntime or openvino (both run the ONNX export: "
                                         "they export to OUT/onnx first, or use --onnx; openvino needs the extra "
                                         "vidnas[openvino]).")] = "torch",
    onnx_dir: Annotated[Path | None, typer.Option("--onnx", help="Existing `vidnas export` directory, fp32 or int8 "
                                                     "(onnxruntime or openvino without --checkpoint).")] = None,
    causal: CausalOpt = None,
    max_frames: Annotated[int | None, typer.Option("--max-frames", help="Stop after N frames.")] = None,
    fps: Annotated[float | None, typer.Option(help="Overlay frame rate (default: the input video's; "
                                                 "25 for folders).")] = None,
    no_overlay: Annotated[bool, typer.Option("--no-overlay", help="Do not write overlay.mp4.")] = False,
    key_interval: Annotated[int | None, typer.Option(  # noqa: UP007, UP045
        "--key-interval", help="Dynamic-cell models (torch or onnxruntime): re-run the static network every N frames "
        "(default: only on the first frame).")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads of the model and the frame resizing (default: the "
                                                            "cores the load average leaves free, minus one for the "
                                                            "reader and writer threads; at least 1).")] = None,
    incremental: Annotated[bool | None, typer.Option(
        "--incremental/--window-decode", help="Decode one time step per frame (default for causal window models; "
        "onnxruntime: decoder_step.onnx) or the whole window per frame (the paper's protocol). Same masks.")] = None,
    channels_last: Annotated[bool, typer.Option(
        "--channels-last/--no-channels-last", help="torch runtime: run a CNN encoder (MobileNetV2, EfficientNet-Lite0)"
        " in the channels-last memory format (faster on this CPU; same masks).")] = True,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = None,
    amp: AmpOpt = "none",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Segment a video or frame folder frame by frame: masks/*.png, overlay.mp4 and summary.json, FPS shown.

    --out must be new, empty or an earlier prediction (whose own files, listed in its vidnas_predict.json, are
    replaced); a directory holding anything else, or laid out like a data set, is refused.
    """
    from tqdm.auto import tqdm

    from vidnas.bench import amp_note
    from vidnas.export import RUNTIMES, DeployError, VideoError, load_runner, open_frames, predict_video
    from vidnas.export.ort_streamers import require_openvino
    from vidnas.rundir import is_unused_dir

    setup_logging()
    if runtime not in RUNTIMES:
        raise fail(f"unknown runtime {runtime!r}; valid runtimes: {', '.join(RUNTIMES)}")
    if runtime == "openvino":
        try:
            require_openvino()
        except DeployError as e:
            raise fail(str(e)) from e
    if checkpoint is None and not (runtime != "torch" and onnx_dir is not None):
        raise fail("--checkpoint is required (or --runtime onnxruntime|openvino --onnx EXPORT_DIR)")
    if checkpoint is not None and not checkpoint.is_file():
        raise fail(f"checkpoint not found: {checkpoint}")
    if max_frames is not None and max_frames < 1:
        raise fail("--max-frames must be >= 1")
    device_overrides(device, amp)  # checked before any work
    if runtime == "onnxruntime" and (device not in (None, "cpu") or amp != "none"):
        raise fail("--device and --amp apply to the torch runtime (onnxruntime runs the exported graphs on its CPU "
                   "provider)")
    if runtime == "openvino" and (device not in (None, "cpu") or amp not in ("none", "bf16")):
        raise fail("the openvino runtime runs the exported graphs on the CPU, in fp32 or with --amp bf16")
    try:  # open the input first: a bad video should fail before the model is built
        with open_frames(input) as reader:
            total = reader.num_frames
    except VideoError as e:
        raise fail(str(e)) from e
    if out.resolve() == input.resolve() or (input.is_dir() and input.resolve() in out.resolve().parents):
        raise fail(f"--out {out} is inside the input {input}: choose a directory outside the data")
    if onnx_dir is not None and checkpoint is not None:  # predict exports into --onnx: only a folder of its own
        if onnx_dir.is_dir() and not is_unused_dir(onnx_dir):
            what = "an export" if (onnx_dir / "export.json").is_file() else "other files"
            raise fail(f"--onnx {onnx_dir} holds {what}, and with --checkpoint predict would export {checkpoint} "
                       "into it: predict never writes into an export it did not make; drop --checkpoint to run "
                       f"that export, or drop --onnx (the model is exported into {out / 'onnx'})")
    inputs = {"--checkpoint": checkpoint, "--onnx": onnx_dir, "INPUT": input}
    output_dir(out, "predict", overwrite=overwrite, inputs=inputs, check_only=True)  # before any work
    if threads is None:
        from vidnas.bench import auto_threads

        threads = auto_threads(reserve=1)
    set_threads(threads)  # torch also resizes every frame, whichever runtime runs the model
    export_dir = onnx_dir if onnx_dir is not None else (out / "onnx" if runtime != "torch" else None)
    exports = runtime != "torch" and checkpoint is not None  # writes an export (into OUT/onnx or --onnx)
    if exports:
        output_dir(out, "predict", overwrite=overwrite, inputs=inputs)
        if onnx_dir is not None:
            output_dir(onnx_dir, "export", option="--onnx")
    try:  # the model first (when that writes nothing): an earlier prediction is replaced only once it has loaded
        runner = load_runner(checkpoint, runtime=runtime, causal=causal, export_dir=export_dir,
                             intra_op_threads=threads, key_interval=key_interval, device=device or "cpu", amp=amp,
                             incremental=incremental, channels_last=channels_last)
    except ValueError as e:  # DeployError, CheckpointError
        raise fail(str(e)) from e
    if not exports:
        output_dir(out, "predict", overwrite=overwrite, inputs=inputs)
    if max_frames is not None:
        total = min(total, max_frames) if total else max_frames
    decode = {"incremental": "one decoder step per frame", "window": "window decode per frame",
              "frame": "frame model"}.get(runner.protocol, "")
    typer.echo(f"{input}: model {runner.input_size[0]}x{runner.input_size[1]}, window {runner.window} "
               f"{'causal' if runner.causal else 'centred'}, runtime {runtime} ({decode}), {threads} thread(s)"
               f"{', channels-last encoder' if getattr(runner, 'channels_last', False) else ''}"
               f"{'' if amp == 'none' else f', {amp} ' + ('autocast' if runtime == 'torch' else 'inference')}")
    note = amp_note(amp, device or "cpu") if runtime == "torch" else None
    if note is not None:
        typer.echo(note)
    bar = tqdm(total=total, unit="frame", desc="predict", disable=quiet, dynamic_ncols=True)

    def progress(done: int, model_fps: float) -> None:
        bar.update(done - bar.n)
        if not math.isnan(model_fps):
            bar.set_postfix(fps=f"{model_fps:.1f}")

    info = {"checkpoint": None if checkpoint is None else str(checkpoint),
            "export_dir": None if export_dir is None else str(export_dir), "threads": threads,
            "channels_last": bool(getattr(runner, "channels_last", False)), "amp": amp}
    try:
        res = predict_video(input, out, runner, max_frames=max_frames, fps=fps, overlay=not no_overlay,
                            progress=progress, info=info, prepare=False)
    except VideoError as e:
        raise fail(f"{e} (masks written so far are in {out / 'masks'})") from e
    finally:
        bar.close()
    lat = res.latency_ms
    typer.echo(f"{res.frames} frames {res.input_size[0]}x{res.input_size[1]} -> masks in {res.masks_dir}")
    if res.overlay is not None:
        typer.echo(f"overlay video: {res.overlay} ({res.summary['overlay_codec']}, {res.summary['overlay_fps']:g} fps)")
    typer.echo(f"model FPS {res.model_fps:.1f} (latency per frame: mean {lat['mean']:.1f} ms, median "
               f"{lat['median']:.1f} ms, p90 {lat['p90']:.1f} ms); pipeline FPS {res.pipeline_fps:.1f} with "
               f"decoding and writing")
    typer.echo(f"summary: {res.summary_path}")
