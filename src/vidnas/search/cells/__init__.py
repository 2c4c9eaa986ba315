"""Dynamic-cell search [CELLS]: search space, LSTM controller, PPO, reward, meta split, feature cache, executors, search
loop.

The cell and the video model it plugs into live in ``vidnas.models.cells`` (models never import search); this package
samples, trains and scores cells. Entry points: ``run_cell_search`` then ``train_top_cells`` (``run_proxy_check``
between them checks the proxy's ranking at the full size); ``vidnas search cells`` on the command line.
"""

from vidnas.search.cells.cache import CacheInfo, DiskFeatureCache, FeatureCache, MemoryFeatureCache, build_caches
from vidnas.search.cells.controller import Controller, ControllerSample
from vidnas.search.cells.cost import CostMeter
from vidnas.search.cells.evaluate import (
    CandidateJob,
    CandidateResult,
    EarlyStopRule,
    InjectedFailure,
    evaluate_candidate,
    score_cell,
    sequence_loss,
    train_cell,
)
from vidnas.search.cells.executors import (
    EXECUTORS,
    ExecutorError,
    InlineExecutor,
    LocalExecutor,
    RayExecutor,
    make_executor,
)
from vidnas.search.cells.meta_split import MetaSplit, dataset_windows, split_meta, split_meta_frames
from vidnas.search.cells.options import SearchOptions
from vidnas.search.cells.ppo import PPOTrainer, ppo_loss, ppo_surrogate
from vidnas.search.cells.proxy_check import kendall_tau_b, run_proxy_check, select_for_check, spearman_rho
from vidnas.search.cells.records import compare_runs, read_log, select_top
from vidnas.search.cells.reward import RewardBaseline, geometric_reward, latency_reward, reward_from_confusion
from vidnas.search.cells.search import CellSearch, CellSearchResult, run_cell_search, top_genotypes
from vidnas.search.cells.space import OP_PRESETS, CellSearchSpace, Decision
from vidnas.search.cells.static import adopt_static_model, prepare_static, static_network_config, train_static
from vidnas.search.cells.summary import equal_n_stats, format_comparison, reward_stats
from vidnas.search.cells.topk import FinalOptions, measure_runtime, train_top_cells

__all__ = [
    "CellSearchSpace",
    "Decision",
    "OP_PRESETS",
    "Controller",
    "ControllerSample",
    "PPOTrainer",
    "ppo_loss",
    "ppo_surrogate",
    "RewardBaseline",
    "geometric_reward",
    "reward_from_confusion",
    "latency_reward",
    "CostMeter",
    "CacheInfo",
    "FeatureCache",
    "MemoryFeatureCache",
    "DiskFeatureCache",
    "build_caches",
    "split_meta",
    "split_meta_frames",
    "dataset_windows",
    "MetaSplit",
    "CandidateJob",
    "CandidateResult",
    "EarlyStopRule",
    "InjectedFailure",
    "evaluate_candidate",
    "score_cell",
    "sequence_loss",
    "train_cell",
    "EXECUTORS",
    "ExecutorError",
    "InlineExecutor",
    "LocalExecutor",
    "RayExecutor",
    "make_executor",
    "CellSearch",
    "CellSearchResult",
    "SearchOptions",
    "read_log",
    "compare_runs",
    "reward_stats",
    "equal_n_stats",
    "format_comparison",
    "run_cell_search",
    "select_top",
    "top_genotypes",
    "train_static",
    "prepare_static",
    "static_network_config",
    "adopt_static_model",
    "FinalOptions",
    "measure_runtime",
    "train_top_cells",
    "run_proxy_check",
    "select_for_check",
    "spearman_rho",
    "kendall_tau_b",
]
