"""The runner's logic, on scripted trials in this process (milliseconds, no model is trained)."""

from __future__ import annotations

import json
import logging
import math
import os

import pytest
from _scripted_backend import Plan, ScriptedBackend

from scanpy_autotune._record import TrialRecord
from scanpy_autotune._search._backends import Backend
from scanpy_autotune._search._journal import Journal
from scanpy_autotune._search._pruner import ASHAPruner
from scanpy_autotune._search._runner import run_trials
from scanpy_autotune._search._space import build_space
from scanpy_autotune._search._tpe import AskTellTPE
from scanpy_autotune._vae._config import HYPERPARAMETERS
from scanpy_autotune.tl import BackendFailed, JournalWriteError

SPACE = {"n_hidden": [64, 128, 256], "n_latent": ("int", 2, 12)}
DEFAULT = {"n_hidden": 128, "n_latent": 10}


def _tuner(seed: int = 0) -> AskTellTPE:
    return AskTellTPE(build_space(SPACE, HYPERPARAMETERS), seed=seed)


def _loss(params: dict) -> float:
    return 100.0 + abs(params["n_latent"] - 7) + params["n_hidden"] / 64


def test_scripted_backend_keeps_the_backend_contract():
    assert isinstance(ScriptedBackend(lambda t, p: Plan()), Backend)


def test_budget_is_met_through_failures_and_dead_workers():
    def script(trial_id, params):
        if trial_id == 2:
            return Plan(loss=math.nan)  # a NaN loss
        if trial_id == 4:
            return Plan(end="died")  # its worker dies
        return Plan(loss=_loss(params))

    backend = ScriptedBackend(script, n_slots=3)
    run = run_trials(backend, _tuner(), None, max_evals=9, default_params=DEFAULT, progress=False)
    assert sorted(run.records) == list(range(9))
    assert run.records[2].status == "fail" and "not finite" in run.records[2].error
    assert run.records[4].status == "fail" and run.records[4].error == "WorkerDied: scripted"
    assert run.records[4].params == backend.params[4] and run.records[4].device == "slot1"
    assert run.records[0].is_default and run.records[0].params == DEFAULT
    assert sorted(r.completion_order for r in run.records.values()) == list(range(9))
    best = run.best_record()
    assert best.loss == min(r.loss for r in run.records.values() if r.status == "ok")
    assert backend.shut_down_with is False  # nothing was left running


def test_default_is_never_pruned_but_its_values_join_the_rungs():
    pruner = ASHAPruner(10, min_epochs=2, eta=2, min_trials_per_rung=1)  # rungs 2, 4, 8
    # a resumed journal whose two trials were better at every rung: any other trial there is pruned
    better = {rung: -1.0 for rung in pruner.rungs()}
    resumed = [
        TrialRecord(trial_id, {"n_hidden": 64, "n_latent": n_latent}, status="ok", loss=101.0, n_epochs=10,
                    rung_values=dict(better))
        for trial_id, n_latent in ((1, 6), (2, 8))
    ]
    curves = {0: [-500.0] * 10}  # the default is the worst of all

    def script(trial_id, params):
        return Plan(curve=curves.get(trial_id, [-500.0] * 10), loss=_loss(params))

    backend = ScriptedBackend(script, n_slots=1)
    run = run_trials(
        backend, _tuner(), None, max_evals=4, resumed=resumed, default_params=DEFAULT, pruner=pruner,
        progress=False,
    )
    default = run.records[0]
    assert default.status == "ok" and default.is_default
    assert default.rung_values == {2: -500.0, 4: -500.0, 8: -500.0}
    assert [stop for trial, stop in backend.answers if trial == 0] == [False, False, False]
    assert pruner.rung_table()[2][0] == -500.0
    # the same values from any other trial are pruned at the first rung
    assert run.records[3].status == "pruned" and run.records[3].pruned_at + 1 == 2
    # the rung values stored in each record are exactly what was reported
    for record in run.records.values():
        for rung, value in record.rung_values.items():
            assert pruner.rung_table()[rung][record.trial_id] == value


