"""The two searches composed, by counting (issue 27): how much of a frame a cell can replace once ST-NAS has shrunk
the encoder or cheapened the decoder.

    python benchmarks/cells_composed_flops.py --encoder mobilenetv2 --height 360 --width 480

For per-frame ``arch2_space`` points (arch2's ops and the space's cheapest ops, at the encoder's own depths and at one
block per stage) it builds the static network as the cell search holds it (``as_static_network``; random weights:
FLOPs do not depend on them) and one cell reading ``prev_dec``, ``layer2`` and ``layer3`` (``TOKENS``, encoder stopped
after stage 3). Printed per point, in GFLOPs of one frame (``vidnas.bench.counting.count_flops``: 2 per
multiply-accumulate, convolutions and matrix products only): the static frame (encoder + decoder), the decoder's share
of it, and the cell model's steady-state frame (truncated encoder + cell) and its ratio to the static frame. Counting
only: latency and accuracy of a composed model need trained checkpoints (``vidnas bench``, ``vidnas eval``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from vidnas.bench.counting import count_flops
from vidnas.config import Config, DataConfig, ModelConfig
from vidnas.models import Arch, build_model
from vidnas.models.cells import Cell, CellGenotype, DynamicCellModel, as_static_network, cell_in_channels
from vidnas.models.decoders import ARCH2_OPS, CHEAPEST_OPS
from vidnas.models.encoders import build_encoder
from vidnas.utils import atomic_write_json

# sum(conv1x1(prev_dec), conv1x1(layer2)); sum(conv3x3(cell_layer0), conv1x1(layer3)): reads no layer4
TOKENS = [1, 2, 0, 0, 0, 5, 3, 1, 0, 0]
NUM_CLASSES = 11  # CamVid


def measure(encoder: str, height: int, width: int) -> list[dict]:
    """One row per (depths, decoder) point: GFLOPs of the static frame and of the cell model's steady-state frame."""
    cfg = Config(data=DataConfig(height=height, width=width, window=1),
                 model=ModelConfig(encoder=encoder, decoder="arch2_space"))
    own = build_encoder(encoder, img_size=(height, width)).depths
    geno = CellGenotype.from_tokens(TOKENS)
    frame = torch.randn(1, 3, height, width)
    rows = []
    for depths in dict.fromkeys((tuple(own), (1,) * len(own))):
        for name, ops in (("arch2", ARCH2_OPS), ("cheapest", CHEAPEST_OPS)):
            arch = Arch(encoder=encoder, depths=depths, decoder="arch2_space", decoder_ops=ops, window=1, name=name)
            static = as_static_network(build_model(cfg, arch, num_classes=NUM_CLASSES).eval())
            (enc_fn, enc_args), (dec_fn, dec_args) = static.protocol_parts(frame)
            enc, dec = count_flops(enc_fn, *enc_args) / 1e9, count_flops(dec_fn, *dec_args) / 1e9
            cell = Cell(geno, in_channels=cell_in_channels(static), num_classes=NUM_CLASSES)
            (tenc_fn, tenc_args), (cell_fn, cell_args) = DynamicCellModel(static, cell).eval().protocol_parts(frame)
            tenc, cost = count_flops(tenc_fn, *tenc_args) / 1e9, count_flops(cell_fn, *cell_args) / 1e9
            rows.append({"depths": list(depths), "decoder": name, "encoder_gflops": enc, "decoder_gflops": dec,
                         "decoder_share": dec / (enc + dec), "cell_encoder_gflops": tenc, "cell_gflops": cost,
                         "cell_frame_ratio": (tenc + cost) / (enc + dec)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", default="mobilenetv2")
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--width", type=int, default=480)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here (never overwritten)")
    args = ap.parse_args(argv)
    if args.json is not None and args.json.exists():
        sys.exit(f"--json {args.json} exists: not overwriting it")
    rows = measure(args.encoder, args.height, args.width)
    layers = "; ".join(line.strip() for line in CellGenotype.from_tokens(TOKENS).describe().splitlines()[1:3])
    print(f"{args.encoder} at {args.height}x{args.width}, GFLOPs of one frame; cell: {layers}")
    print("| depths | decoder | static frame (encoder + decoder) | decoder share | cell frame (encoder + cell) | "
          "cell / static |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['depths']} | {r['decoder']} | {r['encoder_gflops']:.3f} + {r['decoder_gflops']:.3f} | "
              f"{r['decoder_share']:.1%} | {r['cell_encoder_gflops']:.3f} + {r['cell_gflops']:.3f} | "
              f"{r['cell_frame_ratio']:.1%} |")
    if args.json is not None:
        atomic_write_json(args.json, {"encoder": args.encoder, "height": args.height, "width": args.width,
                                      "tokens": TOKENS, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
