"""The output policy: every file and directory a command writes goes through here, so that vidnas never destroys
what a user owns; and ``--resume`` that starts from the run's own config.

Every command that writes a directory (train, the searches, the demo and sweep, export, predict, eval) calls
``prepare_output_dir`` before any expensive work, and every command that writes one file (``--json``, ``data preview
--out``, ``latency --out``) calls ``prepare_output_file``. The rules:

* nothing is written inside a data set's root (a folder laid out like one, ``data_set_root``, or the command's own
  ``data.root``);
* a directory records the kind of run that wrote it in ``RUN_MANIFEST`` (``{"kind": "train"}``; older directories
  are recognised by their files, ``run_kind_of``). A directory holding a run of another kind is always refused:
  ``--overwrite`` replaces only a run of the command's own kind;
* a run of the same kind is continued with ``--resume``, replaced with ``--overwrite`` (only the files that kind of
  run writes, its ``artifacts``, are removed), and otherwise refused with a message naming ``--resume``, a new
  ``--out``, and what ``--overwrite`` would delete; a run that stopped before its first checkpoint cannot be resumed,
  and the message says so;
* nothing a command reads (``--init``, ``--onnx``...: the ``inputs``) may lie among what it would delete: refused;
* any other non-empty directory (someone else's work) is refused unless ``--overwrite`` is given, and even then
  nothing in it is deleted or replaced: vidnas only adds its own files;
* a file is replaced only when it is a file of the same kind that vidnas wrote (``FILE_KINDS`` recognise their
  contents) and ``--overwrite`` is given; never when it is one of the command's inputs.

The checks raise before anything is deleted; a command deletes only after its inputs are loaded and checked.

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
    "RUN_MANIFEST",
    "FILE_KINDS",
    "PREVIEW_SOFTWARE",
    "prepare_output_dir",
    "prepare_output_file",
    "run_kind_of",
    "data_set_root",
    "resume_config",
    "config_changes",
    "absolute_data_root",
    "remove_orphan_temporaries",
    "remove_artifacts",
    "artifact_paths",
    "is_unused_dir",
    "discard_unused_dir",
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
        resumable: files any one of which a ``--resume`` needs (default: the ``markers``); a run of this kind
            without them stopped before its first checkpoint.
    """

    name: str
    markers: tuple[str, ...]
    artifacts: tuple[str, ...]
    safe_keys: tuple[str, ...] = ()
    reuse: bool = False
    resumable: tuple[str, ...] = ()

    def can_resume(self, path: Path) -> bool:
        """``path`` holds what a ``--resume`` of this kind continues from (``resumable``, else ``markers``)."""
        return any((path / m).exists() for m in (self.resumable or self.markers))


PREDICT_MANIFEST = "vidnas_predict.json"  # the files a prediction wrote: the only ones a later one may replace
RUN_MANIFEST = "vidnas_run.json"  # {"kind": KIND, "run": NAME}: the kind of run that wrote a directory
_RUNTIME_KEYS = ("train.device", "data.num_workers", "data.cache_frames", "train.log_every", "train.out_dir")

