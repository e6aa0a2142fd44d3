"""Filling shared parameter descriptions into docstrings, as Scanpy's ``_docs.py`` does.

A docstring names a fragment as a field, ``{doc_layer}``, on a line of its
own at the indentation of the parameter names; :func:`doc_params` fills it in.
Fragments are written without indentation because the docstring is dedented
first. A docstring that uses fragments writes a literal brace as ``{{`` or
``}}``. The plots' fragments are in ``scanpy_autotune.pl._docs``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

_Documented = TypeVar("_Documented", bound=Callable)


def doc_params(**fragments: str) -> Callable[[_Documented], _Documented]:
    """Fill the ``{name}`` fields of the decorated object's docstring with ``fragments``."""

    def decorate(obj: _Documented) -> _Documented:
        if obj.__doc__:  # None under python -OO
            obj.__doc__ = inspect.cleandoc(obj.__doc__).format_map(fragments)
        return obj

    return decorate
