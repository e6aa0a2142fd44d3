"""Start-up configurations: configurations run first, after the default, before TPE's own.

TPE's first trials are random draws (hyperopt's ``n_startup_jobs``, a third of
the budget up to 20: :func:`._tpe.startup_trials`), so what they find is partly
luck (``benchmarks/results/startup.md``). This module supplies configurations
worth trying first: the winners of the 100-trial searches recorded in
``benchmarks/results/searches/``, one per dataset, or configurations the user
gives. They take the place of the first random draws (TPE counts them towards
its start-up) and TPE learns from them like from any trial.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._space import SearchSpace

__all__ = ["WINNERS", "StartupConfig", "startup_configs"]

logger = logging.getLogger("scanpy_autotune")


@dataclass(frozen=True)
class StartupConfig:
    """One start-up configuration and where it comes from."""

    source: str
    params: Mapping[str, Any]


#: The best configuration of each 100-trial search in ``benchmarks/results/searches/``
#: (default scVI space, 400 epochs, seed 0): Cortex without pruning (1 worker,
#: held-out NLL 120.45), PBMC4k without pruning (604.50), CBMC with ASHA (440.32).
WINNERS: tuple[StartupConfig, ...] = (
    StartupConfig(
        "winner on cortex_zeisel_3005x200",
        {"n_hidden": 64, "n_latent": 15, "n_layers": 2, "dropout_rate": 0.3,
         "reconstruction_loss": "zinb", "lr": 0.005},
    ),
    StartupConfig(
        "winner on pbmc4k_10x_4271x2000",
        {"n_hidden": 64, "n_latent": 12, "n_layers": 4, "dropout_rate": 0.1,
         "reconstruction_loss": "nb", "lr": 0.005},
    ),
    StartupConfig(
        "winner on cbmc_citeseq_8617x2000",
        {"n_hidden": 64, "n_latent": 10, "n_layers": 4, "dropout_rate": 0.1,
         "reconstruction_loss": "nb", "lr": 0.005},
    ),
)


def startup_configs(
    startup: str | Sequence[Mapping[str, Any]] | None, space: SearchSpace,
    defaults: Mapping[str, Any] | None = None,
) -> list[StartupConfig]:
    """The start-up configurations of a search, inside its space.

    Parameters
    ----------
    startup
        ``"winners"`` (:data:`WINNERS`; those outside ``space`` are left out,
        with an info message, and a warning when all are), ``None`` (none: TPE starts with random draws),
        or a sequence of configurations (dicts of hyperparameter values), each
        giving a value for every searched hyperparameter, inside the space.
    space
        The search space. Its fixed values replace a winner's values for the
        same names.
    defaults
        The values a winner was trained with for the hyperparameters it does
        not name (the model's defaults), used when the space searches them
        (``max_kl_weight`` in :func:`._space.integration_space`).

    Returns
    -------
    list of StartupConfig
        In the order they run; their ``params`` hold every searched and fixed name.

    Raises
    ------
    ValueError
        For an unknown name, or a given configuration that misses a searched
        hyperparameter or lies outside the space (the message says which).
    """
    if startup is None:
        return []
    if isinstance(startup, str):
        if startup != "winners":
            raise ValueError(
                f"startup={startup!r}: use 'winners' (the best configurations of earlier searches), "
                "None (random start-up draws), or a list of configurations (dicts)."
            )
        chosen = []
        for config in WINNERS:
            params = _in_space({**(defaults or {}), **config.params}, space)
            if params is None:
                logger.info("start-up configuration %r is outside the search space; left out", config.source)
            else:
                chosen.append(StartupConfig(config.source, params))
        if not chosen:
            logger.warning(
                "startup='winners': no winner of earlier searches lies inside the search space %s; "
                "TPE starts with random draws", space.to_text(),
            )
        return chosen
    if isinstance(startup, Mapping) or not isinstance(startup, Sequence):
        raise ValueError(
            f"startup must be 'winners', None or a list of configurations (dicts), got {type(startup).__name__}."
        )
    chosen = []
    for position, given in enumerate(startup):
        if not isinstance(given, Mapping):
            raise ValueError(f"startup[{position}] is a {type(given).__name__}, not a dict of hyperparameters.")
        missing = [name for name in space.names if name not in given]
        if missing:
            raise ValueError(f"startup[{position}] gives no value for the searched hyperparameter(s) {missing}.")
        params = _in_space(given, space)
        if params is None:
            raise ValueError(
                f"startup[{position}] = {dict(given)!r} lies outside the search space {space.to_text()}."
            )
        chosen.append(StartupConfig(f"given startup[{position}]", params))
    return chosen


def _in_space(params: Mapping[str, Any], space: SearchSpace) -> dict[str, Any] | None:
    """The configuration restricted to the space (fixed values imposed), or ``None`` when outside it."""
    searched = {name: params[name] for name in space.names if name in params}
    if len(searched) < len(space.names) or space.encode(searched) is None:
        return None
    return {**searched, **space.fixed}