RUN_KINDS: dict[str, RunKind] = {
    "train": RunKind(
        "training run",
        markers=("checkpoints/last.pt", "checkpoints/best.pt", "metrics.jsonl", "train_summary.json"),
        artifacts=("checkpoints", "metrics.jsonl", "tb", "train_summary.json", "curves.png", "config.yaml", "ranks"),
        safe_keys=("train.epochs", "train.val_every", *_RUNTIME_KEYS),
        resumable=("checkpoints/last.pt",),
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
        # over the arch2 space with --references arch2 there is no baseline/ (the reference's training is that row):
        # the reference's and the cheapest point's trainings, started beside the searches, mark the run too
        markers=("sweep.json", "baseline/done.json", "baseline/train", "ref_arch2/train", "cheapest/train"),
        artifacts=("baseline", "sweep.json", "sweep.md", "pareto.png", "config.yaml"),  # + lam_*, random_*, ref_*
        safe_keys=("train.device", "data.num_workers", "data.cache_frames", "train.log_every"),
    ),
    "demo": RunKind(
        "demo",
        markers=("demo.json", "baseline/done.json", "baseline/train", "ref_arch2/train", "cheapest/train"),
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
# A folder holding all the names of one of these is a data set's root: nothing is written anywhere beneath it.
_DATA_ROOT_SIGNATURES = (("classes.yaml",), ("splits.yaml",), ("JPEGImages", "Annotations"), ("leftImg8bit", "gtFine"),
                         ("train", "trainannot"), ("LabeledApproved_full",))

PREVIEW_SOFTWARE = "vidnas data preview"  # the PNG "Software" text of a preview grid: how a later one knows it


@dataclass(frozen=True)
class FileKind:
    """One kind of single file a command writes.

    Attributes:
        name: what the file is called in messages.
        command: the command that writes it.
        recognise: True when the existing file at a path is such a file, written by vidnas.
    """

    name: str
    command: str
    recognise: Callable[[Path], bool]


def _json_of(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _is_stats(path: Path) -> bool:
    d = _json_of(path)
    return isinstance(d, dict) and {"format", "root", "splits"} <= set(d)


def _is_bench_rows(path: Path) -> bool:
    d = _json_of(path)
    return isinstance(d, list) and all(isinstance(r, dict) and {"name", "latency_ms", "fps"} <= set(r) for r in d)


def _is_latency_table(path: Path) -> bool:
    d = _json_of(path)
    return isinstance(d, dict) and {"schema_version", "blocks", "downsample"} <= set(d)


def _is_preview(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.startswith(b"\x89PNG") and b"Software\x00" + PREVIEW_SOFTWARE.encode() in head


FILE_KINDS: dict[str, FileKind] = {
    "stats": FileKind("data statistics file", "vidnas data stats --json", _is_stats),
    "bench": FileKind("benchmark table", "vidnas bench --json", _is_bench_rows),
    "latency": FileKind("latency table", "vidnas latency", _is_latency_table),
    "preview": FileKind("preview grid", "vidnas data preview", _is_preview),
}


def _writable(path: Path) -> bool:
    try:
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".vidnas-write-test-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


def data_set_root(path: str | os.PathLike, roots: Iterable[str | os.PathLike | None] = ()) -> Path | None:
    """The data set whose root is ``path`` or one of its parents, else None: a folder laid out like a data set's root
    (``classes.yaml``, ``splits.yaml``, ``JPEGImages`` + ``Annotations``...), or one of ``roots`` (the command's own
    ``data.root``)."""
    p = Path(os.path.abspath(path))
    real = p.resolve()
    for r in roots:
        if r:
            root = Path(r).resolve()
            if real == root or root in real.parents:
                return Path(r)
    for d in (p, *p.parents):
        if d.is_dir() and any(all((d / n).exists() for n in sig) for sig in _DATA_ROOT_SIGNATURES):
            return d
    return None


def _refuse_data_set(path: Path, option: str, roots: Iterable[str | os.PathLike | None]) -> None:
    ds = data_set_root(path, roots)
    if ds is None:
        return
    if Path(os.path.abspath(path)) == Path(os.path.abspath(ds)):
        raise OutputDirError(f"{option} {path} looks like a data set (a data root of this command or its layout): "
                             "vidnas never writes into one; choose a path outside it")
    raise OutputDirError(f"{option} {path} is inside {ds}, which looks like a data set: vidnas never writes into "
                         "one; choose a path outside it")


# (outer, inner): a run of kind inner may be written inside a directory holding a run of kind outer, in a new folder
# of its own: an evaluation or an export beside the checkpoint it uses (RUN/eval/best, RUN/onnx); a prediction's own
# export (OUT/onnx)
_NESTED = {*((outer, inner) for outer in ("train", "cells", "sweep", "demo") for inner in ("eval", "export")),
           ("predict", "export")}


def _refuse_inside_run(path: Path, option: str, kind: str | None) -> None:
    """Refuse a ``path`` beneath a directory that holds another command's run (by its ``RUN_MANIFEST``), unless
    ``(that kind, kind)`` is in ``_NESTED``; ``kind`` None: a single file, never written into a run."""
    for d in Path(os.path.abspath(path)).parents:
        outer = _manifest_kind(d)
        if outer is not None and (outer, kind) not in _NESTED:
            raise OutputDirError(f"{option} {path} is inside {d}, which holds {_a(RUN_KINDS[outer].name)}: vidnas "
                                 "never writes into another command's outputs; choose a path outside it")


def _manifest_kind(path: Path) -> str | None:
    d = _json_of(path / RUN_MANIFEST)
    kind = d.get("kind") if isinstance(d, dict) else None
    return kind if kind in RUN_KINDS else None


def _under(rel: str, names: Iterable[str]) -> bool:
    return any(rel == n or rel.startswith(n + "/") for n in names)


def run_kind_of(path: str | os.PathLike, prefer: str | None = None) -> str | None:
    """The kind of run (a key of ``RUN_KINDS``) directory ``path`` holds, or None.

    Its ``RUN_MANIFEST`` says; a directory written before manifests is recognised by its ``markers``, and when the
    markers of several kinds are there, a kind whose markers are all files another one writes (a search writes a
    ``metrics.jsonl`` too) gives way to that one; a tie goes to ``prefer``.
    """
    p = Path(path)
    kind = _manifest_kind(p)
    if kind is not None:
        return kind
    present = {k: [m for m in s.markers if (p / m).exists()] for k, s in RUN_KINDS.items()}
    fits = [k for k, ms in present.items() if ms]

    def explained(a: str, b: str) -> bool:
        return all(_under(m, RUN_KINDS[b].artifacts) for m in present[a])

    best = [a for a in fits if not any(b != a and explained(a, b) and not explained(b, a) for b in fits)]
    if prefer in best:
        return prefer
    return best[0] if best else None


def _write_manifest(path: Path, kind: str) -> None:
    (path / RUN_MANIFEST).write_text(json.dumps({"kind": kind, "run": RUN_KINDS[kind].name}) + "\n")


def _a(name: str) -> str:
    """``name`` with its indefinite article ("an ST-NAS search", "a training run")."""
    return f"{'an' if name[0].lower() in 'aeio' or name.startswith(('ONNX', 'ST-')) else 'a'} {name}"


def _names(paths: Sequence[Path], base: Path) -> str:
    names = [str(p.relative_to(base)) for p in paths]
    return ", ".join(names[:6]) + (", ..." if len(names) > 6 else "") if names else "nothing"


def _refuse_doomed_inputs(doomed: Sequence[Path], inputs: dict[str, str | os.PathLike | None], path: Path,
                          spec: RunKind, how: str) -> None:
    for opt, value in inputs.items():
        if value is None:
            continue
        r = Path(value).resolve()
        for d in doomed:
            dr = d.resolve()
            if r == dr or dr in r.parents:
                raise OutputDirError(f"{opt} {value} is part of the {spec.name} in {path}, which {how} would delete "
                                     f"before reading it: copy it out of {path} first, or choose a new --out")


def prepare_output_dir(path: str | os.PathLike, kind: str, *, resume: bool = False, overwrite: bool = False,
                       option: str = "--out", inputs: dict[str, str | os.PathLike | None] | None = None,
                       data_roots: Iterable[str | os.PathLike | None] = (), check_only: bool = False) -> str:
    """Check ``path`` for a command of ``kind`` (a key of ``RUN_KINDS``), create it, and say how it will be used.

    Args:
        path: the output directory.
        kind: the command's kind of run.
        resume: the command continues the run in ``path``.
        overwrite: the user asked to replace the run in ``path`` (or to write into a non-empty directory).
        option: the command's option naming the directory, for messages.
        inputs: option -> path of every file or folder the command reads (``--init``, ``--onnx``...): none may lie
            among what replacing the run would delete.
        data_roots: the command's data roots (``data.root``): ``path`` must lie outside them.
        check_only: every check, nothing created, written or removed (a command that loads its inputs between the
            checks and the deletion calls it twice).

    Returns:
        ``"new"`` (a new or empty directory), ``"resume"`` (a run of this kind to continue) or ``"overwrite"``
        (a previous run of this kind was removed, or a foreign directory is written into).

    Raises:
        OutputDirError: a file, an unwritable or foreign directory, a data set, a run of another kind, a run without
            ``--resume``/``--overwrite``, a ``--resume`` with nothing to resume, an input among the files to
            delete, or ``--resume`` and ``--overwrite`` together.
    """
    spec = RUN_KINDS[kind]
    p = Path(path)
    if resume and overwrite:
        raise OutputDirError("--resume and --overwrite contradict each other: give one")
    if p.exists() and not p.is_dir():
        raise OutputDirError(f"{option} {p} is a file, not a directory: choose a directory")
    _refuse_data_set(p, option, data_roots)
    _refuse_inside_run(p, option, kind)
    if not p.exists():
        if resume:
            raise OutputDirError(f"--resume: {p} does not exist, there is no {spec.name} to continue")
        parent = next((a for a in p.parents if a.exists()), Path("."))
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise OutputDirError(f"{option} {p}: cannot create it, {parent} is not writable")
        if check_only:
            return "new"
        try:
            p.mkdir(parents=True)
        except OSError as e:
            raise OutputDirError(f"{option} {p}: cannot create it: {e.strerror or e}") from e
        _write_manifest(p, kind)
        return "new"
    if not _writable(p):
        raise OutputDirError(f"{option} {p} is not writable (read-only directory or file system)")
    entries = [e for e in p.iterdir() if not _bookkeeping(e.name)]  # is_unused_dir: none
    found = run_kind_of(p, prefer=kind) if entries else None
    if found is not None and found != kind:
        raise OutputDirError(f"{option} {p} holds {_a(RUN_KINDS[found].name)}, not {_a(spec.name)}: vidnas never "
                             f"replaces another command's outputs (--overwrite replaces {_a(spec.name)} only); "
                             f"choose a new {option}")
    holds_run = found == kind
    doomed = artifact_paths(p, kind) if holds_run else []
    stopped = (f"holds {_a(spec.name)} that stopped before its first checkpoint (no "
               f"{' or '.join(spec.resumable or spec.markers)})")
    if resume:
        if not holds_run:
            raise OutputDirError(f"--resume: {p} holds no {spec.name} (none of {', '.join(spec.markers)}); "
                                 f"start a new one without --resume")
        if not spec.can_resume(p):
            raise OutputDirError(f"--resume: {p} {stopped}: there is nothing to continue; restart it with "
                                 f"--overwrite instead of --resume (deletes {_names(doomed, p)})")
        return "resume"
    if not entries:
        if not check_only:
            _write_manifest(p, kind)
        return "new"
    looks_like_data = [n for n in _DATA_LAYOUT if (p / n).exists()]
    if (p / _DATA_MASKS).is_dir() and not holds_run:
        looks_like_data.append(_DATA_MASKS)
    if looks_like_data and not holds_run:
        raise OutputDirError(f"{option} {p} looks like a data set ({', '.join(looks_like_data)}): vidnas never "
                             "writes into one; choose a new directory")
    if holds_run:
        _refuse_doomed_inputs(doomed, inputs or {}, p, spec, "this command" if spec.reuse else "--overwrite")
        if spec.reuse:
            if not check_only:
                remove_artifacts(p, kind)
                _write_manifest(p, kind)
            return "overwrite"
        if not overwrite:
            if not spec.can_resume(p):
                raise OutputDirError(f"{option} {p} {stopped}: it cannot be resumed; pass --overwrite to start it "
                                     f"again (deletes {_names(doomed, p)}), or choose a new {option}")
            how = " continue it with --resume," if spec.safe_keys or kind in ("train", "stnas", "cells") else ""
            raise OutputDirError(f"{option} {p} already holds a run of this command ({spec.name});{how} choose a new "
                                 f"{option}, or pass --overwrite to replace it (deletes {_names(doomed, p)})")
        if not check_only:
            remove_artifacts(p, kind)
            _write_manifest(p, kind)
        return "overwrite"
    enclosing = next(((d, k) for d in Path(os.path.abspath(p)).parents if (k := _manifest_kind(d)) is not None), None)
    if enclosing is not None:  # a folder of another command's run (e.g. RUN/checkpoints): never written into
        raise OutputDirError(f"{option} {p} is part of the {RUN_KINDS[enclosing[1]].name} in {enclosing[0]}: vidnas "
                             f"never writes into another command's outputs; choose a new {option}")
    if not overwrite:
        names = ", ".join(sorted(e.name for e in entries)[:5]) + (", ..." if len(entries) > 5 else "")
        raise OutputDirError(f"{option} {p} is not empty ({names}) and holds no {spec.name}: choose a new or empty "
                             f"directory, or pass --overwrite to write into it (nothing in it is deleted)")
    clash = [n for n in spec.artifacts if (p / n).exists()]
    if clash:
        raise OutputDirError(f"{option} {p} holds {', '.join(clash)}, which vidnas did not write and "
                             f"{_a(spec.name)} would replace: choose a new or empty directory")
    if not check_only:
        _write_manifest(p, kind)
    return "overwrite"


def prepare_output_file(path: str | os.PathLike, kind: str, *, overwrite: bool = False, option: str = "--out",
                        inputs: dict[str, str | os.PathLike | None] | None = None,
                        data_roots: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Check the single file ``path`` a command of file kind ``kind`` (a key of ``FILE_KINDS``) is about to write.

    Refused: a directory; a path inside a data set (``data_set_root``, or one of ``data_roots``); one of the
    command's ``inputs``; an existing file that is not a file of this kind written by vidnas (``FileKind.recognise``),
    even with ``--overwrite``; an existing one of this kind without ``overwrite``; an unwritable folder.

    Raises:
        OutputDirError: naming the path, and what to do instead.
    """
    spec = FILE_KINDS[kind]
    p = Path(path)
    if p.is_dir():
        raise OutputDirError(f"{option} {p} is a directory; give a file name")
    _refuse_data_set(p, option, data_roots)
    _refuse_inside_run(p, option, None)
    for opt, value in (inputs or {}).items():
        if value is not None and Path(value).exists() and Path(value).resolve() == p.resolve():
            raise OutputDirError(f"{option} {p} is also this command's {opt}: choose another file name")
    if p.exists() or p.is_symlink():
        if not p.is_file() or not spec.recognise(p):
            raise OutputDirError(f"{option} {p} already exists and is not {_a(spec.name)} written by {spec.command}: "
                                 "vidnas never replaces a file it did not write; choose another name")
        if not overwrite:
            raise OutputDirError(f"{option} {p} already exists; choose another name or pass --overwrite to replace "
                                 f"it (an earlier {spec.name})")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise OutputDirError(f"{option} {p}: {parent} is not writable")
    return p


def _bookkeeping(name: str) -> bool:
    return name == RUN_MANIFEST or name.startswith(".vidnas-")


def is_unused_dir(path: str | os.PathLike) -> bool:
    """Directory ``path`` holds nothing but vidnas' own bookkeeping (``RUN_MANIFEST``, write tests)."""
    return all(_bookkeeping(e.name) for e in Path(path).iterdir())


def discard_unused_dir(path: str | os.PathLike) -> bool:
    """Remove the directory ``prepare_output_dir`` created for a command that then failed before writing into it
    (only when ``is_unused_dir``). Returns whether it was removed."""
    p = Path(path)
    if not p.is_dir() or not is_unused_dir(p):
        return False
    shutil.rmtree(p)
    return True


def artifact_paths(path: str | os.PathLike, kind: str) -> list[Path]:
    """What a run of ``kind`` wrote into ``path`` and replacing it would remove: its ``RunKind.artifacts``;
    ``lam_*``, ``random_*``, ``ref_*`` folders of a sweep or demo; a prediction's masks. Only those that exist."""
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
    return [p / n for n in dict.fromkeys(names) if (p / n).exists() or (p / n).is_symlink()]


def remove_artifacts(path: str | os.PathLike, kind: str) -> list[Path]:
    """Remove what a run of ``kind`` wrote (``artifact_paths``) from ``path``, and nothing else. Returns what was
    removed."""
    p = Path(path)
    removed = []
    for target in artifact_paths(p, kind):
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
