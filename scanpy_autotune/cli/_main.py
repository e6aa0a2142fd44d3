"""``main``: run a command, write what finished on Ctrl-C or SIGTERM, turn errors into exit codes."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._errors import BackendFailed, BestModelFailed, JournalLockedError, JournalWriteError
from .._paths import check_model_dir, check_output_dir, check_output_file
from .._results import NoTrialSucceededError
from .._signals import interrupts_held
from ._output import (
    _cut_short_output,
    _read_h5ad,
    _summary,
    _write_h5ad,
    check_output_keeps_searches,
    write_plots,
)
from ._parser import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_NO_RESULT,
    EXIT_TERMINATED,
    KEY,
    PROG,
    build_parser,
)
from ._space import _read_space

logger = logging.getLogger("scanpy_autotune")


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
    from .. import tl

    key = kwargs.get("key_added", KEY)
    try:
        tl.autotune(adata, **kwargs)
    except (KeyboardInterrupt, JournalWriteError, BackendFailed, BestModelFailed) as stop:
        if isinstance(stop, JournalWriteError):
            how, code = f"error: {stop.strerror}", EXIT_BAD_INPUT
        elif isinstance(stop, BackendFailed):
            how, code = f"error: {stop.__cause__.__class__.__name__}: {stop.__cause__}", EXIT_BAD_INPUT
        elif isinstance(stop, BestModelFailed):
            how, code = f"error: {stop}", EXIT_BAD_INPUT
        else:
            how, code = _how_stopped(stop)
        trials = adata.uns.get(key, {}).get("trials")
        if output is not None and trials is not None and len(trials):
            target = _cut_short_output(output, key)
            failed: Exception | None = None
            try:
                with interrupts_held():  # written whole, even when asked again to stop
                    try:
                        _write_h5ad(adata, target)
                    except Exception as error:  # said below, not hidden by a held Ctrl-C
                        failed = error
            except KeyboardInterrupt:  # that second request: it stops now, as it would have
                pass
            if failed is not None:
                raise failed from stop
            kept = "" if target == output else f" (beside the finished search kept in {output})"
            print(f"{PROG}: {how}; wrote {len(trials)} finished trial(s) to {target}{kept}", file=sys.stderr)
        elif trials is not None and len(trials):
            print(f"{PROG}: {how}; {len(trials)} trial(s) had finished", file=sys.stderr)
        else:
            journal = kwargs.get("journal")
            resume = f"; the journal {journal} keeps every finished trial: the same command resumes" if journal else ""
            print(f"{PROG}: {how} before a finished trial was stored; nothing written{resume}", file=sys.stderr)
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
        skipped: dict[str, str] = {}
        written = write_plots(adata, plots, key, skipped=skipped)
        not_drawn = "".join(f"; not {name}: {' '.join(why.split())}" for name, why in skipped.items())
        print(f"wrote {len(written)} plot(s) to {plots}{not_drawn}")
    return 0


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
    check_output_keeps_searches(output, args.input, adata, args.key_added)
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
    from .. import datasets

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
        return {"tune": _tune, "demo": _demo}[args.command](args)
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
    except TimeoutError as error:
        if "before any trial finished" not in str(error):  # a connection's timeout (a Dask scheduler)
            print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        # the search ran, but nothing finished in time: no result, as when every trial failed
        print(
            f"{PROG}: error: --timeout {args.timeout:g} s passed before any trial finished; nothing was "
            "written. Allow a longer --timeout or a smaller --max-epochs.", file=sys.stderr,
        )
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
