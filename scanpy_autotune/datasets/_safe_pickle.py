"""Plain data out of a pickle, without executing it.

A pickle is a program for a small stack machine whose ``GLOBAL`` and ``REDUCE``
opcodes import and call any Python callable, so :func:`pickle.load` runs whatever
the file says. :func:`read_plain_pickle` never unpickles: it walks the opcodes with
:func:`pickletools.genops` (which only decodes them) and interprets a small subset
itself, importing and calling nothing that the file names:

- lists, tuples, dicts, strings, bytes, numbers, booleans and ``None``;
- numpy arrays and dtypes, rebuilt from their recorded bytes, shape and type code
  (numeric, boolean, fixed-width string and object dtypes only);
- slices of integers;
- the few pandas classes of the scVI metadata pickle (``DataFrame``,
  ``BlockManager``, ``Index``, ``Int64Index`` and ``_new_Index``), kept as inert
  :class:`PickledObject` records of their arguments and state; pandas is never
  imported.

Any other global (``os.system``, ``builtins.eval``, ...) is refused when its
``GLOBAL`` opcode is read, before anything could call it, as is any opcode outside
the subset.
"""

from __future__ import annotations

import math
import pickletools
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PickleReadError", "PickledGlobal", "PickledObject", "read_plain_pickle"]


class PickleReadError(ValueError):
    """The pickle uses something this reader refuses or does not understand."""


@dataclass(frozen=True)
class PickledGlobal:
    """A class or function named by the pickle; only a name, never imported."""

    module: str
    name: str

    @property
    def path(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(eq=False)
class PickledObject:
    """An object of an allowed foreign class (pandas), kept as data, never built.

    Attributes
    ----------
    class_path
        Dotted name of its class, e.g. ``"pandas.core.frame.DataFrame"``.
    args
        Arguments the pickle passed to the class.
    state
        What the pickle's ``BUILD`` gave it (``None`` when nothing was given).
    """

    class_path: str
    args: tuple = ()
    state: Any = None


_RECONSTRUCT = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}
_FROMBUFFER = {
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}
_NDARRAY = ("numpy", "ndarray")
_DTYPE = ("numpy", "dtype")
_SLICE = ("builtins", "slice")
_NEW_INDEX = ("pandas.core.indexes.base", "_new_Index")
_PANDAS_CLASSES = {
    ("pandas.core.frame", "DataFrame"),
    ("pandas.core.internals", "BlockManager"),
    ("pandas.core.internals.managers", "BlockManager"),
    ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.numeric", "Int64Index"),
}
_ALLOWED_GLOBALS = (
    _RECONSTRUCT | _FROMBUFFER | {_NDARRAY, _DTYPE, _SLICE, _NEW_INDEX} | _PANDAS_CLASSES
)
# numeric, boolean, fixed-width bytes/unicode and object type codes, as numpy pickles them
_DTYPE_NAME = re.compile(r"[<>|=]?(\?|b1|[iu][1248]|f[248]|c(8|16)|O8?|[SU]\d*)")

_MARK = object()


@dataclass(eq=False)
class _ArrayUnderConstruction:
    """What ``_reconstruct(ndarray, ...)`` returns until ``BUILD`` gives it its data."""

    array: np.ndarray | None = None


@dataclass(eq=False)
class _DtypeUnderConstruction:
    """A dtype from ``numpy.dtype(name, ...)``; ``BUILD`` may set its byte order and size."""

    dtype: np.dtype


def read_plain_pickle(data: bytes) -> Any:
    """The value a pickle describes, rebuilt from plain data only.

    Parameters
    ----------
    data
        The bytes of the pickle (protocols 1 to 5; Python 3 strings).

    Returns
    -------
    The top value: lists, tuples, dicts, strings, bytes, numbers, ``None``, numpy
    arrays, slices, :class:`PickledObject` (pandas objects) and
    :class:`PickledGlobal` (classes passed as data).

    Raises
    ------
    PickleReadError
        On a global outside the allowed few, an opcode outside the supported subset,
        or a malformed pickle. Nothing named by the pickle is imported or called.
    """
    return _Machine().run(data)


