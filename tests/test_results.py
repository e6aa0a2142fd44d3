"""The adata.uns['autotune'] schema: build_results, write_results, read_results, trials_table.

``results_adata`` is the one fixture to swap for a real search: it returns the
``search_result`` fixture when conftest.py defines one, and otherwise an AnnData
whose ``uns["autotune"]`` is built from synthetic but realistic trial records.
"""

from __future__ import annotations

import logging
import math

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scanpy_autotune._record import TrialRecord, best_of, ranked
from scanpy_autotune._results import (
    FIXED_COLUMNS,
    axis_kind,
    build_results,
    read_results,
    write_results,
)
from scanpy_autotune.tl._trials_table import trials_table

KEY = "autotune"

SEARCHED = {
    "n_hidden": "categorical",
    "n_latent": "numeric",
    "n_layers": "categorical",
    "dropout_rate": "numeric",
    "reconstruction_loss": "categorical",
    "lr": "log",
    "use_observed_lib_size": "categorical",
}
DEFAULTS = {
    "n_hidden": 128,
    "n_latent": 10,
    "n_layers": 1,
    "dropout_rate": 0.1,
    "reconstruction_loss": "zinb",
    "lr": 1e-3,
    "use_observed_lib_size": False,
    "batch_size": 128,
}
SETTINGS = {
    "space": "{'n_hidden': hp.choice(...), ...}",
    "max_evals": 24,
    "seed": 0,
    "train_size": 0.75,
    "backend": "local",
    "n_workers": 2,
    "version": "0.1.0",
    "test_size": None,
    "layers": ["counts"],
}
FAIL_NO_HISTORY, FAIL_PARTIAL = 5, 13
PRUNED = {8: 412.0, 17: 398.0, 20: math.nan}
DIVERGING = 11


def _curve(rng: np.random.Generator, final: float, n: int) -> list[float]:
    epochs = np.arange(n)
    start = final * rng.uniform(1.6, 2.4)
    curve = final + (start - final) * np.exp(-epochs / rng.uniform(3, 10))
    return list(curve + rng.normal(0, 0.5, n))


def make_records(n_trials: int = 24, seed: int = 0) -> list[dict]:
    """Realistic trial records: one default, two failures, three pruned, one diverging, shuffled."""
    rng = np.random.default_rng(seed)
    completion = np.concatenate([[0], 1 + rng.permutation(n_trials - 1)])
    records = []
    for tid in range(n_trials):
        params = (
            dict(DEFAULTS)
            if tid == 0
            else {
                "n_hidden": int(rng.choice([64, 128, 256])),
                "n_latent": int(rng.integers(5, 31)),
                "n_layers": int(rng.choice([1, 2, 3])),
                "dropout_rate": float(rng.uniform(0.0, 0.5)),
                "reconstruction_loss": str(rng.choice(["zinb", "nb", "poisson"])),
                "lr": float(10 ** rng.uniform(-4.5, -2)),
                "use_observed_lib_size": bool(rng.random() < 0.5),
                "batch_size": 128,
            }
        )
        loss = 380.0 + 15 * params["n_layers"] + 0.3 * abs(params["n_latent"] - 12)
        loss += {"zinb": 0.0, "nb": 4.0, "poisson": 30.0}[params["reconstruction_loss"]]
        loss += float(rng.normal(0, 2))
        n_epochs = int(rng.integers(25, 60))
        status, error = "ok", ""
        if tid == 0:
            loss += 12.0  # the default is not the best
        if tid == DIVERGING:
            loss = 5.0e4
        if tid in PRUNED:
            status, n_epochs = "pruned", 10
            loss = PRUNED[tid]
        if tid in (FAIL_NO_HISTORY, FAIL_PARTIAL):
            status, loss = "fail", math.nan
            n_epochs = 0 if tid == FAIL_NO_HISTORY else 3
            error = "RuntimeError: NaN in the loss" if tid == FAIL_PARTIAL else "MemoryError"
        validation = _curve(rng, loss if math.isfinite(loss) else 420.0, n_epochs)
        if tid == DIVERGING:
            validation = list(np.geomspace(800, 5.0e4, n_epochs))
        train = [v - rng.uniform(1, 5) for v in validation]
        records.append(
            {
                "trial_id": tid,
                "status": status,
                "loss": loss,
                "elbo_train": train[-1] if train else math.nan,
                "elbo_heldout": validation[-1] if validation else math.nan,
                "n_epochs": n_epochs,
                "best_epoch": max(n_epochs - 1, 0) if n_epochs else math.nan,
                "n_params": math.nan if tid == FAIL_NO_HISTORY else 1000 * params["n_hidden"],
                "duration_s": float(rng.uniform(5, 60)),
                "device": "cpu:0" if tid % 2 else "cpu:1",
                "error": error,
                "params": params,
                "history": {"train_elbo": train, "validation_elbo": validation},
                "completion_order": int(completion[tid]),
                "is_default": tid == 0,
            }
        )
    order = rng.permutation(n_trials)
    return [records[i] for i in order]


