"""Architecture files: a derived model as data (encoder depths, decoder ops, full channels, window).

An ``Arch`` plus a config is all ``build_model`` needs; the search writes one as ``arch.json`` with its record (alphas,
betas, lambda, latency table) in the opaque ``extra`` mapping. JSON layout (schema version 1)::

    {"schema_version": 1, "name": "stnas", "encoder": "swin_tiny", "depths": [1, 2, 3, 2], "decoder": "sptcn",
     "decoder_ops": ["identity", ...16 names...] | null, "full_channels": true, "window": 11, "causal": true,
     "channels": 128, "dilations": [1, 2, 4, 8], "extra": {...}}

The paper's Table 1 rows [ST-NAS] are named constants (``PAPER_ROWS``) with the figures the paper reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vidnas.jsonfile import JsonFile, check_header, where
from vidnas.models.decoders import DECODERS, space_ops_error
from vidnas.models.ops import OPS

__all__ = [
    "SCHEMA_VERSION",
    "OPS_PER_LAYER",
    "Arch",
    "ArchError",
    "PaperRow",
    "PAPER_INPUT_SIZE",
    "SWIN_B_FRAME",
    "SWIN_T_FRAME",
    "SPTCN_BASE",
    "SPTCN_TINY",
    "SWIN_SHORT",
    "FULL_CHANNELS",
    "STNAS",
    "STNAS_DECODER_OPS",
    "PAPER_ROWS",
]

SCHEMA_VERSION = 1
SCALE_STRIDES: tuple[int, ...] = (4, 8, 16, 32)
OPS_PER_SCALE = 3  # multi-scale decoders: path op 1, path op 2, fusion op per finer scale
FUSIONS: tuple[str, ...] = ("fpn", "arch2", "arch2_res")  # mstcn: how the finer scales join the temporal trunk
ARCH2_FUSION_SCALES: tuple[int, ...] = (32, 16, 8, 4)  # arch2 fusion reads all four encoder maps
OPS_PER_LAYER = 4  # two 3x3x3 convs per residual layer, each replaced by two ops [ST-NAS Fig. 2]


class ArchError(ValueError):
    """An architecture (file) is invalid; the message names the file (if any) and the field."""


@dataclass(frozen=True)
class Arch(JsonFile):
    """A model architecture as data.

    Attributes:
        encoder: encoder name (``vidnas.models.encoders.ENCODERS``), e.g. ``swin_tiny``.
        depths: blocks per encoder stage, None = the encoder's own (Swin-T 2,2,6,2; Swin Short 1,2,3,2).
        decoder: a name in ``vidnas.models.decoders.DECODERS``: ``sptcn`` (temporal, stride 32), ``mstcn``
            (multi-scale spatial-temporal: a temporal trunk on the coarse scale fused with finer paths), ``head``
            (per-frame), ``arch2`` (the cell search's static network), ``arch2_space`` (arch2's decoder with candidate
            ops per slot, searchable) or a family registered from outside.
        decoder_ops: None = the baseline 3x3x3 convs; else ``4 * len(dilations)`` op names from ``OPS`` in
            ``SPTCNDecoder.searchable_slots()`` order (the derived TCNNAS decoder; for ``mstcn`` its trunk).
            ``arch2_space``: one op per slot of ``decoders.arch2_space.SLOTS`` (8), None = arch2's own ops.
        full_channels: drop the SP-TCN channel-reduction conv [ST-NAS "FC"].
        window: frames per clip w.
        causal: window ends at the target frame (True) or is centred on it.
        channels: decoder width F.
        dilations: temporal dilation of each residual layer.
        scales: ``mstcn``: encoder strides read, coarse (the temporal trunk) first, then strictly finer ones.
        fuse_channels: ``mstcn``: width of the finer paths and the fusion; ``arch2_space``: the decoder width.
        scale_ops: ``mstcn``: ``3 * (len(scales) - 1)`` op names (path op 1, path op 2, fusion op per finer scale);
            None = per frame (identity, identity, spatial_k3).
        fusion: ``mstcn``: ``fpn`` (the finer paths above, searchable) or ``arch2`` (arch2's per-frame decoder, strides
            16/8/4 with its global-pooling branch and auxiliary heads, on top of the temporal trunk; ``scales`` must be
            32,16,8,4 and ``scale_ops`` unset) or ``arch2_res`` (the same, with the trunk a zero-initialised residual
            branch on arch2's stride-32 lateral: starts as per-frame arch2, initialisable from its checkpoint).
        name: a label (a paper row, a run name).
        extra: the search record (alphas, betas, lambda, latency table...); opaque here, must be JSON-serialisable.
    """

    encoder: str = "swin_tiny"
    depths: tuple[int, ...] | None = None
    decoder: str = "sptcn"
    decoder_ops: tuple[str, ...] | None = None
    full_channels: bool = False
    window: int = 11  # [ST-NAS] 11-frame window
    causal: bool = True
    channels: int = 128  # [SPEC] SP-TCN width F
    dilations: tuple[int, ...] = (1, 2, 4, 8)  # [SPEC] residual layer dilations
    scales: tuple[int, ...] = (32, 8, 4)
    fuse_channels: int = 64
    scale_ops: tuple[str, ...] | None = None
    fusion: str = "fpn"
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    FILE_KIND = "architecture file"
    FILE_ERROR = ArchError

    def __post_init__(self) -> None:
        # normalise lists (from JSON or callers) to tuples so the dataclass stays hashable and comparable
        if self.depths is not None:
            object.__setattr__(self, "depths", tuple(self.depths))
        if self.decoder_ops is not None:
            object.__setattr__(self, "decoder_ops", tuple(self.decoder_ops))
        if self.scale_ops is not None:
            object.__setattr__(self, "scale_ops", tuple(self.scale_ops))
        object.__setattr__(self, "dilations", tuple(self.dilations))
        object.__setattr__(self, "scales", tuple(self.scales))
        self.validate()

    def validate(self, source: str | None = None) -> None:
        """Raise ``ArchError`` naming ``source`` and the bad field if anything is inconsistent."""
        where = f"{source}: " if source else ""

        def fail(fld: str, msg: str) -> None:
            raise ArchError(f"{where}field {fld!r}: {msg}")

        if not isinstance(self.encoder, str) or not self.encoder:
            fail("encoder", f"expected a non-empty string, got {self.encoder!r}")
        if self.depths is not None and (not self.depths or not all(_is_int(d) and d >= 1 for d in self.depths)):
            fail("depths", f"expected a list of positive integers or null, got {list(self.depths)!r}")
        if self.decoder not in DECODERS:
            fail("decoder", f"unknown decoder {self.decoder!r}; valid decoders: {', '.join(DECODERS)}")
        if not self.dilations or not all(_is_int(d) and d >= 1 for d in self.dilations):
            fail("dilations", f"expected a list of positive integers, got {list(self.dilations)!r}")
        if not self.scales or not all(_is_int(s) and s in SCALE_STRIDES for s in self.scales) or list(
                self.scales) != sorted(set(self.scales), reverse=True):
            fail("scales", f"expected encoder strides from {list(SCALE_STRIDES)}, coarse first and strictly finer "
                           f"after, got {list(self.scales)!r}")
        if not _is_int(self.fuse_channels) or self.fuse_channels < 1:
            fail("fuse_channels", f"expected a positive integer, got {self.fuse_channels!r}")
        if self.scale_ops is not None:
            if self.decoder != "mstcn":
                fail("scale_ops", f"only the mstcn decoder has per-scale ops, but decoder is {self.decoder!r}")
            expected = OPS_PER_SCALE * (len(self.scales) - 1)
            if len(self.scale_ops) != expected:
                fail("scale_ops", f"expected {expected} op names ({OPS_PER_SCALE} per finer scale), got "
                                  f"{len(self.scale_ops)}")
            for i, op in enumerate(self.scale_ops):
                if op not in OPS:
                    fail("scale_ops", f"entry {i}: unknown op {op!r}; valid ops: {', '.join(OPS)}")
        if self.fusion not in FUSIONS:
            fail("fusion", f"unknown fusion {self.fusion!r}; valid: {', '.join(FUSIONS)}")
        if self.fusion in ("arch2", "arch2_res"):
            if self.decoder != "mstcn":
                fail("fusion", f"only the mstcn decoder has a fusion choice, but decoder is {self.decoder!r}")
            if tuple(self.scales) != ARCH2_FUSION_SCALES:
                fail("scales", f"the {self.fusion} fusion reads strides {list(ARCH2_FUSION_SCALES)}, got "
                               f"{list(self.scales)!r}")
            if self.scale_ops is not None:
                fail("scale_ops", f"the {self.fusion} fusion has no per-scale op slots (only fusion fpn is searched "
                                  "per scale)")
            if self.fusion == "arch2_res" and self.full_channels:
                fail("full_channels", "the arch2_res fusion's temporal branch reads arch2's fuse_channels-wide "
                                      "stride-32 lateral; full channels do not apply")
        if self.decoder_ops is not None and self.decoder == "arch2_space":
            error = space_ops_error(self.decoder_ops)
            if error:
                fail("decoder_ops", error)
        elif self.decoder_ops is not None:
            if self.decoder not in ("sptcn", "mstcn"):
                fail("decoder_ops", f"only the sptcn decoder (and the mstcn decoder's trunk, the arch2_space "
                                    f"decoder's slots) has searched ops, but decoder is {self.decoder!r}")
            expected = OPS_PER_LAYER * len(self.dilations)
            if len(self.decoder_ops) != expected:
                fail(
                    "decoder_ops",
                    f"expected {expected} op names ({OPS_PER_LAYER} per residual layer x {len(self.dilations)} "
                    f"layers), got {len(self.decoder_ops)}",
                )
            for i, op in enumerate(self.decoder_ops):
                if op not in OPS:
                    fail("decoder_ops", f"entry {i}: unknown op {op!r}; valid ops: {', '.join(OPS)}")
        if not isinstance(self.full_channels, bool):
            fail("full_channels", f"expected true/false, got {self.full_channels!r}")
        if not _is_int(self.window) or self.window < 1:
            fail("window", f"expected a positive integer, got {self.window!r}")
        if not isinstance(self.causal, bool):
            fail("causal", f"expected true/false, got {self.causal!r}")
        if not _is_int(self.channels) or self.channels < 1:
            fail("channels", f"expected a positive integer, got {self.channels!r}")
        if not isinstance(self.name, str):
            fail("name", f"expected a string, got {self.name!r}")
        if not isinstance(self.extra, dict):
            fail("extra", f"expected a mapping, got {type(self.extra).__name__}")

    @property
    def searched(self) -> bool:
        """True when the decoder ops came from a search (``decoder_ops`` or ``scale_ops`` set)."""
        return self.decoder_ops is not None or self.scale_ops is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, ``schema_version`` first (the ``mstcn`` fields only for that decoder)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "encoder": self.encoder,
            "depths": None if self.depths is None else list(self.depths),
            "decoder": self.decoder,
            "decoder_ops": None if self.decoder_ops is None else list(self.decoder_ops),
            "full_channels": self.full_channels,
            "window": self.window,
            "causal": self.causal,
            "channels": self.channels,
            "dilations": list(self.dilations),
            **(self._mstcn_fields() if self.decoder == "mstcn" else {}),
            **({"fuse_channels": self.fuse_channels} if self.decoder == "arch2_space" else {}),
            "extra": self.extra,
        }

    def _mstcn_fields(self) -> dict[str, Any]:
        return {"scales": list(self.scales), "fuse_channels": self.fuse_channels,
                "scale_ops": None if self.scale_ops is None else list(self.scale_ops), "fusion": self.fusion}

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> Arch:
        """Inverse of ``to_dict``; unknown keys, a missing or wrong schema version and bad fields raise ArchError."""
        check_header(data, version=SCHEMA_VERSION, error=ArchError, source=source, fields=cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k != "schema_version"}
        for key in ("depths", "decoder_ops", "dilations", "scales", "scale_ops"):
            value = kwargs.get(key)
            if value is not None and not isinstance(value, list | tuple):
                raise ArchError(f"{where(source)}field {key!r}: expected a list, got {value!r}")
        try:
            return cls(**kwargs)
        except ArchError as e:
            raise ArchError(f"{where(source)}{e}") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# --------------------------------------------------------------------------------------------------- paper Table 1

PAPER_INPUT_SIZE = (320, 576)  # [ST-NAS] images resized to 320x576 (HxW); all rows at window 11, causal

SWIN_B_FRAME = Arch(encoder="swin_base", decoder="head", window=1, name="swin_b")  # non-temporal, window 1
SWIN_T_FRAME = Arch(encoder="swin_tiny", decoder="head", window=1, name="swin_t")
SPTCN_BASE = Arch(encoder="swin_base", name="sptcn_base")
SPTCN_TINY = Arch(encoder="swin_tiny", name="sptcn_tiny")
SWIN_SHORT = Arch(encoder="swin_tiny", depths=(1, 2, 3, 2), name="swin_short")  # [ST-NAS] depth search result
FULL_CHANNELS = Arch(encoder="swin_tiny", depths=(1, 2, 3, 2), full_channels=True, name="full_channels")

# RECONSTRUCTION: the TCNNAS decoder the paper found is only drawn in its Fig. 2, which the text does not contain.
# The text says: "several identity functions in its early layers, followed by depth separated and dilated spatial
# convolutions. Interestingly, no temporal convolutions were used". This list is one concrete decoder consistent with
# that description (identities first, then separable and dilated spatial convs, no temporal op); it is not the
# paper's exact architecture. Order: per residual layer (dilation 1, 2, 4, 8): conv1 op 1, conv1 op 2, conv2 op 1,
# conv2 op 2.
STNAS_DECODER_OPS: tuple[str, ...] = (
    "identity", "identity", "identity", "sep_k3",  # layer 1, d=1
    "identity", "sep_k3", "sep_k5", "spatial_k3",  # layer 2, d=2
    "sep_k3", "spatial_k3", "sep_k5", "spatial_k3",  # layer 3, d=4
    "sep_k5", "spatial_k3", "sep_k3", "spatial_k5",  # layer 4, d=8
)  # fmt: skip
STNAS = Arch(
    encoder="swin_tiny",
    depths=(1, 2, 3, 2),
    full_channels=True,
    decoder_ops=STNAS_DECODER_OPS,
    name="stnas",
)


@dataclass(frozen=True)
class PaperRow:
    """One row of [ST-NAS] Table 1: the architecture and the figures the paper reports for it.

    Attributes:
        arch: the architecture (full size; build at ``PAPER_INPUT_SIZE``).
        label: the row's name in the paper.
        params_m: parameters in millions.
        fps: frames per second (their GPU; encode one frame + decode an 11-frame window).
        pn_miou: mIoU on the private partial-nephrectomy data set.
        cholec_miou: mIoU on CholecSeg8K.
    """

    arch: Arch
    label: str
    params_m: float
    fps: float
    pn_miou: float
    cholec_miou: float


# [ST-NAS] Table 1 (NAS-Unet and HR-NAS rows are other methods' models and are not reproduced here)
PAPER_ROWS: dict[str, PaperRow] = {
    "swin_b": PaperRow(SWIN_B_FRAME, "Swin-B (non-temporal)", 95.9, 14.7, 60.3, 53.2),
    "swin_t": PaperRow(SWIN_T_FRAME, "Swin-T (non-temporal)", 34.4, 23.1, 60.5, 52.3),
    "sptcn_base": PaperRow(SPTCN_BASE, "SP-TCN, Swin-B", 102.6, 12.6, 70.7, 57.0),
    "sptcn_tiny": PaperRow(SPTCN_TINY, "SP-TCN, Swin-T", 40.4, 20.5, 73.9, 54.3),
    "swin_short": PaperRow(SWIN_SHORT, "Swin Short", 28.9, 24.8, 72.3, 51.0),
    "full_channels": PaperRow(FULL_CHANNELS, "Full Channels", 33.0, 28.0, 68.3, 50.8),
    "stnas": PaperRow(STNAS, "ST-NAS (Ours)", 39.0, 31.9, 69.5, 51.5),
}
