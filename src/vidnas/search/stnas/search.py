"""The ST-NAS search [ST-NAS Sec. 3.2, 3.3, 4]: encoder depth search, then decoder op search, then ``arch.json``.

Two public searches a researcher can call from Python, each on its own supernet (the paper: "the encoder and decoder
NAS steps are performed separately"), and ``search_stnas``, which runs both and writes every output:

1. ``encoder_search.search_encoder_depths``: a depth supernet trained on Eq. 2, then the depth decision.
2. ``decoder_search.search_decoder_ops`` (``search_decoder_seeds``): a decoder supernet on the derived encoder, then
   its ops.
3. ``search_stnas`` writes (rank 0) ``arch.json`` (``record.write_search_arch``), ``derived_init.pt``,
   ``metrics.jsonl`` and TensorBoard (kinds ``encoder_search``, ``alpha``, ``alpha_grad``, ``decoder_search``,
   ``beta``; ``_s{k}`` suffixes for decoder seed k > 0), the plots (``figures``) and ``report.md`` (``report``),
   ``search_summary.json``; every rank writes ``ranks/rank{N}_arch.json``. ``arch.json`` holds no timing: the same
   command, seed, thread count and latency table give the same file, byte for byte.

Both phases train in the phase runner (``runner.run_phase``, exact resume). Lambda is ``stnas.lam`` (the CLI's
``--lambda``), read once (``SearchContext.lam``): set it in the config to search at another lambda.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vidnas.config import Config
from vidnas.engine.distributed import barrier
from vidnas.models import Arch, arch_from_config
from vidnas.search.stnas.decoder_search import DecoderSearch, search_decoder_seeds
from vidnas.search.stnas.derive import derive_arch, derived_decoder, save_derived_init
from vidnas.search.stnas.encoder_search import EncoderSearch, search_encoder_depths
from vidnas.search.stnas.figures import draw_search
from vidnas.search.stnas.record import StnasResult, write_search_arch
from vidnas.search.stnas.report import search_report
from vidnas.search.stnas.runner import (
    SearchContext,
    check_searchable_decoder,
    check_stnas_config,
    fixed_batches,
    phase_seed,
)
from vidnas.search.stnas.step import ARCH_GRAD_CLIP
from vidnas.utils import atomic_write_json, atomic_write_text

__all__ = ["search_stnas"]

logger = logging.getLogger(__name__)


def search_stnas(
    cfg: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    show_progress: bool = True,
    skip_encoder: bool = False,
    skip_decoder: bool = False,
    save_init: bool = True,
    plots: bool = True,
) -> StnasResult:
    """Run the ST-NAS search (see the module docstring) and write its outputs into ``run_dir``.

    Args:
        cfg: resolved config (``data``, ``model``, ``train`` for the optimiser and batches, ``stnas``; lambda is
            ``stnas.lam``).
        run_dir: run directory (created).
        resume: continue from the phase checkpoints in ``run_dir/checkpoints`` (exactly).
        show_progress: tqdm bars (rank 0).
        skip_encoder: keep the config's encoder depths, search the decoder only.
        skip_decoder: keep the config's decoder, search the encoder depths only.
        save_init: write ``derived_init.pt``.
        plots: draw the PNG plots (matplotlib).

    Returns:
        The ``StnasResult`` (also saved as ``search_summary.json``).

    Raises:
        FileNotFoundError: ``resume`` without any checkpoint in ``run_dir``.
        ValueError: a bad ``stnas`` value, both phases skipped, or a decoder search on a decoder without
            op slots (not ``sptcn`` / ``mstcn``).
        BudgetError: no depth combination fits ``stnas.target_latency_ms`` (raised before training).
    """
    run_dir = Path(run_dir)
    threshold = float(cfg.stnas.threshold)
    check_stnas_config(cfg)
    if skip_encoder and skip_decoder:
        raise ValueError("nothing to search: both the encoder and the decoder search are skipped")
    if skip_encoder and cfg.stnas.target_latency_ms is not None:
        raise ValueError("a latency budget decides encoder depths: it cannot be used with skip_encoder")
    base = arch_from_config(cfg)
    if not skip_decoder:
        check_searchable_decoder(base)
    ckpt_dir = run_dir / "checkpoints"
    if resume and not any(ckpt_dir.glob("*_search.pt")):
        raise FileNotFoundError(f"--resume: no search checkpoint in {ckpt_dir}")

    ctx = SearchContext.open(cfg, run_dir, resume=resume, show_progress=show_progress)
    enc = None if skip_encoder else search_encoder_depths(cfg, run_dir, context=ctx, decoder_searched=not skip_decoder)
    decs: list[DecoderSearch] = []
    consensus: dict[str, Any] | None = None
    if not skip_decoder:
        # the derived depths, with the weights trained above; else the config's encoder
        encoder = None if enc is None else enc.derived_encoder()
        decs, consensus = search_decoder_seeds(cfg, run_dir, encoder=encoder, context=ctx)

    arch = derive_arch(base, depths=None if enc is None else enc.depths,
                       decoder_ops=None if consensus is None else consensus["ops"], threshold=threshold,
                       name="stnas")
    result = _result(ctx, arch, base, threshold, enc, decs, consensus)
    _write(ctx, result, enc, decs, save_init=save_init, plots=plots)
    ctx.close()
    barrier()
    return result


def _result(ctx: SearchContext, arch: Arch, base: Arch, threshold: float, enc: EncoderSearch | None,
            decs: list[DecoderSearch], consensus: dict[str, Any] | None) -> StnasResult:
    """The ``StnasResult`` of the phases that ran (the config's depths / decoder for a skipped one)."""
    cfg, run_dir, lam = ctx.cfg, ctx.run_dir, ctx.lam
    result = StnasResult(run_dir=run_dir, arch=arch, arch_path=run_dir / "arch.json", lam=lam, threshold=threshold,
                         full_depths=base.depths, depths=base.depths, depth_rule=cfg.stnas.depth_rule,
                         latency_pricing=None if ctx.table is None else ctx.table.pricing_record())
    if enc is not None:
        result.full_depths, result.depths, result.alphas = enc.full_depths, enc.depths, enc.alphas
        result.latency_table_path = enc.table.path
        result.full_latency_ms, result.derived_latency_ms = enc.full_latency_ms, enc.derived_latency_ms
        result.encoder_seconds = enc.seconds
        result.depth = enc.decision.to_dict() if enc.decision is not None else None
        try:
            result.model_latency_ms = enc.table.model_latency(enc.supernet.encoder, enc.depths, arch,
                                                              enc.model.num_classes)
            result.full_model_latency_ms = enc.table.model_latency(enc.supernet.encoder, None, base,
                                                                   enc.model.num_classes)
        except KeyError as e:  # a given table without the decoder parts: block latency only
            logger.info("no full-model table latency: %s", e)
    if decs:
        # one seed: its raw betas; several: log of the averaged softmax weights (argmax = the derived op)
        result.betas = decs[0].betas if len(decs) == 1 or consensus is None else consensus["betas"]
        result.decoder_ops, result.candidates = tuple(consensus["ops"]), decs[0].candidates
        result.decoder_seconds = sum(d.seconds for d in decs)
        result.decoder = {**consensus, "arch_lr": decs[0].arch_lr, "beta_travel": cfg.stnas.beta_travel,
                          "latency_lambda": lam if cfg.stnas.decoder_latency else None,
                          "betas_per_seed": [d.betas for d in decs]}
    return result


def _write(ctx: SearchContext, result: StnasResult, enc: EncoderSearch | None, decs: list[DecoderSearch], *,
           save_init: bool, plots: bool) -> None:
    """``arch.json`` with its record (every rank its own under torchrun), then, on rank 0, the other files."""
    cfg, run_dir, dist_info = ctx.cfg, ctx.run_dir, ctx.dist_info
    device = None if enc is None else enc.table.device
    record = dict(alphas=result.alphas, betas=result.betas, lam=result.lam, threshold=result.threshold,
                  latency_table_path=result.latency_table_path, latency_table_device=device,
                  latency_table_pricing=result.latency_pricing,
                  beta_columns=result.candidates, depth=result.depth, decoder=result.decoder)
    if dist_info.enabled:
        # each rank records what it derived; the test compares them
        write_search_arch(run_dir / "ranks" / f"rank{dist_info.rank}_arch.json", result.arch, **record,
                          extra={"rank": dist_info.rank, "world_size": dist_info.world_size})
    if not dist_info.is_main:
        return
    # no timing in arch.json: the same command gives the same file (times are in search_summary.json)
    write_search_arch(result.arch_path, result.arch, **record, extra={
        "encoder_epochs": 0 if enc is None else cfg.stnas.encoder_epochs,
        "decoder_epochs": 0 if not decs else cfg.stnas.decoder_epochs,
        "warmup_epochs": cfg.stnas.warmup_epochs,
        "mode": cfg.stnas.mode,
        "arch_lr": cfg.stnas.arch_lr,
        "arch_grad_clip": ARCH_GRAD_CLIP,
        "full_depths": None if result.full_depths is None else list(result.full_depths),
        "full_latency_ms": result.full_latency_ms,
        "derived_latency_ms": result.derived_latency_ms,
        "model_latency_ms": result.model_latency_ms,
        "full_model_latency_ms": result.full_model_latency_ms,
    })
    result.files.append(result.arch_path)
    if result.latency_table_path is not None:
        result.files.append(run_dir / "latency_table.json")
    if save_init:
        # encoder: the decoder search's (derived, trained further there) or the depth supernet's derived copy;
        # decoder: seed 0's decoder supernet reduced to the derived ops (mixing weights folded in), or the encoder
        # search's baseline decoder; BatchNorm recalibrated on training batches
        if decs:
            encoder = decs[0].model.encoder
            decoder = derived_decoder(decs[0].supernet, result.decoder_ops)
        else:
            assert enc is not None
            encoder, decoder = enc.derived_encoder(), enc.model.decoder
        ctx.train_ds.set_epoch(0)
        calib = fixed_batches(ctx.train_ds, cfg.train.batch_size, max(cfg.stnas.bn_calib_batches, 1),
                               shuffle_seed=phase_seed(cfg.train.seed, "decoder") + 17)
        result.init_checkpoint = save_derived_init(run_dir / "derived_init.pt", cfg, result.arch, ctx.source,
                                                   encoder=encoder, decoder=decoder, calib_batches=calib,
                                                   device=ctx.device)
        result.files.append(result.init_checkpoint)
    result.files.append(run_dir / "metrics.jsonl")
    if plots:
        result.files.extend(draw_search(run_dir, result))
    report = run_dir / "report.md"
    atomic_write_text(report, search_report(result))
    result.files.append(report)
    result.files.append(run_dir / "search_summary.json")
    atomic_write_json(run_dir / "search_summary.json", result.to_dict())
