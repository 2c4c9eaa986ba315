"""Options and helpers shared by every `vidnas` sub-command."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from vidnas.config import Config, ConfigError, DataConfig, load_config, save_config
from vidnas.rundir import (
    OutputDirError,
    absolute_data_root,
    prepare_output_dir,
    prepare_output_file,
    resume_config,
)

ConfigOpt = Annotated[
    Optional[str],  # noqa: UP007, UP045  (typer needs Optional on py3.10)
    typer.Option("--config", "-c", help="YAML preset: a path, or a name from configs/ (e.g. `tiny`)."),
]
SetOpt = Annotated[
    Optional[list[str]],  # noqa: UP007, UP045
    typer.Option("--set", "-s", help="Override a config value, e.g. --set train.epochs=2 (repeatable)."),
]


OverwriteOpt = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace the run (or output) of this same command already in --out; without it "
                                     "such a directory is refused. Only the files this command writes are removed, "
                                     "after every input is loaded; never another command's run, a data set, or a "
                                     "file the command reads."),
]
ThreadsOpt = Annotated[
    Optional[int],  # noqa: UP007, UP045
    typer.Option("--threads", help="torch intra-op threads (default: torch's, one per core). Tiny models run "
                                   "faster with 1; results repeat bit for bit with the same thread count."),
]


DeviceOpt = Annotated[
    Optional[str],  # noqa: UP007, UP045
    typer.Option("--device", help="torch device: cpu, cuda, cuda:N (default: train.device of the config, cpu). "
                                  "Every tensor follows the model there; the data stays pinned on the host."),
]
AmpOpt = Annotated[
    str,
    typer.Option("--amp", help="Mixed precision: none | bf16 | fp16. Off by default. On a CPU, bf16 pays only with "
                               "native bf16 (AMX / AVX-512 BF16) and large matmuls (Swin: 3x faster inference); "
                               "`vidnas bench --compare amp` measures it per model."),
]


def fail(msg: str, code: int = 2) -> typer.Exit:
    """Print a clear error to stderr and return an Exit to raise."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def resolve_config(config: str | None, overrides: list[str] | None, extra: list[str] | None = None) -> Config:
    """Load defaults -> preset -> CLI shortcut overrides (``extra``) -> ``--set`` overrides; exit 2 on a bad value.

    A relative ``data.root`` is made absolute (against the working directory), so the config saved in a run finds
    its data from anywhere.
    """
    try:
        return absolute_data_root(load_config(config, [*(extra or []), *(overrides or [])]))
    except ConfigError as e:
        raise fail(str(e)) from e


def run_config(kind: str, out: str | Path | None, *, resume: bool, config: str | None, overrides: list[str] | None,
               extra: list[str] | None = None, adjust: Callable[[Config], Config] | None = None) -> Config:
    """The config of a command that writes a run: ``resolve_config`` for a new run; for ``--resume``, the run's own
    ``config.yaml`` plus the overrides, refusing changes a resume cannot honour (``vidnas.rundir.resume_config``;
    ``adjust``: the step from a ``--config`` preset to the saved config, applied before comparing)."""
    if not resume:
        return resolve_config(config, overrides, extra)
    if not out:
        raise fail("--resume needs --out RUN_DIR (the run to continue)")
    try:
        return resume_config(out, kind, config=config, overrides=[*(extra or []), *(overrides or [])], adjust=adjust)
    except (ConfigError, OutputDirError) as e:
        raise fail(str(e)) from e


def output_dir(path: str | Path, kind: str, *, resume: bool = False, overwrite: bool = False,
               option: str = "--out", inputs: dict[str, str | Path | None] | None = None,
               data_roots: Sequence[str | Path | None] = (), check_only: bool = False) -> Path:
    """``vidnas.rundir.prepare_output_dir`` with a one-line error (exit 2) instead of an exception (``inputs``: what
    the command reads, never deleted; ``data_roots``: data sets the directory must lie outside; ``check_only``:
    the checks alone, nothing created or removed)."""
    try:
        prepare_output_dir(path, kind, resume=resume, overwrite=overwrite, option=option, inputs=inputs,
                           data_roots=data_roots, check_only=check_only)
    except OutputDirError as e:
        raise fail(str(e)) from e
    return Path(path)


def output_file(path: str | Path, kind: str, *, overwrite: bool, option: str = "--out",
                inputs: dict[str, str | Path | None] | None = None,
                data_roots: Sequence[str | Path | None] = ()) -> Path:
    """A file of ``kind`` (a key of ``vidnas.rundir.FILE_KINDS``) a command is about to write, checked by
    ``vidnas.rundir.prepare_output_file`` before any work: no directory, nothing inside a data set, none of the
    command's ``inputs``, no existing file vidnas did not write, an earlier one of this kind only with
    ``overwrite``. Exit 2 with one line otherwise."""
    try:
        return prepare_output_file(path, kind, overwrite=overwrite, option=option, inputs=inputs,
                                   data_roots=data_roots)
    except OutputDirError as e:
        raise fail(str(e)) from e


def data_roots_of(data: DataConfig) -> list[str]:
    """The data set root a command with data config ``data`` reads (none for synthetic data): its outputs stay
    outside it."""
    return [] if data.format == "synthetic" or not data.root else [data.root]


def set_threads(threads: int | None) -> None:
    """``--threads``: torch's intra-op thread count for this process (None: leave torch's default); exit 2 if < 1."""
    if threads is None:
        return
    if threads < 1:
        raise fail(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def device_overrides(device: str | None, amp: str | None = None) -> list[str]:
    """``--device`` / ``--amp`` as config overrides (``train.device``, ``train.amp``), checked first: an unknown
    device, CUDA where there is none, or an unknown precision exits 2 naming it."""
    from vidnas.precision import AMP_MODES, check_device

    out = []
    if device is not None:
        try:
            check_device(device)
        except ValueError as e:
            raise fail(str(e)) from e
        out.append(f"train.device={device}")
    if amp is not None:
        if amp not in AMP_MODES:
            raise fail(f"--amp {amp!r}: valid modes are {', '.join(AMP_MODES)}")
        out.append(f"train.amp={amp}")
    return out


def check_run_inputs(cfg: Config, arch: object = None) -> None:
    """The cheap checks before a run directory is created: a known data format and an existing root, a known
    encoder and decoder (``arch``: an ``Arch`` overriding the config's model). Exit 2 naming the culprit."""
    from vidnas.data import check_data_config
    from vidnas.models import check_model_config

    try:
        check_data_config(cfg.data)
        check_model_config(cfg, arch)  # type: ignore[arg-type]
    except (KeyError, ValueError) as e:
        raise fail(str(e).strip("\"'")) from e


def make_run_dir(cfg: Config, kind: str, out: str | None = None, *, resume: bool = False,
                 overwrite: bool = False, inputs: dict[str, str | Path | None] | None = None) -> Path:
    """Check and create ``out`` (or a new ``<train.out_dir>/<kind>-<timestamp>``), then write the resolved config
    into it (after every check: a refused command changes nothing). ``inputs``: what the command reads (``--init``,
    ``--arch``...), which replacing a run may never delete; the run stays outside ``data.root``."""
    run = Path(out) if out else Path(cfg.train.out_dir) / f"{kind}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 checks and writes; the others follow it
        return run
    output_dir(run, kind, resume=resume, overwrite=overwrite, inputs=inputs, data_roots=data_roots_of(cfg.data))
    save_config(cfg, run / "config.yaml")
    return run


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
