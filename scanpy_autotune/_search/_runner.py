"""The search loop: budget, submit, collect, prune, journal, progress.

The runner asks TPE for configurations while a slot is free, hands them to a
backend, and turns the backend's events into records. A record counts only
once it is in the journal. It knows nothing of torch: trials are evaluated by
the backend's workers (:mod:`._objective`). The values a trial reports at
pruning rungs are kept in its record, so that a resumed search rebuilds the
pruner's tables from exactly what the pruner was told.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import BackendFailed, JournalWriteError
from .._record import TrialRecord, best_of
from .._signals import interrupts_held
from .._stop_reason import interrupt_reason, then_interrupted
from ._backends import Backend, Event
from ._convergence import ConvergenceStop
from ._journal import Journal
from ._startup import StartupConfig
from ._tpe import AskTellTPE

logger = logging.getLogger("scanpy_autotune")

POLL_SECONDS = 0.5
@dataclass
class RunResult:
    """What the trial loop produced.

    Attributes
    ----------
    records
        Every finished trial (resumed ones included), by trial id.
    best_model
        Blob of the best trial's model among the trials run in this call
        (``None`` when the best came from the journal or none succeeded).
    best_model_trial
        Trial id of ``best_model``.
    interrupted
        What stopped the search before its end, to re-raise after the results
        are written: the ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM on the
        command line), the ``JournalWriteError`` of a journal
        that could not be written, or :class:`BackendFailed` when the backend
        failed mid-search.
    stop_reason
        Why the search ended, in words (the budget, convergence, the timeout, Ctrl-C).
    converged_after
        How many trials had finished when the convergence stop ended the
        search (0: it did not).
    """

    records: dict[int, TrialRecord] = field(default_factory=dict)
    best_model: dict | None = None
    best_model_trial: int = -1
    interrupted: BaseException | None = None
    stop_reason: str = ""
    converged_after: int = 0

    def best_record(self) -> TrialRecord | None:
        """The best successful trial so far (:func:`scanpy_autotune._record.best_of`)."""
        return best_of(self.records.values())


@dataclass
class _Running:
    """A trial handed to the backend and not yet finished."""

    params: dict[str, Any]
    device: str
    is_default: bool
    rung_values: dict[int, float] = field(default_factory=dict)
    startup: str = ""
    started: float = field(default_factory=time.monotonic)




class _Progress:
    """A ``tqdm.auto`` bar of finished trials with failed/running counts and the best loss."""

    def __init__(self, enabled: bool, total: int, initial: int) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="autotune", unit="trial")

    def update(self, n: int, outcome: RunResult, running: int) -> None:
        """Count ``n`` more finished trials (``0``: only the counts changed, as when trials start)."""
        if self.bar is None:
            return
        records = outcome.records.values()
        best = outcome.best_record()
        self.bar.set_postfix(
            failed=sum(r.status == "fail" for r in records),
            pruned=sum(r.status == "pruned" for r in records),
            running=running,
            best="-" if best is None else f"{best.loss:.2f}",
            refresh=n == 0,
        )
        self.bar.update(n)

    def stopped(self) -> None:
        """Say on the bar that no more trials start because the search converged."""
        if self.bar is not None:
            self.bar.set_description("autotune (converged)", refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_trials(
    backend: Backend,
    tuner: AskTellTPE,
    context: Any,
    *,
    max_evals: int,
    resumed: list[TrialRecord] | None = None,
    journal: Journal | None = None,
    default_params: dict | None = None,
    startup: Sequence[StartupConfig] = (),
    pruner: Any = None,
    timeout: float | None = None,
    progress: bool = True,
    stopper: ConvergenceStop | None = None,
) -> RunResult:
    """Run trials until ``max_evals`` records exist (resumed ones included).

    Parameters
    ----------
    backend
        Where trials run (:class:`._backends.Backend`); started here, shut down on return.
    tuner
        Asks configurations; told every finished trial.
    context
        The workers' :class:`._context.TrialContext`.
    max_evals
        Total number of trials, resumed ones included.
    resumed
        Records read from the journal; they are told to TPE and never re-run.
    journal
        Where each finished record is appended before it counts.
    default_params
        Configuration run first as trial 0 (the scVI default), unless the
        journal has it (a journal started without it runs it next, under the
        next free id).
    startup
        Configurations run next, as trials 1, 2, ... (0, 1, ... without a
        default), each unless the journal ran it (:func:`_startup_queue`);
        TPE's suggestions follow.
    pruner
        Decides at rungs whether a trial stops (``None``: no pruning).
    timeout
        Seconds after which no trial is started and running ones are abandoned.
    progress
        Show a ``tqdm`` bar.
    stopper
        Ends the search before ``max_evals`` once it has converged (``None``:
        run them all). A search whose journal says it converged at this
        budget runs nothing more.
    """
    outcome = RunResult()
    for record in resumed or []:
        outcome.records[record.trial_id] = record
        tuner.tell_known(record.trial_id, record.params, record.tpe_loss, record.status)
    if pruner is not None:
        pruner.restore(list(outcome.records.values()))
    if stopper is not None:
        stopper.restore(outcome.records.values())
        earlier, converged_after = _converged_before(journal, len(outcome.records), max_evals, stopper)
        if earlier:
            outcome.stop_reason, outcome.converged_after = earlier, converged_after
            logger.info("the journal's search %s; nothing to run", earlier)
            backend.shutdown()  # never started; a Dask client it opened is closed
            return outcome
    converged, converged_reason = False, ""  # the reason a resume reads, without what the timeout then did
    rungs = pruner.rungs() if pruner is not None else []
    next_trials = _NextTrials(tuner, default_params, startup, outcome.records)
    running: dict[int, _Running] = {}
    started = time.monotonic()
    projection = _Projection(started, len(outcome.records), max_evals, backend.n_slots)
    bar = _Progress(progress, max_evals, min(len(outcome.records), max_evals))
    if len(outcome.records) >= max_evals:
        n = len(outcome.records)
        outcome.stop_reason = f"the budget: the journal already holds {n} trials (max_evals={max_evals})"
        if n > max_evals:
            logger.warning("the journal holds %d trials, more than max_evals=%d; nothing to run", n, max_evals)
        else:
            logger.info("the journal already holds %d trials; nothing to run", n)
        bar.close()
        backend.shutdown()  # never started; a Dask client it opened is closed
        return outcome

    def finish(record: TrialRecord, model: dict | None) -> None:
        nonlocal converged, converged_reason
        info = running[record.trial_id]
        record.completion_order = len(outcome.records)
        record.is_default = info.is_default
        record.startup = info.startup
        record.finished_at = time.time()
        record.rung_values = dict(info.rung_values)
        unwritten = None
        with interrupts_held():
            if journal is not None:
                try:
                    journal.append(record.to_json())
                except JournalWriteError as error:  # the trial is kept in adata; the search stops
                    unwritten = error
            outcome.records[record.trial_id] = record
            running.pop(record.trial_id, None)
            tuner.tell(record.trial_id, record.tpe_loss, record.status)
            best = outcome.best_record()
            if model is not None and best is not None and best.trial_id == record.trial_id:
                outcome.best_model, outcome.best_model_trial = model, record.trial_id
        if unwritten is not None:
            raise unwritten
        _log_record(record)
        bar.update(1, outcome, len(running))
        projection.update(len(outcome.records))
        started_all = len(outcome.records) + len(running) >= max_evals  # nothing left to stop early
        if stopper is not None and not converged and stopper.observe(record) and not started_all:
            converged = True
            outcome.stop_reason, outcome.converged_after = stopper.reason(), len(outcome.records)
            converged_reason = outcome.stop_reason
            logger.info("stopping early: %s; %d running trial(s) finish", outcome.stop_reason, len(running))
            bar.stopped()

    started_backend = False
    late: KeyboardInterrupt | None = None  # a Ctrl-C while the workers stop, after the last trial
    try:
        backend.start(context)
        started_backend = True
        while len(outcome.records) < max_evals and not (converged and not running):
            timed_out = timeout is not None and time.monotonic() - started > timeout
            while (
                not timed_out
                and not converged
                and backend.free_slots() > 0
                and len(outcome.records) + len(running) < max_evals
            ):
                trial_id, params, is_default, source = next_trials.ask(outcome.records)
                device = backend.submit(trial_id, params, rungs)
                running[trial_id] = _Running(params, device, is_default, startup=source)
                logger.debug("trial %d started on %s: %s", trial_id, device, params)
                bar.update(0, outcome, len(running))
            if timed_out:
                logger.warning(
                    "timeout of %g s reached: %d trial(s) abandoned, %d finished",
                    timeout, len(running), len(outcome.records),
                )
                if converged:  # it ended on its own; the timeout only cut its last trials short
                    outcome.stop_reason += f" (the timeout of {timeout:g} s abandoned {len(running)} trial(s) still running)"
                else:
                    outcome.stop_reason = f"timeout of {timeout:g} s"
                break
            for event in backend.poll(POLL_SECONDS):
                _handle(event, running, pruner, backend, finish)
        if converged and journal is not None:  # a resume with this budget then runs nothing more
            journal.note(
                "stop", reason=converged_reason, n_trials=len(outcome.records), max_evals=max_evals,
                converged_after=outcome.converged_after, convergence=stopper.describe(),
            )
    except KeyboardInterrupt as interrupt:
        outcome.interrupted = interrupt
        outcome.stop_reason = interrupt_reason(interrupt)
        try:
            logger.warning(
                "interrupted: stopping %d running trial(s); %d finished trial(s) are kept",
                len(running), len(outcome.records),
            )
        except KeyboardInterrupt:  # a second Ctrl-C while the first is told: the search is stopping already
            pass
    except JournalWriteError as error:
        logger.error(
            "%s: stopping %d running trial(s); %d finished trial(s) are kept",
            error.strerror, len(running), len(outcome.records),
        )
        outcome.interrupted = error
        outcome.stop_reason = f"stopped: {error.strerror}"
    except Exception as error:
        if not started_backend:  # nothing ran: the backend's own error says what to fix
            raise
        logger.error(
            "the search stopped: %s: %s; %d finished trial(s) are kept", type(error).__name__, error,
            len(outcome.records),
        )
        failed = BackendFailed(
            f"the search stopped after {len(outcome.records)} finished trial(s), which are kept: "
            f"{type(error).__name__}: {error}"
        )
        failed.__cause__ = error
        outcome.interrupted = failed
        outcome.stop_reason = f"stopped: {type(error).__name__}: {error}"
    finally:
        try:
            backend.shutdown(kill=bool(running))
        except KeyboardInterrupt as interrupt:  # while the workers stop: every record is kept
            late = interrupt
        except Exception as error:  # as is every record when a worker or a cluster does not stop cleanly
            logger.warning("the workers did not stop cleanly (%s: %s); every finished trial is kept",
                           type(error).__name__, error)
        bar.close()
    if not outcome.stop_reason:
        outcome.stop_reason = f"the budget: {len(outcome.records)} of max_evals={max_evals} trials"
    if late is not None and outcome.interrupted is None:
        outcome.interrupted = late
        outcome.stop_reason = then_interrupted(outcome.stop_reason, late, "while the workers stopped")
    return outcome


class _NextTrials:
    """What runs next: the scVI default, then the start-up configurations, then TPE's suggestions.

    Each of the first two runs once per search: a resumed journal that holds
    the default (or a start-up configuration) does not run it again.
    """

    def __init__(
        self,
        tuner: AskTellTPE,
        default_params: dict | None,
        startup: Sequence[StartupConfig],
        records: dict[int, TrialRecord],
    ) -> None:
        self._tuner = tuner
        self._default = dict(default_params) if default_params is not None else None
        self._run_default = self._default is not None and not any(r.is_default for r in records.values())
        self._queued = _startup_queue(startup, records, first_id=1 if self._default is not None else 0)

    def ask(self, records: dict[int, TrialRecord]) -> tuple[int, dict, bool, str]:
        """The next trial: its id, parameters, whether it is the default, and its start-up source."""
        if self._run_default:  # trial 0, or the next id when a resumed journal started without it
            self._run_default = False
            trial_id = self._tuner.ask_known(self._default, trial_id=None if 0 in records else 0)
            return trial_id, dict(self._default), True, ""
        if self._queued:
            trial_id, config = self._queued.pop(0)
            trial_id = self._tuner.ask_known(config.params, trial_id=trial_id)
            return trial_id, dict(config.params), False, config.source
        trial_id, params = self._tuner.ask()
        return trial_id, params, False, ""


def _startup_queue(
    startup: Sequence[StartupConfig], records: dict[int, TrialRecord], first_id: int,
) -> list[tuple[int | None, StartupConfig]]:
    """The start-up configurations still to run, each with its trial id.

    A configuration runs as trial ``first_id + k`` (its place in ``startup``),
    so a search's ids and seeds do not depend on whether it was resumed. One
    that a journal's trial already ran (same parameters, from the same source
    or under the same id) is left out; one whose id a resumed journal gave to
    another trial (``startup`` added on resume) runs under the next free id
    (``None``).
    """
    queue = []
    for k, config in enumerate(startup):
        trial_id = first_id + k
        params = dict(config.params)
        ran = any(
            record.params == params and (record.startup == config.source or record.trial_id == trial_id)
            for record in records.values()
        )
        if not ran:
            queue.append((None if trial_id in records else trial_id, config))
    return queue


def _converged_before(
    journal: Journal | None, n_records: int, max_evals: int, stopper: ConvergenceStop,
) -> tuple[str, int]:
    """Why the journal's search stopped early, and after how many trials, or ``("", 0)``.

    When it stopped with these trials, a budget at least this one and a rule
    at least as patient (the same but for a patience as large or larger): this
    search would have stopped there too. A resume with a larger budget or more
    patience goes on.
    """
    if journal is None:
        return "", 0
    for note in reversed(journal.notes):
        if note.get("kind") == "stop":
            rule, now = dict(note.get("convergence", stopper.describe())), stopper.describe()
            as_patient = rule.pop("patience", 0) >= now["patience"] and rule == {
                k: v for k, v in now.items() if k != "patience"
            }
            budget, patience = note.get("max_evals"), note.get("convergence", now).get("patience")
            if isinstance(budget, int) and budget >= max_evals and note.get("n_trials") == n_records and as_patient:
                reason = str(note.get("reason", "converged"))
                if budget != max_evals or patience != now["patience"]:  # said in the words of that run's rule
                    reason += f" (in the run with max_evals={budget}, patience={patience})"
                return reason, int(note.get("converged_after", n_records))
            return "", 0
    return "", 0


class _Projection:
    """Logs, once the first trials of this run have finished, how long the whole budget will take.

    A user who sees that a search will take hours can stop it (Ctrl-C keeps the
    finished trials) and change the plan: fewer trials or epochs, pruning, fewer genes.
    """

    #: A projection longer than this is a warning (shown at Scanpy's default verbosity).
    LONG_S = 1800.0

    def __init__(self, started: float, already: int, max_evals: int, n_slots: int) -> None:
        self.started, self.already, self.max_evals = started, already, max_evals
        self.after = max(3, n_slots)  # trials of this run to finish before projecting
        self.done = False

    def update(self, finished: int) -> None:
        ran = finished - self.already
        if self.done or ran < self.after or finished >= self.max_evals:
            return
        self.done = True
        elapsed = time.monotonic() - self.started
        remaining = elapsed / ran * (self.max_evals - finished)
        message = (
            f"{finished} of {self.max_evals} trials finished in {_duration(elapsed)}; at this pace "
            f"the remaining {self.max_evals - finished} take about {_duration(remaining)} more"
        )
        if remaining > self.LONG_S:
            logger.warning(
                "%s. To finish sooner, stop with Ctrl-C (finished trials are kept, and a journal "
                "resumes) and lower max_evals or max_epochs, or select fewer genes.", message,
            )
        else:
            logger.info(message)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _handle(
    event: Event, running: dict[int, _Running], pruner: Any, backend: Backend,
    finish: Callable[[TrialRecord, dict | None], None],
) -> None:
    trial = running.get(event.trial_id)
    if trial is None:
        return
    if event.kind == "report":
        trial.rung_values[int(event.n_epochs)] = float(event.value)
        stop = pruner is not None and pruner.report(event.trial_id, event.n_epochs, event.value)
        # The default configuration is the reference every result is compared with:
        # its values join the rung table, but it is never stopped.
        stop = stop and not trial.is_default
        backend.answer(event.trial_id, stop)  # a pruned trial is logged with its record
    elif event.kind == "done":
        finish(event.record, event.model)
    elif event.kind == "died":
        # What it trained before it died, as far as the driver saw: its wall time, and the last
        # rung it reported (a lower bound on its epochs), so the convergence stop counts its work.
        record = TrialRecord(
            event.trial_id, dict(trial.params), device=trial.device, error=event.error,
            duration_s=time.monotonic() - trial.started, n_epochs=max(trial.rung_values, default=0),
        )
        finish(record, None)


def _log_record(record: TrialRecord) -> None:
    if record.status == "ok":
        logger.info(
            "trial %d: loss %.3f after %d epochs (%.1f s)",
            record.trial_id, record.loss, record.n_epochs, record.duration_s,
        )
    elif record.status == "pruned":
        logger.info("trial %d: pruned after %d epochs", record.trial_id, record.pruned_at + 1)
    else:
        logger.warning("trial %d failed: %s", record.trial_id, record.error)
