"""scIB integration scores of a latent space, computed with the field's package, ``scib-metrics``.

The metrics and their settings are those of ``scib_metrics.benchmark.Benchmarker``
(scib-metrics 0.5): bio conservation (isolated labels, KMeans NMI and ARI,
silhouette of the labels, cLISI) and batch correction (BRAS, iLISI, kBET,
graph connectivity, PCR comparison); each family's score is the mean of its
metrics and ``total = 0.4 * batch_correction + 0.6 * bio_conservation`` (the
scIB weighting). Raw metric values are used, not min-max scaled across
methods, so a trial's score does not depend on the other trials.

Two choices differ from scvi-tools' tuner: the PCR comparison is made against a
real unintegrated embedding (a PCA of the same cells' log-normalised counts,
:func:`unintegrated_embedding`), not an all-zero matrix; and the neighbours are
exact (scikit-learn), which on the few thousand cells a trial scores costs
less than building pynndescent's index. kBET's own neighbours in each label's
diffusion map are exact too (:func:`_exact_diffusion_neighbours`), which spares
every worker a minute of compiling pynndescent. This module imports no torch;
``scib-metrics`` (and JAX) are imported when a score is computed.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._paths import writable_folder

__all__ = [
    "AGGREGATES",
    "BATCH_METRICS",
    "BIO_METRICS",
    "EXTRA_HINT",
    "SCORE_NAMES",
    "check_scib_metrics_installed",
    "integration_scores",
    "require_scib_metrics",
    "unintegrated_embedding",
]

logger = logging.getLogger("scanpy_autotune")

EXTRA_HINT = 'install the "scib" extra (in a clone of scanpy-autotune: pip install -e ".[scib]")'
BIO_METRICS = ("isolated_labels", "kmeans_nmi", "kmeans_ari", "silhouette_label", "clisi")
BATCH_METRICS = ("bras", "ilisi", "kbet", "graph_connectivity", "pcr_comparison")
AGGREGATES = ("bio_conservation", "batch_correction", "total")
#: Every score a scored trial records, in the order of ``adata.uns[key]["trials"]``' columns.
SCORE_NAMES = BIO_METRICS + BATCH_METRICS + AGGREGATES

# Neighbourhood sizes of scib-metrics' Benchmarker: cLISI and iLISI use 90, kBET 50,
# graph connectivity 15.
_K_LISI, _K_KBET, _K_GRAPH = 90, 50, 15
_N_PCS = 50


_MISSING = f"integration scores (labels_key=) need the optional dependency scib-metrics: {EXTRA_HINT}"


def _scib_metrics_found() -> bool:
    try:
        return importlib.util.find_spec("scib_metrics") is not None
    except ValueError:  # a module in sys.modules without a spec (a stand-in, a lazy loader): it is there
        return True


def check_scib_metrics_installed() -> None:
    """Fail with the name of the extra unless ``scib_metrics`` is installed.

    Only looks for the package: importing it (with JAX and umap-learn) takes 5-8 s,
    which the search's driver, which computes no score, need not spend. An install
    that cannot be imported fails each trial before it trains (:func:`require_scib_metrics`).
    """
    if not _scib_metrics_found():
        raise ImportError(_MISSING)


def require_scib_metrics() -> Any:
    """Import ``scib_metrics``; fail with the name of the extra, or with why an installed one does not import."""
    try:
        import scib_metrics
    except ImportError as err:
        if not _scib_metrics_found():
            raise ImportError(_MISSING) from err
        raise ImportError(
            f"scib-metrics is installed but importing it failed ({type(err).__name__}: {err}); "
            "the integration scores need it to import: check its dependencies (jax, umap-learn)."
        ) from err
    return scib_metrics


#: The most the JAX cache keeps on disk (a search's scoring writes about 5 MB).
JAX_CACHE_MAX_BYTES = 1 << 30


def jax_cache_dir() -> Path | None:
    """Where the scoring keeps scib-metrics' compiled JAX functions: ``$XDG_CACHE_HOME/scanpy_autotune/jax``.

    ``None`` without a home folder to put it in (no ``HOME`` and no passwd
    entry, as in a container run with an arbitrary user id). A relative
    ``XDG_CACHE_HOME`` is ignored, as the XDG specification says.
    """
    cache = os.environ.get("XDG_CACHE_HOME")
    if cache and os.path.isabs(cache):
        return Path(cache) / "scanpy_autotune" / "jax"
    try:
        return Path.home() / ".cache" / "scanpy_autotune" / "jax"
    except RuntimeError:  # Path.home() found neither HOME nor a passwd entry
        return None


def _keep_compiled_jax_functions() -> None:
    """Use JAX's persistent compilation cache, unless the user chose one.

    Every new scoring process (each worker of each search) otherwise compiles
    scib-metrics' JAX functions again: about 11 s of its first trial on two
    cores (``benchmarks/results/jax_cache.md``). The compiled code is the
    same, so the scores are too. A folder that cannot be made or written (a
    read-only cache: JAX's lock file would warn at every read and write), or no
    home folder, leaves JAX as it was.

    The cache is bounded (:data:`JAX_CACHE_MAX_BYTES`, least recently used
    entries go first), which also makes JAX read and write it under a file
    lock: without one, a worker could read an entry that another was still
    writing, and warn of a truncated cache entry before compiling it again.
    """
    import jax

    if jax.config.jax_compilation_cache_dir:  # JAX_COMPILATION_CACHE_DIR, or set by the user
        return
    folder = jax_cache_dir()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    if not writable_folder(folder):
        logger.debug("the JAX cache %s is not writable; scib-metrics' functions compile in each worker", folder)
        return
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # its default, 1 s, keeps few of them
    if importlib.util.find_spec("filelock") is not None:  # JAX's lock needs it (torch requires it)
        jax.config.update("jax_compilation_cache_max_size", JAX_CACHE_MAX_BYTES)


@functools.cache
def _keep_compiled_umap_functions() -> None:
    """Keep kBET's two numba functions compiled on disk, as ``cache=True`` would.

    kBET's graph connectivities come from umap-learn's ``fuzzy_simplicial_set``,
    whose ``smooth_knn_dist`` and ``compute_membership_strengths`` are compiled
    without numba's cache: 8-15 s of every new scoring process's first trial on two
    cores. numba's own cache keeps them where it keeps umap-learn's cached functions
    (beside its sources, or the user's cache folder), and loads them in about a
    second; the compiled code is the same, so the scores are too. Where numba finds
    no folder to write, they compile as before.
    """
    try:
        import umap.umap_ as umap_module
    except ImportError:
        return
    for name in ("smooth_knn_dist", "compute_membership_strengths"):
        function = getattr(umap_module, name, None)
        try:
            function.enable_caching()
        except (AttributeError, RuntimeError) as err:  # not a numba function; no cache locator
            logger.debug("umap-learn's %s is compiled without a cache: %s", name, err)


def unintegrated_embedding(counts: sp.spmatrix | np.ndarray, n_comps: int = _N_PCS) -> np.ndarray:
    """The unintegrated baseline of the PCR comparison: a PCA of log-normalised counts.

    Each cell is scaled to 10,000 counts and ``log1p``-transformed, as Scanpy's
    ``normalize_total`` and ``log1p`` do; the PCA (``arpack``, centred) keeps at
    most ``n_comps`` components, as scib's own baseline does.

    Parameters
    ----------
    counts
        Raw counts of the cells that are scored (cells x genes).
    n_comps
        Number of principal components (fewer when the data has fewer dimensions).

    Returns
    -------
    numpy.ndarray
        ``cells x components``.
    """
    import anndata as ad
    import scanpy as sc

    adata = ad.AnnData(sp.csr_matrix(counts, dtype=np.float32))
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    n = max(1, min(n_comps, adata.n_obs - 1, adata.n_vars - 1))
    sc.pp.pca(adata, n_comps=n, svd_solver="arpack", random_state=0)
    return np.asarray(adata.obsm["X_pca"], dtype=np.float64)


def _neighbors(latent: np.ndarray, k: int) -> Any:
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    k = min(k, latent.shape[0] - 1)
    distances, indices = NearestNeighbors(n_neighbors=k + 1).fit(latent).kneighbors(latent)
    return NeighborsResults(indices=indices, distances=distances)  # each cell first, at distance 0


def integration_scores(
    latent: np.ndarray,
    labels: np.ndarray,
    batch: np.ndarray | None = None,
    unintegrated: np.ndarray | None = None,
) -> dict[str, float]:
    """The scIB scores of a latent space (higher is better, most in [0, 1]).

    Parameters
    ----------
    latent
        ``cells x n_latent`` embedding.
    labels
        Cell type (or other biological label) of each cell.
    batch
        Batch of each cell; ``None``: bio conservation only (the batch metrics and
        ``total`` are NaN).
    unintegrated
        The unintegrated embedding of the same cells (:func:`unintegrated_embedding`),
        for the PCR comparison; needed with ``batch``.

    Returns
    -------
    dict
        Every name of :data:`SCORE_NAMES`. A metric that the cells cannot support
        (BRAS when no label occurs in two batches, say) is NaN, and its family's
        score is the mean of the family's other metrics; isolated labels need the
        batches, so without ``batch`` bio conservation is the mean of the other four,
        and leave out labels of one cell (whose silhouette of 0 pinned the score
        at 0.5), NaN when fewer than two labels remain.
    """
    scib_metrics = require_scib_metrics()
    _keep_compiled_jax_functions()
    _keep_compiled_umap_functions()
    with warnings.catch_warnings(), _scib_logs_at_warning(), _exact_diffusion_neighbours():
        # "PCR comparison score is negative ... Setting to 0.": the value says it (0).
        warnings.filterwarnings("ignore", message="PCR comparison score is negative")
        # numpy's, from a metric with nothing to average (kBET when every label is too small): NaN says it
        warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
        return _scores(scib_metrics, latent, labels, batch, unintegrated)


@contextmanager
def _scib_logs_at_warning() -> Iterator[None]:
    """scib-metrics logs per-label details at INFO through its own handler, whatever
    ``sc.settings.verbosity`` says (kBET: "... consists of a single batch or is too
    small. Skip." once per label); only its warnings and errors are shown."""
    scib_logger = logging.getLogger("scib_metrics")
    level = scib_logger.level
    scib_logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        scib_logger.setLevel(level)


@contextmanager
def _exact_diffusion_neighbours() -> Iterator[None]:
    """kBET (``kbet_per_label``) looks up each label's neighbours in a diffusion map with
    ``scib_metrics.nearest_neighbors.pynndescent``; inside the block that function is
    exact (scikit-learn) instead.

    pynndescent's numba code compiles for about a minute on two cores in every new
    process (every worker of a search, every scoring run) and its cache does not
    survive; on the per-label subsets of the cells a trial scores, exact neighbours
    take milliseconds and gave the same kBET as pynndescent's (whose neighbours are
    approximate) in our measurement (docs/design_changes.md, 36). The function is
    restored on leaving; where scib-metrics has no such attribute nothing changes.
    """
    import scib_metrics.nearest_neighbors as neighbours_module

    approximate = getattr(neighbours_module, "pynndescent", None)
    if approximate is None:
        yield
        return
    neighbours_module.pynndescent = _exact_neighbours
    try:
        yield
    finally:
        neighbours_module.pynndescent = approximate


def _exact_neighbours(X: np.ndarray, n_neighbors: int, random_state: int = 0, n_jobs: int = 1) -> Any:
    """``pynndescent``'s signature and result (each cell first among its ``n_neighbors``), exact."""
    return _neighbors(np.asarray(X), n_neighbors - 1)


def _scores(scib_metrics: Any, latent, labels, batch, unintegrated) -> dict[str, float]:
    X = np.asarray(latent, dtype=np.float32)
    labels = np.asarray(labels)
    scores: dict[str, float] = {name: math.nan for name in SCORE_NAMES}
    if not np.all(np.isfinite(X)):
        return scores
    neighbors = _neighbors(X, _K_LISI)
    n = X.shape[0] - 1
    metrics: dict[str, Any] = {
        "kmeans": lambda: scib_metrics.nmi_ari_cluster_labels_kmeans(X, labels),
        "silhouette_label": lambda: scib_metrics.silhouette_label(X, labels),
        "clisi": lambda: scib_metrics.clisi_knn(neighbors, labels),
    }
    if batch is not None:
        if unintegrated is None:
            raise ValueError("the PCR comparison needs the unintegrated embedding of the same cells")
        batch = np.asarray(batch)
        metrics.update({
            "isolated_labels": lambda: _isolated_labels(scib_metrics, X, labels, batch),
            "bras": lambda: scib_metrics.bras(X, labels, batch),
            "ilisi": lambda: scib_metrics.ilisi_knn(neighbors, batch),
            "kbet": lambda: scib_metrics.kbet_per_label(neighbors.subset_neighbors(min(_K_KBET, n)), batch, labels),
            "graph_connectivity": lambda: scib_metrics.graph_connectivity(
                neighbors.subset_neighbors(min(_K_GRAPH, n)), labels
            ),
            "pcr_comparison": lambda: scib_metrics.pcr_comparison(
                np.asarray(unintegrated), X, batch, categorical=True
            ),
        })
    for name, compute in metrics.items():
        # A metric the scored cells cannot support (BRAS when no label occurs in two
        # batches, say) is NaN; the family's score is the mean of the others.
        try:
            value = compute()
        except (ValueError, ZeroDivisionError, IndexError) as err:
            logger.debug("the %s score could not be computed: %s", name, err)
            continue
        if name == "kmeans":
            scores["kmeans_nmi"], scores["kmeans_ari"] = float(value["nmi"]), float(value["ari"])
        else:
            scores[name] = float(value)
    scores["bio_conservation"] = _family_mean(scores, BIO_METRICS)
    if batch is not None:
        scores["batch_correction"] = _family_mean(scores, BATCH_METRICS)
        scores["total"] = 0.4 * scores["batch_correction"] + 0.6 * scores["bio_conservation"]
    return scores


def _isolated_labels(scib_metrics: Any, X: np.ndarray, labels: np.ndarray, batch: np.ndarray) -> float:
    """scib-metrics' isolated-label score over the labels of at least two scored cells.

    A label of one cell is the most isolated of all (it is in one batch) and
    its silhouette is 0 by convention, so it pinned the score at 0.5 whatever
    the latent; such labels are left out (NaN when fewer than two labels remain).
    """
    names, counts = np.unique(labels.astype(str), return_counts=True)
    kept = np.isin(labels.astype(str), names[counts >= 2])
    if len(np.unique(labels[kept])) < 2:
        raise ValueError("fewer than two labels have two scored cells")
    return scib_metrics.isolated_labels(X[kept], labels[kept], batch[kept])


def _family_mean(scores: dict[str, float], names: tuple[str, ...]) -> float:
    values = [scores[name] for name in names if math.isfinite(scores[name])]
    return float(np.mean(values)) if values else math.nan
