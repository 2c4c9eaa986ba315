"""The static network of the cell search: train one on a small budget, or adopt a trained one (``--static CKPT``).

A trained static network is any per-frame model vidnas builds with arch2's decoder tail
(``vidnas.models.cells.STATIC_DECODERS``): arch2 on any encoder (``vidnas train --model arch2``), or an
``arch2_space`` point without a temporal op at any encoder depths (the per-frame result of
``vidnas search stnas --model arch2_space``, trained by ``vidnas train --arch RUN/arch.json``; the space's arch2 point
on a searched, shallower encoder). The cell reads its encoder's ``layer2``, ``layer3``, ``layer4`` and ``dec``, the
static decoder's final feature before its classifier (``vidnas.models.cells.model``). ``adopt_static_model`` refuses
anything else (a temporal op, SP-TCN / MS-TCN / head decoders, a cell model, an ST-NAS supernet) in one line naming
the file, before any work; ``load_static_network`` loads it as a ``StaticSegmenter``.

The checkpoint written here is an ordinary ``vidnas train`` checkpoint of the arch2 static segmenter, so it evaluates
with ``vidnas eval`` and benchmarks with ``vidnas bench`` like any other.

Pre-training follows [CELLS appendix] where it can on a small budget: SGD with momentum 0.9, the 'poly' schedule
(power 0.9), learning rates 5e-2 for the encoder and 1e-2 for the decoder, auxiliary losses weighted 0.3
(``cells.aux_weight``); one frame per sample (window 1) with the data config's augmentation. It runs in the training
engine (``vidnas.engine.train``), so it logs, validates and resumes like ``vidnas train``.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidnas.checkpoint import CheckpointError, load_checkpoint
from vidnas.config import Config, ConfigError, config_from_dict
from vidnas.data import ClipDataset, open_source
from vidnas.engine.train import train
from vidnas.models import StaticSegmenter, load_model
from vidnas.models.architecture import Arch, ArchError
from vidnas.models.build import arch_from_config
from vidnas.models.cells import CellError, as_static_network, static_network_error
from vidnas.models.encoders.swin import SWIN_VARIANTS
from vidnas.models.loading import checkpoint_kind
from vidnas.search.cells.meta_split import MetaSplit, dataset_windows, split_meta, split_meta_frames
from vidnas.search.cells.options import deployment_size, search_data_config
from vidnas.utils import atomic_write

__all__ = [
    "ENCODER_LR",
    "DECODER_LR",
    "CNN_ENCODER",
    "static_network_config",
    "adopt_static_model",
    "load_static_network",
    "prepare_static",
    "train_static",
    "static_identity",
]

logger = logging.getLogger(__name__)

ENCODER_LR = 5e-2  # [CELLS appendix]
DECODER_LR = 1e-2  # [CELLS appendix]
CNN_ENCODER = "mobilenetv2"  # [CELLS] the static network's encoder


def static_network_config(cfg: Config, *, encoder_chosen: bool) -> tuple[Config, str | None]:
    """The config a static network is trained from: the paper's static network is a CNN, so a Swin ``model.encoder``
    (the ST-NAS default) becomes ``CNN_ENCODER`` unless the user chose an encoder.

    Returns:
        (config, a note for the user or None).
    """
    if encoder_chosen or not cfg.model.encoder.startswith("swin"):
        return cfg, None
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, encoder=CNN_ENCODER))
    return cfg, f"static network encoder: {CNN_ENCODER} (model.encoder was a Swin; pass --encoder to choose)"


def _static_arch(state: dict[str, Any], static: str | Path) -> Arch:
    """The architecture of the model checkpoint ``state`` (read from ``static``), checked as a static network.

    Raises:
        CheckpointError: not a model checkpoint, a cell model, or not a per-frame arch2 / arch2_space model; the
            message names the file and why.
    """
    kind = checkpoint_kind(state, static)
    if kind == "cell":
        raise CheckpointError(f"--static {static} holds a dynamic-cell model; the cell search needs the per-frame "
                              "static network it was built on (arch2, or a per-frame arch2_space model)")
    try:
        arch = Arch.from_dict(state["arch"], source=str(static)) if state.get("arch") else \
            arch_from_config(config_from_dict(state["config"]))
    except (ArchError, ConfigError, KeyError, TypeError) as e:
        raise CheckpointError(f"--static {static}: cannot read its architecture: {e}") from e
    error = static_network_error(arch)
    if error:
        raise CheckpointError(f"--static {static}: not a static network for the cell search: {error}")
    return arch


def adopt_static_model(cfg: Config, static: str | Path) -> tuple[Config, str | None]:
    """``cfg`` with the model section of the static checkpoint ``static``: the cell models of a search are built on
    that network, so its own encoder (not the config's) is what their checkpoints must record to load again. An
    ``arch2_space`` network's encoder, depths, decoder and width come from its architecture (its decoder ops are
    saved in the cell checkpoints, ``static_arch``).

    Returns:
        (config, a note for the user when the config's model differed, else None).

    Raises:
        CheckpointError: ``static`` is missing, unreadable or not a per-frame static network (``_static_arch``);
            a Swin encoder the search would run at another size than its training size (proxy, top-k or timing).
    """
    state = load_checkpoint(static)
    arch = _static_arch(state, static)
    own_cfg = config_from_dict(state["config"])
    own = own_cfg.model
    if arch.encoder in SWIN_VARIANTS:  # timm's Swin fixes its attention windows from the size it was built for
        trained = (own_cfg.data.height, own_cfg.data.width)
        sizes = {"cached features (cells.proxy_scale)": search_data_config(cfg), "top-k training": cfg.data}
        runs = [f"{what} {d.height}x{d.width}" for what, d in sizes.items() if (d.height, d.width) != trained]
        h, w = deployment_size(cfg)
        runs += [f"timing (cells.latency_size) {h}x{w}"] if (h, w) != trained else []
        if runs:
            raise CheckpointError(f"--static {static}: its Swin encoder is built for its training size "
                                  f"{trained[0]}x{trained[1]} but the search would run it at: {'; '.join(runs)}; "
                                  "set data.height/width to that size with cells.proxy_scale=1, or use a CNN encoder")
    if arch.decoder == "arch2":
        model = dataclasses.replace(own, decoder="arch2", arch=None, weights=None)
    else:
        model = dataclasses.replace(own, encoder=arch.encoder, encoder_depths=arch.depths, decoder=arch.decoder,
                                    fuse_channels=arch.fuse_channels, arch=None, weights=None)
    note = None
    if model.encoder != cfg.model.encoder:
        note = (f"static network encoder: {model.encoder}, as {static} was trained (the config's "
                f"model.encoder={cfg.model.encoder} does not apply to it)")
    return dataclasses.replace(cfg, model=model), note


def load_static_network(static: str | Path, *, device: str = "cpu") -> tuple[StaticSegmenter, Config, Arch | None]:
    """Load the static network of a cell search (eval mode, on ``device``).

    Returns:
        (the network as a ``StaticSegmenter``, its training config, its architecture when it is an ``arch2_space``
        model (the cell checkpoints record it, ``static_arch``), else None).

    Raises:
        CheckpointError: as ``adopt_static_model``, or weights that do not fit.
    """
    _static_arch(load_checkpoint(static), static)  # one-line refusal before the model is built
    loaded = load_model(static, device=device, kinds=("arch2", "window"))
    try:
        network = as_static_network(loaded.model)
    except CellError as e:
        raise CheckpointError(f"--static {static}: {e}") from e
    arch = loaded.arch if loaded.kind == "window" else None
    return network, loaded.cfg, arch


def search_meta_split(cfg: Config) -> MetaSplit:
    """The meta split the search of ``cfg`` will make (``cells.meta_split``, ``cells.meta_val_fraction``,
    ``train.seed`` over the search's windows of the train split), computed from the frame lists alone."""
    data_cfg = search_data_config(cfg)
    ds = ClipDataset(open_source(data_cfg), data_cfg.train_split, data_cfg, train=False)
    if cfg.cells.meta_split == "window":
        return MetaSplit(*split_meta(len(ds), cfg.cells.meta_val_fraction, cfg.train.seed), mode="window")
    return split_meta_frames(dataset_windows(ds), cfg.cells.meta_val_fraction, cfg.train.seed, cfg.cells.meta_split)


def meta_val_seen(static_cfg: Config, meta: MetaSplit) -> list[str]:
    """The meta-val videos whose frames the static network trained on: those of ``meta.val_videos`` not held out
    by its ``data.selection_videos`` (every one of them when the split is not by video: meta-val then shares videos
    with meta-train, which the static network trained on)."""
    if meta.mode != "video":
        return list(meta.val_videos)
    return sorted(set(meta.val_videos) - set(static_cfg.data.selection_videos))


def prepare_static(cfg: Config, run_dir: str | Path, static: str | Path | None, *, resume: bool, epochs: int,
                   max_steps_per_epoch: int | None = None, show_progress: bool = False,
                   say: Callable[[str], Any] | None = None) -> Path:
    """The static network of a cell search: ``static`` if given, the one an interrupted run trained (``resume``), or
    one trained now on a small budget (``train_static`` into ``run_dir/static``).

    Args:
        say: called with one line per decision (the CLI prints them).
    """
    if static is not None:
        return Path(static)
    existing = Path(run_dir) / "static" / "static.pt"
    if resume and existing.exists():
        if say:
            say(f"static network: {existing} (trained by the interrupted run)")
        return existing
    # the reward is scored on meta-val: a static network that trained on those frames favours cells that copy it
    meta = search_meta_split(cfg)
    held = list(meta.val_videos) if meta.mode == "video" else []
    if say:
        say(f"no --static checkpoint: training the static arch2 network ({cfg.model.encoder}) for {epochs} epoch(s) "
            "first, a small budget; pass --static to use a properly trained one (`vidnas train --model arch2 ...`)")
        say(f"the static network trains without the meta-val videos ({', '.join(held)})" if held else
            f"cells.meta_split={cfg.cells.meta_split} gives no whole meta-val video ({meta.mode} split): the static "
            "network trains on the meta-val frames too")
    again = resume and (Path(run_dir) / "static" / "checkpoints" / "last.pt").exists()
    static_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, selection_videos=tuple(held)))
    path = train_static(static_cfg, Path(run_dir) / "static", epochs=epochs, max_steps_per_epoch=max_steps_per_epoch,
                        show_progress=show_progress, resume=again)
    if say:
        say(f"static network: {path}")
    return path


