"""Trials as tasks on a Dask cluster (``distributed``): :class:`DaskBackend`.

The driver (the process that calls :func:`scanpy_autotune.tl.autotune`) keeps
TPE, the pruner and the journal; each trial is one Dask task. The backend has
the interface of :class:`._backends.LocalPool` (``start``, ``free_slots``,
``submit``, ``answer``, ``poll``, ``shutdown``), so :func:`._runner.run_search`
drives both the same way, and the completion order of the tasks drives the
next ask.

Data
    The :class:`._context.TrialContext` is scattered to every worker once
    (``broadcast=True``) and published under a per-search name. With
    ``data_path=`` the workers read the ``.h5ad`` themselves from shared
    storage (checked against the driver's fingerprint) and only a light
    context (split and settings) is scattered. A task carries only a small
    reference: each worker process fetches the payload on its first trial and
    keeps the context and its device tensors in a module-level cache, so the
    data reaches a worker once however many trials it runs (the tasks do not
    depend on the scattered key, which Dask's active memory manager would
    otherwise reduce to one replica and ship again per trial). If every
    worker holding the payload dies, the driver scatters it again.
Slots
    Workers that declare a ``GPU`` resource (``dask worker ... --resources
    GPU=1``) run one trial per unit of it, on ``"cuda"``; otherwise every
    worker thread is a slot and trials run on the CPU.
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

``distributed`` is imported lazily: without it, :meth:`DaskBackend.create`
raises an :class:`ImportError` naming ``pip install scanpy-autotune[dask]``.
"""

from __future__ import annotations

import logging
import numbers
import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from ._backends import Event
from ._context import TrialContext

logger = logging.getLogger("scanpy_autotune")

EXTRA_HINT = "pip install scanpy-autotune[dask]"
# How many times one trial may start (the first run and one retry).
MAX_ATTEMPTS = 2
# How long the driver waits for workers to join a cluster without any.
WAIT_FOR_WORKERS_S = 30.0
# Seconds between two looks at the queues (rung decisions; they are rare).
QUEUE_POLL_S = 0.1
# Periodic callbacks of a Dask worker that wake its event loop every 10-20 ms: the
# statistical profiler and the event-loop tick monitor. Each wake-up takes the GIL
# from the thread that trains, whose small tensor operations release and retake it
# constantly; they are paused on the workers while a search runs, then resumed.
PAUSED_CALLBACKS = ("profile", "profile-cycle", "tick")
# Contexts (searches) a worker process keeps in memory.
_KEEP_CONTEXTS = 2
# How long a worker tries to fetch the search's data (the driver re-sends it after a loss).
FETCH_TIMEOUT_S = 120.0
FETCH_TRY_S = 5.0
# How long the driver keeps trying to send the search's data again after its workers died.
RESEND_PAYLOAD_S = 60.0


def import_distributed() -> Any:
    """Import ``distributed``, or fail with the name of the extra that installs it.

    Raises
    ------
    ImportError
        When ``distributed`` is not installed.
    """
    try:
        import distributed
    except ImportError as err:
        raise ImportError(
            "backend='dask' needs the optional dependency 'distributed' (Dask): "
            f"{EXTRA_HINT}"
        ) from err
    return distributed


# ---------------------------------------------------------------------------
# The worker side: module-level functions that Dask runs in its workers
# ---------------------------------------------------------------------------


@dataclass
class _Payload:
    """What each worker process needs once per search (sent by Dask's ``scatter``)."""

    context_id: str
    context: TrialContext  # without data when the workers read ``data_path``
    data_path: str | None
    fingerprint: str


@dataclass(frozen=True)
class _PayloadRef:
    """What each task carries instead of the payload: where to get it the first time."""

    context_id: str
    dataset: str  # name under which the driver published the scattered payload
    prefix: str  # of the search's queue names


_CONTEXTS: OrderedDict[str, TrialContext] = OrderedDict()
_FORGOTTEN: set[str] = set()  # searches that ended: their contexts are dropped, never cached again
_LOCK = threading.Lock()
_PROCESS_SET = {"done": False}  # threads and allocator set up
_FETCHES = {"n": 0}  # payloads this worker process fetched (see fetch_count)