class _Machine:
    """The pickle stack machine, restricted to building plain data."""

    def __init__(self) -> None:
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}
        self.resolved: dict[int, Any] = {}

    # -- driving -------------------------------------------------------------

    def run(self, data: bytes) -> Any:
        try:
            for opcode, arg, pos in pickletools.genops(data):
                if opcode.name == "STOP":
                    if not self.stack:
                        raise PickleReadError("STOP with an empty stack.")
                    return self.resolve(self.stack.pop())
                handler = getattr(self, f"op_{opcode.name}", None)
                if handler is None:
                    raise PickleReadError(
                        f"opcode {opcode.name} at byte {pos} is not supported by this reader."
                    )
                handler(arg)
        except PickleReadError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, RecursionError) as err:
            raise PickleReadError(f"malformed pickle: {err}") from err
        raise PickleReadError("the pickle has no STOP opcode.")

    def pop_mark(self) -> list[Any]:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is _MARK:
                items = self.stack[i + 1 :]
                del self.stack[i:]
                return items
        raise PickleReadError("no MARK on the stack.")

    # -- framing, stack and memo ----------------------------------------------

    def op_PROTO(self, arg: int) -> None:
        if not 1 <= arg <= 5:
            raise PickleReadError(f"pickle protocol {arg} is not supported.")

    def op_FRAME(self, arg: int) -> None:
        pass

    def op_MARK(self, arg: None) -> None:
        self.stack.append(_MARK)

    def op_POP(self, arg: None) -> None:
        self.stack.pop()

    def op_POP_MARK(self, arg: None) -> None:
        self.pop_mark()

    def op_DUP(self, arg: None) -> None:
        self.stack.append(self.stack[-1])

    def op_PUT(self, arg: int) -> None:
        self.memo[arg] = self.stack[-1]

    op_BINPUT = op_LONG_BINPUT = op_PUT

    def op_MEMOIZE(self, arg: None) -> None:
        self.memo[len(self.memo)] = self.stack[-1]

    def op_GET(self, arg: int) -> None:
        self.stack.append(self.memo[arg])

    op_BINGET = op_LONG_BINGET = op_GET

    # -- plain values ------------------------------------------------------------

    def push_arg(self, arg: Any) -> None:
        self.stack.append(arg)

    op_INT = op_BININT = op_BININT1 = op_BININT2 = push_arg
    op_LONG = op_LONG1 = op_LONG4 = push_arg
    op_FLOAT = op_BINFLOAT = push_arg
    op_UNICODE = op_BINUNICODE = op_SHORT_BINUNICODE = op_BINUNICODE8 = push_arg
    op_BINBYTES = op_SHORT_BINBYTES = op_BINBYTES8 = push_arg

    def op_BYTEARRAY8(self, arg: bytearray) -> None:
        self.stack.append(bytes(arg))

    def op_NONE(self, arg: None) -> None:
        self.stack.append(None)

    def op_NEWTRUE(self, arg: None) -> None:
        self.stack.append(True)

    def op_NEWFALSE(self, arg: None) -> None:
        self.stack.append(False)

    # -- containers ------------------------------------------------------------

    def op_EMPTY_LIST(self, arg: None) -> None:
        self.stack.append([])

    def op_EMPTY_DICT(self, arg: None) -> None:
        self.stack.append({})

    def op_EMPTY_TUPLE(self, arg: None) -> None:
        self.stack.append(())

    def op_LIST(self, arg: None) -> None:
        self.stack.append(self.pop_mark())

    def op_TUPLE(self, arg: None) -> None:
        self.stack.append(tuple(self.pop_mark()))

    def op_TUPLE1(self, arg: None) -> None:
        self.stack[-1:] = [tuple(self.stack[-1:])]

    def op_TUPLE2(self, arg: None) -> None:
        self.stack[-2:] = [tuple(self.stack[-2:])]

    def op_TUPLE3(self, arg: None) -> None:
        self.stack[-3:] = [tuple(self.stack[-3:])]

    def op_DICT(self, arg: None) -> None:
        items = self.pop_mark()
        self.stack.append(dict(zip(items[::2], items[1::2], strict=True)))

    def op_APPEND(self, arg: None) -> None:
        value = self.stack.pop()
        self.target(list).append(value)

    def op_APPENDS(self, arg: None) -> None:
        items = self.pop_mark()
        self.target(list).extend(items)

    def op_SETITEM(self, arg: None) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self.target(dict)[key] = value

    def op_SETITEMS(self, arg: None) -> None:
        items = self.pop_mark()
        self.target(dict).update(zip(items[::2], items[1::2], strict=True))

    def target(self, kind: type) -> Any:
        top = self.stack[-1]
        if type(top) is not kind:
            raise PickleReadError(f"expected a {kind.__name__} to fill, found {type(top)}.")
        return top

    # -- globals, calls and object state -----------------------------------------

    def op_GLOBAL(self, arg: str) -> None:
        module, name = arg.split(" ", 1)
        self.stack.append(self.allowed_global(module, name))

    def op_STACK_GLOBAL(self, arg: None) -> None:
        name = self.stack.pop()
        module = self.stack.pop()
        if not (isinstance(module, str) and isinstance(name, str)):
            raise PickleReadError("STACK_GLOBAL needs two strings.")
        self.stack.append(self.allowed_global(module, name))

    @staticmethod
    def allowed_global(module: str, name: str) -> PickledGlobal:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise PickleReadError(
                f"refused global {module}.{name}: this reader rebuilds only numpy arrays, "
                "slices and a few pandas containers, and never calls what a pickle names."
            )
        return PickledGlobal(module, name)

    def op_REDUCE(self, arg: None) -> None:
        args = self.stack.pop()
        func = self.stack.pop()
        if not isinstance(func, PickledGlobal) or not isinstance(args, tuple):
            raise PickleReadError("REDUCE needs a global and a tuple of arguments.")
        key = (func.module, func.name)
        if key in _RECONSTRUCT:
            self.stack.append(self.reconstruct(*args))
        elif key in _FROMBUFFER:
            self.stack.append(self.frombuffer(*args))
        elif key == _DTYPE:
            self.stack.append(self.dtype(*args))
        elif key == _SLICE:
            if not all(a is None or type(a) is int for a in args):
                raise PickleReadError("slice arguments must be integers or None.")
            self.stack.append(slice(*args))
        elif key == _NEW_INDEX:
            cls, state = args
            if not (isinstance(cls, PickledGlobal) and (cls.module, cls.name) in _PANDAS_CLASSES):
                raise PickleReadError("_new_Index needs a pandas index class.")
            # pandas' _new_Index(cls, d) builds an index of class cls from the dict d
            self.stack.append(PickledObject(cls.path, (), state))
        else:
            raise PickleReadError(f"{func.path} cannot be called by this reader.")

    def op_NEWOBJ(self, arg: None) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if not (isinstance(cls, PickledGlobal) and (cls.module, cls.name) in _PANDAS_CLASSES):
            raise PickleReadError("NEWOBJ is only accepted for the allowed pandas classes.")
        if not isinstance(args, tuple):
            raise PickleReadError("NEWOBJ needs a tuple of arguments.")
        self.stack.append(PickledObject(cls.path, args))

    def op_BUILD(self, arg: None) -> None:
        state = self.stack.pop()
        obj = self.stack[-1]
        if isinstance(obj, _ArrayUnderConstruction):
            obj.array = self.array_from_state(state)
        elif isinstance(obj, _DtypeUnderConstruction):
            obj.dtype = self.dtype_from_state(obj.dtype, state)
        elif isinstance(obj, PickledObject) and obj.state is None:
            obj.state = state
        else:
            raise PickleReadError(f"BUILD on {type(obj).__name__} is not supported.")

    # -- numpy -------------------------------------------------------------------

    @staticmethod
    def reconstruct(cls: Any, shape: Any, typecode: Any) -> _ArrayUnderConstruction:
        if cls != PickledGlobal(*_NDARRAY):
            raise PickleReadError("_reconstruct is only accepted for numpy.ndarray.")
        return _ArrayUnderConstruction()

    def frombuffer(self, buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        if not isinstance(buffer, bytes) or order not in ("C", "F"):
            raise PickleReadError("_frombuffer needs bytes and an order 'C' or 'F'.")
        return self.array_from_bytes(buffer, self.plain_dtype(dtype), _shape(shape), order)

    @staticmethod
    def dtype(name: Any, align: Any = False, copy: Any = True) -> _DtypeUnderConstruction:
        if not isinstance(name, str) or not _DTYPE_NAME.fullmatch(name):
            raise PickleReadError(f"dtype {name!r} is not supported by this reader.")
        return _DtypeUnderConstruction(np.dtype(name))

    @staticmethod
    def dtype_from_state(dtype: np.dtype, state: Any) -> np.dtype:
        # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize,
        # alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) not in (8, 9):
            raise PickleReadError("malformed dtype state.")
        byteorder, structure, elsize = state[1], state[2:5], state[5]
        if any(part is not None for part in structure) or (len(state) == 9 and state[8]):
            raise PickleReadError("structured dtypes are not supported by this reader.")
        if byteorder not in ("<", ">", "|", "="):
            raise PickleReadError(f"malformed dtype byte order {byteorder!r}.")
        if dtype.kind in "SU" and type(elsize) is int and elsize > 0:
            dtype = np.dtype(f"{dtype.kind}{elsize // (4 if dtype.kind == 'U' else 1)}")
        if byteorder in "<>" and dtype.byteorder != "|":
            dtype = dtype.newbyteorder(byteorder)
        return dtype

    def array_from_state(self, state: Any) -> np.ndarray:
        # numpy's ndarray state: (version, shape, dtype, is_fortran, raw data)
        if not isinstance(state, tuple) or len(state) != 5:
            raise PickleReadError("malformed ndarray state.")
        _, shape, dtype, is_fortran, raw = state
        dtype, shape = self.plain_dtype(dtype), _shape(shape)
        order = "F" if is_fortran else "C"
        if dtype.hasobject:
            if not isinstance(raw, list) or len(raw) != math.prod(shape):
                raise PickleReadError("object array data does not match its shape.")
            flat = np.empty(len(raw), dtype=object)
            for i, value in enumerate(raw):
                flat[i] = self.resolve(value)
            return flat.reshape(shape, order=order)
        if not isinstance(raw, bytes):
            raise PickleReadError("array data must be bytes.")
        return self.array_from_bytes(raw, dtype, shape, order)

    @staticmethod
    def array_from_bytes(raw: bytes, dtype: np.dtype, shape: tuple, order: str) -> np.ndarray:
        if dtype.hasobject:
            raise PickleReadError("an object array cannot be read from bytes.")
        if len(raw) != math.prod(shape) * dtype.itemsize:
            raise PickleReadError("array data does not match its shape and dtype.")
        return np.frombuffer(raw, dtype=dtype).copy().reshape(shape, order=order)

    @staticmethod
    def plain_dtype(dtype: Any) -> np.dtype:
        if not isinstance(dtype, _DtypeUnderConstruction):
            raise PickleReadError("an array needs a numpy dtype.")
        return dtype.dtype

    # -- the result --------------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        """``value`` with arrays and dtypes under construction replaced by the real ones."""
        if value is None or isinstance(value, str | bytes | int | float | slice | PickledGlobal):
            return value
        key = id(value)
        if key in self.resolved:
            return self.resolved[key]
        if isinstance(value, _ArrayUnderConstruction):
            if value.array is None:
                raise PickleReadError("an array was never given its data.")
            out: Any = value.array
        elif isinstance(value, _DtypeUnderConstruction):
            out = value.dtype
        elif isinstance(value, np.ndarray):
            out = value
        elif isinstance(value, list):
            out = []
            self.resolved[key] = out  # before the items: a list may hold itself
            out.extend(self.resolve(v) for v in value)
        elif isinstance(value, dict):
            out = {}
            self.resolved[key] = out
            out.update((self.resolve(k), self.resolve(v)) for k, v in value.items())
        elif isinstance(value, tuple):
            out = tuple(self.resolve(v) for v in value)
        elif isinstance(value, PickledObject):
            out = PickledObject(value.class_path)
            self.resolved[key] = out
            out.args = self.resolve(value.args)
            out.state = self.resolve(value.state)
        else:
            raise PickleReadError(f"unexpected {type(value).__name__} in the pickle.")
        self.resolved[key] = out
        return out


def _shape(shape: Any) -> tuple[int, ...]:
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise PickleReadError(f"malformed array shape {shape!r}.")
    return shape
