"""sat.Model: training, metrics, persistence and input validation on real counts."""

import copy
import inspect

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import scanpy_autotune as sat
from scanpy_autotune._vae import _data, _model
from scanpy_autotune._vae._config import HYPERPARAMETERS
from scanpy_autotune._vae._data import DeviceCounts, extract_counts, make_split
from scanpy_autotune._vae._likelihood import NonZeros
from scanpy_autotune._vae._module import VAE
from scanpy_autotune._vae._names import STOPPED_BY
from scanpy_autotune._vae._train import _kl_weight, train

FAST = dict(max_epochs=3, n_hidden=32, n_latent=4)


@pytest.fixture
def small(cortex):
    return cortex[np.random.default_rng(0).choice(cortex.n_obs, 300, replace=False)].copy()


@pytest.fixture(scope="module")
def trained(cortex_path):
    adata = ad.read_h5ad(cortex_path)
    adata = adata[np.random.default_rng(2).choice(adata.n_obs, 600, replace=False)].copy()
    model = sat.Model.fit(adata, max_epochs=25, seed=0, device="cpu")
    return adata, model


def test_marginal_likelihood_is_at_least_the_elbo(trained):
    adata, model = trained
    nll = model.marginal_nll(adata, n_mc=100, per_cell=True)
    elbo = model.elbo(adata, per_cell=True)
    assert nll.shape == elbo.shape == (len(model.split["heldout"]),)
    # log p(x) >= ELBO, cell by cell up to Monte Carlo noise, and clearly on average
    assert np.mean(-nll) > np.mean(elbo)
    assert np.mean(-nll >= elbo - 1.0) > 0.95
    # per cell: labelled by the held-out cells' names, aligned when stored in obs
    assert list(nll.index) == list(model.split["heldout"]) and nll.name == "marginal_nll"
    assert nll.index.equals(elbo.index) and elbo.name == "elbo"
    stored = adata.copy()
    stored.obs["nll"] = nll
    assert stored.obs["nll"].notna().sum() == len(nll)
    first = model.split["heldout"][0]
    assert stored.obs.at[first, "nll"] == nll[first]
    assert model.marginal_nll(adata, n_mc=100) == pytest.approx(float(nll.mean()), rel=1e-6)


def test_split_is_disjoint_and_covers_cells(trained):
    adata, model = trained
    parts = [set(model.split[k]) for k in ("train", "validation", "heldout")]
    assert sum(map(len, parts)) == adata.n_obs
    assert set.union(*parts) == set(adata.obs_names)
    assert len(model.split["heldout"]) == round(0.25 * adata.n_obs)
    assert len(model.split["validation"]) == round(0.1 * round(0.75 * adata.n_obs))


def test_history_and_best_epoch(trained):
    _, model = trained
    history = model.history
    assert list(history.columns) == ["train_elbo", "validation_elbo"]
    assert len(history) == model.train_result.n_epochs
    assert model.train_result.best_epoch == int(np.argmax(history["validation_elbo"]))
    # training improves the ELBO
    assert history["train_elbo"].iloc[-1] > history["train_elbo"].iloc[0]


def test_seeded_training_is_reproducible(small):
    a = sat.Model.fit(small, seed=5, device="cpu", **FAST)
    b = sat.Model.fit(small, seed=5, device="cpu", **FAST)
    c = sat.Model.fit(small, seed=6, device="cpu", **FAST)
    pd.testing.assert_frame_equal(a.history, b.history)
    np.testing.assert_array_equal(a.latent(small), b.latent(small))
    assert not np.allclose(a.latent(small), c.latent(small))


def test_best_weights_are_restored_as_a_copy(small):
    data = extract_counts(small)
    counts = DeviceCounts(data)
    split = make_split(data.n_obs, seed=0)
    torch.manual_seed(0)
    module = VAE(data.n_vars, 1, n_hidden=16, n_latent=3, library_prior=counts.library_prior(split.train))
    snapshots = []

    def snapshot(epoch, train_elbo, validation_elbo):
        snapshots.append(copy.deepcopy(module.state_dict()))
        return False

    result = train(module, counts, split.train, split.validation, max_epochs=12, lr=3e-2,
                   early_stopping=False, callback=snapshot)
    best = result.best_epoch
    assert best == int(np.argmax(result.validation_elbo))
    restored = module.state_dict()
    for name, value in snapshots[best].items():
        torch.testing.assert_close(restored[name], value, rtol=0, atol=0)
    if best != len(snapshots) - 1:
        last = snapshots[-1]
        assert any(not torch.equal(restored[n], last[n]) for n in last)


