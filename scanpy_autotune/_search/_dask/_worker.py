"""The worker side of a Dask search: what runs inside Dask's workers.

:func:`run_trial` and :func:`prepare_worker` are tasks and run in a worker's
task threads; :func:`forget_context`, :func:`pause_callbacks`,
:func:`resume_callbacks`, :func:`cuda_visible` and :func:`fetch_count` are sent with ``client.run``
and run on the worker's event loop. The driver (:mod:`._driver`) imports this
module only once ``distributed`` is known to be there; this module imports it
at the top, as it only ever runs where Dask does.

Per-worker state
    The contexts a worker keeps, the searches that ended there, the lock over
    both, whether the worker's process is set up for training and how many
    payloads it fetched live in one :class:`AutotuneWorkerState` per worker: a
    ``distributed.WorkerPlugin`` that :meth:`DaskBackend.start
    <._driver.DaskBackend.start>` registers under :data:`PLUGIN_NAME`, and
    which tasks and ``client.run`` functions find in ``worker.plugins``.
    A plugin rather than module globals or an attribute set on the worker
    object, because then ``distributed`` owns its life: the scheduler installs
    it on every worker that joins later (a worker restarted after a death has
    it before its first task); each worker has its own, also when an
    in-process cluster runs several workers in one process; it is found
    through a documented mapping instead of an attribute added to
    ``distributed.Worker``; and registering is idempotent by name, so a second
    search on the same cluster, even from another driver, keeps what the
    workers cached and never swaps the state under a running task.
Locking
    :attr:`AutotuneWorkerState.lock` is held by task threads while they fetch a
    payload, which needs the worker's event loop, and while they build device
    tensors. A function on the event loop therefore never waits for it
    (:meth:`AutotuneWorkerState.forget` only tries it).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from distributed import Queue, WorkerPlugin, get_client, get_worker

from .._backends import TRIAL_ATTEMPTS
from .._context import TrialContext
from .._worker import RungReporter
from ._client import clear_stale_gather
from ._protocol import QUEUE_POLL_S, Payload, SearchRef

# The name of the :class:`AutotuneWorkerState` plugin on every worker.
PLUGIN_NAME = "scanpy-autotune"
# Contexts (searches) a worker keeps in memory.
KEEP_CONTEXTS = 2
# How long a worker tries to fetch the search's data (the driver re-sends it after a loss):
# one try waits FETCH_TRY_S plus the time the counts take at FETCH_BYTES_PER_S (a slow
# network's rate), and the tries go on for FETCH_TIMEOUT_S plus one try.
FETCH_TIMEOUT_S = 120.0
FETCH_TRY_S = 5.0
FETCH_BYTES_PER_S = 25e6
# Periodic callbacks of a Dask worker that wake its event loop every 10-20 ms: the
# statistical profiler and the event-loop tick monitor. Each wake-up takes the GIL
# from the thread that trains, whose small tensor operations release and retake it
# constantly; they are paused on the workers while a search runs, then resumed.
PAUSED_CALLBACKS = ("profile", "profile-cycle", "tick")


class AutotuneWorkerState(WorkerPlugin):
    """What one Dask worker keeps across the trials of the searches it runs.

    Attributes
    ----------
    contexts
        Search id -> its context (with the counts; device tensors once
        built), the most recently used last, at most :data:`KEEP_CONTEXTS`.
    ended
        Searches that ended: their contexts are dropped and never cached again.
    lock
        Guards ``contexts`` and ``process_ready``, and the building of a
        context's device tensors.
    process_ready
        Whether torch's threads and the malloc thresholds are set.
    fetches
        Payloads this worker fetched (:func:`fetch_count`).
    """

    name = PLUGIN_NAME
    idempotent = True  # registered at each search's start: keep the state a worker has

    def __init__(self) -> None:
        self.contexts: OrderedDict[str, TrialContext] = OrderedDict()
        self.ended: set[str] = set()
        self.lock = threading.Lock()
        self.process_ready = False
        self.fetches = 0

    def __reduce__(self) -> tuple:
        # Sent to the workers as its class alone: each builds a fresh, empty state.
        return (type(self), ())

    def context(self, search_id: str, load: Callable[[], TrialContext]) -> TrialContext:
        """The context of ``search_id``: cached, or ``load()``-ed once and cached.

        Raises
        ------
        RuntimeError
            When the search has ended (before or during the load).
        """
        with self.lock:
            self._drop_ended()
            context = self.contexts.get(search_id)
            if context is not None:
                self.contexts.move_to_end(search_id)
                return context
            self._refuse_ended(search_id)
            context = load()
            self._refuse_ended(search_id)  # the search may have ended during the load
            self.contexts[search_id] = context
            while len(self.contexts) > KEEP_CONTEXTS:
                self.contexts.popitem(last=False)
            return context

    def forget(self, search_id: str) -> None:
        """Mark ``search_id`` as ended and drop its context; never waits for :attr:`lock`.

        This runs on the worker's event loop (``client.run``), and a task
        thread may hold the lock while it fetches a payload, which needs that
        loop: waiting would deadlock (seen when a restarted task was still
        fetching as the search ended). The context is dropped now when the
        lock is free, else by the lock's holder (:meth:`context`).
        """
        self.ended.add(search_id)
        if self.lock.acquire(blocking=False):
            try:
                self._drop_ended()
            finally:
                self.lock.release()

    def _drop_ended(self) -> None:
        """Drop the contexts of ended searches (call with :attr:`lock` held)."""
        for search_id in list(self.ended):
            self.contexts.pop(search_id, None)

    def _refuse_ended(self, search_id: str) -> None:
        if search_id in self.ended:
            raise search_ended(search_id)


def register_worker_state(client: Any) -> None:
    """Give each worker of ``client``'s cluster, now and later, an :class:`AutotuneWorkerState`.

    Idempotent: workers that have one keep it.
    """
    plugin = AutotuneWorkerState()
    if hasattr(client, "register_plugin"):
        client.register_plugin(plugin, name=PLUGIN_NAME)  # honours its ``idempotent``
        return
    # distributed < 2023.9 replaces a plugin registered again, whatever it holds: register it
    # unless every worker has one (then the scheduler has it for those that join later).
    found = client.run(_has_state)
    if not found or not all(found.values()):
        client.register_worker_plugin(plugin, name=PLUGIN_NAME)


def _has_state(dask_worker: Any) -> bool:
    return PLUGIN_NAME in dask_worker.plugins


def worker_state(worker: Any = None) -> AutotuneWorkerState:
    """The :class:`AutotuneWorkerState` of ``worker`` (default: the worker running this task).

    Raises
    ------
    RuntimeError
        When it was never registered on the cluster (:func:`register_worker_state`).
    """
    worker = get_worker() if worker is None else worker
    state = worker.plugins.get(PLUGIN_NAME)
    if state is None:
        raise RuntimeError(
            f"the Dask worker {worker.address} has no {PLUGIN_NAME!r} plugin; "
            "DaskBackend.start registers it before the first trial"
        )
    return state


def search_ended(search_id: str) -> RuntimeError:
    """The error of a task whose search has ended (unpublished or forgotten on this worker)."""
    return RuntimeError(f"the search {search_id} has ended on the driver")


# -- the search's context ----------------------------------------------------------


def worker_context(ref: SearchRef, key: str | None = None) -> TrialContext:
    """The search's context in this worker: fetched on first use, then cached.

    The tasks do not take the scattered payload as a dependency: Dask's active
    memory manager drops the replicas of a broadcast that no queued task needs,
    so the payload would travel again to a worker for a later trial. Here each
    worker fetches it once and keeps it for every trial of the search.
    ``key`` is the calling task's, whose cancellation stops a fetch.
    """
    state = worker_state()

    def load() -> TrialContext:
        payload = _fetch_payload(ref, state, key)
        if payload.data_path is None:
            return payload.context
        return replace(payload.context, data=_read_counts(payload), _counts={})

    return state.context(ref.search_id, load)


def _fetch_payload(ref: SearchRef, state: AutotuneWorkerState, key: str | None) -> Payload:
    """Get the published payload; waits while the driver sends it again after a loss.

    Gives up at once when the search has ended (the name is no longer
    published) or the task ``key`` was cancelled.
    """
    client = get_client()
    state.fetches += 1
    try_s = FETCH_TRY_S + ref.payload_bytes / FETCH_BYTES_PER_S
    deadline = time.monotonic() + FETCH_TIMEOUT_S + try_s
    while True:
        try:
            published = client.get_dataset(ref.dataset)
        except KeyError as err:
            raise search_ended(ref.search_id) from err
        try:
            clear_stale_gather(client)
            return published.result(timeout=try_s)
        except Exception as err:  # lost with its worker (a timeout): the driver sends it again
            if time.monotonic() > deadline or (key is not None and task_cancelled(key)):
                raise RuntimeError(
                    "could not fetch the search's data from the cluster: "
                    f"{type(err).__name__}: {err}"
                ) from err
            time.sleep(QUEUE_POLL_S)


def _read_counts(payload: Payload):
    """Read and validate the counts of ``data_path``; they must be the driver's counts."""
    import anndata as ad

    from ..._vae._data import extract_counts

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


