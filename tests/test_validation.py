"""The argument checks every public function shares (scanpy_autotune._validation)."""

from __future__ import annotations

import numpy as np
import pytest

from scanpy_autotune._validation import (
    check_bool,
    check_choice,
    check_fraction,
    check_int,
    check_number,
)


@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3)])
def test_check_int_takes_integers_as_python_ints(value):
    out = check_int("n", value, low=1, high=5)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize("value", [3.0, np.float64(3.0), True, np.bool_(True), "3", None])
def test_check_int_never_takes_anything_else_for_an_integer(value):
    with pytest.raises(ValueError, match=r"n=.* must be an integer"):
        check_int("n", value)


def test_check_int_bounds_and_none():
    assert check_int("n", None, allow_none=True) is None
    assert check_int("n", 1, low=1) == 1 and check_int("n", 5, high=5) == 5
    for value in (0, 6):
        with pytest.raises(ValueError, match=r"n=\d must be an integer"):
            check_int("n", value, low=1, high=5)


def test_check_number_and_fraction_bounds():
    assert check_number("lr", 1e-3, low=0.0, low_open=True) == 1e-3
    with pytest.raises(ValueError, match="lr"):
        check_number("lr", 0.0, low=0.0, low_open=True)
    assert check_fraction("test_size", 0.0, allow_zero=True) == 0.0
    for value, allow_zero in ((0.0, False), (1.0, True), (-0.1, True), (float("nan"), True), ("0.5", True)):
        with pytest.raises(ValueError, match="test_size"):
            check_fraction("test_size", value, allow_zero=allow_zero)


def test_check_bool_refuses_truthy_values():
    assert check_bool("show", np.bool_(False)) is False
    for value in ("no", 0, 1, None):
        with pytest.raises(ValueError, match="must be True or False"):
            check_bool("show", value)


def test_check_choice_keeps_types_apart_and_takes_numpy_scalars():
    assert check_choice("score_cells", np.str_("all"), ("heldout", "all")) == "all"
    assert type(check_choice("score_cells", np.str_("all"), ("heldout", "all"))) is str
    assert check_choice("n", np.int64(2), (1, 2)) == 2
    with pytest.raises(ValueError, match=r"flag=1 is not valid; use one of \[True, False\]"):
        check_choice("flag", 1, (True, False))  # 1 == True, but a number is not a flag
    with pytest.raises(ValueError, match="use one of"):
        check_choice("score_cells", "train", ("heldout", "all"))
