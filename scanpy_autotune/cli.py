"""The ``scanpy-autotune`` console command.

``scanpy-autotune tune IN.h5ad -o OUT.h5ad [options]`` runs
:func:`scanpy_autotune.tl.autotune` on a file and writes the result (with
``uns["autotune"]`` and ``obsm["X_autotune"]``) and, with ``--plots DIR``,
every :mod:`scanpy_autotune.pl` figure as PNG. ``scanpy-autotune demo`` runs a
short real search on the 700 PBMC cells that ship with Scanpy and prints the
best configuration and its gain over the default one.

Bad input ends the command with one line on stderr
(``scanpy-autotune: error: ...``) and exit code 2; ``--verbose`` adds the
traceback. Ctrl-C ends it with exit code 130, after writing the trials that
finished (beside ``-o`` when it holds an earlier run's finished search, which
is kept). Unlike the library, this module prints (the results, to stdout).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from ._errors import BackendFailed, JournalLockedError, JournalWriteError
from ._paths import check_model_dir, check_output_dir, check_output_file, replace_file
from ._record import gain_over_default
from ._results import NoTrialSucceededError
from ._signals import interrupts_held
from ._stop_reason import ended_on_its_own
from ._validation import check_int

logger = logging.getLogger("scanpy_autotune")

PROG = "scanpy-autotune"
KEY = "autotune"
EXIT_NO_RESULT = 1  # the search ran, but no trial succeeded
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process it ended
PLOTS = ("trial_history", "sensitivity", "optimization_history", "param_importance", "pareto")
_SHORTHAND_TUPLES = ("log", "int", "uniform")


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line too."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{PROG}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------


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
        help="trials run at once; default one per GPU slot, or one per CPU core "
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
        help="run the trials on a Dask cluster (pip install scanpy-autotune[dask]) through "
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
        "from min(25, max-epochs/4) epochs; none below 20 epochs or 30 trials)",
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
        "param_importance, and pareto with --labels-key) as PNG into DIR",
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
    from . import __version__

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
        "of its latent (pip install scanpy-autotune[scib])",
    )
    tune.add_argument(
        "--objective", choices=("nll", "integration"), default="nll",
        help="what the search optimises: the held-out -log p(x) (nll, default) or the scIB Total "
        "(integration; needs --labels-key and --batch-key)",
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
        "another key keeps an earlier search in the same file",
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
    tune.set_defaults(handler=_tune, max_evals=100)

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
    demo.set_defaults(handler=_demo, max_evals=12, max_epochs=40)
    return parser


# ---------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------


def space_from_json(spec: Any) -> dict[str, Any]:
    """Turn a space read from JSON into the shorthand of :func:`~scanpy_autotune.tl.autotune`.

    JSON has no tuples: ``["log", 1e-4, 1e-2]`` (also ``"int"``, ``"uniform"``)
    and ``["choice", [...]]`` become tuples, other lists stay choices.

    Parameters
    ----------
    spec
        The parsed JSON.

    Returns
    -------
    dict
        The space.

    Raises
    ------
    ValueError
        When ``spec`` is not an object.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"the space must be a JSON object of hyperparameters, got {type(spec).__name__}")
    space: dict[str, Any] = {}
    for name, value in spec.items():
        if isinstance(value, list) and value and value[0] in _SHORTHAND_TUPLES:
            if len(value) != 3:
                raise ValueError(
                    f"the space's {name!r} is {json.dumps(value)}: write "
                    f'["{value[0]}", low, high] (a range) or a list of values without "{value[0]}" first'
                )
            value = tuple(value)
        elif isinstance(value, list) and value and value[0] == "choice":
            if len(value) != 2 or not isinstance(value[1], list):
                raise ValueError(
                    f'the space\'s {name!r} is {json.dumps(value)}: write ["choice", [value, ...]]'
                )
            value = ("choice", value[1])
        space[name] = value
    return space


def _read_space(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"--space {path}: no such file")
    try:
        spec = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"--space {path}: not valid JSON ({err})") from None
    return space_from_json(spec)


def _read_h5ad(path: Path):
    import anndata as ad

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not an .h5ad file")
    try:
        return ad.read_h5ad(path)
    except Exception as err:  # h5py and anndata raise many kinds for a file that is not .h5ad
        raise ValueError(f"cannot read {path} as an .h5ad file: {err}") from None




# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def write_plots(adata: Any, directory: str | Path, key: str = KEY) -> list[Path]:
    """Write every :mod:`scanpy_autotune.pl` figure of ``adata.uns[key]`` as PNG.

    ``pareto`` is drawn for a search with ``--labels-key`` only. A figure that
    cannot be drawn (``param_importance`` needs at least five successful
    trials) is skipped with a warning.

    Parameters
    ----------
    adata
        An AnnData after :func:`scanpy_autotune.tl.autotune`.
    directory
        Created if needed.
    key
        The results' key in ``adata.uns``.

    Returns
    -------
    list of Path
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import pl

    folder = Path(directory).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    scored = "total" in adata.uns[key]["trials"]
    for name in PLOTS:
        if name == "pareto" and not scored:
            continue  # drawn only for a search with --labels-key, as documented
        path = folder / f"{name}.png"
        try:
            getattr(pl, name)(adata, key=key, show=False, save=str(path))
        except (ValueError, ImportError) as err:
            logger.warning("skipped the %s plot: %s", name, err)
            continue
        finally:
            plt.close("all")
        written.append(path)
    return written


def _summary(adata: Any, key: str = KEY) -> str:
    """The best configuration and its gain over the default, as text."""
    uns = adata.uns[key]
    trials = uns["trials"]
    best, default = uns["best"], uns.get("default")
    counts = trials["status"].value_counts()
    lines = [
        f"{len(trials)} trials: " + ", ".join(f"{int(counts.get(s, 0))} {s}" for s in ("ok", "pruned", "fail"))
    ]
    if uns["params"].get("stop_reason"):
        lines.append(f"the search ended with {uns['params']['stop_reason']}")
    lines.append(f"best configuration (trial {int(best['trial_id'])}):")
    params = dict(best["params"])
    width = max(len(name) for name in params) if params else 0
    lines += [f"  {name:<{width}}  {_format_value(value)}" for name, value in sorted(params.items())]
    loss = float(best["loss"])
    if "total" in trials.columns:
        lines += _score_lines(trials, int(best["trial_id"]), None if default is None else int(default["trial_id"]))
    elif default is not None and math.isfinite(float(default["loss"])):
        reference = float(default["loss"])
        gain = gain_over_default(loss, reference)
        lines.append(
            f"held-out -log p(x) per cell: {loss:.3f} (default configuration {reference:.3f}); "
            f"gain over the default: {gain:.2f}%"
        )
    else:
        lines.append(f"held-out -log p(x) per cell: {loss:.3f} (the default configuration was not evaluated)")
    return "\n".join(lines)


def _score_lines(trials: Any, best: int, default: int | None) -> list[str]:
    """The integration scores and the held-out likelihood of the best and the default trial."""
    columns = ("total", "bio_conservation", "batch_correction", "marginal_nll")
    rows = trials.set_index("trial_id")
    lines = [f"  {'':<8}  " + "  ".join(f"{c:>16}" for c in columns)]
    for name, trial in (("best", best), ("default", default)):
        if trial is not None and trial in rows.index:
            lines.append(f"  {name:<8}  " + "  ".join(f"{float(rows.at[trial, c]):>16.4f}" for c in columns))
    return ["integration scores (higher is better) and held-out -log p(x) (lower is better):", *lines]


def _write_h5ad(adata: Any, path: Path) -> None:
    """Write the result all at once: a temporary file beside ``path``, renamed when complete."""
    replace_file(path, lambda temporary: adata.write_h5ad(temporary))


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def _search_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        max_evals=args.max_evals,
        max_epochs=args.max_epochs,
        n_workers=args.workers,
        gpus=args.gpus,
        trials_per_gpu=args.trials_per_gpu,
        seed=args.seed,
        timeout=args.timeout,
        n_mc=args.n_mc,
        pruner=None if args.pruner == "none" else args.pruner,
        patience=args.patience,
        startup=None if args.startup == "none" else args.startup,
        progress=not args.quiet,
    )
    if args.scheduler:
        kwargs.update(backend="dask", scheduler=args.scheduler)
    return kwargs


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch system's time limit), handled as Ctrl-C is: the finished trials are written."""

    #: What the search records as the reason it ended (``uns[key]["params"]["stop_reason"]``).
    reason = "terminated (SIGTERM)"


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signum}")


def _how_stopped(stop: KeyboardInterrupt) -> tuple[str, int]:
    """What a stop is called on stderr, and the exit code it ends with."""
    if isinstance(stop, Terminated):
        return stop.reason, EXIT_TERMINATED
    return "interrupted", EXIT_INTERRUPTED


