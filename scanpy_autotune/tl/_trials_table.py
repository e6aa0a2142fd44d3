"""``sat.tl.trials_table``: the best and worst trials, as in the 2019 scVI autotune study."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from .._record import ranked
from .._results import DEFAULT_KEY, read_results
from .._scib import AGGREGATES, BATCH_METRICS, BIO_METRICS
from .._validation import check_int

logger = logging.getLogger("scanpy_autotune")


def trials_table(
    adata: Any, top: int = 10, bottom: int = 10, *, key: str = DEFAULT_KEY
) -> pd.DataFrame:
    """The ``top`` best and ``bottom`` worst successful trials, ranked by the search's loss.

    Only trials with status ``"ok"`` and a finite loss are ranked (lowest loss
    first, ties by trial id). The loss is the held-out ``-log p(x)``, ``-Total``
    with ``objective="integration"``, or a custom objective's value. When ``top + bottom`` exceeds their number, every
    trial appears once, in the ``"top"`` group first.

    Parameters
    ----------
    adata
        An :class:`~anndata.AnnData` after :func:`scanpy_autotune.tl.autotune`.
    top
        How many of the best trials to list.
    bottom
        How many of the worst trials to list.
    key
        Where the results are stored in ``adata.uns``.

    Returns
    -------
    pandas.DataFrame
        Columns ``loss``; for a search that scored integration (``labels_key``),
        ``marginal_nll`` and the scIB scores (``total``, ``batch_correction``,
        ``bio_conservation``, then each metric); the searched hyperparameters (every hyperparameter when
        none were recorded as searched), ``n_epochs``, ``n_params``, ``trial_id``,
        ``rank`` (1 = lowest loss among the ranked trials) and ``group``
        (``"top"`` or ``"bottom"``); rows sorted by loss, with a fresh
        ``RangeIndex``.

    Raises
    ------
    KeyError
        When ``adata.uns[key]`` is absent.
    ValueError
        When ``top`` or ``bottom`` is not a non-negative integer.
    """
    top, bottom = check_int("top", top, low=0), check_int("bottom", bottom, low=0)
    res = read_results(adata, key)
    trials = res.trials
    order = [row.Index for row in ranked(trials.itertuples())]
    if not order:
        logger.warning("No successful trial in adata.uns[%r]; the table is empty.", key)
    ranked_trials = trials.loc[order].reset_index(drop=True)
    ranked_trials["rank"] = np.arange(1, len(ranked_trials) + 1, dtype=np.int64)
    n_top = min(top, len(ranked_trials))
    n_bottom = min(bottom, len(ranked_trials) - n_top)
    keep = list(range(n_top)) + list(range(len(ranked_trials) - n_bottom, len(ranked_trials)))
    table = ranked_trials.iloc[keep].copy()
    table["group"] = np.asarray(["top"] * n_top + ["bottom"] * n_bottom, dtype=object)
    params = list(res.param_kinds())
    scores = ["marginal_nll", *AGGREGATES[::-1], *BIO_METRICS, *BATCH_METRICS] if res.scored else []
    columns = ["loss", *[c for c in scores if c in table], *params, "n_epochs", "n_params", "trial_id", "rank", "group"]
    return table[columns].reset_index(drop=True)
