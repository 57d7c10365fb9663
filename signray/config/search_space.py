"""Search spaces: a YAML file -> a validated `SearchSpace` of Optuna distributions.

File format (see `search_spaces/tx.yaml` for a commented example)::

    model: transformer            # optional; must match --model when both are given
    space:                        # required: config field -> fixed value or distribution
      lr:           {distribution: loguniform, low: 1.0e-4, high: 3.0e-3}
      dropout:      {distribution: uniform, low: 0.0, high: 0.3}
      label_smoothing: {distribution: quniform, low: 0.0, high: 0.2, q: 0.05}
      depth:        {distribution: randint, low: 1, high: 3}        # integers 1, 2, 3
      d_model:      {distribution: choice, values: [32, 64, 128]}
      pool: mean                  # a fixed value: applied to every trial, not searched
    points_to_evaluate:           # optional: known-good configs, tried first, in order
      - {lr: 1.0e-3, depth: 2, d_model: 64}

Keys of `space` are the flat names `--config` files and flags use: `TrainConfig` fields and the
chosen model's architecture fields. Each distribution becomes Optuna's own class, which the
searcher samples directly and the report reads back:

===========  =================================  ==========================================
YAML         float field                        int field (``high`` included)
===========  =================================  ==========================================
loguniform   FloatDistribution(log=True)        IntDistribution(log=True)
uniform      FloatDistribution                  IntDistribution
quniform     FloatDistribution(step=q)          IntDistribution(step=q)
randint      (refused: use uniform)             IntDistribution
choice       CategoricalDistribution(values)    (the only one for bool and str fields)
===========  =================================  ==========================================

``quniform`` needs (high - low) to be a multiple of q. Every problem in a file is raised as one
`ConfigError` naming the file and field, before Ray starts; `signray.config.space_checks` also
rejects values and combinations the config itself refuses, so trials never sample an
unbuildable config. Fields the tune command sets itself (`NOT_SEARCHABLE`) are refused here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from signray.config.distributions import describe, same_value
from signray.config.files import read_yaml
from signray.config.space_checks import check_points, check_values
from signray.config.train import TRAIN_FIELDS, TrainConfig, resolve_config
from signray.errors import ConfigError
from signray.fields import FieldType, coerce, field_types, parse_number
from signray.models import arch_fields, get_model_spec, list_models
from signray.storage import RemotePath, as_location

__all__ = [
    "DISTRIBUTIONS",
    "NOT_SEARCHABLE",
    "SearchSpace",
    "load_search_space",
    "parse_search_space",
    "searchable_fields",
]

DISTRIBUTIONS = ("loguniform", "uniform", "quniform", "randint", "choice")
_KEYS = {
    "loguniform": ("low", "high"),
    "uniform": ("low", "high"),
    "quniform": ("low", "high", "q"),
    "randint": ("low", "high"),
    "choice": ("values",),
}
_TOP_KEYS = ("model", "space", "points_to_evaluate")

# Set by the tune command (flags), never sampled: data, outputs, resources, the trial length.
NOT_SEARCHABLE = {
    "model": "--model",
    "keypoints_train": "--keypoints-train",
    "keypoints_val": "--keypoints-val",
    "features_train": "--features-train",
    "features_val": "--features-val",
    "labels_train_csv": "--labels-train-csv",
    "labels_val_csv": "--labels-val-csv",
    "output_dir": "--storage-path/--name",
    "resume": "--resume",
    "log_csv": "--storage-path/--name",
    "ray_workers": "--workers-per-trial",
    "use_gpu": "--gpus-per-trial",
    "num_threads": "--cpus-per-trial",
    "smoke_test": "--smoke-test",
    "epochs": "--epochs (it is ASHA's max_t)",
}


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space for one model.

    `params` are sampled per trial; `fixed` values apply to every trial (merge them onto the base
    config with `apply_fixed`); `points_to_evaluate` are complete assignments of `params`.
    """

    model: str
    params: dict[str, BaseDistribution]
    fixed: dict[str, Any] = field(default_factory=dict)
    points_to_evaluate: tuple[dict[str, Any], ...] = ()
    source: str = "<search space>"

    def apply_fixed(self, base: TrainConfig) -> TrainConfig:
        return resolve_config(self.fixed, base, source=self.source) if self.fixed else base

    def describe(self) -> str:
        lines = [f"{name}: {describe(d)}" for name, d in self.params.items()]
        lines += [f"{name}: {value!r} (fixed)" for name, value in self.fixed.items()]
        return "\n".join(lines)


