"""The resumable stages of the ST-NAS experiments (``sweep``: the lambda sweep, paper Fig. 3; ``demo``: `vidnas demo`).

Each stage lives in its own sub-directory with a ``done.json`` marker once finished, so an interrupted experiment
started again with ``resume=True`` skips what is done and continues the stage it was in (searches and trainings
resume exactly from their checkpoints):

* **baseline**: the config's model trained for ``train.epochs`` (``baseline/``).
* **candidate** (one per lambda): ``search_stnas`` (``lam_<lambda>/search/``), then the derived model trained from
  scratch for ``train.epochs`` like the baseline (``lam_<lambda>/train/``), as the paper trains its final model.
* **reference** (``ref_<decoder>/``): the library's per-frame models (``head``: the stride-32 head; ``arch2``: the
  cell search's static network reading strides 4-32) on the config's encoder, window 1, trained with the same recipe,
  so every table shows at once whether a temporal model is worth its cost.
* **random** (``random_<i>/``): architectures drawn at random from the same space
  (``vidnas.search.stnas.sample_random_archs``: depths uniform per stage or latency-matched to a searched model,
  decoder ops uniform), each trained from scratch exactly like the baseline and the searched models.
* **benchmark**: every trained model timed **interleaved in one run** under the ST-NAS FPS protocol
  (``vidnas.bench.protocol``: encode one frame + decode the full window, per pushed frame), plus parameter and FLOP
  counts. Never cached: ratios are only meaningful when measured side by side.

``sweep.run_sweep`` adds ``sweep.json``, ``sweep.md`` and ``pareto.png`` (mIoU vs FPS with the baseline);
``demo.run_demo`` (one lambda) also evaluates both models on the validation split, clip-wise and streaming with
temporal consistency, and writes ``report.md``, ``demo.json``, the table, and copies of the search's ``arch.json`` and
plots.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidnas.bench.protocol import protocol_rows
from vidnas.config import Config, save_config
from vidnas.data import open_source
from vidnas.engine.train import train
from vidnas.models import Arch, arch_from_config, build_encoder, load_model
from vidnas.models.decoders.arch2_space import ARCH2_OPS, CHEAPEST_OPS, TEMPORAL_OPS
from vidnas.models.decoders.mstcn import default_scale_ops
from vidnas.models.decoders.static import ARCH2_CHANNELS
from vidnas.models.ops import SEARCH_CANDIDATES
from vidnas.search.latency import LatencyTable
from vidnas.search.stnas import load_search_summary, sample_matched_archs, sample_random_archs, search_stnas
from vidnas.utils import atomic_write_json

__all__ = [
    "Progress",
    "Candidate",
    "lam_dirname",
    "run_baseline",
    "run_candidate",
    "run_random",
    "REFERENCE_DECODERS",
    "parse_references",
    "reference_config",
    "check_space_reference",
    "run_reference",
    "reference_lines",
    "random_archs_for",
    "matched_random_archs",
    "run_search",
    "cheapest_arch",
    "table_pricer",
    "deployed_fps",
    "dominated",
    "dominance_counts",
    "control_summary",
    "control_lines",
    "benchmark_candidates",
]

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]  # called with a one-line stage description (the CLI prints it)


def _miou_of(res: Any) -> dict[str, float | None]:
    """A training's ``best_miou`` and, where a selection split chose its checkpoint, that checkpoint's validation
    mIoU read once at the end (``TrainResult.reported``): ``reported_miou``, else None."""
    best = (res.reported or {}).get("best")
    return {"best_miou": res.best_miou, "reported_miou": None if best is None else float(best["val_miou"])}


@dataclass
class Candidate:
    """One trained model of an experiment.

    Attributes:
        name: row name (``baseline``, ``lam=0.001``...).
        lam: lambda of its search (None for the baseline).
        arch: its architecture as a dict (``Arch.to_dict``).
        checkpoint: the checkpoint evaluated and benchmarked (best by val mIoU).
        best_miou: best mIoU during training (clip protocol) on the split that chose ``checkpoint``: validation, or
            the selection split (``data.selection_videos``).
        reported_miou: with a selection split, the validation mIoU of ``checkpoint``, read once after training
            (``engine.train.report_split``); None without one. ``score`` is what tables and dominance read.
        train_seconds: wall time of its final training.
        search_seconds: wall time of its search (0 for the baseline).
        search_dir: its search run directory (None for the baseline).
        metrics: more results filled by later stages (benchmark, evaluation).
        kind: ``baseline``, ``searched``, ``random`` or ``reference`` (a per-frame model of the library).
    """

    name: str
    lam: float | None
    arch: dict[str, Any]
    checkpoint: Path
    best_miou: float
    train_seconds: float
    search_seconds: float = 0.0
    search_dir: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    kind: str = ""
    reported_miou: float | None = None

    @property
    def score(self) -> float:
        """The mIoU the experiment reports: the validation mIoU read once at the end where a selection split made the
        decisions (``reported_miou``), else the best validation mIoU (``best_miou``)."""
        return self.best_miou if self.reported_miou is None else self.reported_miou

    def __post_init__(self) -> None:
        if not self.kind:  # files written before kinds existed
            self.kind = "baseline" if self.lam is None else "searched"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``done.json``, ``sweep.json``, ``demo.json``)."""
        return {
            "name": self.name,
            "lam": self.lam,
            "arch": self.arch,
            "checkpoint": str(self.checkpoint),
            "best_miou": self.best_miou,
            "train_seconds": self.train_seconds,
            "search_seconds": self.search_seconds,
            "search_dir": None if self.search_dir is None else str(self.search_dir),
            "metrics": self.metrics,
            "kind": self.kind,
            "reported_miou": self.reported_miou,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        """Inverse of ``to_dict``."""
        return cls(
            name=d["name"],
            lam=d.get("lam"),
            arch=d["arch"],
            checkpoint=Path(d["checkpoint"]),
            best_miou=float(d["best_miou"]),
            train_seconds=float(d["train_seconds"]),
            search_seconds=float(d.get("search_seconds", 0.0)),
            search_dir=None if d.get("search_dir") is None else Path(d["search_dir"]),
            metrics=dict(d.get("metrics") or {}),
            reported_miou=None if d.get("reported_miou") is None else float(d["reported_miou"]),
            kind=str(d.get("kind") or ""),
        )

    @property
    def depths(self) -> str:
        """Encoder depths as ``"1,2,3,2"`` (``"cfg"`` when the architecture keeps the encoder's own)."""
        d = self.arch.get("depths")
        return "cfg" if d is None else ",".join(str(x) for x in d)

    @property
    def decoder(self) -> str:
        """Decoder summary: ``"3x3x3"`` (baseline convs) or ``"{temporal}T/{spatial}S/{identity}I"`` slot counts;
        a multi-scale (``mstcn``) decoder adds, per finer scale, ``s{stride} T`` (a temporal op there) or ``S``
        (per frame); an ``arch2_space`` one is ``arch2's ops`` or ``"{temporal}T/{spatial}S/{skip}skip"``, plus
        ``, per frame`` when no slot reads the past."""
        ops = self.arch.get("decoder_ops")
        if self.arch.get("decoder") in REFERENCE_DECODERS:
            return f"{self.arch['decoder']} (per frame)"
        if self.arch.get("decoder") == "arch2_space":
            ops = list(ops or ARCH2_OPS)
            n_t = sum(o.startswith("temporal") for o in ops)
            n_i = sum(o == "skip" for o in ops)
            return ("arch2's ops" if tuple(ops) == ARCH2_OPS else f"{n_t}T/{len(ops) - n_t - n_i}S/{n_i}skip") + (
                ", per frame" if n_t == 0 else "")
        if ops is None:
            text = "FC 3x3x3" if self.arch.get("full_channels") else "3x3x3"
        else:
            n_t = sum(o.startswith("temporal") for o in ops)
            n_i = sum(o == "identity" for o in ops)
            text = f"{n_t}T/{len(ops) - n_t - n_i}S/{n_i}I"
        if self.arch.get("decoder") == "mstcn":
            strides = list(self.arch.get("scales") or [])[1:]
            scale_ops = self.arch.get("scale_ops") or default_scale_ops(len(strides))  # default: per frame
            text += "; " + ", ".join(
                f"s{s} {'T' if any(o.startswith(('temporal', 'conv3d')) for o in scale_ops[3 * i:3 * i + 3]) else 'S'}"
                for i, s in enumerate(strides))
        return text


def lam_dirname(lam: float) -> str:
    """Sub-directory of one lambda: ``lam_0.001``, ``lam_0``."""
    return f"lam_{lam:g}"


def _done(path: Path) -> Candidate | None:
    marker = path / "done.json"
    if not marker.is_file():
        return None
    return Candidate.from_dict(json.loads(marker.read_text()))


def _train_stage(cfg: Config, run_dir: Path, arch: Any, *, resume: bool, show_progress: bool) -> tuple[Any, float]:
    """Train ``arch`` (None: the config's model) into ``run_dir``; ``(TrainResult, seconds)``.

    The clips are ``arch.window`` frames long when the architecture says so: a per-frame point of a temporal space
    (window 1: arch2, the cheapest point, a search or random draw without a temporal op) is trained on its target
    frames alone, with the same targets, steps and recipe, instead of encoding ``data.window - 1`` context frames per
    clip that its decoder never reads (3x the encoder work at window 3)."""
    if arch is not None and arch.window != cfg.data.window:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, window=arch.window))
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    again = resume and (run_dir / "checkpoints" / "last.pt").is_file()
    t0 = time.perf_counter()
    res = train(cfg, run_dir, arch=arch, resume=again, show_progress=show_progress)
    return res, time.perf_counter() - t0


