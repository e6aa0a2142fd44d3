"""``sat.Model``: one trained configuration of the scVI model, with its split and metrics."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from .._docs import doc_params
from .._logging import follow_scanpy_verbosity
from .._paths import check_model_dir, replace_dir
from .._validation import MAX_BUDGET, MAX_SEED, check_bool, check_int, check_number
from ._cells import Cells, check_split_cells, select_cells, split_digests
from ._config import resolve_hyperparameters
from ._data import (
    CountData,
    DeviceCounts,
    EmptyCellsError,
    Split,
    extract_counts,
    make_split,
    split_from_labels,
)
from ._metrics import (
    SCORE_SEED,
    corrupt,
    elbo,
    imputation_errors,
    imputed_mean,
    latent_mean,
    marginal_nll,
    normalized_expression,
)
from ._module import VAE
from ._saved_config import check_saved_config
from ._train import EpochCallback, TrainResult, train

if TYPE_CHECKING:  # a search's worker process needs no AnnData (see _data)
    from anndata import AnnData

logger = logging.getLogger("scanpy_autotune")

class _TrainedLayer:
    """The default of ``layer=`` in the methods that read counts: the model's own layer."""

    def __repr__(self) -> str:
        return "<the layer the model was trained on>"


TRAINED_LAYER: Any = _TrainedLayer()


def _per_cell(values: np.ndarray, data: CountData, selected: np.ndarray, name: str) -> pd.Series:
    """One value per selected cell, labelled with the cell's obs name."""
    return pd.Series(np.asarray(values), index=data.obs_names[selected], name=name)


# Parameter descriptions shared by the methods that read counts (``{doc_layer}`` in a docstring).
_DOCS = dict(
    doc_adata="""\
Data holding the model's genes (in any order; other genes are not
    read) and, for a model trained with ``batch_key``, that column of
    ``obs`` with no missing value, naming batches the model knows (for
    the cells read).""",
    doc_cells="""\
cells
    ``"heldout"`` (default), ``"train"``, ``"validation"``, ``"test"``, ``"all"``,
    a boolean mask or obs names (each once; a set is read in ``adata``'s
    order). A split's name selects the model's cells by name and is refused
    on other data whose cells merely share those names (their counts are
    checked).
per_cell
    Return one value per selected cell, as a :class:`pandas.Series` indexed by
    the cells' obs names (so ``adata.obs[name] = values`` aligns it; cells not
    selected get NaN), instead of the mean.""",
    doc_layer="""\
layer
    The layer with the raw counts, ``None`` for ``adata.X``; default
    the one the model was trained on (``model.layer``).""",
    doc_seed="""\
seed
    Seed of the random draws (the estimate is stochastic), so a call
    gives the same value each time; torch's generators are left as
    they were. ``None``: draw from torch's current state.""",
)

_ARCHITECTURE = (
    "n_hidden",
    "n_latent",
    "n_layers",
    "dropout_rate",
    "reconstruction_loss",
    "dispersion",
    "use_observed_lib_size",
)
_TRAINING = (
    "lr",
    "weight_decay",
    "batch_size",
    "n_epochs_kl_warmup",
    "max_kl_weight",
    "early_stopping",
    "early_stopping_patience",
    "reduce_lr_on_plateau",
    "lr_patience",
)


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _why_unreadable(error: Exception) -> str:
    """Why ``torch.load`` could not read a weights file, without its advice to load it unsafely."""
    text = str(error)
    if "WeightsUnpickler error:" in text:  # torch's advice (weights_only=False, safe globals) runs the file's code
        detail = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
        detail = detail.split("Please use", 1)[0].split("If you trust", 1)[0]
        return "damaged, or not written by Model.save: " + " ".join(detail.split()).rstrip(".")
    if isinstance(error, EOFError) or not text:
        return "empty or cut short"
    return f"{type(error).__name__}: {' '.join(text.split())}"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"``: the first GPU when there is one, else the CPU.

    Raises
    ------
    ValueError
        For a device torch does not know, or a CUDA device this machine does not have.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a device torch knows ({err}); use 'cpu', 'cuda' or 'cuda:0'.") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r}: no CUDA device is available (torch {torch.__version__}"
                + (", built without CUDA" if torch.version.cuda is None else ", no GPU visible")
                + "); use device='cpu'."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    return resolved


