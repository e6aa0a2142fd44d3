"""The command's arguments: the parser, the argument types, its name and exit codes."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import NoReturn

from .._validation import check_int

PROG = "scanpy-autotune"
KEY = "autotune"  # the results' default key_added
EXIT_NO_RESULT = 1  # the search ran, but no trial succeeded
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process it ended


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line too."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{PROG}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(low: int):
    """An argparse type: an integer of at least ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        try:
            return check_int("value", value, low=low)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {low}") from None

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _trials_per_gpu(text: str) -> int | str:
    """``--trials-per-gpu``: ``auto`` or a positive integer."""
    return "auto" if text.strip().lower() == "auto" else _positive_int(text)


def _patience(text: str) -> int | str | None:
    """``--patience``: ``auto``, ``none`` or a positive integer."""
    value = text.strip().lower()
    if value in ("auto", "none"):
        return None if value == "none" else "auto"
    return _positive_int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _share(text: str, *, allow_zero: bool) -> float:
    """A share of the cells, in ``(0, 1)`` (``[0, 1)`` with ``allow_zero``), as ``autotune`` takes it."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (0 <= value < 1 if allow_zero else 0 < value < 1):
        where = "[0, 1)" if allow_zero else "(0, 1)"
        raise argparse.ArgumentTypeError(f"{text!r} must be a share of the cells, in {where}")
    return value


def _train_size(text: str) -> float:
    """``--train-size``: the share of the cells a trial trains on, in ``(0, 1)``."""
    return _share(text, allow_zero=False)


def _test_size(text: str) -> float:
    """``--test-size``: the share of the cells no trial sees, in ``[0, 1)``."""
    return _share(text, allow_zero=True)


def parse_gpus(text: str) -> str | int | list[int] | None:
    """``--gpus``: ``all``, ``none``, a count (``2``) or indices (``0,2``).

    Parameters
    ----------
    text
        The option's value.

    Returns
    -------
    The ``gpus`` argument of :func:`scanpy_autotune.tl.autotune`.

    Raises
    ------
    argparse.ArgumentTypeError
        For anything else.
    """
    value = text.strip().lower()
    if value == "all":
        return "all"
    if value in ("none", "0", "cpu"):
        return None
    try:
        if "," in value:
            indices = [int(part) for part in value.split(",") if part.strip()]
            if not indices or min(indices) < 0:
                raise ValueError
            if len(set(indices)) < len(indices):
                raise argparse.ArgumentTypeError(f"{text!r} names a GPU more than once")
            return indices
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use 'all', 'none', a number of GPUs or indices like '0,2'"
        ) from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return count


def _add_common(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``tune`` and ``demo``."""
    parser.add_argument(
        "--max-evals", type=_positive_int, metavar="N",
        help="at most this many trials in total (tune: those resumed from --journal included; "
        "the search may end sooner, see --patience) (default: 100 for tune, 12 for demo)",
    )
    parser.add_argument(
        "--max-epochs", type=_positive_int, metavar="N",
        help="epoch cap per trial (trials stop early when the validation ELBO stalls); "
        "default: min(400, 400 * 20000 / cells) for tune, 40 for demo",
    )
    parser.add_argument(
        "--workers", type=_positive_int, metavar="N",
        help="trials run at once; default one per GPU slot, or one per CPU core this "
        "process may use, such as a Slurm job's or within a container's CPU limit "
        "(with --scheduler: the cluster's GPU resources or threads)",
    )
    parser.add_argument(
        "--gpus", type=parse_gpus, default="all", metavar="WHICH",
        help="GPUs to use: 'all' visible (default); 'none' (or 0) for the CPU only; a number N "
        "for the first N GPUs; indices with a comma, such as '0,2', or '1,' for GPU 1 alone",
    )
    parser.add_argument(
        "--trials-per-gpu", type=_trials_per_gpu, default="auto", metavar="N",
        help="trials sharing each GPU: a number, or 'auto' (default): as many as the CPU cores "
        "can feed and the GPU's free memory can hold",
    )
    parser.add_argument(
        "--scheduler", metavar="ADDRESS",
        help="run the trials on a Dask cluster (the dask extra: pip install -e '.[dask]' in a clone) through "
        "its scheduler, e.g. tcp://10.0.0.1:8786; GPU workers are those started with "
        "--resources GPU=1",
    )
    parser.add_argument(
        "--seed", type=_non_negative_int, default=0, metavar="N",
        help="seed of the cell split, of TPE and of each trial's training (default 0)",
    )
    parser.add_argument(
        "--pruner", choices=("auto", "asha", "median", "none"), default="auto",
        help="stop unpromising trials early at rungs of their validation ELBO (default auto: ASHA "
        "from min(25, max-epochs/4) epochs; none below 20 epochs or 30 trials, nor with "
        "--objective integration, whose Total the rungs' ELBOs do not rank; median: stop a trial "
        "whose best ELBO so far is below the median of the other trials at the same epoch, every "
        "10 epochs from min(20, max-epochs/2))",
    )
    parser.add_argument(
        "--patience", type=_patience, default="auto", metavar="N",
        help="end the search when this many trials' worth of training in a row did not lower the best "
        "loss by more than 0.2%% (after at least 20; a pruned or failed trial counts as the share of epochs it trained): a number, 'auto' (default: 8 for 100 trials) or "
        "'none' to run every trial",
    )
    parser.add_argument(
        "--startup", choices=("winners", "none"), default="none",
        help="run first, after the default, the best configurations of earlier searches "
        "(winners) or start TPE with random draws only (none, default)",
    )
    parser.add_argument(
        "--timeout", type=_positive_float, metavar="SECONDS",
        help="start no trial after this many seconds and abandon the running ones",
    )
    parser.add_argument(
        "--n-mc", type=_positive_int, default=100, metavar="N",
        help="importance samples per cell for the held-out -log p(x) loss (default 100)",
    )
    parser.add_argument(
        "--plots", type=Path, metavar="DIR",
        help="write every sat.pl figure (trial_history, sensitivity, optimization_history, "
        "param_importance (from 5 successful trials), and pareto with --labels-key) as PNG into DIR; "
        "the summary names a figure that could not be drawn",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-q", "--quiet", action="store_true",
        help="no progress bar, errors only in the log",
    )
    verbosity.add_argument(
        "-v", "--verbose", action="store_true",
        help="log every trial, and show tracebacks of errors",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``scanpy-autotune`` argument parser (``tune`` and ``demo``)."""
    parser = _Parser(
        prog=PROG,
        description="Hyperparameter search (asynchronous TPE) for scVI-style variational "
        "autoencoders on AnnData files.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    tune = commands.add_parser(
        "tune",
        help="search hyperparameters on an .h5ad file and write the result",
        description="Search hyperparameters of the scVI model on the counts of IN.h5ad; write "
        "IN with uns['autotune'] (every trial, the best one, the histories) and "
        "obsm['X_autotune'] (latent of the best model) to OUT.h5ad. The loss is the "
        "held-out -log p(x) per cell (lower is better).",
    )
    tune.add_argument("input", type=Path, metavar="IN.h5ad", help="cells x genes with raw counts")
    tune.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUT.h5ad",
        help="where to write the result (IN with the search's results)",
    )
    tune.add_argument("--layer", help="layer with the raw counts (default: X)")
    tune.add_argument("--batch-key", metavar="COLUMN", help="column of obs with a batch covariate")
    tune.add_argument(
        "--labels-key", metavar="COLUMN",
        help="column of obs with cell types: every trial also records the scIB integration scores "
        "of its latent (the scib extra: pip install -e '.[scib]' in a clone)",
    )
    tune.add_argument(
        "--objective", choices=("nll", "marginal_nll", "integration"), default="nll",
        help="what the search optimises: the held-out -log p(x) (nll, default; marginal_nll, as "
        "the results record it, is the same) or the scIB Total (integration; needs --labels-key "
        "and --batch-key)",
    )
    tune.add_argument(
        "--score-cells", choices=("heldout", "all"), default="heldout",
        help="cells whose latent is scored with --labels-key (default: the held-out cells)",
    )
    tune.add_argument(
        "--journal", type=Path, metavar="PATH",
        help="JSON-lines log of finished trials; running again with the same journal resumes",
    )
    tune.add_argument(
        "--space", type=Path, metavar="SPACE.json",
        help='search space as JSON in the shorthand of sat.tl.autotune, e.g. '
        '{"n_hidden": [64, 128], "lr": ["log", 1e-4, 1e-2], "n_layers": ["int", 1, 3], '
        '"dispersion": "gene"}: a list is a choice, ["log"|"int"|"uniform", low, high] a '
        'range, ["choice", [...]] a choice, a bare value fixed (default: the scVI space)',
    )
    tune.add_argument(
        "--save-dir", type=Path, metavar="DIR",
        help="folder to save the best model in (new, empty, or holding a saved model); "
        "load it with sat.Model.load(DIR) to embed or score other cells",
    )
    tune.add_argument(
        "--train-size", type=_train_size, default=0.75, metavar="F",
        help="share of the cells the models train on (default 0.75); the rest, apart from "
        "--test-size, is held out for the loss",
    )
    tune.add_argument(
        "--test-size", type=_test_size, default=0.0, metavar="F",
        help="share of the cells kept untouched for a final test of the best model "
        "(default 0: none)",
    )
    tune.add_argument(
        "--key-added", default=KEY, metavar="KEY",
        help="write the results to uns[KEY] and the latent to obsm['X_KEY'] (default: autotune); "
        "another key adds this search beside an earlier one when the input is that file (tune out.h5ad "
        "-o out.h5ad --key-added second); an -o whose other searches the result would replace is refused",
    )
    tune.add_argument(
        "--no-default", action="store_true",
        help="do not run scVI's default configuration as the first trial (it is the reference "
        "the gain is measured against)",
    )
    tune.add_argument(
        "--shared-input", action="store_true",
        help="with --scheduler: the Dask workers read IN.h5ad themselves (it must be on "
        "storage they share) instead of receiving the counts from this process",
    )
    _add_common(tune)
    tune.set_defaults(max_evals=100)

    demo = commands.add_parser(
        "demo",
        help="a short real search on 700 PBMC cells (Scanpy's pbmc68k_reduced counts)",
        description="Run a short real search on the counts behind scanpy's pbmc68k_reduced "
        "(700 cells x 765 genes, offline) and print the best configuration and its gain "
        "over the default configuration.",
    )
    demo.add_argument(
        "-o", "--output", type=Path, metavar="OUT.h5ad", help="also write the result there",
    )
    _add_common(demo)
    demo.set_defaults(max_evals=12, max_epochs=40)
    return parser