def run_baseline(cfg: Config, run_dir: str | Path, *, resume: bool = True, show_progress: bool = True) -> Candidate:
    """Train the config's model (the reference every searched model is compared with); skipped if done.

    An ``arch2_space`` config without a temporal op (its default: arch2's ops) is a per-frame model: it is trained
    and timed at window 1, as a search derives such a point (``derive_arch``)."""
    run_dir = Path(run_dir)
    if resume and (done := _done(run_dir)) is not None:
        logger.info("baseline already trained in %s", run_dir)
        return done
    arch = arch_from_config(cfg)
    per_frame = arch.decoder == "arch2_space" and not any(op in TEMPORAL_OPS for op in arch.decoder_ops or ARCH2_OPS)
    if per_frame:
        arch = dataclasses.replace(arch, window=1)
    res, seconds = _train_stage(cfg, run_dir / "train", arch if per_frame else None, resume=resume,
                                show_progress=show_progress)
    cand = Candidate(name="baseline", lam=None, arch=arch.to_dict(),
                     checkpoint=res.best_checkpoint or res.last_checkpoint, **_miou_of(res),
                     train_seconds=seconds)
    atomic_write_json(run_dir / "done.json", cand.to_dict())
    return cand


def _search(cfg: Config, search_dir: Path, lam: float, *, resume: bool, show_progress: bool, skip_encoder: bool,
            skip_decoder: bool, progress: Progress | None, label: str) -> Any:
    """The finished search of ``search_dir`` (``resume``) or a new one at ``lam``: its ``StnasResult``."""
    try:
        found = load_search_summary(search_dir) if resume else None
    except FileNotFoundError:
        found = None
    if found is None:
        if progress:
            progress(f"search ({label}) -> {search_dir}")
        search_dir.mkdir(parents=True, exist_ok=True)
        search_cfg = dataclasses.replace(cfg, stnas=dataclasses.replace(cfg.stnas, lam=float(lam)))
        save_config(search_cfg, search_dir / "config.yaml")
        again = resume and any((search_dir / "checkpoints").glob("*_search.pt"))
        found = search_stnas(search_cfg, search_dir, resume=again, show_progress=show_progress,
                             skip_encoder=skip_encoder, skip_decoder=skip_decoder)
    return found


