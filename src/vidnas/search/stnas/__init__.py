"""ST-NAS [Lee et al.]: differentiable search of encoder depth under a latency regulariser and of spatial vs temporal
ops in a TCN decoder, in the DARTS split:

* ``supernet``: the search modules and their architecture weights: ``DepthSupernet`` (Eq. 1) and its latency
  penalty, ``MixedOp``, ``DecoderSupernet`` (over the SP-TCN or the multi-scale ``mstcn`` decoder);
* ``step``: one supernet training step (joint or alternating), the warm-up, the architecture optimiser and the encoder
  search's loss (Eq. 2, ``encoder_search_loss``);
* ``depth``: the depth decision: the paper's shrink rule or the truncated-validation-loss rule with lambda or a latency
  budget, the flip lambdas, the lambda path;
* ``derive``: the shrink rule, the derived ``Arch``, BatchNorm recalibration, ``derived_init.pt``;
* ``loop``: ``search_encoder_depths``, ``search_decoder_ops`` (``search_decoder_seeds``) and ``search_stnas`` (both,
  plus every output file);
* ``sampling``: random architectures of the same space (the baseline a search result is compared with);
* ``record``: the search record inside ``arch.json`` and the run's ``StnasResult``;
* ``report``: ``report.md`` and the alpha / beta / decoder figures.

Example (Python)::

    from vidnas.config import load_config
    from vidnas.search.stnas import search_encoder_depths, search_decoder_ops

    cfg = load_config("tiny")
    enc = search_encoder_depths(cfg, "runs/s1", lam=1e-3)
    dec = search_decoder_ops(cfg, "runs/s1", encoder=enc.derived_encoder())
    print(enc.depths, dec.ops)
"""

from vidnas.search.stnas.depth import (
    DEPTH_RULES,
    BudgetError,
    DepthChoice,
    DepthDecision,
    choose_depths,
    combined_loss,
    depth_latency,
    flip_lambdas,
    lambda_path,
    min_latency,
    truncated_losses,
)
from vidnas.search.stnas.derive import (
    derive_arch,
    recalibrate_batchnorm,
    save_derived_init,
    shrink_depth,
    slot_ops,
    split_slot_ops,
)
from vidnas.search.stnas.loop import (
    DecoderSearch,
    EncoderSearch,
    SearchContext,
    check_stnas_config,
    decoder_latency_estimate,
    decoder_op_costs,
    search_decoder_ops,
    search_decoder_seeds,
    search_encoder_depths,
    search_stnas,
)
from vidnas.search.stnas.record import (
    SEARCH_KEY,
    SearchRecord,
    StnasResult,
    decoder_consensus,
    load_search_summary,
    read_search_record,
    write_search_arch,
)
from vidnas.search.stnas.report import search_report
from vidnas.search.stnas.sampling import RANDOM_MODES, latency_matched_depths, sample_random_archs
from vidnas.search.stnas.step import (
    ARCH_BETAS,
    ARCH_GRAD_CLIP,
    SEARCH_MODES,
    ClippedAdam,
    arch_warmup,
    encoder_search_loss,
    search_step,
)
from vidnas.search.stnas.supernet import (
    DecoderSupernet,
    DepthSearchStage,
    DepthSupernet,
    MixedOp,
    SearchModule,
    arch_parameters,
    build_decoder_supernet,
    build_multiscale_supernet,
    search_modules,
    set_arch_trainable,
    weight_parameters,
)

__all__ = [
    "SearchModule",
    "search_modules",
    "arch_parameters",
    "weight_parameters",
    "set_arch_trainable",
    "DepthSearchStage",
    "DepthSupernet",
    "MixedOp",
    "DecoderSupernet",
    "build_decoder_supernet",
    "build_multiscale_supernet",
    "SEARCH_MODES",
    "ARCH_GRAD_CLIP",
    "ARCH_BETAS",
    "ClippedAdam",
    "encoder_search_loss",
    "arch_warmup",
    "search_step",
    "DEPTH_RULES",
    "BudgetError",
    "DepthChoice",
    "DepthDecision",
    "choose_depths",
    "combined_loss",
    "depth_latency",
    "min_latency",
    "lambda_path",
    "flip_lambdas",
    "truncated_losses",
    "shrink_depth",
    "split_slot_ops",
    "slot_ops",
    "derive_arch",
    "recalibrate_batchnorm",
    "save_derived_init",
    "SearchContext",
    "EncoderSearch",
    "DecoderSearch",
    "check_stnas_config",
    "decoder_latency_estimate",
    "decoder_op_costs",
    "search_encoder_depths",
    "search_decoder_ops",
    "search_decoder_seeds",
    "search_stnas",
    "SEARCH_KEY",
    "SearchRecord",
    "StnasResult",
    "decoder_consensus",
    "write_search_arch",
    "read_search_record",
    "load_search_summary",
    "search_report",
    "RANDOM_MODES",
    "latency_matched_depths",
    "sample_random_archs",
]
