"""What a worker needs to evaluate trials, sent to it once per search.

This module imports no torch: the driver builds the context, and only a
worker, in :meth:`TrialContext.counts`, puts the counts on its device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from .._vae._data import CountData, DeviceCounts, Split

__all__ = ["ScoringPlan", "TrialContext", "training_seed"]


def training_seed(seed: int, trial_id: int) -> int:
    """The seed trial ``trial_id`` of a search with ``seed`` trains with (its weights, minibatches, dropout).

    The search's workers, the driver retraining its best trial and
    :func:`scanpy_autotune.tl.retrain` all train with it, so each gives the
    trial's recorded loss again. (The seed TPE suggests the trial with is
    another: ``_tpe.trial_seed``.)
    """
    return int(seed) + int(trial_id)


@dataclass
class ScoringPlan:
    """Which cells each trial's latent is scored on for integration, and against what.

    Attributes
    ----------
    cells
        Positions of the scored cells in the data (the held-out cells by default).
    labels
        Their biological labels (``labels_key``).
    batch
        Their batches, or ``None`` without ``batch_key`` (bio conservation only).
    unintegrated
        The unintegrated embedding of the same cells (a PCA of their
        log-normalised counts), the baseline of the PCR comparison.
    """

    cells: np.ndarray
    labels: np.ndarray
    batch: np.ndarray | None = None
    unintegrated: np.ndarray | None = None


@dataclass
class TrialContext:
    """Everything a worker needs to evaluate trials, sent to it once.

    Attributes
    ----------
    data, split
        Validated counts and the search's split.
    max_epochs, n_mc, seed
        Epoch cap, importance samples of the loss, and the search's seed.
    objective
        Optional ``objective(model, adata_heldout) -> float`` replacing the
        held-out negative marginal log-likelihood (serialized with cloudpickle).
    layer, batch_key
        Recorded on the models.
    scoring
        Score every finished trial's latent for integration (``None``: no scores).
    maximize_total
        The loss is minus the integration Total (``objective="integration"``).
    heldout_obs
        The held-out cells' rows of ``adata.obs``, for a callable objective's
        ``adata_heldout``.
    """

    data: CountData
    split: Split
    max_epochs: int
    n_mc: int = 100
    seed: int = 0
    objective: bytes | None = None
    layer: str | None = None
    batch_key: str | None = None
    scoring: ScoringPlan | None = None
    maximize_total: bool = False
    heldout_obs: pd.DataFrame | None = None
    _counts: dict = field(default_factory=dict, repr=False)

    def counts(self, device: str) -> DeviceCounts:
        """The counts on ``device``, built on first use and kept for later trials."""
        if device not in self._counts:
            from .._vae._data import DeviceCounts

            self._counts[device] = DeviceCounts(self.data, device)
        return self._counts[device]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_counts"] = {}
        return state