def test_early_stopping_stops_after_patience(small):
    model = sat.Model.fit(small, seed=0, device="cpu", max_epochs=200, lr=5e-2,
                          early_stopping_patience=3, n_hidden=16, n_latent=3)
    result = model.train_result
    assert result.stopped_by == "early_stopping" and result.stopped_by in STOPPED_BY
    assert result.n_epochs - 1 - result.best_epoch == 3


def test_kl_weight_rises_over_the_warm_up_to_its_maximum():
    assert [_kl_weight(e, 4, 2.0) for e in (0, 1, 2, 4, 9)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert _kl_weight(0, 0, 3.0) == 3.0 and _kl_weight(7, 400) == 7 / 400


def test_a_larger_kl_weight_pulls_the_latent_toward_its_prior(small):
    spread = {}
    for weight in (1.0, 100.0):
        model = sat.Model.fit(small, device="cpu", seed=0, max_kl_weight=weight, n_epochs_kl_warmup=0,
                              early_stopping=False, **{**FAST, "max_epochs": 15})
        assert model.hyperparameters["max_kl_weight"] == weight
        spread[weight] = float(np.mean(np.sum(model.latent(small) ** 2, axis=1)))
    # the prior is N(0, I): a heavier KL term shrinks the posterior means toward 0
    assert spread[100.0] < 0.6 * spread[1.0]


def test_every_hyperparameter_reaches_the_module_or_the_training_with_one_default():
    # a name in neither list would be recorded in model.hyperparameters but never used
    assert not set(_model._ARCHITECTURE) & set(_model._TRAINING)
    assert set(_model._ARCHITECTURE) | set(_model._TRAINING) == set(HYPERPARAMETERS)
    for function, names in ((VAE.__init__, _model._ARCHITECTURE), (train, _model._TRAINING)):
        signature = inspect.signature(function).parameters
        for name in names:
            assert signature[name].default == HYPERPARAMETERS[name].default, (function.__qualname__, name)


def test_weight_decay_reaches_the_optimizer_and_shrinks_the_weights(small):
    norms = {}
    for decay in (0.0, 1.0):
        model = sat.Model.fit(small, device="cpu", seed=0, weight_decay=decay, lr=1e-2, early_stopping=False, **FAST)
        assert model.hyperparameters["weight_decay"] == decay
        norms[decay] = float(sum(p.detach().pow(2).sum() for p in model.module.parameters()))
    assert norms[1.0] < 0.9 * norms[0.0]


def test_callback_can_stop_training(small):
    model = sat.Model.fit(small, device="cpu", callback=lambda e, t, v: e == 1, **{**FAST, "max_epochs": 50})
    assert model.train_result.n_epochs == 2 and model.train_result.stopped_by == "callback" in STOPPED_BY


def test_save_load_gives_identical_latents(trained, tmp_path):
    adata, model = trained
    model.save(tmp_path / "model")
    loaded = sat.Model.load(tmp_path / "model")
    np.testing.assert_array_equal(model.latent(adata), loaded.latent(adata))
    assert loaded.hyperparameters == model.hyperparameters
    assert loaded.split == model.split
    pd.testing.assert_frame_equal(loaded.history, model.history)
    state = torch.load(tmp_path / "model" / "weights.pt", weights_only=True)
    assert set(state) == set(model.module.state_dict())
    with pytest.raises(ValueError, match="holds a saved model; pass overwrite=True"):
        model.save(tmp_path / "model")


def test_outputs_have_expected_shapes(trained):
    adata, model = trained
    expr = model.normalized_expression(adata)
    assert expr.shape == adata.shape
    np.testing.assert_allclose(expr.sum(axis=1), 1.0, rtol=1e-4)
    assert model.latent(adata).shape == (adata.n_obs, 10)


def test_imputation_score(trained):
    adata, model = trained
    score = model.imputation_score(adata, rate=0.1, retrain=False)
    assert score["n_cells"] > 0.9 * adata.n_obs
    assert 0 <= score["median"] <= score["mean"] * 10
    # a model that knows the data imputes better than predicting zero for every corrupted entry
    X = adata.X.tocoo()
    assert score["median"] < np.median(X.data)


@pytest.mark.parametrize("kind", ["nb", "poisson"])
def test_other_likelihoods_and_observed_library(small, kind):
    model = sat.Model.fit(small, device="cpu", reconstruction_loss=kind, use_observed_lib_size=True, **FAST)
    module = model.module
    assert module.reconstruction_loss == kind and module.use_observed_lib_size
    assert not hasattr(module, "l_encoder")  # the library is the observed one, not encoded
    assert module.px_heads.out_features == small.n_vars  # one head: no zero-inflation logits
    assert hasattr(module, "log_theta") == (kind == "nb")  # Poisson has no dispersion
    assert np.isfinite(model.marginal_nll(small, n_mc=5))


def test_batch_covariate(cortex):
    adata = cortex[:400].copy()
    adata.obs["plate"] = np.where(np.arange(adata.n_obs) % 2, "a", "b")
    model = sat.Model.fit(adata, batch_key="plate", device="cpu", dispersion="gene-batch", **FAST)
    assert model.module.log_theta.shape == (2, adata.n_vars)
    assert np.isfinite(model.marginal_nll(adata, n_mc=5))
    swapped = adata.copy()
    swapped.obs["plate"] = np.where(adata.obs["plate"] == "a", "b", "a")
    # the batch enters the encoder: the same counts under the other plate embed elsewhere
    assert not np.allclose(model.latent(adata), model.latent(swapped))


@pytest.mark.filterwarnings("ignore:Observation names are not unique")
def test_inference_takes_any_cells_of_the_model_genes_and_batches(cortex):
    """A trained model embeds and scores a few cells, cells named twice, genes in another order."""
    adata = cortex[:400].copy()
    adata.obs["plate"] = np.where(np.arange(adata.n_obs) % 2, 1, 0)
    model = sat.Model.fit(adata, batch_key="plate", device="cpu", seed=0, **FAST)
    full = model.latent(adata)
    np.testing.assert_allclose(model.latent(adata[:3].copy()), full[:3], rtol=1e-5, atol=1e-6)
    query = adata[:12].copy()  # 12 cells from 2 batches would be refused as a training batch column
    query.obs["plate"] = query.obs["plate"].astype(float)  # 0.0/1.0 name the batches 0/1
    np.testing.assert_allclose(model.latent(query), full[:12], rtol=1e-5, atol=1e-6)
    twice = ad.concat([adata[:5], adata[:5]])  # two samples with the same barcodes
    np.testing.assert_allclose(model.latent(twice), np.vstack([full[:5], full[:5]]), rtol=1e-5, atol=1e-6)
    assert model.marginal_nll(twice, n_mc=5, cells="all", per_cell=True).shape == (10,)
    with pytest.raises(ValueError, match="obs_names has duplicates, so cells cannot be selected by name"):
        model.marginal_nll(twice, n_mc=5, cells=[twice.obs_names[0]])
    reordered = adata[:, adata.var_names[::-1]].copy()
    np.testing.assert_allclose(model.latent(reordered), full, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    nll = model.marginal_nll(adata, n_mc=5, cells="all")
    torch.manual_seed(0)
    assert model.marginal_nll(reordered, n_mc=5, cells="all") == pytest.approx(nll, rel=1e-5)
    extra = cortex[:400, :20].copy()
    extra.var_names = [f"extra{i}" for i in range(20)]
    more_genes = ad.concat([adata, extra], axis=1, merge="first")
    np.testing.assert_allclose(model.latent(more_genes[:, ::-1]), full, rtol=1e-5, atol=1e-6)
    expression = model.normalized_expression(more_genes[:, ::-1])
    assert list(expression.columns) == list(adata.var_names[::-1])  # adata's order, the model's genes
    unknown = adata[:20].copy()
    unknown.obs["plate"] = np.where(np.arange(20) < 3, 7, unknown.obs["plate"])
    with pytest.raises(ValueError, match=r"Unknown batch '7' in adata.obs\['plate'\] for 3 of the selected cells; "
                                         r"the model knows \['0', '1'\]\. Leave those cells out"):
        model.latent(unknown)
    others = list(unknown.obs_names[3:])  # scoring the cells of known batches needs no batch for the others
    assert model.marginal_nll(unknown, n_mc=5, cells=others) == pytest.approx(
        model.marginal_nll(adata, n_mc=5, cells=others), rel=1e-6)
    del unknown.obs["plate"]
    with pytest.raises(ValueError, match=r"trained with batches from adata.obs\['plate'\], which this adata lacks"):
        model.latent(unknown)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(cells=[]), r"cells=\[\] selects no cell of adata"),
        (dict(cells=None), r"cells=None: cells= takes 'all', one of \['train'"),
        (dict(cells=["1", "2"]), r"adata does not contain those cells \(cells= takes obs names\) \(2 missing, e.g. '1'\)"),
        (dict(cells=[1, 2]), r"cells= holds numbers \(e.g. 1\), but cells= takes 'all'.*adata.obs_names\[positions\]"),
        (dict(cells=np.ones(600, int)), r"cells= holds numbers \(int64\).*for a 0/1 mask mask.astype\(bool\)"),
        (dict(cells=np.zeros(600, bool)), r"^cells= \(a ndarray of 600 value\(s\)\) selects no cell of adata\.$"),
        (dict(cells=np.ones(5, bool)), r"one entry per cell \(600\)"),
        (dict(n_mc=5.0), r"n_mc=5.0 must be an integer"),
        (dict(n_mc="5"), r"n_mc='5' must be an integer"),
        (dict(n_mc=0), r"n_mc=0 must be an integer >= 1"),
        (dict(seed=-1), r"seed=-1 must be an integer in \[0, 4294967295\]"),
        (dict(cells=pd.Series(np.ones(600, bool))), r"a boolean Series for cells= is matched .* by its index"),
        (dict(layer="counts"), r"layer='counts' is not in adata.layers"),
    ],
)
def test_scoring_arguments_are_checked(trained, kwargs, message):
    adata, model = trained
    with pytest.raises(ValueError, match=message):
        model.marginal_nll(adata, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_epochs=0), r"max_epochs=0 must be an integer in \[1, "),
        (dict(max_epochs="x"), r"max_epochs='x' must be an integer"),
        (dict(seed=-1), r"seed=-1 must be an integer in \[0, 4294967295\]"),
        (dict(seed=1.5), r"seed=1.5 must be an integer"),
        (dict(rate="0.1"), r"rate='0.1' must be"),
        (dict(rate=1.0), r"rate=1.0 must be"),
    ],
)
def test_imputation_arguments_are_checked_before_any_training(trained, kwargs, message):
    adata, model = trained
    with pytest.raises(ValueError, match=message):
        model.imputation_score(adata, **kwargs)