def make_results_adata(records: list[dict] | None = None) -> ad.AnnData:
    adata = ad.AnnData(np.zeros((5, 3), dtype=np.float32))
    records = make_records() if records is None else records
    write_results(adata, KEY, build_results(records, settings=SETTINGS, searched=SEARCHED))
    return adata


def round_trip(adata: ad.AnnData, tmp_path) -> ad.AnnData:
    path = tmp_path / "results.h5ad"
    adata.write_h5ad(path)
    return ad.read_h5ad(path)


@pytest.fixture(scope="module")
def results_adata(request) -> ad.AnnData:
    """A searched AnnData: the real ``search_result`` when defined, else synthetic records."""
    try:
        return request.getfixturevalue("search_result")
    except pytest.FixtureLookupError:
        return make_results_adata()


@pytest.fixture(params=["memory", "h5ad"])
def adata(request, results_adata, tmp_path) -> ad.AnnData:
    if request.param == "memory":
        return results_adata
    return round_trip(results_adata, tmp_path)


@pytest.fixture
def records() -> list[dict]:
    return make_records()


# ----------------------------------------------------------------------------- build_results


def test_build_trials_columns_and_order(records):
    uns = build_results(records, settings=SETTINGS, searched=SEARCHED)
    trials = uns["trials"]
    assert list(trials.columns) == [*FIXED_COLUMNS, *SEARCHED, "batch_size"]
    assert trials["trial_id"].tolist() == list(range(len(records)))
    assert isinstance(trials.index, pd.RangeIndex)
    by_id = {r["trial_id"]: r for r in records}
    for row in trials.itertuples(index=False):
        rec = by_id[row.trial_id]
        assert row.status == rec["status"]
        np.testing.assert_equal(row.loss, rec["loss"])
        assert row.completion_order == rec["completion_order"]
        assert row.is_default == rec["is_default"]
        for name, value in rec["params"].items():
            assert getattr(row, name) == value
    assert trials.dtypes["trial_id"] == np.int64
    assert trials.dtypes["is_default"] == np.dtype(bool)
    assert trials.dtypes["n_hidden"] == np.int64
    assert trials.dtypes["lr"] == np.dtype(float)
    assert trials.dtypes["use_observed_lib_size"] == np.dtype(bool)
    assert trials.dtypes["reconstruction_loss"] == np.dtype(object)
    # n_params is missing for one failed trial: float with NaN
    assert trials.dtypes["n_params"] == np.dtype(float)
    assert np.isnan(trials.loc[FAIL_NO_HISTORY, "n_params"])
    assert trials.loc[FAIL_PARTIAL, "error"].startswith("RuntimeError")


def test_build_is_independent_of_record_order(records):
    a = build_results(records, settings=SETTINGS, searched=SEARCHED)
    b = build_results(records[::-1], settings=SETTINGS, searched=SEARCHED)
    pd.testing.assert_frame_equal(a["trials"], b["trials"])
    for name in ("train_elbo", "validation_elbo"):
        np.testing.assert_array_equal(a["history"][name], b["history"][name])


def test_build_history_is_nan_padded(records):
    uns = build_results(records, settings=SETTINGS, searched=SEARCHED)
    by_id = {r["trial_id"]: r for r in records}
    width = max(len(r["history"]["validation_elbo"]) for r in records)
    for name in ("train_elbo", "validation_elbo"):
        arr = uns["history"][name]
        assert arr.shape == (len(records), width) and arr.dtype == np.dtype(float)
        for tid, rec in by_id.items():
            curve = rec["history"][name]
            np.testing.assert_allclose(arr[tid, : len(curve)], curve)
            assert np.isnan(arr[tid, len(curve) :]).all()
    assert np.isnan(uns["history"]["validation_elbo"][FAIL_NO_HISTORY]).all()


