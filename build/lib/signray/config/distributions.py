"""Small questions asked of Optuna distributions: can it sample this value, what are its values.

signray's search spaces are Optuna's own distribution classes (`signray.config.search_space`);
these helpers serve validation, points to evaluate, warm starts and printing.
"""

from __future__ import annotations

import math
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from signray.fields import parse_number

__all__ = ["contains", "describe", "grid", "representatives", "same_value"]

# Integer ranges with at most this many values are checked value by value.
_MAX_ENUMERATED = 16


def describe(dist: BaseDistribution) -> str:
    """One line, e.g. ``loguniform[0.0001, 0.003]`` or ``choice [32, 64]``."""
    if isinstance(dist, CategoricalDistribution):
        return f"choice {list(dist.choices)}"
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    if dist.log:
        return f"loguniform[{dist.low}, {dist.high}]"
    if dist.step not in (None, 1):
        return f"quniform[{dist.low}, {dist.high}, q={dist.step}]"
    name = "randint" if isinstance(dist, IntDistribution) else "uniform"
    return f"{name}[{dist.low}, {dist.high}]"


def same_value(a: Any, b: Any) -> bool:
    """Equality that keeps True apart from 1 (YAML choices mix bools and numbers)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether `dist` can sample `value` (points_to_evaluate, warm starts)."""
    if isinstance(dist, CategoricalDistribution):
        return any(same_value(value, c) for c in dist.choices)
    number = parse_number(value)
    if number is None or not math.isfinite(number):
        return False
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    if isinstance(dist, IntDistribution) and not float(number).is_integer():
        return False
    tol = 1e-9 * max(1.0, abs(dist.high))
    if not dist.low - tol <= number <= dist.high + tol:
        return False
    if dist.step:
        steps = (number - dist.low) / dist.step
        return abs(steps - round(steps)) < 1e-6
    return True


def grid(dist: BaseDistribution) -> list[Any] | None:
    """Every value `dist` can take, if it is a small discrete set."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if dist.step is None:  # continuous
        return None
    n = int(round((dist.high - dist.low) / dist.step)) + 1
    if n > _MAX_ENUMERATED:
        return None
    cast = int if isinstance(dist, IntDistribution) else float
    return [cast(dist.low + i * dist.step) for i in range(n)]


def representatives(dist: BaseDistribution) -> list[Any]:
    """Values whose validity implies every sample's: the grid, or the two ends of a range.

    A large integer range also gives the values next to its ends: two consecutive integers are
    never both multiples of a divisor >= 2, so a divisibility rule (``n_heads`` divides
    ``d_model``, a batch splits across workers) that some samples break is caught here.
    """
    values = grid(dist)
    if values is not None:
        return values
    if not isinstance(dist, IntDistribution):
        return [dist.low, dist.high]
    inner = [dist.low + dist.step, dist.high - dist.step]
    return list(dict.fromkeys([dist.low, *inner, dist.high]))
