"""Trials as tasks on a Dask cluster (``distributed``): :class:`DaskBackend`.

The driver (the process that calls :func:`scanpy_autotune.tl.autotune`) keeps
TPE, the pruner and the journal; each trial is one Dask task. The backend is a
:class:`.._backends.Backend` (``start``, ``free_slots``, ``submit``,
``answer``, ``poll``, ``shutdown``), so :func:`.._runner.run_trials` drives it
as it drives the local pool, and the completion order of the tasks drives the
next ask.

Data
    The :class:`.._context.TrialContext` is scattered to one worker and
    published under a per-search name that also names the driver (a later
    search removes what a killed driver left there). With
    ``data_path=`` the workers read the ``.h5ad`` themselves from shared
    storage (checked against the driver's fingerprint) and only a light
    context (split and settings) is scattered. A task carries only a small
    reference: each worker fetches the payload on its first trial and keeps
    the context and its device tensors in its per-worker state (a
    ``distributed.WorkerPlugin``, see :mod:`._worker`), so the data reaches a
    worker once however many trials it runs (the tasks do not depend on the
    scattered key, which Dask's active memory manager would otherwise reduce
    to one replica and ship again per trial). If the worker holding the
    payload dies, the driver scatters it again; a send that fails as workers
    die or restart is tried again for a minute. Not ``broadcast=True``: the
    scheduler's replication retries a worker that died under it without end.
Slots
    Workers that declare a ``GPU`` resource (``dask worker ... --resources
    GPU=1``) run one trial per unit of it, on ``"cuda"``; otherwise every
    worker thread is a slot and trials run on the CPU. A worker that declares
    a GPU on which torch sees none is named in a warning at the start.
Rungs
    At a pruning rung the task puts ``["report", trial_id, n_epochs, value,
    reply]`` on the search's report queue (a ``distributed.Queue``) and waits
    for the decision on its own reply queue. Only at rung epochs.
Faults
    Each attempt of a trial registers on a per-trial attempts queue, so a trial
    runs at most twice, whoever restarts it (the scheduler after a worker
    died, or the driver after a ``KilledWorker``). A trial whose second attempt
    is lost too becomes a failed record (``WorkerDied: ...``); a trial gives
    at most one record (events are guarded by trial id).

Modules: :mod:`._driver` (:class:`DaskBackend`), :mod:`._cluster` (reaching
the cluster and the housekeeping around a search), :mod:`._worker` (what runs in
the workers), :mod:`._protocol` (the payload and the names both sides use),
:mod:`._client` (a repair both sides' clients need).

``distributed`` is imported lazily: this package imports without it, and
:meth:`DaskBackend.create` raises an :class:`ImportError` naming
the ``dask`` extra (``pip install -e ".[dask]"`` in a clone).
"""

from ._client import clear_stale_gather
from ._cluster import EXTRA_HINT, import_distributed
from ._driver import DaskBackend

__all__ = ["EXTRA_HINT", "DaskBackend", "clear_stale_gather", "import_distributed"]
