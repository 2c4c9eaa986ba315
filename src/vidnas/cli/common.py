"""Options and helpers shared by every `vidnas` sub-command."""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from vidnas.config import Config, ConfigError, load_config, save_config

ConfigOpt = Annotated[
    Optional[str],  # noqa: UP007, UP045  (typer needs Optional on py3.10)
    typer.Option("--config", "-c", help="YAML preset: a path, or a name from configs/ (e.g. `tiny`)."),
]
SetOpt = Annotated[
    Optional[list[str]],  # noqa: UP007, UP045
    typer.Option("--set", "-s", help="Override a config value, e.g. --set train.epochs=2 (repeatable)."),
]


def fail(msg: str, code: int = 2) -> typer.Exit:
    """Print a clear error to stderr and return an Exit to raise."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def resolve_config(config: str | None, overrides: list[str] | None, extra: list[str] | None = None) -> Config:
    """Load defaults -> preset -> CLI shortcut overrides (``extra``) -> ``--set`` overrides; exit 2 on a bad value."""
    try:
        return load_config(config, [*(extra or []), *(overrides or [])])
    except ConfigError as e:
        raise fail(str(e)) from e


def set_threads(threads: int | None) -> None:
    """``--threads``: torch's intra-op thread count for this process (None: leave torch's default); exit 2 if < 1."""
    if threads is None:
        return
    if threads < 1:
        raise fail(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def make_run_dir(cfg: Config, kind: str, out: str | None = None) -> Path:
    """Create ``out`` (or ``<train.out_dir>/<kind>-<timestamp>``) and write the resolved config into it."""
    run = Path(out) if out else Path(cfg.train.out_dir) / f"{kind}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "config.yaml")
    return run


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