def searchable_fields(model: str) -> list[str]:
    """Flat field names a search space for `model` may set."""
    names = [n for n in TRAIN_FIELDS if n not in NOT_SEARCHABLE] + list(arch_fields(model))
    return sorted(dict.fromkeys(names))


def _field_types(model: str) -> dict[str, FieldType]:
    types = {n: t for n, t in field_types(TrainConfig).items() if n in TRAIN_FIELDS}
    types.update(field_types(get_model_spec(model).config_cls))
    return types


def _scalar(value: Any, ftype: FieldType) -> Any:
    """A YAML scalar converted to the field's type when possible; left as-is for validation."""
    converted, problem = coerce("", value, ftype)
    return value if problem else converted


def load_search_space(
    path: str | os.PathLike | RemotePath,
    model: str | None = None,
    base: TrainConfig | None = None,
) -> SearchSpace:
    """Read and validate a search-space YAML file (safe loader only) for `model`.

    `model` may be None when the file names one. `base` is the config every trial starts from
    (defaults -> --config -> flags); values are validated in its context.
    """
    path = as_location(path)
    if not path.is_file():
        raise ConfigError([f"search space file {path} does not exist"])
    return parse_search_space(read_yaml(path), model, base, source=str(path))


def parse_search_space(
    data: Any,
    model: str | None = None,
    base: TrainConfig | None = None,
    *,
    source: str = "<search space>",
) -> SearchSpace:
    """Validate already-loaded YAML data; see the module docstring for the format."""
    title = f"invalid search space {source}"
    if not isinstance(data, Mapping):
        raise ConfigError(
            [f"the file must hold a mapping with a `space:` key, but got {type(data).__name__}"],
            title=title,
        )
    problems: list[str] = []
    unknown = [str(k) for k in data if k not in _TOP_KEYS]
    if unknown:
        problems.append(
            f"unknown top-level key(s) {', '.join(unknown)}; allowed: {', '.join(_TOP_KEYS)} "
            "(put the searched fields under `space:`)"
        )
    file_model = data.get("model")
    if file_model is not None and file_model not in list_models():
        raise ConfigError(
            [f"`model`: unknown model {file_model!r}; known models: {', '.join(list_models())}"],
            title=title,
        )
    model = model or file_model or (base.model if base else None)
    if model is None:
        raise ConfigError(["no model given: pass --model or set `model:` in the file"], title=title)
    if model not in list_models():
        raise ConfigError(
            [f"unknown model {model!r}; known models: {', '.join(list_models())}"], title=title
        )
    if file_model is not None and file_model != model:
        problems.append(
            f"`model`: the file is for model {file_model!r} but the run is for {model!r}"
        )
    if base is None or base.model != model:
        base = resolve_config({"model": model}, base)

    raw_space = data.get("space")
    if not isinstance(raw_space, Mapping) or not raw_space:
        problems.append("`space` must be a non-empty mapping of field: fixed value or distribution")
        raise ConfigError(problems, title=title)

    types = _field_types(model)
    params: dict[str, BaseDistribution] = {}
    fixed: dict[str, Any] = {}
    for name, spec in raw_space.items():
        name = str(name)
        if name in NOT_SEARCHABLE:
            problems.append(
                f"`{name}` cannot be set by a search space; give it with {NOT_SEARCHABLE[name]}"
            )
        elif name not in types:
            others = [m for m in list_models() if m != model and name in arch_fields(m)]
            hint = f" (it belongs to model {others[0]!r})" if others else ""
            problems.append(
                f"`{name}`: unknown field for model {model!r}{hint}; valid fields: "
                f"{', '.join(searchable_fields(model))}"
            )
        elif isinstance(spec, Mapping):
            dist, spec_problems = _parse_distribution(name, types[name], spec)
            problems.extend(spec_problems)
            if dist is not None:
                params[name] = dist
        elif isinstance(spec, (list, tuple)):
            problems.append(
                f"`{name}`: a list is not a fixed value; to search over it write "
                f"{{distribution: choice, values: {list(spec)}}}"
            )
        else:
            fixed[name] = _scalar(spec, types[name])

    # A config that fails on its own fixed values makes every other check meaningless.
    start = base
    if fixed:
        try:
            start = resolve_config(fixed, base)
        except ConfigError as err:
            problems.extend(p.prefixed("fixed value: ") for p in err.problems)
    problems.extend(check_values(params, start))
    points = check_points(data.get("points_to_evaluate"), params, fixed, start, problems)
    if problems:
        raise ConfigError(problems, title=title)
    return SearchSpace(model, params, fixed, tuple(points), source)


