"""The driver side of a Dask search: :class:`DaskBackend`, in the process that calls ``autotune``.

It talks to the cluster through a synchronous ``distributed.Client``: it
registers the per-worker state (:func:`._worker.register_worker_state`),
has :mod:`._cluster` tidy the cluster, scatters and publishes the search's
payload, submits one task per trial
(:func:`._worker.run_trial`), reads the rung reports and answers them, turns
finished tasks into :class:`.._backends.Event` objects, restarts a trial once
when its task is lost, sends the payload again when the worker that held it
died, and cleans up after the search.

``distributed`` and :mod:`._worker` (which needs it) are imported inside the
methods, so importing this module works without ``distributed``;
:meth:`DaskBackend.create` then fails with :data:`._cluster.EXTRA_HINT`.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from ..._validation import check_int
from .._backends import TRIAL_ATTEMPTS, Event
from .._context import TrialContext
from ._client import clear_stale_gather
from ._cluster import (
    handshake,
    import_distributed,
    pause_workers,
    remove_orphans,
    resume_workers,
    warn_blind_gpus,
    workers_info,
)
from ._protocol import QUEUE_POLL_S, Payload, SearchRef

logger = logging.getLogger("scanpy_autotune")

# How long the driver waits for workers to join a cluster without any.
WAIT_FOR_WORKERS_S = 30.0
# How long the driver keeps trying to send the search's data again after its workers died.
RESEND_PAYLOAD_S = 60.0


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
    """Trials as tasks on a Dask cluster; a :class:`.._backends.Backend`.

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
        workers = workers_info(client)
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
        self._payload: Payload | None = None
        self._payload_future: Any = None
        self._ref: SearchRef | None = None
        self._reports: Any = None
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
            Without ``distributed`` (the ``dask`` extra: ``pip install -e ".[dask]"`` in a clone).
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
        n_workers = check_int("n_workers", n_workers, low=1, allow_none=True)
        if data_path is not None:
            if not isinstance(data_path, (str, os.PathLike)):
                raise ValueError(f"data_path={data_path!r} must be the path of an .h5ad file.")
            data_path = os.path.abspath(os.fspath(data_path))  # the workers may run elsewhere
            if not os.path.isfile(data_path):
                raise ValueError(
                    f"data_path={data_path!r} is not a file; it must be an .h5ad on storage "
                    "that the driver and the workers share."
                )
        own = False
        if client is None:
            if not isinstance(scheduler, str) or not scheduler:
                raise ValueError(
                    f"scheduler={scheduler!r} must be an address like 'tcp://HOST:8786'."
                )
            try:
                handshake(scheduler)
                client = distributed.Client(scheduler, set_as_default=False)
            except Exception as err:  # noqa: BLE001 - whatever answered there is not a scheduler
                raise ValueError(
                    f"cannot connect to the Dask scheduler at scheduler={scheduler!r} "
                    f"({type(err).__name__}: {err}); is it a scheduler's address (port 8786 by default)?"
                ) from None
            own = True
        elif not isinstance(client, distributed.Client):
            raise ValueError(f"client must be a distributed.Client, got {type(client).__name__}.")
        elif client.status != "running":
            raise ValueError(f"client= is {client.status}; pass an open distributed.Client.")
        if client.asynchronous:
            raise ValueError("backend='dask' needs a synchronous distributed.Client.")
        try:
            if not workers_info(client):
                client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
            return cls(client, own_client=own, data_path=data_path, n_workers=n_workers)
        except (OSError, TimeoutError) as err:
            if own:
                client.close()
            raise ValueError(
                f"the Dask cluster has no workers (waited {WAIT_FOR_WORKERS_S:.0f} s): {err}"
            ) from err

    # -- the Backend interface -----------------------------------------------------

    @property
    def n_slots(self) -> int:
        return self._n_slots

    def start(self, context: TrialContext) -> None:
        """Send the trial context to the cluster once (or have the workers read ``data_path``)."""
        from distributed import Queue

        from ._worker import register_worker_state

        clear_stale_gather(self.client)  # an earlier search may have been stopped by Ctrl-C
        register_worker_state(self.client)
        remove_orphans(self.client)
        warn_blind_gpus(self.client)
        search_id = uuid.uuid4().hex[:12]
        fingerprint = context.data.fingerprint()
        scattered = context if self.data_path is None else replace(context, data=None, _counts={})
        self._payload = Payload(search_id, scattered, self.data_path, fingerprint)
        counts = scattered.data.X if scattered.data is not None else None
        size = 0 if counts is None else counts.data.nbytes + counts.indices.nbytes + counts.indptr.nbytes
        self._ref = SearchRef(search_id, driver=self.client.id, payload_bytes=int(size))
        self._reports = Queue(self._ref.reports, client=self.client)
        self._deliver_payload("could not send the search's data to the Dask cluster")
        if self.data_path is not None:
            self._prepare_workers()
        self._paused = pause_workers(self.client)
        logger.debug("dask: search %s sent to %d worker(s)", search_id, len(self._workers()))

    def free_slots(self) -> int:
        return max(0, self._n_slots - len(self._running))

    def submit(self, trial_id: int, params: dict, rungs: list[int]) -> str:
        """Start a trial as a Dask task; returns the kind of device it runs on."""
        from distributed import Queue

        attempts = Queue(self._ref.attempts(trial_id), client=self.client)
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
                wait(
                    futures, timeout=min(QUEUE_POLL_S * 2, remaining),
                    return_when="FIRST_COMPLETED",
                )
            except TimeoutError:
                pass
            except Exception:  # a cancelled future: _finished() sees it
                time.sleep(QUEUE_POLL_S)

    def shutdown(self, kill: bool = False) -> None:
        """Cancel running trials, forget the search's data; close the client if created here.

        Running trials are always cancelled (``kill`` is for the local pool, whose
        workers may otherwise finish a trial); the cluster's workers stay up.
        """
        from ._worker import forget_context

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
                self.client.run(forget_context, self._ref.search_id)
        except Exception as err:  # best effort; the cluster may be gone
            logger.debug("dask: cleanup after the search failed: %s", err)
        finally:
            try:
                resume_workers(self.client, self._paused)
                self._paused = {}
            except Exception as err:
                logger.debug("dask: could not resume the workers' profilers: %s", err)
            self._running.clear()
            self._payload_future = None
            self._reports = None
            if self.own_client:
                self.client.close()

    # -- helpers ---------------------------------------------------------------------

    def _workers(self) -> dict:
        return workers_info(self.client)

    def _prepare_workers(self) -> None:
        """Have every worker read ``data_path`` now, so a wrong file fails before any trial."""
        from ._worker import prepare_worker

        futures = [
            self.client.submit(
                prepare_worker, self._ref, key=self._ref.prepare_key(i),
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
        """Scatter the payload to one worker and publish it; each worker fetches it from there.

        Not ``broadcast=True``: the scheduler's replication retries a worker
        that died under it without end, so the search would hang at its start
        (and Dask's memory manager soon drops the extra replicas anyway).
        """
        self._payload_future = self.client.scatter(self._payload, hash=False)
        self.client.publish_dataset(self._payload_future, name=self._ref.dataset, override=True)

    def _deliver_payload(self, failure: str) -> None:
        """Send the payload, again while workers die or restart under the send.

        The scheduler can drop the connection of a scatter to a worker that dies
        or restarts under it, or still list a worker that died; the data is sent
        again until it lands or :data:`RESEND_PAYLOAD_S` pass, then
        ``RuntimeError`` starting with ``failure``.
        """
        deadline = time.monotonic() + RESEND_PAYLOAD_S
        while True:
            try:
                self.client.wait_for_workers(1, timeout=max(1.0, deadline - time.monotonic()))
                self._send_payload()
                return
            except (OSError, TimeoutError, KeyError) as err:  # CommClosedError is an OSError;
                # KeyError: the scheduler lost the worker it had chosen (its address)
                self._fail_now_without_a_scheduler(failure, err)
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"{failure} within {RESEND_PAYLOAD_S:.0f} s "
                        f"({type(err).__name__}: {err}); the finished trials are kept "
                        "(in the journal, when one is set)."
                    ) from err
                logger.warning(
                    "dask: sending the search's data failed (%s: %s); trying again",
                    type(err).__name__, err,
                )
                time.sleep(1.0)

    def _fail_now_without_a_scheduler(self, failure: str, err: BaseException) -> None:
        """Waiting for workers is pointless once the client is closed or the scheduler gone."""
        status = getattr(self.client, "status", "running")
        address = getattr(getattr(self.client, "scheduler", None), "address", None)
        if status in ("closing", "closed"):
            gone = f"the Dask client is {status}"
        elif address is None:
            return
        else:
            try:
                handshake(address)
                return
            except Exception as probe:  # noqa: BLE001 - any failure to answer means it is gone
                gone = f"the Dask scheduler at {address} no longer answers ({type(probe).__name__}: {probe})"
        raise RuntimeError(
            f"{failure}: {gone}; the finished trials are kept (in the journal, when one is set: "
            "the same call with it goes on from them)."
        ) from err

    def _check_payload(self) -> None:
        """Send the payload again when the worker that held it died."""
        if self._payload_future is None or self._payload_future.status == "finished":
            return
        logger.warning("dask: the search's data was lost with its worker; sending it again")
        self._deliver_payload(
            "the Dask cluster lost the search's data with its workers and could not take it again"
        )

    def _submit_task(self, trial_id: int, running: _Running) -> Any:
        from ._worker import run_trial

        self._check_payload()
        key = self._ref.trial_key(trial_id, running.submissions)
        return self.client.submit(
            run_trial, self._ref, trial_id, running.params, running.rungs, key,
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
            events.append(Event(
                "report", trial_id, n_epochs=int(n_epochs), value=float(value), device=self.device,
            ))
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
            future.release()  # now, not when a reference cycle is collected: the cluster keeps no result
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
                    _, _, record, model, device = result
                    return Event("done", trial_id, record=record, model=model, device=device)
                if result[0] == "exhausted":
                    return self._died(
                        trial_id,
                        f"WorkerDied: the Dask worker running trial {trial_id} died during each "
                        f"of its {TRIAL_ATTEMPTS} attempts (killed from outside or out of memory)",
                    )
                return self._died(
                    trial_id, f"Cancelled: trial {trial_id} was cancelled on its worker"
                )
        elif future.status == "cancelled":
            error = RuntimeError("the task was cancelled on the cluster")
        else:
            error = future.exception()
        started = self._attempts_started(running)
        logger.debug(
            "dask: trial %d ended with %s after %d submission(s), %d start(s)",
            trial_id, future.status, running.submissions, started,
        )
        if running.submissions < TRIAL_ATTEMPTS and started < TRIAL_ATTEMPTS:
            logger.warning(
                "trial %d: its Dask task failed (%s: %s); retrying it once",
                trial_id, type(error).__name__, error,
            )
            running.submissions += 1
            running.reply = None
            future.release()
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
            return TRIAL_ATTEMPTS