def test_build_best_default_params(records):
    uns = build_results(records, settings=SETTINGS, searched=SEARCHED)
    ok = [r for r in records if r["status"] == "ok" and math.isfinite(r["loss"])]
    best = min(ok, key=lambda r: r["loss"])
    assert uns["best"] == {
        "trial_id": best["trial_id"],
        "loss": best["loss"],
        "params": best["params"],
    }
    default = next(r for r in records if r["is_default"])
    assert uns["default"] == {"trial_id": default["trial_id"], "loss": default["loss"]}
    params = uns["params"]
    assert params["searched"] == SEARCHED
    assert params["max_evals"] == 24 and params["backend"] == "local"
    assert params["test_size"] == "None"  # None cannot be written to .h5ad
    assert params["layers"] == ["counts"]


def test_best_params_are_the_best_records_with_gaps_in_the_ids():
    """A timeout abandons trials, so ids have gaps; the records come in any order."""
    records = [r for r in make_records() if r["trial_id"] % 3 != 1]
    ok = [r for r in records if r["status"] == "ok" and math.isfinite(r["loss"])]
    best = min(ok, key=lambda r: r["loss"])
    assert best["trial_id"] >= len(records) // 2  # far from its position: a lookup by id would miss it
    uns = build_results(records, settings=SETTINGS, searched=SEARCHED)
    assert uns["best"] == {"trial_id": best["trial_id"], "loss": best["loss"], "params": best["params"]}


def test_an_ok_trial_without_a_finite_loss_is_never_ranked():
    """Only a hand-edited journal or uns holds one; it must not become the best."""
    trials = [TrialRecord(0, {}, status="ok", loss=math.nan), TrialRecord(1, {}, status="ok", loss=5.0),
              TrialRecord(2, {}, status="ok", loss=math.inf), TrialRecord(3, {}, status="ok", loss=4.0)]
    assert [t.trial_id for t in ranked(trials)] == [3, 1] and best_of(trials).trial_id == 3
    records = make_records()
    ok = sorted((r for r in records if r["status"] == "ok" and math.isfinite(r["loss"])), key=lambda r: r["loss"])
    ok[0]["loss"] = math.nan  # the would-be best, edited by hand
    assert build_results(records, settings=SETTINGS, searched=SEARCHED)["best"]["trial_id"] == ok[1]["trial_id"]


def test_build_without_ok_trial(records, caplog):
    for r in records:
        r["status"], r["loss"] = "fail", math.nan
    with caplog.at_level(logging.WARNING, logger="scanpy_autotune"):
        uns = build_results(records, settings=SETTINGS, searched=SEARCHED)
    assert uns["best"]["trial_id"] == -1 and math.isnan(uns["best"]["loss"])
    assert uns["best"]["params"] == {}
    assert "no best trial" in caplog.text


def test_build_without_default(records):
    for r in records:
        r["is_default"] = False
    uns = build_results(records, settings=SETTINGS, searched=SEARCHED)
    assert "default" not in uns
    assert read_results(_with(uns), KEY).default is None


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda rs: rs.clear(), "No trial records"),
        (lambda rs: rs[1].update(trial_id=rs[0]["trial_id"]), "Duplicate trial_id"),
        (lambda rs: rs[0].update(status="done"), "Unknown trial status"),
        (lambda rs: rs[0]["params"].update(loss=1.0), "clash"),
    ],
)
def test_build_rejects_bad_records(records, change, match):
    change(records)
    with pytest.raises(ValueError, match=match):
        build_results(records, settings=SETTINGS, searched=SEARCHED)


def test_build_rejects_unknown_kind(records):
    with pytest.raises(ValueError, match="not a known kind"):
        build_results(records, settings=SETTINGS, searched={"lr": "spiral"})


