"""Rebuild a trained model from a checkpoint for deployment: optional input size / temporal mode overrides, palette.

A checkpoint written by ``vidnas train`` holds the resolved config, the architecture (or None: the config's own),
``num_classes`` and ``class_names`` but no palette; the palette comes from the data set the config names when that can
be opened here (the synthetic default always can), else the default (PASCAL VOC) colour map.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DeployError", "LoadedCheckpoint", "load_for_inference", "resolve_palette"]

logger = logging.getLogger(__name__)


class DeployError(ValueError):
    """A checkpoint, export directory or option cannot be used for deployment; the message names the file."""


@dataclass
class LoadedCheckpoint:
    """A model rebuilt from a checkpoint, in eval mode on the CPU.

    Attributes:
        model: the ``VideoSegmenter``.
        cfg: the config it was built from (with any overrides applied).
        path: the checkpoint file.
        img_size: (H, W) the model takes.
        class_names: K names (``class{i}`` when the checkpoint has none).
        palette: uint8 (K, 3) display colours.
        palette_source: where the palette came from (``data:<format>`` or ``default``).
        trained_causal: the temporal mode the checkpoint was trained with.
    """

    model: Any
    cfg: Any
    path: Path
    img_size: tuple[int, int]
    class_names: list[str]
    palette: np.ndarray
    palette_source: str
    trained_causal: bool


def load_for_inference(
    path: str | Path,
    *,
    img_size: tuple[int, int] | None = None,
    causal: bool | None = None,
    key_interval: int | None = None,
) -> LoadedCheckpoint:
    """Rebuild the model of a ``vidnas train`` checkpoint and load its weights.

    Args:
        path: checkpoint (``checkpoints/best.pt`` or ``last.pt``).
        img_size: (H, W) to build the model for; None = the training size. Swin fixes its attention windows from the
            input size, so a different size works only when every stage keeps the same window (else DeployError).
        causal: override the temporal mode (True causal, False centred); None = as trained. The decoder weights fit
            either mode, but a model is most accurate in the mode it was trained with (a warning says so).
        key_interval: dynamic-cell models only: re-run the static network every ``key_interval`` frames.

    Raises:
        DeployError: missing or unreadable checkpoint, or weights that do not fit the requested size (names the file).
    """
    from vidnas.config import apply_overrides, config_from_dict
    from vidnas.engine.checkpoint import CheckpointError, load_checkpoint
    from vidnas.models import Arch, arch_from_config, build_model

    path = Path(path)
    try:
        state = load_checkpoint(path)
    except CheckpointError as e:
        raise DeployError(str(e)) from e
    if "cell" in state:  # a dynamic-cell model of `vidnas search cells` (top/cellN/model.pt)
        return _load_cell(path, state, img_size=img_size, causal=causal, key_interval=key_interval)
    if key_interval is not None:
        raise DeployError(f"--key-interval applies to dynamic-cell models only; {path} is not one")
    try:
        cfg = config_from_dict(state["config"])
        if img_size is not None:
            cfg = apply_overrides(cfg, [f"data.height={int(img_size[0])}", f"data.width={int(img_size[1])}"])
        arch = Arch.from_dict(state["arch"]) if state.get("arch") else arch_from_config(cfg)
    except (KeyError, ValueError) as e:
        raise DeployError(f"{path}: cannot rebuild the model from its stored config/arch: {e}") from e
    trained_causal = arch.causal
    if causal is not None and causal != arch.causal:
        logger.warning("%s was trained %s; running it %s as asked (expect lower accuracy)", path,
                       "causal" if arch.causal else "centred", "causal" if causal else "centred")
        arch = dataclasses.replace(arch, causal=causal)
    num_classes = int(state["num_classes"])
    try:
        model = build_model(cfg, arch, num_classes=num_classes)
        model.load_state_dict(state["model"])
    except (RuntimeError, ValueError) as e:
        size = f" at {img_size[0]}x{img_size[1]}" if img_size is not None else ""
        detail = " ".join(line.strip() for line in str(e).splitlines()[1:3]) or str(e)
        hint = (" (Swin sizes its attention windows from the input: pick a size at which every stage keeps the "
                "training windows, or keep the training size)") if img_size is not None else ""
        raise DeployError(f"{path}: the weights do not fit the model rebuilt{size}: {detail}{hint}") from e
    model.eval()
    names = [str(n) for n in state.get("class_names") or []] or [f"class{i}" for i in range(num_classes)]
    palette, source = resolve_palette(cfg, num_classes)
    return LoadedCheckpoint(model=model, cfg=cfg, path=path, img_size=(cfg.data.height, cfg.data.width),
                            class_names=names, palette=palette, palette_source=source, trained_causal=trained_causal)


def _load_cell(path: Path, state: dict[str, Any], *, img_size: tuple[int, int] | None,
               causal: bool | None, key_interval: int | None = None) -> LoadedCheckpoint:
    """``load_for_inference`` for a dynamic-cell model: static network on the first frame, encoder + cell after.

    The model is convolutional and frame by frame (no attention windows), so any input size builds; it is causal by
    construction (each frame uses the previous one only).
    """
    from vidnas.config import apply_overrides
    from vidnas.models.cell import CellError, load_cell_model, set_key_interval

    if causal is False:
        raise DeployError(f"{path} is a dynamic-cell model: it is causal by construction (no centred mode)")
    try:
        model, cfg, _ = load_cell_model(path)
    except (KeyError, ValueError, RuntimeError) as e:
        raise DeployError(f"{path}: cannot rebuild the dynamic-cell model: {e}") from e
    try:
        set_key_interval(model, key_interval, str(path))
    except CellError as e:
        raise DeployError(str(e)) from e
    if img_size is not None:
        cfg = apply_overrides(cfg, [f"data.height={int(img_size[0])}", f"data.width={int(img_size[1])}"])
    num_classes = int(state["num_classes"])
    names = [str(n) for n in state.get("class_names") or []] or [f"class{i}" for i in range(num_classes)]
    palette, source = resolve_palette(cfg, num_classes)
    return LoadedCheckpoint(model=model, cfg=cfg, path=path, img_size=(cfg.data.height, cfg.data.width),
                            class_names=names, palette=palette, palette_source=source, trained_causal=True)


def resolve_palette(cfg: Any, num_classes: int) -> tuple[np.ndarray, str]:
    """The data set's palette if its source opens here and has K colours, else the default colour map.

    Returns:
        (uint8 (K, 3) palette, ``"data:<format>"`` or ``"default"``).
    """
    from vidnas.data import default_palette, open_source

    try:
        pal = np.asarray(open_source(cfg.data).palette, dtype=np.uint8)
        if pal.shape == (num_classes, 3):
            return pal, f"data:{cfg.data.format}"
        logger.info("palette of %s has shape %s, not (%d, 3): using the default", cfg.data.format, pal.shape,
                    num_classes)
    except Exception as e:  # the data set may not exist on the deployment machine: any failure means "unknown"
        logger.info("no palette from %s data (%s): using the default", cfg.data.format, e)
    return default_palette(num_classes), "default"
