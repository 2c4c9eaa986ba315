"""ST-NAS over the multi-scale decoder family (``mstcn``): the decoder supernet covers the trunk and every finer
scale's path and fusion ops, the derived model round-trips through ``arch.json``, the search and the CLI run on the
tiny config, random architectures sample the scale slots, and the latency table reads the multi-scale decoder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vidnas.cli.main import app
from vidnas.config import load_config
from vidnas.models import Arch, arch_from_config, build_encoder, build_model, load_model
from vidnas.models.decoders import HeadDecoder, MultiScaleDecoder
from vidnas.models.multiscale import MultiScaleSegmenter
from vidnas.models.ops import SEARCH_CANDIDATES
from vidnas.search.latency import (
    LatencyTable,
    complete_model_parts,
    decoder_inputs,
    measure_latency_table,
    multiscale_signatures,
)
from vidnas.search.stnas import (
    DecoderSupernet,
    MixedOp,
    build_multiscale_supernet,
    derive_arch,
    derived_decoder,
    read_search_record,
    sample_random_archs,
    search_stnas,
    write_search_arch,
)
from vidnas.search.stnas.report import decoder_slot_labels, scale_decisions

REPO = Path(__file__).resolve().parents[1]
TINY_YAML = str(REPO / "configs" / "tiny.yaml")
# configs/tiny.yaml with the multi-scale decoder: swin_test at 64x96 (stride 32, 8, 4 maps 2x3, 8x12, 16x24), window
# 3, trunk width 8 with dilations 1, 2 (8 trunk slots) and fusion width 8 at two finer scales (6 scale slots)
TINY = ["data.synthetic_videos=3", "data.synthetic_frames=6", "train.batch_size=2", "train.max_steps_per_epoch=2",
        "stnas.encoder_epochs=1", "stnas.decoder_epochs=2", "stnas.warmup_epochs=1", "stnas.lam=0.05",
        "model.decoder=mstcn", "model.fuse_channels=8"]
H, W, K = 64, 96, 4
TRUNK, SCALE = 8, 6  # searched slots of the tiny multi-scale decoder


def tiny_cfg(*extra: str):
    return load_config(TINY_YAML, [*TINY, *extra])


def _sets(items: list[str]) -> list[str]:
    return sum((["--set", s] for s in items), [])


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the timed latency parts: no contention between threads on a shared machine
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------------ supernet


def test_supernet_covers_the_trunk_and_every_finer_scale():
    torch.manual_seed(0)
    sup = build_multiscale_supernet([16, 6, 4], K, channels=8, fuse_channels=4, dilations=(1, 2))
    assert sup.multiscale and sup.num_trunk_slots == TRUNK and len(sup.slots) == TRUNK + SCALE
    assert sup.slots[TRUNK:] == ["paths.0.0", "paths.0.1", "fuses.0.0", "paths.1.0", "paths.1.1", "fuses.1.0"]
    assert all(isinstance(op, MixedOp) and op.candidates == SEARCH_CANDIDATES for op in sup.mixed_ops())
    assert [op.channels for op in sup.mixed_ops()] == [8] * TRUNK + [4] * SCALE
    assert len(sup.arch_parameters()) == TRUNK + SCALE
    feats = [torch.randn(2, 16, 3, 2, 3), torch.randn(2, 6, 3, 4, 6), torch.randn(2, 4, 3, 8, 12)]
    assert sup(feats).shape == (2, K, 3, 8, 12)
    trunk, scale = sup.split_ops()
    assert len(trunk) == TRUNK and len(scale) == SCALE
    # every mixed op counts its widest candidate (temporal_k5: 4 frames at the slot's dilation): reduce 2, trunk
    # layers 4 * 4 * (1 + 2); each finer scale's fusion adds 4 to the longer of the coarser result and its path (8)
    assert sup.temporal_receptive_field() == 1 + 2 + 16 * 3 + 4 + 4
    # a fixed 3x3x3 trunk: only the scale slots are searched
    scales_only = DecoderSupernet(MultiScaleDecoder([16, 6, 4], K, channels=8, fuse_channels=4, dilations=(1,)))
    assert scales_only.num_trunk_slots == 0 and len(scales_only.slots) == SCALE
    assert scales_only.split_ops()[0] is None
    with pytest.raises(TypeError, match="HeadDecoder"):
        DecoderSupernet(HeadDecoder(16, K))


@pytest.mark.parametrize("causal", [True, False])
def test_folding_reproduces_the_multiscale_supernet_exactly_when_other_ops_are_silent(causal):
    """Chosen ops at weight w < 1, the others silenced: the folded derived decoder computes the supernet, identity
    paths and identity fusions included (their weight goes where their input comes from)."""
    torch.manual_seed(0)
    cands = ("identity", "spatial_k3", "sep_k3", "temporal_k3")
    sup = build_multiscale_supernet([16, 6, 4], 3, channels=8, fuse_channels=4, dilations=(1,), candidates=cands,
                                    causal=causal)
    chosen = ["spatial_k3", "sep_k3", "spatial_k3", "identity",  # trunk
              "identity", "temporal_k3", "identity",  # stride 8: identity path op 1 and identity fusion
              "identity", "identity", "identity"]  # stride 4: an all-identity scale
    with torch.no_grad():
        for k, (op, name) in enumerate(zip(sup.mixed_ops(), chosen, strict=True)):
            beta = {c: -0.5 for c in cands} | {"identity": -40.0, name: 0.3 * k}
            op.beta.copy_(torch.tensor([beta[c] for c in cands]))
            for c, module in zip(cands, op.ops, strict=True):
                bns = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm3d)]
                if c != name and c != "identity":
                    bns[-1].weight.zero_()
                    bns[-1].bias.zero_()
                for bn in bns:  # non-trivial statistics
                    bn.running_mean.uniform_(-0.2, 0.2)
                    bn.running_var.uniform_(0.5, 2.0)
    assert sup.derive() == tuple(chosen)
    assert all(max(w) < 0.95 for w in sup.op_weights())
    sup.eval()
    x = [torch.randn(2, 16, 3, 2, 3), torch.randn(2, 6, 3, 4, 6), torch.randn(2, 4, 3, 8, 12)]
    with torch.no_grad():
        ref = sup(x)
        folded = derived_decoder(sup).eval()(x)
        plain = derived_decoder(sup, fold=False).eval()(x)
    assert isinstance(derived_decoder(sup), MultiScaleDecoder)
    torch.testing.assert_close(folded, ref, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(plain, ref, atol=1e-3)  # without folding the derived decoder is off


# ------------------------------------------------------------------------------------------ derived model, arch.json


def _stream(model: torch.nn.Module, frames: torch.Tensor) -> torch.Tensor:
    streamer = model.stream(batch_size=1)
    outs = [streamer.push(frames[:, t]) for t in range(frames.shape[1])]
    return torch.stack([o for o in outs if o is not None] + list(streamer.flush()), dim=1)  # (1, T, K, H, W)


def _clip_reference(model: torch.nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """Every frame decoded in its own window, edges repeated like the data layer: what streaming must give."""
    t_len, w, target = frames.shape[1], model.window, model.target_index
    outs = []
    with torch.no_grad():
        for t in range(t_len):
            idx = [min(max(t - target + i, 0), t_len - 1) for i in range(w)]
            outs.append(model(frames[:, idx])[:, target])
    return torch.stack(outs, dim=1)


@pytest.mark.parametrize("causal", [True, False])
def test_derived_multiscale_model_round_trips_through_arch_json(tmp_path, causal):
    """derive -> Arch -> arch.json -> build_model computes what ``derived_decoder`` computes; it streams as it clips."""
    torch.manual_seed(1)
    cfg = tiny_cfg(f"data.temporal={'causal' if causal else 'centred'}")
    base = Arch(encoder="swin_test", decoder="mstcn", window=3, causal=causal, channels=8, dilations=(1, 2),
                scales=(32, 8, 4), fuse_channels=8)
    encoder = build_encoder("swin_test", img_size=(H, W))
    sup = build_multiscale_supernet([encoder.out_channels[i] for i in (3, 1, 0)], K, channels=8, fuse_channels=8,
                                    dilations=(1, 2), causal=causal)
    betas = torch.randn(TRUNK + SCALE, len(SEARCH_CANDIDATES))
    betas[TRUNK + 3, SEARCH_CANDIDATES.index("temporal_k3")] = 9.0  # stride 4 looks across frames
    betas[TRUNK + 0:TRUNK + 3, SEARCH_CANDIDATES.index("spatial_k3")] = 9.0  # stride 8 does not
    sup.set_betas(betas.tolist())
    ops = sup.derive()
    derived = MultiScaleSegmenter(encoder, derived_decoder(sup), K, scales=(32, 8, 4), window=3, causal=causal)

    arch = derive_arch(base, decoder_ops=ops, name="stnas")
    assert arch.decoder == "mstcn" and arch.decoder_ops == ops[:TRUNK] and arch.scale_ops == ops[TRUNK:]
    path = write_search_arch(tmp_path / "arch.json", arch, alphas=None, betas=sup.betas(), lam=None,
                             latency_table_path=None, latency_table_device=None, beta_columns=SEARCH_CANDIDATES)
    loaded = Arch.load(path)
    assert dataclasses.replace(loaded, extra={}) == arch and read_search_record(path).betas == sup.betas()
    built = build_model(cfg, loaded, num_classes=K)
    assert isinstance(built, MultiScaleSegmenter)
    built.load_state_dict(derived.state_dict(), strict=True)  # same module names, same shapes
    built.eval()
    derived.eval()
    frames = torch.randn(1, 5, 3, H, W)
    with torch.no_grad():
        torch.testing.assert_close(built(frames[:, :3]), derived(frames[:, :3]))
    torch.testing.assert_close(_stream(built, frames), _clip_reference(built, frames), atol=1e-5, rtol=1e-4)
    decisions = scale_decisions(loaded)
    assert [d["stride"] for d in decisions] == [32, 8, 4]
    assert [d["temporal"] for d in decisions[1:]] == [False, True]


def test_write_search_arch_checks_the_scale_slots_too(tmp_path):
    arch = Arch(encoder="swin_test", decoder="mstcn", window=3, channels=8, dilations=(1,),
                decoder_ops=("identity",) * 4, scale_ops=("spatial_k3",) * 6)
    betas = [[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 6
    write_search_arch(tmp_path / "ok.json", arch, alphas=None, betas=betas, lam=None, latency_table_path=None,
                      latency_table_device=None, beta_columns=["identity", "spatial_k3"])
    betas[-1] = [1.0, 0.0]
    from vidnas.models import ArchError

    with pytest.raises(ArchError, match="slot 9"):
        write_search_arch(tmp_path / "bad.json", arch, alphas=None, betas=betas, lam=None, latency_table_path=None,
                          latency_table_device=None, beta_columns=["identity", "spatial_k3"])
    with pytest.raises(ArchError, match="9 rows of betas for 10"):
        write_search_arch(tmp_path / "bad.json", arch, alphas=None, betas=betas[:9], lam=None,
                          latency_table_path=None, latency_table_device=None)


# -------------------------------------------------------------------------------------------------- random archs


def test_random_archs_sample_the_scale_slots():
    base = Arch(encoder="swin_test", decoder="mstcn", window=3, channels=8, dilations=(1, 2), scales=(32, 8, 4),
                fuse_channels=8)
    archs = sample_random_archs(base, (2, 2, 2, 2), 60, candidates=SEARCH_CANDIDATES, seed=5)
    assert len({(a.depths, a.decoder_ops, a.scale_ops) for a in archs}) == 60
    for a in archs:
        assert a.decoder == "mstcn" and len(a.decoder_ops) == TRUNK and len(a.scale_ops) == SCALE
        assert set(a.decoder_ops) | set(a.scale_ops) <= set(SEARCH_CANDIDATES)
    # every finer scale comes out temporal in some draws and per frame in others
    per_scale = [[scale_decisions(a)[s]["temporal"] for a in archs] for s in (1, 2)]
    assert all(any(v) and not all(v) for v in per_scale)
    assert sample_random_archs(base, (2, 2, 2, 2), 60, candidates=SEARCH_CANDIDATES, seed=5) == archs
    # the SP-TCN space draws exactly what it drew before the scale slots existed: 8 ops a sample, nothing more
    sp = dataclasses.replace(base, decoder="sptcn")
    sp_archs = sample_random_archs(sp, (2, 2, 2, 2), 3, candidates=SEARCH_CANDIDATES, seed=5)
    import random

    rng = random.Random(5)
    for a in sp_archs:
        assert a.depths == tuple(rng.randint(1, 2) for _ in range(4))
        assert a.decoder_ops == tuple(rng.choice(list(SEARCH_CANDIDATES)) for _ in range(TRUNK)) and a.scale_ops is None
    # the random models build
    build_model(tiny_cfg(), archs[0], num_classes=K)


# ------------------------------------------------------------------------------------------------------ latency


def test_latency_table_reads_the_multiscale_decoder_from_its_parts():
    cfg = tiny_cfg()
    base = Arch(encoder="swin_test", decoder="mstcn", window=3, channels=8, dilations=(1, 2), scales=(32, 8, 4),
                fuse_channels=8)
    encoder = build_encoder("swin_test", img_size=(H, W))
    table = LatencyTable(blocks={encoder.block_signature(i, j): 1.0 for i, d in enumerate(encoder.depths)
                                 for j in range(d)})
    assert complete_model_parts(table, encoder, base, K, SEARCH_CANDIDATES)
    channels, hws = decoder_inputs(encoder, base)
    assert channels == [encoder.out_channels[i] for i in (3, 1, 0)] and hws == [(2, 3), (8, 12), (16, 24)]
    ms = multiscale_signatures(base, channels, K, hws, (H, W))
    # the config's decoder: 3x3x3 trunk, per-frame default scale ops
    assert ms["trunk_ops"] is None and len(ms["scale_ops"]) == SCALE
    default = table.decoder_latency(base, channels, K, hws, (H, W))
    assert default == pytest.approx(table.part(ms["upsample"]) + table.part(ms["fixed_baseline"])
                                    + sum(table.part(k) for k in ms["scale_ops"]))
    # a searched one: fixed parts with identity trunk slots + every slot's op at its width, dilation and map size
    arch = dataclasses.replace(base, decoder_ops=("temporal_k3",) * TRUNK, scale_ops=("sep_k5",) * SCALE)
    searched = multiscale_signatures(arch, channels, K, hws, (H, W))
    assert searched["trunk_ops"][0] == "decoder/op/temporal_k3/f8_d1_causal/t3_2x3"
    assert searched["trunk_ops"][4] == "decoder/op/temporal_k3/f8_d2_causal/t3_2x3"
    assert searched["scale_ops"][0] == "decoder/op/sep_k5/f8_d1_causal/t3_8x12"
    assert searched["scale_ops"][3] == "decoder/op/sep_k5/f8_d1_causal/t3_16x24"
    expected = (table.part(searched["upsample"]) + table.part(searched["fixed_searched"])
                + sum(table.part(k) for k in searched["trunk_ops"] + searched["scale_ops"]))
    assert table.decoder_latency(arch, channels, K, hws, (H, W)) == pytest.approx(expected)
    full = table.model_latency(encoder, None, arch, K)
    assert full == pytest.approx(table.fixed_encoder_latency(encoder) + 8.0 + expected)
    # the budget's estimate for a decoder still to be searched: the mean candidate in every slot
    est = table.decoder_latency_estimate(encoder, base, K, searched=True)
    mean_ops = [sum(table.part(ms["op"](n, c, d, hw)) for n in SEARCH_CANDIDATES) / 7
                for c, d, hw in [(8, 1, hws[0])] * 4 + [(8, 2, hws[0])] * 4 + [(8, 1, hws[1])] * 3
                + [(8, 1, hws[2])] * 3]
    assert est == pytest.approx(table.part(ms["fixed_searched"]) + table.part(ms["upsample"]) + sum(mean_ops))
    with pytest.raises(KeyError, match="'head' decoder has no parts"):
        table.decoder_latency(dataclasses.replace(base, decoder="head"), 8, K, (2, 3), (H, W))
    assert cfg.model.decoder == "mstcn"


# ------------------------------------------------------------------------------------------------ search and CLI


@pytest.fixture(scope="module")
def cli_search(tmp_path_factory):
    """`vidnas search stnas --model mstcn --decoder-latency` on the tiny config: both phases, a measured latency
    table that prices the decoder ops too."""
    out = tmp_path_factory.mktemp("ms") / "search"
    args = ["search", "stnas", "--config", TINY_YAML, *_sets([t for t in TINY if not t.startswith("model.decoder")]),
            "--model", "mstcn", "--decoder-latency", "--out", str(out), "--threads", "1", "--quiet"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return out, res.output


def test_cli_search_over_mstcn_writes_a_buildable_arch_json(cli_search):
    out, output = cli_search
    assert "encoder depths: 2,2,2,2 ->" in output and "trunk layer 1:" in output
    assert "stride 8 (path, path, fusion):" in output and "stride 4 (path, path, fusion):" in output
    assert "model latency (table, per frame):" in output
    rec = read_search_record(out / "arch.json")
    arch = rec.arch
    assert arch.decoder == "mstcn" and len(arch.decoder_ops) == TRUNK and len(arch.scale_ops) == SCALE
    assert len(rec.betas) == TRUNK + SCALE  # one row per slot: trunk, then the finer scales
    ops = [rec.beta_columns[row.index(max(row))] for row in rec.betas]
    assert tuple(ops) == arch.decoder_ops + arch.scale_ops
    assert rec.extra["model_latency_ms"] > 0 and rec.extra["full_model_latency_ms"] > 0
    report = (out / "report.md").read_text()
    assert "## Per scale: does temporal context pay?" in report and "| stride 4 fusion |" in report
    assert "Loss: task + lambda 0.05 x expected table latency of the ops" in report
    assert all((out / n).is_file() for n in ("decoder.png", "betas.png", "alphas.png", "derived_init.pt"))
    # the file alone builds the model; derived_init.pt loads with load_model and streams as it clips
    model = build_model(tiny_cfg("model.decoder=sptcn", "model.fuse_channels=64"), arch, num_classes=K)
    assert isinstance(model, MultiScaleSegmenter) and model.decoder.scale_ops == arch.scale_ops
    loaded = load_model(out / "derived_init.pt")
    assert isinstance(loaded.model, MultiScaleSegmenter) and loaded.model.decoder.scale_ops == arch.scale_ops
    frames = torch.randn(1, 4, 3, H, W)
    torch.testing.assert_close(_stream(loaded.model, frames), _clip_reference(loaded.model, frames), atol=1e-5,
                               rtol=1e-4)


def test_cli_trains_the_searched_multiscale_model_from_arch_json(cli_search, tmp_path):
    out, _ = cli_search
    # the config says sptcn on purpose: the architecture file wins
    res = CliRunner().invoke(app, ["train", "--config", TINY_YAML, *_sets(TINY[:4]), "--set", "train.epochs=1",
                                   "--arch", str(out / "arch.json"), "--init", str(out / "derived_init.pt"),
                                   "--out", str(tmp_path / "train"), "--threads", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    loaded = load_model(tmp_path / "train" / "checkpoints" / "last.pt")
    assert isinstance(loaded.model, MultiScaleSegmenter)
    assert loaded.model.decoder.scale_ops == Arch.load(out / "arch.json").scale_ops


def test_search_decoder_only_over_mstcn_with_a_budget(tmp_path):
    """Budget mode with the multi-scale decoder: the table holds its parts, the report reads the model latency."""
    cfg = tiny_cfg("stnas.depth_rule=truncated", "stnas.decoder_epochs=1", "stnas.warmup_epochs=0",
                   "stnas.target_latency_ms=1000")
    res = search_stnas(cfg, tmp_path, show_progress=False, plots=False, save_init=False)
    assert res.depth["decoder_ms"] > 0 and res.model_latency_ms is not None
    assert res.arch.scale_ops is not None and len(res.decoder_ops) == TRUNK + SCALE
    labels = decoder_slot_labels(res.arch)
    assert labels[0] == "trunk layer 1" and labels[-1] == "stride 4 fusion"


def test_sweep_tables_name_the_per_scale_choice():
    from vidnas.experiments.candidates import Candidate

    def summary(**arch: object) -> str:
        return Candidate(name="m", lam=None, arch={"decoder": "mstcn", "scales": [32, 8, 4], **arch},
                         checkpoint=None, best_miou=0.0, train_seconds=0.0).decoder

    assert summary(decoder_ops=None, scale_ops=None) == "3x3x3; s8 S, s4 S"  # the default: per-frame paths
    ops = ("identity", "temporal_k3", "sep_k3", "spatial_k3") * 2
    assert summary(decoder_ops=ops, scale_ops=("sep_k3", "identity", "spatial_k3", "temporal_k5", "identity",
                                               "spatial_k3")) == "2T/4S/2I; s8 S, s4 T"


# ------------------------------------------------------------------------------------------ decoder latency term


def test_decoder_op_costs_follow_the_supernet_slots_and_sum_to_the_table_latency():
    """``decoder_op_costs`` rows are the supernet's slots: under one-hot betas ``expected_latency`` is the table
    latency of the derived decoder minus its fixed parts, and under uniform betas the budget mode's estimate."""
    base = arch_from_config(tiny_cfg())
    enc = build_encoder(base.encoder, img_size=(H, W))
    table = measure_latency_table(enc, warmup=0, iters=1, repeats=1)
    complete_model_parts(table, enc, base, K)
    sup = build_multiscale_supernet([enc.out_channels[i] for i in (3, 1, 0)], K, channels=base.channels,
                                    fuse_channels=base.fuse_channels, dilations=base.dilations)
    costs = table.decoder_op_costs(enc, base, K, len(sup.slots), sup.candidates)
    assert costs.shape == (TRUNK + SCALE, len(SEARCH_CANDIDATES)) and bool((costs > 0).all())
    channels, hws = decoder_inputs(enc, base)
    ms = multiscale_signatures(base, channels, K, hws, enc.img_size)
    fixed = table.part(ms["fixed_searched"]) + table.part(ms["upsample"])
    uniform = float(sup.expected_latency(costs).detach())
    assert uniform == pytest.approx(table.decoder_latency_estimate(enc, base, K, searched=True) - fixed, rel=1e-5)
    gen = torch.Generator().manual_seed(0)
    pick = torch.randint(0, len(SEARCH_CANDIDATES), (TRUNK + SCALE,), generator=gen).tolist()
    sup.set_betas([[40.0 if j == p else 0.0 for j in range(len(SEARCH_CANDIDATES))] for p in pick])
    trunk, scale = sup.split_ops()
    derived = dataclasses.replace(base, decoder_ops=trunk, scale_ops=scale)
    want = table.decoder_latency(derived, channels, K, hws, enc.img_size) - fixed
    assert float(sup.expected_latency(costs).detach()) == pytest.approx(want, rel=1e-5)
    # the gradient prices each op by its cost against the slot's mean: d E / d beta_j = w_j (c_j - E_s[c])
    sup.set_betas([[0.0] * len(SEARCH_CANDIDATES)] * (TRUNK + SCALE))
    sup.expected_latency(costs).backward()
    grad = sup.mixed_ops()[0].beta.grad
    w = 1.0 / len(SEARCH_CANDIDATES)
    assert torch.allclose(grad, w * (costs[0] - costs[0].mean()), atol=1e-6)
    with pytest.raises(ValueError, match="cannot have 5 slots"):
        table.decoder_op_costs(enc, base, K, 5, sup.candidates)


