"""``sat.tl.importances``: how much each hyperparameter explains the search's loss.

A random forest fit to the successful trials of a search, read from
``adata.uns[key]``; :func:`scanpy_autotune.pl.param_importance` draws it.
This module imports neither torch, nor the model, nor the search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._results import DEFAULT_KEY, read_results
from ._validation import check_bool, check_int

__all__ = ["importances", "tukey_fences", "MIN_TRIALS_IMPORTANCE"]

MIN_TRIALS_IMPORTANCE = 5
IMPORTANCE_METHODS = ("permutation", "impurity")


def tukey_fences(values: np.ndarray, fence: float = 3.0) -> tuple[float, float]:
    """Tukey's far fences: ``fence`` interquartile ranges beyond the quartiles.

    With fewer than 4 values every value is inside (``-inf``, ``inf``). The
    interquartile range is floored at 0.1 % of the median, so that a few equal
    losses do not make every other one an outlier.

    Parameters
    ----------
    values
        Finite numbers.
    fence
        How many interquartile ranges beyond the quartiles a value may lie.

    Returns
    -------
    tuple of float
        The lower and upper fence.
    """
    if values.size < 4:
        return -np.inf, np.inf
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    scale = max(q3 - q1, 1e-3 * abs(med), 1e-12)
    return q1 - fence * scale, q3 + fence * scale


def _feature_matrix(trials: pd.DataFrame, kinds: dict[str, str]) -> np.ndarray:
    """One column per hyperparameter: sorted-category codes, log10 or plain values."""
    columns = []
    for name, kind in kinds.items():
        col = trials[name]
        if kind == "categorical":
            codes, _ = pd.factorize(col, sort=True)  # missing values get -1
            values = codes.astype(float)
        else:
            values = col.to_numpy(dtype=float, na_value=np.nan)
            if kind == "log":
                with np.errstate(divide="ignore", invalid="ignore"):
                    values = np.where(values > 0, np.log10(values), np.nan)
            fill = np.nanmedian(values) if np.isfinite(values).any() else 0.0
            values = np.where(np.isfinite(values), values, fill)
        columns.append(values)
    return np.column_stack(columns)


def _r2(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """R² of each row of ``pred`` (shape ``(..., n)``) against ``y``."""
    ss_tot = float(((y - y.mean()) ** 2).sum())
    ss_res = ((pred - y) ** 2).sum(axis=-1)
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else np.zeros(ss_res.shape)


def _permutation_importance(
    make_model: Callable[[], Any],
    X: np.ndarray,
    y: np.ndarray,
    n_repeats: int = 10,
    n_folds: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold permutation importance: R² lost on unseen trials when a column is shuffled.

    A forest is fit on each of ``n_folds`` folds' complement; the held-out
    trials are predicted as they are and with one column replaced by values of
    randomly drawn trials. R² is computed once over all out-of-fold predictions,
    so that every fold, however small, counts. In-sample permutation importance
    would mostly measure what a fully grown forest memorised. Seeded (0).
    """
    rng = np.random.default_rng(0)
    n, p = X.shape
    folds = np.array_split(rng.permutation(n), min(n_folds, n))
    base = np.empty(n)
    shuffled = np.empty((p, n_repeats, n))
    for test in folds:
        train = np.setdiff1d(np.arange(n), test)
        model = make_model().fit(X[train], y[train])
        base[test] = model.predict(X[test])
        stacked = np.repeat(X[test][None, None], p, axis=0).repeat(n_repeats, axis=1)
        for j in range(p):
            for r in range(n_repeats):
                stacked[j, r, :, j] = X[rng.permutation(n)[: test.size], j]
        pred = model.predict(stacked.reshape(-1, p)).reshape(p, n_repeats, test.size)
        shuffled[:, :, test] = pred
    drop = _r2(y, base) - _r2(y, shuffled)
    return drop.mean(axis=1), drop.std(axis=1)


def importances(
    adata: Any,
    params: str | Sequence[str] | None = None,
    *,
    key: str = DEFAULT_KEY,
    method: str = "permutation",
    n_estimators: int = 100,
    robust: bool = True,
) -> pd.DataFrame:
    """Importance of each hyperparameter for the search's loss.

    The loss is the held-out ``-log p(x)`` by default; ``-Total`` with
    ``objective="integration"``; a custom objective's value otherwise.

    A random forest (``random_state=0``) is fit to the successful trials (status
    ``"ok"`` and a finite loss), with categorical values ordinal-encoded and
    ``"log"`` hyperparameters in log10. :func:`scanpy_autotune.pl.param_importance`
    draws the result.

    Parameters
    ----------
    adata
        An :class:`~anndata.AnnData` after :func:`scanpy_autotune.tl.autotune`.
    params
        Hyperparameters to rank; default every searched one.
    key
        Where the results are stored in ``adata.uns`` (a ``KeyError`` when
        there are none).
    method
        ``"permutation"``: out-of-fold permutation importance, the R² lost
        on trials unseen by the forest (5-fold) when a column is shuffled
        (10 repeats); ``"impurity"``: mean decrease in impurity of a forest
        fit to every trial.
    n_estimators
        Trees in the forest.
    robust
        Clip the losses to Tukey's far fences first, so that one diverging
        trial does not decide the ranking.

    Returns
    -------
    pandas.DataFrame
        Index: hyperparameter; columns ``importance`` and ``std``; sorted by
        decreasing importance.

    Raises
    ------
    ValueError
        With fewer than 5 successful trials, or an unknown method or name.
    ImportError
        Without scikit-learn.
    """
    if method not in IMPORTANCE_METHODS:
        raise ValueError(f"method={method!r} is not valid; use 'permutation' or 'impurity'.")
    n_estimators = check_int("n_estimators", n_estimators, low=1)
    robust = check_bool("robust", robust)
    res = read_results(adata, key)
    kinds = res.param_kinds(params)
    if not kinds:
        raise ValueError(f"adata.uns[{key!r}] records no hyperparameters to rank.")
    loss = res.trials["loss"].to_numpy(dtype=float)
    trials = res.trials[(res.trials["status"] == "ok").to_numpy() & np.isfinite(loss)]
    if len(trials) < MIN_TRIALS_IMPORTANCE:
        raise ValueError(
            f"hyperparameter importances need at least {MIN_TRIALS_IMPORTANCE} successful trials with a "
            f"loss; adata.uns[{key!r}] has {len(trials)}. Run more trials (a larger max_evals)."
        )
    try:
        from sklearn.ensemble import RandomForestRegressor
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("hyperparameter importances need scikit-learn: pip install scikit-learn") from err
    X = _feature_matrix(trials, kinds)
    y = trials["loss"].to_numpy(dtype=float)
    if robust:
        y = np.clip(y, *tukey_fences(y))

    def make_forest() -> Any:
        return RandomForestRegressor(n_estimators=n_estimators, random_state=0, n_jobs=1)

    if method == "permutation":
        mean, std = _permutation_importance(make_forest, X, y)
    else:
        forest = make_forest().fit(X, y)
        mean = forest.feature_importances_
        std = np.std([tree.feature_importances_ for tree in forest.estimators_], axis=0)
    table = pd.DataFrame(
        {"importance": mean, "std": std}, index=pd.Index(list(kinds), name="hyperparameter")
    )
    return table.sort_values("importance", ascending=False, kind="stable")
