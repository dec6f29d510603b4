"""Argument validation, with one vocabulary for every class of the package: intervals for
numbers, positive integers, flags. Each check returns the plain Python value or raises a
TypeError/ValueError naming the argument, before anything is created.

    self.beta = self._hyper('beta', beta, checks.UNIT_INTERVAL, variable=True)
    steps = checks.positive_integer('steps', steps)
"""
import math
import numbers
from collections import namedtuple

import numpy as np


class Interval(namedtuple('Interval', 'contains requirement')):
    """Where a number must lie: `contains(value)` and the words of the error ('in [0, 1)')."""


ANY = Interval(lambda v: True, 'finite')
NON_NEGATIVE = Interval(lambda v: v >= 0, '>= 0')
POSITIVE = Interval(lambda v: v > 0, '> 0')
NON_POSITIVE = Interval(lambda v: v <= 0, '<= 0')
UNIT_INTERVAL = Interval(lambda v: 0 <= v < 1, 'in [0, 1)')               # decay rates, betas
CLOSED_UNIT_INTERVAL = Interval(lambda v: 0 <= v <= 1, 'in [0, 1]')
POSITIVE_UNIT_INTERVAL = Interval(lambda v: 0 < v <= 1, 'in (0, 1]')     # step fractions
AT_LEAST_ONE = Interval(lambda v: v >= 1, '>= 1')


def at_least(bound, what):
    """`Interval` of the numbers >= `bound`, described as `what` (e.g. 'min_step')."""
    return Interval(lambda v: v >= bound, '>= %s (%r)' % (what, bound))


def _plain(value):
    """A 0-d NumPy array is its scalar (NumPy hands those out for reductions)."""
    return value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value


def checked_number(name, value, check=NON_NEGATIVE, dtype=None):
    """`value` as a float, or raise TypeError/ValueError naming `name`. With `dtype` (the
    variable's, e.g. 'float32'), the value it rounds to there must pass too: 1 - 1e-9 is 1.0 in
    float32, and 1e39 is inf."""
    value = _plain(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError('%s must be a number, got %r' % (name, value))
    contains, requirement = check
    if not math.isfinite(value) or not contains(value):
        raise ValueError('%s must be %s, got %r' % (name, requirement, value))
    if dtype is not None:
        with np.errstate(over='ignore'):
            rounded = float(np.asarray(value, dtype=dtype))
        if not math.isfinite(rounded) or not contains(rounded):
            raise ValueError('%s must be %s in %s, where %r becomes %r'
                             % (name, requirement, dtype, value, rounded))
    return float(value)


def integer(name, value, minimum=1):
    """`value` as an int >= `minimum`, or raise TypeError/ValueError naming `name`."""
    value = _plain(value)
    words = 'a positive integer' if minimum == 1 else 'an integer >= %d' % minimum
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError('%s must be %s, got %r' % (name, words, value))
    if value < minimum:
        raise ValueError('%s must be %s, got %r' % (name, words, value))
    return int(value)


def positive_integer(name, value):
    """`value` as an int >= 1, or raise TypeError/ValueError naming `name`."""
    return integer(name, value, minimum=1)


def flag(name, value):
    """`value` as a bool; only True or False (not 'False', not 1) is accepted."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError('%s must be True or False, got %r' % (name, value))
    return bool(value)


def one_of(name, value, choices):
    """`value` if it is one of `choices`, else a ValueError listing them."""
    if value not in choices:
        raise ValueError('%s must be one of %s, got %r'
                         % (name, ', '.join(map(repr, choices)), value))
    return value


class DefaultRate(float):
    """A constructor's default learning rate (`lr=DefaultRate(0.001)`): equal to the float, and
    marked, so that `learning_rate=` (the Keras 2.3 name) may replace it while an explicit `lr=`
    and a different `learning_rate=` together are an error."""

    def __repr__(self):
        return float.__repr__(self)
