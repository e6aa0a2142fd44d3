"""The integration scoring of a search: which cells, which labels, which baseline; checked before any trial.

Why the held-out cells by default: they are the cells the loss is computed on,
which no model trained on, so a configuration is judged by how it embeds cells
it has not seen, as it will be when applied to new data; the training cells'
latent is the one the fit itself shaped, and scores on it favour
configurations that fit (and separate) those very cells. ``score_cells="all"``
scores every cell instead: more cells make the scores less noisy and reflect
the embedding users then cluster, at the price of that optimism. This module
imports no torch.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .._validation import check_choice
from ._context import ScoringPlan

__all__ = ["SCORE_CELLS", "make_scoring_plan", "scoring_settings", "warn_of_metrics_never_computed"]

logger = logging.getLogger("scanpy_autotune")

SCORE_CELLS = ("heldout", "all")
#: A label or batch with fewer scored cells than this makes its scores noisy (a warning says so).
FEW_SCORED_CELLS = 3


def _single_value(what: str, column: str, values: np.ndarray, n_all: int, cells: int, score_cells: str) -> str:
    """Why the scored cells hold one value of ``column``: the column's own, or the split's doing."""
    if n_all < 2:
        return f"adata.obs[{column!r}] holds a single {what}; "
    other = "another seed, or score_cells='all'" if score_cells == "heldout" else "more cells"
    return (
        f"the {cells} {score_cells} cells hold a single {what} of adata.obs[{column!r}] ({str(values[0])!r}; the "
        f"column has {n_all}): use {other}; "
    )


def _warn_of_few_scored_cells(kind: str, column: str, values: np.ndarray, score_cells: str) -> None:
    """One warning naming the labels or batches of fewer than :data:`FEW_SCORED_CELLS` scored cells."""
    names, counts = np.unique(values.astype(str), return_counts=True)
    few = [(str(name), int(n)) for name, n in zip(names, counts, strict=True) if n < FEW_SCORED_CELLS]
    if few:
        listed = ", ".join(f"{name!r} ({n})" for name, n in few[:5]) + (" ..." if len(few) > 5 else "")
        logger.warning(
            "%d %s(s) of adata.obs[%r] have fewer than %d of the %d %s cells scored: %s; their scores are "
            "noise (a label of one cell has no silhouette and is left out of isolated labels)%s.",
            len(few), kind, column, FEW_SCORED_CELLS, len(values), score_cells, listed,
            "; score_cells='all' scores every cell" if score_cells == "heldout" else "",
        )


def make_scoring_plan(
    data, split, labels: np.ndarray, *, labels_key: str, batch_key: str | None, score_cells: str = "heldout"
) -> ScoringPlan:
    """Check what integration scoring needs and prepare it (the unintegrated baseline included).

    Parameters
    ----------
    data
        The search's counts (:class:`scanpy_autotune._vae._data.CountData`).
    split
        The search's split.
    labels
        The label of every cell (no missing value).
    labels_key, batch_key
        Their names, for the messages.
    score_cells
        ``"heldout"`` or ``"all"`` (see the module docstring).

    Raises
    ------
    ValueError
        When the scored cells hold fewer than two labels, or fewer than two
        batches while ``batch_key`` is given.
    ImportError
        Without scib-metrics (the message names the extra).
    """
    from .._scib import check_scib_metrics_installed, unintegrated_embedding

    check_scib_metrics_installed()
    check_choice("score_cells", score_cells, SCORE_CELLS)
    cells = split.heldout if score_cells == "heldout" else np.arange(data.n_obs)
    scored_labels = np.asarray(labels)[cells]
    if len(pd.unique(scored_labels)) < 2:
        raise ValueError(
            _single_value("value", labels_key, scored_labels, len(pd.unique(np.asarray(labels))), len(cells), score_cells)
            + "the bio conservation scores compare at least two labels."
        )
    _warn_of_few_scored_cells("label", labels_key, scored_labels, score_cells)
    batch = None
    if batch_key is not None:
        batch = np.asarray(data.batch_categories)[data.batch[cells]]
        if len(pd.unique(batch)) < 2:
            raise ValueError(
                _single_value("batch", batch_key, batch, data.n_batch, len(cells), score_cells)
                + "the batch correction scores compare at least two batches."
            )
        _warn_of_few_scored_cells("batch", batch_key, batch, score_cells)
    return ScoringPlan(
        cells=np.asarray(cells), labels=scored_labels, batch=batch,
        unintegrated=unintegrated_embedding(data.X[cells]) if batch is not None else None,
    )


def scoring_settings(plan: ScoringPlan | None, labels_key: str | None, score_cells: str) -> dict:
    """What a journal records of the scoring, so a resume scores the same way."""
    if plan is None:  # nothing added: journals of searches without scoring stay resumable
        return {}
    import hashlib

    digest = hashlib.sha256("\0".join(map(str, plan.labels)).encode()).hexdigest()[:16]
    return {"labels_key": str(labels_key), "score_cells": score_cells, "labels": digest}


def warn_of_metrics_never_computed(records, plan: ScoringPlan) -> None:
    """One warning naming the scIB metrics that no scored trial could compute (NaN in every one).

    Without batches the batch metrics and isolated labels are NaN by design
    and not named.

    Such a metric is left out of its family's mean, so the aggregates average
    fewer metrics than the scIB definition; said once, after the search, not
    once per trial in the workers' logs.
    """
    scored = [record.scores for record in records if record.status == "ok" and record.scores]
    if not scored:
        return
    from .._scib import BATCH_METRICS, BIO_METRICS

    expected = BIO_METRICS + BATCH_METRICS if plan.batch is not None else tuple(
        name for name in BIO_METRICS if name != "isolated_labels"
    )
    never = [name for name in expected if all(not np.isfinite(scores.get(name, np.nan)) for scores in scored)]
    if never:
        logger.warning(
            "%s could not be computed on the scored cells of any trial (NaN; e.g. kBET and BRAS need labels "
            "with 10 or more scored cells in two or more batches, isolated labels a batch column and "
            "labels of two or more cells); the aggregates average the other metrics.", ", ".join(never),
        )