def run_search(cfg: Config, run_dir: str | Path, lam: float, *, resume: bool = True, show_progress: bool = True,
               skip_encoder: bool = False, skip_decoder: bool = False) -> dict[str, Any]:
    """The search half of ``run_candidate`` alone (``run_dir/search``), so the stages that need only its
    architecture (latency-matched random architectures) start before the derived model's training.

    Returns:
        ``{"arch": the derived architecture's dict (with its search record), "search_dir": str}``.
    """
    search_dir = Path(run_dir) / "search"
    found = _search(cfg, search_dir, lam, resume=resume, show_progress=show_progress, skip_encoder=skip_encoder,
                    skip_decoder=skip_decoder, progress=None, label=f"lam={lam:g}")
    arch = Arch.load(found.arch_path) if Path(found.arch_path).is_file() else found.arch
    return {"arch": arch.to_dict(), "search_dir": str(search_dir)}


def run_candidate(
    cfg: Config,
    run_dir: str | Path,
    lam: float,
    *,
    resume: bool = True,
    show_progress: bool = True,
    skip_encoder: bool = False,
    skip_decoder: bool = False,
    progress: Progress | None = None,
    name: str | None = None,
    searched: bool = False,
) -> Candidate:
    """Search at ``lam`` (``run_dir/search``), then train the derived model (``run_dir/train``); skipped if done.

    ``name``: the row name (default ``lam=<lambda>``; a budget search passes ``target=<ms>ms``). ``searched``: a
    ``run_search`` stage finished the search: read it whatever ``resume`` says.
    """
    label = name or f"lam={lam:g}"
    run_dir = Path(run_dir)
    if resume and (done := _done(run_dir)) is not None:
        logger.info("lambda %g already finished in %s", lam, run_dir)
        return done
    search_dir = run_dir / "search"
    found = _search(cfg, search_dir, lam, resume=resume or searched, show_progress=show_progress,
                    skip_encoder=skip_encoder, skip_decoder=skip_decoder, progress=progress, label=label)
    if progress:
        progress(f"train the derived model ({label}) -> {run_dir / 'train'}")
    res, seconds = _train_stage(cfg, run_dir / "train", found.arch, resume=resume, show_progress=show_progress)
    arch = Arch.load(found.arch_path) if Path(found.arch_path).is_file() else found.arch  # with its search record
    cand = Candidate(name=label, lam=lam, arch=arch.to_dict(),
                     checkpoint=res.best_checkpoint or res.last_checkpoint, **_miou_of(res),
                     train_seconds=seconds, search_seconds=found.search_seconds, search_dir=search_dir)
    atomic_write_json(run_dir / "done.json", cand.to_dict())
    return cand