def _parse_distribution(
    name: str, ftype: FieldType, spec: Mapping[str, Any]
) -> tuple[BaseDistribution | None, list[str]]:
    where = f"`{name}`"
    dist = spec.get("distribution")
    if dist is None:
        return None, [
            f"{where}: a mapping needs `distribution:` (one of {', '.join(DISTRIBUTIONS)}); "
            "fixed values are written plainly (`field: value`)"
        ]
    if dist not in DISTRIBUTIONS:
        return None, [
            f"{where}: unknown distribution {dist!r}; use one of {', '.join(DISTRIBUTIONS)}"
        ]
    problems: list[str] = []
    allowed = _KEYS[dist]
    extra = sorted(str(k) for k in spec if k != "distribution" and k not in allowed)
    if extra:
        problems.append(
            f"{where}: key(s) {', '.join(extra)} do not apply to {dist}; it takes "
            f"{', '.join(allowed)}"
        )
    missing = [k for k in allowed if k not in spec]
    if missing:
        return None, [*problems, f"{where}: {dist} needs {', '.join(missing)}"]
    if dist == "choice":
        return _parse_choice(where, ftype, spec["values"], problems)
    if not ftype.numeric:
        kind = ftype.base.__name__
        return None, [
            *problems,
            f"{where} is a {kind} field: use a fixed value or {{distribution: choice, values: "
            "[...]}}",
        ]
    if dist == "randint" and ftype.base is not int:
        problems.append(f"{where}: randint is for integer fields; `{name}` is a float, use uniform")
    bounds: dict[str, float | int] = {}
    for key in allowed:
        number = parse_number(spec[key])
        if number is None:
            problems.append(f"{where}: `{key}` must be a number, but got {spec[key]!r}")
        elif not math.isfinite(number):
            problems.append(f"{where}: `{key}` must be finite, but got {number}")
        elif ftype.base is int and not float(number).is_integer():
            problems.append(
                f"{where}: `{name}` is an integer field, so `{key}` must be an integer, "
                f"but got {key}={number}"
            )
        else:
            bounds[key] = int(number) if ftype.base is int else float(number)
    if problems:
        return None, problems
    low, high, q = bounds["low"], bounds["high"], bounds.get("q")
    if low >= high:
        problems.append(f"{where}: `low < high` must hold, but got low={low}, high={high}")
    if dist == "loguniform" and (low <= 0 or high <= 0):
        problems.append(f"{where}: loguniform bounds must be > 0, but got low={low}, high={high}")
    if q is not None and q <= 0:
        problems.append(f"{where}: `q` must be > 0, but got q={q}")
    elif q is not None and low < high:
        steps = (high - low) / q
        if abs(steps - round(steps)) > 1e-6:
            problems.append(
                f"{where}: (high - low) must be a multiple of q so that high can be sampled, "
                f"but got low={low}, high={high}, q={q}"
            )
    if problems:
        return None, problems
    log = dist == "loguniform"
    if ftype.base is int:
        return IntDistribution(int(low), int(high), log=log, step=int(q or 1)), []
    return FloatDistribution(float(low), float(high), log=log, step=q), []


def _parse_choice(
    where: str, ftype: FieldType, values: Any, problems: list[str]
) -> tuple[BaseDistribution | None, list[str]]:
    if not isinstance(values, (list, tuple)):
        return None, [*problems, f"{where}: `values` must be a list, but got {values!r}"]
    if not values:
        return None, [*problems, f"{where}: choice `values` must not be empty"]
    values = [_scalar(v, ftype) for v in values]
    bad = [v for v in values if not (v is None or isinstance(v, (bool, int, float, str)))]
    if bad:
        problems.append(f"{where}: choice values must be plain scalars, but got {bad[0]!r}")
    dupes = [v for i, v in enumerate(values) if any(same_value(v, w) for w in values[:i])]
    if dupes:
        problems.append(f"{where}: choice values must be distinct, but {dupes[0]!r} repeats")
    if problems:
        return None, problems
    return CategoricalDistribution(values), []
