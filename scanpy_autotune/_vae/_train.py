"""Training: minibatches, KL warm-up, early stopping with best-weight restore, reporting hook."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ._compiled_likelihood import compile_choice
from ._config import ADAM_EPS, LR_FACTOR
from ._data import DeviceCounts, index_tensor
from ._log import log_once
from ._module import VAE
from ._optim import FlatAdam
from ._step import GraphedTrainStep, TrainStep, graphs_choice

EVAL_BATCH_SIZE = 1024

# Called after every epoch with (epoch, train_elbo, validation_elbo); returning True stops training.
EpochCallback = Callable[[int, float, float], bool]


@dataclass
class TrainResult:
    """What one training run did.

    Attributes
    ----------
    train_elbo, validation_elbo
        Per-epoch ELBO per cell (higher is better); validation is NaN without validation cells.
    best_epoch
        Epoch (0-based) whose weights were kept.
    n_epochs
        Epochs trained.
    stopped_by
        ``"max_epochs"``, ``"early_stopping"``, ``"callback"`` or ``"diverged"``.
    """

    train_elbo: list[float] = field(default_factory=list)
    validation_elbo: list[float] = field(default_factory=list)
    best_epoch: int = -1
    n_epochs: int = 0
    stopped_by: str = "max_epochs"


def _kl_weight(epoch: int, n_epochs_kl_warmup: int, max_kl_weight: float = 1.0) -> float:
    if n_epochs_kl_warmup <= 0:
        return max_kl_weight
    return max_kl_weight * min(1.0, epoch / n_epochs_kl_warmup)


@torch.no_grad()
def evaluate_elbo(module: VAE, data: DeviceCounts, idx: np.ndarray) -> np.ndarray:
    """Per-cell ELBO (one posterior sample, constants included) of the cells ``idx``."""
    module.eval()
    out = []
    index = index_tensor(idx, data.device)
    for start in range(0, len(index), EVAL_BATCH_SIZE):
        rows = index[start : start + EVAL_BATCH_SIZE]
        x, x_log1p, nz = data.rows_and_nonzeros(rows)
        recon, kl_z, kl_l = module(x, x_log1p, data.log_library[rows], data.batch[rows], nz)
        out.append(-(recon + kl_z + kl_l + data.log_x_factorial[rows]))
    if not out:
        return np.zeros(0)
    return torch.cat(out).double().cpu().numpy()


def train(
    module: VAE,
    data: DeviceCounts,
    train_idx: np.ndarray,
    validation_idx: np.ndarray,
    *,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    batch_size: int = 128,
    max_epochs: int = 400,
    n_epochs_kl_warmup: int = 400,
    max_kl_weight: float = 1.0,
    early_stopping: bool = True,
    early_stopping_patience: int = 45,
    reduce_lr_on_plateau: bool = False,
    lr_patience: int = 8,
    lr_factor: float = LR_FACTOR,
    callback: EpochCallback | None = None,
    generator: torch.Generator | None = None,
    cuda_graphs: bool | None = None,
    compiled_likelihood: bool | None = None,
) -> TrainResult:
    """Train ``module`` in place and keep the weights of its best validation epoch.

    Parameters
    ----------
    module
        The VAE to train.
    data
        Counts on the training device.
    train_idx, validation_idx
        Cell positions used for gradient steps and for early stopping.
    lr, weight_decay
        Adam settings (``eps`` is scVI's :data:`._config.ADAM_EPS`).
    batch_size, max_epochs, n_epochs_kl_warmup
        Minibatch size, epoch cap, and epochs over which the KL weight of z
        rises linearly from 0 to ``max_kl_weight``.
    max_kl_weight
        The KL weight of z after the warm-up (scVI's 1 gives the ELBO; more
        pulls the latent toward its prior). Validation and reported ELBOs
        always use the full ELBO.
    early_stopping, early_stopping_patience
        Stop when the validation ELBO has not improved for this many epochs.
    reduce_lr_on_plateau, lr_patience, lr_factor
        Multiply the learning rate by ``lr_factor`` when validation stalls.
    callback
        Called after each epoch with ``(epoch, train_elbo, validation_elbo)``;
        returning ``True`` stops training.
    generator
        Random generator for the minibatch order.
    cuda_graphs
        Replay each minibatch's step as a CUDA graph (:mod:`._step`): ``None``
        (default) does so on a CUDA device with dense counts unless
        ``SCANPY_AUTOTUNE_CUDA_GRAPHS=0``; ``False`` never. Elsewhere, or when
        capture fails, training is eager (the reason is logged once).
    compiled_likelihood
        On the CPU, compute the likelihood's dense terms and gradients in one
        compiled pass (:mod:`._compiled_likelihood`): ``None`` (default) does
        so when the training is large enough for the compile to pay, unless
        ``SCANPY_AUTOTUNE_COMPILE=0``; ``True`` always, ``False`` never. Where
        compiling fails the likelihood is eager (the reason is logged once).
        The module keeps the choice for its evaluation passes.

    Returns
    -------
    TrainResult
        Histories, the best epoch and why training stopped. With validation
        cells the weights of the best validation epoch are restored; without,
        the last epoch's weights are kept.
    """
    device = data.device
    use_graphs, why_not = graphs_choice(device, data, cuda_graphs)
    if not use_graphs and device.type == "cuda":
        log_once(f"training eagerly: {why_not}")
    module.compiled_likelihood, why_not_compiled = compile_choice(
        device, len(train_idx), data.n_vars, max_epochs, compiled_likelihood
    )
    if compiled_likelihood and not module.compiled_likelihood:
        log_once(f"likelihood not compiled: {why_not_compiled}")
    optimizer = FlatAdam(module, lr=lr, eps=ADAM_EPS, weight_decay=weight_decay, capturable=use_graphs)
    kl_weight = torch.zeros((), device=device)
    total = torch.zeros((), device=device)
    step = TrainStep(module, data, optimizer, kl_weight, total)
    if use_graphs:
        step = GraphedTrainStep(step)
    train_index = index_tensor(train_idx, device)
    n_train = len(train_index)
    # scVI drops a last minibatch of fewer than 3 cells (BatchNorm needs several).
    remainder = n_train % batch_size
    n_full = n_train - remainder if 0 < remainder < 3 else n_train
    has_validation = len(validation_idx) > 0

    result = TrainResult()
    best_value = -math.inf
    plateau_epoch = 0  # last epoch that improved or reduced the learning rate
    best_state = None
    for epoch in range(max_epochs):
        module.train()
        kl_weight.fill_(_kl_weight(epoch, n_epochs_kl_warmup, max_kl_weight))
        order = train_index[torch.randperm(n_train, generator=generator).to(device)][:n_full]
        total.zero_()
        for start in range(0, n_full, batch_size):
            step(order[start : start + batch_size])
        train_elbo = -float(total + data.log_x_factorial[order].sum()) / max(n_full, 1)
        if has_validation:
            validation_elbo = float(np.mean(evaluate_elbo(module, data, validation_idx)))
        else:
            validation_elbo = math.nan
        result.train_elbo.append(train_elbo)
        result.validation_elbo.append(validation_elbo)
        result.n_epochs = epoch + 1
        if not math.isfinite(train_elbo) or (has_validation and not math.isfinite(validation_elbo)):
            result.stopped_by = "diverged"
            break
        monitored = validation_elbo if has_validation else train_elbo
        if monitored > best_value:
            best_value = monitored
            result.best_epoch = epoch
            if has_validation:
                best_state = copy.deepcopy(module.state_dict())
        if result.best_epoch == epoch:
            plateau_epoch = epoch
        elif reduce_lr_on_plateau and epoch - plateau_epoch >= lr_patience:
            optimizer.lr *= lr_factor
            plateau_epoch = epoch
        if callback is not None and callback(epoch, train_elbo, validation_elbo):
            result.stopped_by = "callback"
            break
        if early_stopping and has_validation and epoch - result.best_epoch >= early_stopping_patience:
            result.stopped_by = "early_stopping"
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    elif result.stopped_by == "diverged" or not has_validation:
        result.best_epoch = result.n_epochs - 1
    module.eval()
    return result