def run_random(cfg: Config, run_dir: str | Path, arch: Arch, *, resume: bool = True,
               show_progress: bool = True, kind: str = "random") -> Candidate:
    """Train one random architecture (or a fixed control, ``kind="control"``: the space's cheapest point) from
    scratch exactly like the baseline (``run_dir/train``); skipped if done.

    ``run_dir/arch.json`` keeps the architecture; the row is named ``arch.name``.
    """
    run_dir = Path(run_dir)
    if resume and (done := _done(run_dir)) is not None:
        logger.info("random architecture already trained in %s", run_dir)
        return done
    run_dir.mkdir(parents=True, exist_ok=True)
    arch.save(run_dir / "arch.json")
    res, seconds = _train_stage(cfg, run_dir / "train", arch, resume=resume, show_progress=show_progress)
    cand = Candidate(name=arch.name, lam=None, arch=arch.to_dict(), checkpoint=res.best_checkpoint or
                     res.last_checkpoint, **_miou_of(res), train_seconds=seconds, kind=kind)
    atomic_write_json(run_dir / "done.json", cand.to_dict())
    return cand


REFERENCE_DECODERS: tuple[str, ...] = ("head", "arch2")  # the per-frame models every table shows


def parse_references(text: str | None) -> tuple[str, ...]:
    """``"head,arch2"`` -> ``("head", "arch2")``; ``""`` or ``"none"`` -> ``()``.

    Raises:
        ValueError: a name outside ``REFERENCE_DECODERS`` or a repeated one.
    """
    if text is None or text.strip().lower() in ("", "none"):
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in REFERENCE_DECODERS]
    if bad:
        raise ValueError(f"--references {text!r}: unknown per-frame model {bad[0]!r}; valid: "
                         f"{', '.join(REFERENCE_DECODERS)} (or none)")
    if len(set(names)) != len(names):
        raise ValueError(f"--references {text!r}: a model is named twice")
    return names


