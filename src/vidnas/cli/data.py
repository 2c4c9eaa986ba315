"""`vidnas data stats|preview`: inspect a data set before training on it."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from vidnas.cli.common import (
    ConfigOpt,
    OverwriteOpt,
    SetOpt,
    data_roots_of,
    fail,
    output_file,
    resolve_config,
    setup_logging,
)
from vidnas.config import ConfigError, DataConfig
from vidnas.rundir import PREVIEW_SOFTWARE

app = typer.Typer(
    help="Inspect a data set: per-split statistics (`stats`) and a grid of frames with mask overlays (`preview`).",
    no_args_is_help=True,
)

FormatOpt = Annotated[
    Optional[str],  # noqa: UP007, UP045  (typer needs Optional on py3.10)
    typer.Option("--format", "-f", help="Data format: camvid, cholecseg8k, cityscapes, davis, folder, synthetic "
                                        "(default: data.format of the config)."),
]
RootOpt = Annotated[
    Optional[str],  # noqa: UP007, UP045
    typer.Option("--root", "-r", help="Data set root folder (default: data.root of the config)."),
]


def _data_config(config: str | None, overrides: list[str] | None, fmt: str | None, root: str | None) -> DataConfig:
    cfg = resolve_config(config, overrides)
    data = cfg.data
    # set directly rather than through `--set` parsing, so any path (commas, colons) is taken literally
    if fmt is not None:
        data = dataclasses.replace(data, format=fmt)
    if root is not None:
        data = dataclasses.replace(data, root=root)
    return data


def _open(data: DataConfig) -> Any:
    from vidnas.data import DataError, open_source

    try:
        return open_source(data)
    except DataError as e:
        raise fail(str(e)) from e


def _tqdm_progress(enabled: bool) -> Any:
    from tqdm import tqdm

    def progress(it: Iterable[Any], total: int, desc: str) -> Iterable[Any]:
        return tqdm(it, total=total, desc=desc, unit="mask", leave=False, file=sys.stderr,
                    disable=None if enabled else True)  # None: no bar when stderr is not a terminal

    return progress


def _fmt_spacing(sp: dict[str, Any]) -> str:
    if sp["median"] is None:
        return "-"
    med = sp["median"]
    med_s = f"{med:g}"
    return f"median {med_s}, min {sp['min']}, max {sp['max']} (frame numbers between consecutive annotated frames)"


def _print_stats(st: dict[str, Any], same_as: str | None) -> None:
    echo = typer.echo
    echo(f"{st['format']} / {st['split']}")
    if same_as is not None:
        echo(f"  same videos as split {same_as!r}")
        return
    echo(f"  videos              {st['videos']}")
    echo(f"  frames              {st['frames']}")
    echo(f"  annotated frames    {st['annotated']}")
    echo(f"  frame spacing       {_fmt_spacing(st['spacing'])}")
    sizes = ", ".join(f"{k} ({v})" for k, v in st["sizes"].items()) or "-"
    echo(f"  mask sizes (HxW)    {sizes}")
    echo(f"  classes             {st['num_classes']} (share of labelled pixels)")
    width = max((len(n) for n in st["class_share"]), default=4)
    for i, (name, share) in enumerate(st["class_share"].items()):
        echo(f"    {i:>3} {name:<{width}} {100 * share:6.2f}%")
    echo(f"  ignored pixels      {100 * st['ignored_share']:.2f}% of all mask pixels (void, unknown)")
    unknown = ", ".join(f"{v}: {c} px" for v, c in st["unknown_labels"].items()) or "none"
    echo(f"  unknown labels      {unknown}")
    echo(f"  unannotated videos  {', '.join(st['unannotated_videos']) or 'none'}")
    if st["empty_videos"]:
        echo(f"  empty videos        {', '.join(st['empty_videos'])}")


@app.command()
def stats(
    fmt: FormatOpt = None,
    root: RootOpt = None,
    split: Annotated[
        Optional[list[str]],  # noqa: UP007, UP045
        typer.Option("--split", help="Split to describe (repeatable; default: every split of the data set)."),
    ] = None,
    json_path: Annotated[
        Optional[Path],  # noqa: UP007, UP045
        typer.Option("--json", help="Also write the statistics as JSON to this file."),
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bar while reading masks.")
    ] = True,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier --json of `data stats`; any "
                                                                "other file is never replaced.")] = False,
) -> None:
    """Per split: videos, frames, annotated frames, frame spacing, class histogram, unknown labels, unannotated videos.

    Reads every mask of the chosen splits. Example: `vidnas data stats --format camvid --root data/camvid`.
    """
    from vidnas.data import DataError, split_stats
    from vidnas.utils import atomic_write_json

    setup_logging()
    data = _data_config(config, overrides, fmt, root)
    if json_path is not None:  # before reading any mask: never into the data set, never over a file not ours
        output_file(json_path, "stats", overwrite=overwrite, option="--json", data_roots=data_roots_of(data))
    src = _open(data)
    try:
        splits = list(split) if split else src.split_names()
        seen: dict[tuple[str, ...], str] = {}
        out: dict[str, Any] = {}
        for s in splits:
            key = tuple(v.name for v in src.videos(s))
            same = seen.get(key) if not split else None  # aliases (e.g. CholecSeg8K val = test) are shown once
            if same is None:
                seen.setdefault(key, s)
                out[s] = split_stats(src, s, _tqdm_progress(progress))
                _print_stats(out[s], None)
            else:
                out[s] = {"same_as": same}
                _print_stats({"format": src.name, "split": s}, same)
    except (DataError, ConfigError) as e:
        raise fail(str(e)) from e
    if json_path is not None:
        atomic_write_json(json_path, {"format": src.name, "root": data.root, "splits": out})
        typer.echo(f"wrote {json_path}")


@app.command()
def preview(
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")],
    fmt: FormatOpt = None,
    root: RootOpt = None,
    split: Annotated[
        Optional[str],  # noqa: UP007, UP045
        typer.Option("--split", help="Split to sample from (default: the data set's first split)."),
    ] = None,
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Number of frames (spread over the split).")] = 8,
    tile_width: Annotated[int, typer.Option("--tile-width", min=16, help="Width of each tile in pixels.")] = 320,
    cols: Annotated[int, typer.Option("--cols", min=1, help="Tiles per row.")] = 4,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a grid of annotated frames with their masks overlaid in the data set's palette, plus a class legend."""
    from PIL.PngImagePlugin import PngInfo

    from vidnas.data import DataError, preview_grid
    from vidnas.utils import atomic_write

    setup_logging()
    data = _data_config(config, overrides, fmt, root)
    output_file(out, "preview", overwrite=overwrite, data_roots=data_roots_of(data))
    src = _open(data)
    try:
        s = split or src.split_names()[0]
        img = preview_grid(src, s, n=n, tile_width=tile_width, cols=cols)
    except (DataError, ValueError) as e:
        raise fail(str(e)) from e
    try:
        info = PngInfo()
        info.add_text("Software", PREVIEW_SOFTWARE)  # how a later `preview --overwrite` knows the file is ours
        atomic_write(out, lambda tmp: img.save(tmp, format="PNG", pnginfo=info))
    except OSError as e:
        raise fail(f"cannot write {out}: {e}") from e
    typer.echo(f"wrote {out} ({img.width}x{img.height}, {src.name}/{s})")
