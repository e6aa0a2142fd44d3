import logging
import math

import numpy as np
import pytest
from hyperopt import JOB_STATE_DONE, JOB_STATE_RUNNING, STATUS_FAIL, STATUS_OK, Trials, tpe

from scanpy_autotune._search import _tpe
from scanpy_autotune._search._space import build_space
from scanpy_autotune._search._tpe import AskTellTPE, trial_seed
from scanpy_autotune._vae._config import HYPERPARAMETERS

H = HYPERPARAMETERS
DEFAULT = {name: spec.default for name, spec in H.items()}


def _loss(params):
    return (
        (params["n_latent"] - 10) ** 2
        + params["n_layers"]
        + math.log10(params["lr"]) ** 2
        + (params["reconstruction_loss"] == "nb")
        + params["dropout_rate"]
    )


def _run(seed, n=24, workers=3):
    """An asynchronous search: `workers` trials in flight, told oldest first."""
    tuner = AskTellTPE(build_space(None, H), seed=seed, n_startup_jobs=8)
    history = []
    in_flight = []
    while len(history) < n:
        while len(in_flight) < workers:
            in_flight.append(tuner.ask())
        trial_id, params = in_flight.pop(0)
        history.append((trial_id, params))
        status = "fail" if trial_id % 7 == 3 else "ok"
        tuner.tell(trial_id, float("nan") if status == "fail" else _loss(params), status)
    return history


def test_same_seed_same_suggestions_and_plain_types():
    first, second = _run(seed=3), _run(seed=3)
    assert first == second
    assert [tid for tid, _ in first] == list(range(24))
    for _, params in first:
        assert {type(v) for v in params.values()} <= {int, float, str}
    assert _run(seed=4) != first
    start_up = [tuple(sorted(params.items())) for _, params in first[:8]]
    assert len(set(start_up)) == 8  # each random start-up draw has its own seed


def test_tpe_learns_after_startup():
    """Uniform sampling of 1..40 gives E|x - 30| = 12.25; TPE concentrates near 30."""
    tuner = AskTellTPE(build_space({"n_latent": ("int", 1, 40)}, H), seed=0, n_startup_jobs=5)
    values = []
    for _ in range(40):
        trial_id, params = tuner.ask()
        values.append(params["n_latent"])
        tuner.tell(trial_id, abs(params["n_latent"] - 30), "ok")
    assert set(values) <= set(range(1, 41))
    assert np.mean(np.abs(np.array(values[10:]) - 30)) < 9.5


def test_trial_ids_skip_known_trials_and_default_as_trial_zero():
    space = build_space(None, H)
    tuner = AskTellTPE(space, seed=0)
    tuner.tell_known(0, DEFAULT, 1000.0, "ok")
    tuner.tell_known(2, {**DEFAULT, "n_hidden": 1000}, 900.0, "ok")  # outside: reserved only
    ids = [tuner.ask()[0] for _ in range(3)]
    assert ids == [1, 3, 4]
    assert tuner.pending == [1, 3, 4]
    assert tuner.n_finished == 2
    assert sorted(tuner.trials.tids) == [0, 1, 3, 4]  # trial 2 is not learned
    assert tuner.mean_loss == 1000.0
    with pytest.raises(ValueError, match="already in use"):
        tuner.tell_known(3, DEFAULT, 1.0, "ok")


def test_default_configuration_as_a_pending_trial():
    tuner = AskTellTPE(build_space(None, H), seed=0)
    assert tuner.ask_known(DEFAULT) == 0
    assert tuner.ask()[0] == 1
    assert tuner.pending == [0, 1]
    tuner.tell(0, 1200.0, "ok")
    doc = next(d for d in tuner.trials.trials if d["tid"] == 0)
    assert doc["result"] == {"status": STATUS_OK, "loss": 1200.0}
    assert doc["misc"]["vals"]["n_latent"] == [10.0]
    assert doc["misc"]["vals"]["lr"] == [2]  # choice index of 1e-3