def test_from_dict_and_fit_switches_refuse_what_they_cannot_use(trained, small):
    adata, model = trained
    blob = model.to_dict()
    np.testing.assert_array_equal(sat.Model.from_dict(blob).latent(adata), model.latent(adata))
    for bad in ({"config": blob["config"]}, [blob], {**blob, "weights": "not bytes"}):
        with pytest.raises(ValueError, match=r"blob must be the dict Model.to_dict\(\) gives"):
            sat.Model.from_dict(bad)
    with pytest.raises(ValueError, match="the model's config"):
        sat.Model.from_dict({"config": {**blob["config"], "split": 5}, "weights": blob["weights"]})
    for name in ("compiled_likelihood", "cuda_graphs"):
        with pytest.raises(ValueError, match=f"{name}='yes' must be True or False"):
            sat.Model.fit(small, max_epochs=1, **{name: "yes"})


def test_duplicate_gene_names_and_missing_devices_are_refused(small, tmp_path):
    twins = small.copy()
    twins.var_names = ["MT-ND1"] * 3 + list(small.var_names[3:])
    with pytest.raises(ValueError, match=r"var_names has 2 duplicate\(s\), e.g. 'MT-ND1'.*var_names_make_unique"):
        sat.Model.fit(twins, **FAST)
    sat.Model.fit(small, device="cpu", **FAST).save(tmp_path / "model")
    if not torch.cuda.is_available():
        for call in (lambda: sat.Model.fit(small, device="cuda", **FAST), lambda: sat.Model.load(tmp_path / "model", device="cuda")):
            with pytest.raises(ValueError, match=r"device='cuda': no CUDA device is available"):
                call()
    with pytest.raises(ValueError, match=r"device='gpu' is not a device torch knows"):
        sat.Model.fit(small, device="gpu", **FAST)


