"""The convergence stop: the rule, the runner that applies it, resuming, and what it records."""

from __future__ import annotations

import math

import anndata as ad
import matplotlib
import numpy as np
import pytest
from _scripted_backend import Plan, ScriptedBackend
from test_runner import DEFAULT, _tuner

import scanpy_autotune as sat
from scanpy_autotune._record import TrialRecord
from scanpy_autotune._results import build_results
from scanpy_autotune._search._convergence import ConvergenceStop, make_convergence_stop
from scanpy_autotune._search._journal import Journal
from scanpy_autotune._search._runner import run_trials

matplotlib.use("Agg")


def _ok(trial_id: int, loss: float) -> TrialRecord:
    return TrialRecord(trial_id, {}, status="ok", loss=loss)


def test_the_rule_counts_trials_without_a_real_gain():
    stop = ConvergenceStop(patience=3, tolerance=0.01, min_trials=5)
    losses = [100.0, 90.0, 89.5, 88.0, 87.9, 87.8, 87.7]
    # 89.5 gains less than 1% of the best (90): no progress; 88.0 is progress; then three small gains
    decisions = [stop.observe(_ok(i, loss)) for i, loss in enumerate(losses)]
    assert decisions == [False, False, False, False, False, False, True]
    assert stop.best == 87.7 and "3 trials' worth of training in a row" in stop.reason()
    never_early = ConvergenceStop(patience=1, min_trials=4)
    assert [never_early.observe(_ok(i, 1.0)) for i in range(4)] == [False, False, False, True]
    # a failed trial has no loss: it counts by the epochs it trained, like a pruned one
    failing = ConvergenceStop(patience=2, min_trials=0, max_epochs=400)
    instant = [failing.observe(TrialRecord(i, {}, status="fail", n_epochs=1)) for i in range(10)]
    assert instant == [False] * 10 and failing.since == pytest.approx(10 / 400)  # diverged at once: nearly free
    assert failing.observe(TrialRecord(10, {}, status="fail", n_epochs=400)) is False
    assert failing.observe(TrialRecord(11, {}, status="fail", n_epochs=390)) is True  # two trials' worth
    assert "pruned and failed trials counted by the share of their epochs" in failing.reason()


def test_a_pruned_trial_counts_as_the_share_of_the_epochs_it_trained():
    """A pruned trial's loss is unknown: it counts by the training it got, not as a whole trial."""
    stop = ConvergenceStop(patience=2, tolerance=0.01, min_trials=0, max_epochs=400)
    assert stop.observe(_ok(0, 10.0)) is False
    # fifteen trials pruned at 25 of 400 epochs: 15/16 of one trial's worth
    pruned = [stop.observe(TrialRecord(i, {}, status="pruned", n_epochs=25, pruned_at=25)) for i in range(1, 16)]
    assert pruned == [False] * 15 and stop.since == pytest.approx(15 / 16)
    assert stop.observe(_ok(16, 9.95)) is False  # a gain under 1%: 1 + 15/16
    assert stop.observe(TrialRecord(17, {}, status="pruned", n_epochs=25, pruned_at=25)) is True  # 2 in all
    assert "2 trials' worth of training" in stop.reason() and "after 18 trials" in stop.reason()
    # a real gain resets the count, whatever was pruned before it
    again = ConvergenceStop(patience=2, tolerance=0.01, min_trials=0, max_epochs=100)
    again.observe(_ok(0, 10.0))
    assert again.observe(TrialRecord(1, {}, status="pruned", n_epochs=75, pruned_at=75)) is False
    assert again.observe(_ok(2, 9.0)) is False and again.since == 0
    assert make_convergence_stop("auto", 100, max_epochs=40).max_epochs == 40


def test_restore_keeps_the_best_and_starts_counting_again():
    stop = ConvergenceStop(patience=2, min_trials=0)
    stop.restore([_ok(0, 5.0), _ok(1, 4.0), TrialRecord(2, {}, status="fail")])
    assert (stop.best, stop.since, stop.finished) == (4.0, 0, 3)
    assert stop.observe(_ok(3, 4.5)) is False and stop.observe(_ok(4, 4.2)) is True


