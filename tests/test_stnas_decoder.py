"""The ST-NAS decoder search: the betas' lr scaled to the arch steps, the beta entropy, several seeds and their
consensus, and ``derived_init.pt`` computing what the supernet computes (mixing weights folded, BatchNorm
recalibrated)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from vidnas.checkpoint import load_checkpoint
from vidnas.config import load_config
from vidnas.data import build_datasets
from vidnas.engine.logger import read_jsonl
from vidnas.engine.losses import segmentation_loss
from vidnas.models import Arch, build_model
from vidnas.search.stnas import (
    build_decoder_supernet,
    decoder_consensus,
    derived_decoder,
    read_search_record,
    search_decoder_ops,
    search_stnas,
)

REPO = Path(__file__).resolve().parents[1]
TINY_YAML = str(REPO / "configs" / "tiny.yaml")  # swin_test 2,2,2,2 at 64x96, SP-TCN width 8, dilations 1,2
TINY = ["data.synthetic_videos=3", "data.synthetic_frames=6", "train.batch_size=2", "train.max_steps_per_epoch=2",
        "stnas.decoder_epochs=2", "stnas.warmup_epochs=1", "stnas.bn_calib_batches=2"]
STEPS = 2


def _cfg(*extra):
    return load_config(TINY_YAML, [*TINY, *extra])


def test_consensus_by_hand():
    cols = ["a", "b", "c"]
    # 2 seeds x 2 slots; slot 0: both prefer a; slot 1: seed 0 b (0.5), seed 1 c (0.6), mean: b 0.35, c 0.4 -> c
    w = [[[0.6, 0.3, 0.1], [0.3, 0.5, 0.2]],
         [[0.5, 0.2, 0.3], [0.2, 0.2, 0.6]]]
    c = decoder_consensus(w, cols)
    assert c["ops"] == ["a", "c"]
    assert c["seed_ops"] == [["a", "b"], ["a", "c"]]
    assert c["slot_agreement"] == [1.0, 0.5] and c["agreement"] == 0.75
    assert c["pairwise_agreement"] == 0.5  # the two seeds agree on 1 slot of 2
    assert c["weights_mean"][1] == pytest.approx([0.25, 0.35, 0.4])
    assert [math.exp(b) for b in c["betas"][1]] == pytest.approx([0.25, 0.35, 0.4])
    assert c["op_preference"][0] == pytest.approx([0.45, 0.4, 0.15])
    assert c["chance_agreement"] == pytest.approx(1 / 3)
    assert decoder_consensus(w[:1], cols)["pairwise_agreement"] is None


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    run = tmp_path_factory.mktemp("seeds")
    res = search_stnas(_cfg("stnas.decoder_seeds=2"), run, skip_encoder=True, show_progress=False)
    return run, res


def test_beta_lr_is_travel_over_arch_steps_and_entropy_is_logged(two_seeds):
    run, res = two_seeds
    rec = read_search_record(run / "arch.json")
    arch_steps = (2 - 1) * STEPS
    assert rec.decoder["arch_lr"] == pytest.approx(10.0 / arch_steps) and rec.decoder["beta_travel"] == 10.0
    recs = read_jsonl(run / "metrics.jsonl")
    dec = [r for r in recs if r["kind"] == "decoder_search"]
    beta = [r for r in recs if r["kind"] == "beta"]
    assert len(dec) == 2 * STEPS
    for d, b in zip(dec, beta, strict=True):  # the logged entropy is that of the logged weights
        rows: dict[int, list[float]] = {}
        for k, v in b.items():
            if k[:2].isdigit():
                rows.setdefault(int(k[:2]), []).append(v)
        ent = sum(-sum(w * math.log(w) for w in row) for row in rows.values()) / len(rows)
        assert d["beta_entropy"] == pytest.approx(ent, rel=1e-6)
        assert d["beta_max"] == pytest.approx(sum(max(r) for r in rows.values()) / len(rows), rel=1e-6)
    assert dec[STEPS - 1]["beta_entropy"] == pytest.approx(math.log(7))  # warm-up: uniform
    assert dec[-1]["beta_entropy"] < math.log(7) - 0.05  # with the scaled lr the betas move within the budget
    # with beta_travel null the betas use arch_lr per step, as before
    other = search_stnas(_cfg("stnas.beta_travel=null", "stnas.arch_lr=0.001"), run.parent / "plain",
                         skip_encoder=True, show_progress=False, plots=False, save_init=False)
    assert other.decoder["arch_lr"] == 0.001 and other.decoder["beta_travel"] is None


def test_two_decoder_seeds_average_and_report_their_agreement(two_seeds, tmp_path):
    run, res = two_seeds
    rec = read_search_record(run / "arch.json")
    d = rec.decoder
    assert d["seeds"] == 2 and len(d["seed_ops"]) == 2 and len(d["betas_per_seed"]) == 2
    assert (run / "checkpoints" / "decoder_search.pt").is_file()
    assert (run / "checkpoints" / "decoder_s1_search.pt").is_file()
    assert any(r["kind"] == "beta_s1" for r in read_jsonl(run / "metrics.jsonl"))
    # the derived op of every slot is the argmax of the seed-averaged softmax weights, which the betas encode
    cols = rec.beta_columns
    assert list(rec.arch.decoder_ops) == [cols[row.index(max(row))] for row in d["weights_mean"]]
    assert rec.betas == [[math.log(v) for v in row] for row in d["weights_mean"]]
    seeds_w = [[torch.softmax(torch.tensor(row), 0).tolist() for row in b] for b in d["betas_per_seed"]]
    assert d["weights_mean"] == [pytest.approx([(a + b) / 2 for a, b in zip(r0, r1, strict=True)])
                                 for r0, r1 in zip(*seeds_w, strict=True)]
    assert seeds_w[0] != seeds_w[1]  # the seeds differ
    ops = list(rec.arch.decoder_ops)
    assert d["slot_agreement"] == [sum(so[k] == ops[k] for so in d["seed_ops"]) / 2 for k in range(len(ops))]
    assert "2 decoder searches" in (run / "report.md").read_text()
    # seed 0 is the single-seed search: adding seeds does not change it
    one = search_stnas(_cfg(), tmp_path, skip_encoder=True, show_progress=False, plots=False, save_init=False)
    assert one.betas == d["betas_per_seed"][0]


# ------------------------------------------------------------------------------------------------ derived_init


def test_folding_reproduces_the_supernet_exactly_when_other_ops_are_silent():
    """Chosen ops at weight w < 1, the other candidates silenced (BatchNorm affine 0, or weight ~0 for identity):
    the supernet's slot output is w * op_k(x); the folded derived decoder must compute exactly the same."""
    torch.manual_seed(0)
    cands = ("identity", "spatial_k3", "sep_k3")
    sup = build_decoder_supernet(16, 3, channels=8, dilations=(1,), candidates=cands)
    chosen = ["spatial_k3", "sep_k3", "spatial_k3", "identity"]  # the branch ends on identity: its w carries back
    with torch.no_grad():
        for k, (op, name) in enumerate(zip(sup.mixed_ops(), chosen, strict=True)):
            beta = {c: -0.5 for c in cands} | {"identity": -40.0, name: 0.3 * k}
            op.beta.copy_(torch.tensor([beta[c] for c in cands]))
            for c, module in zip(cands, op.ops, strict=True):
                if c != name and c != "identity":
                    bn = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm3d)][-1]
                    bn.weight.zero_()
                    bn.bias.zero_()
                bn_all = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm3d)]
                for bn in bn_all:  # non-trivial statistics
                    bn.running_mean.uniform_(-0.2, 0.2)
                    bn.running_var.uniform_(0.5, 2.0)
    assert sup.derive() == tuple(chosen)
    weights = [max(w) for w in sup.op_weights()]
    assert all(w < 0.95 for w in weights) and weights[3] < 0.7
    sup.eval()
    x = torch.randn(2, 16, 3, 4, 6)
    with torch.no_grad():
        ref = sup(x)
        folded = derived_decoder(sup).eval()(x)
        plain = derived_decoder(sup, fold=False).eval()(x)
    assert torch.allclose(folded, ref, atol=1e-5)
    assert not torch.allclose(plain, ref, atol=1e-3)  # without folding the derived decoder is off


