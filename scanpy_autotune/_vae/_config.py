"""The model's hyperparameters: names, defaults and valid values.

This module imports nothing heavy (no torch) so that the search can validate a
space against it without touching the model.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ParamSpec:
    """What one hyperparameter may be.

    Parameters
    ----------
    default
        The scVI default.
    kind
        ``"int"``, ``"float"``, ``"bool"`` or ``"choice"``.
    low, high
        Inclusive bounds for numbers.
    choices
        Valid values for ``"choice"``.
    doc
        One line for error messages and the README.
    """

    default: Any
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    doc: str = ""

    def check(self, name: str, value: Any, *, strict: bool = False) -> Any:
        """Return ``value`` converted to the parameter's type, or raise ``ValueError``.

        ``strict`` (a value a user typed) refuses a float for an integer parameter;
        otherwise a whole float is taken (hyperopt draws integer ranges as floats).
        """
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(
                    f"{name}={value!r} is not valid; choose one of {list(self.choices)}."
                )
            return value
        if self.kind == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{name}={value!r} is not valid; use True or False.")
            return bool(value)
        # A bool or a string is never read as a number: n_layers=True or "2" is a mistake.
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name}={value!r} is not a number.")
        value = float(value) if not isinstance(value, numbers.Integral) else int(value)
        if not math.isfinite(value):
            raise ValueError(f"{name}={value!r} must be finite.")
        if self.kind == "int":
            if strict and not isinstance(value, numbers.Integral):
                raise ValueError(f"{name}={value!r} must be an integer; a float is not taken for one.")
            if float(value) != int(value):
                raise ValueError(f"{name}={value!r} must be an integer.")
            value = int(value)
        else:
            value = float(value)
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            raise ValueError(
                f"{name}={value!r} is out of range; it must lie in [{self.low}, {self.high}]."
            )
        return value


HYPERPARAMETERS: dict[str, ParamSpec] = {
    "n_hidden": ParamSpec(128, "int", 1, 8192, doc="units per hidden layer"),
    "n_latent": ParamSpec(10, "int", 1, 1024, doc="dimension of the latent space"),
    "n_layers": ParamSpec(1, "int", 1, 16, doc="hidden layers in encoder and decoder"),
    "dropout_rate": ParamSpec(0.1, "float", 0.0, 0.95, doc="dropout of the encoder"),
    "reconstruction_loss": ParamSpec(
        "zinb", "choice", choices=("zinb", "nb", "poisson"), doc="count likelihood"
    ),
    "dispersion": ParamSpec(
        "gene", "choice", choices=("gene", "gene-batch"), doc="how the NB dispersion is shared"
    ),
    "use_observed_lib_size": ParamSpec(
        False, "bool", doc="use each cell's total count instead of a latent library size"
    ),
    "lr": ParamSpec(1e-3, "float", 1e-7, 1.0, doc="Adam learning rate"),
    "weight_decay": ParamSpec(1e-6, "float", 0.0, 1.0, doc="Adam weight decay"),
    "batch_size": ParamSpec(128, "int", 2, 65536, doc="cells per minibatch"),
    "n_epochs_kl_warmup": ParamSpec(
        400, "int", 0, 100000, doc="epochs over which the KL weight rises from 0 to max_kl_weight"
    ),
    "max_kl_weight": ParamSpec(
        1.0, "float", 0.0, 1000.0, doc="weight of the latent's KL term after the warm-up"
    ),
    "early_stopping": ParamSpec(True, "bool", doc="stop when the validation ELBO stalls"),
    "early_stopping_patience": ParamSpec(
        45, "int", 1, 100000, doc="epochs without improvement before stopping"
    ),
    "reduce_lr_on_plateau": ParamSpec(False, "bool", doc="multiply lr by 0.6 when validation stalls"),
    "lr_patience": ParamSpec(8, "int", 1, 100000, doc="epochs before the lr is reduced"),
}


#: Adam's ``eps`` (scVI's 0.01, not torch's 1e-8) and the factor that
#: ``reduce_lr_on_plateau`` multiplies the rate by: settings of training that
#: are not searched, stated once for the training loop and the scvi-tools hand-off.
ADAM_EPS = 0.01
LR_FACTOR = 0.6


def default_hyperparameters() -> dict[str, Any]:
    """The scVI default configuration (what :meth:`Model.fit` trains with no arguments)."""
    return {name: spec.default for name, spec in HYPERPARAMETERS.items()}


def resolve_hyperparameters(values: Mapping[str, Any], *, strict: bool = False) -> dict[str, Any]:
    """Fill defaults and validate ``values``; raise ``ValueError`` on an unknown name or bad value.

    ``strict``: the values come from a user (see :meth:`ParamSpec.check`).
    """
    unknown = sorted(set(values) - set(HYPERPARAMETERS))
    if unknown:
        raise ValueError(
            f"Unknown hyperparameter(s) {unknown}; valid names are {sorted(HYPERPARAMETERS)}."
        )
    resolved = default_hyperparameters()
    for name, value in values.items():
        resolved[name] = HYPERPARAMETERS[name].check(name, value, strict=strict)
    return resolved
