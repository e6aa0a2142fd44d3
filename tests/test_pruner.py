import heapq
import json
import logging
import math

import numpy as np
import pytest

from scanpy_autotune._record import TrialRecord
from scanpy_autotune._search._journal import Journal
from scanpy_autotune._search._pruner import (
    ASHAPruner,
    MedianPruner,
    Pruner,
    default_min_epochs,
    make_pruner,
)

# ---------------------------------------------------------------------------
# a controlled, noise-free asynchronous search
# ---------------------------------------------------------------------------

MAX_EPOCHS = 100


def _curve(quality: float, n_epochs: int = MAX_EPOCHS) -> list[float]:
    """Monotone learning curve; at every epoch a higher quality gives a higher ELBO."""
    epochs = np.arange(1, n_epochs + 1)
    return list(-2000.0 + 800.0 * (1.0 - np.exp(-epochs / 15.0)) + 10.0 * quality)


def _fixture(seed: int, n_trials: int = 30):
    rng = np.random.default_rng(seed)
    quality = rng.permutation(n_trials).astype(float)  # n_trials - 1 is the best
    epoch_time = rng.uniform(0.5, 2.0, size=n_trials)  # trials run at different speeds
    return quality, epoch_time


def _simulate(pruner, trial_ids, quality, epoch_time, n_workers=4):
    """Run ``trial_ids`` on ``n_workers`` slots, reporting at rungs in time order.

    Returns the finished records (with the rung values the runner stores) and the
    decisions ``(trial_id, rung, stop)`` in the order they were made.
    """
    rungs = pruner.rungs()
    queue = list(trial_ids)
    events = []  # (time, trial_id, rung_index); rung_index == len(rungs) means finished
    records, decisions, reported = {}, [], {}

    def start(trial_id, now):
        heapq.heappush(events, (now + rungs[0] * epoch_time[trial_id], trial_id, 0))

    for _ in range(min(n_workers, len(queue))):
        start(queue.pop(0), 0.0)
    while events:
        now, trial_id, k = heapq.heappop(events)
        curve = _curve(quality[trial_id])
        if k < len(rungs):
            rung = rungs[k]
            value = max(curve[:rung])  # the best validation ELBO so far, as the worker reports it
            reported.setdefault(trial_id, {})[rung] = value
            stop = pruner.report(trial_id, rung, value)
            decisions.append((trial_id, rung, stop))
            if not stop:
                following = rungs[k + 1] if k + 1 < len(rungs) else MAX_EPOCHS
                heapq.heappush(
                    events, (now + (following - rung) * epoch_time[trial_id], trial_id, k + 1)
                )
                continue
            n_epochs, status = rung, "pruned"
        else:
            n_epochs, status = MAX_EPOCHS, "ok"
        records[trial_id] = TrialRecord(
            trial_id,
            {"quality": float(quality[trial_id])},
            status=status,
            loss=1000.0 - quality[trial_id] if status == "ok" else math.nan,
            n_epochs=n_epochs,
            pruned_at=n_epochs - 1 if status == "pruned" else -1,
            history={"train_elbo": curve[:n_epochs], "validation_elbo": curve[:n_epochs]},
            rung_values=reported.get(trial_id, {}),
        )
        if queue:
            start(queue.pop(0), now)
    return [records[t] for t in sorted(records)], decisions


# ---------------------------------------------------------------------------
# rungs and settings
# ---------------------------------------------------------------------------


def test_asha_rung_positions():
    assert ASHAPruner(400).rungs() == [25, 75, 225]
    assert ASHAPruner(400, min_epochs=5, eta=3).rungs() == [5, 15, 45, 135]
    assert ASHAPruner(100, min_epochs=10, eta=2).rungs() == [10, 20, 40, 80]
    assert ASHAPruner(45, min_epochs=5, eta=3).rungs() == [5, 15]  # 45 is not below 45
    assert ASHAPruner(100).rungs() == [10, 30, 90]
    assert ASHAPruner(20).rungs() == [2, 6, 18]


def test_default_min_epochs():
    assert [default_min_epochs(m) for m in (1, 5, 20, 100, 249, 250, 400, 1000)] == [
        1,
        1,
        2,
        10,
        24,
        25,
        25,
        25,
    ]


