"""Random architectures of the ST-NAS space: the baseline every search result is compared with.

The space of a search over an encoder with ``N_s`` searchable blocks in stage ``s`` and an SP-TCN decoder with ``S``
slots over ``M`` candidate ops holds ``prod_s N_s * M^S`` architectures (depth ``1 .. N_s`` per stage, one op per
slot). ``sample_random_archs`` draws ``k`` of them:

* ``mode="uniform"``: each stage's depth uniformly over ``1 .. N_s``, independently;
* ``mode="latency"``: the depths uniformly among the combinations whose table block latency lies within
  ``tolerance`` (relative) of a reference combination's (the searched one's), so that random and searched models
  cost about the same in the encoder;

and, in both modes, every decoder slot's op uniformly over the candidates (``decoder_ops`` None when the decoder is
not searched). A multi-scale (``mstcn``) space has the trunk's slots (``decoder_ops``) and, per finer scale, its two
path ops and its fusion op (``scale_ops``), all drawn the same way: ``M^(S + 3 * (len(scales) - 1))`` decoders.
An ``arch2_space`` space draws each of its eight slots over that slot's own candidates (``SLOTS``); a draw without a
temporal op is a per-frame model (window 1, as ``derive_arch`` makes a searched one).
The draws come from ``random.Random(seed)`` only, so the same seed gives the same architectures on any machine; a
repeated architecture is redrawn (up to a limit), so ``k`` distinct ones come back when the space allows.

``sample_matched_archs`` (``--random-mode matched``) matches the **whole model's** table latency instead: uniform
draws of the space (depths and decoder ops) are kept only when ``price(arch)`` (``LatencyTable.model_latency``: stem,
blocks, downsamples, outputs and decoder) lies within ``tolerance`` of the searched model's, i.e. rejection sampling
from the uniform distribution restricted to the band ``|T(a) - T*| <= tolerance * T*``.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable, Sequence

from vidnas.models.architecture import OPS_PER_LAYER, Arch
from vidnas.models.decoders.arch2_space import SLOTS, TEMPORAL_OPS
from vidnas.models.decoders.mstcn import OPS_PER_SCALE
from vidnas.search.stnas.depth import depth_combinations, depth_latency

__all__ = ["RANDOM_MODES", "MATCH_DRAWS", "sample_random_archs", "sample_matched_archs", "latency_matched_depths"]

logger = logging.getLogger(__name__)

# uniform; latency: encoder block latency matched; matched: the whole model's table latency (``sample_matched_archs``)
RANDOM_MODES: tuple[str, ...] = ("uniform", "latency", "matched")
MATCH_DRAWS = 5000  # uniform draws ``sample_matched_archs`` tries before it gives up
_REDRAWS = 50  # attempts per sample at a new, distinct architecture


def latency_matched_depths(full_depths: Sequence[int], block_latencies: Sequence[Sequence[float]],
                           reference: Sequence[int], tolerance: float = 0.1) -> list[tuple[int, ...]]:
    """Every depth combination whose block latency is within ``tolerance`` (relative) of ``reference``'s.

    ``reference`` itself is always among them.
    """
    target = depth_latency(block_latencies, reference)
    out = [tuple(d) for d in depth_combinations(full_depths)
           if abs(depth_latency(block_latencies, d) - target) <= tolerance * max(target, 1e-12)]
    return out


def sample_random_archs(
    base: Arch,
    full_depths: Sequence[int],
    k: int,
    *,
    candidates: Sequence[str] | None,
    seed: int = 0,
    mode: str = "uniform",
    block_latencies: Sequence[Sequence[float]] | None = None,
    reference_depths: Sequence[int] | None = None,
    tolerance: float = 0.1,
    name: str = "random",
) -> list[Arch]:
    """``k`` random architectures of the space around ``base`` (module docstring).

    Args:
        base: the config's architecture (encoder, decoder width, dilations, window... are kept).
        full_depths: searchable blocks per stage of the full encoder.
        k: how many.
        candidates: decoder op candidates; None = keep ``base``'s decoder (not searched). With an ``mstcn`` base the
            trunk and every finer scale's slots are drawn (``decoder_ops``, ``scale_ops``); with an ``arch2_space``
            base any non-None value draws every slot over its own candidates (``SLOTS``; the list itself is unused).
        seed: sampling seed.
        mode: ``"uniform"`` or ``"latency"`` (``"matched"`` is ``sample_matched_archs``).
        block_latencies: s_i per stage, per block (``"latency"`` mode).
        reference_depths: the depths to match (``"latency"`` mode).
        tolerance: relative block-latency tolerance (``"latency"`` mode).
        name: architectures are named ``{name}{i}``.

    Raises:
        ValueError: bad mode, ``k < 0``, random decoder ops for a decoder other than ``sptcn`` / ``mstcn``,
            or missing latency inputs.
    """
    if mode not in RANDOM_MODES[:2]:
        raise ValueError(f"random architecture mode {mode!r}; valid modes: {', '.join(RANDOM_MODES[:2])} "
                         "(matched: sample_matched_archs)")
    if k < 0:
        raise ValueError(f"number of random architectures must be >= 0, got {k}")
    if candidates is not None and base.decoder not in ("sptcn", "mstcn", "arch2_space"):
        raise ValueError(f"random decoder ops need the sptcn, mstcn or arch2_space decoder, not {base.decoder!r}")
    pool: list[tuple[int, ...]] | None = None
    if mode == "latency":
        if block_latencies is None or reference_depths is None:
            raise ValueError("latency-matched sampling needs the block latencies and the reference depths")
        pool = latency_matched_depths(full_depths, block_latencies, reference_depths, tolerance)
        logger.info("latency-matched random depths: %d combinations within %.0f%% of %s", len(pool),
                    100 * tolerance, list(reference_depths))
    rng = random.Random(seed)
    slots = OPS_PER_LAYER * len(base.dilations)
    multiscale = base.decoder == "mstcn"
    space = base.decoder == "arch2_space"
    scale_slots = OPS_PER_SCALE * (len(base.scales) - 1) if multiscale else 0
    seen: set[tuple] = set()
    out: list[Arch] = []
    for i in range(k):
        for _ in range(_REDRAWS):
            depths = rng.choice(pool) if pool is not None else tuple(rng.randint(1, n) for n in full_depths)
            if candidates is None:
                ops = None
            elif space:  # each slot over its own candidates
                ops = tuple(rng.choice(list(cands)) for _, _, _, cands in SLOTS)
            else:
                ops = tuple(rng.choice(list(candidates)) for _ in range(slots))
            # drawn after the trunk's, so an SP-TCN space draws what it always drew
            scale_ops = None if candidates is None or not multiscale else tuple(
                rng.choice(list(candidates)) for _ in range(scale_slots))
            key = (depths, ops, scale_ops)
            if key not in seen:
                break
        seen.add(key)
        changes: dict = {"depths": tuple(depths), "name": f"{name}{i}", "extra": {}}
        if multiscale and ops is not None:
            changes.update(decoder_ops=ops, scale_ops=scale_ops)
        elif space and ops is not None:
            changes.update(decoder_ops=ops)
            if not any(op in TEMPORAL_OPS for op in ops):  # no slot reads the past: a per-frame model
                changes["window"] = 1
        elif ops is not None:
            changes.update(decoder="sptcn", decoder_ops=ops)
        out.append(dataclasses.replace(base, **changes))
    return out


def sample_matched_archs(
    base: Arch,
    full_depths: Sequence[int],
    k: int,
    *,
    candidates: Sequence[str] | None,
    price: Callable[[Arch], float],
    target_ms: float,
    seed: int = 0,
    tolerance: float = 0.1,
    draws: int = MATCH_DRAWS,
    name: str = "random",
) -> list[Arch]:
    """``k`` distinct random architectures whose table latency is within ``tolerance`` of ``target_ms``.

    Draw ``n`` (0, 1, ...) is ``sample_random_archs(base, full_depths, 1, candidates=candidates,
    seed=seed * 1_000_003 + n)[0]`` (uniform depths and decoder ops); it is kept when
    ``|price(arch) - target_ms| <= tolerance * target_ms`` and no kept one has its depths and ops. So the same seed
    gives the same architectures, and the first ``k`` of a larger ``k`` are those of the smaller.

    Args:
        base, full_depths, candidates: the space (``sample_random_archs``).
        k: how many.
        price: an architecture's table latency in ms (e.g. ``LatencyTable.model_latency`` at fixed window).
        target_ms: the searched model's table latency.
        seed: sampling seed.
        tolerance: relative band (0.1: +-10%).
        draws: uniform draws tried before giving up.
        name: architectures are named ``{name}{i}``.

    Raises:
        ValueError: ``k < 0``, a non-positive target, or fewer than ``k`` matches after ``draws`` draws (the message
            names the target latency and the band).
    """
    if k < 0:
        raise ValueError(f"number of random architectures must be >= 0, got {k}")
    if not target_ms > 0:
        raise ValueError(f"latency-matched random architectures need a positive target latency, got {target_ms}")
    out: list[Arch] = []
    seen: set[tuple] = set()
    for n in range(draws):
        if len(out) == k:
            break
        arch = sample_random_archs(base, full_depths, 1, candidates=candidates, seed=seed * 1_000_003 + n)[0]
        key = (arch.depths, arch.decoder_ops, arch.scale_ops)
        if key in seen or abs(price(arch) - target_ms) > tolerance * target_ms:
            continue
        seen.add(key)
        out.append(dataclasses.replace(arch, name=f"{name}{len(out)}"))
    if len(out) < k:
        raise ValueError(f"only {len(out)} of {k} random architectures within {100 * tolerance:.0f}% of the table "
                         f"latency {target_ms:.3f} ms after {draws} uniform draws of the space; ask for fewer "
                         "(--random) or widen the space")
    logger.info("latency-matched random architectures: %d within %.0f%% of %.3f ms", k, 100 * tolerance, target_ms)
    return out