def test_resume_restores_the_pruner_and_reruns_nothing(tmp_path):
    def script(trial_id, params):
        return Plan(curve=[-100.0 - (trial_id * 7) % 5] * 10, loss=_loss(params))

    path = tmp_path / "journal.jsonl"
    first_pruner = ASHAPruner(10, min_epochs=2, eta=2, min_trials_per_rung=1)
    journal, _ = Journal.open(path, {"seed": 0})
    first = run_trials(
        ScriptedBackend(script), _tuner(), None, max_evals=5, journal=journal,
        default_params=DEFAULT, pruner=first_pruner, progress=False,
    )
    _, resumed = Journal.open(path, {"seed": 0}, decode=TrialRecord.from_json)
    def as_text(records):
        return sorted(json.dumps(r.to_json(), sort_keys=True) for r in records)

    assert as_text(resumed) == as_text(first.records.values())

    pruner = ASHAPruner(10, min_epochs=2, eta=2, min_trials_per_rung=1)
    backend = ScriptedBackend(script)
    second = run_trials(
        backend, _tuner(), None, max_evals=8, resumed=resumed, default_params=DEFAULT,
        pruner=pruner, progress=False,
    )
    assert sorted(second.records) == list(range(8))
    assert backend.submitted == [5, 6, 7]  # neither the default nor a finished trial runs again
    live_tables = first_pruner.rung_table()
    for rung, table in pruner.rung_table().items():
        finished_before = {t: v for t, v in table.items() if t < 5}
        assert finished_before == live_tables[rung]


def test_ctrl_c_keeps_the_finished_trials_and_stops_the_running_ones():
    def script(trial_id, params):
        return Plan(end="interrupt") if trial_id == 3 else Plan(loss=_loss(params))

    backend = ScriptedBackend(script, n_slots=1)
    run = run_trials(backend, _tuner(), None, max_evals=6, default_params=DEFAULT, progress=False)
    assert isinstance(run.interrupted, KeyboardInterrupt)
    assert sorted(run.records) == [0, 1, 2]
    assert backend.shut_down_with is True  # trial 3 was running: its worker is killed