def test_no_rung_left_warns_and_never_prunes(caplog):
    with caplog.at_level(logging.WARNING, logger="scanpy_autotune"):
        pruner = ASHAPruner(1)
    assert pruner.rungs() == []
    assert "no rung" in caplog.text


def test_median_rung_positions():
    assert MedianPruner(100).rungs() == [20, 30, 40, 50, 60, 70, 80, 90]
    assert MedianPruner(100, n_warmup_epochs=0, interval=25).rungs() == [25, 50, 75]
    assert MedianPruner(45, n_warmup_epochs=5, interval=20).rungs() == [5, 25]
    assert MedianPruner(10).rungs() == [5]  # default warm-up shrinks for short trials


# ---------------------------------------------------------------------------
# decisions
# ---------------------------------------------------------------------------


def test_asha_bad_trial_pruned_at_first_rung():
    pruner = ASHAPruner(400)
    first = pruner.rungs()[0]
    good = [-1210.0, -1190.0, -1250.0, -1180.0, -1230.0]
    answers = [pruner.report(i, first, v) for i, v in enumerate(good)]
    # grace for the first eta - 1 = 2; the third is the best of three; then top n // 3
    assert answers == [False, False, True, False, True]
    assert pruner.report(99, first, -5000.0) is True
    assert pruner.rung_table()[first][99] == -5000.0


def test_asha_quota_and_ties():
    pruner = ASHAPruner(400, min_epochs=10, eta=3, min_trials_per_rung=1)
    # Optuna's rule while n < eta: continue only if the best so far
    assert pruner.report(0, 10, -100.0) is False
    assert pruner.report(1, 10, -120.0) is True
    assert pruner.report(2, 10, -100.0) is False  # tie with the best continues
    # n = 6: top 2 continue; -90 is better than all
    assert pruner.report(3, 10, -110.0) is True
    assert pruner.report(4, 10, -130.0) is True
    assert pruner.report(5, 10, -90.0) is False
    # n = 7, keep 2: -100 ties the second best -> continue
    assert pruner.report(6, 10, -100.0) is False
    # n = 8, keep 2: -95 is second best -> continue
    assert pruner.report(7, 10, -95.0) is False


def test_second_report_of_a_trial_replaces_its_value():
    pruner = ASHAPruner(400, min_epochs=10, min_trials_per_rung=1)
    pruner.report(0, 10, -100.0)
    pruner.report(0, 10, -50.0)
    assert pruner.rung_table()[10] == {0: -50.0}


@pytest.mark.parametrize("value", [math.nan, -math.inf, math.inf])
@pytest.mark.parametrize("name", ["asha", "median"])
def test_non_finite_value_is_pruned_even_in_grace(name, value):
    pruner = make_pruner(name, 400)
    rung = pruner.rungs()[0]
    assert pruner.report(0, rung, value) is True
    assert pruner.rung_table()[rung] == {0: -math.inf}
    assert pruner.report(1, rung, -1000.0) is False


def test_report_off_rung_raises():
    pruner = ASHAPruner(400)
    with pytest.raises(ValueError, match="not a rung"):
        pruner.report(0, 26, -100.0)


def test_median_rule():
    pruner = MedianPruner(100, n_startup_trials=3, n_warmup_epochs=10, interval=10)
    assert [pruner.report(i, 10, v) for i, v in enumerate([-100.0, -300.0, -200.0])] == [
        False,
        False,
        False,
    ]
    assert pruner.report(3, 10, -250.0) is True  # median of others: -200
    assert pruner.report(4, 10, -225.0) is False  # median of -100, -200, -250, -300: -225 (tie)
    assert pruner.report(5, 10, -400.0) is True
    # other rungs keep their own tables
    assert pruner.report(3, 20, -1e6) is False


def _arrivals(decisions, rung):
    return [t for t, r, _ in decisions if r == rung]


