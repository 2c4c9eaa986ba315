"""The cache of the frozen static network's outputs [CELLS Sec. 4.1].

The static network never changes during the search, so its outputs are computed once and every candidate trains only
its cell on the cached tensors. One cached item is one sequence window of ``T`` frames (``cells.seq_len``, causal,
every annotated frame supervised):

========== =============================== =====================================================
key        shape                           meaning
========== =============================== =====================================================
dec0       (64, H/8, W/8) float32          static decoder output of frame 0
layer4     (T, C4, H/32, W/32) float32     encoder layer4 of frames 0..T-1 (frame t-1 = prev_layer4)
layer2     (T-1, C2, H/8, W/8) float32     encoder layer2 of frames 1..T-1
layer3     (T-1, C3, H/16, W/16) float32   encoder layer3 of frames 1..T-1
masks      (T-1, H, W) int16               labels of frames 1..T-1 (ignore index where unsupervised)
========== =============================== =====================================================

The windows of the train split are first divided into meta-train and meta-val, which share no frame
(``vidnas.search.cells.meta_split``).

Two stores: ``MemoryFeatureCache`` (stacked tensors; local workers receive them once through shared memory) and
``DiskFeatureCache`` (``torch.save`` shards of ``shard_size`` windows, loaded one at a time by each worker; shuffling
permutes the shard order and the windows inside each shard). A disk cache is reused by ``--resume`` when its key (the
static checkpoint's identity, the data config and the split) matches.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from vidnas.search.cells.meta_split import MetaSplit, dataset_windows, split_meta, split_meta_frames
from vidnas.utils import atomic_write, atomic_write_json

__all__ = [
    "CACHE_KEYS",
    "CacheInfo",
    "FeatureCache",
    "MemoryFeatureCache",
    "DiskFeatureCache",
    "static_outputs",
    "build_caches",
    "cache_windows",
    "cache_key",
]

logger = logging.getLogger(__name__)

CACHE_KEYS: tuple[str, ...] = ("dec0", "layer4", "layer2", "layer3", "masks")


@dataclass(frozen=True)
class CacheInfo:
    """What a cache holds: classes, ignore index, sequence length, the five cell-input channel counts, image size."""

    num_classes: int
    ignore_index: int
    seq_len: int
    in_channels: tuple[int, int, int, int, int]
    image_hw: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CacheInfo:
        return cls(int(d["num_classes"]), int(d["ignore_index"]), int(d["seq_len"]),
                   tuple(int(c) for c in d["in_channels"]), tuple(int(c) for c in d["image_hw"]))  # type: ignore[arg-type]


class FeatureCache(abc.ABC):
    """Cached static outputs of a set of sequence windows (layout in the module docstring).

    ``split`` is the meta split the windows came from (set by ``build_caches``; None otherwise).
    """

    info: CacheInfo
    split: MetaSplit | None = None

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def batches(self, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Mini-batches ``{key: (B, ...)}`` with ``masks`` as int64."""

    @abc.abstractmethod
    def concat(self, other: FeatureCache) -> FeatureCache:
        """A cache holding the windows of both (e.g. meta-train + meta-val = the whole train split)."""

    @abc.abstractmethod
    def num_batches(self, batch_size: int) -> int:
        """How many mini-batches ``batches(batch_size)`` yields."""


