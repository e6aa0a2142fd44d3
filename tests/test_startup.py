"""Start-up configurations: which run, in which order, how they are recorded and resumed."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from _scripted_backend import Plan, ScriptedBackend

from scanpy_autotune._record import TrialRecord
from scanpy_autotune._results import build_results, read_results
from scanpy_autotune._search._journal import Journal
from scanpy_autotune._search._runner import run_trials
from scanpy_autotune._search._space import build_space, integration_space_spec
from scanpy_autotune._search._startup import WINNERS, startup_configs
from scanpy_autotune._search._tpe import AskTellTPE
from scanpy_autotune._vae._config import HYPERPARAMETERS, default_hyperparameters

SPACE = {"n_hidden": [64, 128, 256], "n_latent": ("int", 2, 12)}
DEFAULT = {"n_hidden": 128, "n_latent": 10}


def _space(spec=None):
    return build_space(spec, HYPERPARAMETERS)


def test_the_winners_fit_the_default_space_in_order():
    chosen = startup_configs("winners", _space())
    assert [c.source for c in chosen] == [w.source for w in WINNERS]
    assert [c.params for c in chosen] == [dict(w.params) for w in WINNERS]
    assert startup_configs(None, _space()) == []


def test_winners_outside_the_space_are_left_out_and_fixed_values_imposed():
    # n_latent 15 (the Cortex winner) is outside 2..12; the others are inside
    chosen = startup_configs("winners", _space({**SPACE, "dispersion": "gene-batch"}))
    assert [c.source for c in chosen] == [w.source for w in WINNERS if w.params["n_latent"] <= 12]
    assert all(c.params["dispersion"] == "gene-batch" for c in chosen)
    assert all(set(c.params) == {"n_hidden", "n_latent", "dispersion"} for c in chosen)


def test_winners_take_the_model_s_defaults_for_names_they_do_not_give(caplog):
    # the integration space also searches max_kl_weight; the winners were trained with its default, 1
    space = _space(integration_space_spec())
    chosen = startup_configs("winners", space, default_hyperparameters())
    assert [c.params for c in chosen] == [{**w.params, "max_kl_weight": 1.0} for w in WINNERS]
    # without the defaults (or when the default lies outside the space) none fits, and a warning says so
    spec = {**integration_space_spec(), "max_kl_weight": ("log", 2.0, 100.0)}
    with caplog.at_level("WARNING", logger="scanpy_autotune"):
        assert startup_configs("winners", _space(spec), default_hyperparameters()) == []
    assert "no winner of earlier searches lies inside the search space" in caplog.text
    assert "max_kl_weight" in caplog.text


def test_given_configurations_are_checked_against_the_space():
    space = _space(SPACE)
    given = startup_configs([{"n_hidden": 64, "n_latent": 3}], space)
    assert [c.params for c in given] == [{"n_hidden": 64, "n_latent": 3}] and given[0].source == "given startup[0]"
    with pytest.raises(ValueError, match=r"startup\[0\] gives no value .*n_latent"):
        startup_configs([{"n_hidden": 64}], space)
    with pytest.raises(ValueError, match=r"startup\[1\] = .* lies outside the search space"):
        startup_configs([{"n_hidden": 64, "n_latent": 3}, {"n_hidden": 32, "n_latent": 3}], space)
    with pytest.raises(ValueError, match="'winners'"):
        startup_configs("best", space)
    with pytest.raises(ValueError, match="not a dict"):
        startup_configs([("n_hidden", 64)], space)
    with pytest.raises(ValueError, match="list of configurations"):
        startup_configs({"n_hidden": 64, "n_latent": 3}, space)


def _loss(params):
    return 100.0 + abs(params["n_latent"] - 7) + params["n_hidden"] / 64


def test_startup_configurations_run_after_the_default_and_before_tpe(tmp_path):
    space = _space(SPACE)
    startup = startup_configs([{"n_hidden": 64, "n_latent": 7}, {"n_hidden": 256, "n_latent": 2}], space)
    path = tmp_path / "journal.jsonl"
    journal, _ = Journal.open(path, {"seed": 0})
    backend = ScriptedBackend(lambda t, p: Plan(loss=_loss(p)), n_slots=2)
    tuner = AskTellTPE(space, seed=0)
    run = run_trials(
        backend, tuner, None, max_evals=6, journal=journal, default_params=DEFAULT, startup=startup,
        progress=False,
    )
    journal.close()
    assert backend.submitted[:3] == [0, 1, 2]
    assert run.records[0].is_default and run.records[0].startup == ""
    assert run.records[1].params == {"n_hidden": 64, "n_latent": 7} and run.records[1].startup == "given startup[0]"
    assert run.records[2].params == {"n_hidden": 256, "n_latent": 2} and run.records[2].startup == "given startup[1]"
    assert all(run.records[t].startup == "" for t in (3, 4, 5))
    assert run.best_record().trial_id == 1  # the best of this scripted loss, run first
    # TPE learned from the start-up trials like from any other
    assert tuner.n_finished == 6

    # resume with a larger budget: nothing that finished runs again, the column survives the journal
    _, resumed = Journal.open(path, {"seed": 0}, decode=TrialRecord.from_json)
    assert {r.trial_id: r.startup for r in resumed}[2] == "given startup[1]"
    backend = ScriptedBackend(lambda t, p: Plan(loss=_loss(p)), n_slots=2)
    more = run_trials(
        backend, AskTellTPE(space, seed=0), None, max_evals=8, resumed=resumed, default_params=DEFAULT,
        startup=startup, progress=False,
    )
    assert backend.submitted == [6, 7] and sorted(more.records) == list(range(8))


def test_a_startup_trial_lost_with_its_worker_runs_again_on_resume():
    space = _space(SPACE)
    startup = startup_configs([{"n_hidden": 64, "n_latent": 7}, {"n_hidden": 256, "n_latent": 2}], space)
    done = [TrialRecord(trial_id=0, params=DEFAULT, status="ok", loss=110.0, is_default=True),
            TrialRecord(trial_id=1, params={"n_hidden": 64, "n_latent": 7}, status="ok", loss=101.0,
                        startup="given startup[0]")]
    backend = ScriptedBackend(lambda t, p: Plan(loss=_loss(p)), n_slots=1)
    run = run_trials(
        backend, AskTellTPE(space, seed=0), None, max_evals=4, resumed=done, default_params=DEFAULT,
        startup=startup, progress=False,
    )
    assert backend.submitted == [2, 3]
    assert run.records[2].params == {"n_hidden": 256, "n_latent": 2} and run.records[2].startup == "given startup[1]"


def test_the_startup_column_reaches_uns_and_old_results_read_without_it(tmp_path):
    records = [TrialRecord(trial_id=0, params=DEFAULT, status="ok", loss=110.0, is_default=True).to_json(),
               TrialRecord(trial_id=1, params={"n_hidden": 64, "n_latent": 7}, status="ok", loss=101.0,
                           startup="winner on x").to_json()]
    uns = build_results(records, settings={"seed": 0}, searched={"n_hidden": "categorical", "n_latent": "numeric"})
    assert list(uns["trials"]["startup"]) == ["", "winner on x"]
    adata = ad.AnnData(np.zeros((2, 1), dtype=np.float32), uns={"autotune": uns})
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = read_results(ad.read_h5ad(tmp_path / "a.h5ad"))
    assert list(back.trials["startup"]) == ["", "winner on x"]
    old = {**uns, "trials": uns["trials"].drop(columns="startup")}
    assert list(read_results(ad.AnnData(np.zeros((2, 1), dtype=np.float32), uns={"autotune": old})).trials["startup"]) == ["", ""]
    assert list(back.trials.columns[:3]) == ["trial_id", "status", "loss"]
    assert list(back.trials.columns).index("startup") < list(back.trials.columns).index("n_hidden")


def test_startup_configurations_given_on_resume_run_next():
    """A journal started without start-up configurations: those given on resume run next,
    under the next free ids, and only once."""
    space = _space(SPACE)
    done = [TrialRecord(trial_id=0, params=DEFAULT, status="ok", loss=110.0, is_default=True)] + [
        TrialRecord(trial_id=t, params={"n_hidden": 64, "n_latent": 8 + t}, status="ok", loss=100.0 + t)
        for t in (1, 2, 3)
    ]
    startup = startup_configs([{"n_hidden": 256, "n_latent": 7}, {"n_hidden": 64, "n_latent": 2}], space)
    backend = ScriptedBackend(lambda t, p: Plan(loss=_loss(p)), n_slots=1)
    run = run_trials(backend, AskTellTPE(space, seed=0), None, max_evals=7, resumed=done,
                     default_params=DEFAULT, startup=startup, progress=False)
    assert backend.submitted == [4, 5, 6]
    assert run.records[4].params == {"n_hidden": 256, "n_latent": 7} and run.records[4].startup == "given startup[0]"
    assert run.records[5].params == {"n_hidden": 64, "n_latent": 2} and run.records[5].startup == "given startup[1]"
    assert run.records[6].startup == ""  # then TPE

    # resumed again with the same start-up configurations: they ran, so TPE goes on
    again = ScriptedBackend(lambda t, p: Plan(loss=_loss(p)), n_slots=1)
    more = run_trials(again, AskTellTPE(space, seed=0), None, max_evals=9, resumed=list(run.records.values()),
                      default_params=DEFAULT, startup=startup, progress=False)
    assert again.submitted == [7, 8] and all(more.records[t].startup == "" for t in (7, 8))


def test_the_default_runs_on_resume_when_the_journal_started_without_it():
    space = _space(SPACE)
    done = [TrialRecord(trial_id=t, params={"n_hidden": 64, "n_latent": t + 2}, status="ok", loss=100.0 + t)
            for t in (0, 1)]
    backend = ScriptedBackend(lambda t, p: Plan(loss=_loss(p)), n_slots=1)
    run = run_trials(backend, AskTellTPE(space, seed=0), None, max_evals=4, resumed=done,
                     default_params=DEFAULT, progress=False)
    assert backend.submitted == [2, 3]
    assert run.records[2].is_default and run.records[2].params == DEFAULT
    assert not run.records[3].is_default


def test_trial_0_of_a_journal_written_before_is_default_is_the_default_everywhere():
    """Probe 24: the runner took trial 0 with the default's parameters for the default (not run
    again), but the results, reading ``is_default`` only, then had no default to compare with."""
    from scanpy_autotune._search._resume import mark_default_of_old_journal

    space = _space(SPACE)
    lines = [TrialRecord(trial_id=t, params=p, status="ok", loss=100.0 + t).to_json()
             for t, p in ((0, DEFAULT), (1, {"n_hidden": 64, "n_latent": 3}))]
    for line in lines:
        del line["is_default"]  # as journals written before the field
    done = [TrialRecord.from_json(line) for line in lines]
    mark_default_of_old_journal(done, DEFAULT)
    assert [r.is_default for r in done] == [True, False]
    backend = ScriptedBackend(lambda t, p: Plan(loss=_loss(p)), n_slots=1)
    run = run_trials(backend, AskTellTPE(space, seed=0), None, max_evals=3, resumed=done,
                     default_params=DEFAULT, progress=False)
    assert backend.submitted == [2] and not run.records[2].is_default  # the default did not run again
    uns = build_results([run.records[t].to_json() for t in sorted(run.records)], settings={"seed": 0},
                        searched=space.searched_kinds())
    assert uns["default"] == {"trial_id": 0, "loss": 100.0}

    other = [TrialRecord.from_json({**lines[0], "params": {"n_hidden": 64, "n_latent": 10}})]
    mark_default_of_old_journal(other, DEFAULT)  # trial 0 of another configuration is not the default
    marked_elsewhere = [TrialRecord(trial_id=0, params=DEFAULT, status="ok", loss=1.0),
                        TrialRecord(trial_id=5, params=DEFAULT, status="ok", loss=1.0, is_default=True)]
    mark_default_of_old_journal(marked_elsewhere, DEFAULT)  # a journal that says which trial it was
    assert not other[0].is_default and [r.is_default for r in marked_elsewhere] == [False, True]
