"""Parallel evaluation of sampled cells: in-process, local worker processes, or a Ray cluster.

Every executor has the same interface: ``run(jobs)`` yields one ``CandidateResult`` per ``CandidateJob`` as soon as it
finishes (in completion order), and ``close()`` releases the workers. The cached static outputs (``FeatureCache`` of
meta-train and meta-val) and the ``CostMeter`` (the static network that candidates are timed against; optional) are
handed to each worker once, when it starts, never per candidate.

* ``InlineExecutor`` (``workers=0``): runs candidates one after the other in this process (debugging, tiny runs).
* ``LocalExecutor`` (default): a ``concurrent.futures.ProcessPoolExecutor`` with the ``spawn`` start method (safe with
  torch's threads) and ``workers`` processes, each using ``max(1, cores // workers)`` torch threads. A memory cache
  reaches the workers through torch's shared memory (no copy per worker); a disk cache as a list of shard paths.
* ``RayExecutor`` (``--executor ray``, optional extra ``vidnas[ray]``): one Ray actor per worker, each holding the cache
  (put into the object store once). Connects to ``address`` (an existing cluster; a disk cache must then be on a file
  system every node sees) or starts a local Ray with ``workers`` CPUs.

Failures: an exception inside a candidate is caught by ``evaluate_candidate`` and comes back as a failed result with the
error text. A worker process that dies (segfault, out of memory) fails the candidates it was running; the local pool
is then rebuilt and a dead Ray actor replaced, so the search goes on. Local workers die with the search process, even
when it is killed with SIGKILL (``die_with_parent``): no orphan holds memory after a crash.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import ctypes
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch

from vidnas.search.cells.cache import FeatureCache
from vidnas.search.cells.cost import CostMeter
from vidnas.search.cells.evaluate import CandidateJob, CandidateResult, evaluate_candidate

__all__ = [
    "EXECUTORS",
    "Executor",
    "ExecutorError",
    "InlineExecutor",
    "LocalExecutor",
    "RayExecutor",
    "make_executor",
    "available_cores",
    "import_ray",
    "die_with_parent",
]

logger = logging.getLogger(__name__)

EXECUTORS: tuple[str, ...] = ("local", "ray")

# the caches and cost meter of this worker process (set once by the pool initializer)
_WORKER_CACHES: tuple[FeatureCache, FeatureCache, CostMeter | None] | None = None


class ExecutorError(RuntimeError):
    """An executor cannot be created (unknown name, missing optional dependency, bad worker count)."""


class Executor(Protocol):
    def run(self, jobs: Sequence[CandidateJob]) -> Iterator[CandidateResult]: ...

    def close(self) -> None: ...


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _threads_per_worker(workers: int) -> int:
    """``cores // workers`` torch threads each, and no more than this process uses (``--threads``), so workers x
    threads never exceeds the cores (oversubscribed timings are meaningless)."""
    return max(1, min(torch.get_num_threads(), available_cores() // max(1, workers)))


class InlineExecutor:
    """Evaluates candidates sequentially in this process."""

    def __init__(self, train_cache: FeatureCache, val_cache: FeatureCache, meter: CostMeter | None = None) -> None:
        self.caches = (train_cache, val_cache, meter)

    def run(self, jobs: Sequence[CandidateJob]) -> Iterator[CandidateResult]:
        for job in jobs:
            yield evaluate_candidate(job, *self.caches)

    def close(self) -> None:
        pass


def _fast_exit() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def die_with_parent(parent_pid: int) -> None:
    """Make this worker process end when its parent does, however the parent ends (SIGKILL included).

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``. Everywhere (and for the window before the prctl call, when the parent
    may already be gone): a daemon thread that checks every second whether the parent is still this process's parent.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl: the watchdog below still works
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(1.0)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="vidnas-parent-watch", daemon=True).start()


def _init_worker(train_cache: FeatureCache, val_cache: FeatureCache, threads: int, parent_pid: int,
                 meter: CostMeter | None = None) -> None:
    global _WORKER_CACHES
    die_with_parent(parent_pid)
    torch.set_num_threads(threads)
    _WORKER_CACHES = (train_cache, val_cache, meter)
    # A spawned worker ends with a full interpreter shutdown, which takes seconds after importing torch and timm.
    # Its results are already delivered (the pool's result queue is synchronous), so skip the teardown: atexit
    # handlers run last-registered first, and this one ends the process.
    atexit.register(_fast_exit)


def _run_in_worker(job: CandidateJob) -> CandidateResult:
    if _WORKER_CACHES is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("worker started without its feature caches")
    return evaluate_candidate(job, *_WORKER_CACHES)