def check_space_reference(cfg: Config, references: Sequence[str]) -> None:
    """Over ``arch2_space``, the per-frame ``arch2`` reference must be the space's arch2 point: arch2's width
    (``model.fuse_channels`` 64) on the encoder at the search's full depths (the arch2 family builds the encoder at
    its own depths, so ``model.encoder_depths`` must be those or unset). Nothing to check otherwise.

    Raises:
        ValueError: naming the value that differs.
    """
    base = arch_from_config(cfg)
    if base.decoder != "arch2_space" or "arch2" not in references:
        return
    if cfg.model.fuse_channels != ARCH2_CHANNELS:
        raise ValueError(f"model.fuse_channels={cfg.model.fuse_channels}: the per-frame arch2 reference has "
                         f"{ARCH2_CHANNELS} channels, so it is the space's arch2 point only at that width")
    hw = (cfg.data.height, cfg.data.width)
    full, own = (tuple(build_encoder(base.encoder, img_size=hw, depths=d).depths) for d in (base.depths, None))
    if full != own:
        raise ValueError(f"model.encoder_depths={list(full)}: the per-frame arch2 reference builds {base.encoder} at "
                         f"its own depths {list(own)}, not the space's full depths; unset it or drop --references "
                         "arch2")


def reference_config(cfg: Config, decoder: str) -> Config:
    """``cfg`` with the per-frame ``decoder`` (``head`` or ``arch2``) on its encoder (its own depths), window 1; the
    data, the recipe (optimiser, schedule, epochs, augmentation, loss) and the seed stay as they are."""
    if decoder not in REFERENCE_DECODERS:
        raise ValueError(f"reference decoder {decoder!r}; valid: {', '.join(REFERENCE_DECODERS)}")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, decoder=decoder, arch=None),
                               data=dataclasses.replace(cfg.data, window=1))


def run_reference(cfg: Config, run_dir: str | Path, decoder: str, *, resume: bool = True,
                  show_progress: bool = True) -> Candidate:
    """Train the per-frame ``decoder`` model of ``reference_config`` (``run_dir/train``); skipped if done.

    Its row name is ``per-frame <decoder>``."""
    run_dir = Path(run_dir)
    if resume and (done := _done(run_dir)) is not None:
        logger.info("per-frame %s already trained in %s", decoder, run_dir)
        return done
    ref_cfg = reference_config(cfg, decoder)
    arch = arch_from_config(ref_cfg)
    res, seconds = _train_stage(ref_cfg, run_dir / "train", None, resume=resume, show_progress=show_progress)
    cand = Candidate(name=f"per-frame {decoder}", lam=None, arch=arch.to_dict(),
                     checkpoint=res.best_checkpoint or res.last_checkpoint, **_miou_of(res),
                     train_seconds=seconds, kind="reference")
    atomic_write_json(run_dir / "done.json", cand.to_dict())
    return cand


def reference_lines(searched: Sequence[Candidate], references: Sequence[Candidate], *,
                    miou_key: str | None = None, label: str | None = None) -> list[str]:
    """One line per searched model and per-frame reference: FPS ratio and mIoU difference (points).

    ``label``: the searched models' row name in the table (e.g. the demo's ``searched``), default their names."""
    def miou(c: Candidate) -> float:
        return float(c.metrics.get(miou_key) if miou_key else c.score)

    out = []
    for s in searched:
        for r in references:
            fs, fr = s.metrics.get("fps"), r.metrics.get("fps")
            ratio = "-" if not fs or not fr else f"{fs / fr:.2f}x"
            out.append(f"- {label or s.name} vs {r.name}: {ratio} its FPS, {100 * (miou(s) - miou(r)):+.1f} mIoU "
                       "points")
    return out


