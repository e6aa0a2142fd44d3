"""Search spaces: the scVI default space, user spaces, validation, encoding.

A space maps hyperparameter names to what the search may try. It can be given
as hyperopt expressions (``hp.choice``, ``hp.uniform``, ...) or in a plain-dict
shorthand:

========================  ==========================================
value                     meaning
========================  ==========================================
``[a, b, c]``             one of the listed values (categorical)
``("choice", [a, b])``    the same
``("uniform", lo, hi)``   a float, uniform in ``[lo, hi]``
``("log", lo, hi)``       log-uniform in ``[lo, hi]`` (integers for
                          integer hyperparameters)
``("int", lo, hi)``       an integer in ``[lo, hi]``, both included,
                          ordinal (TPE models it as a number)
a scalar, string, bool    fixed: not searched
========================  ==========================================

Every space is parsed into one :class:`Dimension` per searched name, and the
hyperopt expression handed to TPE is rebuilt from it with the dictionary key as
its label, so decoding and encoding never need to evaluate a pyll graph.

Nothing here imports torch or the model: the valid hyperparameters come in as a
mapping of ``ParamSpec``-like objects (``kind``, ``low``, ``high``, ``choices``,
``check(name, value)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from hyperopt import hp
from hyperopt.pyll import Apply, Literal, scope
from hyperopt.pyll.base import MissingArgument

__all__ = [
    "Dimension",
    "SearchSpace",
    "build_space",
    "default_space",
    "default_space_spec",
    "integration_space",
    "integration_space_spec",
]

_SHORTHAND_KINDS = ("choice", "uniform", "log", "int")
_HP_DISTRIBUTIONS = ("uniform", "loguniform", "quniform", "qloguniform", "randint")
_REL_TOL = 1e-9


class _Spec(Protocol):
    """What the space needs to know about one hyperparameter (``ParamSpec``)."""

    kind: str
    low: float | None
    high: float | None

    def check(self, name: str, value: Any, *, strict: bool = False) -> Any: ...


def default_space_spec() -> dict[str, Any]:
    """The 2019 scVI autotune space in the plain-dict shorthand.

    Returns
    -------
    dict
        ``n_latent`` 5..15 and ``n_layers`` 1..5 as ordinal integers, ``n_hidden``,
        ``dropout_rate``, ``reconstruction_loss`` and ``lr`` as choices.
    """
    return {
        "n_latent": ("int", 5, 15),
        "n_hidden": [64, 128, 256],
        "n_layers": ("int", 1, 5),
        "dropout_rate": [0.1, 0.3, 0.5, 0.7, 0.9],
        "reconstruction_loss": ["zinb", "nb"],
        "lr": [1e-2, 5e-3, 1e-3, 5e-4, 1e-4],
    }


def default_space() -> dict[str, Apply]:
    """The 2019 scVI autotune space as hyperopt expressions.

    Returns
    -------
    dict
        Name to hyperopt expression. ``n_latent`` and ``n_layers`` are
        ``scope.int(hp.quniform(...))`` so that TPE keeps their order; the
        others are ``hp.choice``.
    """
    return _expressions(default_space_spec())


def integration_space_spec() -> dict[str, Any]:
    """The 2019 space with the latent's KL weight searched too, in the shorthand.

    Returns
    -------
    dict
        :func:`default_space_spec` and ``max_kl_weight`` log-uniform in
        ``[1, 100]`` (the weight after scVI's 400-epoch warm-up).
    """
    return {**default_space_spec(), "max_kl_weight": ("log", 1.0, 100.0)}


def integration_space() -> dict[str, Apply]:
    """:func:`integration_space_spec` as hyperopt expressions."""
    return _expressions(integration_space_spec())


def _expressions(spec: Mapping[str, Any]) -> dict[str, Apply]:
    dims = [_parse_shorthand(name, value) for name, value in spec.items()]
    return {dim.name: dim.expression() for dim in dims}


# ---------------------------------------------------------------------------
# One searched dimension
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter.

    Parameters
    ----------
    name
        Hyperparameter name; also the hyperopt label.
    kind
        ``"choice"``, ``"int"`` (ordinal integer, both ends included),
        ``"logint"`` (log-scaled integer), ``"uniform"``, ``"loguniform"``,
        ``"quniform"``, ``"qloguniform"`` or ``"randint"``.
    args
        The distribution's arguments exactly as hyperopt takes them (log-space
        bounds for the log distributions); ``()`` for choices.
    options
        The values of a choice.
    as_int
        Whether the value is cast with ``int`` (``scope.int``).
    """

    name: str
    kind: str
    args: tuple = ()
    options: tuple = ()
    as_int: bool = False

    # -- bounds ------------------------------------------------------------

    def bounds(self) -> tuple[float, float]:
        """Smallest and largest value the dimension can produce (numeric kinds)."""
        kind, a = self.kind, self.args
        if kind in ("int", "logint"):
            lo, hi = float(a[0]), float(a[1])
        elif kind == "uniform":
            lo, hi = a
        elif kind == "loguniform":
            lo, hi = math.exp(a[0]), math.exp(a[1])
        elif kind == "quniform":
            lo, hi = (_qround(a[0], a[2]), _qround(a[1], a[2]))
        elif kind == "qloguniform":
            lo, hi = (_qround(math.exp(a[0]), a[2]), _qround(math.exp(a[1]), a[2]))
        elif kind == "randint":
            lo, hi = (0, a[0] - 1) if len(a) == 1 else (a[0], a[1] - 1)
        else:
            raise TypeError(f"{self.name} is categorical; it has no bounds.")
        if self.as_int:
            lo, hi = math.trunc(lo), math.trunc(hi)
        return float(lo), float(hi)

    def largest(self) -> Any:
        """The largest value the dimension can produce (of a choice: its largest option)."""
        if self.kind == "choice":
            return max(self.options)
        return self.bounds()[1]

    def integral(self) -> bool:
        """Whether every value the dimension produces is an integer."""
        if self.kind in ("int", "logint", "randint") or self.as_int:
            return True
        if self.kind in ("quniform", "qloguniform"):
            return float(self.args[2]).is_integer()
        return False

    # -- hyperopt -------------------------------------------------------------

    def expression(self) -> Apply:
        """The hyperopt expression, labelled with :attr:`name`."""
        name, kind, a = self.name, self.kind, self.args
        if kind == "choice":
            return hp.choice(name, list(self.options))
        if kind == "int":
            return scope.int(hp.quniform(name, a[0] - 0.5, a[1] + 0.5, 1))
        if kind == "logint":
            return scope.int(hp.qloguniform(name, math.log(a[0] - 0.5), math.log(a[1] + 0.5), 1))
        if kind == "randint":
            return hp.randint(name, *a)
        expr = getattr(hp, kind)(name, *a)
        return scope.int(expr) if self.as_int else expr

    # -- values ----------------------------------------------------------------

    def decode(self, raw: Any) -> Any:
        """Turn hyperopt's raw value (a choice index, a number) into the value."""
        if self.kind == "choice":
            return self.options[int(raw)]
        value = float(raw)
        lo, hi = self.bounds()
        if self.kind in ("int", "logint"):
            return int(min(max(round(value), lo), hi))
        if self.as_int:
            return int(min(max(math.trunc(value), lo), hi))
        value = min(max(value, lo), hi)
        return int(value) if self.kind == "randint" else value

    def encode(self, value: Any) -> int | float | None:
        """The raw hyperopt value for ``value``, or ``None`` if it is not in the dimension."""
        if self.kind == "choice":
            for index, option in enumerate(self.options):
                if _same_value(option, value):
                    return index
            return None
        if isinstance(value, (bool, np.bool_, str)) or not isinstance(
            value, (int, float, np.number)
        ):
            return None
        value = float(value)
        lo, hi = self.bounds()
        if not (math.isfinite(value) and _leq(lo, value) and _leq(value, hi)):
            return None
        if self.integral() and not value.is_integer():
            return None
        if self.kind in ("quniform", "qloguniform"):
            q = float(self.args[2])
            if not math.isclose(_qround(value, q), value, rel_tol=_REL_TOL, abs_tol=1e-12):
                return None
        if self.kind == "randint":
            return int(value)
        return value

    # -- description -------------------------------------------------------------

    def scale(self) -> str:
        """``"categorical"``, ``"numeric"`` or ``"log"``."""
        if self.kind == "choice":
            return "categorical"
        if self.kind in ("logint", "loguniform", "qloguniform"):
            return "log"
        return "numeric"

    def to_text(self) -> str:
        """One deterministic line describing the dimension."""
        if self.kind == "choice":
            return f"{self.name}: choice({list(self.options)!r})"
        if self.kind in ("int", "logint"):
            return f"{self.name}: {self.kind}({self.args[0]}, {self.args[1]})"
        lo, hi = self.bounds()
        desc = f"{self.name}: {self.kind}({', '.join(_fmt(x) for x in self.args)})"
        desc += f" in [{_fmt(lo)}, {_fmt(hi)}]"
        return desc + (" as int" if self.as_int else "")


def _qround(x: float, q: float) -> float:
    return float(np.round(x / q) * q)


def _leq(a: float, b: float) -> bool:
    return a <= b or math.isclose(a, b, rel_tol=_REL_TOL)


def _fmt(x: float) -> str:
    return f"{float(x):.12g}"


def _same_value(option: Any, value: Any) -> bool:
    """Equality that keeps bools, numbers and strings apart and tolerates float noise."""
    value = _native(value)
    if isinstance(option, bool) or isinstance(value, bool):
        return type(option) is type(value) and option == value
    if isinstance(option, (int, float)) and isinstance(value, (int, float)):
        return math.isclose(option, value, rel_tol=_REL_TOL, abs_tol=0.0) or option == value
    return type(option) is type(value) and option == value


def _clip_to_spec(value: Any, spec: _Spec) -> Any:
    """Clip a number to the spec's bounds (log bounds can miss them by rounding)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if spec.low is not None and value < spec.low:
        value = type(value)(spec.low)
    if spec.high is not None and value > spec.high:
        value = type(value)(spec.high)
    return value


def _native(value: Any) -> Any:
    """Numpy scalars to Python scalars; everything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


def _parse_shorthand(name: str, value: Any) -> Dimension:
    """Parse a list or a ``(kind, ...)`` tuple; raise ``ValueError`` when malformed."""
    if isinstance(value, list):
        if len(value) == 3 and isinstance(value[0], str) and value[0] in _SHORTHAND_KINDS:
            raise ValueError(
                f"{name}={value!r} is a list, which is a choice; a range is a tuple in Python: "
                f"{name}={tuple(value)!r} (JSON, as for the command line's --space, writes it as a list)."
            )
        return _choice(name, value)
    if not (isinstance(value, tuple) and value and value[0] in _SHORTHAND_KINDS):
        raise ValueError(
            f"{name}={value!r} is not understood; use a list of values, a fixed value, a "
            f"hyperopt expression or a tuple whose first item is one of {list(_SHORTHAND_KINDS)}."
        )
    kind = value[0]
    if kind == "choice":
        if len(value) != 2 or not isinstance(value[1], (list, tuple)):
            raise ValueError(f"{name}: write ('choice', [values...]), got {value!r}.")
        return _choice(name, list(value[1]))
    if len(value) != 3:
        raise ValueError(f"{name}: write ({kind!r}, low, high), got {value!r}.")
    lo, hi = (_number(name, v) for v in value[1:])
    if not lo < hi:
        raise ValueError(f"{name}: low must be smaller than high, got {value!r}.")
    if kind == "uniform":
        return Dimension(name, "uniform", (lo, hi))
    if kind == "int":
        if not (isinstance(lo, int) and isinstance(hi, int)):
            # 1.0 is refused as a fixed value or choice of an integer, so as a bound too.
            raise ValueError(
                f"{name}: ('int', low, high) needs integer bounds (a float is never taken for "
                f"an integer), got {value!r}."
            )
        return Dimension(name, "int", (lo, hi))
    if lo <= 0:
        raise ValueError(f"{name}: ('log', low, high) needs low > 0, got {value!r}.")
    return Dimension(name, "loguniform", (math.log(lo), math.log(hi)))


def _number(name: str, value: Any) -> float | int:
    value = _native(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: bounds must be finite numbers, got {value!r}.")
    return value


def _choice(name: str, options: list) -> Dimension:
    if not options:
        raise ValueError(f"{name}: the list of choices is empty.")
    options = [_native(o) for o in options]
    for i, option in enumerate(options):
        if isinstance(option, (Apply, list, tuple, dict)):
            raise ValueError(
                f"{name}: choice option {i} is {type(option).__name__}; nested or conditional "
                "spaces are not supported, list plain values."
            )
        if any(_same_value(other, option) for other in options[:i]):
            raise ValueError(f"{name}: the choice {option!r} is listed twice.")
    return Dimension(name, "choice", options=tuple(options))


def _literal(name: str, node: Any) -> Any:
    if not isinstance(node, Literal):
        raise ValueError(f"{name}: hyperopt arguments must be constants, got {node}.")
    return _native(node.obj)


def _parse_hyperopt(name: str, expr: Apply) -> Dimension:
    """Parse a hyperopt expression for one hyperparameter into a :class:`Dimension`."""
    as_int = False
    node = expr
    while node.name in ("int", "float"):
        as_int = as_int or node.name == "int"
        node = node.pos_args[0]
    if node.name == "switch":
        if as_int:
            raise ValueError(f"{name}: scope.int around hp.choice is not supported; list integers.")
        index = node.pos_args[0]
        if index.name != "hyperopt_param" or index.arg["obj"].name != "randint":
            raise ValueError(
                f"{name}: only hp.choice is supported among switches (not hp.pchoice)."
            )
        return _choice(name, [_option(name, opt) for opt in node.pos_args[1:]])
    if node.name != "hyperopt_param":
        raise ValueError(
            f"{name}: the expression {node.name}(...) is not supported; use hp.choice, hp.uniform, "
            "hp.loguniform, hp.quniform, hp.qloguniform, hp.randint or scope.int of these, "
            "or the shorthand ('int', low, high)."
        )
    dist = node.arg["obj"]
    if dist.name not in _HP_DISTRIBUTIONS:
        raise ValueError(
            f"{name}: hp.{dist.name} is not supported (bounded distributions only: "
            f"{list(_HP_DISTRIBUTIONS)})."
        )
    arg_names = {"randint": ("low", "high")}.get(dist.name, ("low", "high", "q"))
    args = tuple(
        _literal(name, dist.arg[a])
        for a in arg_names
        if a in dist.arg and dist.arg[a] is not MissingArgument
    )
    return _as_ordinal_int(Dimension(name, dist.name, args, as_int=as_int))


def _as_ordinal_int(dim: Dimension) -> Dimension:
    """Recognise the expressions that :meth:`Dimension.expression` writes for ``int``/``logint``.

    ``quniform(lo - 0.5, hi + 0.5, 1)`` (and its log twin) gives every integer of
    ``[lo, hi]`` the same mass; read back, it is the ordinal integer ``[lo, hi]``.
    """
    if dim.kind not in ("quniform", "qloguniform") or len(dim.args) != 3 or dim.args[2] != 1:
        return dim
    lo, hi = dim.args[:2]
    if dim.kind == "qloguniform":
        lo, hi = math.exp(lo), math.exp(hi)
    lo, hi = lo + 0.5, hi - 0.5
    if not (_near_integer(lo) and _near_integer(hi) and round(lo) < round(hi)):
        return dim
    kind = "int" if dim.kind == "quniform" else "logint"
    return Dimension(dim.name, kind, (int(round(lo)), int(round(hi))))


def _near_integer(x: float) -> bool:
    return math.isclose(x, round(x), rel_tol=_REL_TOL, abs_tol=1e-9)


def _option(name: str, node: Any) -> Any:
    if not isinstance(node, Literal) or isinstance(node.obj, (list, tuple, dict)):
        raise ValueError(
            f"{name}: hp.choice options must be plain values; nested or conditional spaces "
            "are not supported."
        )
    return node.obj


# ---------------------------------------------------------------------------
# Validation against the model's hyperparameters
# ---------------------------------------------------------------------------


def _validate(dim: Dimension, spec: _Spec) -> Dimension:
    """Check ``dim`` against ``spec``; return it with choice values converted."""
    name = dim.name
    if dim.kind == "choice":
        return Dimension(name, "choice", options=tuple(spec.check(name, o, strict=True) for o in dim.options))
    if spec.kind in ("choice", "bool"):
        raise ValueError(
            f"{name} is {'a bool' if spec.kind == 'bool' else 'categorical'}; give its values as "
            "a list instead of a numeric range."
        )
    if spec.kind == "int" and not dim.integral():
        if dim.kind == "loguniform" and not dim.as_int:
            lo, hi = (math.exp(a) for a in dim.args)
            if float(round(lo, 9)).is_integer() and float(round(hi, 9)).is_integer():
                dim = Dimension(name, "logint", (int(round(lo)), int(round(hi))))
        if not dim.integral():
            raise ValueError(
                f"{name} is an integer; use ('int', low, high), ('log', low, high) with integer "
                "bounds, a list, or scope.int(...)."
            )
    lo, hi = dim.bounds()
    if not lo < hi:
        raise ValueError(f"{name}: the range [{_fmt(lo)}, {_fmt(hi)}] holds a single value.")
    too_low = spec.low is not None and not _leq(spec.low, lo)
    too_high = spec.high is not None and not _leq(hi, spec.high)
    if too_low or too_high:
        raise ValueError(
            f"{name}: the range [{_fmt(lo)}, {_fmt(hi)}] is outside the valid range "
            f"[{spec.low}, {spec.high}]."
        )
    return dim


# ---------------------------------------------------------------------------
# The space
# ---------------------------------------------------------------------------


class SearchSpace:
    """A validated search space.

    Build it with :func:`build_space`.

    Parameters
    ----------
    dimensions
        The searched hyperparameters.
    fixed
        Hyperparameters held at one value.
    valid
        The valid hyperparameters (name to ``ParamSpec``).
    """

    def __init__(
        self, dimensions: list[Dimension], fixed: Mapping[str, Any], valid: Mapping[str, _Spec]
    ) -> None:
        self._dims = {d.name: d for d in sorted(dimensions, key=lambda d: d.name)}
        self._fixed = {k: fixed[k] for k in sorted(fixed)}
        self._valid = valid

    @property
    def names(self) -> list[str]:
        """Searched hyperparameter names, sorted."""
        return list(self._dims)

    @property
    def dimensions(self) -> dict[str, Dimension]:
        """Searched hyperparameters by name."""
        return dict(self._dims)

    @property
    def fixed(self) -> dict[str, Any]:
        """Hyperparameters held at one value (a copy)."""
        return dict(self._fixed)

    @property
    def hyperopt_space(self) -> dict[str, Apply]:
        """The space as a dict of hyperopt expressions, labelled by name."""
        return {name: dim.expression() for name, dim in self._dims.items()}

    def decode(self, vals: Mapping[str, Any]) -> dict[str, Any]:
        """Turn hyperopt values into hyperparameter values.

        Parameters
        ----------
        vals
            Name to raw value (choice index or number), or hyperopt's
            ``misc["vals"]`` form (name to a one-element list).

        Returns
        -------
        dict
            Searched and fixed hyperparameters as plain Python values
            (``int``, ``float``, ``str``, ``bool``).
        """
        params = {}
        for name, dim in self._dims.items():
            if name not in vals:
                raise KeyError(f"No value for {name!r} in {dict(vals)!r}.")
            raw = vals[name]
            if isinstance(raw, (list, tuple, np.ndarray)):
                if len(raw) != 1:
                    raise ValueError(f"{name}: expected one value, got {raw!r}.")
                raw = raw[0]
            value = _clip_to_spec(dim.decode(raw), self._valid[name])
            params[name] = _native(self._valid[name].check(name, value))
        params.update(self._fixed)
        return params

    def encode(self, params: Mapping[str, Any]) -> dict[str, int | float] | None:
        """Turn hyperparameter values into hyperopt values (the reverse of :meth:`decode`).

        Parameters
        ----------
        params
            Name to value. Names outside the space are ignored.

        Returns
        -------
        dict or None
            Name to raw value (choice index or number), or ``None`` when a
            searched value is missing or not in the space, or a fixed value differs.
        """
        for name, value in self._fixed.items():
            if name in params and not _same_value(value, params[name]):
                return None
        vals = {}
        for name, dim in self._dims.items():
            if name not in params:
                return None
            raw = dim.encode(params[name])
            if raw is None:
                return None
            vals[name] = raw
        return vals

    def searched_kinds(self) -> dict[str, str]:
        """Name to ``"categorical"``, ``"numeric"`` or ``"log"`` for each searched name."""
        return {name: dim.scale() for name, dim in self._dims.items()}

    def to_text(self) -> str:
        """A deterministic, readable description (equal spaces give equal text)."""
        lines = [dim.to_text() for dim in self._dims.values()]
        lines += [f"{name} = {value!r} (fixed)" for name, value in self._fixed.items()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return "SearchSpace(\n  " + self.to_text().replace("\n", "\n  ") + "\n)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_text() == other.to_text()

    __hash__ = None  # type: ignore[assignment]


def build_space(space: Mapping[str, Any] | None, valid: Mapping[str, _Spec]) -> SearchSpace:
    """Validate a user space and build a :class:`SearchSpace`.

    Parameters
    ----------
    space
        ``None`` for :func:`default_space`, or a dict from hyperparameter name
        to a hyperopt expression, a shorthand (see the module docstring) or a
        fixed value. The dict key is the label; a hyperopt expression's own
        label is not used.
    valid
        The valid hyperparameters, name to ``ParamSpec`` (``HYPERPARAMETERS``).

    Returns
    -------
    SearchSpace

    Raises
    ------
    ValueError
        On an unknown name (the message lists the valid ones), a malformed or
        invalid entry (the message names it), or a space with nothing to search.
    """
    if space is None:
        space = default_space_spec()
    if not isinstance(space, Mapping):
        raise ValueError(f"space must be a dict or None, got {type(space).__name__}.")
    unknown = sorted(str(k) for k in space if k not in valid)
    if unknown:
        raise ValueError(
            f"Unknown hyperparameter(s) {unknown} in the space; valid names are {sorted(valid)}."
        )
    dims, fixed = [], {}
    for name, value in space.items():
        value = _native(value)
        if isinstance(value, Apply):
            dims.append(_validate(_parse_hyperopt(name, value), valid[name]))
        elif isinstance(value, (list, tuple)):
            dims.append(_validate(_parse_shorthand(name, value), valid[name]))
        else:
            fixed[name] = _native(valid[name].check(name, value, strict=True))
    if not dims:
        raise ValueError(
            "The search space is empty: nothing to search. Give at least one hyperparameter a "
            f"list of values or a range; valid names are {sorted(valid)}."
        )
    return SearchSpace(dims, fixed, valid)