def _batch(tensors: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {k: tensors[k][idx] for k in CACHE_KEYS}
    out["masks"] = out["masks"].long()
    return out


class MemoryFeatureCache(FeatureCache):
    """All windows stacked in memory: ``tensors[key]`` is (N, ...)."""

    def __init__(self, tensors: dict[str, torch.Tensor], info: CacheInfo) -> None:
        missing = [k for k in CACHE_KEYS if k not in tensors]
        if missing:
            raise ValueError(f"feature cache lacks {missing}")
        n = {len(tensors[k]) for k in CACHE_KEYS}
        if len(n) != 1:
            raise ValueError(f"feature cache tensors disagree on the number of windows: {n}")
        self.tensors = tensors
        self.info = info

    def __len__(self) -> int:
        return len(self.tensors["dec0"])

    def batches(self, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[dict[str, torch.Tensor]]:
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for s in range(0, n, batch_size):
            yield _batch(self.tensors, order[s:s + batch_size])

    def concat(self, other: FeatureCache) -> MemoryFeatureCache:
        if not isinstance(other, MemoryFeatureCache):
            raise TypeError("can only concatenate a memory cache with a memory cache")
        return MemoryFeatureCache({k: torch.cat([self.tensors[k], other.tensors[k]]) for k in CACHE_KEYS}, self.info)

    def num_batches(self, batch_size: int) -> int:
        return math.ceil(len(self) / batch_size)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


class DiskFeatureCache(FeatureCache):
    """Windows stored as ``torch.save`` shards; one shard in memory at a time.

    Args:
        shards: shard files (each a dict of stacked tensors, layout in the module docstring).
        sizes: windows per shard.
        info: what the cache holds.
    """

    def __init__(self, shards: Sequence[str | Path], sizes: Sequence[int], info: CacheInfo) -> None:
        if len(shards) != len(sizes):
            raise ValueError("one size per shard is needed")
        self.shards = [Path(s) for s in shards]
        self.sizes = [int(s) for s in sizes]
        self.info = info
        self._loaded: tuple[Path, dict[str, torch.Tensor]] | None = None

    def __getstate__(self) -> dict[str, Any]:  # a worker loads its own shards
        state = dict(self.__dict__)
        state["_loaded"] = None
        return state

    def __len__(self) -> int:
        return sum(self.sizes)

    def _shard(self, i: int) -> dict[str, torch.Tensor]:
        path = self.shards[i]
        if self._loaded is None or self._loaded[0] != path:
            self._loaded = (path, torch.load(path, map_location="cpu", weights_only=True))
        return self._loaded[1]

    def batches(self, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[dict[str, torch.Tensor]]:
        order = torch.randperm(len(self.shards), generator=generator).tolist() if shuffle \
            else list(range(len(self.shards)))
        for i in order:
            tensors = self._shard(i)
            n = self.sizes[i]
            inner = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
            for s in range(0, n, batch_size):
                yield _batch(tensors, inner[s:s + batch_size])

    def concat(self, other: FeatureCache) -> DiskFeatureCache:
        if not isinstance(other, DiskFeatureCache):
            raise TypeError("can only concatenate a disk cache with a disk cache")
        return DiskFeatureCache([*self.shards, *other.shards], [*self.sizes, *other.sizes], self.info)

    def num_batches(self, batch_size: int) -> int:
        return sum(math.ceil(n / batch_size) for n in self.sizes)  # a batch never spans two shards


@torch.inference_mode()
def static_outputs(static: torch.nn.Module, frames: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cached tensors of a batch of windows (layout in the module docstring).

    Args:
        static: a ``StaticSegmenter`` in eval mode.
        frames: (B, T, 3, H, W).
        masks: (B, T, H, W) int64.
    """
    b, t, c, h, w = frames.shape
    feats = static.encode(frames.reshape(b * t, c, h, w))
    feats = [f.reshape(b, t, *f.shape[1:]) for f in feats]  # 4 x (B, T, C_i, h_i, w_i)
    dec0 = static.decode([f[:, 0] for f in feats])["dec"]  # (B, 64, H/8, W/8)
    return {
        "dec0": dec0.float().cpu(),
        "layer4": feats[3].float().cpu(),
        "layer2": feats[1][:, 1:].float().cpu(),
        "layer3": feats[2][:, 1:].float().cpu(),
        "masks": masks[:, 1:].to(torch.int16).cpu(),
    }


def cache_windows(static: torch.nn.Module, dataset: Any, info: CacheInfo, *, batch_size: int = 8,
                  device: str = "cpu", show_progress: bool = False) -> MemoryFeatureCache:
    """A memory cache of every window of ``dataset`` (no meta split): what the top-k cells train on after a search
    whose caches were at the proxy size or dropped gap windows."""
    static.eval().to(device)
    parts = [static_outputs(static, b["frames"].to(device), b["masks"].to(device))
             for b in tqdm(DataLoader(dataset, batch_size=batch_size, shuffle=False), desc="cache train split",
                           leave=False, disable=not show_progress, dynamic_ncols=True)]
    return MemoryFeatureCache({k: torch.cat([p[k] for p in parts]) for k in CACHE_KEYS}, info)


def cache_key(**parts: Any) -> str:
    """A short SHA-256 of JSON-serialisable parts (static checkpoint identity, data config, split seed...)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def build_caches(static: torch.nn.Module, dataset: Any, info: CacheInfo, *, val_fraction: float, seed: int,
                 kind: str = "memory", directory: str | Path | None = None, key: str = "", batch_size: int = 8,
                 shard_size: int = 256, device: str = "cpu", split: str = "auto",
                 show_progress: bool = False) -> tuple[FeatureCache, FeatureCache]:
    """Split ``dataset`` into meta-train / meta-val and cache the static outputs of both.

    Args:
        static: the frozen static network (put in eval mode here).
        dataset: a ``ClipDataset`` of ``T``-frame windows (``supervise="all"``, no augmentation).
        info: what the cache holds.
        val_fraction: share of windows in meta-val (0.1 [CELLS]).
        seed: split seed.
        kind: ``memory`` or ``disk``.
        directory: where disk shards go (required for ``disk``); an existing cache there with the same ``key`` is
            reused.
        key: identity of the inputs (``cache_key``); a disk cache with another key is rebuilt.
        batch_size: windows per static forward.
        shard_size: windows per disk shard.
        device: where the static network runs.
        split: meta split mode (``split_meta_frames``); ``window`` needs only ``len(dataset)``, the others a
            ``ClipDataset`` (``dataset_windows``).
        show_progress: tqdm bar.

    Returns:
        (meta-train cache, meta-val cache); the split's record is ``cache.split`` on both (a ``MetaSplit``).
    """
    if kind not in ("memory", "disk"):
        raise ValueError(f"cells.cache={kind!r}: valid values are memory, disk")
    if split == "window":
        meta = MetaSplit(*split_meta(len(dataset), val_fraction, seed), mode="window")
    else:
        meta = split_meta_frames(dataset_windows(dataset), val_fraction, seed, split)
    train_idx, val_idx = meta.train, meta.val
    if kind == "disk":
        if directory is None:
            raise ValueError("a disk cache needs a directory")
        directory = Path(directory)
        index = directory / "index.json"
        if index.is_file():
            stored = json.loads(index.read_text())
            if stored.get("key") == key:
                logger.info("reusing the feature cache in %s", directory)
                reused = tuple(
                    DiskFeatureCache([directory / s for s in stored["splits"][name]["shards"]],
                                     stored["splits"][name]["sizes"], CacheInfo.from_dict(stored["info"]))
                    for name in ("meta_train", "meta_val"))
                for c in reused:
                    c.split = meta
                return reused  # type: ignore[return-value]
            logger.info("feature cache in %s was built from other inputs: rebuilding it", directory)
    static.eval().to(device)
    caches = []
    split_meta_rec: dict[str, Any] = {}
    for name, idx in (("meta_train", train_idx), ("meta_val", val_idx)):
        loader = DataLoader(Subset(dataset, idx), batch_size=batch_size, shuffle=False)
        parts: list[dict[str, torch.Tensor]] = []
        shards: list[str] = []
        sizes: list[int] = []

        def flush(tensors: dict[str, torch.Tensor], name: str = name, shards: list[str] = shards,
                  sizes: list[int] = sizes) -> None:
            rel = f"{name}/shard_{len(shards):05d}.pt"
            # clone: a slice would save the whole underlying storage
            data = {k: v.clone() for k, v in tensors.items()}
            atomic_write(directory / rel, lambda tmp: torch.save(data, tmp))  # type: ignore[operator]
            shards.append(rel)
            sizes.append(len(data["dec0"]))

        pending = 0
        for batch in tqdm(loader, desc=f"cache {name}", leave=False, disable=not show_progress, dynamic_ncols=True):
            out = static_outputs(static, batch["frames"].to(device), batch["masks"].to(device))
            parts.append(out)
            pending += len(out["dec0"])
            while kind == "disk" and pending >= shard_size:  # exactly shard_size windows per shard
                joined = {k: torch.cat([p[k] for p in parts]) for k in CACHE_KEYS}
                flush({k: v[:shard_size] for k, v in joined.items()})
                parts = [{k: v[shard_size:] for k, v in joined.items()}]
                pending -= shard_size
        if kind == "memory":
            caches.append(MemoryFeatureCache({k: torch.cat([p[k] for p in parts]) for k in CACHE_KEYS}, info))
        else:
            if pending:
                flush({k: torch.cat([p[k] for p in parts]) for k in CACHE_KEYS})
            split_meta_rec[name] = {"shards": shards, "sizes": sizes}
            caches.append(DiskFeatureCache([directory / s for s in shards], sizes, info))  # type: ignore[operator]
    if kind == "disk":
        atomic_write_json(directory / "index.json",  # type: ignore[operator]
                          {"key": key, "info": info.to_dict(), "splits": split_meta_rec, "split": meta.to_dict(),
                           "meta_train_windows": train_idx, "meta_val_windows": val_idx,
                           "dropped_windows": meta.dropped})
    for c in caches:
        c.split = meta
    logger.info("cached static outputs: %d meta-train and %d meta-val windows (%s split, %d windows dropped as "
                "gaps; %s cache)", len(train_idx), len(val_idx), meta.mode, len(meta.dropped), kind)
    return caches[0], caches[1]
