"""Integration as an objective: scIB scores for every trial, checked input, the Pareto plot.

Data: 360 CellBench cells (5 cell lines x 3 plates, ``tests/data``). The first
score in a process compiles scib-metrics' numba code (about a minute on two
cores): the tests that score are marked slow.
"""

from __future__ import annotations

import json
import logging
import math
import sys

import anndata as ad
import matplotlib
import numpy as np
import pytest

import scanpy_autotune as sat
from scanpy_autotune import cli
from scanpy_autotune._record import TrialRecord
from scanpy_autotune._results import SCORE_COLUMNS, build_results, read_results
from scanpy_autotune._scib import (
    BATCH_METRICS,
    BIO_METRICS,
    SCORE_NAMES,
    _exact_diffusion_neighbours,
    unintegrated_embedding,
)
from scanpy_autotune.pl._pareto import pareto_front

matplotlib.use("Agg")

FAST = dict(max_evals=2, max_epochs=2, n_mc=2, progress=False, n_workers=1, gpus=None)


def _snapshot(adata):
    return (set(adata.uns), list(adata.obs.columns), set(adata.obsm))


# ---------------------------------------------------------------------------
# bad input: a ValueError before any training, adata untouched
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, kwargs, message",
    [
        (None, dict(labels_key="celltype"), r"labels_key='celltype' is not a column of adata.obs"),
        ("nan_labels", dict(labels_key="cell_type"), r"has 3 missing label\(s\)"),
        ("one_label", dict(labels_key="cell_type"), r"^adata.obs\['cell_type'\] holds a single value; the bio conservation"),
        ("one_batch", dict(labels_key="cell_type", batch_key="batch"), r"^adata.obs\['batch'\] holds a single batch; the batch correction"),
        (None, dict(objective="integration"), r"objective='integration' .* pass labels_key="),
        (None, dict(objective="integration", labels_key="cell_type"), r"and batch_key="),
        (None, dict(objective="scib"), r"objective='scib': use None"),
        (None, dict(labels_key="cell_type", score_cells="train"), r"score_cells='train' is not valid"),
        ("float_labels", dict(labels_key="total", batch_key="batch"), r"adata.obs\['total'\] holds non-integer numbers .* labels name cell types"),
        ("id_labels", dict(labels_key="barcode"), r"has 360 distinct values for 360 cells, so most labels would hold one or two cells"),
        (None, dict(labels_key="batch", batch_key="batch"), r"labels_key and batch_key are both 'batch'"),
    ],
)
def test_bad_integration_input_fails_before_training(cellbench, change, kwargs, message):
    if change == "nan_labels":
        labels = cellbench.obs["cell_type"].astype(object)
        labels.iloc[:3] = np.nan
        cellbench.obs["cell_type"] = labels
    elif change == "one_label":
        cellbench.obs["cell_type"] = "HCC827"
    elif change == "one_batch":
        cellbench.obs["batch"] = "plate1"
    elif change == "float_labels":
        cellbench.obs["total"] = np.asarray(cellbench.X.sum(axis=1)).ravel() + 0.5
    elif change == "id_labels":
        cellbench.obs["barcode"] = cellbench.obs_names.astype(str)
    before = _snapshot(cellbench)
    with pytest.raises(ValueError, match=message):
        sat.tl.autotune(cellbench, **{**FAST, **kwargs})
    assert _snapshot(cellbench) == before


def test_without_scib_metrics_the_error_names_the_extra(cellbench, monkeypatch):
    monkeypatch.setitem(sys.modules, "scib_metrics", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r'the "scib" extra \(in a clone of scanpy-autotune: pip install -e "\.\[scib\]"\)'):
        sat.tl.autotune(cellbench, labels_key="cell_type", batch_key="batch", **FAST)
    assert "autotune" not in cellbench.uns


# ---------------------------------------------------------------------------
# the results: score columns, the Pareto front and its plot
# ---------------------------------------------------------------------------