@pytest.mark.parametrize("patience, max_evals, expected", [("auto", 100, 8), ("auto", 25, 8), ("auto", 300, 24), (5, 100, 5)])
def test_patience_scales_with_the_budget(patience, max_evals, expected):
    assert make_convergence_stop(patience, max_evals).patience == expected


def test_patience_none_and_bad_values():
    assert make_convergence_stop(None, 100) is None
    for bad in ("soon", 0, 2.5, True):
        with pytest.raises(ValueError, match="patience"):
            make_convergence_stop(bad, 100)


def test_a_patience_that_cannot_act_on_a_small_budget_says_so(caplog):
    """Probe 23: patience=2 with max_evals=15 silently did nothing (the stop looks from 20 trials on)."""
    with caplog.at_level("WARNING", logger="scanpy_autotune"):
        make_convergence_stop(2, 15)
        make_convergence_stop("auto", 15)  # the default says nothing: small searches run whole by design
        make_convergence_stop(2, 21)
    assert [r.getMessage() for r in caplog.records] == [
        "patience=2 cannot end this search early: the convergence stop looks at a search once 20 trials "
        "have finished, and max_evals=15"
    ]


def _plateau(trial_id: int, params: dict) -> Plan:
    # improves over the first 6 trials, then no trial comes near the best again
    return Plan(loss=100.0 - trial_id if trial_id < 6 else 200.0 + trial_id)