def task_cancelled(key: str) -> bool:
    """Whether the scheduler released the task ``key`` running in this worker (cancelled)."""
    task = get_worker().state.tasks.get(key)
    return task is None or task.state in ("cancelled", "released", "forgotten")


def worker_device(state: AutotuneWorkerState) -> str:
    """``"cuda"`` on a worker with a ``GPU`` resource and a visible GPU, else ``"cpu"``.

    On first use it also sets torch's threads to the worker's threads divided by
    the trials it runs at once (its ``GPU`` units, or one per thread on the CPU),
    and undoes the malloc thresholds that Dask's nanny sets (see
    :mod:`.._allocator`). These are settings of the process: a worker process
    runs one worker (in-process test clusters set the same values again).
    """
    import torch

    from .._allocator import restore_dynamic_thresholds

    resources = get_worker().state  # distributed's own state of this worker: threads, resources
    gpus = float(resources.total_resources.get("GPU", 0))
    with state.lock:
        if not state.process_ready:
            concurrent = int(gpus) if gpus >= 1 else resources.nthreads
            torch.set_num_threads(max(1, resources.nthreads // max(1, concurrent)))
            restore_dynamic_thresholds()
            state.process_ready = True
    return "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"


# -- tasks ------------------------------------------------------------------------


def prepare_worker(ref: SearchRef) -> str:
    """Load the search's data into this worker's cache; returns the worker's address."""
    worker_context(ref)
    return get_worker().address


class QueueLink:
    """The connection a :class:`.._worker.RungReporter` talks through, made of Dask queues.

    ``send`` puts a rung report on the search's report queue, with the name of
    this attempt's reply queue; ``recv`` waits for the driver's decision there.
    A task that was cancelled (the driver stopped or went away) stops its trial.
    """

    def __init__(self, ref: SearchRef, trial_id: int, attempt: int, key: str) -> None:
        self.ref, self.trial_id, self.key = ref, trial_id, key
        self.reply_name = ref.reply(trial_id, attempt)
        self._reports: Any = None
        self._reply: Any = None
        self.cancelled = False

    def send(self, message: tuple) -> None:
        if self._reply is None:
            self._reply = Queue(self.reply_name)  # exists before the driver answers
            self._reports = Queue(self.ref.reports)
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
            self.cancelled = task_cancelled(self.key)
        return self.cancelled

    def close(self) -> None:
        for queue in (self._reply, self._reports):
            if queue is not None:
                try:
                    queue.close()
                except Exception:  # the scheduler may be gone already
                    pass


def count_attempt(ref: SearchRef, trial_id: int) -> int:
    """Register one start of ``trial_id``; returns how many starts there were, this one included."""
    attempts = Queue(ref.attempts(trial_id))
    try:
        attempts.put(1)
        return int(attempts.qsize())
    finally:
        attempts.close()


def run_trial(ref: SearchRef, trial_id: int, params: dict, rungs: list[int], key: str) -> tuple:
    """One trial as a Dask task (``key`` is this task's key).

    Returns
    -------
    tuple
        One of the results listed in :mod:`._protocol`: ``("done", trial_id,
        record, model, device)``, ``("exhausted", trial_id, attempt)`` or
        ``("cancelled", trial_id)``.
    """
    from .._objective import evaluate_trial

    attempt = count_attempt(ref, trial_id)
    if attempt > TRIAL_ATTEMPTS:
        return ("exhausted", trial_id, attempt)
    state = worker_state()
    device = worker_device(state)
    context = worker_context(ref, key)
    with state.lock:  # threads of one worker build the device tensors once
        context.counts(device)
    link = QueueLink(ref, trial_id, attempt, key)
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
    return ("done", trial_id, record, model, device)


# -- functions run on the worker's event loop (client.run) ----------------------


def forget_context(search_id: str, dask_worker: Any) -> None:
    """Drop an ended search's context from this worker (``client.run``; never waits for a lock)."""
    state = dask_worker.plugins.get(PLUGIN_NAME)
    if state is not None:
        state.forget(search_id)


def fetch_count(dask_worker: Any) -> int:
    """How many times this worker fetched a search's data (``client.run(fetch_count)``)."""
    state = dask_worker.plugins.get(PLUGIN_NAME)
    return 0 if state is None else state.fetches


def cuda_visible(dask_worker: Any) -> bool:
    """Whether torch sees a CUDA device on this worker (``client.run(cuda_visible)``)."""
    import torch

    return bool(torch.cuda.is_available())


def pause_callbacks(dask_worker: Any) -> list[str]:
    """Stop this worker's running :data:`PAUSED_CALLBACKS`; returns their names (``client.run``)."""
    paused = []
    for name in PAUSED_CALLBACKS:
        callback = dask_worker.periodic_callbacks.get(name)
        if callback is not None and callback.is_running():
            callback.stop()
            paused.append(name)
    return paused


def resume_callbacks(paused: dict[str, list[str]], dask_worker: Any) -> None:
    """Start again the callbacks :func:`pause_callbacks` stopped on this worker (``client.run``)."""
    for name in paused.get(dask_worker.address, []):
        callback = dask_worker.periodic_callbacks.get(name)
        if callback is not None and not callback.is_running():
            callback.start()
