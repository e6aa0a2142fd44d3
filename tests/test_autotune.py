"""The search end to end, on real counts, with real worker processes."""

import json
import logging
import math
import os
import shutil
import signal
import threading
import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from _helpers import interrupt_when, journal_trials, worker_processes

import scanpy_autotune as sat

SMALL = dict(max_epochs=4, n_mc=5, progress=False)


def _subset(cortex: ad.AnnData, n: int = 400) -> ad.AnnData:
    sub = cortex[np.random.default_rng(0).choice(cortex.n_obs, n, replace=False)].copy()
    return sub


@pytest.fixture
def small(cortex):
    return _subset(cortex)


@pytest.mark.slow
def test_default_trial_first_and_schema(search_result):
    adata = search_result
    uns = adata.uns["autotune"]
    trials = uns["trials"]
    assert list(trials["trial_id"]) == list(range(len(trials)))
    first = trials.iloc[0]
    assert bool(first["is_default"]) and first["status"] == "ok"
    assert (first["n_hidden"], first["n_latent"], first["n_layers"]) == (128, 10, 1)
    assert first["reconstruction_loss"] == "zinb" and math.isclose(first["lr"], 1e-3)
    assert uns["default"]["trial_id"] == 0
    ok = trials[trials["status"] == "ok"]
    assert uns["best"]["loss"] == ok["loss"].min()
    assert uns["best"]["trial_id"] == int(ok.loc[ok["loss"].idxmin(), "trial_id"])
    assert adata.obsm["X_autotune"].shape == (adata.n_obs, uns["best"]["params"]["n_latent"])
    split = adata.obs["autotune_split"].value_counts()
    assert split["heldout"] == round(0.25 * adata.n_obs)
    assert uns["history"]["validation_elbo"].shape[0] == len(trials)


@pytest.mark.slow
def test_results_survive_h5ad(search_result, tmp_path):
    path = tmp_path / "result.h5ad"
    search_result.write_h5ad(path)
    back = ad.read_h5ad(path)
    pd.testing.assert_frame_equal(
        back.uns["autotune"]["trials"].reset_index(drop=True),
        search_result.uns["autotune"]["trials"].reset_index(drop=True),
        check_dtype=False,
        check_categorical=False,
    )
    np.testing.assert_array_equal(back.obsm["X_autotune"], search_result.obsm["X_autotune"])
    assert back.uns["autotune"]["best"]["trial_id"] == search_result.uns["autotune"]["best"]["trial_id"]


@pytest.mark.slow
def test_an_objective_that_exits_fails_its_trial_not_its_worker(small):
    """sys.exit in an objective is the objective's error: the trial fails saying so, and the
    worker lives on (before, the trial was recorded as a worker killed from outside)."""
    import sys

    def objective(model, heldout):
        sys.exit(3)

    with pytest.raises(sat.tl.NoTrialSucceededError) as info:
        sat.tl.autotune(small, max_evals=2, n_workers=1, objective=objective, include_default=False, **SMALL)
    trials = info.value.trials
    assert list(trials["status"]) == ["fail", "fail"]
    assert all(error.startswith("RuntimeError: the objective raised SystemExit(3)") for error in trials["error"])
    assert "none of the 2 trials succeeded (2 fail), so there is no result to store." in str(info.value)
    assert "most common error (2 of 2 failed trials): RuntimeError: the objective raised SystemExit(3)." in str(info.value)
    assert str(info.value).endswith("adata is unchanged; every trial's error is in this exception's .trials.")
    assert "adata" not in info.value.summary
    assert "autotune" not in small.uns and "autotune_split" not in small.obs


@pytest.mark.slow
def test_a_search_without_a_successful_trial_keeps_the_earlier_result(small, tmp_path):
    sat.tl.autotune(small, max_evals=2, n_workers=1, include_default=False, **SMALL)
    earlier = small.uns["autotune"]["trials"].copy()
    latent = small.obsm["X_autotune"].copy()
    split = small.obs["autotune_split"].copy()
    journal, model = tmp_path / "failed.jsonl", tmp_path / "model"
    with pytest.raises(sat.tl.NoTrialSucceededError, match="in this exception's .trials and in the journal"):
        sat.tl.autotune(small, max_evals=2, n_workers=1, objective=lambda m, x: None, seed=3,
                        journal=journal, save_dir=model, include_default=False, **SMALL)
    assert small.uns["autotune"]["trials"].equals(earlier)
    np.testing.assert_array_equal(small.obsm["X_autotune"], latent)
    assert small.obs["autotune_split"].equals(split)
    assert not model.exists()  # no best model: nothing saved
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [line["status"] for line in lines if line["kind"] == "trial"] == ["fail", "fail"]  # kept there


