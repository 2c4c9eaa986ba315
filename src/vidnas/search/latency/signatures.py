"""Table keys: the signatures of encoder blocks and parts and of decoder parts and ops (``vidnas.search.latency``).

A signature names what was timed and the shape it was timed at, so a table measured on the full encoder serves every
shortened one and a decoder's parts are found again for any architecture of the same space.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vidnas.models.architecture import OPS_PER_LAYER, Arch
from vidnas.models.decoders.arch2_space import ARCH2_OPS, SLOTS, SPACE_SCALES
from vidnas.models.decoders.mstcn import OPS_PER_SCALE, default_scale_ops
from vidnas.models.multiscale import STRIDE_INDEX

if TYPE_CHECKING:
    from vidnas.models.encoders import Encoder

__all__ = [
    "downsample_signature",
    "stem_signature",
    "output_signature",
    "decoder_signatures",
    "multiscale_signatures",
    "space_signatures",
    "decoder_inputs",
    "scale_candidates",
    "model_part_keys",
]


def downsample_signature(encoder: Encoder, stage: int, input_hw: tuple[int, int] | None = None) -> str:
    """Table key of stage ``stage``'s downsample: ``"{name}/s{i}/downsample/{output shape}"`` (batch 1)."""
    shape = "x".join(str(d) for d in encoder.block_input_shape(stage, input_hw))
    return f"{encoder.name}/s{stage}/downsample/{shape}"


def _hw(encoder: Encoder, input_hw: tuple[int, int] | None) -> tuple[int, int]:
    return tuple(encoder.img_size) if input_hw is None else (int(input_hw[0]), int(input_hw[1]))  # type: ignore


def stem_signature(encoder: Encoder, input_hw: tuple[int, int] | None = None) -> str:
    """Table key (``parts``) of the encoder's stem on a ``1x3xHxW`` image: ``"{name}/stem/1x3xHxW"``."""
    h, w = _hw(encoder, input_hw)
    return f"{encoder.name}/stem/1x3x{h}x{w}"


def output_signature(encoder: Encoder, stage: int, input_hw: tuple[int, int] | None = None) -> str:
    """Table key (``parts``) of stage ``stage``'s output conversion (``Encoder.stage_output``)."""
    shape = "x".join(str(d) for d in encoder.block_input_shape(stage, input_hw))
    return f"{encoder.name}/s{stage}/output/{shape}"


