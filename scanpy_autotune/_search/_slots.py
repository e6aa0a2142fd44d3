"""How many trials run at once, and where: the slots of a search.

A slot is one running trial. On this machine the slots are every chosen GPU
times ``trials_per_gpu``, or one CPU process per usable core
(:func:`._cores.usable_cores`, or ``n_workers``); each worker gets
``cores // workers`` torch threads, at most ``OMP_NUM_THREADS``.
:func:`make_backend` turns the user's arguments into a started-on-demand
backend, after checking them, so that a bad argument fails before anything runs.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._validation import check_choice, check_int
from ._backends import Backend
from ._cores import thread_ceiling, usable_cores
from ._gpu_sizing import GPUInfo, auto_trials_per_gpu, describe_gpus

__all__ = ["BACKENDS", "SlotPlan", "make_backend", "parse_gpus", "plan_local_slots"]

logger = logging.getLogger("scanpy_autotune")

BACKENDS = ("local", "dask")
_GPUS_HELP = "'all' (every visible GPU), None or 'none' (CPU only), a number of GPUs, or a list of GPU indices"


@dataclass(frozen=True)
class SlotPlan:
    """The slots of a local search.

    Attributes
    ----------
    devices
        One device per slot (``"cpu"`` or ``"cuda:N"``).
    threads_per_worker
        Torch threads of each CPU worker.
    trials_per_gpu
        Trials sharing each GPU (``None`` on the CPU).
    reason
        What was chosen and why (for ``trials_per_gpu="auto"``: what limited it).
    """

    devices: list[str]
    threads_per_worker: int
    trials_per_gpu: int | None = None
    reason: str = ""


def parse_gpus(gpus: Any) -> str | list[int] | int | None:
    """Check the ``gpus`` argument: ``"all"``, ``None``/``"none"``/``False``/``0``, a count, or indices.

    Returns
    -------
    ``"all"``, ``None`` (CPU only), a positive count, or a list of indices.

    Raises
    ------
    ValueError
        For anything else, with the accepted forms.
    """
    if gpus is None or gpus is False:
        return None
    if isinstance(gpus, str):
        text = gpus.strip().lower()
        if text in ("all", "none"):
            return None if text == "none" else "all"
        raise ValueError(f"gpus={gpus!r} is not valid; use {_GPUS_HELP}.")
    if isinstance(gpus, numbers.Integral) and not isinstance(gpus, bool):
        count = check_int("gpus", gpus, low=0)
        return count or None
    if isinstance(gpus, Sequence) and gpus and all(
        isinstance(g, numbers.Integral) and not isinstance(g, bool) and g >= 0 for g in gpus
    ):
        indices = [int(g) for g in gpus]
        repeated = sorted({g for g in indices if indices.count(g) > 1})
        if repeated:  # each listed index would get its own trials_per_gpu
            raise ValueError(
                f"gpus={gpus!r} names GPU(s) {repeated} more than once; list each GPU once "
                "(trials_per_gpu= sets how many trials share one)."
            )
        return indices
    raise ValueError(f"gpus={gpus!r} is not valid; use {_GPUS_HELP}.")


def _visible_gpus() -> int:
    import torch  # only to count devices; the driver does not train

    return torch.cuda.device_count()


def _chosen_gpus(gpus: str | int | list[int], available: int) -> list[int]:
    """The indices of the GPUs ``gpus`` names, all of them visible."""
    if gpus == "all":
        chosen = list(range(available))
    elif isinstance(gpus, int):
        chosen = list(range(gpus))
    else:
        chosen = list(gpus)
    missing = [g for g in chosen if g >= available]
    if missing:
        raise ValueError(f"gpus={gpus!r}: GPU(s) {missing} not available ({available} visible).")
    return chosen


def plan_local_slots(
    n_workers: int | None, gpus: Any, trials_per_gpu: int | str = "auto", *, cores: int | None = None,
    visible_gpus: int | None = None, gpu_info: list[GPUInfo] | None = None, bytes_per_trial: int = 0,
    max_trials: int | None = None, thread_limit: int | None = None,
) -> SlotPlan:
    """The slots of a search on this machine.

    Parameters
    ----------
    n_workers
        At most this many trials at once (``None``: every GPU slot, or one per core).
    gpus
        See :func:`parse_gpus`. Without a visible GPU the search runs on the CPU.
    trials_per_gpu
        Trials sharing each GPU, or ``"auto"``: as many as the cores can feed
        and the GPU's free memory can hold (:mod:`._gpu_sizing`).
    cores, visible_gpus, gpu_info, thread_limit
        The machine (default: this process's usable cores, this machine's
        GPUs, ``OMP_NUM_THREADS`` as the most threads a worker takes); given by tests.
    bytes_per_trial
        What one trial holds on its GPU (:func:`._gpu_sizing.trial_device_bytes`).
    max_trials
        The search's budget: no more slots than trials (a CPU worker's cores
        go to the slots that run).

    Returns
    -------
    SlotPlan
    """
    if trials_per_gpu != "auto":
        trials_per_gpu = check_int("trials_per_gpu", trials_per_gpu, low=1)
    n_workers = check_int("n_workers", n_workers, low=1, allow_none=True)
    gpus = parse_gpus(gpus)
    cores = cores if cores is not None else usable_cores()
    if gpus is not None:
        available = _visible_gpus() if visible_gpus is None else visible_gpus
        if available or gpus != "all":
            chosen = _chosen_gpus(gpus, available)
            reason = f"{trials_per_gpu} trial(s) per GPU, as asked"
            if trials_per_gpu == "auto":
                info = describe_gpus() if gpu_info is None else gpu_info
                info = [g for g in info if g.index in chosen] or info
                trials_per_gpu, reason = auto_trials_per_gpu(info, cores, bytes_per_trial)
            devices = [f"cuda:{g}" for g in chosen for _ in range(trials_per_gpu)]
            if devices:
                if n_workers is not None:
                    devices = devices[:n_workers]
                if max_trials is not None:
                    devices = devices[:max_trials]
                threads, text = _threads(cores, len(devices), thread_limit)
                return SlotPlan(devices, threads, trials_per_gpu, f"{reason}; {text}")
    n = n_workers if n_workers is not None else cores
    if max_trials is not None:
        n = min(n, max_trials)
    threads, text = _threads(cores, n, thread_limit)
    machine = os.cpu_count() or cores
    of = f" of this machine's {machine}" if machine > cores else ""
    return SlotPlan(["cpu"] * n, threads, reason=f"{n} CPU worker(s) on {cores} usable core(s){of}, {text}")


def _threads(cores: int, workers: int, thread_limit: int | None) -> tuple[int, str]:
    """Torch threads of each worker (the cores shared out, at most ``thread_limit``: ``OMP_NUM_THREADS``), said."""
    shared = max(1, cores // workers)
    limit = thread_ceiling() if thread_limit is None else thread_limit
    threads = min(shared, limit or shared)
    limited = f" (OMP_NUM_THREADS; {shared} without it)" if threads < shared else ""
    return threads, f"{threads} torch thread(s) each{limited}"


def make_backend(
    backend: str | Backend = "local",
    *,
    n_workers: int | None = None,
    gpus: Any = "all",
    trials_per_gpu: int | str = "auto",
    client: Any = None,
    scheduler: str | None = None,
    data_path: str | os.PathLike | None = None,
    passive_threads: bool = False,
    bytes_per_trial: int = 0,
    max_trials: int | None = None,
) -> Backend:
    """The backend a search runs its trials on, checked (and for Dask, connected) before any work.

    Parameters
    ----------
    backend
        ``"local"`` (worker processes on this machine), ``"dask"`` (a Dask
        cluster: ``client`` or ``scheduler``, and ``data_path`` for data the
        workers read themselves), or an object that implements
        :class:`._backends.Backend`, used as it is.
    n_workers, gpus, trials_per_gpu, bytes_per_trial, max_trials
        The slots (:func:`plan_local_slots`; with Dask, ``n_workers`` only).
    passive_threads
        Local workers' idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``)
        instead of spinning. A search that scores integration asks for it: its
        workers also run numba's and XLA's thread pools, and with spinning
        OpenMP threads beside them the trial after a score trained 15-20 times
        slower; with one torch thread per worker (the default on the CPU) it
        changes nothing, and with more on a quiet machine spinning is faster
        (``benchmarks/results/omp_wait.md``).

    Returns
    -------
    Backend
    """
    if not isinstance(backend, str):
        if not isinstance(backend, Backend):
            raise ValueError(f"backend={backend!r}: use one of {list(BACKENDS)}.")
        return backend
    check_choice("backend", backend, BACKENDS)
    if backend == "local":
        from ._local_pool import LocalPool

        for name, value in (("client", client), ("scheduler", scheduler), ("data_path", data_path)):
            if value is not None:
                raise ValueError(f"{name}= is for backend='dask'; the local backend does not use it.")
        plan = plan_local_slots(
            n_workers, gpus, trials_per_gpu, bytes_per_trial=bytes_per_trial, max_trials=max_trials
        )
        logger.info("autotune: %s", plan.reason)
        extra_env = {"OMP_WAIT_POLICY": "PASSIVE"} if passive_threads else None
        pool = LocalPool(plan.devices, plan.threads_per_worker, extra_env)
        pool.trials_per_gpu = plan.trials_per_gpu
        return pool
    if gpus != "all" or trials_per_gpu != "auto":
        raise ValueError(
            "gpus= and trials_per_gpu= are for the local backend; on a Dask cluster each trial takes one of "
            "the workers' GPU resources (dask worker --resources GPU=1 per GPU), or a thread without them."
        )
    from ._dask import DaskBackend

    return DaskBackend.create(client=client, scheduler=scheduler, data_path=data_path, n_workers=n_workers)
