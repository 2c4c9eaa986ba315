"""The searchable arch2 decoder family (``arch2_space``): the hand-made per-frame arch2 is a point of the space (same
parameter count, and with arch2's weights the same outputs), the cheapest point is cheaper, time is a choice per
slot, temporal encodings stream incrementally as they clip, ``vidnas train`` trains a point of it, and
``vidnas search stnas`` searches it (each slot over its own candidates, priced by the latency table) and derives an
``arch.json`` that ``vidnas train --arch`` builds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vidnas.bench.counting import count_flops, count_params
from vidnas.checkpoint import save_checkpoint
from vidnas.cli.main import app
from vidnas.config import Config, DataConfig, ModelConfig, config_to_dict, load_config
from vidnas.models import Arch, ArchError, arch_from_config, build_encoder, build_model, load_model
from vidnas.models.decoders import ARCH2_OPS, CHEAPEST_OPS, SLOTS, Arch2SpaceDecoder
from vidnas.models.multiscale import MultiScaleSegmenter
from vidnas.models.static_segmenter import StaticSegmenter
from vidnas.search.latency import LatencyTable
from vidnas.search.stnas import DecoderSupernet, derive_arch, derived_decoder, read_search_record
from vidnas.search.stnas.runner import check_searchable_decoder, check_stnas_config

REPO = Path(__file__).resolve().parents[1]
H, W, K = 64, 96, 3
# a temporal encoding: temporal laterals at strides 32 and 16 and a temporal block at stride 16, cheap ops elsewhere
TEMPORAL = ("temporal_k3", "temporal_k3", "conv1x1", "gconv1x1", "temporal_block", "sep_block", "skip", "sep3x3_s2")


def cfg(decoder: str = "arch2_space", window: int = 3) -> Config:
    return Config(data=DataConfig(height=H, width=W, window=window),
                  model=ModelConfig(encoder="mobilenetv2_test", decoder=decoder))


def space(ops: tuple[str, ...] | None = None, *, causal: bool = True, window: int = 3) -> Arch:
    return Arch(encoder="mobilenetv2_test", decoder="arch2_space", decoder_ops=ops, window=window, causal=causal,
                name="space")


def _randomise_bn(model: torch.nn.Module) -> None:
    """Trained-looking BatchNorm statistics, so a mapping mistake cannot hide behind the defaults."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def test_arch2_is_a_point_of_the_space() -> None:
    """arch2's encoding builds arch2: the same parameter count, and loaded with a per-frame arch2 model's weights (the
    documented mapping, ``Arch2SpaceDecoder.arch2_state``) the same logits and auxiliary logits on every frame."""
    torch.manual_seed(0)
    arch2 = build_model(cfg("arch2", window=1), num_classes=K)
    assert isinstance(arch2, StaticSegmenter)
    _randomise_bn(arch2)
    model = build_model(cfg(), space(ARCH2_OPS), num_classes=K)
    assert isinstance(model, MultiScaleSegmenter) and model.decoder.ops == ARCH2_OPS
    assert count_params(model) == count_params(arch2)
    assert build_model(cfg(), num_classes=K).decoder.ops == ARCH2_OPS  # the config's default point is arch2
    state = model.translate_init_state(arch2.state_dict())
    model.load_state_dict(state, strict=True)  # every tensor of the space's arch2 comes from arch2's
    clip = torch.randn(2, 3, 3, H, W)
    with torch.no_grad():
        model.eval(), arch2.eval()
        torch.testing.assert_close(model(clip), arch2(clip), atol=1e-5, rtol=1e-4)
        model.train(), arch2.train()  # training mode: the auxiliary heads too (BatchNorm on the same batch)
        (ours, ours_aux), (ref, ref_aux) = model(clip), arch2(clip)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
        for a, b in zip(ours_aux, ref_aux, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_arch2_weights_land_only_in_slots_holding_arch2_ops() -> None:
    arch2 = build_model(cfg("arch2", window=1), num_classes=K)
    model = build_model(cfg(), space(TEMPORAL), num_classes=K)
    state = model.translate_init_state(arch2.state_dict())
    own = model.state_dict()
    assert all(k in own and own[k].shape == v.shape for k, v in state.items())
    # conv1x1 at stride 8 (lateral 2) keeps arch2's tensors; the other slots hold other ops
    assert "decoder.laterals.2.0.0.conv.weight" in state and not any(k.startswith("decoder.laterals.0.") or
                                                                    k.startswith("decoder.blocks.") or
                                                                    k.startswith("decoder.down.") for k in state)


def test_the_cheapest_point_is_cheaper() -> None:
    torch.manual_seed(0)
    a2 = build_model(cfg(window=1), space(ARCH2_OPS, window=1), num_classes=K).eval()
    cheap = build_model(cfg(window=1), space(CHEAPEST_OPS, window=1), num_classes=K).eval()
    assert count_params(cheap.decoder) < count_params(a2.decoder) / 4
    clip = torch.randn(1, 1, 3, H, W)
    assert count_flops(cheap, clip) < count_flops(a2, clip)
    assert cheap(clip).shape == a2(clip).shape == (1, 1, K, H, W)
    assert cheap.decoder.temporal_receptive_field() == a2.decoder.temporal_receptive_field() == 1


def test_time_is_a_choice_per_slot() -> None:
    """A temporal encoding's output at the last frame moves when an earlier frame changes; a per-frame one's does
    not."""
    torch.manual_seed(0)
    clip = torch.randn(1, 3, 3, H, W)
    moved = torch.cat([clip[:, :2] + 1.0, clip[:, 2:]], dim=1)  # the previous frames change, the last does not
    for ops, reads_past in ((ARCH2_OPS, False), (CHEAPEST_OPS, False), (TEMPORAL, True)):
        model = build_model(cfg(), space(ops), num_classes=K)
        _randomise_bn(model)
        model.eval()
        with torch.no_grad():
            change = float((model(moved)[:, -1] - model(clip)[:, -1]).abs().max())
        assert (change > 1e-3) == reads_past, (ops, change)
        assert (model.decoder.temporal_extent > 0) == reads_past
    one = TEMPORAL[:1] + ARCH2_OPS[1:]  # one temporal slot is enough
    assert Arch2SpaceDecoder([8, 8, 24, 80], K, ops=one).temporal_extent == 2


@pytest.mark.parametrize("causal", [True, False])
def test_temporal_encoding_streams_as_it_clips(causal: bool) -> None:
    """Causal: the incremental streamer (one decoder step per frame); centred: the window streamer; both give the clip
    forward of each frame's window."""
    torch.manual_seed(0)
    model = build_model(cfg(), space(TEMPORAL, causal=causal), num_classes=K)
    _randomise_bn(model)
    model.eval()
    streamer = model.stream(batch_size=1)
    assert type(streamer).__name__ == ("IncrementalStreamer" if causal else "WindowStreamer")
    frames = torch.randn(1, 5, 3, H, W)
    outs = [streamer.push(frames[:, t]) for t in range(5)]
    streamed = torch.stack([o for o in outs if o is not None] + streamer.flush(), dim=1)
    target = model.target_index
    with torch.no_grad():
        for t in range(5):
            idx = [min(max(t - target + i, 0), 4) for i in range(3)]  # the data layer's window, edges repeated
            torch.testing.assert_close(streamed[:, t], model(frames[:, idx])[:, target], atol=1e-5, rtol=1e-4)


def test_arch_file_round_trip_and_bad_ops(tmp_path) -> None:
    a = dataclasses.replace(space(TEMPORAL), fuse_channels=16)
    a.save(tmp_path / "arch.json")
    assert Arch.load(tmp_path / "arch.json") == a
    assert len(SLOTS) == len(ARCH2_OPS) == len(CHEAPEST_OPS) == 8
    with pytest.raises(ArchError, match=r"entry 2 \(slot laterals.2.0, stride 8\): unknown op 'temporal_k3'"):
        space(("conv1x1", "conv1x1", "temporal_k3") + ARCH2_OPS[3:])
    with pytest.raises(ArchError, match="expected 8 op names"):
        space(ARCH2_OPS[:4])


def test_cli_trains_a_temporal_point_and_inits_it_from_arch2(tmp_path) -> None:
    """``vidnas train --arch`` trains a temporal point of the space on the tiny config, initialised from a per-frame
    arch2 checkpoint (its arch2-op slots), and the checkpoint loads and streams incrementally."""
    tiny = str(REPO / "configs" / "tiny.yaml")
    sets = ["data.synthetic_videos=2", "data.synthetic_frames=4", "train.batch_size=2",
            "train.max_steps_per_epoch=1", "train.epochs=1", "model.encoder=mobilenetv2_test"]
    arch2_cfg = load_config(tiny, [*sets, "model.decoder=arch2", "data.window=1"])
    arch2 = build_model(arch2_cfg, num_classes=4)
    save_checkpoint(tmp_path / "arch2.pt", {"model": arch2.state_dict(), "config": config_to_dict(arch2_cfg),
                                            "num_classes": 4})
    dataclasses.replace(space(TEMPORAL), fuse_channels=64).save(tmp_path / "arch.json")
    res = CliRunner().invoke(app, ["train", "--config", tiny, *sum((["--set", s] for s in sets), []), "--arch",
                                   str(tmp_path / "arch.json"), "--init-partial", "--init", str(tmp_path / "arch2.pt"),
                                   "--out", str(tmp_path / "space"), "--threads", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    loaded = load_model(tmp_path / "space" / "checkpoints" / "last.pt")
    assert isinstance(loaded.model, MultiScaleSegmenter) and loaded.model.decoder.ops == TEMPORAL
    assert type(loaded.model.stream()).__name__ == "IncrementalStreamer"


# ------------------------------------------------------------------------------------ ST-NAS over the arch2 space


def test_supernet_mixes_each_slot_over_its_own_candidates() -> None:
    """Every slot mixes only its candidates (the columns are their union; the others weigh 0, cost nothing and never
    win), and the derived decoder carries the chosen ops' weights: with one op per slot at weight ~1 it computes
    what the supernet computes."""
    torch.manual_seed(0)
    sup = DecoderSupernet(Arch2SpaceDecoder([80, 24, 8, 8], K, channels=8))
    assert sup.candidates == ("conv1x1", "gconv1x1", "temporal_k3", "block", "sep_block", "skip", "temporal_block",
                              "conv3x3_s2", "sep3x3_s2")
    assert sup.slots == [name for name, _, _, _ in SLOTS] and not sup.multiscale
    allowed = [[c in cands for c in sup.candidates] for _, _, _, cands in SLOTS]
    for row, ok in zip(sup.op_weights(), allowed, strict=True):
        assert all((w > 0) == a for w, a in zip(row, ok, strict=True))
        assert abs(sum(row) - 1) < 1e-6
    costs = torch.tensor([[1.0 if a else 1e6 for a in ok] for ok in allowed])  # a masked column cannot be paid for
    assert abs(sup.expected_latency(costs).item() - len(SLOTS)) < 1e-3
    feats = [torch.randn(1, c, 3, 2 * s, 3 * s) for c, s in zip((80, 24, 8, 8), (1, 2, 4, 8), strict=True)]
    sup.eval()
    assert sup(feats).shape == (1, K, 3, 8, 12)
    with torch.no_grad():
        for op in sup.mixed_ops():
            op.beta.copy_(torch.full_like(op.beta, 50.0))  # masked columns included: they still cannot win
    assert sup.derive() == ARCH2_OPS  # ties go to the first allowed column, arch2's op
    sup.set_betas([[50.0 if c == op else 0.0 for c in sup.candidates] for op in TEMPORAL])
    assert sup.derive() == TEMPORAL and arch_file_ops(sup) == TEMPORAL
    plain = derived_decoder(sup).eval()
    assert isinstance(plain, Arch2SpaceDecoder) and plain.ops == TEMPORAL
    with torch.no_grad():
        torch.testing.assert_close(plain(feats), sup(feats), atol=1e-5, rtol=1e-4)


def arch_file_ops(sup: DecoderSupernet) -> tuple[str, ...] | None:
    return derive_arch(space(), decoder_supernet=sup).decoder_ops


def test_a_derived_point_without_temporal_ops_is_a_per_frame_model() -> None:
    """No slot reads the past: the derived architecture has window 1 (one frame's decode under both streaming
    protocols, as arch2); a temporal point keeps the search's window."""
    assert derive_arch(space(window=3), decoder_ops=CHEAPEST_OPS).window == 1
    assert derive_arch(space(window=3), decoder_ops=ARCH2_OPS).window == 1
    temporal = derive_arch(space(window=3), decoder_ops=TEMPORAL)
    assert temporal.window == 3 and temporal.decoder == "arch2_space" and temporal.decoder_ops == TEMPORAL


@pytest.fixture(scope="module")
def cli_search(tmp_path_factory):
    """`vidnas search stnas --model arch2_space --decoder-latency` on the tiny config: encoder depths and the eight
    slots, priced by a latency table that holds every candidate of every slot."""
    out = tmp_path_factory.mktemp("space") / "search"
    res = CliRunner().invoke(app, ["search", "stnas", "--config", str(REPO / "configs" / "tiny.yaml"),
                                   *sum((["--set", s] for s in SEARCH), []), "--model", "arch2_space",
                                   "--decoder-latency", "--out", str(out), "--threads", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    return out, res.output


SEARCH = ["data.synthetic_videos=2", "data.synthetic_frames=4", "train.batch_size=2", "train.max_steps_per_epoch=2",
          "stnas.encoder_epochs=1", "stnas.decoder_epochs=2", "stnas.warmup_epochs=1", "stnas.lam=0.05",
          "model.fuse_channels=8", "stnas.bn_calib_batches=1", "stnas.depth_val_batches=1"]


def test_cli_search_over_the_arch2_space_derives_a_model_vidnas_trains(cli_search, tmp_path) -> None:
    out, output = cli_search
    assert "stride 32 lateral:" in output and "stride 4 down:" in output
    rec = read_search_record(out / "arch.json")
    arch = rec.arch
    assert arch.decoder == "arch2_space" and arch.fuse_channels == 8 and len(arch.decoder_ops) == len(SLOTS)
    assert arch.depths is not None and len(arch.depths) == 4
    assert (arch.window == 1) == (not any(op.startswith("temporal") for op in arch.decoder_ops))
    # one beta row per slot; a column the slot does not allow has weight 0 and the derived op is the row's argmax
    for row, (_, _, _, cands), op in zip(rec.betas, SLOTS, arch.decoder_ops, strict=True):
        weights = torch.softmax(torch.tensor(row), 0)
        assert all(float(w) < 1e-9 for c, w in zip(rec.beta_columns, weights, strict=True) if c not in cands)
        assert rec.beta_columns[row.index(max(row))] == op
    table = LatencyTable.load(out / "latency_table.json")
    assert any(k.startswith("decoder/arch2_space/op/temporal_block/") for k in table.parts)
    # the table prices every point: arch2 (the config's default), the cheapest point below it (its three skipped
    # blocks cost nothing), and a budget's estimate of a searched decoder (the slots' mean candidate)
    encoder = build_encoder("swin_test", img_size=(64, 96))
    base = dataclasses.replace(arch, decoder_ops=None, depths=None)
    a2, cheap = (table.model_latency(encoder, None, dataclasses.replace(base, decoder_ops=ops), 4)
                 for ops in (ARCH2_OPS, CHEAPEST_OPS))
    estimate = table.model_latency(encoder, None, base, 4) - table.decoder_latency_estimate(
        encoder, base, 4, searched=False) + table.decoder_latency_estimate(encoder, base, 4, searched=True)
    assert table.model_latency(encoder, None, base, 4) == a2 and cheap < a2 and estimate > 0
    assert rec.extra["model_latency_ms"] > 0 and rec.extra["full_model_latency_ms"] > 0
    assert "## The arch2 space: time per slot" in (out / "report.md").read_text()
    loaded = load_model(out / "derived_init.pt")
    assert isinstance(loaded.model, MultiScaleSegmenter) and loaded.model.decoder.ops == arch.decoder_ops
    res = CliRunner().invoke(app, ["train", "--config", str(REPO / "configs" / "tiny.yaml"),
                                   *sum((["--set", s] for s in SEARCH[:4]), []), "--set", "train.epochs=1",
                                   "--arch", str(out / "arch.json"), "--init", str(out / "derived_init.pt"),
                                   "--out", str(tmp_path / "train"), "--threads", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    trained = load_model(tmp_path / "train" / "checkpoints" / "last.pt")
    assert trained.model.decoder.ops == arch.decoder_ops


def test_search_refusals_name_the_space() -> None:
    tiny = str(REPO / "configs" / "tiny.yaml")
    with pytest.raises(ValueError, match="model.decoder=arch2_space searches a space that contains arch2"):
        check_searchable_decoder(arch_from_config(load_config(tiny, ["model.decoder=mstcn", "model.fusion=arch2",
                                                                      "model.decoder_scales=[32,16,8,4]"])))
    with pytest.raises(ValueError, match="the arch2_space decoder has its own candidates per slot"):
        check_stnas_config(load_config(tiny, ["model.decoder=arch2_space", "stnas.candidates=[identity,sep_k3]"]))


def test_the_sweep_refuses_an_arch2_reference_of_another_width(tmp_path) -> None:
    """Over the space, the per-frame arch2 reference is the space's arch2 point only at arch2's width (64)."""
    res = CliRunner().invoke(app, ["search", "stnas", "--config", str(REPO / "configs" / "tiny.yaml"), "--model",
                                   "arch2_space", "--set", "model.fuse_channels=8", "--lambdas", "0,0.1",
                                   "--references", "arch2", "--out", str(tmp_path / "sweep")])
    assert res.exit_code != 0 and "model.fuse_channels=8: the per-frame arch2 reference has 64 channels" in res.output
    assert not (tmp_path / "sweep" / "baseline").exists()


def test_a_decoder_search_over_the_arch2_space_at_window_1_is_refused_in_one_line(tmp_path) -> None:
    """At window 1 the temporal candidates read no past frame: the search (and a sweep, before its first stage) says
    so and names the fix; the depth-only search stays possible."""
    args = ["search", "stnas", "--config", str(REPO / "configs" / "tiny.yaml"), "--set", "data.window=1",
            "--model", "arch2_space", "--out", str(tmp_path / "s"), "--threads", "1", "--quiet"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code != 0
    assert "data.window=1: the arch2 space's temporal candidates would read no past" in res.output
    assert not (tmp_path / "s").exists()
    sweep = CliRunner().invoke(app, [*args[:-5], "--lambdas", "0.01", "--out", str(tmp_path / "w"), "--quiet"])
    assert sweep.exit_code != 0 and "data.window >= 2" in sweep.output and not (tmp_path / "w").exists()
