"""scanpy-autotune: hyperparameter search for scVI-style VAEs on AnnData.

>>> import scanpy_autotune as sat
>>> sat.tl.autotune(adata, layer="counts", max_evals=100)
>>> sat.pl.trial_history(adata)

``sat.tl``, ``sat.pl``, ``sat.datasets`` and ``sat.Model`` are loaded on first
use: a search's worker processes import only the model and the trial code, not
the plots, the datasets or the search's own driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from . import datasets, pl, tl
    from ._vae import Model

__all__ = ["Model", "datasets", "pl", "tl", "__version__"]

_SUBMODULES = ("datasets", "pl", "tl")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "Model":
        from ._vae import Model

        return Model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
