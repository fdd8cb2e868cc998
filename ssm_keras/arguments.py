"""Checks of the arguments of the public functions and classes.

Each raises one `TypeError` (a value of the wrong type) or `ValueError` (a
value out of range) that names the argument, the value given and what is
allowed, as the commands' one-line errors do:

    number("density", density, low=0, high=1, low_open=True)
    -> ValueError: density must be a finite number in (0, 1]. Received: density=1.5

Booleans are not numbers here (`True` is not a density), NumPy scalars are.
"""

import math
import numbers
import os

import numpy as np


def _interval(low, high, low_open, high_open):
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    low_text = "-inf" if low is None else f"{low:g}"
    high_text = "inf" if high is None else f"{high:g}"
    return f"{left}{low_text}, {high_text}{right}"


def number(name, value, low=None, high=None, low_open=False, high_open=False):
    """`value` as a float if it is a finite real number within the interval
    (`low`/`high` None: unbounded; `*_open`: the bound excluded)."""
    interval = _interval(low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite number in {interval}. Received: "
                        f"{name}={value!r}")
    value = float(value)
    inside = math.isfinite(value)
    if inside and low is not None:
        inside = value > low if low_open else value >= low
    if inside and high is not None:
        inside = value < high if high_open else value <= high
    if not inside:
        raise ValueError(f"{name} must be a finite number in {interval}. Received: "
                         f"{name}={value!r}")
    return value


def integer(name, value, low=None):
    """`value` as an int if it is an integer (Python's or NumPy's), at least `low`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer{'' if low is None else f' >= {low}'}. "
                        f"Received: {name}={value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be an integer >= {low}. Received: {name}={value!r}")
    return value


def choice(name, value, allowed):
    """`value` if it is one of `allowed`."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}. Received: "
                         f"{name}={value!r}")
    return value


def boolean(name, value):
    """`value` as a bool if it is one (Python's or NumPy's): a string such as
    "False" would be taken as True, so it is refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False. Received: {name}={value!r}")
    return bool(value)


def path(name, value, allow_none=False):
    """`value` if it is a path: a non-empty str or an `os.PathLike` (or None
    with `allow_none`)."""
    if value is None and allow_none:
        return value
    allowed = "a non-empty str or os.PathLike" + (", or None" if allow_none else "")
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path ({allowed}). Received: {name}={value!r}")
    if not os.fspath(value):
        raise ValueError(f"{name} must be a path ({allowed}). Received: {name}={value!r}")
    return value
