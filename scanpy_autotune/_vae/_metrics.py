"""Metrics of a trained model: ELBO, marginal log-likelihood, latent, expression, imputation."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import scipy.sparse as sp
import torch

from .._validation import MAX_SEED, check_int
from ._data import CountData, DeviceCounts, index_tensor
from ._module import VAE
from ._train import EVAL_BATCH_SIZE, evaluate_elbo

__all__ = [
    "SCORE_SEED", "elbo", "evaluate_elbo", "marginal_nll", "latent_mean", "normalized_expression", "corrupt",
    "imputation_errors", "seeded",
]

#: The seed the stochastic estimates draw with unless told otherwise: the search's recorded
#: losses and ELBOs and :class:`Model`'s methods alike, so a saved model scores exactly what
#: its search recorded.
SCORE_SEED = 0


@contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Draw from torch's generators seeded with ``seed``, leaving the caller's state as it was.

    ``None``: torch's current state.
    """
    if seed is None:
        yield
        return
    seed = check_int("seed", seed, low=0, high=MAX_SEED)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _batches(data: DeviceCounts, idx: np.ndarray, batch_size: int):
    index = index_tensor(idx, data.device)
    for start in range(0, len(index), batch_size):
        rows = index[start : start + batch_size]
        x, x_log1p = data.rows(rows)
        yield rows, x, x_log1p


@torch.no_grad()
def marginal_nll(
    module: VAE, data: DeviceCounts, idx: np.ndarray, n_mc: int = 100, batch_size: int = 256,
    *, seed: int | None = SCORE_SEED,
) -> np.ndarray:
    """Per-cell ``-log p(x)`` by importance sampling with ``n_mc`` posterior samples, drawn with ``seed``.

    ``log p(x) ~= logsumexp_k [log p(x, z_k, l_k) - log q(z_k, l_k | x)] - log n_mc``.
    """
    if n_mc < 1:
        raise ValueError(f"n_mc={n_mc} must be at least 1.")
    module.eval()
    out = []
    with seeded(seed, data.device):
        for rows, x, x_log1p in _batches(data, idx, batch_size):
            log_w = module.importance_log_weights(
                x, x_log1p, data.log_library[rows], data.batch[rows], n_mc
            ).double()
            log_px = torch.logsumexp(log_w, dim=0) - math.log(n_mc)
            out.append(-(log_px - data.log_x_factorial[rows].double()))
    return torch.cat(out).cpu().numpy() if out else np.zeros(0)


def elbo(module: VAE, data: DeviceCounts, idx: np.ndarray, *, seed: int | None = SCORE_SEED) -> np.ndarray:
    """Per-cell ELBO (one posterior sample) of the cells ``idx``, drawn with ``seed``.

    Training's per-epoch validation ELBO (:func:`evaluate_elbo`) draws from torch's state.
    """
    with seeded(seed, data.device):
        return evaluate_elbo(module, data, idx)


@torch.no_grad()
def latent_mean(module: VAE, data: DeviceCounts, idx: np.ndarray) -> np.ndarray:
    """Posterior mean of z for the cells ``idx`` (``cells x n_latent``)."""
    module.eval()
    out = []
    for rows, _, x_log1p in _batches(data, idx, EVAL_BATCH_SIZE):
        z_mean, *_ = module.encode(x_log1p, module.batch_onehot(data.batch[rows]))
        out.append(z_mean)
    return torch.cat(out).cpu().numpy()


@torch.no_grad()
def normalized_expression(
    module: VAE, data: DeviceCounts, idx: np.ndarray, library_size: float = 1.0
) -> np.ndarray:
    """Decoded gene proportions at the posterior mean of z, times ``library_size``."""
    module.eval()
    out = []
    for rows, _, x_log1p in _batches(data, idx, EVAL_BATCH_SIZE):
        onehot = module.batch_onehot(data.batch[rows])
        z_mean, *_ = module.encode(x_log1p, onehot)
        h, _, _ = module.decode(z_mean, onehot, data.batch[rows])
        out.append(torch.softmax(h, dim=-1) * library_size)
    return torch.cat(out).cpu().numpy()


@torch.no_grad()
def imputed_mean(module: VAE, data: DeviceCounts, idx: np.ndarray) -> np.ndarray:
    """Posterior-mean rate ``mu`` of every gene for the cells ``idx``."""
    module.eval()
    out = []
    for rows, _, x_log1p in _batches(data, idx, EVAL_BATCH_SIZE):
        onehot = module.batch_onehot(data.batch[rows])
        z_mean, _, l_mean, _ = module.encode(x_log1p, onehot)
        log_lib = data.log_library[rows].unsqueeze(-1) if l_mean is None else l_mean
        h, _, _ = module.decode(z_mean, onehot, data.batch[rows])
        out.append(torch.softmax(h, dim=-1) * log_lib.exp())
    return torch.cat(out).cpu().numpy()


def corrupt(data: CountData, rate: float = 0.1, seed: int = 0) -> tuple[CountData, np.ndarray, np.ndarray]:
    """Set a fraction ``rate`` of the non-zero counts to zero, as in the scVI imputation benchmark.

    Returns
    -------
    corrupted, rows, cols
        The corrupted data and the coordinates of the zeroed entries. Cells
        left with no counts keep their entries (the model needs non-empty cells).
    """
    if not 0 < rate < 1:
        raise ValueError(f"rate={rate} must lie strictly between 0 and 1.")
    X = data.X.tocoo()
    rng = np.random.default_rng(seed)
    chosen = rng.random(X.nnz) < rate
    kept = X.data.copy()
    kept[chosen] = 0
    remaining = np.bincount(X.row, weights=kept, minlength=X.shape[0])
    emptied = remaining[X.row] == 0
    chosen &= ~emptied
    values = X.data.copy()
    values[chosen] = 0
    corrupted = sp.csr_matrix((values, (X.row, X.col)), shape=X.shape, dtype=np.float32)
    corrupted.eliminate_zeros()
    new = CountData(corrupted, data.batch, data.batch_categories, data.obs_names, data.var_names)
    return new, X.row[chosen], X.col[chosen]


def imputation_errors(
    original: sp.csr_matrix, imputed: np.ndarray, rows: np.ndarray, cols: np.ndarray, cells: np.ndarray
) -> np.ndarray:
    """Per-cell median absolute error of ``imputed`` on the corrupted entries of ``cells``.

    ``imputed`` has one row per cell of ``cells``; cells with no corrupted entry are left out.
    """
    position = np.full(original.shape[0], -1)
    position[cells] = np.arange(len(cells))
    keep = position[rows] >= 0
    rows, cols = rows[keep], cols[keep]
    truth = np.asarray(original[rows, cols]).ravel()
    guess = imputed[position[rows], cols]
    errors = np.abs(truth - guess)
    order = np.argsort(rows, kind="stable")
    rows, errors = rows[order], errors[order]
    boundaries = np.flatnonzero(np.diff(rows)) + 1
    return np.array([np.median(chunk) for chunk in np.split(errors, boundaries) if chunk.size])