def _scored_records() -> list[TrialRecord]:
    rng = np.random.default_rng(0)
    records = []
    for trial_id in range(8):
        scores = {name: float(rng.uniform(0.2, 0.9)) for name in BIO_METRICS + BATCH_METRICS}
        scores["bio_conservation"] = float(np.mean([scores[n] for n in BIO_METRICS]))
        scores["batch_correction"] = float(np.mean([scores[n] for n in BATCH_METRICS]))
        scores["total"] = 0.4 * scores["batch_correction"] + 0.6 * scores["bio_conservation"]
        status = "fail" if trial_id == 5 else "pruned" if trial_id == 6 else "ok"
        record = TrialRecord(
            trial_id, {"n_latent": 5 + trial_id}, status=status, completion_order=trial_id,
            is_default=trial_id == 0, history={"train_elbo": [-1.0], "validation_elbo": [-1.0]},
        )
        if status == "ok":
            record.marginal_nll = float(rng.uniform(500, 520))
            record.loss = -scores["total"]
            record.scores = scores
        records.append(record)
    return records


def test_scores_are_columns_of_the_trials_and_survive_h5ad(tmp_path):
    records = _scored_records()
    adata = ad.AnnData(np.zeros((2, 2), dtype=np.float32))
    adata.uns["autotune"] = build_results(records, settings={"seed": 0}, searched={"n_latent": "numeric"})
    path = tmp_path / "scored.h5ad"
    adata.write_h5ad(path)
    res = read_results(ad.read_h5ad(path))
    assert res.scored and res.hyperparameters == ["n_latent"]
    trials = res.trials.set_index("trial_id")
    for record in records:
        for name in SCORE_NAMES:
            expected = record.scores.get(name, math.nan)
            assert trials.at[record.trial_id, name] == pytest.approx(expected, nan_ok=True)
    assert trials.loc[[5, 6], list(SCORE_COLUMNS)].isna().all().all()  # failed and pruned: NaN
    table = sat.tl.trials_table(adata, top=3, bottom=0)
    assert list(table["loss"]) == sorted(table["loss"])  # ranked by the objective (-Total)
    assert list(table.columns[:4]) == ["loss", "marginal_nll", "total", "batch_correction"]
    assert set(SCORE_NAMES) < set(table.columns)  # the scores beside each configuration
    for row in table.itertuples():
        assert row.total == pytest.approx(trials.at[row.trial_id, "total"])
        assert row.marginal_nll == pytest.approx(trials.at[row.trial_id, "marginal_nll"])


def test_pareto_front_keeps_exactly_the_undominated_points():
    x = np.array([1.0, 2.0, 3.0, 1.5, 2.5, 1.0])
    y = np.array([0.1, 0.5, 0.6, 0.05, 0.55, 0.2])
    assert pareto_front(x, y, minimize_x=True).tolist() == [5, 1, 4, 2]
    # a higher x is better: only the largest x with the largest y is kept here
    assert pareto_front(x, y, minimize_x=False).tolist() == [2]
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=50), rng.normal(size=50)
    front = set(pareto_front(x, y, minimize_x=True).tolist())
    for i in range(50):
        dominated = np.any((x <= x[i]) & (y >= y[i]) & ((x < x[i]) | (y > y[i])))
        assert (i in front) == (not dominated)