def _worker_context(ref: _PayloadRef, key: str | None = None) -> TrialContext:
    """The search's context in this worker process: fetched on first use, then cached.

    The tasks do not take the scattered payload as a dependency: Dask's active
    memory manager drops the replicas of a broadcast that no queued task needs,
    so the payload would travel again to a worker for a later trial. Here each
    worker process fetches it once and keeps it for every trial of the search.
    """
    with _LOCK:
        _drop_forgotten()
        context = _CONTEXTS.get(ref.context_id)
        if context is None:
            _refuse_forgotten(ref.context_id)
            payload = _fetch_payload(ref, key)
            context = payload.context
            if payload.data_path is not None:
                context = replace(context, data=_read_counts(payload), _counts={})
            _refuse_forgotten(ref.context_id)  # the search may have ended during the fetch
            _CONTEXTS[ref.context_id] = context
            while len(_CONTEXTS) > _KEEP_CONTEXTS:
                _CONTEXTS.popitem(last=False)
        else:
            _CONTEXTS.move_to_end(ref.context_id)
        return context


def clear_stale_gather(client: Any) -> None:
    """Undo the state a cancelled gather can leave in a ``distributed.Client``.

    A gather cancelled in a narrow window (Ctrl-C during ``future.result()``,
    or the timeout of ``result(timeout=...)``) leaves the client's shared
    ``_gather_future`` set to a cancelled future. Every later gather of that
    client awaits it and fails with ``UnboundLocalError: cannot access local
    variable 'result'`` (dask/distributed#8514). A done future left there is
    always stale (a live gather clears it as it starts), so it is dropped.
    """
    pending = getattr(client, "_gather_future", None)
    if pending is not None and pending.done():
        logger.debug("dask: dropping the client's stale gather (dask/distributed#8514)")
        client._gather_future = None


def _fetch_payload(ref: _PayloadRef, key: str | None = None) -> _Payload:
    """Get the published payload; waits while the driver sends it again after a loss.

    Gives up at once when the search has ended (the name is no longer
    published) or the task ``key`` was cancelled.
    """
    from distributed import get_client

    client = get_client()
    _FETCHES["n"] += 1
    deadline = time.monotonic() + FETCH_TIMEOUT_S
    while True:
        try:
            published = client.get_dataset(ref.dataset)
        except KeyError as err:
            raise _search_ended(ref.context_id) from err
        try:
            clear_stale_gather(client)
            return published.result(timeout=FETCH_TRY_S)
        except Exception as err:  # lost with its worker (a timeout): the driver sends it again
            if time.monotonic() > deadline or (key is not None and _task_cancelled(key)):
                raise RuntimeError(
                    f"could not fetch the search's data from the cluster: {type(err).__name__}: {err}"
                ) from err
            time.sleep(QUEUE_POLL_S)


def _task_cancelled(key: str) -> bool:
    """Whether the scheduler released the task ``key`` running in this worker (cancelled)."""
    from distributed import get_worker

    task = get_worker().state.tasks.get(key)
    return task is None or task.state in ("cancelled", "released", "forgotten")


def _read_counts(payload: _Payload):
    """Read and validate the counts of ``data_path``; they must be the driver's counts."""
    import anndata as ad

    from .._vae._data import extract_counts

    context = payload.context
    adata = ad.read_h5ad(payload.data_path)
    data = extract_counts(adata, layer=context.layer, batch_key=context.batch_key)
    found = data.fingerprint()
    if found != payload.fingerprint:
        raise ValueError(
            f"data_path={payload.data_path!r} does not hold the counts the search was started "
            f"with (fingerprint {found} on the worker, {payload.fingerprint} on the driver)."
        )
    return data


def fetch_count() -> int:
    """How many times this worker process fetched a search's data (``client.run(fetch_count)``)."""
    return _FETCHES["n"]


def _pause_callbacks(dask_worker: Any) -> list[str]:
    """Stop this worker's :data:`PAUSED_CALLBACKS` that are running; returns their names (``client.run``)."""
    paused = []
    for name in PAUSED_CALLBACKS:
        callback = dask_worker.periodic_callbacks.get(name)
        if callback is not None and callback.is_running():
            callback.stop()
            paused.append(name)
    return paused


