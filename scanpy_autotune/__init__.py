"""scanpy-autotune: hyperparameter search for scVI-style VAEs on AnnData.

>>> import scanpy_autotune as sat
>>> sat.tl.autotune(adata, layer="counts", max_evals=100)
>>> sat.pl.trial_history(adata)
"""

__version__ = "0.1.0"

from . import datasets, pl, tl  # noqa: E402
from ._logging import follow_scanpy_verbosity  # noqa: E402
from ._vae import Model  # noqa: E402

follow_scanpy_verbosity()

__all__ = ["Model", "datasets", "pl", "tl", "__version__"]