def test_missing_and_mixed_param_values_round_trip(records, tmp_path):
    records[0]["params"].pop("n_hidden")
    records[1]["params"].pop("reconstruction_loss")
    records[2]["params"].pop("use_observed_lib_size")
    records[3]["params"]["n_latent"] = 7.5  # ints and a float: a float column
    records[4]["params"]["extra"] = None
    uns = build_results(records, settings=SETTINGS, searched=SEARCHED)
    trials = uns["trials"]
    assert trials["n_hidden"].dtype == float and trials["n_hidden"].isna().sum() == 1
    assert trials["n_latent"].dtype == np.dtype(float)
    assert (trials["reconstruction_loss"] == "None").sum() == 1
    assert trials["use_observed_lib_size"].dtype == "boolean"
    assert trials["extra"].isna().sum() == len(records)
    adata = _with(uns)
    back = read_results(round_trip(adata, tmp_path), KEY)
    pd.testing.assert_frame_equal(back.trials, read_results(adata, KEY).trials)


# ----------------------------------------------------------------------------- read / write


def _with(uns: dict) -> ad.AnnData:
    adata = ad.AnnData(np.zeros((2, 2), dtype=np.float32))
    write_results(adata, KEY, uns)
    return adata


def test_round_trip_equals_in_memory(results_adata, tmp_path):
    mem = read_results(results_adata, KEY)
    disk = read_results(round_trip(results_adata, tmp_path), KEY)
    pd.testing.assert_frame_equal(disk.trials, mem.trials)
    for name in ("train_elbo", "validation_elbo"):
        np.testing.assert_array_equal(disk.history[name], mem.history[name])
    np.testing.assert_equal(disk.best, mem.best)
    assert list(disk.best["params"]) == list(mem.best["params"])  # .h5ad sorts dict keys
    assert disk.default == mem.default
    np.testing.assert_equal(disk.params, mem.params)
    assert list(disk.searched.items()) == list(mem.searched.items())
    assert list(disk.param_kinds()) == list(mem.param_kinds())


def test_curves_stay_with_their_trials_when_the_tables_are_sorted_by_hand(records, tmp_path):
    """history rows carry their trial ids: sorting the trials (alone, or with the history)
    keeps each curve with its trial; files without the ids pair rows by position."""
    expected = {r["trial_id"]: np.asarray(r["history"]["validation_elbo"]) for r in records}

    def check(adata):
        res = read_results(adata, KEY)
        for row, tid in enumerate(res.trials["trial_id"]):
            curve = res.history["validation_elbo"][row]
            np.testing.assert_array_equal(curve[: len(expected[tid])], expected[tid])

    uns = build_results(records, settings=SETTINGS, searched=SEARCHED)
    by_loss = np.argsort(uns["trials"]["loss"].to_numpy())
    alone = dict(uns, trials=uns["trials"].iloc[by_loss].reset_index(drop=True))
    check(round_trip(_with(alone), tmp_path))
    both = dict(alone, history={k: v[by_loss] for k, v in uns["history"].items()})
    check(_with(both))
    old_file = dict(both, history={k: v for k, v in both["history"].items() if k != "trial_id"})
    check(_with(old_file))  # rows paired by position, both sorted alike
    wrong = dict(both, history={**both["history"], "trial_id": np.arange(100, 100 + len(records))})
    with pytest.raises(ValueError, match=r"\['history'\]\['trial_id'\] does not list the trials"):
        read_results(_with(wrong), KEY)


def test_read_restores_types(adata):
    res = read_results(adata, KEY)
    t = res.trials
    assert isinstance(t.index, pd.RangeIndex)
    assert t["trial_id"].dtype == np.int64 and t["trial_id"].is_monotonic_increasing
    assert t["completion_order"].dtype == np.int64
    assert t["is_default"].dtype == np.dtype(bool)
    assert t["loss"].dtype == np.dtype(float)
    assert set(t["status"]) <= {"ok", "fail", "pruned"}
    assert all(isinstance(v, str) for v in t["status"])
    for name in ("train_elbo", "validation_elbo"):
        h = res.history[name]
        assert h.ndim == 2 and h.shape[0] == len(t) and h.dtype == np.dtype(float)
    assert isinstance(res.best["trial_id"], int) and isinstance(res.best["loss"], float)
    assert all(not isinstance(v, np.generic) for v in res.best["params"].values())
    assert set(res.searched.values()) <= {"categorical", "numeric", "log"}
    assert set(res.searched) <= set(res.hyperparameters)


def test_read_returns_copies(results_adata):
    res = read_results(results_adata, KEY)
    res.trials.loc[0, "loss"] = -1.0
    res.history["validation_elbo"][:] = 0
    again = read_results(results_adata, KEY)
    assert again.trials.loc[0, "loss"] != -1.0
    assert not (np.nan_to_num(again.history["validation_elbo"]) == 0).all()