def test_pareto_plot_marks_front_best_and_default():
    import matplotlib.pyplot as plt

    records = _scored_records()
    adata = ad.AnnData(np.zeros((2, 2), dtype=np.float32))
    adata.uns["autotune"] = build_results(records, settings={"seed": 0}, searched={"n_latent": "numeric"})
    best = read_results(adata).best["trial_id"]
    axes = sat.pl.pareto(adata, show=False)
    assert len(axes) == 2
    labels = [text.get_text() for text in axes[0].get_legend().get_texts()]
    assert labels == ["trials", "Pareto front", "default (trial 0)", f"best (trial {best})"]
    square, star = axes[0].collections[-2:]  # the default hollow, under the best's star: both show when one trial
    assert square.get_facecolors().size == 0 and star.get_zorder() > square.get_zorder()
    n_ok = sum(r.status == "ok" for r in records)
    assert axes[0].collections[0].get_offsets().shape == (n_ok, 2)
    assert star.get_facecolor()[0][:3] == pytest.approx(matplotlib.colors.to_rgb("gold"))  # the best's star as in the other plots
    plt.close("all")
    far = 5 * max(r.marginal_nll for r in records if r.status == "ok")
    other = next(r for r in records if r.status == "ok" and r.trial_id not in (0, best))
    other.marginal_nll = far  # probe 22: one trial's -log p(x) far beyond the others' ...
    adata.uns["autotune"] = build_results(records, settings={"seed": 0}, searched={"n_latent": "numeric"})
    left = sat.pl.pareto(adata, show=False)[0]
    assert left.get_xlim()[1] < far  # ... is left out of the range, and counted
    assert "1 beyond the x-range (robust=False shows all)" in [t.get_text() for t in left.get_legend().get_texts()]
    assert sat.pl.pareto(adata, robust=False, show=False)[0].get_xlim()[1] > far
    other.marginal_nll, best_record = 510.0, next(r for r in records if r.trial_id == best)
    best_record.marginal_nll = far  # ... but a robust range never hides the best trial
    adata.uns["autotune"] = build_results(records, settings={"seed": 0}, searched={"n_latent": "numeric"})
    assert sat.pl.pareto(adata, show=False)[0].get_xlim()[1] > far
    best_record.marginal_nll, other.marginal_nll = 510.0, 1.0  # probe 25: an outlier on the front (the
    adata.uns["autotune"] = build_results(records, settings={"seed": 0}, searched={"n_latent": "numeric"})
    assert sat.pl.pareto(adata, show=False)[0].get_xlim()[0] < 1.0  # lowest -log p(x)) is not left out either
    plt.close("all")
    _, own = plt.subplots(1, 2)
    assert list(sat.pl.pareto(adata, ax=own, show=False)) == list(own)
    with pytest.raises(ValueError, match=r"pareto draws 2 panel\(s\)"):
        sat.pl.pareto(adata, ax=own[0], show=False)
    plt.close("all")
    unscored = ad.AnnData(np.zeros((2, 2), dtype=np.float32))
    plain = [TrialRecord(0, {"n_latent": 5}, status="ok", loss=1.0, completion_order=0)]
    unscored.uns["autotune"] = build_results(plain, settings={}, searched={"n_latent": "numeric"})
    with pytest.raises(ValueError, match="run sat.tl.autotune with labels_key="):
        sat.pl.pareto(unscored, show=False)


def test_pareto_of_a_search_without_batch_key_draws_nll_against_bio_conservation():
    import matplotlib.pyplot as plt

    records = _scored_records()
    for record in records:  # scored without batch_key: no batch correction, no Total
        for name in [*BATCH_METRICS, "batch_correction", "total"]:
            if name in record.scores:
                record.scores[name] = float("nan")
    adata = ad.AnnData(np.zeros((2, 2), dtype=np.float32))
    adata.uns["autotune"] = build_results(records, settings={"seed": 0}, searched={"n_latent": "numeric"})
    axes = sat.pl.pareto(adata, show=False)
    assert len(axes) == 1 and axes[0].get_ylabel() == "Bio conservation (higher is better)"
    ok = [r for r in records if r.status == "ok"]
    np.testing.assert_allclose(
        axes[0].collections[0].get_offsets(), [[r.marginal_nll, r.scores["bio_conservation"]] for r in ok]
    )
    plt.close("all")


def test_unintegrated_embedding_is_a_pca_of_log_normalised_counts(cellbench):
    embedding = unintegrated_embedding(cellbench.X)
    assert embedding.shape == (cellbench.n_obs, 50)
    variance = embedding.var(axis=0)
    assert np.all(np.diff(variance) <= 1e-6)  # components in decreasing variance
    counts = cellbench.X.toarray()
    logged = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    total = (logged - logged.mean(0)).var(axis=0).sum()
    assert 0.2 < variance.sum() / total <= 1.0


def test_the_scored_cells_are_checked_before_training_and_their_small_groups_named(cellbench, caplog):
    from scanpy_autotune._search._scoring import make_scoring_plan
    from scanpy_autotune._vae._data import extract_counts, make_split

    data = extract_counts(cellbench, batch_key="batch")
    split = make_split(data.n_obs, seed=0)
    labels = np.full(data.n_obs, "A", dtype=object)
    labels[split.train[:20]] = "B"  # two labels, but the held-out cells hold one
    plan = dict(labels_key="cell_type", batch_key="batch")
    with pytest.raises(ValueError, match=r"^the 90 heldout cells hold a single value of adata.obs\['cell_type'\] "
                                         r"\('A'; the column has 2\): use another seed, or score_cells='all'; "):
        make_scoring_plan(data, split, labels, **plan)
    assert make_scoring_plan(data, split, labels, **plan, score_cells="all").cells.size == data.n_obs
    labels[:] = "A"
    with pytest.raises(ValueError, match=r"^adata.obs\['cell_type'\] holds a single value; the bio"):
        make_scoring_plan(data, split, labels, **plan, score_cells="all")
    labels = cellbench.obs["cell_type"].astype(str).to_numpy().copy()
    labels[split.heldout[0]] = "rare"
    labels[split.train[:4]] = "rare"  # four training cells do not make it less rare among the scored
    caplog.set_level(logging.WARNING, logger="scanpy_autotune")
    make_scoring_plan(data, split, labels, **plan)
    assert [r.getMessage() for r in caplog.records] == [
        "1 label(s) of adata.obs['cell_type'] have fewer than 3 of the 90 heldout cells scored: 'rare' (1); "
        "their scores are noise (a label of one cell has no silhouette and is left out of isolated labels); "
        "score_cells='all' scores every cell."
    ]


