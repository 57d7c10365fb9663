"""Checks that a search space can only sample buildable configs, before any trial runs.

Each value a distribution can produce at its edges (low, high, every choice, every integer of a
small range) must pass the config's own validation, and so must every *combination* of them: a
space whose fields are valid one by one but not together (``n_heads`` that does not divide
``d_model``) is rejected. Continuous ranges are checked at their ends; the rules on them are
ranges too, so that covers every value in between. Large integer ranges are also checked next to
their ends, which catches divisibility rules (``d_model: randint 16..64`` with ``n_heads: 4``
can sample 17). Which fields a broken rule concerns is read from the problem's `fields`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from signray.config.distributions import contains, describe, grid, representatives
from signray.config.train import TrainConfig, config_to_flat, resolve_config
from signray.errors import ConfigError, Problem, fields_of
from signray.fields import parse_number

__all__ = ["check_points", "check_values"]

# Full cartesian check up to this many combinations; beyond it, every pair of fields is checked.
_MAX_COMBINATIONS = 4096


def _label(dist: BaseDistribution, value: Any) -> str:
    if grid(dist) is None and value == dist.low:
        return f"low={value!r}"
    if grid(dist) is None and value == dist.high:
        return f"high={value!r}"
    return f"value {value!r}"


def _config_problems(values: Mapping[str, Any], start: TrainConfig) -> list[Problem]:
    try:
        resolve_config(values, start)
    except ConfigError as err:
        return list(err.problems)
    return []


def check_values(params: Mapping[str, BaseDistribution], start: TrainConfig) -> list[str]:
    """Each value a parameter can take, alone and in combination, must give a valid config."""
    problems: list[str] = []
    good: dict[str, list[Any]] = {}
    seen: set[str] = set()
    for name, dist in params.items():
        ok = []
        for value in representatives(dist):
            # A rule that also concerns another searched field is judged on combinations below.
            own = [
                p
                for p in _config_problems({name: value}, start)
                if not (set(fields_of(p)) - {name}) & set(params)
            ]
            for p in own:
                if p not in seen:
                    seen.add(p)
                    problems.append(f"`{name}`: {_label(dist, value)} is invalid: {p}")
            if not own:
                ok.append(value)
        if ok:
            good[name] = ok
    total = math.prod(len(v) for v in good.values()) if good else 0
    if total <= 1:
        return problems
    if total <= _MAX_COMBINATIONS:
        names = list(good)
        combos: Iterable[dict[str, Any]] = (
            dict(zip(names, values, strict=True)) for values in itertools.product(*good.values())
        )
    else:
        combos = _pairwise(good)
    invalid: dict[str, dict[str, Any]] = {}
    count = 0
    for combo in combos:
        found = [p for p in _config_problems(combo, start) if p not in seen]
        if found:
            count += 1
            for p in found:
                invalid.setdefault(p, combo)
    shown = list(invalid.items())[:5]
    for p, combo in shown:
        mentioned = {k: v for k, v in combo.items() if k in fields_of(p)} or combo
        example = ", ".join(f"{k}={v!r}" for k, v in mentioned.items())
        problems.append(
            f"the space can sample an invalid combination ({example}): {p}; restrict the "
            "ranges or choices so that every combination is valid"
        )
    if len(invalid) > len(shown):
        problems.append(
            f"... and {len(invalid) - len(shown)} more invalid combinations ({count} checked "
            "combinations fail)"
        )
    return problems


def _pairwise(good: Mapping[str, Sequence[Any]]) -> Iterable[dict[str, Any]]:
    first = {k: v[0] for k, v in good.items()}
    names = list(good)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for va in good[a]:
                for vb in good[b]:
                    yield {**first, a: va, b: vb}


def _point_value(dist: BaseDistribution, value: Any) -> Any:
    """A YAML point value as the distribution's type ('1e-3' -> 0.001, 64.0 -> 64)."""
    if isinstance(dist, CategoricalDistribution):
        return value
    number = parse_number(value)
    if number is None:
        return value
    return int(number) if isinstance(dist, IntDistribution) else float(number)


def check_points(
    raw: Any,
    params: Mapping[str, BaseDistribution],
    fixed: Mapping[str, Any],
    start: TrainConfig,
    problems: list[str],
) -> list[dict[str, Any]]:
    """Complete, validated assignments of every searched field (missing ones from `start`)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(f"`points_to_evaluate` must be a list of mappings, but got {raw!r}")
        return []
    defaults = config_to_flat(start)
    points = []
    for i, point in enumerate(raw):
        where = f"points_to_evaluate[{i}]"
        if not isinstance(point, Mapping):
            problems.append(f"{where} must be a mapping of field: value, but got {point!r}")
            continue
        complete: dict[str, Any] = {}
        bad = False
        for key, value in point.items():
            key = str(key)
            if key in fixed:
                problems.append(f"{where}: `{key}` is fixed in `space`, so it cannot vary here")
                bad = True
            elif key not in params:
                problems.append(
                    f"{where}: `{key}` is not a searched field; searched fields: "
                    f"{', '.join(params) or '(none)'}"
                )
                bad = True
            else:
                value = _point_value(params[key], value)
                if not contains(params[key], value):
                    problems.append(
                        f"{where}: `{key}`={value!r} is outside its distribution "
                        f"{describe(params[key])}"
                    )
                    bad = True
                complete[key] = value
        for name, dist in params.items():
            if name in complete:
                continue
            if contains(dist, defaults.get(name)):
                complete[name] = defaults[name]
            else:
                problems.append(
                    f"{where}: `{name}` is missing and the base value {defaults.get(name)!r} is "
                    f"outside {describe(dist)}; give it"
                )
                bad = True
        if bad:
            continue
        complete = {name: complete[name] for name in params}  # Optuna wants every parameter
        found = _config_problems(complete, start)
        if found:
            problems.extend(p.prefixed(f"{where}: ") for p in found)
            continue
        points.append(complete)
    return points
