"""Latency tables: measuring the real tiny Swin block by block, signatures, save / load, lookups and their errors."""

from __future__ import annotations

import json

import pytest
import torch

from vidnas.bench import device_signature
from vidnas.models import build_encoder
from vidnas.search.latency import (
    LATENCY_SCHEMA_VERSION,
    LatencyTable,
    LatencyTableError,
    MissingLatencyError,
    downsample_signature,
    measure_encoder_blocks,
)
from vidnas.search.stnas import DepthSupernet

HW = (64, 64)  # stages 0 and 1 of swin_test (window 4) are 16x16 and 8x8 grids: both have shifted windows


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    return build_encoder("swin_test", img_size=HW, depths=(2, 3, 2, 2))


@pytest.fixture(scope="module")
def table(swin) -> LatencyTable:
    return measure_encoder_blocks(swin, HW, warmup=1, iters=3)


def test_measure_covers_every_block_at_its_shape(swin, table: LatencyTable) -> None:
    sigs = [swin.block_signature(i, j, HW) for i, d in enumerate(swin.depths) for j in range(d)]
    assert sorted(table.blocks) == sorted(sigs) and len(set(sigs)) == sum(swin.depths)
    assert all(v > 0 for v in table.blocks.values())
    lat = table.latencies_for(swin)
    assert [len(s) for s in lat] == list(swin.depths)
    assert lat[1][2] == table.blocks[swin.block_signature(1, 2, HW)]
    # downsamples are recorded for reports, one per stage, never mixed with the blocks
    assert sorted(table.downsample) == sorted(downsample_signature(swin, i, HW) for i in range(4))
    assert all(v is not None and v >= 0 for v in table.downsample_for(swin))
    assert table.encoder_latency(swin) == pytest.approx(sum(map(sum, lat)) + sum(table.downsample_for(swin)))
    # every entry has its statistics; median is what the table stores
    sig = swin.block_signature(0, 1, HW)
    assert table.stats[sig]["n"] == 3 and table.stats[sig]["median_ms"] == table.blocks[sig]
    assert table.meta["encoder"] == "swin_test" and table.meta["img_size"] == list(HW)
    assert table.device["torch_device"] == "cpu" and table.device["cpu"] == device_signature()["cpu"]
    assert swin.training  # measured in eval mode, mode restored


def test_signatures_distinguish_shifted_blocks_and_odd_depth_ends_unshifted(swin) -> None:
    kinds = [swin.block_signature(1, j, HW).split("/")[3] for j in range(3)]
    assert kinds[0] == kinds[2] != kinds[1]
    assert "shift0" in kinds[0] and "shift2x2" in kinds[1]
    assert [tuple(b.shift_size) for b in swin.stages[1].blocks] == [(0, 0), (2, 2), (0, 0)]


def test_table_of_the_full_encoder_serves_a_shortened_one(swin, table: LatencyTable) -> None:
    short = swin.with_depths((1, 3, 1, 2))
    lat = table.latencies_for(short)
    assert lat == [
        [table.blocks[swin.block_signature(0, 0, HW)]],
        table.latencies_for(swin)[1],
        [table.blocks[swin.block_signature(2, 0, HW)]],
        table.latencies_for(swin)[3],
    ]
    # and the supernet reads its Eq. 2 latencies from it
    sn = DepthSupernet(swin)
    want = sum(sum(s) for s in table.latencies_for(swin))  # all alphas 1
    assert sn.penalty(table).item() == pytest.approx(want, rel=1e-6)


def test_save_load_round_trip(tmp_path, table: LatencyTable) -> None:
    path = table.save(tmp_path / "tables" / "lat.json")
    assert path.is_file() and table.path == path
    assert [p.name for p in path.parent.iterdir()] == ["lat.json"]  # atomic write leaves no temp file
    data = json.loads(path.read_text())
    assert data["schema_version"] == LATENCY_SCHEMA_VERSION
    loaded = LatencyTable.load(path)
    assert loaded.blocks == table.blocks and loaded.downsample == table.downsample
    assert loaded.device == table.device and loaded.meta == table.meta and loaded.stats == table.stats
    assert loaded.path == path and loaded.matches_device()


def test_lookup_error_names_signature_and_file(tmp_path, swin, table: LatencyTable) -> None:
    path = table.save(tmp_path / "lat.json")
    loaded = LatencyTable.load(path)
    other = build_encoder("swin_test", img_size=(32, 32))  # other input size: other shapes, other signatures
    sig = other.block_signature(0, 0)
    with pytest.raises(MissingLatencyError) as err:
        loaded.latencies_for(other)
    assert sig in str(err.value) and str(path) in str(err.value)
    assert isinstance(err.value, KeyError)
    with pytest.raises(MissingLatencyError, match="not saved"):
        LatencyTable().lookup("x/s0/b0")


def test_load_errors_name_the_file(tmp_path, table: LatencyTable) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(LatencyTableError, match="nope.json"):
        LatencyTable.load(missing)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**table.to_dict(), "schema_version": 99}))
    with pytest.raises(LatencyTableError, match=r"bad\.json.*schema_version 99"):
        LatencyTable.load(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(LatencyTableError, match="broken.json"):
        LatencyTable.load(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**table.to_dict(), "blocks": {"a": "fast"}}))
    with pytest.raises(LatencyTableError, match="'blocks'"):
        LatencyTable.load(wrong)


def test_device_mismatch_is_detected(table: LatencyTable) -> None:
    assert table.matches_device()
    assert not table.matches_device({**table.device, "cpu": "some other cpu"})
    assert not table.matches_device({**table.device, "num_threads": 64})


def test_measure_efficientnet_blocks() -> None:
    enc = build_encoder("efficientnet_lite0_test", img_size=(32, 32))
    tab = measure_encoder_blocks(enc, warmup=0, iters=1)
    assert [len(s) for s in tab.latencies_for(enc)] == list(enc.depths)
