"""``load_model``: the one loader of every kind of model checkpoint, for evaluation, benchmarks, export, prediction
and the searches.

Kinds (``MODEL_KINDS``), told apart by what the checkpoint holds:

* ``window``: a ``VideoSegmenter`` written by ``vidnas train`` (SP-TCN, per-frame head, or an ST-NAS-derived model
  when the checkpoint carries its ``arch``);
* ``arch2``: the static segmenter of the cell search (``vidnas train --model arch2``, or ``static/static.pt`` of a
  cell search);
* ``cell``: a dynamic-cell model of ``vidnas search cells`` (``top/cellN/model.pt``: the checkpoint has a ``cell``,
  and a ``static_arch`` when its static network is a per-frame ``arch2_space`` model rather than arch2).

The checkpoint holds every weight, so no pretrained encoder weights are loaded first. Streaming settings are not the
loader's business: pass them to ``model.stream(...)``.

Example:
    >>> loaded = load_model("runs/cv/checkpoints/best.pt")
    >>> model = loaded.model                                   # eval mode, on the requested device
    >>> streamer = model.stream(batch_size=1)                  # WindowStreamer or FrameStreamer
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidnas.checkpoint import CheckpointError, load_checkpoint
from vidnas.config import Config, ConfigError, apply_overrides, config_from_dict
from vidnas.data import resolve_palette
from vidnas.models.architecture import Arch
from vidnas.models.build import arch_from_config, build_model
from vidnas.models.cells import CellGenotype, build_cell_model

__all__ = ["MODEL_KINDS", "LoadedModel", "load_model", "checkpoint_kind"]

logger = logging.getLogger(__name__)

MODEL_KINDS: tuple[str, ...] = ("window", "arch2", "cell")
_WEIGHT_ENTRIES = ("model", "optimizer", "weight_optimizer", "arch_optimizer")  # not kept in LoadedModel.checkpoint


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, in eval mode, and what the checkpoint says about it.

    Attributes:
        model: the network (``VideoSegmenter``, ``StaticSegmenter`` or ``DynamicCellModel``).
        kind: one of ``MODEL_KINDS``.
        cfg: the config it was built from (the checkpoint's, with any ``img_size`` override applied).
        path: the checkpoint file.
        num_classes: K.
        class_names: K names (``class{i}`` when the checkpoint has none).
        trained_causal: the temporal mode it was trained with (frame models: always causal).
        arch: the architecture of a window or arch2 model; None for cell models.
        genotype: the cell of a cell model; None otherwise.
        checkpoint: the checkpoint's other entries (epoch, history, metrics...), without weights or optimiser state.
    """

    model: nn.Module
    kind: str
    cfg: Config
    path: Path
    num_classes: int
    class_names: list[str]
    trained_causal: bool
    arch: Arch | None = None
    genotype: CellGenotype | None = None
    checkpoint: dict[str, Any] = field(default_factory=dict)

    @property
    def img_size(self) -> tuple[int, int]:
        """(H, W) the model takes."""
        return int(self.cfg.data.height), int(self.cfg.data.width)

    @property
    def name(self) -> str:
        """The architecture's or cell's name, else ``""``."""
        if self.genotype is not None:
            return self.genotype.name
        return self.arch.name if self.arch is not None else ""

    @functools.cached_property
    def _palette(self) -> tuple[np.ndarray, str]:
        return resolve_palette(self.cfg.data, self.num_classes)

    @property
    def palette(self) -> np.ndarray:
        """uint8 (K, 3) display colours: the data set's when it opens here, else the default colour map."""
        return self._palette[0]

    @property
    def palette_source(self) -> str:
        """Where ``palette`` came from: ``data:<format>`` or ``default``."""
        return self._palette[1]


def checkpoint_kind(state: dict[str, Any], path: str | Path = "checkpoint") -> str:
    """Which of ``MODEL_KINDS`` a loaded checkpoint dict holds.

    Raises:
        CheckpointError: not a model checkpoint (an ST-NAS search phase, or entries missing); says what was found.
    """
    if "phase" in state:
        raise CheckpointError(
            f"{path} is an ST-NAS supernet checkpoint (phase {state['phase']!r}), not a model: train the derived "
            "model with `vidnas train --arch RUN/arch.json` (optionally --init RUN/derived_init.pt)")
    missing = [k for k in ("model", "config", "num_classes") if k not in state]
    if missing:
        raise CheckpointError(
            f"{path}: unknown kind of checkpoint (entries {sorted(state)}; missing {missing}); expected a model "
            "checkpoint of `vidnas train` (model, config, num_classes[, arch]) or of `vidnas search cells` "
            "(model, config, num_classes, cell)")
    if "cell" in state:
        return "cell"
    arch = state.get("arch")
    decoder = arch.get("decoder") if isinstance(arch, dict) else (state["config"].get("model") or {}).get("decoder")
    return "arch2" if decoder == "arch2" else "window"