def test_a_converged_search_stops_early_lets_running_trials_finish_and_says_why(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal, _ = Journal.open(path, {"seed": 0})
    backend = ScriptedBackend(_plateau, n_slots=3)
    stop = ConvergenceStop(patience=5, min_trials=8)
    run = run_trials(backend, _tuner(), None, max_evals=50, journal=journal, default_params=DEFAULT,
                     progress=False, stopper=stop)
    assert run.converged_after == 11  # trials 6..10 gained nothing; at least 8 finished
    n = len(run.records)  # the trials still running then finished and count; none started after
    assert 11 <= n <= 13 and sorted(run.records) == list(range(n)) == backend.submitted
    assert run.stop_reason.startswith("converged: 5 trials' worth of training in a row")
    assert backend.shut_down_with is False  # nothing was abandoned
    _, records = Journal.open(path, {"seed": 0}, decode=TrialRecord.from_json)
    again, _ = Journal.open(path, {"seed": 0})
    assert again.notes == [{"kind": "stop", "reason": run.stop_reason, "n_trials": n, "max_evals": 50,
                            "converged_after": 11, "convergence": stop.describe()}]

    # resumed with the same budget and rule: nothing more runs, and it still says where it converged
    same = ScriptedBackend(_plateau, n_slots=3)
    rerun = run_trials(same, _tuner(), None, max_evals=50, resumed=records, journal=again,
                       default_params=DEFAULT, progress=False, stopper=ConvergenceStop(patience=5, min_trials=8))
    assert same.submitted == [] and rerun.stop_reason == run.stop_reason and rerun.converged_after == 11
    # probe 23: a smaller budget (or a less patient rule) would have stopped there too: nothing more runs
    for max_evals, patience in ((n + 2, 5), (50, 4), (n + 2, 3)):
        smaller = ScriptedBackend(_plateau, n_slots=1)
        rerun = run_trials(smaller, _tuner(), None, max_evals=max_evals, resumed=records, journal=again,
                           default_params=DEFAULT, progress=False,
                           stopper=ConvergenceStop(patience=patience, min_trials=8))
        assert smaller.submitted == [] and smaller.shut_down_with is False, (max_evals, patience)  # a Dask client closed
        assert rerun.stop_reason == f"{run.stop_reason} (in the run with max_evals=50, patience=5)"
    # with another patience the journal's stop no longer applies: it goes on under the new rule
    longer = ScriptedBackend(_plateau, n_slots=1)
    patient = run_trials(longer, _tuner(), None, max_evals=50, resumed=records, default_params=DEFAULT,
                         journal=again, progress=False, stopper=ConvergenceStop(patience=7, min_trials=8))
    assert longer.submitted == list(range(n, n + 7)) and patient.converged_after == n + 7
    assert patient.stop_reason.startswith("converged: 7 trials' worth")
    # with a larger budget it goes on, counting again from zero
    more = ScriptedBackend(_plateau, n_slots=1)
    resumed = run_trials(more, _tuner(), None, max_evals=60, resumed=records, journal=None,
                         default_params=DEFAULT, progress=False, stopper=ConvergenceStop(patience=5, min_trials=8))
    assert more.submitted == list(range(n, n + 5)) and resumed.converged_after == n + 5


def test_a_timeout_after_the_search_converged_keeps_the_convergence_as_the_reason(tmp_path):
    """The timeout only abandoned what was still running: the search had ended on its own."""
    def plateau_then_hang(trial_id, params):
        return Plan(end="hang") if trial_id == 10 else _plateau(trial_id, params)

    path = tmp_path / "journal.jsonl"
    journal, _ = Journal.open(path, {"seed": 0})
    backend = ScriptedBackend(plateau_then_hang, n_slots=2)
    run = run_trials(backend, _tuner(), None, max_evals=50, journal=journal, default_params=DEFAULT,
                     progress=False, stopper=ConvergenceStop(patience=5, min_trials=8), timeout=2.0)
    assert 10 not in run.records and backend.shut_down_with is True  # trial 10 hung and was abandoned
    assert run.stop_reason.startswith("converged: 5 trials' worth of training in a row")
    assert run.stop_reason.endswith("(the timeout of 2 s abandoned 1 trial(s) still running)")
    again, records = Journal.open(path, {"seed": 0}, decode=TrialRecord.from_json)
    converged = run.stop_reason.split(" (the timeout")[0]
    assert again.notes[-1]["reason"] == converged  # the journal remembers why it ended, not this run's timeout
    same = ScriptedBackend(_plateau, n_slots=2)
    rerun = run_trials(same, _tuner(), None, max_evals=50, resumed=records, journal=again,
                       default_params=DEFAULT, progress=False, stopper=ConvergenceStop(patience=5, min_trials=8))
    assert same.submitted == [] and rerun.stop_reason == converged  # a resume with this budget runs nothing more


def test_a_stop_that_comes_with_the_last_trial_leaves_the_budget_as_the_reason():
    """Converging when every trial of the budget has started stops nothing early: the budget ended it."""
    stop = ConvergenceStop(patience=5, min_trials=8)
    run = run_trials(ScriptedBackend(_plateau, n_slots=1), _tuner(), None, max_evals=11, default_params=DEFAULT,
                     progress=False, stopper=stop)
    assert stop.since >= 5  # the rule was met by the 11th trial (see the test above) ...
    assert len(run.records) == 11 and run.converged_after == 0  # ... but nothing was left to skip (0: never)
    assert run.stop_reason == "the budget: 11 of max_evals=11 trials"


def test_without_a_stop_the_budget_is_the_reason():
    run = run_trials(ScriptedBackend(_plateau), _tuner(), None, max_evals=9, default_params=DEFAULT, progress=False)
    assert len(run.records) == 9 and run.stop_reason == "the budget: 9 of max_evals=9 trials"


def test_optimization_history_marks_where_the_search_converged():
    import matplotlib.pyplot as plt

    records = [TrialRecord(i, {"n_latent": 5 + i}, status="ok", loss=10.0 - min(i, 3), completion_order=i) for i in range(8)]
    adata = ad.AnnData(np.zeros((2, 2), dtype=np.float32))
    adata.uns["autotune"] = build_results(records, settings={"converged_after": 7, "stop_reason": "converged: ..."},
                                          searched={"n_latent": "numeric"})
    ax = sat.pl.optimization_history(adata, show=False)
    (line,) = [artist for artist in ax.get_lines() if artist.get_gid() == "converged"]
    assert line.get_xdata()[0] == 7 and "converged after 7 trials" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close("all")
    assert math.isfinite(adata.uns["autotune"]["best"]["loss"])


def test_optimization_history_against_time_places_trials_where_they_finished():
    import matplotlib.pyplot as plt

    # two slots: trial i ran 60 s and finished at 30 s * (i + 2) after a start at t = 1000 s
    records = [
        TrialRecord(i, {"n_latent": 5 + i}, status="ok", loss=10.0 - min(i, 3), completion_order=i,
                    duration_s=60.0, finished_at=1000.0 + 30.0 * (i + 2))
        for i in range(8)
    ]
    adata = ad.AnnData(np.zeros((2, 2), dtype=np.float32))
    adata.uns["autotune"] = build_results(records, settings={"converged_after": 6}, searched={"n_latent": "numeric"})
    ax = sat.pl.optimization_history(adata, x="time", show=False)
    (points,) = [c for c in ax.collections if c.get_gid() == "points-ok"]
    np.testing.assert_allclose(points.get_offsets()[:, 0], [0.5 * (i + 2) for i in range(8)])
    (line,) = [artist for artist in ax.get_lines() if artist.get_gid() == "converged"]
    assert line.get_xdata()[0] == 3.5  # the sixth trial finished 3.5 min after the start
    assert ax.get_xlabel() == "minutes since the first trial started"
    plt.close("all")
    old = build_results([TrialRecord(0, {"n_latent": 5}, status="ok", loss=1.0)], settings={},
                        searched={"n_latent": "numeric"})
    adata.uns["autotune"] = old
    with pytest.raises(ValueError, match="x='time' needs the time each trial finished"):
        sat.pl.optimization_history(adata, x="time", show=False)
    with pytest.raises(ValueError, match="use 'trials' or 'time'"):
        sat.pl.optimization_history(adata, x="epochs", show=False)


def test_the_command_line_takes_the_patience():
    from scanpy_autotune import cli

    parser = cli.build_parser()
    assert parser.parse_args(["demo"]).patience == "auto"
    assert parser.parse_args(["demo", "--patience", "none"]).patience is None
    assert parser.parse_args(["demo", "--patience", "7"]).patience == 7
    assert cli.main(["demo", "--patience", "soon"]) == 2


def test_the_command_line_defaults_to_auto_pruning_and_random_startup():
    from scanpy_autotune import cli

    parser = cli.build_parser()
    args = parser.parse_args(["demo"])
    assert args.pruner == "auto" and args.startup == "none"
    kwargs = cli._main._search_kwargs(parser.parse_args(["demo", "--pruner", "none", "--startup", "winners"]))
    assert kwargs["pruner"] is None and kwargs["startup"] == "winners"
    assert cli._main._search_kwargs(args)["pruner"] == "auto" and cli._main._search_kwargs(args)["startup"] is None


def test_the_summary_says_what_pruning_stopped(caplog):
    from scanpy_autotune.tl._autotune import _log_summary

    records = [TrialRecord(0, {"n_latent": 5}, status="ok", loss=10.0, n_epochs=300, is_default=True),
               TrialRecord(1, {"n_latent": 6}, status="ok", loss=9.0, n_epochs=200),
               TrialRecord(2, {"n_latent": 7}, status="pruned", n_epochs=25),
               TrialRecord(3, {"n_latent": 8}, status="pruned", n_epochs=75)]
    uns = build_results(records, settings={"stop_reason": "the budget"}, searched={"n_latent": "numeric"})
    with caplog.at_level("INFO", logger="scanpy_autotune"):
        _log_summary(uns)
    assert "best trial 1: loss 9.000 (default 10.000, 10.00% better)" in caplog.text
    assert "pruning stopped 2 of 4 trials after 50 epochs on average (trials that finished: 250)" in caplog.text
