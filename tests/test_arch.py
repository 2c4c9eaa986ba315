"""Architecture files, the paper's Table 1 rows and build_model (tiny real encoders, CPU)."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidnas.config import Config, DataConfig, ModelConfig
from vidnas.models import (
    ENCODERS,
    SEARCH_CANDIDATES,
    SPTCNDecoder,
    VideoSegmenter,
    arch_from_config,
    build_encoder,
    build_model,
)
from vidnas.models.architecture import (
    FULL_CHANNELS,
    PAPER_INPUT_SIZE,
    PAPER_ROWS,
    SCHEMA_VERSION,
    SPTCN_TINY,
    STNAS,
    STNAS_DECODER_OPS,
    SWIN_SHORT,
    Arch,
    ArchError,
)
from vidnas.models.decoders import HeadDecoder

logger = logging.getLogger(__name__)

H, W, K = 64, 96, 3


def _tiny_encoder_name() -> str:
    for name in ("swin_test", "mobilenetv2_test", "efficientnet_lite0_test"):
        if name in ENCODERS:
            return name
    raise AssertionError(f"no tiny test encoder registered; have {list(ENCODERS)}")


def _tiny_config(**model: object) -> Config:
    enc = _tiny_encoder_name()
    m = {"encoder": enc, "decoder_channels": 8, **model}
    return Config(data=DataConfig(height=H, width=W, window=3), model=ModelConfig(**m))  # type: ignore[arg-type]


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------- files


def test_json_round_trip(tmp_path: Path) -> None:
    arch = dataclasses.replace(
        STNAS,
        extra={"alphas": [[1.2, 0.4], [0.9]], "betas": [[0.1] * 7] * 16, "lambda": 1e-3, "latency": {"b0": 1.5}},
    )
    assert Arch.from_json(arch.to_json()) == arch
    path = arch.save(tmp_path / "sub" / "arch.json")
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["decoder_ops"] == list(STNAS_DECODER_OPS)
    loaded = Arch.load(path)
    assert loaded == arch and loaded.depths == (1, 2, 3, 2) and isinstance(loaded.decoder_ops, tuple)
    assert hash(loaded) == hash(arch)  # frozen and hashable even with the `extra` mapping
    assert not list(tmp_path.glob("sub/.*tmp"))  # atomic write leaves no temporary file behind
    for row in PAPER_ROWS.values():
        assert Arch.from_json(row.arch.to_json()) == row.arch


def _write(tmp_path: Path, **changes: object) -> Path:
    data = STNAS.to_dict()
    for key, value in changes.items():
        if value is _DELETE:
            del data[key]
        else:
            data[key] = value
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(data))
    return path


_DELETE = object()


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"schema_version": 2}, r"schema_version.*unsupported version 2"),
        ({"schema_version": _DELETE}, r"schema_version.*missing"),
        ({"decoder_ops": ["identity"] * 15}, r"decoder_ops.*expected 16 op names.*got 15"),
        ({"decoder_ops": ["identity"] * 15 + ["conv7x7"]}, r"decoder_ops.*entry 15.*conv7x7.*valid ops: identity, "),
        ({"decoder": "unet"}, r"'decoder'.*unknown decoder 'unet'.*sptcn, head"),
        ({"window": 0}, r"'window'.*positive integer"),
        ({"depths": [1, 0, 3, 2]}, r"'depths'"),
        ({"causal": "yes"}, r"'causal'"),
        ({"full_channels": 1}, r"'full_channels'"),
        ({"colour": "red"}, r"unknown field 'colour'.*valid fields"),
        ({"dilations": 3}, r"'dilations'.*expected a list"),
    ],
)
def test_invalid_files_name_file_and_field(tmp_path: Path, changes: dict, pattern: str) -> None:
    path = _write(tmp_path, **changes)
    with pytest.raises(ArchError, match=pattern) as info:
        Arch.load(path)
    assert str(path) in str(info.value)


def test_invalid_json_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ArchError, match="broken.json.*invalid JSON"):
        Arch.load(path)
    with pytest.raises(ArchError, match="not found"):
        Arch.load(tmp_path / "missing.json")
    with pytest.raises(ArchError, match="only the sptcn decoder"):
        Arch(decoder="head", decoder_ops=STNAS_DECODER_OPS)


def test_stnas_ops_match_paper_description() -> None:
    ops = STNAS.decoder_ops
    assert ops is not None and len(ops) == 16 and all(op in SEARCH_CANDIDATES for op in ops)
    assert not any(op.startswith("temporal") for op in ops)  # "no temporal convolutions were used"
    assert ops[:3] == ("identity",) * 3  # "several identity functions in its early layers"
    assert "identity" not in ops[8:]  # "followed by depth separated and dilated spatial convolutions"
    assert STNAS.full_channels and STNAS.depths == (1, 2, 3, 2)


# ---------------------------------------------------------------------------------------------------------- build


def test_build_from_config_alone() -> None:
    cfg = _tiny_config()
    model = build_model(cfg, num_classes=K).eval()
    assert isinstance(model, VideoSegmenter) and isinstance(model.decoder, SPTCNDecoder)
    assert model.window == 3 and model.causal and model.decoder.reduce is not None
    with torch.no_grad():
        assert model(torch.randn(1, 3, 3, H, W)).shape == (1, 3, K, H, W)
    arch = arch_from_config(cfg)
    assert arch.encoder == cfg.model.encoder and arch.decoder_ops is None and arch.channels == 8

    centred = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, temporal="centred"))
    assert not build_model(centred, num_classes=K).causal
    fc = build_model(_tiny_config(full_channels=True), num_classes=K)
    assert fc.decoder.reduce is None
    head = build_model(_tiny_config(decoder="head"), num_classes=K)
    assert isinstance(head.decoder, HeadDecoder)


def test_build_with_arch_overrides_config(tmp_path: Path) -> None:
    cfg = _tiny_config()
    arch = dataclasses.replace(STNAS, encoder=cfg.model.encoder, depths=None, window=5, causal=False, channels=8)
    model = build_model(cfg, arch, num_classes=K).eval()
    assert model.window == 5 and not model.causal and model.decoder.full_channels
    assert model.decoder.layer_ops == STNAS_DECODER_OPS
    # the same architecture from a file named in the config
    path = arch.save(tmp_path / "arch.json")
    from_file = build_model(
        dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, arch=str(path))), num_classes=K
    )
    assert from_file.window == 5 and from_file.decoder.layer_ops == STNAS_DECODER_OPS
    assert _params(from_file) == _params(model)


def test_build_errors_name_the_problem() -> None:
    with pytest.raises(ArchError, match=r"unknown encoder 'resnet9'.*valid encoders:.*swin_tiny"):
        build_model(_tiny_config(encoder="resnet9"), num_classes=K)
    with pytest.raises(ArchError, match=r"unknown decoder 'unet'.*sptcn, head, arch2"):
        build_model(_tiny_config(decoder="unet"), num_classes=K)
    cfg = _tiny_config()
    with pytest.raises(ArchError, match="temporal"):
        build_model(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, temporal="future")), num_classes=K)


@pytest.mark.parametrize("row", list(PAPER_ROWS))
def test_paper_rows_build_at_test_size(row: str) -> None:
    """Every Table 1 row builds and runs with its encoder swapped for the tiny test encoder."""
    paper = PAPER_ROWS[row].arch
    depths = None
    if paper.depths is not None:  # a shortened encoder: shorten the test encoder's stages as far as they go
        full = build_encoder(_tiny_encoder_name(), img_size=(H, W)).depths
        depths = tuple(min(d, f) for d, f in zip(paper.depths, full, strict=True))
    arch = dataclasses.replace(
        paper, encoder=_tiny_encoder_name(), depths=depths, channels=8, window=min(paper.window, 3)
    )
    model = build_model(_tiny_config(), arch, num_classes=K).eval()
    if arch.depths is not None:
        assert model.encoder.depths == arch.depths
    with torch.no_grad():
        assert model(torch.randn(1, arch.window, 3, H, W)).shape == (1, arch.window, K, H, W)


@pytest.mark.slow
def test_full_size_param_counts() -> None:
    """SP-TCN Tiny and ST-NAS at the paper's size. The decoder is a reconstruction: counts are only in the ballpark."""
    cfg = Config(data=DataConfig(height=PAPER_INPUT_SIZE[0], width=PAPER_INPUT_SIZE[1]))
    counts = {}
    for arch in (SPTCN_TINY, SWIN_SHORT, FULL_CHANNELS, STNAS):
        counts[arch.name] = _params(build_model(cfg, arch, num_classes=13)) / 1e6
        logger.info("%s: %.2fM parameters (paper %.1fM)", arch.name, counts[arch.name], PAPER_ROWS[arch.name].params_m)
    for name, p in counts.items():
        assert 20 < p < 60, (name, p)
    assert counts["swin_short"] < counts["sptcn_tiny"]  # shorter encoder, fewer parameters


def test_build_never_imports_search() -> None:
    code = (
        "import sys\n"
        "from vidnas.config import Config, DataConfig, ModelConfig\n"
        "from vidnas.models.build import build_model\n"
        "from vidnas.models.architecture import STNAS\n"
        "import dataclasses\n"
        f"cfg = Config(data=DataConfig(height={H}, width={W}, window=3), "
        f"model=ModelConfig(encoder={_tiny_encoder_name()!r}, decoder_channels=8))\n"
        "build_model(cfg, dataclasses.replace(STNAS, encoder=cfg.model.encoder, depths=None, channels=8, window=3),"
        " num_classes=3)\n"
        "bad = sorted(m for m in sys.modules if m == 'vidnas.search' or m.startswith('vidnas.search.'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