def _run(adata: Any, output: Path | None, plots: Path | None, **kwargs: Any) -> int:
    """Search, then write the output and the plots; on Ctrl-C or SIGTERM write what finished."""
    from . import tl

    key = kwargs.get("key_added", KEY)
    try:
        tl.autotune(adata, **kwargs)
    except (KeyboardInterrupt, JournalWriteError, BackendFailed) as stop:
        if isinstance(stop, JournalWriteError):
            how, code = f"error: {stop.strerror}", EXIT_BAD_INPUT
        elif isinstance(stop, BackendFailed):
            how, code = f"error: {stop.__cause__.__class__.__name__}: {stop.__cause__}", EXIT_BAD_INPUT
        else:
            how, code = _how_stopped(stop)
        trials = adata.uns.get(key, {}).get("trials")
        if output is not None and trials is not None and len(trials):
            target = _cut_short_output(output, key)
            _write_h5ad(adata, target)
            kept = "" if target == output else f" (beside the finished search kept in {output})"
            print(f"{PROG}: {how}; wrote {len(trials)} finished trial(s) to {target}{kept}", file=sys.stderr)
        elif trials is not None and len(trials):
            print(f"{PROG}: {how}; {len(trials)} trial(s) had finished", file=sys.stderr)
        else:
            print(f"{PROG}: {how} before any trial succeeded; nothing written", file=sys.stderr)
        return code
    if output is not None:
        with interrupts_held():  # the finished search is written whole; a Ctrl-C now comes after it
            _write_h5ad(adata, output)
    print(_summary(adata, key))
    if output is not None:
        print(f"wrote {output}")
    if kwargs.get("save_dir") is not None and f"X_{key}" in adata.obsm:
        print(f"saved the best model to {kwargs['save_dir']} (sat.Model.load to use it)")
    if plots is not None:
        written = write_plots(adata, plots, key)
        print(f"wrote {len(written)} plot(s) to {plots}")
    return 0


def _cut_short_output(output: Path, key: str = KEY) -> Path:
    """Where a search cut short writes its trials: ``-o``, unless it holds a finished search.

    A finished search there (an earlier run's result) is never replaced by a
    part of another: the trials go to ``<name>.interrupted.h5ad`` beside it.
    """
    if output.exists() and _holds_finished_search(output, key):
        return output.with_name(f"{output.stem}.interrupted{output.suffix}")
    return output


def _holds_finished_search(path: Path, key: str = KEY) -> bool:
    """Whether the ``.h5ad`` at ``path`` holds, under ``uns[key]``, a search that ended on its own."""
    import h5py

    try:
        with h5py.File(path, "r") as file:
            reason = file[f"uns/{key}/params/stop_reason"][()]
    except (OSError, KeyError, TypeError):  # not an .h5ad, or no search result in it
        return False
    return ended_on_its_own(reason.decode() if isinstance(reason, bytes) else str(reason))


def _check_outputs(args: argparse.Namespace) -> Path | None:
    """Check ``-o`` and ``--plots`` before anything runs; returns ``-o``."""
    if args.plots is not None:
        check_output_dir(args.plots, "--plots")
    if args.output is None:
        return None
    output = check_output_file(args.output, "-o")
    if output.suffix != ".h5ad":
        raise ValueError(f"-o {output}: the result is written as an .h5ad file; give it the suffix .h5ad")
    return output


def _tune(args: argparse.Namespace) -> int:
    space = _read_space(args.space) if args.space is not None else None
    if args.shared_input and not args.scheduler:
        raise ValueError("--shared-input needs --scheduler")
    if not args.input.exists():
        raise FileNotFoundError(f"{args.input}: no such file")
    # Every output is checked before the search (nothing is created yet): an
    # unwritable -o must not be found after the last trial.
    output = _check_outputs(args)
    if args.save_dir is not None:
        check_model_dir(args.save_dir, "--save-dir")
    if args.journal is not None:
        check_output_file(args.journal, "--journal")
        if args.journal.resolve() == output.resolve():
            raise ValueError(f"-o and --journal are the same file ({output}); the result would replace the journal")
    adata = _read_h5ad(args.input)
    kwargs = _search_kwargs(args)
    if args.shared_input:
        kwargs["data_path"] = args.input
    if args.journal is not None:
        kwargs["journal"] = args.journal
    if args.labels_key is not None:
        kwargs.update(labels_key=args.labels_key, score_cells=args.score_cells)
    if args.objective == "integration":
        kwargs["objective"] = "integration"
    if args.save_dir is not None:
        kwargs["save_dir"] = args.save_dir
    kwargs.update(
        train_size=args.train_size, test_size=args.test_size, key_added=args.key_added,
        include_default=not args.no_default,
    )
    return _run(
        adata, output, args.plots, layer=args.layer, batch_key=args.batch_key, space=space, **kwargs
    )