def test_a_second_ctrl_c_while_the_first_is_told_keeps_the_finished_trials():
    """Probe 20: a second Ctrl-C during the first one's warning escaped the search, and adata lost every trial."""

    class SecondCtrlC(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("interrupted:"):
                raise KeyboardInterrupt

    def script(trial_id, params):
        return Plan(end="interrupt") if trial_id == 3 else Plan(loss=_loss(params))

    handler = SecondCtrlC()
    logger = logging.getLogger("scanpy_autotune")
    logger.addHandler(handler)
    try:
        run = run_trials(ScriptedBackend(script, n_slots=1), _tuner(), None, max_evals=6, default_params=DEFAULT,
                         progress=False)
    finally:
        logger.removeHandler(handler)
    assert isinstance(run.interrupted, KeyboardInterrupt) and run.stop_reason == "interrupted (Ctrl-C)"
    assert sorted(run.records) == [0, 1, 2]


def test_the_progress_bar_counts_trials_as_they_start(capsys):
    """Probe 20: the bar's running count changed only when a trial finished (running=1 with two running)."""
    run_trials(ScriptedBackend(lambda t, p: Plan(loss=_loss(p)), n_slots=2), _tuner(), None, max_evals=4,
               default_params=DEFAULT, progress=True)
    bar = capsys.readouterr().err
    assert "running=2" in bar and bar.rstrip().endswith("running=0]")


def test_timeout_starts_nothing_more_and_abandons_the_running_trials():
    def script(trial_id, params):
        return Plan(end="hang") if trial_id >= 2 else Plan(loss=_loss(params))

    backend = ScriptedBackend(script, n_slots=2)
    run = run_trials(
        backend, _tuner(), None, max_evals=10, default_params=DEFAULT, timeout=0.3, progress=False
    )
    assert run.stop_reason == "timeout of 0.3 s" and sorted(run.records) == [0, 1]
    assert backend.submitted == [0, 1, 2, 3]  # the two hanging trials took the slots; no more started
    assert backend.shut_down_with is True


def test_journal_holds_every_record_before_it_counts(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal, _ = Journal.open(path, {"seed": 1})
    seen_in_journal = []

    class Watching(ScriptedBackend):
        def poll(self, timeout):
            seen_in_journal.append(len(Journal.open(path, {"seed": 1})[1]))
            return super().poll(timeout)

    run = run_trials(
        Watching(lambda t, p: Plan(loss=_loss(p))), _tuner(1), None, max_evals=4, journal=journal,
        default_params=None, progress=False,
    )
    assert len(run.records) == 4 and seen_in_journal == sorted(seen_in_journal)
    _, lines = Journal.open(path, {"seed": 1})
    assert [line["trial_id"] for line in lines] == [r.trial_id for r in sorted(run.records.values(), key=lambda r: r.completion_order)]


def test_a_journal_that_cannot_be_written_stops_the_search_and_keeps_every_finished_trial(tmp_path):
    """A full disk under the journal (here /dev/full, the kernel's always-full device) ends the search
    as Ctrl-C does: the finished trials are kept, the error names the journal."""
    path, aside = tmp_path / "journal.jsonl", tmp_path / "aside.jsonl"
    journal, _ = Journal.open(path, {"seed": 1})

    class FillsTheDisk(ScriptedBackend):
        def poll(self, timeout):
            if not aside.exists() and len(Journal.open(path, {"seed": 1})[1]) == 2:
                os.replace(path, aside)
                path.symlink_to("/dev/full")
            return super().poll(timeout)

    backend = FillsTheDisk(lambda t, p: Plan(loss=_loss(p)), n_slots=1)
    run = run_trials(backend, _tuner(1), None, max_evals=6, journal=journal, default_params=None, progress=False)
    assert isinstance(run.interrupted, JournalWriteError) and isinstance(run.interrupted, OSError)
    assert str(path) in str(run.interrupted) and "No space left on device" in str(run.interrupted)
    assert run.stop_reason == f"stopped: the journal {path} could not be written (No space left on device)"
    assert sorted(run.records) == [0, 1, 2]  # the third finished but could not be journaled: kept, not lost
    assert backend.submitted == [0, 1, 2]  # nothing started after the failure
    path.unlink()
    os.replace(aside, path)
    _, resumed = Journal.open(path, {"seed": 1}, decode=TrialRecord.from_json)
    assert [r.trial_id for r in resumed] == [0, 1]


def test_a_backend_that_fails_mid_search_keeps_the_finished_trials():
    """A Dask client closed under the search raises inside the backend: the finished trials are kept."""

    class ClientClosed(ScriptedBackend):
        def poll(self, timeout):
            if len(self.submitted) >= 3:
                raise AttributeError("'NoneType' object has no attribute 'queue_get'")
            return super().poll(timeout)

    backend = ClientClosed(lambda t, p: Plan(loss=_loss(p)), n_slots=1)
    run = run_trials(backend, _tuner(), None, max_evals=6, default_params=DEFAULT, progress=False)
    assert isinstance(run.interrupted, BackendFailed) and isinstance(run.interrupted.__cause__, AttributeError)
    assert str(run.interrupted).startswith("the search stopped after 2 finished trial(s), which are kept")
    assert sorted(run.records) == [0, 1] and run.stop_reason.startswith("stopped: AttributeError")
    assert backend.shut_down_with is True  # trial 2 was running


def test_a_journal_that_holds_the_budget_already_says_so():
    resumed = [TrialRecord(t, {"n_hidden": 64, "n_latent": 3}, status="ok", loss=1.0 + t) for t in range(4)]
    run = run_trials(ScriptedBackend(lambda t, p: Plan()), _tuner(), None, max_evals=2, resumed=resumed,
                     default_params=None, progress=False)
    assert run.stop_reason == "the budget: the journal already holds 4 trials (max_evals=2)"
    assert sorted(run.records) == [0, 1, 2, 3]


@pytest.mark.parametrize("n_slots", [1, 3])
def test_same_seed_and_completion_order_give_the_same_trials(n_slots):
    def run_once():
        backend = ScriptedBackend(lambda t, p: Plan(loss=_loss(p)), n_slots=n_slots)
        run = run_trials(backend, _tuner(5), None, max_evals=25, default_params=DEFAULT, progress=False)
        return [(t, r.params, r.loss) for t, r in sorted(run.records.items())]

    first = run_once()
    assert first == run_once()
    # TPE learns: after its 20 random start-up trials it samples near the best region
    late = [params["n_latent"] for _, params, _ in first[21:]]
    assert sum(abs(v - 7) <= 2 for v in late) >= 3


def test_the_projected_time_is_logged_once_and_warns_when_long(caplog):
    import logging
    import time

    from scanpy_autotune._search._runner import _Projection

    with caplog.at_level(logging.INFO, logger="scanpy_autotune"):
        short = _Projection(time.monotonic() - 30.0, already=0, max_evals=10, n_slots=2)
        for finished in range(1, 6):
            short.update(finished)
    records = [r for r in caplog.records if "at this pace" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.INFO  # once, after 3 trials
    assert "3 of 10 trials finished" in records[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="scanpy_autotune"):
        long = _Projection(time.monotonic() - 120.0, already=40, max_evals=200, n_slots=4)
        for finished in range(41, 48):
            long.update(finished)
    (record,) = [r for r in caplog.records if "at this pace" in r.getMessage()]
    assert record.levelno == logging.WARNING and "44 of 200 trials" in record.getMessage()
    assert "stop with Ctrl-C" in record.getMessage() and "about 78 min more" in record.getMessage()  # 120 s / 4 x 156


def test_a_trial_whose_worker_died_keeps_what_it_trained_as_far_as_the_driver_saw():
    """Its epochs (the last rung it reported) and wall time count, e.g. towards the convergence stop."""
    pruner = ASHAPruner(10, min_epochs=2, eta=2, min_trials_per_rung=1)  # rungs 2, 4, 8
    backend = ScriptedBackend(lambda t, p: Plan(end="died") if t == 1 else Plan(loss=_loss(p)), n_slots=1)
    run = run_trials(backend, _tuner(), None, max_evals=3, pruner=pruner, progress=False)
    died = run.records[1]
    assert died.status == "fail" and died.error.startswith("WorkerDied")
    assert died.n_epochs == max(pruner.rungs()) == 8 and died.duration_s > 0


def test_a_ctrl_c_while_the_workers_stop_keeps_every_trial(tmp_path):
    """Ctrl-C (or the command line's SIGTERM) just after the last trial, while the workers
    stop: the records are returned, with the interrupt, not lost with it."""

    class InterruptedShutdown(ScriptedBackend):
        def shutdown(self, kill: bool = False) -> None:
            super().shutdown(kill)
            raise KeyboardInterrupt

    backend = InterruptedShutdown(lambda t, p: Plan(loss=_loss(p)), n_slots=2)
    journal, _ = Journal.open(tmp_path / "j.jsonl", {"space": "s"}, decode=TrialRecord.from_json)
    run = run_trials(backend, _tuner(), None, max_evals=5, default_params=DEFAULT, progress=False,
                     journal=journal)
    journal.close()
    assert sorted(run.records) == list(range(5))
    assert isinstance(run.interrupted, KeyboardInterrupt)
    assert run.stop_reason == "the budget: 5 of max_evals=5 trials; then interrupted (Ctrl-C) while the workers stopped"


def test_workers_that_do_not_stop_cleanly_cost_no_trial(caplog):
    """Probe 24: a worker stuck in the kernel after SIGKILL, or a Dask client that fails to close,
    raised out of the runner's last step, and every finished trial went with it."""

    class StuckShutdown(ScriptedBackend):
        def shutdown(self, kill: bool = False) -> None:
            super().shutdown(kill)
            raise TimeoutError("the worker process did not end")

    with caplog.at_level(logging.WARNING, logger="scanpy_autotune"):
        run = run_trials(StuckShutdown(lambda t, p: Plan(loss=_loss(p)), n_slots=2), _tuner(), None,
                         max_evals=4, default_params=DEFAULT, progress=False)
    assert sorted(run.records) == list(range(4)) and run.interrupted is None
    assert run.stop_reason == "the budget: 4 of max_evals=4 trials"
    assert ("the workers did not stop cleanly (TimeoutError: the worker process did not end); "
            "every finished trial is kept") in caplog.text
