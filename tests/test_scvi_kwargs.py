"""sat.tl.scvi_kwargs: a search's configuration as scvi-tools' SCVI arguments.

scvi-tools is not a dependency: the mapping is checked in it by benchmarks/scvi_handoff.py.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

import scanpy_autotune as sat
from scanpy_autotune._record import TrialRecord
from scanpy_autotune._results import build_results, write_results
from scanpy_autotune._vae._config import HYPERPARAMETERS, default_hyperparameters
from scanpy_autotune.tl._scvi_kwargs import SCVI_TOOLS_NAMES

KEY = "autotune"
SEARCHED = {
    "n_hidden": "categorical",
    "n_latent": "numeric",
    "n_layers": "numeric",
    "dropout_rate": "categorical",
    "reconstruction_loss": "categorical",
    "lr": "categorical",
}
SETTINGS = {"max_epochs": 250, "validation_size": 0.2, "seed": 0, "train_size": 0.75}
DEFAULT = {"n_hidden": 128, "n_latent": 10, "n_layers": 1, "dropout_rate": 0.1,
           "reconstruction_loss": "zinb", "lr": 1e-3}
BEST = {"n_hidden": 64, "n_latent": 7, "n_layers": 3, "dropout_rate": 0.3,
        "reconstruction_loss": "nb", "lr": 5e-3}
OTHER = {"n_hidden": 256, "n_latent": 12, "n_layers": 2, "dropout_rate": 0.5,
         "reconstruction_loss": "poisson", "lr": 1e-4}
SEARCHES = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "searches"


def _record(trial_id: int, params: dict, loss: float, status: str = "ok") -> TrialRecord:
    return TrialRecord(
        trial_id=trial_id, params=dict(params), status=status, loss=loss,
        n_epochs=10, best_epoch=9, completion_order=trial_id, is_default=trial_id == 0,
    )


def _adata(records: list[TrialRecord], settings: dict = SETTINGS) -> ad.AnnData:
    adata = ad.AnnData(np.zeros((4, 3), dtype=np.float32))
    write_results(adata, KEY, build_results(records, settings=settings, searched=SEARCHED))
    return adata


@pytest.fixture
def searched() -> ad.AnnData:
    """Trial 0 the default, trial 1 the best, trial 2 pruned, trial 3 failed."""
    return _adata([
        _record(0, DEFAULT, 130.0),
        _record(1, BEST, 121.5),
        _record(2, OTHER, math.nan, status="pruned"),
        _record(3, OTHER, math.nan, status="fail"),
    ])


def _expected(params: dict, settings: dict = SETTINGS) -> dict:
    """What the hand-off must be, written out name by name."""
    p = {**default_hyperparameters(), **params}
    expected = {
        "setup_anndata": {"layer": None, "batch_key": None},
        "model": {
            "n_hidden": p["n_hidden"], "n_latent": p["n_latent"], "n_layers": p["n_layers"],
            "dropout_rate": p["dropout_rate"], "gene_likelihood": p["reconstruction_loss"],
            "dispersion": p["dispersion"], "use_observed_lib_size": p["use_observed_lib_size"],
        },
        "train": {
            "max_epochs": settings["max_epochs"],
            "train_size": 1.0 - settings["validation_size"],
            "batch_size": p["batch_size"],
            "early_stopping": p["early_stopping"],
            "early_stopping_patience": p["early_stopping_patience"],
            "plan_kwargs": {
                "lr": p["lr"], "weight_decay": p["weight_decay"],
                "n_epochs_kl_warmup": p["n_epochs_kl_warmup"], "max_kl_weight": p["max_kl_weight"],
                # torch's ReduceLROnPlateau drops the rate after patience + 1 epochs without progress
                "reduce_lr_on_plateau": p["reduce_lr_on_plateau"], "lr_patience": p["lr_patience"] - 1,
                "eps": 0.01, "lr_factor": 0.6,
            },
        },
    }
    if settings["validation_size"] == 0.1:  # scvi-tools' own 0.9, the only one that keeps its small-batch guard
        del expected["train"]["train_size"]
    return expected


def _round_trip(adata: ad.AnnData, tmp_path) -> ad.AnnData:
    adata.write_h5ad(tmp_path / "searched.h5ad")
    return ad.read_h5ad(tmp_path / "searched.h5ad")


def test_best_trial_maps_to_scvi_tools_names(searched):
    kw = sat.tl.scvi_kwargs(searched)
    assert kw == _expected(BEST)
    assert kw["model"]["gene_likelihood"] == "nb" and kw["train"]["plan_kwargs"]["lr"] == 5e-3
    assert kw["model"]["use_observed_lib_size"] is False  # ours, not scvi-tools' default (True)


def test_chosen_trial_of_any_status(searched):
    assert sat.tl.scvi_kwargs(searched, trial=0) == _expected(DEFAULT)
    assert sat.tl.scvi_kwargs(searched, trial=np.int64(2)) == _expected(OTHER)
    assert sat.tl.scvi_kwargs(searched, trial=3)["model"]["gene_likelihood"] == "poisson"


def test_unrecorded_hyperparameters_take_the_defaults(searched):
    kw = sat.tl.scvi_kwargs(searched)
    defaults = default_hyperparameters()
    plan = kw["train"]["plan_kwargs"]
    assert kw["model"]["dispersion"] == defaults["dispersion"] == "gene"
    assert kw["train"]["batch_size"] == defaults["batch_size"] == 128
    assert kw["train"]["early_stopping"] is True
    assert kw["train"]["early_stopping_patience"] == defaults["early_stopping_patience"] == 45
    assert plan["weight_decay"] == 1e-6 and plan["n_epochs_kl_warmup"] == 400 and plan["max_kl_weight"] == 1.0
    assert plan["reduce_lr_on_plateau"] is False and plan["lr_patience"] == 8 - 1


def test_fixed_hyperparameters_and_settings_carry_over():
    fixed = {"dispersion": "gene-batch", "use_observed_lib_size": True, "batch_size": 256,
             "weight_decay": 0.0, "n_epochs_kl_warmup": 50, "max_kl_weight": 4.0, "early_stopping": False,
             "early_stopping_patience": 12, "reduce_lr_on_plateau": True, "lr_patience": 5}
    settings = {"max_epochs": 30, "validation_size": 0.1}
    adata = _adata([_record(0, {**DEFAULT, **fixed}, 9.0), _record(1, {**BEST, **fixed}, 8.0)],
                   settings=settings)
    kw = sat.tl.scvi_kwargs(adata, layer="counts", batch_key="batch")
    expected = _expected({**BEST, **fixed}, settings)
    expected["model"]["encode_covariates"] = True  # the batch enters the encoders here, as with it there
    assert kw == {**expected, "setup_anndata": {"layer": "counts", "batch_key": "batch"}}
    assert "train_size" not in kw["train"] and kw["train"]["plan_kwargs"]["lr_patience"] == 4
    assert "encode_covariates" not in sat.tl.scvi_kwargs(adata, layer="counts", batch_key=None)["model"]


def test_a_trial_missing_a_column_value_takes_its_default():
    adata = _adata([_record(0, DEFAULT, 9.0), _record(1, {**BEST, "batch_size": 512}, 8.0),
                    _record(2, OTHER, 7.0)])
    assert sat.tl.scvi_kwargs(adata, trial=1)["train"]["batch_size"] == 512
    assert sat.tl.scvi_kwargs(adata)["train"]["batch_size"] == 128  # trial 2, the best


def test_every_hyperparameter_has_a_place_in_scvi_tools():
    assert set(SCVI_TOOLS_NAMES) == set(HYPERPARAMETERS)
    places = list(SCVI_TOOLS_NAMES.values())
    assert len(set(places)) == len(places)  # no two land on the same argument
    assert {section for section, _ in places} == {"model", "train", "plan_kwargs"}


def test_plateau_factor_is_the_one_we_train_with(searched):
    from scanpy_autotune._vae._train import train

    factor = inspect.signature(train).parameters["lr_factor"].default
    assert sat.tl.scvi_kwargs(searched)["train"]["plan_kwargs"]["lr_factor"] == factor


def test_round_trip_through_h5ad(searched, tmp_path):
    back = _round_trip(searched, tmp_path)
    for trial in (None, 0, 2):
        kw = sat.tl.scvi_kwargs(back, trial=trial)
        assert kw == sat.tl.scvi_kwargs(searched, trial=trial)
        assert type(kw["model"]["n_hidden"]) is int and type(kw["model"]["gene_likelihood"]) is str
        assert type(kw["train"]["early_stopping"]) is bool
        assert type(kw["train"]["plan_kwargs"]["lr"]) is float
    json.dumps(kw)  # plain values only: a subprocess in another environment can read them


def test_returns_fresh_dicts(searched):
    kw = sat.tl.scvi_kwargs(searched)
    kw["model"]["n_hidden"] = 1
    kw["train"]["plan_kwargs"]["lr"] = 1.0
    assert sat.tl.scvi_kwargs(searched) == _expected(BEST)


def test_missing_key(searched):
    with pytest.raises(KeyError, match=r"uns\['other'\] not found"):
        sat.tl.scvi_kwargs(searched, key="other")


def test_no_successful_trial():
    adata = _adata([_record(0, DEFAULT, math.nan, status="fail"),
                    _record(1, BEST, math.nan, status="pruned")])
    with pytest.raises(ValueError, match="No trial .* succeeded"):
        sat.tl.scvi_kwargs(adata)
    assert sat.tl.scvi_kwargs(adata, trial=1) == _expected(BEST)  # a chosen one still hands off


@pytest.mark.parametrize("trial, match", [
    (7, "trial=7 is not a trial .* from 0 to 3 \\(4 trials\\)"),
    (-1, "trial=-1 must be an integer"),
    (True, "trial=True must be an integer"),
    (1.0, "trial=1.0 must be an integer"),
])
def test_bad_trial(searched, trial, match):
    with pytest.raises(ValueError, match=match):
        sat.tl.scvi_kwargs(searched, trial=trial)


def test_hyperparameter_without_scvi_tools_equivalent_is_refused():
    adata = _adata([_record(0, DEFAULT, 9.0), _record(1, {**BEST, "use_batch_norm": "none"}, 8.0)])
    with pytest.raises(ValueError, match=r"\['use_batch_norm'\] with no scvi-tools equivalent"):
        sat.tl.scvi_kwargs(adata)
    # the other trial did not use it: it hands off
    assert sat.tl.scvi_kwargs(adata, trial=0) == _expected(DEFAULT)


def test_invalid_stored_value_is_refused():
    invalid = {**BEST, "reconstruction_loss": "gamma"}
    adata = _adata([_record(0, DEFAULT, 9.0), _record(1, invalid, 8.0)])
    with pytest.raises(ValueError, match="Trial 1 stored an invalid value: reconstruction_loss="):
        sat.tl.scvi_kwargs(adata)


def test_settings_without_epoch_cap_are_refused():
    adata = _adata([_record(0, DEFAULT, 9.0)], settings={"seed": 0})
    with pytest.raises(ValueError, match="does not record max_epochs"):
        sat.tl.scvi_kwargs(adata)


def test_recorded_layer_and_batch_key_are_used(tmp_path):
    settings = {**SETTINGS, "layer": "counts", "batch_key": None}
    adata = _adata([_record(0, DEFAULT, 9.0)], settings=settings)
    for copy in (adata, _round_trip(adata, tmp_path)):  # None is stored as "None" in .h5ad
        assert sat.tl.scvi_kwargs(copy)["setup_anndata"] == {"layer": "counts", "batch_key": None}
        assert sat.tl.scvi_kwargs(copy, layer="counts")["setup_anndata"]["layer"] == "counts"
    contradiction = "layer='raw' contradicts the search, which used layer='counts'"
    with pytest.raises(ValueError, match=contradiction):
        sat.tl.scvi_kwargs(adata, layer="raw")
    with pytest.raises(ValueError, match="batch_key='batch' contradicts .* batch_key=None"):
        sat.tl.scvi_kwargs(adata, batch_key="batch")


def test_real_search(search_result):
    """A real search (tests/conftest.py): the best trial's recorded values, renamed."""
    from scanpy_autotune._results import read_results

    res = read_results(search_result)
    kw = sat.tl.scvi_kwargs(search_result)
    best = {**default_hyperparameters(), **res.best["params"]}
    assert kw["setup_anndata"] == {"layer": None, "batch_key": None}
    assert kw["model"]["gene_likelihood"] == best["reconstruction_loss"]
    assert kw["model"]["n_layers"] == best["n_layers"] != 4  # the test objective refuses 4
    assert kw["train"]["plan_kwargs"]["lr"] == best["lr"]
    assert kw["train"]["max_epochs"] == 8
    assert kw == _expected(res.best["params"], {"max_epochs": 8, "validation_size": 0.1})