def test_dense_csr_csc_agree_and_adata_untouched(small):
    dense = small.copy()
    dense.X = small.X.toarray()
    csc = small.copy()
    csc.X = sp.csc_matrix(small.X)
    before = small.X.copy()
    runs = [sat.Model.fit(a, seed=1, device="cpu", **FAST) for a in (small, dense, csc)]
    for other in runs[1:]:
        pd.testing.assert_frame_equal(runs[0].history, other.history)
    assert (small.X != before).nnz == 0 and not small.obsm and not small.uns.get("autotune")


def test_sparse_minibatches_equal_dense(small, monkeypatch):
    data = extract_counts(small)
    dense = DeviceCounts(data)
    monkeypatch.setattr(_data, "DENSE_LIMIT_BYTES", 0)
    sparse = DeviceCounts(data)
    assert dense.dense and not sparse.dense
    rows = torch.tensor([5, 0, 17, 17, 299])
    for a, b in zip(dense.rows(rows), sparse.rows(rows)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # Both read the non-zeros from the CSR arrays (on the CPU dense counts keep them too):
    # those torch.nonzero would find, in the same order.
    x, _, nz = sparse.rows_and_nonzeros(rows)
    found = NonZeros(x)
    for from_csr in (nz, dense.rows_and_nonzeros(rows)[2]):
        for name in ("rows", "cols", "flat", "values"):
            torch.testing.assert_close(getattr(from_csr, name), getattr(found, name), rtol=0, atol=0)


def test_sparse_counts_train_like_dense(small, monkeypatch):
    """A model trained from CSR minibatches (non-zeros from the CSR rows) follows the dense one."""
    dense = sat.Model.fit(small, seed=3, device="cpu", **FAST)
    monkeypatch.setattr(_data, "DENSE_LIMIT_BYTES", 0)
    sparse = sat.Model.fit(small, seed=3, device="cpu", **FAST)
    pd.testing.assert_frame_equal(dense.history, sparse.history, rtol=1e-5)


def test_unknown_and_out_of_range_hyperparameters(small):
    with pytest.raises(ValueError, match="Unknown hyperparameter.*n_hidden"):
        sat.Model.fit(small, n_hiden=64)
    with pytest.raises(ValueError, match="dropout_rate"):
        sat.Model.fit(small, dropout_rate=1.5)
    with pytest.raises(ValueError, match="reconstruction_loss"):
        sat.Model.fit(small, reconstruction_loss="gaussian")
    with pytest.raises(ValueError, match="max_epochs"):
        sat.Model.fit(small, max_epochs=0)


def _with_x(adata, X):
    out = adata.copy()
    out.X = X
    return out


def _renamed(adata, names):
    out = adata.copy()
    out.obs_names = names
    return out


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda a: _with_x(a, -a.X), "negative"),
        (lambda a: _with_x(a, a.X * 0.5), "non-integer"),
        (lambda a: _with_x(a, np.where(np.eye(*a.shape) > 0, np.nan, a.X.toarray())), "NaN or infinite"),
        (lambda a: _with_x(a, np.where(np.eye(*a.shape) > 0, np.inf, a.X.toarray())), "NaN or infinite"),
        (lambda a: a[:5].copy(), "at least 10 cells"),
        (lambda a: a[:, :1].copy(), "2 genes"),
        (lambda a: _with_x(a, sp.csr_matrix(a.X.multiply(np.arange(a.n_obs)[:, None] >= 3))), "3 cell\\(s\\) have zero counts.*filter_cells"),
        (lambda a: _renamed(a, ["c"] * 3 + list(a.obs_names[3:])), "2 duplicate\\(s\\), e.g. 'c'.*obs_names_make_unique"),
    ],
)
def test_bad_counts(small, make, message):
    with pytest.raises(ValueError, match=message):
        sat.Model.fit(make(small), **FAST)


