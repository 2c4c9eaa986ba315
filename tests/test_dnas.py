"""ST-NAS differentiable search: Eq. 1, Eq. 2, the shrink rule, mixed ops, supernets, warm-up, search records.

Property tests on hand-computed cases plus the real tiny encoders and decoders (CPU, seconds).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from vidnas.config import Config, DataConfig, ModelConfig
from vidnas.models import SEARCH_CANDIDATES, Arch, ArchError, SPTCNDecoder, build_encoder, build_model
from vidnas.models.encoders import EncoderStage
from vidnas.search.stnas import (
    DecoderSupernet,
    DepthSearchStage,
    DepthSupernet,
    MixedOp,
    arch_parameters,
    arch_warmup,
    build_decoder_supernet,
    derive_arch,
    derived_decoder,
    read_search_record,
    search_step,
    shrink_depth,
    weight_parameters,
    write_search_arch,
)

TINY_ENCODERS = ("swin_test", "efficientnet_lite0_test", "mobilenetv2_test")


def _affine(weight: float, bias: float) -> nn.Linear:
    """A scalar block e(x) = weight * x + bias."""
    lin = nn.Linear(1, 1)
    with torch.no_grad():
        lin.weight.fill_(weight)
        lin.bias.fill_(bias)
    return lin


def _scalar_stage(
    weights: list[float], biases: list[float], alphas: list[float], down: float = 1.0
) -> DepthSearchStage:
    blocks = [_affine(w, b) for w, b in zip(weights, biases, strict=True)]
    stage = DepthSearchStage(EncoderStage(_affine(down, 0.0), blocks))
    with torch.no_grad():
        stage.alpha.copy_(torch.tensor(alphas))
    return stage


# ---------------------------------------------------------------------------------------------------------- Eq. 1


def test_eq1_weighted_sum_and_alpha_gradients_by_hand() -> None:
    # downsample x -> 2x; blocks e1 = 2x + 1, e2 = 3x, e3 = -x + 0.5; alphas (0.5, 2, 1.5); input 0.5
    stage = _scalar_stage([2.0, 3.0, -1.0], [1.0, 0.0, 0.5], [0.5, 2.0, 1.5], down=2.0)
    x = torch.tensor([[0.5]])
    out = stage(x)
    # x' = 1; f1 = 3; f2 = 3 * (0.5 * 3) = 4.5; f3 = -(2 * 4.5) + 0.5 = -8.5
    # out = 0.5 * 3 + 2 * 4.5 + 1.5 * (-8.5) = -2.25
    assert out.shape == (1, 1)
    assert out.item() == pytest.approx(-2.25)
    out.sum().backward()
    # d/da3 = f3 = -8.5
    # d/da2 = f2 + a3 * w3 * f2 = 4.5 - 6.75 = -2.25
    # d/da1 = f1 + a2 * (w2 f1) + a3 * (w3 * a2 * w2 f1) = 3 + 18 - 27 = -6
    assert stage.alpha.grad.tolist() == pytest.approx([-6.0, -2.25, -8.5])


def test_eq1_all_ones_is_sum_of_block_outputs_not_plain_stage() -> None:
    stage = _scalar_stage([2.0, 2.0, 2.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    out = stage(torch.tensor([[1.0]]))
    assert out.item() == pytest.approx(2 + 4 + 8)  # f_i = 2^i; the plain stage would give 8


def test_eq1_single_block_stage_with_alpha_one_is_the_plain_stage() -> None:
    # one block per stage and alpha = 1: Eq. 1 reduces to the plain encoder, on the real Swin
    torch.manual_seed(0)
    enc = build_encoder("swin_test", img_size=(32, 32), depths=(1, 1, 1, 1)).eval()
    sn = DepthSupernet(enc).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(sn(x), enc(x), strict=True):
            torch.testing.assert_close(a, b)


def test_eq1_on_a_real_swin_stage_matches_the_formula() -> None:
    torch.manual_seed(0)
    enc = build_encoder("swin_test", img_size=(32, 32), depths=(2, 3, 2, 2)).eval()
    sn = DepthSupernet(enc).eval()
    alphas = [[0.7, 1.3], [0.5, -0.4, 2.0], [1.0, 0.2], [0.9, 1.1]]
    sn.set_alphas(alphas)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        got = sn(x)
        h = enc.stem(x)
        want = []
        for s, stage in enumerate(enc.stages):
            h = stage.downsample(h)
            f = stage.blocks[0](h)
            acc = alphas[s][0] * f
            for i in range(1, len(stage.blocks)):
                f = stage.blocks[i](alphas[s][i - 1] * f)
                acc = acc + alphas[s][i] * f
            h = acc
            want.append(enc.stage_output(s, h))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_stage_without_blocks_passes_downsample_through() -> None:
    stage = DepthSearchStage(EncoderStage(_affine(3.0, 0.0), []))
    assert stage.alpha is None and stage.own_arch_parameters() == [] and stage.derive() == 0
    assert stage(torch.tensor([[2.0]])).item() == pytest.approx(6.0)
    assert stage.latency_penalty([]).item() == 0.0


# ---------------------------------------------------------------------------------------------------------- Eq. 2


def test_penalty_value_and_gradient_by_hand() -> None:
    lam = 0.1
    stage = _scalar_stage([1.0] * 3, [0.0] * 3, [0.5, -2.0, 1.5])
    s = [1.0, 3.0, 0.5]
    pen = lam * stage.latency_penalty(s)
    assert pen.item() == pytest.approx(0.1 * (0.5 * 1.0 + 2.0 * 3.0 + 1.5 * 0.5))  # 0.725, |alpha| not alpha
    pen.backward()
    assert stage.alpha.grad.tolist() == pytest.approx([0.1 * 1.0, -0.1 * 3.0, 0.1 * 0.5])  # lam * sign * s
    # expected latency = latency of the derived depth: the last alpha 1.5 >= 1 keeps all three blocks
    assert stage.derive() == 3 and stage.expected_latency(s) == pytest.approx(4.5)
    with torch.no_grad():
        stage.alpha.copy_(torch.tensor([1.2, 0.5, 0.9]))
    assert stage.derive() == 1 and stage.expected_latency(s) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="3 block latencies"):
        stage.latency_penalty([1.0, 2.0])


def test_supernet_penalty_sums_stages() -> None:
    enc = build_encoder("swin_test", img_size=(32, 32), depths=(2, 3, 2, 2))
    sn = DepthSupernet(enc)
    sn.set_alphas([[1.0, -0.5], [2.0, 0.0, 1.0], [0.25, 1.0], [1.0, 1.0]])
    lat = [[1.0, 2.0], [0.5, 7.0, 1.0], [4.0, 1.0], [0.0, 3.0]]
    pen = sn.penalty(lat)
    assert pen.item() == pytest.approx((1 + 1) + (1 + 0 + 1) + (1 + 1) + (0 + 3))
    pen.backward()
    assert sn.stages[0].alpha.grad.tolist() == pytest.approx([1.0, -2.0])
    assert sn.stages[1].alpha.grad.tolist() == pytest.approx([0.5, 0.0, 1.0])  # sign(0) = 0
    assert sn.expected_latency(lat) == pytest.approx(1.0 + 8.5 + 5.0 + 3.0)  # depths (1, 3, 2, 2)


# ---------------------------------------------------------------------------------------------------- shrink rule


@pytest.mark.parametrize(
    ("alphas", "threshold", "kept"),
    [
        ([1.2, 0.5, 0.9], 1.0, 1),  # 0.9 < 1 removed, 0.5 < 1 removed, 1.2 stops
        ([0.3, 1.5, 0.2, 0.1], 1.0, 2),  # 0.1, 0.2 removed, 1.5 stops
        ([1.0, 1.1, 3.0], 1.0, 3),  # all >= 1: keep all (equality keeps)
        ([0.1, 0.2, 0.3], 1.0, 1),  # all < 1: at least one block
        ([1.5, 0.2, 1.0, 0.99], 1.0, 3),  # stops at the first alpha >= 1 from the end, 0.2 inside is kept
        ([-3.0, -2.0], 1.0, 1),
        ([0.6, 0.4], 0.5, 1),
        ([], 1.0, 0),
    ],
)
def test_shrink_rule(alphas: list[float], threshold: float, kept: int) -> None:
    assert shrink_depth(alphas, threshold) == kept
    if alphas:
        stage = _scalar_stage([1.0] * len(alphas), [0.0] * len(alphas), alphas)
        assert stage.derive(threshold) == kept


def test_shrink_rule_min_blocks() -> None:
    assert shrink_depth([0.1, 0.2, 0.3], min_blocks=2) == 2
    assert shrink_depth([0.1, 0.2, 0.3], min_blocks=0) == 0
    assert shrink_depth([0.1], min_blocks=3) == 1


def test_odd_depth_on_swin_keeps_shift_parity() -> None:
    # stage 1 of swin_test at 64x64 is an 8x8 grid (window 4): block j is shifted iff j is odd
    enc = build_encoder("swin_test", img_size=(64, 64), depths=(2, 6, 2, 2))
    sn = DepthSupernet(enc)
    sn.set_alphas([[1.0, 1.0], [1.0, 0.2, 1.3, 0.9, 0.5, 0.1], [1.0, 1.0], [1.0, 1.0]])
    depths = sn.derive()
    assert depths == (2, 3, 2, 2)
    derived = sn.derived_encoder()
    assert derived.depths == depths and enc.depths == (2, 6, 2, 2)  # a copy; the supernet's encoder is untouched
    shifts = [tuple(b.shift_size) for b in derived.stages[1].blocks]
    assert shifts == [(0, 0), (2, 2), (0, 0)]  # odd depth: the stage ends on an unshifted block
    for j in range(3):  # blocks keep their signature, so the full encoder's latency table serves the derived one
        assert derived.block_signature(1, j) == enc.block_signature(1, j)
        torch.testing.assert_close(derived.stages[1].blocks[j].attn.qkv.weight, enc.stages[1].blocks[j].attn.qkv.weight)
    fresh = build_encoder("swin_test", img_size=(64, 64), depths=depths)  # what build_model makes from the arch
    assert [tuple(b.shift_size) for b in fresh.stages[1].blocks] == shifts


# ---------------------------------------------------------------------------------------------- depth supernet


@pytest.mark.parametrize("name", TINY_ENCODERS)
def test_depth_supernet_on_real_encoders(name: str) -> None:
    torch.manual_seed(0)
    enc = build_encoder(name, img_size=(32, 32)).eval()
    sn = DepthSupernet(enc).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = enc(x)
        got = sn(x)
    assert [o.shape for o in got] == [o.shape for o in want]
    assert sn.out_channels == enc.out_channels and sn.depths == enc.depths
    arch = sn.arch_parameters()
    assert sum(p.numel() for p in arch) == sum(enc.depths)
    assert sn.alphas() == [[1.0] * d for d in enc.depths]
    assert sn.derive() == enc.depths  # alpha = 1 >= threshold everywhere
    ids_arch, ids_w = {id(p) for p in arch}, {id(p) for p in sn.weight_parameters()}
    assert not ids_arch & ids_w and ids_arch | ids_w == {id(p) for p in sn.parameters()}
    assert {id(p) for p in sn.weight_parameters()} == {id(p) for p in enc.parameters()}  # shares, never copies
    # each tensor once in the state dict: the encoder's plus one alpha per stage with blocks
    assert len(sn.state_dict()) == len(enc.state_dict()) + sum(1 for d in enc.depths if d)
    # the generic walkers agree with the supernet's own split
    assert [id(p) for p in arch_parameters(sn)] == [id(p) for p in arch]
    assert {id(p) for p in weight_parameters(sn)} == ids_w
    # set alphas -> expected depths (min 1 per stage)
    sn.set_alphas([[0.5] * d for d in enc.depths])
    assert sn.derive() == tuple(min(d, 1) for d in enc.depths)
    with pytest.raises(ValueError, match="stage 0"):
        sn.set_alphas([[1.0] * (d + 1) for d in enc.depths])


def test_depth_supernet_gradients_reach_alphas_and_blocks() -> None:
    torch.manual_seed(0)
    enc = build_encoder("swin_test", img_size=(32, 32))
    sn = DepthSupernet(enc)
    loss = sum(o.square().mean() for o in sn(torch.randn(1, 3, 32, 32)))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in sn.arch_parameters())
    assert enc.stages[1].blocks[1].mlp.fc1.weight.grad is not None


def _lambda_run(lam: float, steps: int = 10) -> tuple[tuple[int, ...], list[list[float]]]:
    """A few joint steps on a seeded synthetic regression task; later blocks cost 10x more."""
    torch.manual_seed(0)
    enc = build_encoder("swin_test", img_size=(32, 32), depths=(2, 3, 2, 2), drop_path_rate=0.0)
    sn = DepthSupernet(enc)
    head = nn.Linear(sum(enc.out_channels), 1)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 3, 32, 32, generator=g), torch.randn(4, 1, generator=g)
    wopt = torch.optim.Adam(sn.weight_parameters() + list(head.parameters()), lr=1e-3)
    aopt = torch.optim.SGD(sn.arch_parameters(), lr=0.05)
    lat = [[0.1] * (d - 1) + [1.0] for d in sn.depths]

    def loss_fn(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        feats = torch.cat([f.mean(dim=(2, 3)) for f in sn(batch[0])], dim=1)
        return nn.functional.mse_loss(head(feats), batch[1]) + lam * sn.penalty(lat)

    for _ in range(steps):
        search_step(sn, loss_fn, wopt, aopt, (x, y), mode="joint")
    return sn.derive(0.9), sn.alphas()


def test_more_lambda_never_keeps_more_blocks() -> None:
    runs = {lam: _lambda_run(lam) for lam in (0.0, 1.0, 4.0)}
    depths = [runs[lam][0] for lam in sorted(runs)]
    for a, b in zip(depths, depths[1:], strict=False):
        assert all(x >= y for x, y in zip(a, b, strict=True)), depths
    for lo, hi in ((0.0, 1.0), (1.0, 4.0)):
        flat_lo = [v for row in runs[lo][1] for v in row]
        flat_hi = [v for row in runs[hi][1] for v in row]
        assert all(h < low for h, low in zip(flat_hi, flat_lo, strict=True))
    # the costly last blocks go first; a big lambda leaves one block per stage
    assert depths[0] == (2, 3, 2, 2)
    assert depths[1] == (1, 2, 1, 1)
    assert depths[2] == (1, 1, 1, 1)


# ----------------------------------------------------------------------------------------------------- mixed op


def _mixed_identity_temporal(beta: list[float]) -> MixedOp:
    op = MixedOp(1, 1, ("identity", "temporal_k3"), causal=True).eval()
    conv, bn = op.ops[1][0].conv, op.ops[1][1]
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.0, 1.0, 1.0]).view(1, 1, 3, 1, 1))  # y_t = x_{t-1} + x_t
        bn.eps = 0.0  # running stats (0, 1): BN is the identity in eval mode
        op.beta.copy_(torch.tensor(beta))
    return op


def test_mixed_op_softmax_weighting_by_hand() -> None:
    op = _mixed_identity_temporal([0.0, math.log(3.0)])  # softmax = (0.25, 0.75)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 4, 1, 1)  # (B, C, T, h, w)
    out = op(x)
    # identity: [1, 2, 3, 4]; causal temporal conv: [1, 3, 5, 7]; mixed: 0.25 * id + 0.75 * conv
    assert out.shape == x.shape
    assert out.flatten().tolist() == pytest.approx([1.0, 2.75, 4.5, 6.25])
    assert op.weights() == pytest.approx([0.25, 0.75])
    assert op.derive() == "temporal_k3"
    # d sum(out) / d beta_j = w_j * (S_j - sum_k w_k S_k), S_j = sum of op j's output: S = (10, 16)
    out.sum().backward()
    mean = 0.25 * 10 + 0.75 * 16
    assert op.beta.grad.tolist() == pytest.approx([0.25 * (10 - mean), 0.75 * (16 - mean)])
    assert op.temporal_extent == 2


def test_mixed_op_defaults_and_ties() -> None:
    op = MixedOp(4, 2)
    assert op.candidates == SEARCH_CANDIDATES and op.beta.shape == (7,)
    assert op.weights() == pytest.approx([1 / 7] * 7)
    assert op.derive() == "identity"  # all tied at init: the first candidate
    with torch.no_grad():
        op.beta.copy_(torch.tensor([0.0, 2.0, 0.0, 2.0, 0.0, 1.0, 0.0]))
    assert op.derive() == "spatial_k3"  # tie between columns 1 and 3: the first
    x = torch.randn(2, 4, 5, 3, 3)
    assert op(x).shape == x.shape
    with pytest.raises(KeyError, match="valid ops"):
        MixedOp(4, 1, ("identity", "nope"))


# ----------------------------------------------------------------------------------------------- decoder supernet


def _decoder_supernet() -> DecoderSupernet:
    torch.manual_seed(0)
    return build_decoder_supernet(6, 3, channels=4, dilations=(1, 2, 4, 8))


def test_decoder_supernet_slots_derive_and_shapes() -> None:
    sn = _decoder_supernet()
    ops = sn.mixed_ops()
    assert len(ops) == 16 and sn.slots == [s[0] for s in sn.decoder.searchable_slots()]
    assert [op.dilation for op in ops] == [d for d in (1, 2, 4, 8) for _ in range(4)]
    assert len(sn.arch_parameters()) == 16 and all(p.shape == (7,) for p in sn.arch_parameters())
    assert sn.derive() == ("identity",) * 16
    x = torch.randn(2, 6, 5, 3, 4)
    assert sn(x).shape == (2, 3, 5, 3, 4)
    betas = [[0.0] * 7 for _ in range(16)]
    for k in range(16):
        betas[k][k % 7] = 1.0
    sn.set_betas(betas)
    assert sn.derive() == tuple(SEARCH_CANDIDATES[k % 7] for k in range(16))
    assert sn.betas() == betas
    # the derived ops are a valid architecture
    arch = derive_arch(Arch(encoder="swin_test", channels=4), decoder_supernet=sn)
    assert arch.decoder_ops == sn.derive()
    with pytest.raises(ValueError, match="layer_ops"):
        DecoderSupernet(SPTCNDecoder(6, 3, channels=4))


def test_derived_decoder_computes_the_supernet_when_betas_are_concentrated() -> None:
    sn = _decoder_supernet()
    choice = [SEARCH_CANDIDATES[(3 * k + 1) % 7] for k in range(16)]
    sn.set_betas([[60.0 if c == name else 0.0 for c in SEARCH_CANDIDATES] for name in choice])
    sn.eval()
    plain = derived_decoder(sn).eval()
    assert plain.layer_ops == tuple(choice)
    x = torch.randn(1, 6, 4, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), sn(x), rtol=1e-5, atol=1e-5)


def test_warmup_freezes_betas_then_releases_them() -> None:
    sn = _decoder_supernet()
    x = torch.randn(2, 6, 4, 2, 2)
    assert arch_warmup(sn, epoch=0, warmup_epochs=1) is False
    sn(x).square().mean().backward()
    assert all(p.grad is None for p in sn.arch_parameters())
    assert any(p.grad is not None for p in sn.weight_parameters())
    # a joint step during warm-up moves weights, never betas
    wopt = torch.optim.SGD(sn.weight_parameters(), lr=0.1)
    aopt = torch.optim.SGD(sn.arch_parameters(), lr=0.1)
    before = copy.deepcopy(sn.betas())
    search_step(sn, lambda b: sn(b).square().mean(), wopt, aopt, x)
    assert sn.betas() == before
    assert arch_warmup(sn, epoch=1, warmup_epochs=1) is True
    search_step(sn, lambda b: sn(b).square().mean(), wopt, aopt, x)
    assert sn.betas() != before


def test_alternating_step_updates_arch_on_the_second_batch() -> None:
    sn = _decoder_supernet()
    ref = copy.deepcopy(sn)
    xa, xb = torch.randn(2, 6, 4, 2, 2), torch.randn(2, 6, 4, 2, 2)
    lr_w, lr_a = 0.05, 0.5

    def opts(m: DecoderSupernet) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        return torch.optim.SGD(m.weight_parameters(), lr=lr_w), torch.optim.SGD(m.arch_parameters(), lr=lr_a)

    wopt, aopt = opts(sn)
    logs = search_step(sn, lambda b: sn(b).square().mean(), wopt, aopt, xa, mode="alternating", arch_batch=xb)
    assert set(logs) == {"loss", "arch_loss"}
    # by hand on the copy: weight step on batch A (betas fixed), then arch step on batch B with the new weights
    rw, ra = opts(ref)
    ref(xa).square().mean().backward()
    rw.step()
    rw.zero_grad(set_to_none=True)
    ra.zero_grad(set_to_none=True)
    ref(xb).square().mean().backward()
    ra.step()
    for p, q in zip(sn.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    with pytest.raises(ValueError, match="arch_batch"):
        search_step(sn, lambda b: sn(b).square().mean(), wopt, aopt, xa, mode="alternating")
    with pytest.raises(ValueError, match="valid modes"):
        search_step(sn, lambda b: sn(b).square().mean(), wopt, aopt, xa, mode="bilevel")


# -------------------------------------------------------------------------------------------------- search record


def test_search_arch_round_trips_through_build_model(tmp_path) -> None:
    enc = build_encoder("swin_test", img_size=(32, 32), depths=(2, 3, 2, 2))
    dsn = DepthSupernet(enc)
    alphas = [[1.4, 0.3], [0.9, 1.2, 0.4], [1.0, 1.0], [0.2, 0.1]]
    dsn.set_alphas(alphas)
    dec = _decoder_supernet()
    dec.set_betas([[float(j == k % 7) for j in range(7)] for k in range(16)])
    base = Arch(encoder="swin_test", channels=4, window=3, full_channels=True)
    arch = derive_arch(base, depth_supernet=dsn, decoder_supernet=dec, name="searched")
    assert arch.depths == (1, 2, 2, 1)
    device = {"cpu": "test-cpu", "num_threads": 1}
    path = write_search_arch(
        tmp_path / "arch.json",
        arch,
        alphas=dsn.alphas(),
        betas=dec.betas(),
        lam=0.01,
        latency_table_path="lat.json",
        latency_table_device=device,
        threshold=1.0,
        extra={"epochs": 2},
        beta_columns=SEARCH_CANDIDATES,
    )
    rec = read_search_record(path)
    assert rec.arch.depths == (1, 2, 2, 1) and rec.arch.decoder_ops == dec.derive()
    assert rec.alphas == dsn.alphas() and rec.betas == dec.betas()  # float32 values stored exactly
    assert [r == pytest.approx(a) for r, a in zip(rec.alphas, alphas, strict=True)] == [True] * 4
    assert rec.lam == 0.01 and rec.threshold == 1.0 and rec.method == "stnas"
    assert rec.latency_table_path == "lat.json" and rec.latency_table_device == device
    assert rec.beta_columns == list(SEARCH_CANDIDATES) and rec.extra == {"epochs": 2}
    # the file is a plain architecture: build_model reads it
    cfg = Config(data=DataConfig(height=32, width=32, window=3), model=ModelConfig(encoder="swin_test"))
    model = build_model(cfg, Arch.load(path), num_classes=3).eval()
    assert model.encoder.depths == (1, 2, 2, 1)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 3, 32, 32)).shape == (1, 3, 3, 32, 32)
    # a record without search fields reads as empty
    plain = tmp_path / "plain.json"
    base.save(plain)
    assert read_search_record(plain).alphas is None


def test_search_arch_rejects_inconsistent_records(tmp_path) -> None:
    arch = Arch(encoder="swin_test", depths=(2, 2, 2, 2))
    kw = dict(betas=None, lam=0.1, latency_table_path=None, latency_table_device=None)
    with pytest.raises(ArchError, match="stage 1"):
        write_search_arch(tmp_path / "a.json", arch, alphas=[[1, 1], [1, 0.5], [1, 1], [1, 1]], **kw)
    with pytest.raises(ArchError, match="reserved"):
        write_search_arch(tmp_path / "a.json", arch, alphas=None, extra={"lambda": 3}, **kw)
    ops = ("identity",) * 16
    with pytest.raises(ArchError, match="slot 0"):
        write_search_arch(
            tmp_path / "a.json",
            Arch(encoder="swin_test", decoder_ops=ops),
            alphas=None,
            betas=[[0.0, 1.0] + [0.0] * 5] * 16,
            lam=None,
            latency_table_path=None,
            latency_table_device=None,
            beta_columns=SEARCH_CANDIDATES,
        )
    assert not (tmp_path / "a.json").exists()


# --------------------------------------------------------------------------------------------------------------- DDP


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same initial weights on every rank
        model = nn.Sequential(
            _scalar_stage([0.5, 1.5, -1.0], [0.1, 0.0, 0.2], [1.0, 1.0, 1.0]),
            nn.Linear(1, 4),
            nn.Unflatten(1, (4, 1, 1, 1)),
            MixedOp(4, 1, ("identity", "temporal_k3", "spatial_k3")),
        )
        ddp = DistributedDataParallel(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(100 + rank)  # different data on every rank
        for _ in range(3):
            x = torch.randn(8, 1, generator=g)
            loss = ddp(x).square().mean() + 0.5 * model[0].latency_penalty([1.0, 1.0, 3.0])
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.save({"alphas": model[0].alphas(), "betas": model[3].betas(), "depth": model[0].derive(),
                    "op": model[3].derive()}, f"{out_dir}/rank{rank}.pt")  # fmt: skip
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes each import torch and vidnas; the DDP step itself is tiny
def test_every_ddp_rank_derives_the_same_architecture(tmp_path) -> None:
    import torch.multiprocessing as mp

    # spawned, not forked: a fork of a worker whose autograd engine has run cannot use autograd
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0 == r1
    assert r0["alphas"] != [1.0, 1.0, 1.0] and r0["betas"] != [0.0, 0.0, 0.0]  # they did train
