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

import numpy as np
import pandas as pd

from .._validation import check_choice
from ._context import ScoringPlan

__all__ = ["SCORE_CELLS", "make_scoring_plan", "scoring_settings"]

SCORE_CELLS = ("heldout", "all")


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
            f"the {len(cells)} {score_cells} cells hold a single value of adata.obs[{labels_key!r}]; "
            "the bio conservation scores compare at least two labels."
        )
    batch = None
    if batch_key is not None:
        batch = np.asarray(data.batch_categories)[data.batch[cells]]
        if len(pd.unique(batch)) < 2:
            raise ValueError(
                f"the {len(cells)} {score_cells} cells hold a single batch of adata.obs[{batch_key!r}]; "
                "the batch correction scores compare at least two batches."
            )
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
