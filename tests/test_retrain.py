"""sat.tl.retrain: a trial of a search trained again gives its recorded loss and latent again."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scanpy_autotune as sat
from scanpy_autotune._results import read_results


def test_retrain_gives_a_trial_its_recorded_loss_again(search_result):
    adata = search_result
    trials = read_results(adata).trials
    ok = trials[(trials["status"] == "ok") & ~trials["is_default"]]
    trial = ok.iloc[-1]  # a trial TPE drew, trained with seed + its id
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the search's two workers on two cores trained
    try:
        model = sat.tl.retrain(adata, trial=int(trial["trial_id"]), device="cpu")
    finally:
        torch.set_num_threads(threads)
    for name in ("n_hidden", "n_latent", "n_layers", "dropout_rate", "lr", "reconstruction_loss"):
        assert model.hyperparameters[name] == trial[name]
    assert list(model.split["heldout"]) == list(adata.obs_names[adata.obs["autotune_split"] == "heldout"])
    # the search's objective scored the held-out cells with 5 importance samples; so does this
    assert model.marginal_nll(adata, n_mc=5) == float(trial["loss"])
    other = sat.Model.fit(adata, split="autotune_split", seed=0, max_epochs=8, device="cpu",
                          **{k: model.hyperparameters[k] for k in ("n_hidden", "n_latent", "n_layers")})
    assert abs(other.marginal_nll(adata, n_mc=5) - float(trial["loss"])) > 1e-3 * float(trial["loss"])


def test_retrain_of_the_best_trial_gives_the_search_latent(search_result):
    adata = search_result
    best = sat.tl.retrain(adata, device="cpu")
    assert best.hyperparameters["n_latent"] == adata.uns["autotune"]["best"]["params"]["n_latent"]
    np.testing.assert_allclose(best.latent(adata), adata.obsm["X_autotune"], rtol=1e-3, atol=1e-3)


def test_retrain_says_what_is_missing(search_result):
    with pytest.raises(ValueError, match="trial=999 is not a trial"):
        sat.tl.retrain(search_result, trial=999)
    without_split = search_result.copy()
    del without_split.obs["autotune_split"]
    with pytest.raises(ValueError, match=r"adata.obs\['autotune_split'\] is missing"):
        sat.tl.retrain(without_split)
    edited = search_result.copy()
    edited.obs["autotune_split"] = "train"
    with pytest.raises(ValueError, match="0 held-out"):
        sat.tl.retrain(edited)
    with pytest.raises(ValueError, match="split='nope' is not a column of adata.obs"):
        sat.Model.fit(search_result, split="nope", max_epochs=1)


def test_retrain_refuses_other_data_and_an_edited_split(search_result):
    """Another model under the trial's name would be a wrong answer: other data or split is refused."""
    with pytest.raises(ValueError, match="is not the data the search .* ran on"):
        sat.tl.retrain(search_result[:300].copy())
    reordered = search_result[::-1].copy()
    with pytest.raises(ValueError, match="is not the data the search"):
        sat.tl.retrain(reordered)
    with pytest.raises(ValueError, match="cell names or batches differ .* genes are in another order"):
        sat.tl.retrain(search_result[:, ::-1].copy())
    edited = search_result.copy()
    labels = edited.obs["autotune_split"].astype(str).to_numpy().copy()
    labels[np.flatnonzero(labels == "train")[:5]] = "heldout"
    edited.obs["autotune_split"] = labels
    with pytest.raises(ValueError, match=r"not the split the search drew: 5 cell\(s\) are in another part"):
        sat.tl.retrain(edited)
    with pytest.raises(ValueError, match="layer='counts' contradicts the search, which used layer=None"):
        sat.tl.retrain(search_result, layer="counts")
