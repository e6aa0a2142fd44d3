"""How many trials run at once, and where: the slots of a search.

A slot is one running trial. On this machine the slots are every chosen GPU
times ``trials_per_gpu``, or one CPU process per core (or ``n_workers``);
each CPU worker gets ``cores // workers`` torch threads. :func:`make_backend`
turns the user's arguments into a started-on-demand backend, after checking
them, so that a bad argument fails before anything runs.
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
    """

    devices: list[str]
    threads_per_worker: int


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
        return [int(g) for g in gpus]
    raise ValueError(f"gpus={gpus!r} is not valid; use {_GPUS_HELP}.")


def _visible_gpus() -> int:
    import torch  # only to count devices; the driver does not train

    return torch.cuda.device_count()


def _gpu_slots(gpus: str | int | list[int], trials_per_gpu: int, available: int) -> list[str]:
    """One device string per slot: every chosen GPU ``trials_per_gpu`` times."""
    if gpus == "all":
        chosen = list(range(available))
    elif isinstance(gpus, int):
        chosen = list(range(gpus))
    else:
        chosen = list(gpus)
    missing = [g for g in chosen if g >= available]
    if missing:
        raise ValueError(f"gpus={gpus!r}: GPU(s) {missing} not available ({available} visible).")
    return [f"cuda:{g}" for g in chosen for _ in range(trials_per_gpu)]


def plan_local_slots(
    n_workers: int | None, gpus: Any, trials_per_gpu: int, *, cores: int | None = None,
    visible_gpus: int | None = None,
) -> SlotPlan:
    """The slots of a search on this machine.

    Parameters
    ----------
    n_workers
        At most this many trials at once (``None``: every GPU slot, or one per core).
    gpus
        See :func:`parse_gpus`. Without a visible GPU the search runs on the CPU.
    trials_per_gpu
        Trials sharing each GPU.
    cores, visible_gpus
        The machine (default: this one's); given by tests.

    Returns
    -------
    SlotPlan
    """
    trials_per_gpu = check_int("trials_per_gpu", trials_per_gpu, low=1)
    n_workers = check_int("n_workers", n_workers, low=1, allow_none=True)
    gpus = parse_gpus(gpus)
    cores = cores if cores is not None else (os.cpu_count() or 1)
    if gpus is not None:
        available = _visible_gpus() if visible_gpus is None else visible_gpus
        if available or gpus != "all":
            devices = _gpu_slots(gpus, trials_per_gpu, available)
            if devices:
                if n_workers is not None:
                    devices = devices[:n_workers]
                return SlotPlan(devices, max(1, cores // len(devices)))
    n = n_workers if n_workers is not None else cores
    return SlotPlan(["cpu"] * n, max(1, cores // n))


def make_backend(
    backend: str | Backend = "local",
    *,
    n_workers: int | None = None,
    gpus: Any = "all",
    trials_per_gpu: int = 1,
    client: Any = None,
    scheduler: str | None = None,
    data_path: str | os.PathLike | None = None,
    passive_threads: bool = False,
) -> Backend:
    """The backend a search runs its trials on, checked (and for Dask, connected) before any work.

    Parameters
    ----------
    backend
        ``"local"`` (worker processes on this machine), ``"dask"`` (a Dask
        cluster: ``client`` or ``scheduler``, and ``data_path`` for data the
        workers read themselves), or an object that implements
        :class:`._backends.Backend`, used as it is.
    n_workers, gpus, trials_per_gpu
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
        plan = plan_local_slots(n_workers, gpus, trials_per_gpu)
        extra_env = {"OMP_WAIT_POLICY": "PASSIVE"} if passive_threads else None
        return LocalPool(plan.devices, plan.threads_per_worker, extra_env)
    from ._dask import DaskBackend

    return DaskBackend.create(client=client, scheduler=scheduler, data_path=data_path, n_workers=n_workers)