def test_a_metric_no_trial_could_compute_is_named_once(caplog):
    from scanpy_autotune._search._context import ScoringPlan
    from scanpy_autotune._search._scoring import warn_of_metrics_never_computed

    records = _scored_records()
    for record in records:
        if record.scores:
            record.scores["kbet"] = math.nan
    caplog.set_level(logging.WARNING, logger="scanpy_autotune")
    with_batches = ScoringPlan(cells=np.arange(3), labels=np.array(["a", "b", "a"]), batch=np.array(["x", "y", "x"]),
                               unintegrated=np.zeros((3, 2)))
    warn_of_metrics_never_computed(records, with_batches)
    assert len(caplog.records) == 1 and caplog.records[0].getMessage().startswith("kbet could not be computed")
    caplog.clear()
    labels_only = ScoringPlan(cells=np.arange(3), labels=np.array(["a", "b", "a"]), batch=None, unintegrated=None)
    warn_of_metrics_never_computed(records, labels_only)  # without batches the batch metrics are NaN by design
    assert not caplog.records


# ---------------------------------------------------------------------------
# end to end (slow: the first score compiles scib-metrics' numba code)
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_integration_scores_separate_structure_from_noise(cellbench):
    from scanpy_autotune._scib import integration_scores

    labels = cellbench.obs["cell_type"].astype(str).to_numpy()
    batch = cellbench.obs["batch"].astype(str).to_numpy()
    pca = unintegrated_embedding(cellbench.X)
    structured = integration_scores(pca[:, :10], labels, batch, pca)
    noise = integration_scores(np.random.default_rng(0).normal(size=(len(labels), 10)), labels, batch, pca)
    assert set(structured) == set(SCORE_NAMES)
    assert structured["bio_conservation"] > noise["bio_conservation"] + 0.3  # cell lines are apart
    assert noise["ilisi"] > 0.8  # random points mix the plates
    for scores in (structured, noise):
        assert all(0.0 <= scores[name] <= 1.0 for name in SCORE_NAMES if name != "kmeans_ari")
        assert -0.05 <= scores["kmeans_ari"] <= 1.0  # chance agreement is 0, below it slightly negative
        assert scores["bio_conservation"] == pytest.approx(np.mean([scores[n] for n in BIO_METRICS]))
        assert scores["batch_correction"] == pytest.approx(np.mean([scores[n] for n in BATCH_METRICS]))
        assert scores["total"] == pytest.approx(0.4 * scores["batch_correction"] + 0.6 * scores["bio_conservation"])
    bio_only = integration_scores(pca[:, :10], labels)
    assert math.isnan(bio_only["total"]) and all(math.isnan(bio_only[n]) for n in BATCH_METRICS)
    assert bio_only["kmeans_nmi"] == pytest.approx(structured["kmeans_nmi"])

    # scib-metrics' per-label INFO lines (kBET: a label in one batch) are not shown
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    scib_logger = logging.getLogger("scib_metrics")
    level = scib_logger.level
    scib_logger.addHandler(handler)
    solo = labels.copy()
    solo[np.flatnonzero(batch == batch[0])[:6]] = "solo"  # a label of one batch only
    try:
        integration_scores(pca[:, :10], solo, batch, pca)
    finally:
        scib_logger.removeHandler(handler)
    assert not [r for r in records if r.levelno < logging.WARNING]
    assert scib_logger.level == level

    # a label of one cell (silhouette 0 by convention) pinned isolated labels at 0.5 whatever the latent
    import scib_metrics

    lonely = labels.copy()
    lonely[0] = "one cell"
    kept = np.arange(len(labels)) > 0
    for latent in (pca[:, :10], np.random.default_rng(1).normal(size=(len(labels), 10))):
        scores = integration_scores(latent, lonely, batch, pca)
        assert scores["isolated_labels"] == pytest.approx(
            float(scib_metrics.isolated_labels(latent[kept].astype(np.float32), labels[kept], batch[kept])), rel=1e-5)
        assert scores["isolated_labels"] != pytest.approx(0.5, abs=1e-3)
    pairs = np.array(["pair", "pair"] + [f"cell{i}" for i in range(2, len(labels))])  # the others: one cell each
    assert math.isnan(integration_scores(pca[:, :10], pairs, batch, pca)["isolated_labels"])