def _demo(args: argparse.Namespace) -> int:
    from . import datasets

    output = _check_outputs(args)
    adata = datasets.pbmc68k_counts()
    print(
        f"{PROG} demo: {args.max_evals} trials on pbmc68k_counts ({adata.n_obs} cells x "
        f"{adata.n_vars} genes), at most {args.max_epochs} epochs each",
        flush=True,
    )
    return _run(adata, output, args.plots, **_search_kwargs(args))


def _configure_logging(args: argparse.Namespace) -> Any:
    """Log the package to stderr at the level of ``--quiet``/``--verbose``; returns an undo."""
    level = logging.ERROR if args.quiet else logging.INFO if args.verbose else logging.WARNING
    package = logging.getLogger("scanpy_autotune")
    warnings_logger = logging.getLogger("py.warnings")
    saved = (package.level, package.propagate, warnings_logger.propagate)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    package.addHandler(handler)
    package.setLevel(level)
    package.propagate = False
    logging.captureWarnings(True)
    quiet_warnings = logging.NullHandler()
    if not args.verbose:  # library warnings (anndata, torch) would break the one-line errors
        warnings_logger.addHandler(quiet_warnings)
        warnings_logger.propagate = False

    def undo() -> None:
        package.removeHandler(handler)
        warnings_logger.removeHandler(quiet_warnings)
        package.level, package.propagate, warnings_logger.propagate = saved
        logging.captureWarnings(False)

    return undo


# The library's argument names in its messages, and the options that set them here.
_OPTIONS = {
    "layer": "--layer", "batch_key": "--batch-key", "labels_key": "--labels-key",
    "objective": "--objective", "score_cells": "--score-cells", "max_evals": "--max-evals",
    "max_epochs": "--max-epochs", "n_workers": "--workers", "gpus": "--gpus",
    "trials_per_gpu": "--trials-per-gpu", "seed": "--seed", "timeout": "--timeout",
    "n_mc": "--n-mc", "pruner": "--pruner", "patience": "--patience", "startup": "--startup",
    "journal": "--journal", "space": "--space", "scheduler": "--scheduler", "save_dir": "--save-dir",
    "train_size": "--train-size", "test_size": "--test-size", "key_added": "--key-added",
}


def _one_line(error: BaseException | str) -> str:
    """The error on one line, in the command line's words (``--layer counts``, not ``layer='counts'``)."""
    text = " ".join(str(error).split()) or type(error).__name__
    for name, option in _OPTIONS.items():
        text = re.sub(rf"(?<![\w.\['\"]){name}=None\b", f"no {option}", text)
        text = re.sub(rf"(?<![\w.\['\"]){name}=(?=\s)", option, text)
        text = re.sub(rf"(?<![\w.\['\"]){name}=", f"{option} ", text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``scanpy-autotune`` with ``argv`` (default: the command line).

    Parameters
    ----------
    argv
        Arguments after the program name.

    Returns
    -------
    int
        The exit code: 0, 2 for bad input, 130 after Ctrl-C, 143 after SIGTERM
        (both write the trials that finished to ``-o`` first).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, usage errors
        return int(done.code or 0)
    undo_logging = _configure_logging(args)
    # A batch system's time limit or `kill` sends SIGTERM: end as after Ctrl-C, not with the results lost.
    main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return args.handler(args)
    except KeyboardInterrupt as stop:
        how, code = _how_stopped(stop)
        print(f"{PROG}: {how}", file=sys.stderr)
        return code
    except NoTrialSucceededError as error:
        if args.verbose:
            traceback.print_exc()
        kept = " (every trial's error is in --journal)" if getattr(args, "journal", None) else ""
        print(f"{PROG}: error: {_one_line(error.summary)} Nothing was written{kept}.", file=sys.stderr)
        return EXIT_NO_RESULT
    except (ValueError, OSError, ImportError, JournalLockedError) as error:  # FileNotFoundError is an OSError
        if args.verbose:
            traceback.print_exc()
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous_sigterm is None else previous_sigterm)
        undo_logging()


if __name__ == "__main__":
    sys.exit(main())