@pytest.mark.parametrize("seed", range(5))
def test_asha_controlled_search(seed):
    quality, epoch_time = _fixture(seed)
    pruner = ASHAPruner(MAX_EPOCHS)  # rungs 10, 30, 90; grace for the first 2 at each
    first = pruner.rungs()[0]
    records, decisions = _simulate(pruner, range(30), quality, epoch_time)
    by_id = {r.trial_id: r for r in records}
    best = int(np.argmax(quality))
    assert by_id[best].status == "ok"
    assert by_id[best].n_epochs == MAX_EPOCHS
    assert not any(stop for t, _, stop in decisions if t == best)
    # every trial reported at the first rung once
    arrivals = _arrivals(decisions, first)
    assert sorted(arrivals) == list(range(30))
    # the worst third, unless among the 2 first arrivals (grace), stops at the first rung
    late_worst = [t for t in arrivals[2:] if quality[t] < 10]
    assert len(late_worst) >= 8
    assert all(by_id[t].status == "pruned" and by_id[t].n_epochs == first for t in late_worst)
    # most of the worse half stops at the first rung; only the grace ones may finish
    worse = [t for t in range(30) if quality[t] < 15]
    assert sum(by_id[t].n_epochs == first for t in worse) >= 13
    assert all(t in arrivals[:2] for t in worse if by_id[t].status == "ok")
    # a real saving: few trials run to the end
    assert sum(r.status == "ok" for r in records) <= 5


@pytest.mark.parametrize("seed", range(5))
def test_median_controlled_search(seed):
    quality, epoch_time = _fixture(seed)
    pruner = MedianPruner(MAX_EPOCHS)  # rungs 20, 30, ..., 90; 5 startup trials
    first = pruner.rungs()[0]
    records, decisions = _simulate(pruner, range(30), quality, epoch_time)
    by_id = {r.trial_id: r for r in records}
    best = int(np.argmax(quality))
    assert by_id[best].status == "ok"
    assert not any(stop for t, _, stop in decisions if t == best)
    arrivals = _arrivals(decisions, first)
    late_worst = [t for t in arrivals[5:] if quality[t] < 10]
    assert len(late_worst) >= 5
    assert all(by_id[t].n_epochs == first for t in late_worst)


def test_decisions_are_deterministic():
    quality, epoch_time = _fixture(0)
    runs = [_simulate(ASHAPruner(MAX_EPOCHS), range(30), quality, epoch_time)[1] for _ in range(2)]
    assert runs[0] == runs[1]


# ---------------------------------------------------------------------------
# restore
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["asha", "median"])
def test_restore_from_journal_reproduces_live_decisions(tmp_path, name):
    quality, epoch_time = _fixture(7, n_trials=40)
    live = make_pruner(name, MAX_EPOCHS)
    records_a, _ = _simulate(live, range(20), quality, epoch_time)
    assert any(r.status == "pruned" for r in records_a)
    table_a = live.rung_table()

    # through the journal (NaN -> null -> NaN), as a resumed search reads it
    settings = {"pruner": live.describe()}
    journal = Journal(tmp_path / "journal.jsonl", settings)
    for record in records_a:
        journal.append(record.to_json())
    journal.append(TrialRecord(20, {}, error="WorkerDied").to_json())  # no rung values: nothing
    _, resumed = Journal.open(
        tmp_path / "journal.jsonl", settings, decode=TrialRecord.from_json
    )
    assert [r.status for r in resumed] == [r.status for r in records_a] + ["fail"]
    assert [r.rung_values for r in resumed[:-1]] == [r.rung_values for r in records_a]

    restored = make_pruner(name, MAX_EPOCHS)
    restored.restore(resumed)
    assert restored.rung_table() == table_a
    # pruned trials contribute only up to the rung they stopped at
    for record in records_a:
        reached = [r for r, table in table_a.items() if record.trial_id in table]
        assert max(reached) <= record.n_epochs

    _, live_b = _simulate(live, range(21, 40), quality, epoch_time)
    _, restored_b = _simulate(restored, range(21, 40), quality, epoch_time)
    assert restored_b == live_b
    assert {stop for _, _, stop in live_b} == {True, False}  # non-trivial decisions
    assert restored.rung_table() == live.rung_table()


