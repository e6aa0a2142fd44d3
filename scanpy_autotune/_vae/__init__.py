"""The scVI-style model. Nothing here knows about the search."""

from ._config import HYPERPARAMETERS, ParamSpec, default_hyperparameters, resolve_hyperparameters
from ._model import Model

__all__ = ["HYPERPARAMETERS", "Model", "ParamSpec", "default_hyperparameters", "resolve_hyperparameters"]
