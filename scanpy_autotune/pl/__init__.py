"""``sat.pl``: plots of a search, read only from ``adata.uns[key]`` (Scanpy conventions).

Every function takes ``key="autotune"``, ``ax=None``, ``show=None`` and
``save=None``. With ``show=False`` they return the Axes they drew (for
:func:`sensitivity`, an array of Axes when it draws several panels); with
``show=True`` they call :func:`matplotlib.pyplot.show` and return ``None``;
``show=None`` follows Scanpy's ``sc.settings.autoshow``. ``save=True``
writes ``figures/<plot name>.png``; a string with a directory
(``"out/hist.png"``) is used as the path, a bare string (``"_cortex"``) is
appended to the plot name in ``figures/`` (Scanpy's ``sc.settings.figdir``
when Scanpy is imported). Files are PNG unless the path ends in another format
matplotlib writes.

The computation behind :func:`param_importance` is
:func:`scanpy_autotune.tl.importances`. This package imports neither torch,
nor the model, nor the search.
"""

from .._logging import follow_scanpy_verbosity as _follow_scanpy_verbosity
from ._optimization_history import optimization_history
from ._param_importance import param_importance
from ._pareto import pareto
from ._sensitivity import sensitivity
from ._trial_history import trial_history

__all__ = ["trial_history", "sensitivity", "optimization_history", "param_importance", "pareto"]

_follow_scanpy_verbosity()  # the package's messages follow sc.settings.verbosity