def test_restore_replays_the_reported_values():
    pruner = ASHAPruner(100, min_epochs=2, eta=2)  # rungs 2, 4, 8, 16, 32, 64
    records = [
        TrialRecord(0, {}, status="pruned", rung_values={2: -8.0, 4: -7.0}),
        TrialRecord(1, {}, status="ok", rung_values={4: -6.0, 2: -10.0}),  # any order
        TrialRecord(2, {}, status="pruned", rung_values={2: math.nan}),  # diverged: -inf, as live
        TrialRecord(3, {}, status="ok", rung_values={3: -1.0, 5: -2.0}),  # not rungs here: ignored
        TrialRecord(4, {}, status="fail"),  # failed before its first rung: nothing
    ]
    pruner.report(99, 2, -1.0)  # discarded by restore
    pruner.restore(records)
    table = pruner.rung_table()
    assert table[2] == {0: -8.0, 1: -10.0, 2: -math.inf}
    assert table[4] == {0: -7.0, 1: -6.0}
    assert table[8] == {}
    # the restored values decide as live ones would: at rung 4 only the best of 3 goes on
    assert pruner.report(5, 4, -6.5) is True
    assert pruner.report(6, 4, -5.0) is False


# ---------------------------------------------------------------------------
# make_pruner and describe
# ---------------------------------------------------------------------------


def test_make_pruner():
    assert make_pruner(None, 400) is None
    asha = make_pruner("asha", 400)
    assert isinstance(asha, ASHAPruner) and isinstance(asha, Pruner)
    assert (asha.min_epochs, asha.eta, asha.min_trials_per_rung) == (25, 3, 3)
    assert isinstance(make_pruner("Median", 400, interval=5), MedianPruner)
    assert make_pruner("asha", 400, eta=4, min_epochs=10).rungs() == [10, 40, 160]