@pytest.mark.slow
def test_integration_search_records_scores_in_uns_journal_and_summary(cellbench, tmp_path):
    journal = tmp_path / "integration.jsonl"
    kwargs = dict(batch_key="batch", labels_key="cell_type", objective="integration", max_epochs=15,
                  n_mc=5, n_workers=1, progress=False, journal=journal, pruner="asha",
                  pruner_kwargs={"min_epochs": 3, "eta": 2, "min_trials_per_rung": 1},
                  space=sat.tl.integration_space())
    sat.tl.autotune(cellbench, max_evals=3, **kwargs)
    trials = cellbench.uns["autotune"]["trials"]
    ok = trials[trials["status"] == "ok"]
    assert len(ok) >= 1 and len(trials) == 3
    # the KL weight was searched: the default's 1, then TPE's draws in [1, 100]
    assert trials.loc[trials["trial_id"] == 0, "max_kl_weight"].item() == 1.0
    assert trials["max_kl_weight"].between(1.0, 100.0).all() and trials["max_kl_weight"].nunique() == 3
    np.testing.assert_allclose(ok["loss"], -ok["total"])  # TPE minimised -Total
    assert np.all(np.isfinite(ok["marginal_nll"])) and np.all(ok["marginal_nll"] > 0)
    assert trials.loc[trials["status"] != "ok", list(SCORE_COLUMNS)].isna().all().all()
    best = cellbench.uns["autotune"]["best"]
    assert best["trial_id"] == int(ok.loc[ok["total"].idxmax(), "trial_id"])  # the highest Total wins
    assert cellbench.uns["autotune"]["params"]["labels_key"] == "cell_type"
    # the scores are in the journal's lines, as a resume reads them back
    lines = [json.loads(line) for line in journal.read_text().splitlines()[1:]]
    by_id = {r.trial_id: r for r in map(TrialRecord.from_json, lines)}
    assert len(by_id) == 3
    for trial_id, row in trials.set_index("trial_id").iterrows():
        assert by_id[trial_id].scores.get("total", math.nan) == pytest.approx(row["total"], nan_ok=True)
    after = trials.set_index("trial_id")
    # the command line prints the scores of the best and the default trial
    summary = cli._output._summary(cellbench).splitlines()
    assert summary[-4].startswith("integration scores (higher is better)")
    assert summary[-3].split() == ["total", "bio_conservation", "batch_correction", "marginal_nll"]
    best_row = after.loc[cellbench.uns["autotune"]["best"]["trial_id"]]
    assert summary[-2].split()[0] == "best" and float(summary[-2].split()[1]) == pytest.approx(best_row["total"], abs=1e-4)
    assert summary[-1].split()[0] == "default"


@pytest.mark.slow  # the first to import scib-metrics (jax): 4 s
def test_a_trial_that_diverges_at_once_fails_even_when_its_latent_could_be_scored(cellbench):
    from scanpy_autotune._search._context import TrialContext
    from scanpy_autotune._search._objective import evaluate_trial
    from scanpy_autotune._search._scoring import make_scoring_plan
    from scanpy_autotune._vae._data import extract_counts, make_split

    data = extract_counts(cellbench, batch_key="batch")
    split = make_split(data.n_obs, train_size=0.75, validation_size=0.1, seed=0)
    labels = cellbench.obs["cell_type"].astype(str).to_numpy()
    plan = make_scoring_plan(data, split, labels, labels_key="cell_type", batch_key="batch", score_cells="heldout")
    context = TrialContext(data=data, split=split, max_epochs=3, n_mc=2, batch_key="batch", scoring=plan,
                           maximize_total=True)
    record, model = evaluate_trial(context, 1, {"lr": 1.0, "n_layers": 5, "n_hidden": 256})
    assert record.status == "fail" and model is None
    assert "diverged (non-finite ELBO) at epoch 1 with no finite epoch before it" in record.error
    assert record.scores == {} and not np.isfinite(record.loss)