def test_read_missing_key(results_adata):
    """Probe 22: the error names the keys that hold a search's results (a misspelt key_added)."""
    with pytest.raises(KeyError, match=(
        r"adata.uns\['other'\] not found; run sat.tl.autotune\(adata\) first \(or pass key=...\); "
        rf"adata.uns holds search results under key='{KEY}'"
    )):
        read_results(results_adata, key="other")
    empty = ad.AnnData(np.zeros((2, 2), dtype=np.float32), uns={"neighbors": {"params": {}}})
    with pytest.raises(KeyError) as missing:
        read_results(empty, key="other")
    assert missing.value.args[0].endswith("first (or pass key=...).")  # no search there to name


def test_read_rejects_malformed():
    adata = ad.AnnData(np.zeros((2, 2), dtype=np.float32))
    adata.uns[KEY] = {"trials": pd.DataFrame()}
    with pytest.raises(ValueError, match="not an autotune result"):
        read_results(adata, KEY)
    adata.uns[KEY] = "nope"
    with pytest.raises(ValueError, match="not an autotune result"):
        read_results(adata, KEY)


def test_read_rejects_bad_history_shape(records):
    uns = build_results(records, settings=SETTINGS, searched=SEARCHED)
    uns["history"]["train_elbo"] = uns["history"]["train_elbo"][:-1]
    adata = ad.AnnData(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        write_results(adata, KEY, uns)
    adata.uns[KEY] = uns
    with pytest.raises(ValueError, match="shape"):
        read_results(adata, KEY)


def test_read_accepts_lists(records):
    uns = build_results(records, settings=SETTINGS, searched=SEARCHED)
    expected = uns["history"]["validation_elbo"].copy()
    uns["history"] = {
        "train_elbo": uns["history"]["train_elbo"].tolist(),
        "validation_elbo": uns["history"]["validation_elbo"].tolist(),
    }
    res = read_results(_with(uns), KEY)
    np.testing.assert_array_equal(res.history["validation_elbo"], expected)
    np.testing.assert_array_equal(res.curves("validation"), expected)
    with pytest.raises(ValueError, match="which="):
        res.curves("test")


# ----------------------------------------------------------------------------- axis kinds


def test_axis_kind_from_values_not_names():
    decades = 10 ** np.random.default_rng(0).uniform(-4.5, -2, 30)  # a learning rate
    assert axis_kind(decades) == "log"
    assert axis_kind(pd.Series(decades, name="lr")) == "log"
    assert axis_kind(pd.Series(decades, name="step_size")) == "log"
    assert axis_kind(pd.Series(np.linspace(1e-3, 2e-3, 10), name="lr")) == "numeric"
    assert axis_kind([1.0, 10.0]) == "log"  # exactly a factor of 10
    assert axis_kind([1.0, 9.99]) == "numeric"
    assert axis_kind([64, 128, 256]) == "numeric"
    assert axis_kind([0.0, 0.1, 0.5]) == "numeric"  # not all positive
    assert axis_kind([-1e-4, 1e-2]) == "numeric"
    assert axis_kind([np.nan, 1e-4, 1e-2]) == "log"  # missing values are ignored
    assert axis_kind([np.nan, np.nan]) == "numeric"
    assert axis_kind(["zinb", "nb", "poisson"]) == "categorical"
    assert axis_kind(np.array([True, False, True])) == "categorical"
    assert axis_kind(pd.array([True, None], dtype="boolean")) == "categorical"
    assert axis_kind(["1", "10", "100"]) == "categorical"  # text, even when it looks numeric


def _unsearched_records() -> list[dict]:
    rng = np.random.default_rng(1)
    records = make_records()
    for r in records:
        r["params"] = {
            "learning_rate": float(10 ** rng.uniform(-4.5, -2)),
            "lr": float(rng.uniform(1e-3, 2e-3)),
            "n_hidden": int(rng.choice([64, 128, 256])),
            "optimizer": str(rng.choice(["adam", "sgd"])),
            "use_batch_norm": bool(rng.random() < 0.5),
        }
    return records


def test_param_kinds_fallback_infers_from_values(tmp_path):
    adata = _with(build_results(_unsearched_records(), settings=SETTINGS, searched={}))
    expected = {
        "learning_rate": "log",
        "lr": "numeric",
        "n_hidden": "numeric",
        "optimizer": "categorical",
        "use_batch_norm": "categorical",
    }
    assert read_results(adata, KEY).param_kinds() == expected
    assert read_results(round_trip(adata, tmp_path), KEY).param_kinds() == expected


def test_param_kinds_recorded_kind_wins_and_names_are_checked():
    searched = {"lr": "log", "optimizer": "categorical"}
    res = read_results(
        _with(build_results(_unsearched_records(), settings=SETTINGS, searched=searched)), KEY
    )
    assert res.param_kinds() == searched  # the default: the searched ones
    assert res.param_kinds(["learning_rate", "lr"]) == {"learning_rate": "log", "lr": "log"}
    assert res.param_kinds("n_hidden") == {"n_hidden": "numeric"}
    with pytest.raises(ValueError, match=r"Unknown hyperparameter\(s\) \['nope'\]; valid names are"):
        res.param_kinds(["lr", "nope"])
    with pytest.raises(ValueError, match="params is empty"):
        res.param_kinds([])


# ----------------------------------------------------------------------------- trials_table


def _ranked(adata: ad.AnnData) -> pd.DataFrame:
    t = read_results(adata, KEY).trials
    ok = t[(t["status"] == "ok") & np.isfinite(t["loss"])]
    return ok.sort_values(["loss", "trial_id"]).reset_index(drop=True)


def test_trials_table_top_bottom(adata):
    ranked = _ranked(adata)
    n = len(ranked)
    top, bottom = min(3, n), min(2, max(n - 3, 0))
    table = trials_table(adata, top=top, bottom=bottom)
    kinds = read_results(adata, KEY).param_kinds()
    assert list(table.columns) == [
        "loss",
        *kinds,
        "n_epochs",
        "n_params",
        "trial_id",
        "rank",
        "group",
    ]
    expected_ids = ranked["trial_id"].tolist()[:top] + ranked["trial_id"].tolist()[n - bottom :]
    assert table["trial_id"].tolist() == expected_ids
    assert table["group"].tolist() == ["top"] * top + ["bottom"] * bottom
    assert table["loss"].is_monotonic_increasing
    assert table["rank"].tolist() == [*range(1, top + 1), *range(n - bottom + 1, n + 1)]
    assert isinstance(table.index, pd.RangeIndex)
    for row in table.itertuples(index=False):
        src = ranked[ranked["trial_id"] == row.trial_id].iloc[0]
        assert row.loss == src["loss"] and row.n_epochs == src["n_epochs"]
        for name in kinds:
            assert getattr(row, name) == src[name]


def test_trials_table_no_duplicates_when_overlapping(adata):
    ranked = _ranked(adata)
    table = trials_table(adata, top=len(ranked), bottom=len(ranked))
    assert table["trial_id"].tolist() == ranked["trial_id"].tolist()
    assert set(table["group"]) <= {"top"}
    table = trials_table(adata, top=0, bottom=len(ranked) + 5)
    assert table["trial_id"].tolist() == ranked["trial_id"].tolist()
    assert set(table["group"]) <= {"bottom"}


def test_trials_table_excludes_unsuccessful(results_adata):
    t = read_results(results_adata, KEY).trials
    table = trials_table(results_adata, top=1000, bottom=0)
    bad = t[(t["status"] != "ok") | ~np.isfinite(t["loss"])]["trial_id"]
    assert not set(bad) & set(table["trial_id"])


def test_trials_table_errors(results_adata):
    with pytest.raises(ValueError, match=r"top=-1 must be an integer >= 0"):
        trials_table(results_adata, top=-1)
    with pytest.raises(ValueError, match=r"bottom=2.5 must be an integer >= 0"):
        trials_table(results_adata, bottom=2.5)
    with pytest.raises(ValueError, match=r"top=True must be an integer"):
        trials_table(results_adata, top=True)
    with pytest.raises(KeyError, match="not found"):
        trials_table(results_adata, key="missing")


def test_reading_results_from_something_else_than_an_anndata_says_what_to_pass():
    adata = make_results_adata()
    with pytest.raises(TypeError, match=r"expected the AnnData the search ran on, got \w+ \(pass adata, not adata.uns\)"):
        read_results(adata.uns, KEY)
    with pytest.raises(TypeError, match=r"got str\.$"):
        read_results("results.h5ad", KEY)