@pytest.mark.parametrize("argument", ["layer", "batch_key"])
def test_layer_and_batch_key_must_be_names(searched, argument):
    with pytest.raises(ValueError, match=f"{argument}=3 must be a string or None"):
        sat.tl.scvi_kwargs(searched, **{argument: 3})


def test_committed_cortex_search():
    """The best configuration of a real 100-trial search (committed under benchmarks/)."""
    adata = ad.read_h5ad(SEARCHES / "cortex_zeisel_3005x200_w2_asha_n100_s0_t0.1_uns.h5ad")
    kw = sat.tl.scvi_kwargs(adata)
    assert kw["model"] == {"n_hidden": 64, "n_latent": 5, "n_layers": 3, "dropout_rate": 0.3,
                           "gene_likelihood": "zinb", "dispersion": "gene",
                           "use_observed_lib_size": False}
    assert kw["train"]["max_epochs"] == 400 and "train_size" not in kw["train"]  # scvi-tools' default 0.9
    assert kw["train"]["plan_kwargs"]["lr"] == 0.005
    assert sat.tl.scvi_kwargs(adata, trial=0)["model"]["n_hidden"] == 128  # the default


def test_an_edited_best_trial_is_named_as_the_stored_best(searched):
    edited = searched.copy()
    edited.uns["autotune"]["best"] = {**edited.uns["autotune"]["best"], "trial_id": 99}
    with pytest.raises(ValueError, match=r"the best trial recorded in adata.uns\['autotune'\]\['best'\] \(99\) is not"):
        sat.tl.scvi_kwargs(edited)