def random_archs_for(cfg: Config, searched: Sequence[Candidate], k: int, *, mode: str = "uniform", seed: int = 0,
                     tolerance: float = 0.1, skip_encoder: bool = False, skip_decoder: bool = False) -> list[Arch]:
    """``k`` random architectures of the space the searched candidates came from (``sample_random_archs``).

    Depths: uniform per stage over ``1 .. N_s`` of the config's encoder (``skip_encoder``: the config's depths), or
    latency-matched to the searched candidates in turn (``mode="latency"``: sample ``i`` matches searched candidate
    ``i mod len(searched)``, by the block latencies recorded in its ``arch.json``). Decoder ops: uniform over
    ``stnas.candidates`` (``skip_decoder``: the config's decoder; ``arch2_space``: each slot over its own).

    ``mode="matched"``: sample ``i`` is a uniform draw of the whole space (depths and decoder ops) whose table
    latency (``table_pricer``: the searched candidate's own ``latency_table.json``) lies within ``tolerance`` of that
    of searched candidate ``i mod len(searched)`` (``sample_matched_archs``); its ``extra`` records ``matched_to``
    (the searched row name), ``table_latency_ms`` and ``target_ms``.
    """
    base = arch_from_config(cfg)
    enc = build_encoder(base.encoder, img_size=(cfg.data.height, cfg.data.width), depths=base.depths)
    full = tuple(enc.depths)
    candidates = None if skip_decoder else tuple(cfg.stnas.candidates or SEARCH_CANDIDATES)
    if k == 0:
        return []
    if mode == "uniform" or (skip_encoder and mode == "latency"):
        archs = sample_random_archs(base, full, k, candidates=candidates, seed=seed)
        if skip_encoder:
            archs = [dataclasses.replace(a, depths=base.depths) for a in archs]
        return archs
    if not searched:
        raise ValueError(f"{mode}: latency-matched random architectures need a searched model to match")
    out: list[Arch] = []
    if mode == "matched":
        if skip_encoder:
            raise ValueError("--random-mode matched draws depths too: it needs the encoder search (no --skip-encoder)")
        return matched_random_archs(cfg, [(c.name, Arch.from_dict(c.arch), c.search_dir) for c in searched], k,
                                    seed=seed, tolerance=tolerance, skip_decoder=skip_decoder)
    for i in range(k):
        ref = searched[i % len(searched)]
        rec = (Arch.from_dict(ref.arch).extra.get("search") or {}).get("depth") or {}
        lat = rec.get("block_latencies")
        if not lat:
            raise ValueError(f"{ref.name}: its arch.json records no block latencies to match")
        # one draw per sample, each from its own seed, so adding samples never changes the earlier ones
        arch = sample_random_archs(base, full, 1, candidates=candidates, seed=seed * 100_003 + i, mode="latency",
                                   block_latencies=lat, reference_depths=ref.arch["depths"], tolerance=tolerance)[0]
        out.append(dataclasses.replace(arch, name=f"random{i}"))
    return out


def matched_random_archs(cfg: Config, searched: Sequence[tuple[str, Arch, Path | None]], k: int, *, seed: int = 0,
                         tolerance: float = 0.1, skip_decoder: bool = False) -> list[Arch]:
    """``k`` random architectures (``random0`` ...), sample ``i`` latency-matched to searched model
    ``i mod len(searched)`` (``random_archs_for``'s ``matched`` mode); ``searched``: (row name, derived
    architecture, search directory) per searched model, from a finished search (``run_search``) or training."""
    if not searched:
        raise ValueError("matched: latency-matched random architectures need a searched model to match")
    base = arch_from_config(cfg)
    enc = build_encoder(base.encoder, img_size=(cfg.data.height, cfg.data.width), depths=base.depths)
    candidates = None if skip_decoder else tuple(cfg.stnas.candidates or SEARCH_CANDIDATES)
    out: list[Arch] = []
    for j, (name, arch, search_dir) in enumerate(searched):
        mine = [i for i in range(k) if i % len(searched) == j]
        if not mine:
            continue
        price = table_pricer(cfg, name, search_dir)
        target = price(arch)
        # one seed per searched model, so a second searched model never changes the first one's draws
        archs = sample_matched_archs(base, tuple(enc.depths), len(mine), candidates=candidates, price=price,
                                     target_ms=target, seed=seed * 1009 + j, tolerance=tolerance)
        for i, a in zip(mine, archs, strict=True):
            out.append(dataclasses.replace(a, name=f"random{i}", extra={
                "matched_to": name, "table_latency_ms": price(a), "target_ms": target}))
    return sorted(out, key=lambda a: int(a.name[len("random"):]))


def table_pricer(cfg: Config, name: str, search_dir: Path | None) -> Callable[[Arch], float]:
    """Table latency (ms per frame) of an architecture of the space searched in ``search_dir`` (row ``name``):
    ``LatencyTable.model_latency`` of the search's ``latency_table.json``, on the config's full-depth encoder, every
    decoder priced at the search's window (``data.window``: the table's decoder parts are timed on that window, so a
    per-frame model of window 1 is priced as the search priced it); K = the classes of the config's data set.

    Raises:
        ValueError: no search directory or no table in it (the message names the file).
    """
    if search_dir is None:
        raise ValueError(f"{name}: no search directory, so no latency table to match random models with")
    path = Path(search_dir) / "latency_table.json"
    if not path.is_file():
        raise ValueError(f"{path}: no latency table (latency-matched random models need the encoder search's table)")
    table = LatencyTable.load(path)
    base = arch_from_config(cfg)
    encoder = build_encoder(base.encoder, img_size=(cfg.data.height, cfg.data.width), depths=base.depths)
    num_classes = open_source(cfg.data).num_classes

    def price(arch: Arch) -> float:
        return table.model_latency(encoder, arch.depths, dataclasses.replace(arch, window=base.window), num_classes)

    return price


