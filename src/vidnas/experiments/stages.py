"""The independent stages of an experiment, side by side: ``jobs`` processes at a time, ``threads`` torch threads each.

Once their architectures are known, the trainings of the demo or a sweep (the baseline, each searched model, the
per-frame references, the uniform random architectures) do not depend on each other, and every one is seeded. Run in
separate processes they give the same weights and scores as one after the other (tests/test_demo.py compares the two)
in about ``1 / jobs`` of the time on a machine with ``jobs`` idle cores. The interleaved benchmark still runs
afterwards, alone, so the FPS columns are unaffected; the ``train_s`` / ``search_s`` columns are then wall times of
stages that shared the machine.

With ``jobs == 1`` every stage runs in this process when submitted, in submission order, with its progress bars: the
sequential behaviour of before.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from typing import Any, TypeVar

import torch

__all__ = ["default_jobs", "Stages"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_AUTO_JOBS = 4  # more processes than this rarely pay: the stages of one experiment are few


def default_jobs(threads: int = 1) -> int:
    """Stages to run at once by default: the cores this process may use over the threads each stage takes, at least
    1 and at most ``MAX_AUTO_JOBS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_AUTO_JOBS, cores // max(1, threads)))


def _init_worker(threads: int, level: int) -> None:
    torch.set_num_threads(threads)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _timed(fn: Callable[..., T], args: tuple, kwargs: dict) -> tuple[T, float]:
    t0 = time.perf_counter()
    return fn(*args, **kwargs), time.perf_counter() - t0


class Stages:
    """Submit stages (module-level functions with picklable arguments and result), read their futures.

    Args:
        jobs: stages at once (1: in this process, one after the other).
        threads: torch intra-op threads of each worker process (default: this process's).
        progress: called with a line when a stage starts (``jobs == 1``) or is queued, and when it ends.

    Use as a context manager: leaving it waits for the submitted stages; an error cancels those not started.
    In worker processes the stages get ``show_progress=False`` and ``progress=None`` where they take them (bars of
    several processes would overwrite one another).
    """

    def __init__(self, jobs: int, *, threads: int | None = None, progress: Callable[[str], None] | None = None):
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.jobs = jobs
        self.progress = progress
        self._pool: ProcessPoolExecutor | None = None
        if jobs > 1:
            # forkserver: a fresh interpreter imports vidnas once, then forks every worker from it (spawn would
            # import it in each worker; fork would copy this process's threads' state)
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["vidnas.experiments.candidates"])
            self._pool = ProcessPoolExecutor(
                max_workers=jobs, mp_context=context, initializer=_init_worker,
                initargs=(threads or torch.get_num_threads(), logging.getLogger("vidnas").getEffectiveLevel()))

    def _say(self, line: str) -> None:
        if self.progress is not None:
            self.progress(line)

    def submit(self, label: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` as the stage ``label``; its future holds the result (or raises its error)."""
        if self._pool is None:
            self._say(label)
            future: Future[T] = Future()
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as e:
                future.set_exception(e)
                raise
            return future
        for key, quiet in (("show_progress", False), ("progress", None)):
            if key in kwargs:
                kwargs[key] = quiet
        self._say(f"{label} (queued, {self.jobs} at a time)")
        timed = self._pool.submit(_timed, fn, args, kwargs)
        future = Future()

        def done(f: Future) -> None:
            if f.cancelled():
                future.set_exception(CancelledError(f"{label}: cancelled after another stage failed"))
                return
            if (error := f.exception()) is not None:
                future.set_exception(error)
                return
            result, seconds = f.result()
            self._say(f"finished in {seconds:.0f} s: {label}")
            future.set_result(result)

        future.set_running_or_notify_cancel()
        timed.add_done_callback(done)
        return future

    def close(self, *, cancel: bool = False) -> None:
        """Wait for the submitted stages; ``cancel``: drop those not started and stop the running ones (each stage
        is resumable from its checkpoints, so a later run with ``resume`` continues it)."""
        if self._pool is not None:
            if cancel:  # ProcessPoolExecutor has no public way to stop a running task (Python 3.14 adds one)
                for proc in list(getattr(self._pool, "_processes", {}).values()):
                    proc.terminate()
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None

    def __enter__(self) -> Stages:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close(cancel=exc_type is not None)
