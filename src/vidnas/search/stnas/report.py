"""The report of an ST-NAS search: ``report.md`` and the decisions it states (the per-scale temporal / per-frame
decision of a multi-scale decoder, ``scale_decisions``). Its figures are in ``figures``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from vidnas.models.architecture import OPS_PER_LAYER, Arch
from vidnas.models.decoders.arch2_space import ARCH2_OPS, CHEAPEST_OPS, SLOTS, Arch2SpaceDecoder
from vidnas.models.decoders.mstcn import OPS_PER_SCALE, default_scale_ops
from vidnas.models.ops import make_op, temporal_extent
from vidnas.search.stnas.record import StnasResult

__all__ = ["op_category", "decoder_slot_labels", "scale_decisions", "softmax_rows", "search_report"]


def op_category(name: str) -> str:
    """``spatial``, ``temporal``, ``identity`` or ``spatio-temporal`` (the 3x3x3 baseline conv) for an op name."""
    if name == "identity":
        return "identity"
    if name.startswith("temporal"):
        return "temporal"
    if name.startswith(("spatial", "sep")):
        return "spatial"
    return "spatio-temporal"


def decoder_slot_labels(arch: Arch) -> list[str]:
    """Where each searched decoder slot sits, in slot order (the rows of the betas).

    SP-TCN: ``layer {i}``. ``mstcn``: ``trunk layer {i}`` for the trunk's slots (when searched: ``decoder_ops``
    set), then ``stride {s} path 1``, ``stride {s} path 2``, ``stride {s} fusion`` per finer scale. ``arch2_space``:
    ``stride {s} lateral`` / ``block`` / ``down``.
    """
    if arch.decoder == "arch2_space":
        return [f"stride {stride} {kind}" for _, kind, stride, _ in SLOTS]
    if arch.decoder != "mstcn":
        return [f"layer {k // OPS_PER_LAYER + 1}" for k in range(OPS_PER_LAYER * len(arch.dilations))]
    labels = []
    if arch.decoder_ops is not None:
        labels += [f"trunk layer {k // OPS_PER_LAYER + 1}" for k in range(OPS_PER_LAYER * len(arch.dilations))]
    for stride in arch.scales[1:]:
        labels += [f"stride {stride} path 1", f"stride {stride} path 2", f"stride {stride} fusion"]
    return labels


def _extent(name: str, dilation: int) -> int:
    """Frames of temporal context op ``name`` adds at temporal dilation ``dilation`` (0 for a per-frame op)."""
    return temporal_extent(make_op(name, 1, dilation))


def scale_decisions(arch: Arch, weights: Sequence[Sequence[float]] | None = None,
                    candidates: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """What an ``mstcn`` decoder does in time at each scale, coarse first: the search's per-scale answer to "does
    temporal context pay here?".

    Per scale: ``stride``, ``part`` (``trunk`` or ``fine``), ``ops`` (the trunk's slot ops, ``None`` for the fixed
    3x3x3 trunk; a finer scale's path op 1, path op 2, fusion op), ``temporal_ops`` (slots whose op looks across
    frames), ``frames`` (frames of context the scale's own ops span: ``1 + sum of (k_t - 1) * d_t``; the trunk counts
    its fixed reduction conv, 3x3x3, unless full channels), ``temporal`` (``frames > 1``) and, with the slots'
    ``weights`` (softmax(beta) per slot, in ``decoder_slot_labels`` order) and ``candidates``, ``temporal_weight``:
    the mean over the scale's slots of the weight on temporal candidates (how strongly the search leaned to time).
    """
    if arch.decoder != "mstcn":
        raise ValueError(f"per-scale decisions are for the mstcn decoder, not {arch.decoder!r}")
    temporal_cols = [] if candidates is None else [j for j, c in enumerate(candidates)
                                                   if op_category(c) in ("temporal", "spatio-temporal")]

    def mass(rows: range) -> float | None:
        if weights is None or candidates is None or not rows or rows.stop > len(weights):
            return None
        return sum(sum(weights[k][j] for j in temporal_cols) for k in rows) / len(rows)

    per = OPS_PER_LAYER
    out: list[dict[str, Any]] = []
    frames = 0 if arch.full_channels else 2  # the fixed reduction conv: 3x3x3, k_t - 1 = 2
    trunk = arch.decoder_ops
    if trunk is None:
        frames += sum(2 * d + 2 for d in arch.dilations)  # baseline layers: conv1 3x3x3 at (d, 1, 1), conv2 3x3x3
        n_t = None
    else:
        frames += sum(_extent(op, arch.dilations[k // per]) for k, op in enumerate(trunk))
        n_t = sum(_extent(op, 1) > 0 for op in trunk)
    n_trunk = 0 if trunk is None else len(trunk)
    out.append({"stride": arch.scales[0], "part": "trunk", "ops": None if trunk is None else list(trunk),
                "temporal_ops": n_t, "frames": 1 + frames, "temporal": frames > 0,
                "temporal_weight": mass(range(0, n_trunk))})
    fine = arch.scale_ops if arch.scale_ops is not None else default_scale_ops(len(arch.scales) - 1)
    for i, stride in enumerate(arch.scales[1:]):
        ops = list(fine[OPS_PER_SCALE * i:OPS_PER_SCALE * (i + 1)])
        ext = sum(_extent(op, 1) for op in ops)
        start = n_trunk + OPS_PER_SCALE * i
        out.append({"stride": stride, "part": "fine", "ops": ops, "temporal_ops": sum(_extent(op, 1) > 0 for op in ops),
                    "frames": 1 + ext, "temporal": ext > 0,
                    "temporal_weight": mass(range(start, start + OPS_PER_SCALE)) if arch.scale_ops is not None
                    else None})
    return out


def softmax_rows(betas: Sequence[Sequence[float]] | None) -> list[list[float]] | None:
    """``softmax(beta)`` per slot (float64), None for None."""
    if betas is None:
        return None
    return [torch.softmax(torch.tensor(row, dtype=torch.float64), 0).tolist() for row in betas]


def search_report(result: StnasResult) -> str:
    """``report.md`` of a search: the derived architecture, the alphas and betas it came from, the cost."""
    lines = ["# ST-NAS search", "", f"- run directory: `{result.run_dir}`"]
    depth = result.depth or {}
    rule = depth.get("rule", result.depth_rule)
    if rule == "paper":
        lines.append(f"- depth rule: paper (shrink rule on the alphas, threshold {result.threshold:g}); "
                     f"lambda (Eq. 2): {result.lam:g}")
    elif depth.get("budget_ms") is not None:
        lines.append(f"- depth rule: truncated validation loss, latency budget {depth['budget_ms']:g} ms "
                     "(the most accurate depths that fit)")
    else:
        lines.append(f"- depth rule: truncated validation loss + lambda * latency, lambda {result.lam:g}")
    lines.append(f"- search time: encoder {result.encoder_seconds:.1f} s, decoder {result.decoder_seconds:.1f} s")
    pricing = result.latency_pricing
    if pricing is not None:
        dec = pricing.get("decoder_precision", pricing["precision"])
        dec = "" if dec == pricing["precision"] else f", decoder {dec}"
        lines.append(f"- latencies priced in: {pricing['runtime']} {pricing['precision']}{dec} (latency table)")
    if result.alphas is not None:
        lines.append(f"- encoder depths: {_fmt_depths(result.full_depths)} -> {_fmt_depths(result.depths)}")
        saving = result.latency_saving
        lines.append(f"- encoder block latency (latency table): {result.full_latency_ms:.3f} ms -> "
                     f"{result.derived_latency_ms:.3f} ms" + (f" ({saving:.0%} saved)" if saving is not None else ""))
        if result.model_latency_ms is not None and result.full_model_latency_ms is not None:
            lines.append(f"- model latency per frame (table: encoder + decoder window + upsampling): "
                         f"{result.full_model_latency_ms:.3f} ms (config) -> {result.model_latency_ms:.3f} ms")
            if depth.get("budget_ms") is not None and result.model_latency_ms > depth["budget_ms"]:
                lines.append(f"- **over the budget** by {result.model_latency_ms / depth['budget_ms'] - 1:.0%}: the "
                             f"depths were chosen with {depth.get('decoder_ms') or 0:.3f} ms for the decoder (mean op "
                             "per slot) and the searched decoder costs more; lower the budget or skip the decoder "
                             "search")
        lines.append(f"- latency table: `{result.latency_table_path}`")
        lines += _depth_lines(result, depth)
    if result.decoder_ops is not None and result.betas is not None and result.candidates is not None:
        dec = result.decoder or {}
        lines += ["", "## Decoder ops (argmax of softmax(beta) per slot)", ""]
        if dec.get("arch_lr") is not None:
            travel = dec.get("beta_travel")
            lines.append(f"Betas' lr {dec['arch_lr']:.4g}" + (
                f" = beta_travel {travel:g} / arch steps" if travel is not None else " (stnas.arch_lr)") + ".")
        lines.append("Loss: task" + (f" + lambda {dec['latency_lambda']:g} x expected table latency of the ops "
                                     "(stnas.decoder_latency)." if dec.get("latency_lambda") is not None
                                     else " only (the paper; stnas.decoder_latency adds lambda x op latency)."))
        if dec.get("seeds", 1) > 1:
            pair = dec.get("pairwise_agreement")
            corr = dec.get("op_preference_corr")
            lines.append(
                f"{dec['seeds']} decoder searches; ops from their averaged softmax weights. Agreement of each seed's "
                f"own argmax with the derived op: {dec['agreement']:.0%} of slots (chance "
                f"{dec['chance_agreement']:.0%}); between two seeds: "
                + (f"{pair:.0%} of slots" if pair is not None else "-")
                + (f"; correlation of the per-op preference (weight averaged over slots): {corr:.2f}"
                   if corr is not None and corr == corr else "") + ".")
        multiscale = result.arch.decoder in ("mstcn", "arch2_space")
        labels = decoder_slot_labels(result.arch) if multiscale else None
        lines += ["", f"| slot | {'position' if multiscale else 'layer'} | op | weight | runner-up |"
                  + (" seeds agreeing |" if dec.get("seeds", 1) > 1 else ""),
                  "|---|---|---|---|---|" + ("---|" if dec.get("seeds", 1) > 1 else "")]
        for k, (op, row) in enumerate(zip(result.decoder_ops, result.betas, strict=True)):
            w = torch.softmax(torch.tensor(row), 0).tolist()
            order = sorted(range(len(w)), key=lambda j: -w[j])
            second = result.candidates[order[1]] if len(order) > 1 else "-"
            where = labels[k] if labels is not None and k < len(labels) else str(k // 4 + 1)
            line = f"| {k} | {where} | {op} | {w[order[0]]:.3f} | {second} ({w[order[1]]:.3f}) |"
            if dec.get("seeds", 1) > 1:
                line += f" {dec['slot_agreement'][k]:.0%} |"
            lines.append(line)
        if result.arch.decoder == "mstcn":
            lines += _scale_lines(result)
        elif result.arch.decoder == "arch2_space":
            lines += _space_lines(result)
    lines += ["", "## Files", ""]
    names = ["arch.json", "derived_init.pt", "latency_table.json", "alphas.png", "betas.png", "decoder.png",
             "metrics.jsonl", "search_summary.json"]
    lines += [f"- `{n}`" for n in names if (result.run_dir / n).exists()]
    lines += ["", "Train the derived model: `vidnas train --arch arch.json` (add `--init derived_init.pt` to start",
              "from the supernets' weights; the paper trains from scratch).", ""]
    for png in ("alphas.png", "betas.png", "decoder.png"):
        if (result.run_dir / png).exists():
            lines.append(f"![{png}]({png})")
    return "\n".join(lines) + "\n"


def _space_lines(result: StnasResult) -> list[str]:
    """The ``arch2_space`` answer: a per-frame or a temporal model, and how far it is from arch2."""
    ops = tuple(result.arch.decoder_ops or ARCH2_OPS)
    temporal = [f"{label} ({op})" for label, op in zip(decoder_slot_labels(result.arch), ops, strict=True)
                if op.startswith("temporal")]
    same = sum(a == b for a, b in zip(ops, ARCH2_OPS, strict=True))
    decoder = Arch2SpaceDecoder([1, 1, 1, 1], 1, ops=ops, channels=1, aux=False)  # reads the ops' time extent only
    frames = decoder.temporal_receptive_field()
    return ["", "## The arch2 space: time per slot", "",
            f"- model: {'temporal, ' + str(frames) + ' frames of context' if temporal else 'per frame (window 1)'}"
            + (f" (temporal slots: {', '.join(temporal)})" if temporal else " (no slot reads the past)"),
            f"- arch2's own op in {same} of {len(ops)} slots" + (": this is arch2" if same == len(ops) else ""),
            f"- arch2: `{', '.join(ARCH2_OPS)}`; cheapest point: `{', '.join(CHEAPEST_OPS)}`"]


def _scale_lines(result: StnasResult) -> list[str]:
    """The multi-scale decoder's per-scale answer: does temporal context pay at this scale?"""
    weights = softmax_rows(result.betas)
    lines = ["", "## Per scale: does temporal context pay?", "",
             "Each scale's own ops: the trunk's residual layers at the coarse stride (its fixed reduction conv is "
             "3x3x3 unless full channels), then per finer scale its two path ops and its fusion op. Frames: the "
             "temporal context those ops span (1 = per frame). Temporal weight: mean over the scale's slots of "
             f"softmax(beta) on the temporal candidates (uniform mixing: {_uniform_temporal(result.candidates)}).",
             "",
             "| stride | part | ops | temporal ops | frames | temporal weight | decision |",
             "|---|---|---|---|---|---|---|"]
    for d in scale_decisions(result.arch, weights, result.candidates):
        ops = "3x3x3 residual layers (fixed)" if d["ops"] is None else ", ".join(d["ops"])
        n_t = "-" if d["temporal_ops"] is None else f"{d['temporal_ops']}/{len(d['ops'])}"
        lines.append(f"| {d['stride']} | {d['part']} | {ops} | {n_t} | {d['frames']} | "
                     f"{_num(d['temporal_weight'], '.3f')} | {'temporal' if d['temporal'] else 'per frame'} |")
    return lines