class LocalExecutor:
    """``workers`` spawned processes on this machine.

    Args:
        train_cache: meta-train cache.
        val_cache: meta-val cache.
        workers: processes (>= 1).
        threads: torch threads per worker (default ``max(1, cores // workers)``).
        meter: the cost meter (None = no cost measurement).
    """

    def __init__(self, train_cache: FeatureCache, val_cache: FeatureCache, *, workers: int,
                 threads: int | None = None, meter: CostMeter | None = None) -> None:
        if workers < 1:
            raise ExecutorError(f"the local executor needs workers >= 1, got {workers} (0 runs in-process)")
        self.workers = workers
        self.threads = threads or _threads_per_worker(workers)
        self._initargs = (train_cache, val_cache, self.threads, os.getpid(), meter)
        self._pool: cf.ProcessPoolExecutor | None = None
        logger.info("local executor: %d worker processes x %d torch threads", workers, self.threads)

    def _get_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                                initializer=_init_worker, initargs=self._initargs)
        return self._pool

    def run(self, jobs: Sequence[CandidateJob]) -> Iterator[CandidateResult]:
        pool = self._get_pool()
        futures = {pool.submit(_run_in_worker, job): job for job in jobs}
        broken = False
        for fut in cf.as_completed(futures):
            job = futures[fut]
            try:
                yield fut.result()
            except Exception as e:  # the worker process died (BrokenProcessPool) or could not unpickle the job
                broken = broken or isinstance(e, cf.process.BrokenProcessPool)
                logger.warning("candidate %d: worker failed: %s", job.cid, e)
                yield CandidateResult.failure(job, f"{type(e).__name__}: {e} (the worker process failed)")
        if broken:  # a dead worker breaks the whole pool: start a fresh one for the next batch
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def import_ray() -> Any:
    """The ``ray`` module, or an ``ExecutorError`` naming the optional extra that provides it."""
    try:
        import ray
    except ImportError as e:
        raise ExecutorError(
            "--executor ray needs Ray, an optional dependency: install it with `pip install 'vidnas[ray]'` "
            "(or use the default --executor local)"
        ) from e
    return ray


class _RayWorker:
    """Body of a Ray actor: holds the caches, runs candidates."""

    def __init__(self, caches: tuple[FeatureCache, FeatureCache, CostMeter | None], threads: int) -> None:
        torch.set_num_threads(threads)
        self.caches = caches

    def run(self, job: CandidateJob) -> CandidateResult:
        return evaluate_candidate(job, *self.caches)


class RayExecutor:
    """One Ray actor per worker, each holding the caches.

    Args:
        train_cache: meta-train cache.
        val_cache: meta-val cache.
        workers: actors (>= 1).
        address: an existing Ray cluster (``"auto"``, ``"ray://host:10001"``); None starts a local Ray with
            ``workers`` CPUs unless Ray is already initialised in this process.
        threads: torch threads per actor (default ``max(1, cores // workers)`` of this machine).
        meter: the cost meter (None = no cost measurement); it times on the actor's machine.
    """

    def __init__(self, train_cache: FeatureCache, val_cache: FeatureCache, *, workers: int,
                 address: str | None = None, threads: int | None = None, meter: CostMeter | None = None) -> None:
        ray = import_ray()
        if workers < 1:
            raise ExecutorError(f"the ray executor needs workers >= 1, got {workers}")
        self.ray = ray
        self.workers = workers
        self.threads = threads or _threads_per_worker(workers)
        self._started = False
        if not ray.is_initialized():
            if address is None:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
            self._started = True
        self._caches_ref = ray.put((train_cache, val_cache, meter))
        self._actor_cls = ray.remote(num_cpus=1)(_RayWorker)
        self._actors = [self._new_actor() for _ in range(workers)]
        logger.info("ray executor: %d actors x %d torch threads", workers, self.threads)

    def _new_actor(self) -> Any:
        return self._actor_cls.remote(self._caches_ref, self.threads)

    def run(self, jobs: Sequence[CandidateJob]) -> Iterator[CandidateResult]:
        ray = self.ray
        queue = list(jobs)
        idle = list(range(len(self._actors)))
        in_flight: dict[Any, tuple[CandidateJob, int]] = {}
        while queue or in_flight:
            while queue and idle:
                slot = idle.pop(0)
                job = queue.pop(0)
                in_flight[self._actors[slot].run.remote(job)] = (job, slot)
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                job, slot = in_flight.pop(ref)
                try:
                    yield ray.get(ref)
                except Exception as e:  # RayActorError (the actor died) or a task error
                    logger.warning("candidate %d: ray worker failed: %s", job.cid, e)
                    yield CandidateResult.failure(job, f"{type(e).__name__}: {e} (the ray worker failed)")
                    if isinstance(e, ray.exceptions.RayActorError):
                        self._actors[slot] = self._new_actor()
                idle.append(slot)

    def close(self) -> None:
        for a in self._actors:
            try:
                self.ray.kill(a)
            except Exception:  # pragma: no cover - already dead
                pass
        self._actors = []
        if self._started:
            self.ray.shutdown()


def make_executor(kind: str, train_cache: FeatureCache, val_cache: FeatureCache, *, workers: int,
                  address: str | None = None, meter: CostMeter | None = None,
                  threads: int | None = None) -> Executor:
    """``local`` (``workers=0`` runs in-process) or ``ray``; an unknown name lists the valid ones. ``threads``:
    torch threads per worker (None: cores / workers)."""
    if kind == "local":
        if workers == 0:
            return InlineExecutor(train_cache, val_cache, meter)
        return LocalExecutor(train_cache, val_cache, workers=workers, meter=meter, threads=threads)
    if kind == "ray":
        return RayExecutor(train_cache, val_cache, workers=max(1, workers), address=address, meter=meter,
                           threads=threads)
    raise ExecutorError(f"unknown executor {kind!r}; valid executors: {', '.join(EXECUTORS)}")
