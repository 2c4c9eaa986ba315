"""arch2, the cell op / aggregation tables, cell genotypes and the dynamic-cell video model (tiny, CPU)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from vidnas.models.cells import (
    AGGREGATIONS,
    CELL_INPUTS,
    CELL_OPS,
    Cell,
    CellError,
    CellGenotype,
    DynamicCellModel,
    cell_in_channels,
)
from vidnas.models.encoders import build_encoder
from vidnas.models.static_segmenter import StaticSegmenter
from vidnas.search.cells.cache import static_outputs

H, W, K = 32, 48, 4
C = 64
# five layers exercising every aggregation kind and the deformable conv; layer 0 reads layer2 and prev_dec
TOKENS = [2, 1, 10, 2, 1, 5, 3, 0, 4, 2, 0, 4, 5, 9, 3, 6, 7, 8, 1, 4, 8, 2, 3, 6, 5]


@pytest.fixture(scope="module")
def static() -> StaticSegmenter:
    torch.manual_seed(0)
    return StaticSegmenter(build_encoder("mobilenetv2_test", img_size=(H, W)), K).eval()


def test_tables_follow_spec_order() -> None:
    assert tuple(CELL_OPS) == ("conv1x1", "conv3x3", "sep3x3", "sep5x5", "gap", "conv3x3_d3", "conv3x3_d12",
                               "sep3x3_d3", "sep5x5_d6", "skip", "deform3x3")
    assert tuple(AGGREGATIONS) == ("sum", "concat", "attention", "predictive", "affine", "conv3d")
    with pytest.raises(KeyError, match="already registered"):
        CELL_OPS.register("skip")(lambda c: torch.nn.Identity())
    with pytest.raises(KeyError, match="valid names: conv1x1"):
        CELL_OPS["conv7x7"]


@pytest.mark.parametrize("name", list(CELL_OPS))
def test_op_preserves_shape(name: str) -> None:
    torch.manual_seed(0)
    op = CELL_OPS[name](C)
    x = torch.randn(2, C, 5, 7, requires_grad=True)  # odd sizes catch padding mistakes
    y = op(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.sum().backward()  # differentiable end to end
    assert x.grad is not None


@pytest.mark.parametrize("name", list(AGGREGATIONS))
def test_aggregation_preserves_shape(name: str) -> None:
    torch.manual_seed(0)
    agg = AGGREGATIONS[name](C)
    x1, x2 = torch.randn(2, C, 5, 7), torch.randn(2, C, 5, 7)
    y = agg(x1, x2)
    assert y.shape == x1.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agg.parameters())


def test_aggregation_initialisations() -> None:
    x1, x2 = torch.randn(2, C, 5, 7), torch.randn(2, C, 5, 7)
    assert torch.allclose(AGGREGATIONS["affine"](C)(x1, x2), x2, atol=1e-5)  # identity transform
    assert torch.allclose(AGGREGATIONS["attention"](C).eval()(x1, x2), x1)  # zero-initialised output BN
    box = F.avg_pool2d(x2, 3, stride=1, padding=1, count_include_pad=True)  # zero filter conv: uniform 3x3 taps
    assert torch.allclose(AGGREGATIONS["predictive"](C)(x1, x2), box, atol=1e-5)
    assert torch.allclose(AGGREGATIONS["sum"](C)(x1, x2), x1 + x2)
    deform, conv = CELL_OPS["deform3x3"](C).eval(), CELL_OPS["conv3x3"](C).eval()
    with torch.no_grad():
        conv[0].weight.copy_(deform.conv.weight)
    assert torch.allclose(deform(x1), conv(x1), atol=1e-4)  # zero offsets: a plain 3x3 conv


def test_tokens_round_trip_and_json() -> None:
    geno = CellGenotype.from_tokens(TOKENS, name="demo", extra={"reward": 0.5})
    assert geno.to_tokens() == TOKENS
    assert geno.layers[0].inputs == (2, 1) and geno.layers[0].ops == ("deform3x3", "sep3x3")
    assert geno.layers[0].aggregation == "concat"
    again = CellGenotype.from_json(geno.to_json())
    assert again == geno and again.extra == {"reward": 0.5}
    data = json.loads(geno.to_json())
    assert data["schema_version"] == 1 and data["ops"] == list(CELL_OPS) and len(data["tokens"]) == 5
    assert data["layers"][0]["inputs"] == ["layer2", "prev_dec"]
    # a subset vocabulary: op tokens index the subset
    sub = CellGenotype.from_tokens([0, 1, 1, 0, 0], ops=("skip", "conv1x1"), aggregations=("concat",))
    assert sub.layers[0].ops == ("conv1x1", "skip") and sub.to_tokens() == [0, 1, 1, 0, 0]
    text = geno.describe()
    assert "cell_layer0 = concat(deform3x3(layer2), sep3x3(prev_dec))" in text


def test_invalid_genotypes_raise() -> None:
    with pytest.raises(CellError, match="outside the pool 0..4"):
        CellGenotype.from_tokens([5, 0, 0, 0, 0])
    with pytest.raises(CellError, match="5 tokens per layer"):
        CellGenotype.from_tokens([0, 0, 0])
    with pytest.raises(CellError, match="op token 11"):
        CellGenotype.from_tokens([0, 0, 11, 0, 0])
    with pytest.raises(CellError, match="unknown cell op"):
        CellGenotype.from_tokens([0, 0, 0, 0, 0], ops=("conv9x9",))
    data = CellGenotype.from_tokens(TOKENS).to_dict()
    with pytest.raises(CellError, match="schema_version"):
        CellGenotype.from_dict({**data, "schema_version": 7})
    data["layers"][0]["aggregation"] = "sum"
    with pytest.raises(CellError, match="disagrees"):
        CellGenotype.from_dict(data)


def test_cell_output_is_the_concat_of_unused_layer_outputs(static: StaticSegmenter) -> None:
    # layer0 (pool 5) reads layer2, prev_dec; layer1 (pool 6) reads pool 5 and layer3; layer2 (pool 7) reads inputs
    tokens = [2, 1, 0, 1, 1, 5, 3, 2, 9, 0, 0, 4, 3, 1, 5]
    cell = Cell.from_tokens(tokens, in_channels=cell_in_channels(static), num_classes=K).eval()
    assert cell.to_tokens() == tokens
    assert cell.unused == (6, 7)  # pool 5 is read by layer1
    assert cell.out_conv[0].in_channels == 2 * C
    assert sorted(int(k) for k in cell.adapters) == [0, 1, 2, 3, 4]
    captured: dict[str, torch.Tensor] = {}
    cell.layers[1].register_forward_hook(lambda m, i, o: captured.__setitem__("l1", o))
    cell.layers[2].register_forward_hook(lambda m, i, o: captured.__setitem__("l2", o))
    cell.out_conv.register_forward_pre_hook(lambda m, i: captured.__setitem__("in", i[0]))
    x = torch.randn(2, 3, H, W)
    f = static.features(x)
    out = cell((f["layer4"], f["dec"], f["layer2"], f["layer3"], f["layer4"]))
    assert torch.equal(captured["in"], torch.cat([captured["l1"], captured["l2"]], 1))
    assert out.dec.shape == (2, C, H // 8, W // 8) and out.pred.shape == (2, K, H // 8, W // 8)
    # a cell that reads only prev_dec and layer2 builds (and needs) only those adapters
    small = Cell.from_tokens([1, 2, 0, 0, 0], in_channels=cell_in_channels(static), num_classes=K)
    assert sorted(int(k) for k in small.adapters) == [1, 2]
    small((None, f["dec"], f["layer2"], None, None))


def test_arch2_outputs_aux_and_stream(static: StaticSegmenter) -> None:
    frames = torch.randn(2, 3, 3, H, W)
    static.train()
    logits, aux = static(frames)
    static.eval()
    assert logits.shape == (2, 3, K, H, W) and len(aux) == 2 and all(a.shape == logits.shape for a in aux)
    f = static.features(frames[:, 0])
    assert f["layer2"].shape[-2:] == (H // 8, W // 8) and f["layer3"].shape[-2:] == (H // 16, W // 16)
    assert f["layer4"].shape[-2:] == (1, 2)  # ceil(32 / 32), ceil(48 / 32)
    assert f["dec"].shape == (2, 64, H // 8, W // 8) and f["pred"].shape == (2, K, H // 8, W // 8)
    with torch.no_grad():
        ref = static(frames)
    st = static.stream(batch_size=2)
    outs = [st.push(frames[:, t]) for t in range(3)]
    assert torch.allclose(torch.stack(outs, 1), ref, atol=1e-5)
    assert st.flush() == [] and st.pending == 0


@pytest.mark.parametrize("key_interval", [None, 2])
def test_dynamic_cell_model_stream_equals_forward(static: StaticSegmenter, key_interval: int | None) -> None:
    torch.manual_seed(1)
    cell = Cell.from_tokens(TOKENS, in_channels=cell_in_channels(static), num_classes=K)
    model = DynamicCellModel(static, cell).eval()
    frames = torch.randn(2, 4, 3, H, W)
    with torch.no_grad():
        ref = model(frames, key_interval=key_interval)
        static_ref = static(frames)
    assert ref.shape == (2, 4, K, H, W)
    assert torch.allclose(ref[:, 0], static_ref[:, 0], atol=1e-5)  # frame 0: the static network
    assert not torch.allclose(ref[:, 1], static_ref[:, 1], atol=1e-3)  # frame 1: the cell
    if key_interval == 2:
        assert torch.allclose(ref[:, 2], static_ref[:, 2], atol=1e-5)  # key frame
    st = model.stream(batch_size=2, key_interval=key_interval)
    outs = [st.push(frames[:, t]) for t in range(4)]
    assert torch.allclose(torch.stack(outs, 1), ref, atol=1e-4)
    st.reset()  # a new video starts with the static network again
    assert torch.allclose(st.push(frames[:, 1]), static_ref[:, 1], atol=1e-5)


def _encoder_modules_run(static: StaticSegmenter, fn) -> int:
    """How many modules of the static encoder (the encoder itself excluded) ``fn()`` runs."""
    calls = [0]
    mods = [m for m in static.encoder.modules() if m is not static.encoder]
    handles = [m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1)) for m in mods]
    try:
        fn()
    finally:
        for h in handles:
            h.remove()
    return calls[0]


# tokens -> encoder stages of a non-key frame (default op / aggregation vocabularies: conv1x1 = 0, sum = 0)
STAGES = [
    ([2, 3, 0, 0, 0, 5, 1, 0, 0, 0], 3),  # layer2, layer3, prev_dec: no stride-32 stage
    ([2, 1, 0, 0, 0], 2),  # layer2, prev_dec
    ([1, 1, 0, 2, 0], 0),  # prev_dec only: no encoder at all
    ([2, 4, 0, 0, 0], 4),  # layer4 of the current frame
    ([0, 2, 0, 0, 0], 4),  # prev_layer4: this frame's layer4 is the next one's prev_layer4
]


@pytest.mark.parametrize("tokens,stages", STAGES)
@pytest.mark.parametrize("key_interval", [None, 2])
def test_non_key_frames_run_the_encoder_only_as_deep_as_the_cell_reads(static: StaticSegmenter, tokens: list[int],
                                                                      stages: int, key_interval: int | None) -> None:
    torch.manual_seed(3)
    cell = Cell.from_tokens(tokens, in_channels=cell_in_channels(static), num_classes=K)
    assert cell.encoder_stages == cell.genotype.encoder_stages() == stages
    model = DynamicCellModel(static, cell).eval()
    frames = torch.randn(2, 4, 3, H, W)
    x = frames[:, 0]
    with torch.no_grad():
        full = model(frames, key_interval=key_interval)  # the clip forward: the whole encoder on every frame
        st = model.stream(batch_size=2, key_interval=key_interval)
        streamed, runs = [], []
        for t in range(4):
            runs.append(_encoder_modules_run(static, lambda t=t: streamed.append(st.push(frames[:, t]))))
        whole = _encoder_modules_run(static, lambda: static.encoder(x))
        part = _encoder_modules_run(static, lambda: static.encoder(x, stages))
        maps = static.encoder(x, stages)
        assert len(maps) == stages and all(torch.equal(a, b) for a, b in zip(maps, static.encoder(x), strict=False))
    assert torch.allclose(torch.stack(streamed, 1), full, atol=1e-5)  # only work is skipped
    key = [t == 0 or (key_interval is not None and t % key_interval == 0) for t in range(4)]
    assert runs == [whole if k else part for k in key]
    assert (part == whole) if stages == 4 else (part < whole)  # fewer modules when the cell reads no layer4
    assert part > 0 or stages == 0
    with pytest.raises(ValueError, match="stages must be in 0..4"):
        static.encoder(x, 5)


def test_cached_unroll_equals_model_forward(static: StaticSegmenter) -> None:
    """The search trains cells on cached tensors; the deployed model must compute the same thing from frames."""
    torch.manual_seed(2)
    cell = Cell.from_tokens(TOKENS, in_channels=cell_in_channels(static), num_classes=K).eval()
    model = DynamicCellModel(static, cell).eval()
    frames = torch.randn(2, 3, 3, H, W)
    cached = static_outputs(static, frames, torch.zeros(2, 3, H, W, dtype=torch.int64))
    with torch.no_grad():
        preds, _ = cell.unroll(cached["dec0"], cached["layer4"], cached["layer2"], cached["layer3"])
        ref = model(frames)
    for t, p in enumerate(preds, start=1):
        up = F.interpolate(p, size=(H, W), mode="bilinear", align_corners=False)
        assert torch.allclose(up, ref[:, t], atol=1e-4)
    assert cached["layer2"].shape[1] == 2 and cached["layer4"].shape[1] == 3 and cached["masks"].dtype == torch.int16


def test_cell_input_names() -> None:
    assert CELL_INPUTS == ("prev_layer4", "prev_dec", "layer2", "layer3", "layer4")


def test_models_never_import_search() -> None:
    import ast
    from pathlib import Path

    import vidnas.models.cells.aggregations as agg_mod
    import vidnas.models.cells.genotype as geno_mod
    import vidnas.models.cells.model as cell_mod
    import vidnas.models.cells.ops as ops_mod
    import vidnas.models.static_segmenter as arch2_mod

    for mod in (arch2_mod, cell_mod, ops_mod, agg_mod, geno_mod):
        tree = ast.parse(Path(mod.__file__).read_text())
        names = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [n for n in names if n.startswith("vidnas.search")], mod.__name__