def test_statuses():
    tuner = AskTellTPE(build_space(None, H), seed=0)
    ids = [tuner.ask()[0] for _ in range(6)]
    tuner.tell(ids[0], 10.0, "ok")
    tuner.tell(ids[1], float("nan"), "fail")
    tuner.tell(ids[2], None, "pruned")
    tuner.tell(ids[3], 30.0, "pruned")  # a pruned trial's loss is not learned either
    tuner.tell(ids[4], 5.0, "fail")  # a failed trial's loss is not learned
    results = {d["tid"]: d["result"] for d in tuner.trials.trials}
    assert results[ids[0]] == {"status": STATUS_OK, "loss": 10.0}
    assert results[ids[1]] == {"status": STATUS_FAIL}
    assert results[ids[2]] == {"status": STATUS_FAIL}
    assert results[ids[3]] == {"status": STATUS_FAIL}
    assert results[ids[4]] == {"status": STATUS_FAIL}
    assert tuner.mean_loss == 10.0
    assert tuner.n_finished == 5 and tuner.pending == [ids[5]]
    with pytest.raises(ValueError, match="already told"):
        tuner.tell(ids[0], 1.0, "ok")
    with pytest.raises(ValueError, match="not pending"):
        tuner.tell(99, 1.0, "ok")
    with pytest.raises(ValueError, match="status"):
        tuner.tell(ids[5], 1.0, "done")


def test_ok_with_nan_loss_is_learned_as_failed(caplog):
    tuner = AskTellTPE(build_space(None, H), seed=0)
    trial_id, _ = tuner.ask()
    with caplog.at_level(logging.WARNING, logger="scanpy_autotune"):
        tuner.tell(trial_id, float("nan"), "ok")
    assert "treats it as failed" in caplog.text
    assert tuner.trials.trials[0]["result"] == {"status": STATUS_FAIL}
    assert tuner.mean_loss is None


def test_unknown_tpe_argument():
    with pytest.raises(TypeError, match="n_EI"):
        AskTellTPE(build_space(None, H), seed=0, n_EI=3)


# -- pending trials --------------------------------------------------------------------


def test_model_trials_mock_pending_with_mean_loss(monkeypatch):
    """Structural: what tpe.suggest receives holds pending trials as ok with the mean loss."""
    tuner = AskTellTPE(build_space(None, H), seed=0)
    a, _ = tuner.ask()
    b, _ = tuner.ask()
    # nothing finished yet: pending trials are left out
    assert len(tuner.model_trials().trials) == 0
    c, _ = tuner.ask()
    d, _ = tuner.ask()
    tuner.tell(a, 10.0, "ok")
    tuner.tell(b, 40.0, "ok")
    tuner.tell(c, float("nan"), "fail")

    seen = []
    real_suggest = tpe.suggest

    def spy(new_ids, domain, trials, seed, **kwargs):
        seen.append(trials)
        return real_suggest(new_ids, domain, trials, seed, **kwargs)

    monkeypatch.setattr(_tpe.tpe, "suggest", spy)
    e, _ = tuner.ask()
    (model,) = seen
    by_tid = {doc["tid"]: doc for doc in model.trials}
    assert sorted(by_tid) == [a, b, c, d]
    assert by_tid[d]["state"] == JOB_STATE_DONE
    assert by_tid[d]["result"] == {"status": STATUS_OK, "loss": 25.0}
    assert by_tid[c]["result"] == {"status": STATUS_FAIL}
    assert by_tid[a]["result"]["loss"] == 10.0

    # the mock does not leak into the real records
    real = {doc["tid"]: doc for doc in tuner.trials.trials}
    assert real[d]["state"] == JOB_STATE_RUNNING and "loss" not in real[d]["result"]
    assert real[e]["state"] == JOB_STATE_RUNNING and "loss" not in real[e]["result"]
    assert tuner.pending == [d, e]
    assert tuner.mean_loss == 25.0

    # the next ask mocks both pending trials
    seen.clear()
    tuner.ask()
    mocked = {doc["tid"]: doc["result"] for doc in seen[0].trials}
    assert mocked[d] == mocked[e] == {"status": STATUS_OK, "loss": 25.0}


