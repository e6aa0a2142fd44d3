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
is kept). Unlike the library, this package prints (the results, to stdout).

Its modules: ``_parser`` (the arguments, the name and the exit codes),
``_space`` (``--space`` JSON), ``_output`` (the files, the plots, the summary)
and ``_main`` (running a command).
"""

from ._main import main
from ._output import PLOTS, write_plots
from ._parser import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_NO_RESULT,
    EXIT_TERMINATED,
    KEY,
    PROG,
    build_parser,
    parse_gpus,
)
from ._space import space_from_json

__all__ = [
    "EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "EXIT_NO_RESULT", "EXIT_TERMINATED", "KEY", "PLOTS", "PROG",
    "build_parser", "main", "parse_gpus", "space_from_json", "write_plots",
]