def decoder_signatures(arch: Arch, in_channels: int, num_classes: int, feature_hw: tuple[int, int],
                       img_hw: tuple[int, int]) -> dict[str, Any]:
    """Table keys (``parts``) of the decoder of ``arch`` (an ``sptcn`` architecture) and of the final upsampling.

    The decoder runs on the window ``(1, in_channels, window, h, w)`` with ``(h, w) = feature_hw``.

    Returns:
        ``{"baseline": key of the whole 3x3x3 SP-TCN decoder, "fixed": key of the searched decoder with every slot
        an identity, "ops": [per slot: key of that slot's op in ``arch.decoder_ops``] or None for the baseline,
        "op": callable (name, dilation) -> key, "upsample": key}``.
    """
    h, w = feature_hw
    t = arch.window
    mode = "causal" if arch.causal else "centred"
    dil = "-".join(str(d) for d in arch.dilations)
    common = f"cin{in_channels}_f{arch.channels}_k{num_classes}_d{dil}_fc{int(arch.full_channels)}_{mode}/t{t}_{h}x{w}"

    def op(name: str, dilation: int) -> str:
        return f"decoder/op/{name}/f{arch.channels}_d{dilation}_{mode}/t{t}_{h}x{w}"

    ops = None
    if arch.decoder_ops is not None:
        per = len(arch.decoder_ops) // len(arch.dilations)
        ops = [op(name, arch.dilations[k // per]) for k, name in enumerate(arch.decoder_ops)]
    return {"baseline": f"decoder/sptcn_baseline/{common}", "fixed": f"decoder/sptcn_fixed/{common}", "ops": ops,
            "op": op, "upsample": f"segmenter/upsample/k{num_classes}_{h}x{w}_to_{img_hw[0]}x{img_hw[1]}"}


def multiscale_signatures(arch: Arch, in_channels: Sequence[int], num_classes: int,
                          feature_hws: Sequence[tuple[int, int]], img_hw: tuple[int, int]) -> dict[str, Any]:
    """Table keys (``parts``) of the multi-scale decoder of ``arch`` (an ``mstcn`` architecture) and of the final
    upsampling.

    The decoder runs on the window of every scale, ``(1, in_channels[i], window, h_i, w_i)`` with ``(h_i, w_i) =
    feature_hws[i]``, coarse first. Its latency is read as ``fixed + trunk ops + scale ops``: ``fixed`` is the decoder
    with every searched slot an identity (``fixed_baseline``: the 3x3x3 trunk of an unsearched ``decoder_ops``;
    ``fixed_searched``: trunk slots identities too), plus each slot's op at its width, dilation and spatial size (the
    trunk's at ``channels`` on the coarse map, a finer scale's at ``fuse_channels`` and dilation 1 on its map).

    Returns:
        ``{"fixed": the key ``arch`` uses, "fixed_baseline", "fixed_searched", "trunk_ops": [per trunk slot: key] or
        None (3x3x3 trunk), "scale_ops": [per finer-scale slot: key] (the per-frame default when ``scale_ops`` is
        None), "op": callable (name, channels, dilation, (h, w)) -> key, "upsample": key}``.
    """
    if len(in_channels) != len(arch.scales) or len(feature_hws) != len(arch.scales):
        raise ValueError(f"expected channels and sizes of {len(arch.scales)} scales {list(arch.scales)}, got "
                         f"{len(in_channels)} and {len(feature_hws)}")
    t = arch.window
    mode = "causal" if arch.causal else "centred"
    dil = "-".join(str(d) for d in arch.dilations)
    cin = "-".join(str(c) for c in in_channels)
    sizes = "-".join(f"{h}x{w}" for h, w in feature_hws)
    strides = "-".join(str(s) for s in arch.scales)
    common = (f"s{strides}_cin{cin}_f{arch.channels}_ff{arch.fuse_channels}_k{num_classes}_d{dil}"
              f"_fc{int(arch.full_channels)}_{mode}/t{t}_{sizes}")

    def op(name: str, channels: int, dilation: int, hw: Sequence[int]) -> str:
        return f"decoder/op/{name}/f{channels}_d{dilation}_{mode}/t{t}_{hw[0]}x{hw[1]}"  # the SP-TCN ops' format

    per = OPS_PER_LAYER
    trunk = None if arch.decoder_ops is None else [op(name, arch.channels, arch.dilations[k // per], feature_hws[0])
                                                   for k, name in enumerate(arch.decoder_ops)]
    fine = arch.scale_ops if arch.scale_ops is not None else default_scale_ops(len(arch.scales) - 1)
    scale = [op(name, arch.fuse_channels, 1, feature_hws[1 + k // OPS_PER_SCALE]) for k, name in enumerate(fine)]
    keys = {"fixed_baseline": f"decoder/mstcn_fixed/trunk3d_{common}",
            "fixed_searched": f"decoder/mstcn_fixed/trunkslots_{common}"}
    h, w = feature_hws[-1]
    return {"fixed": keys["fixed_baseline"] if trunk is None else keys["fixed_searched"], **keys,
            "trunk_ops": trunk, "scale_ops": scale, "op": op,
            "upsample": f"segmenter/upsample/k{num_classes}_{h}x{w}_to_{img_hw[0]}x{img_hw[1]}"}


def space_signatures(arch: Arch, in_channels: Sequence[int], num_classes: int,
                     feature_hws: Sequence[tuple[int, int]], img_hw: tuple[int, int]) -> dict[str, Any]:
    """Table keys (``parts``) of the ``arch2_space`` decoder of ``arch`` and of the final upsampling.

    The decoder runs on the window of every stride (32, 16, 8, 4), ``(1, in_channels[i], window, h_i, w_i)``. Its
    latency is read as ``whole arch2 - arch2's slot ops + the slot ops of arch``: ``arch2`` is the whole decoder at
    ``ARCH2_OPS`` (the fixed parts: global pooling, resizes and sums, classifier, timed with it), and each slot op is
    timed alone on its input, ``(1, C_in, window, h, w)`` (a lateral: the encoder map; a block: ``F`` channels at
    its stride; ``down``: ``F`` channels at stride 4).

    Returns:
        ``{"arch2": key of the whole decoder at arch2's ops, "ops": [per slot: key of ``arch``'s op] (arch2's when
        ``decoder_ops`` is None), "arch2_ops": [per slot: key of arch2's op], "op": callable (slot, name) -> key,
        "upsample": key}``.
    """
    if len(in_channels) != len(SPACE_SCALES) or len(feature_hws) != len(SPACE_SCALES):
        raise ValueError(f"expected channels and sizes of the strides {list(SPACE_SCALES)}, got {len(in_channels)} "
                         f"and {len(feature_hws)}")
    t, f = arch.window, arch.fuse_channels
    mode = "causal" if arch.causal else "centred"
    cin = "-".join(str(c) for c in in_channels)
    sizes = "-".join(f"{h}x{w}" for h, w in feature_hws)
    by_stride = dict(zip(SPACE_SCALES, zip(in_channels, feature_hws, strict=True), strict=True))

    def op(slot: int, name: str) -> str:
        _, kind, stride, _ = SLOTS[slot]
        c, (h, w) = by_stride[stride]
        c_in = c if kind == "lateral" else f
        return f"decoder/arch2_space/op/{name}/cin{c_in}_f{f}_{mode}/t{t}_{h}x{w}"

    ops = arch.decoder_ops if arch.decoder_ops is not None else ARCH2_OPS
    h, w = feature_hws[SPACE_SCALES.index(8)]  # logits at stride 8
    return {"arch2": f"decoder/arch2_space/arch2/cin{cin}_f{f}_k{num_classes}_{mode}/t{t}_{sizes}",
            "ops": [op(k, name) for k, name in enumerate(ops)],
            "arch2_ops": [op(k, name) for k, name in enumerate(ARCH2_OPS)], "op": op,
            "upsample": f"segmenter/upsample/k{num_classes}_{h}x{w}_to_{img_hw[0]}x{img_hw[1]}"}


def decoder_inputs(encoder: Encoder, arch: Arch, input_hw: tuple[int, int] | None = None
                   ) -> tuple[Any, Any]:
    """``(in_channels, feature_hw)`` of ``arch``'s decoder on ``encoder``: the last stage's ``(C, (h, w))``, or for
    ``mstcn`` one entry per scale of ``arch.scales`` (lists; ``arch2_space``: strides 32, 16, 8, 4), as
    ``decoder_latency`` takes them."""
    if arch.decoder in ("mstcn", "arch2_space"):
        idx = [STRIDE_INDEX[s] for s in (arch.scales if arch.decoder == "mstcn" else SPACE_SCALES)]
        return [encoder.out_channels[i] for i in idx], [encoder.feature_hw(i, input_hw) for i in idx]
    last = len(encoder.depths) - 1
    return encoder.out_channels[last], encoder.feature_hw(last, input_hw)


def scale_candidates(arch: Arch, candidates: Sequence[str]) -> list[str]:
    """Ops to time at every finer scale: the candidates and the per-frame default's ops."""
    default = default_scale_ops(len(arch.scales) - 1)
    return list(dict.fromkeys([*candidates, *default]))


def model_part_keys(encoder: Encoder, base: Arch, num_classes: int,
                     candidates: Sequence[str]) -> tuple[list[str], list[str]]:
    """(encoder parts, decoder parts): the ``parts`` keys ``model_latency`` needs for ``base`` (its SP-TCN decoder,
    baseline or searched over ``candidates``; ``mstcn``; ``arch2_space``: arch2 whole and every slot's candidates)
    besides the block latencies."""
    last = len(encoder.depths) - 1
    enc = [stem_signature(encoder)] + [output_signature(encoder, i) for i in range(len(encoder.depths))]
    enc += [downsample_signature(encoder, i) for i in range(len(encoder.depths))]
    dec: list[str] = []
    if base.decoder == "sptcn":
        keys = decoder_signatures(base, encoder.out_channels[last], num_classes, encoder.feature_hw(last),
                                  encoder.img_size)
        dec = [keys["baseline"], keys["fixed"], keys["upsample"]]
        dec += [keys["op"](name, d) for d in sorted(set(base.dilations)) for name in candidates]
    elif base.decoder == "arch2_space":
        channels, hws = decoder_inputs(encoder, base)
        sp = space_signatures(base, channels, num_classes, hws, encoder.img_size)
        dec = [sp["arch2"], sp["upsample"]] + [sp["op"](k, name) for k, (_, _, _, cands) in enumerate(SLOTS)
                                               for name in cands]
    elif base.decoder == "mstcn":
        channels, hws = decoder_inputs(encoder, base)
        ms = multiscale_signatures(base, channels, num_classes, hws, encoder.img_size)
        dec = [ms["fixed_baseline"], ms["fixed_searched"], ms["upsample"]]
        dec += [ms["op"](name, base.channels, d, hws[0]) for d in sorted(set(base.dilations)) for name in candidates]
        dec += [ms["op"](name, base.fuse_channels, 1, hw) for hw in hws[1:]
                for name in scale_candidates(base, candidates)]
    return enc, dec
