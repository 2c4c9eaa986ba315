"""Output directories that never destroy what a user owns, and ``--resume`` that starts from the run's own config.

Every command that writes a directory (train, the searches, the demo and sweep, export, predict, eval) calls
``prepare_output_dir`` before any expensive work. The rule:

* a path that is a file, or a directory that cannot be written, is an error naming it;
* a new or empty directory is used;
* a directory holding a run of the same kind (its ``markers`` exist) is continued with ``--resume``, replaced with
  ``--overwrite`` (only the files that kind of run writes, its ``artifacts``, are removed first), and otherwise
  refused with a message naming ``--resume``, a new ``--out`` and ``--overwrite``;
* any other non-empty directory (someone else's work, a data set) is refused unless ``--overwrite`` is given, and
  even then nothing in it is deleted: vidnas only writes its own files.

``resume_config`` rebuilds the config of a resumed run: the run's saved ``config.yaml``, then the command's
overrides, refusing (before anything is written) every change outside the keys that are safe to change mid-run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidnas.config import Config, ConfigError, apply_overrides, config_to_dict, load_config

__all__ = [
    "OutputDirError",
    "RunKind",
    "RUN_KINDS",
    "prepare_output_dir",
    "resume_config",
    "config_changes",
    "absolute_data_root",
    "remove_orphan_temporaries",
    "remove_artifacts",
    "PREDICT_MANIFEST",
]


class OutputDirError(ValueError):
    """An output directory cannot be used as asked; the message names it and what to do instead."""


@dataclass(frozen=True)
class RunKind:
    """What one kind of command writes into its output directory.

    Attributes:
        name: what the run is called in messages ("training run", "ST-NAS search"...).
        markers: paths (relative to the directory) any one of which shows the directory holds such a run.
        artifacts: every file and folder such a run writes; ``--overwrite`` removes these and nothing else.
        safe_keys: config keys a ``--resume`` may change (``section.key``); every other change is refused.
        reuse: a directory holding an earlier output of this kind is replaced without ``--overwrite`` (quick,
            deterministic outputs: an evaluation, an export, a prediction), its own files removed first.
    """

    name: str
    markers: tuple[str, ...]
    artifacts: tuple[str, ...]
    safe_keys: tuple[str, ...] = ()
    reuse: bool = False


PREDICT_MANIFEST = "vidnas_predict.json"  # the files a prediction wrote: the only ones a later one may replace
_RUNTIME_KEYS = ("train.device", "data.num_workers", "data.cache_frames", "train.log_every", "train.out_dir")

RUN_KINDS: dict[str, RunKind] = {
    "train": RunKind(
        "training run",
        markers=("checkpoints/last.pt", "checkpoints/best.pt", "metrics.jsonl", "train_summary.json"),
        artifacts=("checkpoints", "metrics.jsonl", "tb", "train_summary.json", "curves.png", "config.yaml", "ranks"),
        safe_keys=("train.epochs", "train.val_every", *_RUNTIME_KEYS),
    ),
    "stnas": RunKind(
        "ST-NAS search",
        markers=("arch.json", "search_summary.json", "checkpoints/encoder_search.pt", "checkpoints/decoder_search.pt"),
        artifacts=("checkpoints", "metrics.jsonl", "tb", "arch.json", "derived_init.pt", "latency_table.json",
                   "alphas.png", "betas.png", "decoder.png", "report.md", "search_summary.json", "config.yaml",
                   "ranks"),
        safe_keys=_RUNTIME_KEYS,
    ),
    "sweep": RunKind(
        "ST-NAS sweep",
        markers=("sweep.json", "baseline/done.json", "baseline/train"),
        artifacts=("baseline", "sweep.json", "sweep.md", "pareto.png", "config.yaml"),  # + lam_*, random_*, ref_*
        safe_keys=("train.device", "data.num_workers", "data.cache_frames", "train.log_every"),
    ),
    "demo": RunKind(
        "demo",
        markers=("demo.json", "baseline/done.json", "baseline/train"),
        artifacts=("baseline", "demo.json", "report.md", "arch.json", "alphas.png", "betas.png", "decoder.png",
                   "pareto.png", "config.yaml", "latency_table.json"),  # + lam_*, random_*, ref_* folders
        safe_keys=("train.device", "data.num_workers", "data.cache_frames", "train.log_every"),
    ),
    "cells": RunKind(
        "cell search",
        markers=("candidates.jsonl", "controller.pt", "static/static.pt"),
        artifacts=("candidates.jsonl", "controller.pt", "static", "cache", "plots", "top", "report.md",
                   "config.yaml", "search.json", "ppo.jsonl", "search_summary.json"),
        safe_keys=("cells.candidates", "cells.top_k", "cells.workers", "cells.executor", "cells.cache",
                   *_RUNTIME_KEYS),
    ),
    "export": RunKind("ONNX export", markers=("export.json",),
                      artifacts=("encoder.onnx", "decoder.onnx", "key.onnx", "cell.onnx", "export.json"), reuse=True),
    "predict": RunKind("prediction", markers=(PREDICT_MANIFEST,),
                       artifacts=("overlay.mp4", "summary.json", "onnx", PREDICT_MANIFEST), reuse=True),
    "eval": RunKind("evaluation", markers=("eval.json",), artifacts=("eval.json", "per_class.md", "overlays"),
                    reuse=True),
}

# A directory with one of these is a data set (or a copy of one), never an output directory.
_DATA_LAYOUT = ("JPEGImages", "Annotations", "frames", "images", "classes.yaml", "splits.yaml", "leftImg8bit", "gtFine",
                "LabeledApproved_full", "train", "trainannot", "val", "valannot")
_DATA_MASKS = "masks"


def _writable(path: Path) -> bool:
    try:
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".vidnas-write-test-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


def prepare_output_dir(path: str | os.PathLike, kind: str, *, resume: bool = False, overwrite: bool = False,
                       option: str = "--out") -> str:
    """Check ``path`` for a command of ``kind`` (a key of ``RUN_KINDS``), create it, and say how it will be used.

    Args:
        path: the output directory.
        kind: the command's kind of run.
        resume: the command continues the run in ``path``.
        overwrite: the user asked to replace the run in ``path`` (or to write into a non-empty directory).
        option: the command's option naming the directory, for messages.

    Returns:
        ``"new"`` (a new or empty directory), ``"resume"`` (a run of this kind to continue) or ``"overwrite"``
        (a previous run of this kind was removed, or a foreign directory is written into).

    Raises:
        OutputDirError: a file, an unwritable or foreign directory, a run without ``--resume``/``--overwrite``, a
            ``--resume`` with nothing to resume, or ``--resume`` and ``--overwrite`` together.
    """
    spec = RUN_KINDS[kind]
    p = Path(path)
    if resume and overwrite:
        raise OutputDirError("--resume and --overwrite contradict each other: give one")
    if p.exists() and not p.is_dir():
        raise OutputDirError(f"{option} {p} is a file, not a directory: choose a directory")
    if not p.exists():
        if resume:
            raise OutputDirError(f"--resume: {p} does not exist, there is no {spec.name} to continue")
        parent = next((a for a in p.parents if a.exists()), Path("."))
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise OutputDirError(f"{option} {p}: cannot create it, {parent} is not writable")
        try:
            p.mkdir(parents=True)
        except OSError as e:
            raise OutputDirError(f"{option} {p}: cannot create it: {e.strerror or e}") from e
        return "new"
    if not _writable(p):
        raise OutputDirError(f"{option} {p} is not writable (read-only directory or file system)")
    entries = [e for e in p.iterdir() if not e.name.startswith(".vidnas-")]
    holds_run = any((p / m).exists() for m in spec.markers)
    if resume:
        if not holds_run:
            raise OutputDirError(f"--resume: {p} holds no {spec.name} (none of {', '.join(spec.markers)}); "
                                 f"start a new one without --resume")
        return "resume"
    if not entries:
        return "new"
    looks_like_data = [n for n in _DATA_LAYOUT if (p / n).exists()]
    if (p / _DATA_MASKS).is_dir() and not holds_run:
        looks_like_data.append(_DATA_MASKS)
    if looks_like_data and not holds_run:
        raise OutputDirError(f"{option} {p} looks like a data set ({', '.join(looks_like_data)}): vidnas never "
                             "writes into one; choose a new directory")
    if holds_run:
        if spec.reuse:
            remove_artifacts(p, kind)
            return "overwrite"
        if not overwrite:
            how = " continue it with --resume," if spec.safe_keys or kind in ("train", "stnas", "cells") else ""
            raise OutputDirError(f"{option} {p} already holds a run of this command ({spec.name});{how} choose a new "
                                 f"{option}, or pass --overwrite to replace it")
        remove_artifacts(p, kind)
        return "overwrite"
    if not overwrite:
        names = ", ".join(sorted(e.name for e in entries)[:5]) + (", ..." if len(entries) > 5 else "")
        raise OutputDirError(f"{option} {p} is not empty ({names}) and holds no {spec.name}: choose a new or empty "
                             f"directory, or pass --overwrite to write into it (nothing in it is deleted)")
    return "overwrite"


def remove_artifacts(path: str | os.PathLike, kind: str) -> list[Path]:
    """Remove what a run of ``kind`` writes (``RunKind.artifacts``; ``lam_*``, ``random_*``, ``ref_*`` folders of a
    sweep or demo) from ``path``, and nothing else. Returns what was removed."""
    p = Path(path)
    names = list(RUN_KINDS[kind].artifacts)
    if kind == "predict":  # the masks it wrote (never the folder: users may add to it); the manifest lists them
        names = [*_manifest_files(p), *names]
        if (p / PREDICT_MANIFEST).is_file() and (p / "masks").is_dir():  # frames of a run that crashed mid-video
            names += [f"masks/{m.name}" for m in (p / "masks").glob("*.png") if re.fullmatch(r"\d{6}", m.stem)]
    if kind in ("sweep", "demo"):
        names += [e.name for e in p.glob("lam_*") if (e / "done.json").exists() or (e / "search").is_dir()]
        names += [e.name for e in p.glob("random_*") if (e / "done.json").exists() or (e / "train").is_dir()]
        names += [e.name for e in p.glob("ref_*") if (e / "done.json").exists() or (e / "train").is_dir()]
    removed = []
    for name in names:
        target = p / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        else:
            continue
        removed.append(target)
    masks = p / "masks"
    if kind == "predict" and masks.is_dir() and not any(masks.iterdir()):
        masks.rmdir()
    return removed


def _manifest_files(path: Path) -> list[str]:
    try:
        data = json.loads((path / PREDICT_MANIFEST).read_text())
    except (OSError, ValueError):
        return []
    files = [str(f) for f in data.get("files", []) if isinstance(f, str)]
    # only plain relative names inside the directory: a manifest can never make vidnas delete anything outside it
    return [f for f in files if not Path(f).is_absolute() and ".." not in Path(f).parts]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """``section.key -> (old value, new value)`` for every key that differs."""
    a, b = _flatten(config_to_dict(old)), _flatten(config_to_dict(new))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def resume_config(run_dir: str | os.PathLike, kind: str, *, config: str | None = None,
                  overrides: Sequence[str] = (), adjust: Callable[[Config], Config] | None = None) -> Config:
    """The config a ``--resume`` continues with: the run's ``config.yaml`` (or ``config``), then ``overrides``.

    Only the keys in ``RUN_KINDS[kind].safe_keys`` may differ from the saved config (more epochs, more candidates,
    logging, the device); any other change (the model, the data, a learning rate) would not fit the checkpoint or
    would be recorded without being used, so it is refused, naming the keys, before anything is written.

    ``adjust`` is applied to a config read from ``config`` before the comparison: the step a new run takes between
    its preset and its saved ``config.yaml`` (a cell search adopts its static network's model section), so that
    resuming with the same ``--config`` as the start compares like with like.

    Raises:
        OutputDirError: no ``config.yaml`` in ``run_dir``.
        ConfigError: a bad override, or a change outside the safe keys.
    """
    saved_path = Path(run_dir) / "config.yaml"
    if not saved_path.is_file():
        raise OutputDirError(f"--resume: {run_dir} has no config.yaml, so it holds no run to continue")
    saved = load_config(saved_path)
    new = load_config(config, list(overrides)) if config is not None else apply_overrides(saved, list(overrides))
    if config is not None:
        new = absolute_data_root(new, base=Path.cwd())
        if adjust is not None:
            new = adjust(new)
    safe = RUN_KINDS[kind].safe_keys
    unsafe = {k: v for k, v in config_changes(saved, new).items() if k not in safe}
    if unsafe:
        detail = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in unsafe.items())
        raise ConfigError(f"--resume cannot change {detail} (the run in {run_dir} was started with the first value); "
                          f"keys a resume may change: {', '.join(safe) or 'none'}. Start a new run with a new --out "
                          "to change the others")
    return new


def absolute_data_root(cfg: Config, base: str | os.PathLike | None = None) -> Config:
    """``cfg`` with ``data.root`` made absolute (against ``base``, default the working directory), so a run's saved
    config finds its data from any directory."""
    root = cfg.data.root
    if not root or Path(root).is_absolute():
        return cfg
    absolute = str((Path(base) if base is not None else Path.cwd()) / root)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=os.path.normpath(absolute)))


_TMP = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")  # vidnas.utils.atomic_write's temporaries: .NAME.XXXXXXXX.tmp


def remove_orphan_temporaries(directories: Iterable[str | os.PathLike]) -> list[Path]:
    """Delete the temporaries ``atomic_write`` left behind when a run was killed mid-write (``.NAME.XXXX.tmp``
    beside the file being written), in the given directories only (not recursive). Returns what was removed."""
    removed = []
    for d in directories:
        p = Path(d)
        if not p.is_dir():
            continue
        for e in p.iterdir():
            if e.is_file() and _TMP.match(e.name):
                e.unlink()
                removed.append(e)
    return removed