class Model:
    """A trained scVI-style VAE.

    Create one with :meth:`Model.fit` or :meth:`Model.load`.

    Attributes
    ----------
    hyperparameters
        The full configuration it was trained with.
    split
        Obs names of the ``train``, ``validation``, ``heldout`` (and ``test``) cells.
    split_digest
        A short hash of each split part's per-cell total counts, so that a
        split's name is refused on other data whose cells share those names
        (empty for a model saved before it was kept).
    history
        Per-epoch ``train_elbo`` and ``validation_elbo`` (ELBO per cell, higher is better).
    """

    def __init__(
        self,
        module: VAE,
        hyperparameters: dict[str, Any],
        *,
        var_names: Sequence[str],
        batch_categories: Sequence[str],
        layer: str | None,
        batch_key: str | None,
        split: dict[str, list[str]],
        result: TrainResult,
        split_digest: dict[str, str] | None = None,
    ) -> None:
        self.module = module
        self.hyperparameters = dict(hyperparameters)
        self.var_names = pd.Index(var_names)
        self.batch_categories = list(batch_categories)
        self.layer = layer
        self.batch_key = batch_key
        self.split = split
        #: Each split part's digest of per-cell total counts (``_cells.split_digests``): a split's
        #: name is refused on other data whose cell names match by chance. Empty for older saves.
        self.split_digest = dict(split_digest or {})
        self.train_result = result

    # -- construction ---------------------------------------------------------
    @classmethod
    def fit(
        cls,
        adata: AnnData,
        *,
        layer: str | None = None,
        batch_key: str | None = None,
        train_size: float = 0.75,
        validation_size: float = 0.1,
        test_size: float = 0.0,
        split: str | None = None,
        seed: int = 0,
        max_epochs: int = 400,
        device: str | torch.device | None = None,
        callback: EpochCallback | None = None,
        cuda_graphs: bool | None = None,
        compiled_likelihood: bool | None = None,
        **hyperparameters: Any,
    ) -> Model:
        """Train one configuration on ``adata``.

        Parameters
        ----------
        adata
            Cells x genes with raw counts in ``X`` or in ``layers[layer]``; not modified.
        layer
            Layer holding the counts (``None``: ``adata.X``).
        batch_key
            Column of ``adata.obs`` with a batch covariate.
        train_size
            Fraction of cells for training (the rest is held out for the loss).
        validation_size
            Fraction of the training cells set aside for early stopping.
            ``0`` trains on all training cells (then ``early_stopping`` has no effect).
        test_size
            Fraction of cells kept untouched.
        split
            A column of ``adata.obs`` holding a search's split (``"autotune_split"``:
            each cell ``train``, ``validation``, ``heldout`` or ``test``): the model
            trains, stops early and is scored on those cells, and ``train_size``,
            ``validation_size`` and ``test_size`` are not used.
            (:func:`scanpy_autotune.tl.retrain` trains a search's trial again.)
        seed
            Seed of the split (unless ``split`` is given), the initial weights and
            the training noise.
        max_epochs
            Epoch cap.
        device
            ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default: a GPU when there is one.
        callback
            Called after every epoch with ``(epoch, train_elbo, validation_elbo)``;
            returning ``True`` stops training.
        cuda_graphs
            On a CUDA device, replay each minibatch's training step as a CUDA
            graph (one launch instead of a few hundred): ``None`` (default)
            does so unless ``SCANPY_AUTOTUNE_CUDA_GRAPHS=0``, ``False`` never.
            Elsewhere training is eager.
        compiled_likelihood
            On the CPU, compute the likelihood and its gradients in one compiled
            pass (``torch.compile``; needs a C++ compiler, compiles once per
            process): ``None`` (default) does so when the training is large
            enough for the compile to pay, unless ``SCANPY_AUTOTUNE_COMPILE=0``;
            ``True`` whatever the size; ``False`` never. Where compiling fails, the likelihood is computed
            eagerly with the same numbers and the reason is logged once.
        **hyperparameters
            ``n_hidden`` (128), ``n_latent`` (10), ``n_layers`` (1), ``dropout_rate`` (0.1),
            ``reconstruction_loss`` (``"zinb"``, ``"nb"``, ``"poisson"``), ``dispersion``
            (``"gene"``, ``"gene-batch"``: one dispersion per batch, the same as
            ``"gene"`` without ``batch_key``), ``use_observed_lib_size`` (False), ``lr`` (1e-3),
            ``weight_decay`` (1e-6), ``batch_size`` (128), ``n_epochs_kl_warmup`` (400),
            ``max_kl_weight`` (1.0), ``early_stopping`` (True), ``early_stopping_patience`` (45),
            ``reduce_lr_on_plateau`` (False), ``lr_patience`` (8).

        Returns
        -------
        Model
            The trained model; ``model.split`` tells which cells played which part.
        """
        follow_scanpy_verbosity()
        config = resolve_hyperparameters(hyperparameters, strict=True)
        max_epochs = check_int("max_epochs", max_epochs, low=1, high=MAX_BUDGET)
        seed = check_int("seed", seed, low=0, high=MAX_SEED)
        for name, value in (("cuda_graphs", cuda_graphs), ("compiled_likelihood", compiled_likelihood)):
            if value is not None:
                check_bool(name, value)
        data = extract_counts(adata, layer=layer, batch_key=batch_key)
        if split is None:
            cells = make_split(
                data.n_obs, train_size=train_size, test_size=test_size, validation_size=validation_size, seed=seed
            )
        elif not isinstance(split, str) or split not in adata.obs:
            raise ValueError(f"split={split!r} is not a column of adata.obs (e.g. 'autotune_split' after a search).")
        else:
            cells = split_from_labels(adata.obs[split], split)
        device = resolve_device(device)
        counts = DeviceCounts(data, device)
        return cls.fit_prepared(
            data, counts, cells, config, seed=seed, max_epochs=int(max_epochs),
            callback=callback, layer=layer, batch_key=batch_key, cuda_graphs=cuda_graphs,
            compiled_likelihood=compiled_likelihood,
        )

    @classmethod
    def fit_prepared(
        cls,
        data: CountData,
        counts: DeviceCounts,
        split: Split,
        config: dict[str, Any],
        *,
        seed: int = 0,
        max_epochs: int = 400,
        callback: EpochCallback | None = None,
        layer: str | None = None,
        batch_key: str | None = None,
        cuda_graphs: bool | None = None,
        compiled_likelihood: bool | None = None,
    ) -> Model:
        """Train on counts already checked and on the device, without extracting them again.

        :meth:`Model.fit` checks its arguments and calls this; the search's
        workers, :func:`scanpy_autotune.tl.retrain` and the best model's refit
        call it directly with what they already hold. Nothing is checked here.

        Parameters
        ----------
        data
            The counts, from ``extract_counts``.
        counts
            The same counts on the training device (``DeviceCounts``).
        split
            Which cells train, validate (early stopping), are held out and tested.
        config
            Every hyperparameter, resolved (``resolve_hyperparameters``).
        seed
            Seed of the initial weights and of the training noise.
        max_epochs, callback, cuda_graphs, compiled_likelihood
            As in :meth:`Model.fit`.
        layer, batch_key
            Where the counts and batches came from, recorded in the model.

        Returns
        -------
        Model
            The trained model.
        """
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        module = VAE(
            data.n_vars,
            data.n_batch,
            **{name: config[name] for name in _ARCHITECTURE},
            library_prior=counts.library_prior(split.train),
        ).to(counts.device)
        start = time.perf_counter()
        result = train(
            module,
            counts,
            split.train,
            split.validation,
            max_epochs=max_epochs,
            callback=callback,
            generator=generator,
            cuda_graphs=cuda_graphs,
            compiled_likelihood=compiled_likelihood,
            **{name: config[name] for name in _TRAINING},
        )
        logger.debug(
            "trained %d epochs in %.1f s (best epoch %d, stopped by %s)",
            result.n_epochs, time.perf_counter() - start, result.best_epoch, result.stopped_by,
        )
        return cls(
            module,
            config,
            var_names=data.var_names,
            batch_categories=data.batch_categories,
            layer=layer,
            batch_key=batch_key,
            split=split.to_names(data.obs_names),
            result=result,
            split_digest=split_digests(data, split),
        )

    # -- properties -----------------------------------------------------------
    @property
    def history(self) -> pd.DataFrame:
        """Per-epoch ``train_elbo`` and ``validation_elbo``."""
        return pd.DataFrame(
            {
                "train_elbo": self.train_result.train_elbo,
                "validation_elbo": self.train_result.validation_elbo,
            },
            index=pd.RangeIndex(self.train_result.n_epochs, name="epoch"),
        )

    @property
    def n_params(self) -> int:
        """Number of trained parameters."""
        return sum(p.numel() for p in self.module.parameters())

    @property
    def device(self) -> torch.device:
        """The device the model's weights are on."""
        return self.module.library_mean.device

    # -- data access ----------------------------------------------------------
    def _host_counts(
        self, adata: AnnData, layer: Any = TRAINED_LAYER, cells: Cells = "all"
    ) -> tuple[CountData, np.ndarray]:
        """The counts of the model's genes, in its gene order and batch codes, and the cells ``cells=`` selects."""
        layer = self.layer if layer is TRAINED_LAYER else layer
        genes = self._model_genes_of(adata)
        if self.batch_key is not None and hasattr(genes, "obs") and self.batch_key not in genes.obs.columns:
            raise ValueError(
                f"The model was trained with batches from adata.obs[{self.batch_key!r}], which this adata "
                f"lacks. Add that column, holding batches the model knows ({self._known_batches()}), e.g. "
                f"adata.obs[{self.batch_key!r}] = adata.obs['sample'] when they are kept under another name."
            )
        try:
            data = extract_counts(genes, layer=layer, batch_key=self.batch_key, training=False)
        except EmptyCellsError as error:
            if genes is adata:
                raise
            raise ValueError(
                f"{error.n_empty} cell(s) have no count in the model's {len(self.var_names)} genes (adata holds "
                f"{adata.n_vars}), so the model cannot read them; leave them out, e.g. "
                "adata[np.asarray(adata[:, model.var_names].X.sum(axis=1)).ravel() > 0]."
            ) from None
        if not data.var_names.equals(self.var_names):
            if len(data.var_names) != len(self.var_names) or set(data.var_names) != set(self.var_names):
                missing = self.var_names.difference(data.var_names)
                extra = data.var_names.difference(self.var_names)
                raise ValueError(
                    "adata's genes differ from the genes the model was trained on "
                    f"({data.n_vars} vs {len(self.var_names)}; {len(missing)} of the model's genes missing"
                    + (f", e.g. {missing[0]!r}" if len(missing) else "")
                    + f"; {len(extra)} other genes" + (f", e.g. {extra[0]!r}" if len(extra) else "")
                    + "); the model needs every one of its genes (model.var_names)."
                )
            data.X = data.X[:, data.var_names.get_indexer(self.var_names)]  # same genes, another order
            data.var_names = self.var_names
        selected = select_cells(data, cells, self.split, self.split_digest)
        if self.batch_key is not None:
            self._recode_batches(data, selected)
        return data, selected

    def _model_genes_of(self, adata: AnnData) -> AnnData:
        """``adata`` itself, or a view of the model's genes when it holds them among others."""
        var_names = getattr(adata, "var_names", None)
        if var_names is None or len(var_names) <= len(self.var_names):
            return adata
        names = pd.Index(var_names.astype(str))
        if not names.is_unique or not self.var_names.isin(names).all():
            return adata  # refused with the genes named, once the counts are read
        if adata.is_view and adata.isbacked:  # anndata cannot take a view of this view
            raise ValueError(
                f"adata is a view of a backed AnnData and holds {len(names)} genes, the model's "
                f"{len(self.var_names)} among them; load it first (adata.to_memory()) or select the "
                "model's genes when taking the view (backed[cells, model.var_names])."
            )
        logger.info("adata has %d genes; the model reads its %d", len(names), len(self.var_names))
        return adata[:, np.sort(names.get_indexer(self.var_names))]  # increasing: a backed file reads them so

    def _known_batches(self) -> str:
        shown = self.batch_categories[:10]
        return f"{shown}" + (" ..." if len(self.batch_categories) > 10 else "")

    def _recode_batches(self, data: CountData, selected: np.ndarray) -> None:
        """Give ``data`` the model's batch codes; a batch the model does not know is refused for the selected cells."""
        codes = np.array([self._batch_index(c) for c in data.batch_categories], dtype=np.int64)
        batch = codes[data.batch] if len(codes) else data.batch
        unknown = batch[selected] < 0
        if unknown.any():
            names = sorted({data.batch_categories[i] for i in data.batch[selected][unknown]})
            raise ValueError(
                f"Unknown batch {names[0]!r} in adata.obs[{self.batch_key!r}]"
                + (f" (and {len(names) - 1} more)" if len(names) > 1 else "")
                + f" for {int(unknown.sum())} of the selected cells; the model knows {self._known_batches()}. "
                "Leave those cells out (subset adata, or cells=) or give them a batch the model knows."
            )
        batch[batch < 0] = 0  # cells not selected: never read
        data.batch = batch
        data.batch_categories = self.batch_categories

    def _batch_index(self, category: str) -> int:
        """The model's batch named ``category`` (``"1"`` and ``"1.0"`` name the same batch); -1 for none."""
        if category in self.batch_categories:
            return self.batch_categories.index(category)
        try:
            value = float(category)
            matches = [i for i, known in enumerate(self.batch_categories) if _as_number(known) == value]
        except ValueError:
            matches = []
        return matches[0] if len(matches) == 1 else -1

    # -- metrics --------------------------------------------------------------
    @doc_params(**_DOCS)
    def marginal_nll(
        self, adata: AnnData, n_mc: int = 100, *, cells: Cells = "heldout", per_cell: bool = False,
        layer: str | None = TRAINED_LAYER, seed: int | None = SCORE_SEED,
    ) -> float | pd.Series:
        """Held-out negative marginal log-likelihood per cell, ``-log p(x)``, by importance sampling.

        With ``use_observed_lib_size=True`` it is ``-log p(x | l)``, the
        library ``l`` being the cell's observed total count (as in
        scvi-tools): it leaves out the library's own likelihood, so it is not
        comparable with a model that infers the library.

        Parameters
        ----------
        adata
            {doc_adata}
        n_mc
            Importance samples per cell.
        {doc_cells}
        {doc_layer}
        {doc_seed}

        Returns
        -------
        float or pandas.Series
            The mean over the cells, or with ``per_cell=True`` each cell's
            value, indexed by its name.
        """
        per_cell = check_bool("per_cell", per_cell)
        n_mc = check_int("n_mc", n_mc, low=1)
        data, selected = self._host_counts(adata, layer, cells)
        values = marginal_nll(self.module, DeviceCounts(data, self.device), selected, n_mc=n_mc, seed=seed)
        return _per_cell(values, data, selected, "marginal_nll") if per_cell else float(np.mean(values))

    @doc_params(**_DOCS)
    def elbo(
        self, adata: AnnData, *, cells: Cells = "heldout", per_cell: bool = False,
        layer: str | None = TRAINED_LAYER, seed: int | None = SCORE_SEED,
    ) -> float | pd.Series:
        """ELBO per cell (higher is better; one posterior sample), on ``cells`` as in :meth:`Model.marginal_nll`.

        Parameters
        ----------
        adata
            {doc_adata}
        {doc_cells}
        {doc_layer}
        {doc_seed}

        Returns
        -------
        float or pandas.Series
            The mean over the cells, or with ``per_cell=True`` each cell's
            value, indexed by its name.
        """
        per_cell = check_bool("per_cell", per_cell)
        data, selected = self._host_counts(adata, layer, cells)
        values = elbo(self.module, DeviceCounts(data, self.device), selected, seed=seed)
        return _per_cell(values, data, selected, "elbo") if per_cell else float(np.mean(values))

    @doc_params(**_DOCS)
    def latent(self, adata: AnnData, *, layer: str | None = TRAINED_LAYER) -> np.ndarray:
        """Posterior mean of the latent variable for every cell of ``adata`` (``cells x n_latent``).

        Parameters
        ----------
        adata
            {doc_adata}
        {doc_layer}

        Returns
        -------
        numpy.ndarray
            ``cells x n_latent``, in ``adata``'s cell order.
        """
        data, every_cell = self._host_counts(adata, layer)
        return latent_mean(self.module, DeviceCounts(data, self.device), every_cell)

    @doc_params(**_DOCS)
    def normalized_expression(
        self, adata: AnnData, library_size: float = 1.0, *, layer: str | None = TRAINED_LAYER,
    ) -> pd.DataFrame:
        """Denoised expression (decoded gene proportions x ``library_size``) for every cell.

        A DataFrame of cells x genes in ``adata``'s order (``obs_names`` x ``var_names``).

        Parameters
        ----------
        adata
            {doc_adata}
        library_size
            The library every cell is scaled to.
        {doc_layer}
        """
        # float32 values: a larger library would overflow to inf
        library_size = check_number(
            "library_size", library_size, low=0.0, low_open=True, high=float(np.finfo(np.float32).max)
        )
        data, every_cell = self._host_counts(adata, layer)
        values = normalized_expression(self.module, DeviceCounts(data, self.device), every_cell, library_size)
        frame = pd.DataFrame(values, index=data.obs_names, columns=data.var_names)
        order = pd.Index(adata.var_names.astype(str))
        return frame.loc[:, order[order.isin(data.var_names)]]  # adata's gene order

    def imputation_score(
        self, adata: AnnData, *, rate: float = 0.1, seed: int = 0, retrain: bool = True,
        max_epochs: int = 400,
    ) -> dict[str, float]:
        """scVI imputation benchmark: corrupt ``rate`` of the non-zero counts and impute them.

        With ``retrain`` a model of the same configuration is trained on the
        corrupted training cells (the honest version); otherwise this model
        imputes the corrupted input. The error of a cell is the median absolute
        difference between the original counts and the imputed means over its
        corrupted entries.

        Parameters
        ----------
        adata
            Data holding the model's genes (and its training cells, with ``retrain``).
        rate
            Fraction of the non-zero counts corrupted, in (0, 1).
        seed
            Seed of the corruption and of the retraining.
        retrain
            Train a model of this configuration on the corrupted cells first.
        max_epochs
            Epoch cap of that training.

        Returns
        -------
        dict
            ``median`` and ``mean`` of the per-cell errors, and ``n_cells``.
        """
        retrain = check_bool("retrain", retrain)
        rate = check_number("rate", rate, low=0.0, high=1.0, low_open=True, high_open=True)
        seed = check_int("seed", seed, low=0, high=MAX_SEED)
        max_epochs = check_int("max_epochs", max_epochs, low=1, high=MAX_BUDGET)
        data, _ = self._host_counts(adata)
        corrupted, rows, cols = corrupt(data, rate=rate, seed=seed)
        counts = DeviceCounts(corrupted, self.device)
        model = self
        if retrain:
            split = Split.from_names(self.split, data.obs_names)
            check_split_cells(data, split, self.split_digest)
            model = Model.fit_prepared(
                corrupted, counts, split, self.hyperparameters, seed=seed, max_epochs=max_epochs
            )
        cells = np.arange(data.n_obs)
        imputed = imputed_mean(model.module, counts, cells)
        errors = imputation_errors(data.X, imputed, rows, cols, cells)
        return {"median": float(np.median(errors)), "mean": float(np.mean(errors)), "n_cells": int(errors.size)}

    # -- persistence ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The model as ``{"config": JSON-able dict, "weights": bytes}`` (a plain state dict)."""
        from .. import __version__

        config = {
            "version": __version__,
            "hyperparameters": self.hyperparameters,
            "var_names": list(map(str, self.var_names)),
            "batch_categories": self.batch_categories,
            "layer": self.layer,
            "batch_key": self.batch_key,
            "split": self.split,
            "split_digest": self.split_digest,
            "history": {
                "train_elbo": self.train_result.train_elbo,
                "validation_elbo": self.train_result.validation_elbo,
                "best_epoch": self.train_result.best_epoch,
                "n_epochs": self.train_result.n_epochs,
                "stopped_by": self.train_result.stopped_by,
            },
        }
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.module.state_dict().items()}, buffer)
        return {"config": config, "weights": buffer.getvalue()}

    @classmethod
    def from_dict(cls, blob: dict[str, Any], device: str | torch.device | None = None) -> Model:
        """Rebuild a model from :meth:`Model.to_dict`.

        Parameters
        ----------
        blob
            ``{"config": ..., "weights": bytes}`` as :meth:`Model.to_dict` gives.
        device
            Where to put the weights; default: a GPU when there is one.

        Returns
        -------
        Model

        Raises
        ------
        ValueError
            When ``blob`` is not such a dict, its config is not one this
            version reads (checked in full before any network is built, as
            :meth:`Model.load` does), or its weights are not a state dict of that
            config (read with ``weights_only=True``).
        """
        if not isinstance(blob, dict) or set(blob) != {"config", "weights"} or not isinstance(blob["weights"], bytes):
            raise ValueError(
                "blob must be the dict Model.to_dict() gives: {'config': ..., 'weights': bytes}, "
                f"got {type(blob).__name__}" + (f" with keys {sorted(blob)}" if isinstance(blob, dict) else "")
            )
        return cls._from_checked(check_saved_config(blob["config"], "the model's config"), blob["weights"], device)

    @classmethod
    def _from_checked(
        cls, config: dict[str, Any], weights: bytes, device: str | torch.device | None, where: str = "weights"
    ) -> Model:
        device = resolve_device(device)
        try:
            state = torch.load(io.BytesIO(weights), map_location=device, weights_only=True)
        except Exception as err:  # a truncated or foreign file
            raise ValueError(f"{where}: not a saved state dict ({_why_unreadable(err)})") from None
        hp = config["hyperparameters"]
        module = VAE(
            len(config["var_names"]),
            len(config["batch_categories"]),
            **{name: hp[name] for name in _ARCHITECTURE},
        ).to(device)
        try:
            module.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{where} does not match the config: {err}") from None
        module.eval()
        history = config["history"]
        result = TrainResult(
            train_elbo=list(history["train_elbo"]),
            validation_elbo=list(history["validation_elbo"]),
            best_epoch=history["best_epoch"],
            n_epochs=history["n_epochs"],
            stopped_by=history["stopped_by"],
        )
        return cls(
            module,
            hp,
            var_names=config["var_names"],
            batch_categories=config["batch_categories"],
            layer=config["layer"],
            batch_key=config["batch_key"],
            split=config["split"],
            result=result,
            split_digest=config.get("split_digest"),
        )

    def save(self, directory: str | Path, overwrite: bool = False) -> None:
        """Write ``config.json`` and ``weights.pt`` (a plain state dict) to ``directory``.

        The folder is written all at once (a temporary folder beside it is
        renamed), so it never holds half a model.

        Parameters
        ----------
        directory
            The folder; created if needed.
        overwrite
            Replace a model saved there earlier. A folder holding any other
            file is refused even then, so that nothing the package did not
            write is deleted.

        Raises
        ------
        ValueError
            When ``directory`` is a file, holds other files, or holds a saved
            model and ``overwrite`` is ``False``.
        PermissionError
            When it cannot be written.
        """
        overwrite = check_bool("overwrite", overwrite)
        directory = check_model_dir(Path(directory).expanduser().resolve(), "directory=")
        if directory.exists() and any(directory.iterdir()) and not overwrite:
            raise ValueError(f"{directory} holds a saved model; pass overwrite=True to replace it.")
        blob = self.to_dict()

        def write(folder: Path) -> None:
            (folder / "config.json").write_text(json.dumps(blob["config"]))
            (folder / "weights.pt").write_bytes(blob["weights"])

        replace_dir(directory, write)

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device | None = None) -> Model:
        """Load a model written by :meth:`Model.save`.

        ``config.json`` is checked in full (entries, types, ranges) before
        anything is built, and the weights are read with ``weights_only=True``.

        Parameters
        ----------
        directory
            A folder written by :meth:`Model.save` (or a search's ``save_dir``).
        device
            Where the model runs: ``"cpu"``, ``"cuda"``, ``"cuda:1"``; ``None``
            (default): the first GPU when there is one, else the CPU.

        Raises
        ------
        ValueError
            When the folder holds no saved model, or its files are not valid
            (the message names the file and the entry), or ``device`` is not
            available.
        """
        directory = Path(directory).expanduser()
        config_file, weights_file = directory / "config.json", directory / "weights.pt"
        if not config_file.is_file() or not weights_file.is_file():
            raise ValueError(f"{directory} holds no saved model (config.json or weights.pt missing).")
        try:
            config = json.loads(config_file.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{config_file} is not valid JSON: {err}") from None
        checked = check_saved_config(config, str(config_file))
        return cls._from_checked(checked, weights_file.read_bytes(), device, str(weights_file))

    def __repr__(self) -> str:
        hp = self.hyperparameters
        return (
            f"Model({len(self.var_names)} genes, n_latent={hp['n_latent']}, n_hidden={hp['n_hidden']}, "
            f"n_layers={hp['n_layers']}, {hp['reconstruction_loss']}, "
            f"{self.train_result.n_epochs} epochs, best epoch {self.train_result.best_epoch})"
        )