def load_model(
    path: str | Path,
    *,
    device: str = "cpu",
    img_size: Sequence[int] | None = None,
    causal: bool | None = None,
    kinds: Sequence[str] = MODEL_KINDS,
) -> LoadedModel:
    """Rebuild the model a checkpoint holds (its stored config, and architecture or cell) and load its weights.

    Args:
        path: a model checkpoint (``checkpoints/best.pt``, ``last.pt``, ``derived_init.pt``, ``static.pt``,
            ``top/cellN/model.pt``).
        device: torch device of the returned model.
        img_size: (H, W) to build the model for; None = the training size. Swin fixes its attention windows from
            the input size, so another size works only when every stage keeps the same window (else an error).
            Frame models (arch2, cells) are convolutional and take any size.
        causal: window models: override the temporal mode (True causal, False centred); None = as trained. The
            decoder weights fit either mode, but a model is most accurate in the mode it was trained with (a warning
            says so). Frame models are causal by construction (``causal=False`` is refused).
        kinds: the kinds the caller accepts (e.g. ``("arch2",)`` for the cell search's static network).

    Returns:
        A ``LoadedModel`` whose ``model`` is in eval mode on ``device``.

    Raises:
        CheckpointError: missing or unreadable file, an unknown kind of checkpoint, a kind not in ``kinds``, or
            weights that do not fit the rebuilt model; the message names the file.
    """
    path = Path(path)
    state = load_checkpoint(path)
    kind = checkpoint_kind(state, path)
    if kind not in kinds:
        raise CheckpointError(f"{path} holds a {kind} model; expected {' or '.join(kinds)}")
    try:
        cfg = config_from_dict(state["config"])
        if img_size is not None:
            cfg = apply_overrides(cfg, [f"data.height={int(img_size[0])}", f"data.width={int(img_size[1])}"])
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read the stored config: {e}") from e
    # the checkpoint holds every weight: never load pretrained encoder weights first
    build_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=None, arch=None))
    num_classes = int(state["num_classes"])
    arch: Arch | None = None
    genotype: CellGenotype | None = None
    try:
        if kind == "cell":
            if causal is False:
                raise CheckpointError(f"{path} is a dynamic-cell model: it is causal by construction (no centred mode)")
            genotype = CellGenotype.from_dict(state["cell"], source=str(path))
            static_arch = Arch.from_dict(state["static_arch"], source=str(path)) if state.get("static_arch") else None
            model = build_cell_model(build_cfg, genotype, num_classes=num_classes, static_arch=static_arch)
            trained_causal = True
        else:
            arch = Arch.from_dict(state["arch"], source=str(path)) if state.get("arch") else arch_from_config(cfg)
            if kind == "arch2" and causal is False:
                raise CheckpointError(f"{path} is the arch2 static segmenter: a frame model, causal by construction")
            trained_causal = arch.causal
            if causal is not None and causal != arch.causal and kind == "window":
                logger.warning("%s was trained %s; running it %s as asked (expect lower accuracy)", path,
                               "causal" if arch.causal else "centred", "causal" if causal else "centred")
                arch = dataclasses.replace(arch, causal=causal)
            model = build_model(build_cfg, arch, num_classes=num_classes)
    except CheckpointError:
        raise
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot rebuild the {kind} model from its stored config: {e}") from e
    bad = [k for k, v in state["model"].items() if torch.is_tensor(v) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} of {len(state['model'])} weight tensors hold NaN or inf (e.g. "
                              f"{bad[0]}): the training diverged; train again with a lower learning rate")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        size = f" at {img_size[0]}x{img_size[1]}" if img_size is not None else ""
        detail = " ".join(line.strip() for line in str(e).splitlines()[1:3]) or str(e)
        hint = (" (Swin sizes its attention windows from the input: pick a size at which every stage keeps the "
                "training windows, or keep the training size)") if img_size is not None else ""
        raise CheckpointError(f"{path}: the weights do not fit the {kind} model rebuilt{size}: {detail}{hint}") from e
    model.to(device).eval()
    names = [str(n) for n in state.get("class_names") or []] or [f"class{i}" for i in range(num_classes)]
    rest = {k: v for k, v in state.items() if k not in _WEIGHT_ENTRIES}
    return LoadedModel(model=model, kind=kind, cfg=cfg, path=path, num_classes=num_classes, class_names=names,
                       trained_causal=trained_causal, arch=arch, genotype=genotype, checkpoint=rest)