def _resume_callbacks(paused: dict[str, list[str]], dask_worker: Any) -> None:
    """Start again the callbacks :func:`_pause_callbacks` stopped on this worker (``client.run``)."""
    for name in paused.get(dask_worker.address, []):
        callback = dask_worker.periodic_callbacks.get(name)
        if callback is not None and not callback.is_running():
            callback.start()


def _forget_context(context_id: str) -> None:
    """Drop a finished search's context from this worker process (run by ``client.run``).

    ``client.run`` calls this on the worker's event loop, so it must not wait
    for :data:`_LOCK`: a task thread may hold it while it fetches the payload,
    and the fetch needs that loop (a deadlock, seen when a restarted task was
    still fetching as the search ended). The search is marked as ended here;
    the context is dropped now if the lock is free, else by the lock's holder.
    """
    _FORGOTTEN.add(context_id)
    if _LOCK.acquire(blocking=False):
        try:
            _drop_forgotten()
        finally:
            _LOCK.release()


def _drop_forgotten() -> None:
    """Drop the contexts of ended searches from the cache (call with :data:`_LOCK` held)."""
    for context_id in list(_FORGOTTEN):
        _CONTEXTS.pop(context_id, None)


def _refuse_forgotten(context_id: str) -> None:
    """Raise when the search ``context_id`` has ended: its context must not be fetched or cached."""
    if context_id in _FORGOTTEN:
        raise _search_ended(context_id)


def _search_ended(context_id: str) -> RuntimeError:
    """The error of a task whose search has ended (unpublished or forgotten on this worker)."""
    return RuntimeError(f"the search {context_id} has ended on the driver")


def _prepare_worker(ref: _PayloadRef) -> str:
    """Load the search's data into this worker's cache; returns the worker's address."""
    from distributed import get_worker

    _worker_context(ref)
    return get_worker().address