@pytest.mark.slow
def test_shorthand_space_and_failing_trials(small):
    """A space in shorthand; an objective that raises or returns NaN makes those trials fail."""

    def objective(model, heldout):
        if model.hyperparameters["n_hidden"] == 16:
            raise RuntimeError("no 16 today")
        if model.hyperparameters["n_hidden"] == 24:
            return float("nan")
        return model.marginal_nll(heldout, n_mc=3, cells="all")

    space = {"n_hidden": [16, 24, 32], "n_latent": ("int", 2, 4), "dispersion": "gene"}
    sat.tl.autotune(small, space=space, max_evals=6, n_workers=2, objective=objective,
                    include_default=False, **SMALL)
    trials = small.uns["autotune"]["trials"]
    assert len(trials) == 6
    assert set(trials["dispersion"]) == {"gene"}
    assert trials["n_latent"].between(2, 4).all()
    for _, row in trials.iterrows():
        if row["n_hidden"] == 16:
            assert row["status"] == "fail" and "no 16 today" in row["error"]
        elif row["n_hidden"] == 24:
            assert row["status"] == "fail" and "not finite" in row["error"]
        else:
            assert row["status"] == "ok" and np.isfinite(row["loss"])


@pytest.mark.slow
def test_custom_objective_gets_the_heldout_cells_with_their_layer_and_obs(small):
    """``adata_heldout`` works with the model (its layer) and keeps the cells' annotations."""
    small.layers["counts"] = small.X.copy()
    small.X = small.X.astype(np.float32) / 3.0  # X is not counts: only the layer is
    small.obs["donor"] = np.where(np.arange(small.n_obs) % 2 == 0, "d1", "d2")

    def objective(model, heldout):
        from sklearn.metrics import silhouette_score

        assert list(heldout.obs.columns) == ["cell_type", "donor"]
        heldout.obs["scratch"] = 1  # changes no later trial's adata_heldout
        latent = model.latent(heldout)
        return -float(silhouette_score(latent, heldout.obs["cell_type"]))

    sat.tl.autotune(small, layer="counts", max_evals=3, n_workers=1, objective=objective, **SMALL)
    trials = small.uns["autotune"]["trials"]
    assert list(trials["status"]) == ["ok"] * 3, list(trials["error"])
    assert trials["loss"].between(-1, 1).all()
    heldout = small.obs["autotune_split"] == "heldout"
    best = small.uns["autotune"]["best"]
    from sklearn.metrics import silhouette_score

    latent = small.obsm["X_autotune"][heldout.to_numpy()]
    expected = -silhouette_score(latent, small.obs.loc[heldout, "cell_type"])
    assert best["loss"] == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow
def test_a_trial_whose_worker_is_killed_runs_again_once(small, tmp_path, caplog):
    """A SIGKILLed worker costs no trial: the trial runs again on a fresh worker, and fails only when
    that worker is killed too (as on Dask). The objective, run at each trial's end, kills its worker
    whenever it scores the default configuration, and once for the first other trial that ends."""
    from scanpy_autotune._vae._config import default_hyperparameters

    default, killed_once = default_hyperparameters(), tmp_path / "killed-once"

    def objective(model, heldout):
        if all(model.hyperparameters[name] == value for name, value in default.items()):
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            os.close(os.open(killed_once, os.O_CREAT | os.O_EXCL))  # the first other trial only
        except FileExistsError:
            return model.marginal_nll(heldout, n_mc=3, cells="all")
        os.kill(os.getpid(), signal.SIGKILL)

    with caplog.at_level("WARNING", logger="scanpy_autotune"):
        sat.tl.autotune(small, max_evals=3, n_workers=2, objective=objective, **{**SMALL, "max_epochs": 2})
    trials = small.uns["autotune"]["trials"]
    assert list(trials["status"]) == ["fail", "ok", "ok"] and bool(trials.loc[0, "is_default"])
    assert trials.loc[0, "error"].startswith(
        "WorkerDied: the worker process on cpu died during the trial and its retry (killed by signal 9)"
    )
    retried = sorted(r.getMessage().split(":")[0] for r in caplog.records if "retrying it once" in r.getMessage())
    assert retried[0] == "trial 0" and retried[1] in ("trial 1", "trial 2") and len(retried) == 2