def test_derived_init_val_loss_within_1_2x_of_the_supernet(tmp_path):
    cfg = _cfg("stnas.decoder_epochs=4", "stnas.warmup_epochs=2", "train.max_steps_per_epoch=4", "train.lr=3e-3",
               "data.synthetic_frames=8")
    search_stnas(cfg, tmp_path, skip_encoder=True, show_progress=False, plots=False)
    # the trained supernet, as the search left it (resume from its last checkpoint: no further training)
    sup = search_decoder_ops(cfg, tmp_path, resume=True, show_progress=False)
    state = load_checkpoint(tmp_path / "derived_init.pt")
    derived = build_model(cfg, Arch.load(tmp_path / "arch.json"), num_classes=state["num_classes"])
    derived.load_state_dict(state["model"], strict=True)
    _, _, val_ds = build_datasets(cfg)
    loader = torch.utils.data.DataLoader(val_ds, batch_size=2)

    def val_loss(model):
        model.eval()
        with torch.no_grad():
            losses = [float(segmentation_loss(model(b["frames"]), b["masks"], 255)) for b in loader]
        return sum(losses) / len(losses)

    ls, ld = val_loss(sup.model), val_loss(derived)
    assert ls < math.log(4) - 0.1  # the supernet learned something (chance: ln 4)
    print(f"val loss: supernet {ls:.4f}, derived_init {ld:.4f}")
    assert ld <= 1.2 * ls, (ld, ls)