def test_missing_layer_and_batch_key(small):
    with pytest.raises(ValueError, match="layer='counts'"):
        sat.Model.fit(small, layer="counts")
    with pytest.raises(ValueError, match="batch_key='plate'"):
        sat.Model.fit(small, batch_key="plate")
    small.layers["counts"], small.X = small.X, None
    with pytest.raises(ValueError, match=r"adata.X is None .*pass layer= .*\(layers: \['counts'\]\)"):
        sat.Model.fit(small)


def test_integer_valued_floats_and_layers_accepted(small):
    small.layers["counts"] = small.X.astype(np.float64)
    small.X = sp.csr_matrix(np.log1p(small.X.toarray()))
    model = sat.Model.fit(small, layer="counts", device="cpu", **FAST)
    assert np.isfinite(model.marginal_nll(small, n_mc=3))


def test_global_float64_default_is_followed(small):
    """A user who set torch's default dtype to float64 still gets a working model."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = sat.Model.fit(small, device="cpu", **FAST)
        assert next(model.module.parameters()).dtype == torch.float64
        assert np.isfinite(model.marginal_nll(small, n_mc=3))
    finally:
        torch.set_default_dtype(previous)


def test_estimates_are_seeded_and_leave_torch_generators_alone(trained):
    adata, model = trained
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    first = model.marginal_nll(adata, n_mc=5, per_cell=True)
    assert torch.equal(torch.rand(3), expected)  # the caller's random state is as it was
    np.testing.assert_array_equal(model.marginal_nll(adata, n_mc=5, per_cell=True), first)
    assert model.elbo(adata) == model.elbo(adata)
    assert model.marginal_nll(adata, n_mc=5, seed=1) != model.marginal_nll(adata, n_mc=5)
    assert model.marginal_nll(adata, n_mc=5, seed=None) != model.marginal_nll(adata, n_mc=5, seed=None)


def test_counts_can_come_from_another_layer_than_the_model_trained_on(trained):
    adata, model = trained
    moved = adata.copy()
    moved.layers["raw"], moved.X = moved.X.copy(), sp.csr_matrix(np.log1p(moved.X.toarray()))
    np.testing.assert_allclose(model.latent(moved, layer="raw"), model.latent(adata), rtol=1e-6)
    assert model.marginal_nll(moved, n_mc=5, layer="raw") == model.marginal_nll(adata, n_mc=5)
    with pytest.raises(ValueError, match="non-integer value"):
        model.latent(moved)  # the model's own layer (X) now holds normalized values


def test_a_boolean_series_selects_cells_by_name(trained):
    adata, model = trained
    mask = pd.Series(np.arange(adata.n_obs) < 40, index=adata.obs_names)
    shuffled = mask.sample(frac=1.0, random_state=0)  # same cells, another order
    by_name = model.elbo(adata, cells=shuffled, per_cell=True)
    by_position = model.elbo(adata, cells=mask.to_numpy(), per_cell=True)
    assert by_name.equals(by_position)
    assert list(by_name.index) == list(adata.obs_names[:40])


def test_a_split_s_name_on_other_data_with_the_same_cell_names_is_refused(cortex):
    """anndata names cells '0', '1', ... by default: the "held-out" cells of other data are not the model's."""
    first = ad.AnnData(cortex.X[:300].copy(), var=cortex.var.copy())
    other = ad.AnnData(cortex.X[300:600].copy(), var=cortex.var.copy())
    assert list(first.obs_names) == list(other.obs_names)
    model = sat.Model.fit(first, device="cpu", seed=0, **FAST)
    assert np.isfinite(model.marginal_nll(first, n_mc=5))  # the data it was trained on
    for method in (lambda a: model.marginal_nll(a, n_mc=5), lambda a: model.elbo(a, cells="train")):
        with pytest.raises(ValueError, match=r"cells named as the model's '(heldout|train)' cells hold other counts"):
            method(other)
    assert np.isfinite(model.marginal_nll(other, n_mc=5, cells="all"))  # other data, scored as a whole
    reloaded = sat.Model.from_dict(model.to_dict(), device="cpu")  # the digests are saved with the model
    assert reloaded.split_digest == model.split_digest and set(model.split_digest) == {"train", "validation", "heldout"}
    with pytest.raises(ValueError, match="hold other counts"):
        reloaded.marginal_nll(other, n_mc=5)
    blob = model.to_dict()
    del blob["config"]["split_digest"]  # a model saved before digests were kept is not checked
    assert np.isfinite(sat.Model.from_dict(blob, device="cpu").marginal_nll(other, n_mc=5))
    blob["config"]["split_digest"] = {"heldout": "not hex"}
    with pytest.raises(ValueError, match="'split_digest' must map parts of 'split' to 16 hexadecimal digits"):
        sat.Model.from_dict(blob, device="cpu")