@pytest.mark.slow
def test_ctrl_c_keeps_trials_and_resume_completes(small, tmp_path):
    journal = tmp_path / "search.jsonl"
    max_evals = 6
    watcher = interrupt_when(journal, 2)
    with pytest.raises(KeyboardInterrupt):
        sat.tl.autotune(small, max_evals=max_evals, n_workers=2, journal=journal, save_dir=tmp_path / "best", **SMALL)
    watcher.join()
    assert not (tmp_path / "best").exists()  # save_dir is written by a search that ended only
    assert worker_processes(os.getpid()) == []  # Ctrl-C stopped the workers
    kept = journal_trials(journal)
    assert 2 <= len(kept) < max_evals
    trials = small.uns["autotune"]["trials"]
    assert sorted(trials["trial_id"]) == sorted(r["trial_id"] for r in kept)
    # the best trial so far trained in this run: its latent is stored without training, and matches it
    best = small.uns["autotune"]["best"]
    assert best["trial_id"] in [r["trial_id"] for r in kept]
    np.testing.assert_allclose(
        small.obsm["X_autotune"], sat.tl.retrain(small).latent(small), rtol=1e-3, atol=1e-3
    )

    sat.tl.autotune(small, max_evals=max_evals, n_workers=2, journal=journal, **SMALL)
    final = journal_trials(journal)
    ids = [r["trial_id"] for r in final]
    assert len(ids) == max_evals == len(set(ids))
    assert final[: len(kept)] == kept  # resumed trials are kept as they were, not re-run
    trials = small.uns["autotune"]["trials"]
    assert len(trials) == max_evals
    before = {r["trial_id"]: r["loss"] for r in kept}
    for _, row in trials.iterrows():
        if row["trial_id"] in before and np.isfinite(row["loss"]):
            assert row["loss"] == pytest.approx(before[row["trial_id"]])