def cheapest_arch(cfg: Config) -> Arch:
    """The cheapest point of the config's ``arch2_space`` space, named ``cheapest``: one block per encoder stage (the
    depth search's minimum) and ``CHEAPEST_OPS`` (per frame, window 1).

    Raises:
        ValueError: the config's decoder is not ``arch2_space``.
    """
    base = arch_from_config(cfg)
    if base.decoder != "arch2_space":
        raise ValueError(f"the cheapest-point control is defined for the arch2_space decoder, not {base.decoder!r}")
    enc = build_encoder(base.encoder, img_size=(cfg.data.height, cfg.data.width), depths=base.depths)
    return dataclasses.replace(base, depths=(1,) * len(enc.depths), decoder_ops=CHEAPEST_OPS, window=1,
                               name="cheapest", extra={})


def deployed_fps(c: Candidate) -> float | None:
    """The FPS a model deploys at: the incremental protocol's where it streams incrementally (a causal temporal
    model), else the window protocol's (a per-frame model is the same under both)."""
    inc = c.metrics.get("inc_fps")
    return inc if inc is not None else c.metrics.get("fps")


def _fps(c: Candidate, fps_key: str) -> float | None:
    return deployed_fps(c) if fps_key == "deployed" else c.metrics.get(fps_key)


def dominated(a: Candidate, b: Candidate, *, miou_key: str | None = None, fps_key: str = "fps") -> bool:
    """Whether ``a`` dominates ``b``: FPS and mIoU both at least ``b``'s, one of them higher.

    mIoU: ``metrics[miou_key]`` if given (e.g. the demo's streaming ``miou``), else ``score``. FPS:
    ``metrics[fps_key]`` (``fps``: the window protocol, ``inc_fps``), or ``deployed`` (``deployed_fps``).
    """
    def miou(c: Candidate) -> float:
        return float(c.metrics.get(miou_key) if miou_key else c.score)

    fa, fb = _fps(a, fps_key), _fps(b, fps_key)
    if fa is None or fb is None:
        return False
    return fa >= fb and miou(a) >= miou(b) and (fa > fb or miou(a) > miou(b))


def dominance_counts(searched: Sequence[Candidate], randoms: Sequence[Candidate], *,
                     miou_key: str | None = None) -> dict[str, dict[str, int]]:
    """Per searched candidate: how many random ones it dominates, how many dominate it, out of how many."""
    return {s.name: {"dominates": sum(dominated(s, r, miou_key=miou_key) for r in randoms),
                     "dominated_by": sum(dominated(r, s, miou_key=miou_key) for r in randoms),
                     "random": len(randoms)} for s in searched}


