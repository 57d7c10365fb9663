"""Typed config fields: what type a dataclass field declares, and the one coercion of a value
to it, whether the value comes from a command-line flag, a YAML file or a search-space sampler.

Rules, the same everywhere:

- ``int`` fields take integers and integral floats (samplers and YAML produce ``2.0``); never
  bools (``depth: true`` is always a mistake).
- ``float`` fields take any real number except bools.
- ``bool`` fields take only booleans; ``str`` fields strings (or paths).
- Numeric strings such as ``"1e-4"`` become numbers for numeric fields: YAML 1.1 reads ``1e-4``
  as a string, and flags arrive as strings.
- ``None`` is accepted only by optional fields (``int | None``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from signray.errors import Problem

__all__ = [
    "FieldType",
    "coerce",
    "coerce_fields",
    "field_types",
    "flag",
    "help_of",
    "option",
    "parse_duration",
    "parse_number",
    "tidy_params",
]

_NUMBER_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?(inf|nan)$", re.I)
_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


@dataclass(frozen=True)
class FieldType:
    """A field's base type (int, float, bool or str) and whether it may be None."""

    base: type
    optional: bool = False

    @property
    def numeric(self) -> bool:
        return self.base in (int, float)


@functools.cache
def field_types(cls: type) -> dict[str, FieldType]:
    """`FieldType` of every field of dataclass `cls` (string annotations resolved once)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            rest = [a for a in args if a is not type(None)]
            hint = rest[0] if len(rest) == 1 else Any
        out[f.name] = FieldType(hint if hint in _NAMES else object, optional)
    return out


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"  # numpy.bool_ too


def parse_number(value: Any) -> int | float | None:
    """A number, or a numeric string as a number; None for anything else (bools included)."""
    if _is_bool(value):
        return None
    if isinstance(value, numbers.Real):
        return value
    if isinstance(value, str) and _NUMBER_RE.match(value.strip()):
        text = value.strip()
        return int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)
    return None


_DURATION_RE = re.compile(r"^\s*(\d+\.?\d*|\.\d+)\s*([smhd]?)\s*$", re.I)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float | None:
    """Seconds in a duration such as ``2h``, ``30m``, ``90s``, ``1.5h`` or plain seconds
    (``3600``); None for anything else (bools, negative or unitless text included)."""
    if _is_bool(value):
        return None
    if isinstance(value, numbers.Real):
        return float(value) if value >= 0 else None
    match = _DURATION_RE.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    return float(match.group(1)) * _SECONDS[match.group(2).lower()]


def coerce(name: str, value: Any, ftype: FieldType) -> tuple[Any, Problem | None]:
    """``(value converted to the field's type, None)`` or ``(value, the problem)``."""
    if value is None and ftype.optional:
        return None, None
    base = ftype.base
    if ftype.numeric:
        number = parse_number(value)
        if number is not None and base is float:
            return float(number), None
        if number is not None and float(number).is_integer():
            return int(number), None
    elif base is bool:
        if _is_bool(value):
            return bool(value), None
    elif base is str:
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value), None
    else:
        return value, None
    return value, Problem(f"`{name}` must be {_NAMES[base]}, but got {value!r}", [name])


def coerce_fields(
    cls: type, values: dict[str, Any] | Any, what: str
) -> tuple[dict[str, Any], list[Problem]]:
    """`values` coerced to the fields of dataclass `cls`: ``(known, problems)``; a key that is
    no field is a problem ("unknown WHAT 'key'")."""
    types = field_types(cls)
    known, problems = {}, []
    for key, value in values.items():
        if key not in types:
            problems.append(Problem(f"unknown {what} {key!r}", [key]))
            continue
        converted, problem = coerce(key, value, types[key])
        if problem:
            problems.append(problem)
        known[key] = converted
    return known, problems


def flag(name: str) -> str:
    """The flag of field `name` in every command: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def option(default: Any, help: str) -> Any:
    """A dataclass field with its help text: flags are generated from fields, help included."""
    return dataclasses.field(default=default, metadata={"help": help})


def help_of(f: dataclasses.Field) -> str:
    """The help text an `option` field carries, else its name in words."""
    return f.metadata.get("help", f.name.replace("_", " "))


def tidy_params(sampled: Mapping[str, Any]) -> dict[str, Any]:
    """Sampled values without float noise (quantized samples such as 0.15000000000000002)."""
    return {
        k: float(f"{v:.12g}") if isinstance(v, float) else v
        for k, v in sampled.items()
        if not k.startswith("_") and _scalar(v)
    }


def _scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str, np.generic)) and not (
        isinstance(value, float) and math.isnan(value)
    )