@pytest.mark.slow
def test_a_search_cut_short_whose_latent_fails_still_writes_its_trials(small, tmp_path, monkeypatch, caplog):
    """A device error while the latent of a search cut short is computed costs the latent, not the trials."""
    import scanpy_autotune._vae._metrics as metrics

    def device_error(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(metrics, "latent_mean", device_error)  # the driver's call only: workers are other processes
    journal = tmp_path / "search.jsonl"
    watcher = interrupt_when(journal, 1)
    with caplog.at_level(logging.WARNING, logger="scanpy_autotune"), pytest.raises(KeyboardInterrupt):
        sat.tl.autotune(small, max_evals=6, n_workers=1, journal=journal, **SMALL)
    watcher.join()
    assert 1 <= len(small.uns["autotune"]["trials"]) < 6 and "X_autotune" not in small.obsm
    assert "could not compute the best trial's latent (RuntimeError: CUDA error" in caplog.text
    assert small.uns["autotune"]["params"]["stop_reason"] == "interrupted (Ctrl-C)"


@pytest.mark.slow
def test_a_search_cut_short_whose_latent_needs_training_stores_none_and_drops_the_earlier(small, tmp_path, caplog):
    """With refit=True the latent would need a training: none is stored, and an earlier one would not match."""
    sat.tl.autotune(small, max_evals=2, n_workers=1, **SMALL)
    assert "X_autotune" in small.obsm
    journal = tmp_path / "search.jsonl"
    watcher = interrupt_when(journal, 1)
    with caplog.at_level(logging.WARNING, logger="scanpy_autotune"), pytest.raises(KeyboardInterrupt):
        sat.tl.autotune(small, max_evals=6, n_workers=1, journal=journal, refit=True, **SMALL)
    watcher.join()
    assert len(small.uns["autotune"]["trials"]) < 6 and "X_autotune" not in small.obsm
    assert "removed the earlier adata.obsm['X_autotune']" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_while_a_trial_is_recorded_keeps_it_everywhere(small, tmp_path, monkeypatch, signum):
    """A Ctrl-C (or a SIGTERM the command line handles) right after a trial reached the journal still
    puts it in adata.uns."""
    from scanpy_autotune._search._journal import Journal
    from scanpy_autotune.cli._main import _terminate

    signal.signal(signal.SIGINT, signal.default_int_handler)
    previous = signal.signal(signal.SIGTERM, _terminate) if signum == signal.SIGTERM else None
    append = Journal.append

    def append_then_signal(self, record):
        append(self, record)
        signal.raise_signal(signum)

    monkeypatch.setattr(Journal, "append", append_then_signal)
    journal = tmp_path / "search.jsonl"
    try:
        with pytest.raises(KeyboardInterrupt):
            sat.tl.autotune(small, max_evals=3, n_workers=1, journal=journal, **SMALL)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    kept = journal_trials(journal)
    assert [r["trial_id"] for r in kept] == [0]
    assert small.uns["autotune"]["trials"]["trial_id"].tolist() == [0]


@pytest.mark.slow
def test_journal_of_other_settings_is_refused(small, tmp_path):
    journal = tmp_path / "search.jsonl"
    sat.tl.autotune(small, max_evals=1, n_workers=1, journal=journal, **SMALL)
    with pytest.raises(ValueError, match="seed"):
        sat.tl.autotune(small, max_evals=2, n_workers=1, journal=journal, seed=1, **SMALL)


@pytest.mark.slow
def test_resume_with_a_changed_objective_of_the_same_name_is_refused(small, tmp_path):
    """Redefining ``obj`` in a notebook and resuming would mix two objectives' losses."""
    journal = tmp_path / "search.jsonl"

    def obj(model, heldout):
        return model.marginal_nll(heldout, n_mc=3, cells="all")

    sat.tl.autotune(small, max_evals=1, n_workers=1, journal=journal, objective=obj, **SMALL)
    lines_before = journal.read_text()

    def obj(model, heldout):  # noqa: F811 - the notebook cell was edited
        return -model.elbo(heldout, cells="all")

    with pytest.raises(ValueError, match=r"other settings \(objective: journal 'test_resume_with"):
        sat.tl.autotune(small, max_evals=2, n_workers=1, journal=journal, objective=obj, **SMALL)
    assert journal.read_text() == lines_before


@pytest.mark.slow
def test_save_dir_and_the_journal_keep_one_model_each(small, tmp_path):
    """A second search may replace the model an earlier one saved; the journal's copy follows its best."""
    save_dir, journal = tmp_path / "best", tmp_path / "search.jsonl"
    for max_evals in (1, 2):
        sat.tl.autotune(small, max_evals=max_evals, n_workers=1, save_dir=save_dir, journal=journal, **SMALL)
        best = small.uns["autotune"]["best"]
        assert sorted(p.name for p in save_dir.iterdir()) == ["config.json", "weights.pt"]
        kept = tmp_path / "search.jsonl.best_model"
        assert json.loads((kept / "trial.json").read_text())["trial_id"] == best["trial_id"]
        np.testing.assert_allclose(sat.Model.load(save_dir).latent(small), small.obsm["X_autotune"], rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "search.jsonl", "search.jsonl.best_model", "search.jsonl.lock"]


@pytest.mark.slow
def test_a_model_left_beside_the_journal_by_another_search_is_never_used(cortex, tmp_path):
    """A journal path reused for other cells: the old ``.best_model`` folder does not pass for the new best."""
    first, other = cortex[:300].copy(), cortex[300:600].copy()
    journal = tmp_path / "search.jsonl"
    kept = tmp_path / "search.jsonl.best_model"
    sat.tl.autotune(first, max_evals=1, n_workers=1, journal=journal, **SMALL)
    stale = tmp_path / "stale"
    kept.rename(stale)
    journal.unlink()
    sat.tl.autotune(other, max_evals=1, n_workers=1, journal=journal, **SMALL)
    shutil.rmtree(kept)
    stale.rename(kept)  # the first search's model, trial 0 as well
    sat.tl.autotune(other, max_evals=1, n_workers=1, journal=journal, **SMALL)  # nothing to run: best from the journal
    model = sat.Model.load(kept)
    assert set(model.split["train"]) <= set(other.obs_names)  # retrained on this search's cells
    np.testing.assert_allclose(model.latent(other), other.obsm["X_autotune"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_damaged_model_beside_the_journal_is_retrained_and_replaced(small, tmp_path, caplog):
    """Probe 20: a truncated weights.pt in <journal>.best_model failed every resume, after its new trials."""
    journal, kept = tmp_path / "search.jsonl", tmp_path / "search.jsonl.best_model"
    sat.tl.autotune(small, max_evals=1, n_workers=1, journal=journal, **SMALL)
    latent = small.obsm["X_autotune"].copy()
    (kept / "weights.pt").write_bytes((kept / "weights.pt").read_bytes()[:1000])
    del small.uns["autotune"], small.obsm["X_autotune"]
    with caplog.at_level("INFO", logger="scanpy_autotune"):
        sat.tl.autotune(small, max_evals=1, n_workers=1, journal=journal, **SMALL)  # nothing to run
    messages = [record.getMessage() for record in caplog.records]
    assert any("the best model kept beside the journal cannot be read" in m and "weights.pt" in m for m in messages)
    assert "retraining the best trial 0 (its weights were not kept)" in messages
    np.testing.assert_allclose(small.obsm["X_autotune"], latent, rtol=1e-4, atol=1e-5)  # the same trial, retrained
    np.testing.assert_allclose(sat.Model.load(kept).latent(small), latent, rtol=1e-4, atol=1e-5)  # replaced


@pytest.mark.slow
def test_a_best_model_that_fails_keeps_the_trials_and_its_journal_locked_until_then(small, tmp_path, monkeypatch):
    """Probe 24: an error while the best model was refit (a GPU out of memory in the driver) left
    search() with nothing, and every trial was lost but for a journal; the journal's lock was let go
    before the model was kept beside it."""
    from scanpy_autotune._search._journal import Journal

    journal = tmp_path / "search.jsonl"
    seen: list[str] = []

    def out_of_memory(*args, **kwargs):  # the trials ran in the workers: this is the driver's refit
        with pytest.raises(sat.tl.JournalLockedError):
            Journal.open(journal, {}, lock=True)
        seen.append("locked")
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(sat.Model, "fit_prepared", out_of_memory)
    with pytest.raises(sat.tl.BestModelFailed, match=(
        r"the 2 finished trials are kept, but the best trial \d+'s model could not be prepared "
        r"\(RuntimeError: CUDA out of memory\. .*\); sat\.tl\.retrain\(adata, \d+\) trains it again"
    )) as failed:
        sat.tl.autotune(small, max_evals=2, n_workers=1, journal=journal, refit=True, copy=True, **SMALL)
    assert seen == ["locked"] and isinstance(failed.value.__cause__, RuntimeError)
    assert "autotune" not in small.uns  # copy=True: the copy holds the trials (probe 23: it was lost) ...
    result = failed.value.adata  # ... and comes with the error
    trials = result.uns["autotune"]["trials"]
    assert list(trials["status"]) == ["ok", "ok"] and "X_autotune" not in result.obsm
    assert result.uns["autotune"]["params"]["stop_reason"] == (
        "the budget: 2 of max_evals=2 trials; then the best model failed: RuntimeError: CUDA out of memory. "
        "Tried to allocate 2.00 GiB"
    )
    assert "autotune_split" in result.obs  # what sat.tl.retrain needs
    Journal.open(journal, Journal.stored_settings(journal), lock=True)[0].close()  # let go once the search ended


@pytest.mark.slow
def test_a_model_that_cannot_be_saved_or_a_ctrl_c_while_results_are_written_loses_nothing(
    small, tmp_path, monkeypatch
):
    """Probe 25: a full disk under save_dir lost every trial (the model was saved before the results
    were written); with copy=True, a Ctrl-C held while they were written lost the copy."""
    import errno

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(sat.Model, "save", disk_full)
        with pytest.raises(sat.tl.BestModelFailed, match=(
            r"the search's results are in adata \(uns\['autotune'\], obsm\['X_autotune'\]\), but its best model "
            r"could not be saved to .*saved \(OSError: \[Errno 28\] No space left on device\)"
        )) as failed:
            sat.tl.autotune(small, max_evals=2, n_workers=1, save_dir=tmp_path / "saved", copy=True, **SMALL)
    result = failed.value.adata
    assert list(result.uns["autotune"]["trials"]["status"]) == ["ok", "ok"] and "X_autotune" in result.obsm
    assert "autotune" not in small.uns  # copy=True: the copy holds them

    from scanpy_autotune.tl import _autotune

    write = _autotune._write_results
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def write_then_ctrl_c(*args, **kwargs):
        write(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)  # held until the results are whole

    monkeypatch.setattr(_autotune, "_write_results", write_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt) as interrupted:
        sat.tl.autotune(small, max_evals=2, n_workers=1, copy=True, **SMALL)
    assert list(interrupted.value.adata.uns["autotune"]["trials"]["status"]) == ["ok", "ok"]


@pytest.mark.slow
def test_ctrl_c_while_the_best_model_is_retrained_keeps_the_trials(small, tmp_path):
    journal = tmp_path / "search.jsonl"
    sat.tl.autotune(small, max_evals=2, n_workers=1, journal=journal, **SMALL)
    shutil.rmtree(tmp_path / "search.jsonl.best_model")  # so the resumed search retrains its best
    del small.uns["autotune"], small.obsm["X_autotune"]

    class CtrlCOnRetraining(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("retraining the best trial"):
                signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    handler = CtrlCOnRetraining()
    logger = logging.getLogger("scanpy_autotune")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with pytest.raises(KeyboardInterrupt):
            sat.tl.autotune(small, max_evals=2, n_workers=1, journal=journal, **SMALL)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    uns = small.uns["autotune"]
    assert len(uns["trials"]) == 2 and "X_autotune" not in small.obsm
    assert uns["params"]["stop_reason"].endswith("; then interrupted (Ctrl-C) while the best model was prepared")


@pytest.mark.slow
def test_a_resumed_search_retrains_its_best_trial_with_that_trials_seed(small, tmp_path):
    """Without the model kept beside the journal, the best trial is trained again as it was (seed + id)."""
    def nll_but_not_the_default(model, heldout):
        loss = model.marginal_nll(heldout, n_mc=3, cells="all")
        return loss + 1e3 * (model.hyperparameters["n_hidden"] == 128)  # trial 0 never wins

    journal = tmp_path / "search.jsonl"
    kwargs = dict(max_evals=3, n_workers=1, journal=journal, space={"n_hidden": [32, 64]},
                  objective=nll_but_not_the_default, **SMALL)
    sat.tl.autotune(small, **kwargs)
    assert small.uns["autotune"]["best"]["trial_id"] != 0  # seed + id differs from the search's seed
    first = small.obsm["X_autotune"].copy()
    shutil.rmtree(f"{journal}.best_model")
    sat.tl.autotune(small, **kwargs)  # the journal holds the budget: nothing runs, the best is retrained
    np.testing.assert_allclose(small.obsm["X_autotune"], first, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_a_hand_edited_journal_trial_outside_the_space_is_refused(small, tmp_path):
    journal = tmp_path / "search.jsonl"
    sat.tl.autotune(small, max_evals=2, n_workers=1, journal=journal, **SMALL)
    lines = journal.read_text().splitlines()
    for edit, message in (
        (lambda params: params.update(n_hidden=999), r"trial 1 has \{.*'n_hidden': 999.*\} outside the space"),
        (lambda params: params.update(dropout_raXXte=0.3), r"trial 1 has unknown hyperparameter\(s\) \['dropout_raXXte'\]"),
    ):
        record = json.loads(lines[-1])
        edit(record["params"])
        journal.write_text("\n".join([*lines[:-1], json.dumps(record)]) + "\n")
        with pytest.raises(ValueError, match=message):
            sat.tl.autotune(small, max_evals=3, n_workers=1, journal=journal, **SMALL)


@pytest.mark.slow
def test_seeded_sequential_search_is_reproducible(small):
    a, b = small.copy(), small.copy()
    for adata in (a, b):
        sat.tl.autotune(adata, max_evals=4, n_workers=1, seed=3, **SMALL)
    ta, tb = a.uns["autotune"]["trials"], b.uns["autotune"]["trials"]
    names = ["n_hidden", "n_latent", "n_layers", "dropout_rate", "reconstruction_loss", "lr"]
    pd.testing.assert_frame_equal(ta[names], tb[names])
    np.testing.assert_allclose(ta["loss"], tb["loss"], rtol=1e-6)
    np.testing.assert_allclose(a.obsm["X_autotune"], b.obsm["X_autotune"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_copy_returns_new_object(small):
    out = sat.tl.autotune(small, max_evals=1, n_workers=1, copy=True, **SMALL)
    assert "autotune" not in small.uns and "autotune" in out.uns
    assert "X_autotune" in out.obsm and "X_autotune" not in small.obsm


@pytest.mark.slow
def test_backed_anndata_is_searched_and_its_copy_is_in_memory(small, tmp_path):
    path = tmp_path / "small.h5ad"
    small.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    out = sat.tl.autotune(backed, max_evals=1, n_workers=1, copy=True, **SMALL)
    assert not out.isbacked and "autotune" in out.uns and "autotune" not in backed.uns
    assert (out.X != small.X).nnz == 0
    sat.tl.autotune(backed, max_evals=1, n_workers=1, **SMALL)
    # Same data, same seed: the backed object's search equals the in-memory one's.
    assert backed.uns["autotune"]["best"]["loss"] == out.uns["autotune"]["best"]["loss"]
    np.testing.assert_array_equal(backed.obsm["X_autotune"], out.obsm["X_autotune"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(space={"n_hiden": [64, 128]}), "Unknown hyperparameter"),
        (dict(space={}), "empty"),
        (dict(space={"n_hidden": 64}), "empty"),
        (dict(layer="counts"), "layer='counts'"),
        (dict(batch_key="plate"), "batch_key='plate'"),
        (dict(max_evals=0), "max_evals"),
        (dict(max_epochs=0), "max_epochs"),
        (dict(train_size=1.5), "train_size"),
        (dict(test_size=0.5, train_size=0.6), "test_size"),
        (dict(n_workers=0), "n_workers"),
        (dict(trials_per_gpu=0), "trials_per_gpu"),
        (dict(objective="elbo"), "objective"),
        (dict(pruner="hyperband2"), "pruner"),
        (dict(backend="slurm"), "backend"),
        (dict(space={"lr": ("log", 0.0, 1e-2)}), "lr"),
        (dict(space={"n_hidden": [64, 128], "use_observed_lib_size": [True, False]}),
         r"use_observed_lib_size cannot be searched with the default objective: .* -log p\(x \| library\)"),
    ],
)
def test_bad_arguments_fail_fast_and_leave_adata_untouched(small, kwargs, message):
    before = small.copy()
    with pytest.raises(ValueError, match=message):
        sat.tl.autotune(small, max_evals=kwargs.pop("max_evals", 2), **{**SMALL, **kwargs})
    assert set(small.uns) == set(before.uns) and set(small.obsm) == set(before.obsm)
    assert list(small.obs.columns) == list(before.obs.columns)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda X: X.multiply(-1), "negative"),
        (lambda X: X * 0.5, "non-integer"),
        (lambda X: X.toarray() * np.where(np.arange(X.shape[1]) == 0, np.nan, 1.0), "NaN"),
    ],
)
def test_bad_counts_fail_fast(small, corrupt, message):
    small.X = sp.csr_matrix(corrupt(small.X)) if not isinstance(corrupt(small.X), np.ndarray) else corrupt(small.X)
    with pytest.raises(ValueError, match=message):
        sat.tl.autotune(small, max_evals=2, **SMALL)
    assert "autotune" not in small.uns


@pytest.mark.slow
def test_test_split_refit_and_save_dir(small, tmp_path):
    """test_size scores the best model once on untouched cells; refit and save_dir give a loadable model."""
    sat.tl.autotune(small, max_evals=2, n_workers=2, test_size=0.2, refit=True,
                    save_dir=tmp_path / "best", **SMALL)
    uns = small.uns["autotune"]
    split = small.obs["autotune_split"].value_counts()
    assert split["test"] == round(0.2 * small.n_obs)
    assert np.isfinite(uns["best"]["test_loss"])
    model = sat.Model.load(tmp_path / "best")
    best_params = uns["best"]["params"]
    assert model.hyperparameters["n_latent"] == best_params["n_latent"]
    # the refit saw every cell but the test cells and trained for the best trial's epoch count
    assert len(model.split["train"]) == small.n_obs - split["test"]
    with pytest.raises(ValueError, match=r"no 'heldout' cells \(a model refit on every cell .* pass cells='all'"):
        model.marginal_nll(small)
    assert not set(model.split["train"]) & set(small.obs_names[small.obs["autotune_split"] == "test"])
    best_row = uns["trials"].set_index("trial_id").loc[uns["best"]["trial_id"]]
    assert model.train_result.n_epochs == best_row["best_epoch"] + 1
    np.testing.assert_allclose(small.obsm["X_autotune"], model.latent(small), rtol=1e-5, atol=1e-6)
    # the two test losses are those of the refit model (the one stored) and of the chosen trial's model
    test_cells = small.obs["autotune_split"] == "test"
    refit_loss = model.marginal_nll(small, SMALL["n_mc"], cells=test_cells.to_numpy())
    np.testing.assert_allclose(uns["best"]["refit_test_loss"], refit_loss, rtol=1e-4)
    chosen = sat.tl.retrain(small, uns["best"]["trial_id"])
    np.testing.assert_allclose(
        uns["best"]["test_loss"], chosen.marginal_nll(small, SMALL["n_mc"], cells=test_cells.to_numpy()), rtol=1e-3
    )


@pytest.mark.slow
def test_timeout_stops_the_search_and_keeps_finished_trials(small, caplog):
    # Trials of a few epochs finish within seconds even on a loaded machine, while
    # 1000 of them cannot all finish in 12 s: the timeout, not max_evals, ends it
    # (and not the convergence stop, which on a fast machine could come first).
    with caplog.at_level("WARNING", logger="scanpy_autotune"):
        sat.tl.autotune(small, max_evals=1000, n_workers=2, timeout=12, patience=None, **SMALL)
    trials = small.uns["autotune"]["trials"]
    assert 1 <= len(trials) < 1000
    assert (trials["status"] != "fail").all()  # abandoned trials are not recorded as failures
    assert "timeout of 12 s reached" in caplog.text


def test_timeout_before_any_trial_finishes_raises_and_leaves_adata_untouched(small):
    before = (set(small.uns), set(small.obs), set(small.obsm))
    with pytest.raises(TimeoutError, match=r"timeout=1 s passed before any trial finished"):
        sat.tl.autotune(small, max_evals=2, n_workers=1, timeout=1, **{**SMALL, "max_epochs": 10**6})
    assert (set(small.uns), set(small.obs), set(small.obsm)) == before


def test_ctrl_c_before_any_trial_finishes_is_a_keyboard_interrupt(small, tmp_path):
    """Nothing to store: the interrupt itself propagates (not an error about empty results)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def interrupt_once_training():
        deadline = time.monotonic() + 120
        while not worker_processes(os.getpid()) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_training, daemon=True).start()
    journal = tmp_path / "search.jsonl"
    with pytest.raises(KeyboardInterrupt):
        sat.tl.autotune(small, max_evals=2, n_workers=1, journal=journal, **{**SMALL, "max_epochs": 10**6})
    assert "autotune" not in small.uns and journal_trials(journal) == []
    assert worker_processes(os.getpid()) == []


@pytest.mark.slow
def test_a_ctrl_c_after_the_last_trial_still_writes_the_results(small, monkeypatch):
    """Ctrl-C while the workers stop, after every trial finished: adata gets the trials, then the
    KeyboardInterrupt; the stop reason says both."""
    from scanpy_autotune._search._local_pool import LocalPool

    shutdown = LocalPool.shutdown

    def interrupted(self, kill=False):
        shutdown(self, kill)
        raise KeyboardInterrupt

    monkeypatch.setattr(LocalPool, "shutdown", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sat.tl.autotune(small, max_evals=2, n_workers=1, **SMALL)
    uns = small.uns["autotune"]
    assert len(uns["trials"]) == 2 and (uns["trials"]["status"] == "ok").all()
    assert uns["params"]["stop_reason"].endswith("; then interrupted (Ctrl-C) while the workers stopped")


@pytest.mark.slow
def test_the_saved_best_model_scores_exactly_its_recorded_loss(small, tmp_path):
    """The search's held-out loss draws as Model.marginal_nll does (seed 0): a user who loads
    the best model and scores the held-out cells gets the number the search recorded."""
    sat.tl.autotune(small, max_evals=2, n_workers=1, save_dir=tmp_path / "best", **SMALL)
    model = sat.Model.load(tmp_path / "best")
    recorded = small.uns["autotune"]["best"]["loss"]
    assert model.marginal_nll(small, n_mc=SMALL["n_mc"]) == pytest.approx(recorded, rel=1e-6)