def control_summary(searched: Sequence[Candidate], randoms: Sequence[Candidate], controls: Sequence[Candidate], *,
                    miou_key: str | None = None) -> dict[str, dict[str, Any]]:
    """Per searched candidate, against its controls: the fixed ones (``controls``: per-frame references, the
    cheapest point) and the random architectures latency-matched to it (``extra.matched_to`` = its name; all
    ``randoms`` when none records a match).

    Returns, per searched name: ``controls`` (how many), ``dominates`` / ``dominated_by`` on the window-protocol FPS
    and mIoU, ``dominates_deployed`` / ``dominated_by_deployed`` on the deployed FPS (``deployed_fps``); ``matched``:
    ``n``, ``names``, mIoU ``mean``, ``std`` (population), ``min``, ``max`` and ``delta`` (searched - mean); and per
    fixed control (``vs``, by row name): ``fps_ratio`` (window protocol), ``deployed_fps_ratio`` and
    ``miou_delta`` (searched - control), mIoU as ``dominated`` reads it.
    """
    def miou(c: Candidate) -> float:
        return float(c.metrics.get(miou_key) if miou_key else c.score)

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if not a or not b else a / b

    out: dict[str, dict[str, Any]] = {}
    for s in searched:
        mine = [r for r in randoms if (r.arch.get("extra") or {}).get("matched_to") == s.name]
        if not any((r.arch.get("extra") or {}).get("matched_to") for r in randoms):
            mine = list(randoms)
        every = [*controls, *mine]
        scores = [miou(r) for r in mine]
        mean = sum(scores) / len(scores) if scores else None
        std = None if mean is None else (sum((x - mean) ** 2 for x in scores) / len(scores)) ** 0.5
        out[s.name] = {
            "controls": len(every),
            "dominates": sum(dominated(s, c, miou_key=miou_key) for c in every),
            "dominated_by": sum(dominated(c, s, miou_key=miou_key) for c in every),
            "dominates_deployed": sum(dominated(s, c, miou_key=miou_key, fps_key="deployed") for c in every),
            "dominated_by_deployed": sum(dominated(c, s, miou_key=miou_key, fps_key="deployed") for c in every),
            "matched": {"n": len(mine), "names": [r.name for r in mine], "mean": mean, "std": std,
                        "min": min(scores) if scores else None, "max": max(scores) if scores else None,
                        "delta": None if mean is None else miou(s) - mean},
            "vs": {c.name: {"fps_ratio": ratio(s.metrics.get("fps"), c.metrics.get("fps")),
                            "deployed_fps_ratio": ratio(deployed_fps(s), deployed_fps(c)),
                            "miou_delta": miou(s) - miou(c)} for c in controls},
        }
    return out


def control_lines(summary: dict[str, dict[str, Any]], *, label: str | None = None) -> list[str]:
    """The verdict of ``control_summary`` in words, per searched model (mIoU differences in points)."""
    lines = []
    for name, c in summary.items():
        who = label or name
        lines.append(f"- {who} dominates {c['dominates']} of {c['controls']} controls on window-protocol FPS and mIoU "
                     f"({c['dominated_by']} dominate it); on deployed FPS {c['dominates_deployed']} "
                     f"({c['dominated_by_deployed']} dominate it)")
        m = c["matched"]
        if m["n"]:
            lines.append(f"- {who} vs {m['n']} latency-matched random architectures: {100 * m['delta']:+.1f} mIoU "
                         f"points from their mean {m['mean']:.4f} (std {m['std']:.4f}, min {m['min']:.4f}, max "
                         f"{m['max']:.4f})")
        for ref, v in c["vs"].items():
            fr = "-" if v["deployed_fps_ratio"] is None else f"{v['deployed_fps_ratio']:.2f}x"
            fw = "-" if v["fps_ratio"] is None else f"{v['fps_ratio']:.2f}x"
            lines.append(f"- {who} vs {ref}: {fr} its deployed FPS ({fw} window protocol), "
                         f"{100 * v['miou_delta']:+.1f} mIoU points")
    return lines


def benchmark_candidates(
    candidates: Sequence[Candidate],
    *,
    frames: int,
    warmup: int,
    device: str = "cpu",
) -> list[Any]:
    """Time every candidate interleaved in one run under both protocols (ST-NAS: encode 1 frame + decode the window;
    incremental: one decoder step, for the models that stream incrementally) and count params / FLOPs.

    Returns the ``BenchRow``s (name = candidate name); each candidate's ``metrics`` gets ``fps``, ``latency_ms``,
    ``params``, ``gflops``, ``encoder_ms``, ``decoder_ms`` and ``inc_fps`` / ``inc_latency_ms`` (None where the model
    has no incremental decode).
    """
    models: dict[str, Any] = {}
    size: tuple[int, int] | None = None
    for cand in candidates:
        loaded = load_model(cand.checkpoint, device=device)
        models[cand.name] = loaded.model
        size = loaded.img_size
    assert size is not None
    rows = protocol_rows(models, img_size=size, warmup=warmup, frames=frames, flops=True, incremental=True)
    for cand, row in zip(candidates, rows, strict=True):
        cand.metrics.update(fps=row.fps, latency_ms=row.latency_ms, params=row.params, gflops=row.gflops,
                            encoder_ms=row.extra.get("encoder_ms"), decoder_ms=row.extra.get("decoder_ms"),
                            inc_fps=row.extra.get("inc_fps"), inc_latency_ms=row.extra.get("inc_latency_ms"))
    return rows