def _skewed_tuner(seed):
    """1-D search: one very good trial at 0.1, 70 poor ones in [0.3, 0.55] (mean below
    all of them), two trials pending at 0.8."""
    space = build_space({"dropout_rate": ("uniform", 0.0, 0.9)}, H)
    tuner = AskTellTPE(space, seed=seed)
    tuner.tell_known(0, {"dropout_rate": 0.1}, 0.0, "ok")
    for i, x in enumerate(np.linspace(0.3, 0.55, 70)):
        tuner.tell_known(i + 1, {"dropout_rate": float(x)}, 10.0 + 0.001 * i, "ok")
    tuner.ask_known({"dropout_rate": 0.8})
    tuner.ask_known({"dropout_rate": 0.8})
    return tuner


def test_pending_trials_are_neither_ignored_nor_infinitely_bad():
    """Behavioural: the suggestion follows from the pending trials' mean loss.

    The mean loss (9.89) beats every poor trial, so with mean-mocking TPE's "good"
    group (the best ceil(0.25 * sqrt(73)) = 3 trials) is the 0.1 trial and the two
    pending ones at 0.8, and TPE suggests near 0.8. hyperopt's own treatment
    (pending = infinite loss) and ignoring pending trials both keep the good group
    away from 0.8, so they never suggest there.
    """
    seeds = range(15)
    ours, infinite, ignored = [], [], []
    for seed in seeds:
        tuner = _skewed_tuner(seed)
        assert tuner.mean_loss < 10.0
        trial_id, params = tuner.ask()
        assert trial_id == 73
        ours.append(params["dropout_rate"])

        tuner = _skewed_tuner(seed)
        rng_seed = trial_seed(seed, 73)
        (doc,) = tpe.suggest([73], tuner._domain, tuner.trials, rng_seed, verbose=False)
        infinite.append(doc["misc"]["vals"]["dropout_rate"][0])

        finished = Trials()
        finished._insert_trial_docs(
            [d for d in tuner.trials.trials if d["state"] == JOB_STATE_DONE]
        )
        finished.refresh()
        (doc,) = tpe.suggest([73], tuner._domain, finished, rng_seed, verbose=False)
        ignored.append(doc["misc"]["vals"]["dropout_rate"][0])

    def near_pending(values):
        return np.mean(np.abs(np.asarray(values) - 0.8) < 0.1)

    assert near_pending(ours) >= 0.8
    assert near_pending(infinite) <= 0.1
    assert near_pending(ignored) <= 0.1


def test_trial_seed_is_deterministic_and_distinct():
    assert trial_seed(0, 5) == trial_seed(0, 5)
    assert len({trial_seed(s, t) for s in range(5) for t in range(50)}) == 250
    assert 0 <= trial_seed(-1, 3) < 2**32


@pytest.mark.parametrize(("max_evals", "expected"), [(1, 4), (5, 4), (12, 4), (13, 5), (20, 7), (30, 10), (58, 20), (100, 20)])
def test_startup_trials_is_a_third_of_the_budget_from_4_to_20(max_evals, expected):
    from scanpy_autotune._search._tpe import startup_trials

    assert startup_trials(max_evals) == expected


def test_tpe_models_after_the_startup_trials():
    """The first ``n_startup_jobs`` suggestions are random draws; the next ones come from TPE's model."""
    space = build_space(None, H)

    def draws(n_startup: int, seed: int) -> list[dict]:
        tuner = AskTellTPE(space, seed=seed, n_startup_jobs=n_startup)
        suggested = []
        for _ in range(6):
            trial_id, params = tuner.ask()
            suggested.append(params)
            tuner.tell(trial_id, 100.0 + params["n_latent"], "ok")
        return suggested

    for seed in range(3):
        modelled, random, never = draws(4, seed), draws(20, seed), draws(1000, seed)
        assert modelled[:4] == random[:4] == never[:4]  # start-up: the same random draws
        assert random[4:] == never[4:]  # still drawing at random
        assert modelled[4:] != random[4:]  # modelled from the 5th trial on
