"""``--space FILE.json``: a search space written as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_SHORTHAND_TUPLES = ("log", "int", "uniform")


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