def test_the_model_s_genes_among_others_backed_or_with_a_cell_empty_in_them(trained, tmp_path):
    adata, model = trained
    extra = ad.AnnData(sp.csr_matrix(np.ones((adata.n_obs, 3), dtype=np.float32)), obs=adata.obs[[]])
    extra.var_names = ["extra0", "extra1", "extra2"]
    wider = ad.concat([adata, extra], axis=1, merge="first")
    path = tmp_path / "wider.h5ad"
    wider.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    np.testing.assert_allclose(model.latent(backed), model.latent(adata), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"a view of a backed AnnData and holds 203 genes.*adata.to_memory\(\)"):
        model.latent(backed[:50])
    backed.file.close()
    emptied = wider.copy()
    counts = emptied.X.tolil()
    counts[0, :adata.n_vars] = 0  # the first cell keeps counts only in the other genes
    emptied.X = counts.tocsr()
    with pytest.raises(ValueError, match=r"^1 cell\(s\) have no count in the model's 200 genes \(adata holds 203\)"):
        model.latent(emptied)


def test_cells_as_a_set_or_with_a_name_twice(trained):
    adata, model = trained
    names = list(adata.obs_names[[5, 1, 3]])
    by_set = model.elbo(adata, cells=set(names), per_cell=True)
    assert list(by_set.index) == list(adata.obs_names[[1, 3, 5]])  # a set has no order: adata's
    assert by_set.equals(model.elbo(adata, cells=list(by_set.index), per_cell=True))
    with pytest.raises(ValueError, match=rf"cells= names 1 cell\(s\) more than once, e.g. '{names[0]}'"):
        model.elbo(adata, cells=names + [names[0]])
    for numbers in ({3, 1, 2}, [names[0], 1], (np.int64(1),)):  # positions, not names
        with pytest.raises(ValueError, match=r"cells= holds numbers \(e.g. (1|np.int64\(1\))\)"):
            model.elbo(adata, cells=numbers)
    mask = np.arange(adata.n_obs) % 7 == 0
    as_objects = pd.Series(mask, index=adata.obs_names).astype(object)  # e.g. from an object column of obs
    expected = model.elbo(adata, cells=mask, per_cell=True)
    assert model.elbo(adata, cells=as_objects, per_cell=True).equals(expected)
    assert model.elbo(adata, cells=as_objects.to_numpy(), per_cell=True).equals(expected)


def test_normalized_expression_needs_a_positive_library_size(trained):
    adata, model = trained
    assert np.allclose(model.normalized_expression(adata[:5], library_size=1e4).sum(axis=1), 1e4, rtol=1e-4)
    for bad in (-1, 0, float("nan"), "1e4"):
        with pytest.raises(ValueError, match="library_size="):
            model.normalized_expression(adata[:5], library_size=bad)