@pytest.mark.parametrize(
    ("name", "max_epochs", "kwargs", "match"),
    [
        ("hyperband", 400, {}, r"Unknown pruner 'hyperband'; valid are \['auto', 'asha', 'median'\], or None \(also 'none'\)"),
        (
            "asha",
            400,
            {"reduction_factor": 3},
            r"reduction_factor.*valid are \['min_epochs', 'eta'",
        ),
        ("median", 400, {"eta": 3}, r"\['eta'\].*valid are \['n_startup_trials'"),
        (None, 400, {"eta": 3}, "without a pruner"),
        ("asha", 400, {"eta": 1}, "eta=1"),
        ("asha", 400, {"eta": 2.5}, "eta=2.5"),
        ("asha", 400, {"eta": True}, "eta=True"),
        ("asha", 400, {"min_epochs": 0}, "min_epochs=0"),
        ("asha", 400, {"min_epochs": 400}, "min_epochs=400 must be below max_epochs"),
        ("asha", 400, {"min_trials_per_rung": 0}, "min_trials_per_rung=0"),
        ("asha", 0, {}, "max_epochs=0"),
        ("median", 400, {"interval": 0}, "interval=0"),
        ("median", 400, {"n_startup_trials": -1}, "n_startup_trials=-1"),
        ("median", 400, {"n_warmup_epochs": 400}, "n_warmup_epochs=400"),
        ("median", 400, {"n_warmup_epochs": -1}, "n_warmup_epochs=-1"),
    ],
)
def test_make_pruner_errors(name, max_epochs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_pruner(name, max_epochs, **kwargs)


@pytest.mark.parametrize("name", ["asha", "median"])
def test_describe_is_json_and_rebuilds_the_pruner(name):
    pruner = make_pruner(name, 400)
    description = json.loads(json.dumps(pruner.describe()))
    assert description["name"] == name
    assert description["rungs"] == pruner.rungs()
    kwargs = {k: v for k, v in description.items() if k not in ("name", "max_epochs", "rungs")}
    again = make_pruner(description["name"], description["max_epochs"], **kwargs)
    assert again.describe() == pruner.describe()
    assert name in repr(pruner).lower()


@pytest.mark.parametrize(
    ("max_epochs", "first", "rungs"),
    [(400, 25, [25, 75, 225]), (100, 25, [25, 75]), (40, 10, [10, 30]), (20, 5, [5, 15]), (19, None, None)],
)
def test_auto_pruner_starts_at_a_quarter_of_the_epochs_up_to_25(max_epochs, first, rungs):
    from scanpy_autotune._search._pruner import auto_min_epochs

    assert auto_min_epochs(max_epochs) == first
    pruner = make_pruner("auto", max_epochs)
    if rungs is None:
        assert pruner is None  # too short to judge early
    else:
        assert isinstance(pruner, ASHAPruner) and pruner.rungs() == rungs
        assert pruner.describe()["eta"] == 3 and pruner.describe()["min_trials_per_rung"] == 3


def test_auto_pruner_takes_only_startup_rungs():
    with pytest.raises(ValueError, match=r"pruner='auto', which sets its own; it takes only \['startup_rungs'\]"):
        make_pruner("auto", 400, min_epochs=5)
    spared = make_pruner("auto", 400, max_evals=100, tpe_startup=20, startup_rungs=2)
    assert spared.rungs() == [25, 75, 225] and spared.startup_trials == 20 and spared.startup_rungs == 2
    assert make_pruner("auto", 40, max_evals=12, startup_rungs=2) is None  # short: unpruned, as without it
    from scanpy_autotune._search._search import _make_search_pruner

    searched = _make_search_pruner("auto", None, 400, 100, {"startup_rungs": 2})  # pruner_kwargs of autotune
    assert searched.describe() == spared.describe() and searched.describe()["startup_rungs"] == 2
    with pytest.raises(ValueError, match="startup_rungs"):
        make_pruner("auto", 40, max_evals=12, startup_rungs=0)  # checked even where it would not apply


def test_auto_pruner_leaves_searches_with_another_objective_unpruned(caplog):
    from scanpy_autotune._search._search import _make_search_pruner

    assert isinstance(_make_search_pruner("auto", None, 400, 100, {}), ASHAPruner)
    with caplog.at_level(logging.INFO, logger="scanpy_autotune"):
        assert _make_search_pruner("auto", "integration", 400, 100, {}) is None
        assert _make_search_pruner("AUTO", lambda model, adata: 0.0, 400, 100, {}) is None
    assert "optimises integration; pass pruner='asha'" in caplog.text and "a custom objective" in caplog.text
    assert isinstance(_make_search_pruner("asha", "integration", 400, 100, {}), ASHAPruner)  # asked for: pruned
    with pytest.raises(ValueError, match="pruner='auto', which sets its own"):
        _make_search_pruner("auto", "integration", 400, 100, {"min_epochs": 5})


def test_auto_pruner_leaves_short_searches_unpruned(caplog):
    from scanpy_autotune._search._pruner import AUTO_MIN_TRIALS

    with caplog.at_level(logging.INFO, logger="scanpy_autotune"):
        assert make_pruner("auto", 40, max_evals=12) is None
    assert "no pruning in a search of 12 trials (it prunes from 30)" in caplog.text
    assert make_pruner("auto", 40, max_evals=AUTO_MIN_TRIALS - 1) is None
    assert make_pruner("auto", 40, max_evals=AUTO_MIN_TRIALS).rungs() == [10, 30]
    assert make_pruner("asha", 40, max_evals=12).rungs() == [4, 12, 36]  # asked for: pruned at any budget
    with pytest.raises(ValueError, match="max_evals"):
        make_pruner("auto", 40, max_evals=0)


def test_a_resumed_auto_search_keeps_the_pruning_it_started_with(tmp_path, caplog):
    from scanpy_autotune._search._resume import pruner_of_resumed_journal

    short = tmp_path / "short.jsonl"
    Journal.open(short, {"pruner": "none"})[0].close()
    asha = make_pruner("auto", 400, max_evals=100)
    with caplog.at_level(logging.INFO, logger="scanpy_autotune"):
        assert pruner_of_resumed_journal(short, "auto", asha, 400) is None
    assert "was searched without pruning; so is the rest" in caplog.text
    assert pruner_of_resumed_journal(short, "asha", asha, 400) is asha  # asked for explicitly: kept

    pruned = tmp_path / "pruned.jsonl"
    Journal.open(pruned, {"pruner": asha.describe()})[0].close()
    again = pruner_of_resumed_journal(pruned, "auto", None, 400)
    assert isinstance(again, ASHAPruner) and again.describe() == asha.describe()
    assert pruner_of_resumed_journal(tmp_path / "new.jsonl", "auto", None, 400) is None  # nothing to resume
    (tmp_path / "notes.txt").write_text("my lab notes")
    assert pruner_of_resumed_journal(tmp_path / "notes.txt", "auto", asha, 400) is asha


def test_start_up_trials_are_judged_only_from_the_second_rung():
    pruner = ASHAPruner(400, min_epochs=25, startup_trials=4)
    assert pruner.rungs() == [25, 75, 225]
    for trial_id, value in enumerate([-100.0, -101.0, -102.0]):  # grace: the first eta at a rung go on
        assert not pruner.report(trial_id, 25, value)
    assert not pruner.report(3, 25, -500.0)  # the worst so far, but a start-up trial at the first rung
    assert pruner.report(4, 25, -500.0)  # the same value after the start-up is stopped
    assert pruner.rung_table()[25][3] == -500.0  # the start-up trial's value still counts for the others
    for trial_id, value in enumerate([-92.0, -91.0, -90.0]):  # the third is judged, and the best
        assert not pruner.report(trial_id, 75, value)
    assert pruner.report(3, 75, -400.0)  # from the second rung on, start-up trials are judged too
    assert pruner.report(0, 25, math.nan)  # a diverged start-up trial is stopped at once


def test_start_up_trials_can_be_spared_at_more_rungs():
    pruner = make_pruner("asha", 400, min_epochs=25, startup_trials=4, startup_rungs=2)
    for rung in (25, 75):
        for trial_id, value in enumerate([-100.0, -101.0, -102.0]):
            assert not pruner.report(trial_id, rung, value)
        assert not pruner.report(3, rung, -500.0)  # the worst, spared at the first two rungs
        assert pruner.report(4 + (rung == 75), rung, -500.0)  # a modelled trial with the same value is stopped
    assert not pruner.report(0, 225, -100.0) and not pruner.report(1, 225, -101.0)
    assert pruner.report(3, 225, -500.0)  # judged from the third rung on
    description = json.loads(json.dumps(pruner.describe()))
    assert description["startup_rungs"] == 2
    kwargs = {k: v for k, v in description.items() if k not in ("name", "max_epochs", "rungs")}
    assert make_pruner("asha", 400, **kwargs).describe() == description
    assert "startup_rungs" not in make_pruner("auto", 400, max_evals=100, tpe_startup=20).describe()
    with pytest.raises(ValueError, match="startup_rungs"):
        make_pruner("asha", 400, startup_rungs=0)


def test_the_auto_pruner_spares_tpe_start_up_at_its_first_rung():
    from scanpy_autotune._search._search import _make_search_pruner
    from scanpy_autotune._search._tpe import startup_trials

    pruner = _make_search_pruner("auto", None, 400, 100, {})
    assert pruner.startup_trials == startup_trials(100) == 20
    assert pruner.describe()["startup_trials"] == 20
    assert "startup_trials" not in make_pruner("asha", 400).describe()  # 0: as journals before it read
    assert make_pruner("asha", 400, startup_trials=7).describe()["startup_trials"] == 7
    with pytest.raises(ValueError, match="startup_trials"):
        make_pruner("asha", 400, startup_trials=-1)


def test_a_journal_pruned_before_the_start_up_rule_is_resumed_with_its_own_pruning(tmp_path):
    from scanpy_autotune._search._resume import pruner_of_resumed_journal

    old = make_pruner("asha", 400, min_epochs=25)  # what "auto" stored before start-up trials were spared
    journal = tmp_path / "old.jsonl"
    Journal.open(journal, {"pruner": old.describe()})[0].close()
    now = make_pruner("auto", 400, max_evals=100, tpe_startup=20)
    resumed = pruner_of_resumed_journal(journal, "auto", now, 400)
    assert resumed.describe() == old.describe() and resumed.startup_trials == 0
    current = tmp_path / "current.jsonl"
    Journal.open(current, {"pruner": now.describe()})[0].close()
    assert pruner_of_resumed_journal(current, "auto", now, 400) is now
