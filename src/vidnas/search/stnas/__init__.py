"""ST-NAS [Lee et al.]: differentiable search of encoder depth under a latency regulariser and of spatial vs temporal
ops in a TCN decoder, in the DARTS split:

* ``supernet``: architecture weights inside modules (``SearchModule`` and its walkers) and the encoder's
  ``DepthSupernet`` (Eq. 1) with its latency penalty and the shrink rule (``shrink_depth``);
* ``decoder_supernet``: ``MixedOp`` and ``DecoderSupernet`` (over the SP-TCN or the multi-scale ``mstcn`` decoder);
* ``step``: one supernet training step (joint or alternating), the warm-up, the architecture optimiser and the two
  searches' gradient rules: Eq. 2 (``encoder_search_loss``, the task-only alpha gradients ``task_alpha_grads``) and
  the decoder's loss (``decoder_search_loss``);
* ``depth``: the depth decision: the paper's shrink rule or the truncated-validation-loss rule with lambda or a latency
  budget, the flip lambdas, the lambda path;
* ``derive``: the derived ``Arch``, the derived decoder with its mixing weights folded in (``derived_decoder``),
  BatchNorm recalibration, ``derived_init.pt``;
* ``runner``: ``SearchContext`` (run directory, log, data, processes, lambda, latency table) and the resumable phase
  (``Phase``, ``run_phase``, DDP synchronisation);
* ``encoder_search``: ``search_encoder_depths``; ``decoder_search``: ``search_decoder_ops`` (``search_decoder_seeds``);
* ``search``: ``search_stnas`` (both, plus every output file);
* ``sampling``: random architectures of the same space (the baseline a search result is compared with);
* ``record``: the search record inside ``arch.json`` and the run's ``StnasResult``;
* ``report``: ``report.md``; ``figures``: the alpha / beta / decoder figures.

Lambda is one config field, ``stnas.lam`` (the CLI's ``--lambda``); the searches read it from the config they get.

Example (Python)::

    from vidnas.config import load_config
    from vidnas.search.stnas import search_encoder_depths, search_decoder_ops

    cfg = load_config("tiny", ["stnas.lam=1e-3"])
    enc = search_encoder_depths(cfg, "runs/s1")
    dec = search_decoder_ops(cfg, "runs/s1", encoder=enc.derived_encoder())
    print(enc.depths, dec.ops)
"""

from vidnas.search.stnas.decoder_search import DecoderSearch, search_decoder_ops, search_decoder_seeds
from vidnas.search.stnas.decoder_supernet import (
    DecoderSupernet,
    MixedOp,
    build_decoder_supernet,
    build_multiscale_supernet,
)
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
    derived_decoder,
    recalibrate_batchnorm,
    save_derived_init,
    slot_ops,
    split_slot_ops,
)
from vidnas.search.stnas.encoder_search import EncoderSearch, search_encoder_depths
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
from vidnas.search.stnas.runner import (
    SearchContext,
    check_searchable_decoder,
    check_stnas_config,
    refuse_selection_split,
)
from vidnas.search.stnas.sampling import (
    MATCH_DRAWS,
    RANDOM_MODES,
    latency_matched_depths,
    sample_matched_archs,
    sample_random_archs,
)
from vidnas.search.stnas.search import search_stnas
from vidnas.search.stnas.step import (
    ARCH_BETAS,
    ARCH_GRAD_CLIP,
    SEARCH_MODES,
    ClippedAdam,
    arch_warmup,
    decoder_search_loss,
    encoder_search_loss,
    search_step,
    task_alpha_grads,
)
from vidnas.search.stnas.supernet import (
    DepthSearchStage,
    DepthSupernet,
    SearchModule,
    arch_parameters,
    search_modules,
    set_arch_trainable,
    shrink_depth,
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
    "task_alpha_grads",
    "decoder_search_loss",
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
    "derived_decoder",
    "recalibrate_batchnorm",
    "save_derived_init",
    "SearchContext",
    "EncoderSearch",
    "DecoderSearch",
    "check_stnas_config",
    "check_searchable_decoder",
    "refuse_selection_split",
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
    "sample_matched_archs",
    "MATCH_DRAWS",
]