def _worker_device() -> str:
    """``"cuda"`` on a worker with a ``GPU`` resource and a visible GPU, else ``"cpu"``.

    On first use it also sets torch's threads to the worker's threads divided by
    the trials it runs at once (its ``GPU`` units, or one per thread on the CPU),
    and undoes the malloc thresholds that Dask's nanny sets (see :mod:`._allocator`).
    """
    import torch
    from distributed import get_worker

    from ._allocator import restore_dynamic_thresholds

    state = get_worker().state
    gpus = float(state.total_resources.get("GPU", 0))
    with _LOCK:
        if not _PROCESS_SET["done"]:
            concurrent = int(gpus) if gpus >= 1 else state.nthreads
            torch.set_num_threads(max(1, state.nthreads // max(1, concurrent)))
            restore_dynamic_thresholds()
            _PROCESS_SET["done"] = True
    return "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"


class _QueueLink:
    """The connection a :class:`._worker.RungReporter` talks through, made of Dask queues.

    ``send`` puts a rung report on the search's report queue, with the name of
    this attempt's reply queue; ``recv`` waits for the driver's decision there.
    A task that was cancelled (the driver stopped or went away) stops its trial.
    """

    def __init__(self, prefix: str, trial_id: int, attempt: int, key: str) -> None:
        self.prefix, self.trial_id, self.key = prefix, trial_id, key
        self.reply_name = f"{prefix}-reply-{trial_id}-{attempt}"
        self._reports = None
        self._reply = None
        self.cancelled = False

    def send(self, message: tuple) -> None:
        from distributed import Queue

        if self._reply is None:
            self._reply = Queue(self.reply_name)  # exists before the driver answers
            self._reports = Queue(f"{self.prefix}-reports")
        self._reports.put([*message, self.reply_name])

    def recv(self) -> bool:
        while True:
            answers = self._reply.get(batch=True)
            if answers:
                return bool(answers[-1])
            if self.is_cancelled():
                return True
            time.sleep(QUEUE_POLL_S)

    def is_cancelled(self) -> bool:
        """Whether the scheduler released this task (cancelled by the driver)."""
        if not self.cancelled:
            self.cancelled = _task_cancelled(self.key)
        return self.cancelled

    def close(self) -> None:
        for queue in (self._reply, self._reports):
            if queue is not None:
                try:
                    queue.close()
                except Exception:  # the scheduler may be gone already
                    pass


def _count_attempt(prefix: str, trial_id: int) -> int:
    """Register one start of ``trial_id``; returns how many starts there were, this one included."""
    from distributed import Queue

    attempts = Queue(f"{prefix}-attempts-{trial_id}")
    try:
        attempts.put(1)
        return int(attempts.qsize())
    finally:
        attempts.close()


def _run_trial(ref: _PayloadRef, trial_id: int, params: dict, rungs: list[int], key: str) -> tuple:
    """One trial as a Dask task.

    Returns
    -------
    tuple
        ``("done", trial_id, record, model)``; ``("exhausted", trial_id, attempt)``
        when this is a start beyond :data:`MAX_ATTEMPTS` (earlier attempts died
        with their workers); ``("cancelled", trial_id)`` when the driver
        stopped the search while the trial ran.
    """
    from ._objective import evaluate_trial
    from ._worker import RungReporter

    attempt = _count_attempt(ref.prefix, trial_id)
    if attempt > MAX_ATTEMPTS:
        return ("exhausted", trial_id, attempt)
    device = _worker_device()
    context = _worker_context(ref, key)
    with _LOCK:  # threads of one worker build the device tensors once
        context.counts(device)
    link = _QueueLink(ref.prefix, trial_id, attempt, key)
    rung_reporter = RungReporter(link, trial_id, rungs)

    def reporter(epoch: int, train_elbo: float, validation_elbo: float) -> bool:
        if link.is_cancelled():
            return True
        return rung_reporter(epoch, train_elbo, validation_elbo)

    try:
        record, model = evaluate_trial(context, trial_id, params, device, reporter)
    finally:
        link.close()
    if link.cancelled:
        return ("cancelled", trial_id)
    return ("done", trial_id, record, model)


# ---------------------------------------------------------------------------
# The driver side
# ---------------------------------------------------------------------------


def _workers_info(client: Any) -> dict:
    """Address -> info (``nthreads``, ``resources``) of every worker of the cluster."""
    try:
        info = client.scheduler_info(n_workers=-1)  # newer distributed lists 5 by default
    except TypeError:  # older distributed lists all of them and has no n_workers
        info = client.scheduler_info()
    return info["workers"]


@dataclass
class _Running:
    """A trial the backend runs: its current future and how it was submitted."""

    future: Any
    params: dict
    rungs: list[int]
    attempts: Any  # the driver's handle on the trial's attempts queue (keeps it alive)
    submissions: int = 1
    reply: str | None = None  # reply queue of the attempt waiting at a rung


class DaskBackend:
    """Trials as tasks on a Dask cluster, with the interface of :class:`._backends.LocalPool`.

    Use :meth:`create`, which validates the arguments and connects before any
    training.

    Parameters
    ----------
    client
        A synchronous ``distributed.Client``.
    own_client
        Whether this backend created ``client`` (and closes it at shutdown).
    data_path
        ``.h5ad`` the workers read themselves instead of receiving the counts.
    n_workers
        Parallel trials; default: the cluster's ``GPU`` resources, or its threads.
    """

    name = "dask"

    def __init__(
        self,
        client: Any,
        *,
        own_client: bool = False,
        data_path: str | None = None,
        n_workers: int | None = None,
    ) -> None:
        self.client = client
        self.own_client = own_client
        self.data_path = data_path
        workers = _workers_info(client)
        gpus = sum(float(w.get("resources", {}).get("GPU", 0)) for w in workers.values())
        threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
        self.resources = {"GPU": 1} if gpus > 0 else None
        self.device = "cuda" if gpus > 0 else "cpu"
        capacity = int(gpus) if gpus > 0 else threads
        self._n_slots = int(n_workers) if n_workers is not None else max(1, capacity)
        if n_workers is not None and n_workers > capacity:
            logger.warning(
                "n_workers=%d but the Dask cluster has room for %d trial(s) at once; "
                "the others wait for a free worker", n_workers, capacity,
            )
        self._running: dict[int, _Running] = {}
        self._ended: set[int] = set()
        self._payload: _Payload | None = None
        self._payload_future: Any = None
        self._ref: _PayloadRef | None = None
        self._reports: Any = None
        self._prefix = ""
        self._paused: dict[str, list[str]] = {}  # worker address -> callbacks paused there

    # -- construction ------------------------------------------------------------

    @classmethod
    def create(
        cls,
        client: Any = None,
        scheduler: str | None = None,
        data_path: str | os.PathLike | None = None,
        n_workers: int | None = None,
    ) -> DaskBackend:
        """Check the arguments, connect to the cluster and count its slots.

        Parameters
        ----------
        client
            A ``distributed.Client`` (left open at the end).
        scheduler
            A scheduler address such as ``"tcp://10.0.0.1:8786"`` (a client is
            created, and closed at the end).
        data_path
            An ``.h5ad`` on storage the workers share, which they read
            themselves; it must hold the same counts as the ``adata`` searched.
        n_workers
            Parallel trials (default: one per ``GPU`` resource, or per worker thread).

        Returns
        -------
        DaskBackend

        Raises
        ------
        ImportError
            Without ``distributed`` (``pip install scanpy-autotune[dask]``).
        ValueError
            Without a client or a scheduler, with both, with a bad argument,
            when the scheduler cannot be reached or the cluster has no workers.
        """
        distributed = import_distributed()
        if client is None and scheduler is None:
            raise ValueError(
                "backend='dask' needs a cluster: pass client=distributed.Client(...) or "
                "scheduler='tcp://HOST:8786'."
            )
        if client is not None and scheduler is not None:
            raise ValueError("backend='dask': pass either client= or scheduler=, not both.")
        if n_workers is not None and (
            isinstance(n_workers, bool) or not isinstance(n_workers, numbers.Integral)
            or n_workers < 1
        ):
            raise ValueError(f"n_workers={n_workers!r} must be an integer >= 1.")
        if data_path is not None:
            data_path = os.fspath(data_path)
            if not os.path.isfile(data_path):
                raise ValueError(
                    f"data_path={data_path!r} is not a file; it must be an .h5ad on storage "
                    "that the driver and the workers share."
                )
        own = False
        if client is None:
            if not isinstance(scheduler, str) or not scheduler:
                raise ValueError(f"scheduler={scheduler!r} must be an address like 'tcp://HOST:8786'.")
            try:
                client = distributed.Client(scheduler, set_as_default=False)
            except (OSError, TimeoutError) as err:
                raise ValueError(f"cannot connect to the Dask scheduler at {scheduler!r}: {err}") from err
            own = True
        elif not isinstance(client, distributed.Client):
            raise ValueError(f"client must be a distributed.Client, got {type(client).__name__}.")
        if client.asynchronous:
            raise ValueError("backend='dask' needs a synchronous distributed.Client.")
        try:
            if not _workers_info(client):
                client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
            return cls(client, own_client=own, data_path=data_path, n_workers=n_workers)
        except (OSError, TimeoutError) as err:
            if own:
                client.close()
            raise ValueError(
                f"the Dask cluster has no workers (waited {WAIT_FOR_WORKERS_S:.0f} s): {err}"
            ) from err

    # -- the pool interface ------------------------------------------------------

    @property
    def n_slots(self) -> int:
        return self._n_slots

    def start(self, context: TrialContext) -> None:
        """Send the trial context to every worker once (or have them read ``data_path``)."""
        from distributed import Queue

        clear_stale_gather(self.client)  # an earlier search may have been stopped by Ctrl-C
        search_id = uuid.uuid4().hex[:12]
        self._prefix = f"scanpy-autotune-{search_id}"
        fingerprint = context.data.fingerprint()
        scattered = context if self.data_path is None else replace(context, data=None, _counts={})
        self._payload = _Payload(search_id, scattered, self.data_path, fingerprint)
        self._ref = _PayloadRef(search_id, f"{self._prefix}-payload", self._prefix)
        self._reports = Queue(f"{self._prefix}-reports", client=self.client)
        self._send_payload()
        if self.data_path is not None:
            self._prepare_workers()
        self._pause_workers()
        logger.debug("dask: search %s sent to %d worker(s)", search_id, len(self._workers()))

    def free_slots(self) -> int:
        return max(0, self._n_slots - len(self._running))

    def submit(self, trial_id: int, params: dict, rungs: list[int]) -> str:
        """Start a trial as a Dask task; returns the kind of device it runs on."""
        from distributed import Queue

        attempts = Queue(f"{self._prefix}-attempts-{trial_id}", client=self.client)
        running = _Running(None, dict(params), list(rungs), attempts)
        running.future = self._submit_task(trial_id, running)
        self._running[trial_id] = running
        return self.device

    def answer(self, trial_id: int, stop: bool) -> None:
        """Tell the trial waiting at a rung whether to stop."""
        from distributed import Queue

        running = self._running.get(trial_id)
        if running is None or running.reply is None:
            return
        reply = Queue(running.reply, client=self.client)
        try:
            reply.put(bool(stop))
        finally:
            reply.close()
        running.reply = None

    def poll(self, timeout: float) -> list[Event]:
        """Wait up to ``timeout`` seconds for rung reports and finished trials."""
        from distributed import wait

        if not self._running:
            return []
        self._check_payload()
        deadline = time.monotonic() + timeout
        while True:
            events = self._rung_reports() + self._finished()
            remaining = deadline - time.monotonic()
            if events or remaining <= 0 or not self._running:
                return events
            futures = [r.future for r in self._running.values()]
            try:
                wait(futures, timeout=min(QUEUE_POLL_S * 2, remaining), return_when="FIRST_COMPLETED")
            except TimeoutError:
                pass
            except Exception:  # a cancelled future: _finished() sees it
                time.sleep(QUEUE_POLL_S)

    def shutdown(self, kill: bool = False) -> None:
        """Cancel running trials, forget the search's data; close the client if created here."""
        futures = [r.future for r in self._running.values() if r.future is not None]
        try:
            if futures:
                logger.debug("dask: cancelling %d running trial(s)", len(futures))
                self.client.cancel(futures)
            for running in self._running.values():
                running.attempts.close()
            if self._reports is not None:
                self._reports.close()
            if self._payload_future is not None:
                self.client.unpublish_dataset(self._ref.dataset)
                self._payload_future.release()
                self.client.run(_forget_context, self._ref.context_id)
        except Exception as err:  # best effort; the cluster may be gone
            logger.debug("dask: cleanup after the search failed: %s", err)
        finally:
            try:
                self._resume_workers()
            except Exception as err:
                logger.debug("dask: could not resume the workers' profilers: %s", err)
            self._running.clear()
            self._payload_future = None
            self._reports = None
            if self.own_client:
                self.client.close()

    # -- helpers ---------------------------------------------------------------------

    def _workers(self) -> dict:
        return _workers_info(self.client)

    def _pause_workers(self) -> None:
        """Pause the workers' :data:`PAUSED_CALLBACKS` for the search (best effort)."""
        try:
            self._paused = {a: names for a, names in self.client.run(_pause_callbacks).items() if names}
        except Exception as err:  # a worker without them, or one that left meanwhile
            logger.debug("dask: could not pause the workers' profilers: %s", err)
        if self._paused:
            logger.debug("dask: paused %s on %d worker(s)", ", ".join(PAUSED_CALLBACKS), len(self._paused))

    def _resume_workers(self) -> None:
        """Restart the callbacks :meth:`_pause_workers` paused, on the workers still there."""
        alive = set(self._workers())
        workers = [address for address in self._paused if address in alive]
        if workers:
            self.client.run(_resume_callbacks, self._paused, workers=workers)
        self._paused = {}

    def _prepare_workers(self) -> None:
        """Have every worker read ``data_path`` now, so a wrong file fails before any trial."""
        futures = [
            self.client.submit(
                _prepare_worker, self._ref, key=f"{self._prefix}-prepare-{i}",
                workers=[address], allow_other_workers=False, pure=False,
            )
            for i, address in enumerate(self._workers())
        ]
        try:
            self.client.gather(futures)
        except Exception as err:
            raise ValueError(
                f"the Dask workers could not read data_path={self.data_path!r}: "
                f"{type(err).__name__}: {err}"
            ) from err

    def _send_payload(self) -> None:
        """Scatter the payload to every worker and publish it for workers that start later."""
        self._payload_future = self.client.scatter(self._payload, broadcast=True, hash=False)
        self.client.publish_dataset(self._payload_future, name=self._ref.dataset, override=True)

    def _check_payload(self) -> None:
        """Send the payload again when every worker that held it died.

        The workers may still be restarting then, and the scheduler can drop
        the connection of a scatter to a worker that dies or restarts under
        it; the data is sent again until it lands or :data:`RESEND_PAYLOAD_S` pass.
        """
        if self._payload_future is None or self._payload_future.status == "finished":
            return
        logger.warning("dask: the search's data was lost with its workers; sending it again")
        deadline = time.monotonic() + RESEND_PAYLOAD_S
        while True:
            try:
                self.client.wait_for_workers(1, timeout=max(1.0, deadline - time.monotonic()))
                self._send_payload()
                return
            except (OSError, TimeoutError) as err:  # CommClosedError is an OSError
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"the Dask cluster lost the search's data with its workers and could not "
                        f"take it again within {RESEND_PAYLOAD_S:.0f} s ({type(err).__name__}: {err}); "
                        "the finished trials are kept (in the journal, when one is set)."
                    ) from err
                logger.warning("dask: sending the search's data failed (%s: %s); trying again", type(err).__name__, err)
                time.sleep(1.0)

    def _submit_task(self, trial_id: int, running: _Running) -> Any:
        self._check_payload()
        key = f"{self._prefix}-trial-{trial_id}-{running.submissions}"
        return self.client.submit(
            _run_trial, self._ref, trial_id, running.params, running.rungs, key,
            key=key, pure=False, retries=0, resources=self.resources,
        )

    def _rung_reports(self) -> list[Event]:
        events = []
        for message in self._reports.get(batch=True):
            kind, trial_id, n_epochs, value, reply = message
            running = self._running.get(trial_id)
            if kind != "report" or running is None:
                continue
            running.reply = reply
            events.append(
                Event("report", trial_id, n_epochs=int(n_epochs), value=float(value), device=self.device)
            )
        return events

    def _finished(self) -> list[Event]:
        events = []
        for trial_id, running in list(self._running.items()):
            future = running.future
            if not future.done():
                continue
            event = self._outcome(trial_id, running)
            if event is None:  # resubmitted
                continue
            del self._running[trial_id]
            running.attempts.close()
            if trial_id in self._ended:  # never two records for one trial
                continue
            self._ended.add(trial_id)
            events.append(event)
        return events

    def _outcome(self, trial_id: int, running: _Running) -> Event | None:
        """The event of a finished future, or ``None`` when the trial was started again."""
        from distributed import KilledWorker

        future = running.future
        error: BaseException | None = None
        if future.status == "finished":
            try:
                clear_stale_gather(self.client)
                result = future.result()
            except Exception as err:  # the result could not be fetched
                error = err
            else:
                if result[0] == "done":
                    record, model = result[2], result[3]
                    return Event("done", trial_id, record=record, model=model, device=record["device"])
                if result[0] == "exhausted":
                    return self._died(
                        trial_id,
                        f"WorkerDied: the Dask worker running trial {trial_id} died during each of "
                        f"its {MAX_ATTEMPTS} attempts (killed from outside or out of memory)",
                    )
                return self._died(trial_id, f"Cancelled: trial {trial_id} was cancelled on its worker")
        elif future.status == "cancelled":
            error = RuntimeError("the task was cancelled on the cluster")
        else:
            error = future.exception()
        started = self._attempts_started(running)
        logger.debug(
            "dask: trial %d ended with %s after %d submission(s), %d start(s)",
            trial_id, future.status, running.submissions, started,
        )
        if running.submissions < MAX_ATTEMPTS and started < MAX_ATTEMPTS:
            logger.warning(
                "trial %d: its Dask task failed (%s: %s); retrying it once",
                trial_id, type(error).__name__, error,
            )
            running.submissions += 1
            running.reply = None
            running.future = self._submit_task(trial_id, running)
            return None
        if isinstance(error, KilledWorker):
            message = (
                f"WorkerDied: the Dask worker running trial {trial_id} died during the trial "
                f"and its retry (killed from outside or out of memory; {error})"
            )
        else:
            message = f"{type(error).__name__} in the Dask task (retried once): {error}"
        return self._died(trial_id, message)

    def _died(self, trial_id: int, error: str) -> Event:
        logger.warning("trial %d: %s", trial_id, error)
        return Event("died", trial_id, error=error, device=self.device)

    def _attempts_started(self, running: _Running) -> int:
        try:
            return int(running.attempts.qsize())
        except Exception:  # the scheduler did not answer; assume the worst
            return MAX_ATTEMPTS