def _uniform_temporal(candidates: Sequence[str] | None) -> str:
    cols = list(candidates or ())
    n = sum(op_category(c) in ("temporal", "spatio-temporal") for c in cols)
    return f"{n}/{len(cols)} = {n / len(cols):.2f}" if cols else "-"


def _depth_lines(result: StnasResult, depth: Mapping[str, Any]) -> list[str]:
    """The depth decision's tables: per block its alpha, latency, task gradient, flip lambda and truncated loss."""
    alphas = result.alphas or []
    lat = depth.get("block_latencies") or []
    grads = depth.get("task_grad_mean")
    flips = depth.get("flip_lambda")
    losses = depth.get("losses")
    kept = list(result.depths) if result.depths is not None else [len(a) for a in alphas]
    lines = ["", "## Depth decision, per block", "",
             "Flip lambda (paper rule) = -E[g_i] / s_i with g_i the task-only gradient of alpha_i: under the paper's "
             "shrink rule the block goes for lambda above it (negative: it goes at any lambda).",
             "L_s(i): validation loss with stage s cut after block i (later alphas 0). Marginal lambda = "
             "(L_s(i-1) - L_s(i)) / s_i: the truncated rule drops block i of a convex loss curve above it.", "",
             "| stage | block | alpha | s_i (ms) | E[g_i] | flip lambda (paper) | L_s(i) | marginal lambda | kept |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s, row in enumerate(alphas):
        for i, a in enumerate(row):
            s_i = lat[s][i] if s < len(lat) and i < len(lat[s]) else None
            g = grads[s][i] if grads else None
            f = flips[s][i] if flips else None
            loss = losses[s][i] if losses else None
            marg = None
            if losses and i > 0 and s_i:
                marg = (losses[s][i - 1] - losses[s][i]) / s_i
            lines.append(f"| {s + 1} | {i + 1} | {a:.4f} | {_num(s_i, '.3f')} | {_num(g, '.3g')} | {_num(f, '.3g')} "
                         f"| {_num(loss, '.4f')} | {_num(marg, '.3g')} | {'yes' if i < kept[s] else 'no'} |")
    if depth.get("rule") == "truncated" and losses is not None:
        lines += ["", f"Full supernet validation loss {depth.get('full_loss'):.4f} over {depth.get('val_batches')} "
                  f"batches; predicted loss of the choice {depth.get('loss'):.4f}.", ""]
        path = depth.get("path") or []
        if path:
            lines += ["### Lambda path (the truncated rule's choice for every lambda)", "",
                      "| from lambda | depths | predicted loss | table latency (ms) |", "|---|---|---|---|"]
            for p in path:
                lines.append(f"| {p['lambda_from']:.4g} | {_fmt_depths(p['depths'])} | {p['loss']:.4f} | "
                             f"{p['latency_ms']:.3f} |")
    return lines


def _num(v: Any, spec: str) -> str:
    return "-" if v is None else format(float(v), spec)


def _fmt_depths(d: Any) -> str:
    return "default" if d is None else ",".join(str(x) for x in d)
