"""Two latency tables of the arch2 space side by side: what pricing the search in another runtime changes.

    vidnas latency --config configs/camvid_arch2_fast_cpu.yaml --set model.decoder=arch2_space \\
        --set data.window=3 --decoder --threads 1 --out torch.json
    vidnas latency ... --runtime onnxruntime --precision int8 --out ort_int8.json
    python benchmarks/latency_runtime_compare.py torch=torch.json ort_int8=ort_int8.json \\
        --config configs/camvid_arch2_fast_cpu.yaml --set model.decoder=arch2_space --set data.window=3

Both tables must be of the same encoder, input size and decoder (the config's ``arch2_space`` architecture: window,
width, temporal mode; classes K from ``--classes`` or the config's data set). Printed: every candidate of every
decoder slot (``LatencyTable.decoder_op_costs``, what the decoder search's latency term reads) in both tables with
the ratio B / A, the order of the candidates from cheapest under each table and the slots where the cheapest
differs; the encoder blocks (what the depth search reads) side by side; and the table latency of arch2's point and
of the space's cheapest point (``LatencyTable.model_latency``) under each. A changed order is where the same lambda
can derive a different architecture; an unchanged one says the runtime rescales the costs without reordering them
(the derived architecture can still move, since lambda trades accuracy against absolute milliseconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from vidnas.config import load_config
from vidnas.models import arch_from_config, build_encoder
from vidnas.models.decoders.arch2_space import ARCH2_OPS, CHEAPEST_OPS, SLOTS
from vidnas.search.latency import LatencyTable, LatencyTableError, MissingLatencyError


def _tables(items: list[str], ap: argparse.ArgumentParser) -> dict[str, LatencyTable]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            ap.error(f"{item!r}: expected NAME=TABLE.json")
        try:
            out[name] = LatencyTable.load(path)
        except LatencyTableError as e:
            ap.error(str(e))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tables", nargs=2, metavar="NAME=TABLE.json", help="two `vidnas latency --decoder` tables")
    ap.add_argument("--config", required=True, help="the config the tables were measured for")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override (repeatable)")
    ap.add_argument("--classes", type=int, help="classes K (default: the config's data set)")
    args = ap.parse_args(argv)
    logging.getLogger("vidnas.search.latency").setLevel(logging.ERROR)  # this process times nothing: no device check
    tables = _tables(args.tables, ap)
    (na, a), (nb, b) = tables.items()
    where = [(t.meta.get("encoder"), t.meta.get("img_size"), t.meta.get("depths")) for t in (a, b)]
    if where[0] != where[1]:
        ap.error(f"the tables are of different encoders or sizes: {na} {where[0]}, {nb} {where[1]}")
    cfg = load_config(args.config, args.sets)
    enc_name, hw, depths = where[0]
    base = dataclasses.replace(arch_from_config(cfg), encoder=enc_name, depths=tuple(depths))
    if base.decoder != "arch2_space":
        ap.error(f"the config's decoder is {base.decoder!r}: set model.decoder=arch2_space")
    if args.classes is None:
        from vidnas.data import open_source

        args.classes = open_source(cfg.data).num_classes
    enc = build_encoder(enc_name, img_size=tuple(hw), depths=tuple(depths))
    columns = list(dict.fromkeys(n for *_, cands in SLOTS for n in cands))
    try:
        costs = {n: t.decoder_op_costs(enc, base, args.classes, len(SLOTS), columns) for n, t in tables.items()}
        point = {n: {"arch2": t.model_latency(enc, None, dataclasses.replace(base, decoder_ops=ARCH2_OPS),
                                              args.classes),
                     "cheapest": t.model_latency(enc, None, dataclasses.replace(base, decoder_ops=CHEAPEST_OPS),
                                                 args.classes)} for n, t in tables.items()}
    except MissingLatencyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    def priced(t: LatencyTable) -> str:
        return " ".join(t.pricing) + ("" if t.decoder_precision == t.pricing[1] else f", decoder {t.decoder_precision}")

    print(f"{enc_name} at {hw[0]}x{hw[1]}, depths {depths}, window {base.window}, K {args.classes}; "
          f"{na}: {priced(a)}; {nb}: {priced(b)}")
    print(f"\n{'slot':<32}{'candidate':<16}{na + ' ms':>14}{nb + ' ms':>14}{'ratio':>8}")
    changed = []
    for k, (name, kind, stride, cands) in enumerate(SLOTS):
        label = f"{k} {name} ({kind}, s{stride})"
        for n in cands:
            j = columns.index(n)
            ma, mb = float(costs[na][k, j]), float(costs[nb][k, j])
            print(f"{label:<32}{n:<16}{ma:>14.4f}{mb:>14.4f}{mb / ma:>8.2f}")
            label = ""
        order = {t: sorted(cands, key=lambda n, t=t: float(costs[t][k, columns.index(n)])) for t in (na, nb)}
        print(f"{'':<32}cheapest first: {na}: {' < '.join(order[na])}; {nb}: {' < '.join(order[nb])}")
        if order[na][0] != order[nb][0]:
            changed.append(f"slot {k} ({name}): {order[na][0]} -> {order[nb][0]}")
    print(f"\n{'encoder block':<48}{na + ' ms':>14}{nb + ' ms':>14}{'ratio':>8}")
    for sig in a.blocks:
        print(f"{sig:<48}{a.blocks[sig]:>14.4f}{b.blocks[sig]:>14.4f}{b.blocks[sig] / a.blocks[sig]:>8.2f}")
    print()
    for what in ("arch2", "cheapest"):
        print(f"table latency of the {what} point: {na} {point[na][what]:.3f} ms, {nb} {point[nb][what]:.3f} ms")
    print("cheapest candidate changes in: " + ("; ".join(changed) if changed else "no slot"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
