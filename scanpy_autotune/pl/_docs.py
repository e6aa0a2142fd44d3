"""Parameter descriptions shared by the plots' docstrings, as in Scanpy's ``_docs.py``.

A plot's docstring names a fragment as a field, ``{doc_adata_key}``, on a line
of its own at the indentation of the parameter names; :func:`_doc_params`
(``scanpy_autotune._docs.doc_params``) fills it in. Fragments are written
without indentation because the docstring is dedented first. A docstring that
uses fragments writes a literal brace as ``{{`` or ``}}``.
"""

from __future__ import annotations

from .._docs import doc_params

_doc_params = doc_params  # the name the plots import

doc_adata = """\
adata
    An :class:`~anndata.AnnData` after :func:`scanpy_autotune.tl.autotune`."""

doc_key = """\
key
    Where the results are stored in ``adata.uns`` (a ``KeyError`` that says
    to run :func:`scanpy_autotune.tl.autotune` when there are none)."""

doc_adata_key = f"{doc_adata}\n{doc_key}"

doc_ax = """\
ax
    Axes to draw into; a new figure when ``None``."""

doc_show_save = """\
show
    ``True``: call :func:`matplotlib.pyplot.show` and return ``None``;
    ``False``: return the plot's Axes (see Returns); ``None``: Scanpy's
    ``sc.settings.autoshow`` (``True`` unless changed, or without Scanpy
    imported), as Scanpy's own plots do.
save
    ``True`` writes ``figures/<plot name>.png`` (Scanpy's ``sc.settings.figdir``
    when Scanpy is imported); a path with a directory (``"out/hist.png"``) is
    used as it is; a bare string (``"_cortex"``) is appended to the plot name in
    that folder. PNG unless the path ends in another format matplotlib writes."""

doc_show_save_ax = f"{doc_ax}\n{doc_show_save}"

doc_returns_ax = """\
Axes or None
    The Axes when the plot is not shown (``show=False``, or ``show=None``
    with ``sc.settings.autoshow = False``)."""