def test_decoder_latency_term_steers_the_search_to_cheap_ops(tmp_path):
    """With stnas.decoder_latency and a lambda that outweighs the task loss, every slot derives its cheapest op;
    lambda 0 with the term on is the paper's task-only search (same ops as with the term off)."""
    common = ["stnas.decoder_epochs=3", "stnas.warmup_epochs=0", "stnas.latency_table=null"]
    res = search_stnas(tiny_cfg(*common, "stnas.decoder_latency=true", "stnas.lam=1000"), tmp_path / "cheap",
                       show_progress=False, plots=False, save_init=False, skip_encoder=True)
    table = LatencyTable.load(tmp_path / "cheap" / "latency_table.json")
    base = arch_from_config(tiny_cfg())
    enc = build_encoder(base.encoder, img_size=(H, W))
    costs = table.decoder_op_costs(enc, base, K, TRUNK + SCALE, SEARCH_CANDIDATES)
    chosen = [SEARCH_CANDIDATES.index(op) for op in res.decoder_ops]
    cheapest = costs.argmin(dim=1).tolist()
    assert chosen == cheapest, (res.decoder_ops, costs)
    assert res.decoder["latency_lambda"] == 1000
    report = (tmp_path / "cheap" / "report.md").read_text()
    assert "lambda 1000 x expected table latency" in report
    off = search_stnas(tiny_cfg(*common), tmp_path / "off", show_progress=False, plots=False, save_init=False,
                       skip_encoder=True)
    zero = search_stnas(tiny_cfg(*common, "stnas.decoder_latency=true", "stnas.lam=0"), tmp_path / "zero",
                        show_progress=False, plots=False, save_init=False, skip_encoder=True)
    assert zero.decoder_ops == off.decoder_ops and off.decoder["latency_lambda"] is None
    assert [SEARCH_CANDIDATES.index(op) for op in off.decoder_ops] != cheapest  # the task alone picks otherwise


def test_decoder_search_refuses_the_arch2_fusion_before_any_work(tmp_path):
    cfg = tiny_cfg("model.fusion=arch2", "model.decoder_scales=32,16,8,4")
    with pytest.raises(ValueError, match="model.fusion='arch2'.*--set model.fusion=fpn"):
        search_stnas(cfg, tmp_path / "run", show_progress=False, plots=False, save_init=False)
    assert not (tmp_path / "run").exists()