def test_kbet_finds_its_diffusion_neighbours_exactly_and_gives_pynndescent_back():
    """kBET's per-label neighbours are exact inside the scoring (no minute of numba compiling)."""
    import scib_metrics.nearest_neighbors as neighbours_module

    approximate = neighbours_module.pynndescent
    X = np.random.default_rng(0).normal(size=(40, 5))
    with pytest.raises(RuntimeError, match="inside"), _exact_diffusion_neighbours():
        assert neighbours_module.pynndescent is not approximate
        found = neighbours_module.pynndescent(X, n_neighbors=6, random_state=0)
        raise RuntimeError("inside")
    assert neighbours_module.pynndescent is approximate  # restored, also after an error
    distances = np.linalg.norm(X[:, None] - X[None], axis=-1)
    expected = np.argsort(distances, axis=1)[:, :6]
    np.testing.assert_array_equal(found.indices, expected)  # each cell first, then its 5 nearest
    np.testing.assert_allclose(found.distances, np.take_along_axis(distances, expected, axis=1), atol=1e-6)


def test_an_installed_scib_metrics_that_does_not_import_says_why(monkeypatch):
    import types

    from scanpy_autotune import _scib

    monkeypatch.setitem(sys.modules, "scib_metrics", types.ModuleType("scib_metrics"))  # no __spec__
    _scib.check_scib_metrics_installed()  # find_spec cannot answer for it: it is there
    monkeypatch.setitem(sys.modules, "scib_metrics", None)  # importing it fails
    with pytest.raises(ImportError, match=r'the "scib" extra'):
        _scib.require_scib_metrics()  # and it is not installed: the extra
    monkeypatch.setattr(_scib, "_scib_metrics_found", lambda: True)  # installed, but broken
    with pytest.raises(ImportError, match=r"scib-metrics is installed but importing it failed \(ModuleNotFoundError: "):
        _scib.require_scib_metrics()


def test_scoring_keeps_kbets_numba_code_on_disk():
    """kBET's umap-learn functions compile once per machine, not in every scoring process."""
    import umap.umap_ as umap_module

    from scanpy_autotune._scib import _keep_compiled_umap_functions

    functions = (umap_module.smooth_knn_dist, umap_module.compute_membership_strengths)
    _keep_compiled_umap_functions()
    for function in functions:
        assert function.stats.cache_path is not None, function


def test_scoring_keeps_jax_compiled_code_on_disk_unless_the_user_chose_a_cache(tmp_path, monkeypatch):
    """Each scoring process reuses the JAX code an earlier one compiled (benchmarks/results/jax_cache.md)."""
    import pwd

    import jax

    from scanpy_autotune._scib import (
        JAX_CACHE_MAX_BYTES,
        _keep_compiled_jax_functions,
        jax_cache_dir,
    )

    before = (
        jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs,
        jax.config.jax_compilation_cache_max_size,
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        _keep_compiled_jax_functions()
        assert jax_cache_dir() == tmp_path / "cache" / "scanpy_autotune" / "jax" and jax_cache_dir().is_dir()
        assert jax.config.jax_compilation_cache_dir == str(jax_cache_dir())
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
        # bounded, hence read and written under JAX's file lock: no worker reads an entry half written
        assert jax.config.jax_compilation_cache_max_size == JAX_CACHE_MAX_BYTES
        chosen = str(tmp_path / "the users own")
        jax.config.update("jax_compilation_cache_dir", chosen)
        _keep_compiled_jax_functions()
        assert jax.config.jax_compilation_cache_dir == chosen  # the user's choice stays
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file" / "cache"))
        (tmp_path / "a-file").write_text("not a folder")
        jax.config.update("jax_compilation_cache_dir", None)
        _keep_compiled_jax_functions()  # a folder that cannot be made: JAX as it was
        assert jax.config.jax_compilation_cache_dir is None
        # a relative XDG_CACHE_HOME is ignored, as the XDG specification says
        monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert jax_cache_dir() == tmp_path / "home" / ".cache" / "scanpy_autotune" / "jax"
        # no HOME and no passwd entry (a container's arbitrary user id): no cache, and the trial scores
        monkeypatch.delenv("HOME")
        monkeypatch.setattr(pwd, "getpwuid", lambda uid: (_ for _ in ()).throw(KeyError(uid)))
        assert jax_cache_dir() is None
        _keep_compiled_jax_functions()
        assert jax.config.jax_compilation_cache_dir is None
    finally:
        jax.config.update("jax_compilation_cache_dir", before[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
        jax.config.update("jax_compilation_cache_max_size", before[2])