def train_static(cfg: Config, out_dir: str | Path, *, epochs: int, batch_size: int | None = None,
                 max_steps_per_epoch: int | None = None, show_progress: bool = False, resume: bool = False) -> Path:
    """Pre-train arch2 per frame on ``cfg.data``'s train split with the training engine; returns ``static.pt``.

    The run is an ordinary ``vidnas train`` run in ``out_dir`` (``metrics.jsonl``, ``curves.png``, ``checkpoints/``)
    with the [CELLS appendix] recipe as config overrides: ``model.decoder=arch2``, window 1, SGD (momentum 0.9, no
    weight decay), poly schedule, decoder lr ``DECODER_LR`` and encoder lr ``ENCODER_LR``
    (``train.encoder_lr_scale``), auxiliary losses weighted ``cells.aux_weight``. The last checkpoint is copied to
    ``out_dir/static.pt``.

    Args:
        cfg: resolved config (``data``, ``model.encoder``, ``model.weights``, ``train.seed``, ``train.device``,
            ``cells.aux_weight``).
        out_dir: the run directory.
        epochs: the budget.
        batch_size: frames per step (default ``train.batch_size``).
        max_steps_per_epoch: cap on steps per epoch (default ``train.max_steps_per_epoch``).
        show_progress: tqdm bars.
        resume: continue an interrupted pre-training in ``out_dir`` (its ``checkpoints/last.pt``).

    Returns:
        The checkpoint path (``out_dir/static.pt``).
    """
    if epochs < 1:
        raise ValueError(f"static pre-training needs epochs >= 1, got {epochs}")
    cap = max_steps_per_epoch if max_steps_per_epoch is not None else cfg.train.max_steps_per_epoch
    run_cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, window=1, temporal="causal", supervise="target"),
        model=dataclasses.replace(cfg.model, decoder="arch2", arch=None),
        train=dataclasses.replace(cfg.train, epochs=epochs, batch_size=batch_size or cfg.train.batch_size,
                                  max_steps_per_epoch=cap, optimizer="sgd", schedule="poly", lr=DECODER_LR,
                                  encoder_lr_scale=ENCODER_LR / DECODER_LR, weight_decay=0.0,
                                  aux_weight=cfg.cells.aux_weight),
    )
    out_dir = Path(out_dir)
    res = train(run_cfg, out_dir, show_progress=show_progress, resume=resume)
    target = atomic_write(out_dir / "static.pt", lambda tmp: shutil.copyfile(res.last_checkpoint, tmp))
    logger.info("static network pre-trained for %d epoch(s): %s", epochs, target)
    return target


def static_identity(path: str | Path) -> dict[str, Any]:
    """Identity of a checkpoint file for cache keys: resolved path, size and modification time."""
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
