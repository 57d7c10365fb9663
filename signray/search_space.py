"""Search spaces: a YAML file -> a validated `SearchSpace` -> Ray Tune domains.

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

Keys of `space` are the same flat names `--config` files and flags use: `TrainConfig` fields
(lr, weight_decay, batch_size, ...) and the chosen model's architecture fields (d_model, hidden1,
...). Distributions:

- ``loguniform`` / ``uniform``: ``low`` < ``high``; loguniform needs ``low`` > 0. On an integer
  field they sample integers in [low, high] (both ends included).
- ``quniform``: ``low``, ``high``, step ``q`` > 0; values low, low + q, ..., high, so
  (high - low) must be a multiple of q. Integers on integer fields.
- ``randint``: integer fields only; integers in [low, high], both ends included (unlike
  ``tune.randint``, whose high is exclusive).
- ``choice``: a non-empty list of distinct ``values``; the only distribution for bool and string
  fields.

Every problem in a file is collected and raised as one `ConfigError` naming the file and field,
before Ray starts. Besides types and bounds, each value a distribution can produce at its edges
(low, high, every choice, every integer of a small range) must pass the config's own validation,
and so must every *combination* of them: a space whose fields are valid one by one but not
together (``n_heads`` that does not divide ``d_model``) is rejected, so trials never sample an
unbuildable config. For heads/width pairs, prefer choices that are all compatible (widths that
are multiples of every head count). Continuous ranges are checked at their ends; the rules on
them are ranges too, so that covers every value in between. Large integer ranges are also checked
next to their ends, which catches divisibility rules (``d_model: randint 16..64`` with
``n_heads: 4`` is refused: it can sample 17).

Fields the tune command sets itself (model, data paths, output_dir, resume, ray_workers, use_gpu,
num_threads, smoke_test, epochs) are rejected here: give them as flags.
Numbers such as ``1e-4`` (which YAML 1.1 reads as a string) are accepted as numbers.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signray.config import TrainConfig, read_yaml, resolve_config
from signray.errors import ConfigError
from signray.models import arch_fields, list_models

__all__ = [
    "DISTRIBUTIONS",
    "NOT_SEARCHABLE",
    "Param",
    "SearchSpace",
    "load_search_space",
    "parse_search_space",
    "searchable_fields",
    "to_tune",
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

# Full cartesian check up to this many combinations; beyond it, every pair of fields is checked.
_MAX_COMBINATIONS = 4096
# Integer ranges with at most this many values are checked value by value.
_MAX_ENUMERATED = 16
_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


@dataclass(frozen=True)
class Param:
    """One searched field: its distribution and the type of the field it feeds."""

    name: str
    distribution: str
    kind: str  # "int" | "float" | "bool" | "str": the field's type
    low: float | int | None = None
    high: float | int | None = None
    q: float | int | None = None
    values: tuple[Any, ...] | None = None

    @property
    def integer(self) -> bool:
        return self.kind == "int" and self.distribution != "choice"

    def grid(self) -> list[Any] | None:
        """Every value this parameter can take, if it is a small discrete set."""
        if self.distribution == "choice":
            return list(self.values or ())
        if self.distribution == "quniform":
            n = int(round((self.high - self.low) / self.q)) + 1
            if n <= _MAX_ENUMERATED:
                return [self._cast(self.low + i * self.q) for i in range(n)]
        elif self.integer and self.high - self.low + 1 <= _MAX_ENUMERATED:
            return list(range(int(self.low), int(self.high) + 1))
        return None

    def representatives(self) -> list[Any]:
        """Values whose validity implies every sample's: the grid, or the two ends of a range.

        A large integer range also gives the values next to its ends: two consecutive integers
        are never both multiples of a divisor >= 2, so a divisibility rule (``n_heads`` divides
        ``d_model``, a batch splits across workers) that some samples break is caught here
        instead of failing those trials.
        """
        grid = self.grid()
        if grid is not None:
            return grid
        ends = [self._cast(self.low), self._cast(self.high)]
        if not self.integer:
            return ends
        step = int(self.q) if self.distribution == "quniform" else 1
        inner = [self._cast(self.low + step), self._cast(self.high - step)]
        return list(dict.fromkeys([ends[0], *inner, ends[1]]))

    def _cast(self, value: float) -> Any:
        return int(round(value)) if self.kind == "int" else float(value)

    def contains(self, value: Any) -> bool:
        """Whether `value` is one this parameter can sample (used for points_to_evaluate)."""
        if self.distribution == "choice":
            return any(_same(value, v) for v in self.values or ())
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not float(value).is_integer():
            return False
        tol = 1e-9 * max(1.0, abs(self.high))
        if not self.low - tol <= value <= self.high + tol:
            return False
        if self.distribution == "quniform":
            steps = (value - self.low) / self.q
            return abs(steps - round(steps)) < 1e-6
        return True

    def to_tune(self):
        """The equivalent Ray Tune domain (Tune's integer highs are exclusive, ours inclusive)."""
        from ray import tune

        d, lo, hi = self.distribution, self.low, self.high
        if d == "choice":
            return tune.choice(list(self.values))
        if self.integer:
            if d == "quniform":
                return tune.qrandint(int(lo), int(hi), int(self.q))
            if d == "loguniform":
                return tune.lograndint(int(lo), int(hi) + 1)
            return tune.randint(int(lo), int(hi) + 1)
        if d == "loguniform":
            return tune.loguniform(float(lo), float(hi))
        if d == "quniform":
            return tune.quniform(float(lo), float(hi), float(self.q))
        return tune.uniform(float(lo), float(hi))

    def describe(self) -> str:
        if self.distribution == "choice":
            return f"choice {list(self.values)}"
        q = f", q={self.q}" if self.q is not None else ""
        return f"{self.distribution}[{self.low}, {self.high}{q}]"


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space for one model.

    `params` are sampled per trial; `fixed` values apply to every trial (merge them onto the base
    config with `apply_fixed`); `points_to_evaluate` are complete assignments of `params`.
    """

    model: str
    params: dict[str, Param]
    fixed: dict[str, Any] = field(default_factory=dict)
    points_to_evaluate: tuple[dict[str, Any], ...] = ()
    source: str = "<search space>"

    def apply_fixed(self, base: TrainConfig) -> TrainConfig:
        return resolve_config(self.fixed, base, source=self.source) if self.fixed else base

    def describe(self) -> str:
        lines = [f"{name}: {p.describe()}" for name, p in self.params.items()]
        lines += [f"{name}: {value!r} (fixed)" for name, value in self.fixed.items()]
        return "\n".join(lines)


def searchable_fields(model: str) -> list[str]:
    """Flat field names a search space for `model` may set."""
    from signray.config import _TRAIN_FIELDS

    names = [n for n in _TRAIN_FIELDS if n not in NOT_SEARCHABLE] + list(arch_fields(model))
    return sorted(dict.fromkeys(names))


def _field_kinds(model: str) -> dict[str, str]:
    from signray.config import _TRAIN_FIELDS

    kinds = {}
    for name, f in [*_TRAIN_FIELDS.items(), *arch_fields(model).items()]:
        kinds[name] = str(f.type).replace(" | None", "").strip()
    return kinds


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def _number(value: Any) -> float | int | None:
    """A YAML number, or a numeric string such as '1e-4' (YAML 1.1 reads those as strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
        return float(value)
    return None


def _normalise_scalar(value: Any, kind: str) -> Any:
    """Numeric strings become numbers for numeric fields; anything else is left for validation."""
    if kind in ("int", "float") and isinstance(value, str):
        number = _number(value)
        if number is not None:
            return number
    return value


def load_search_space(
    path: str | Path, model: str | None = None, base: TrainConfig | None = None
) -> SearchSpace:
    """Read and validate a search-space YAML file (safe loader only) for `model`.

    `model` may be None when the file names one. `base` is the config every trial starts from
    (defaults -> --config -> flags); values are validated in its context.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConfigError([f"search space file {path} does not exist"])
    data = read_yaml(path)
    return parse_search_space(data, model, base, source=source)


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
    if model is None:
        model = file_model or (base.model if base else None)
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

    kinds = _field_kinds(model)
    valid = searchable_fields(model)
    params: dict[str, Param] = {}
    fixed: dict[str, Any] = {}
    for name, spec in raw_space.items():
        name = str(name)
        if name in NOT_SEARCHABLE:
            problems.append(
                f"`{name}` cannot be set by a search space; give it with {NOT_SEARCHABLE[name]}"
            )
            continue
        if name not in kinds:
            others = [m for m in list_models() if m != model and name in arch_fields(m)]
            hint = f" (it belongs to model {others[0]!r})" if others else ""
            problems.append(
                f"`{name}`: unknown field for model {model!r}{hint}; valid fields: "
                f"{', '.join(valid)}"
            )
            continue
        kind = kinds[name]
        if isinstance(spec, Mapping):
            param, spec_problems = _parse_distribution(name, kind, spec)
            problems.extend(spec_problems)
            if param is not None:
                params[name] = param
        elif isinstance(spec, (list, tuple)):
            problems.append(
                f"`{name}`: a list is not a fixed value; to search over it write "
                f"{{distribution: choice, values: {list(spec)}}}"
            )
        else:
            fixed[name] = _normalise_scalar(spec, kind)

    # A config that fails on its own fixed values makes every other check meaningless.
    start = base
    if fixed:
        try:
            start = resolve_config(fixed, base)
        except ConfigError as err:
            problems.extend(f"fixed value: {p}" for p in err.problems)
    problems.extend(_check_values(params, start))

    points = _parse_points(data.get("points_to_evaluate"), params, fixed, start, problems)
    if problems:
        raise ConfigError(problems, title=title)
    return SearchSpace(
        model=model, params=params, fixed=fixed, points_to_evaluate=tuple(points), source=source
    )


def _parse_distribution(
    name: str, kind: str, spec: Mapping[str, Any]
) -> tuple[Param | None, list[str]]:
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
        problems.append(f"{where}: {dist} needs {', '.join(missing)}")
        return None, problems

    if dist == "choice":
        values = spec["values"]
        if not isinstance(values, (list, tuple)):
            return None, [*problems, f"{where}: `values` must be a list, but got {values!r}"]
        if not values:
            return None, [*problems, f"{where}: choice `values` must not be empty"]
        values = [_normalise_scalar(v, kind) for v in values]
        bad = [v for v in values if not (v is None or isinstance(v, (bool, int, float, str)))]
        if bad:
            problems.append(f"{where}: choice values must be plain scalars, but got {bad[0]!r}")
        dupes = [v for i, v in enumerate(values) if any(_same(v, w) for w in values[:i])]
        if dupes:
            problems.append(f"{where}: choice values must be distinct, but {dupes[0]!r} repeats")
        if problems:
            return None, problems
        return Param(name, dist, kind, values=tuple(values)), problems

    if kind not in ("int", "float"):
        return None, [
            *problems,
            f"{where} is a {kind} field: use a fixed value or {{distribution: choice, values: "
            "[...]}}",
        ]
    if dist == "randint" and kind != "int":
        problems.append(f"{where}: randint is for integer fields; `{name}` is a float, use uniform")
    bounds: dict[str, float | int] = {}
    for key in allowed:
        number = _number(spec[key])
        if number is None:
            problems.append(f"{where}: `{key}` must be a number, but got {spec[key]!r}")
            continue
        if not math.isfinite(number):
            problems.append(f"{where}: `{key}` must be finite, but got {number}")
            continue
        if kind == "int" and not float(number).is_integer():
            problems.append(
                f"{where}: `{name}` is an integer field, so `{key}` must be an integer, "
                f"but got {key}={number}"
            )
            continue
        bounds[key] = int(number) if kind == "int" else float(number)
    if problems:
        return None, problems
    low, high = bounds["low"], bounds["high"]
    if low >= high:
        problems.append(f"{where}: `low < high` must hold, but got low={low}, high={high}")
    if dist == "loguniform" and (low <= 0 or high <= 0):
        problems.append(
            f"{where}: loguniform bounds must be > 0, but got low={low}, high={high}"
        )
    q = bounds.get("q")
    if q is not None:
        if q <= 0:
            problems.append(f"{where}: `q` must be > 0, but got q={q}")
        elif low < high:
            steps = (high - low) / q
            if abs(steps - round(steps)) > 1e-6:
                problems.append(
                    f"{where}: (high - low) must be a multiple of q so that high can be sampled, "
                    f"but got low={low}, high={high}, q={q}"
                )
    if problems:
        return None, problems
    return Param(name, dist, kind, low=low, high=high, q=q), problems


def _label(param: Param, value: Any) -> str:
    if param.distribution == "choice" or param.grid() is not None:
        return f"value {value!r}"
    if value == param._cast(param.low):
        return f"low={value!r}"
    if value == param._cast(param.high):
        return f"high={value!r}"
    return f"value {value!r}"


def _check_values(params: Mapping[str, Param], start: TrainConfig) -> list[str]:
    """Each value a parameter can take, alone and in combination, must give a valid config."""
    problems: list[str] = []
    good: dict[str, list[Any]] = {}
    seen: set[str] = set()
    for name, param in params.items():
        ok = []
        for value in param.representatives():
            found = _config_problems({name: value}, start)
            # A rule that also names another searched field is judged on combinations below.
            own = [p for p in found if not _mentions_other(p, name, params)]
            if own:
                for p in own:
                    if p not in seen:
                        seen.add(p)
                        problems.append(f"`{name}`: {_label(param, value)} is invalid: {p}")
            else:
                ok.append(value)
        if ok:
            good[name] = ok
    names = list(good)
    total = math.prod(len(v) for v in good.values()) if good else 0
    if total <= 1:
        return problems
    if total <= _MAX_COMBINATIONS:
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
        mentioned = {k: v for k, v in combo.items() if _mentions(p, k)} or combo
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


def _mentions(problem: str, name: str) -> bool:
    """Whether a config problem is about field `name` (as `name` or name=value)."""
    return f"`{name}`" in problem or re.search(rf"\b{re.escape(name)}=", problem) is not None


def _mentions_other(problem: str, name: str, params: Mapping[str, Param]) -> bool:
    return any(_mentions(problem, other) for other in params if other != name)


def _config_problems(values: Mapping[str, Any], start: TrainConfig) -> list[str]:
    try:
        resolve_config(values, start)
    except ConfigError as err:
        return list(err.problems)
    return []


def _parse_points(
    raw: Any,
    params: Mapping[str, Param],
    fixed: Mapping[str, Any],
    start: TrainConfig,
    problems: list[str],
) -> list[dict[str, Any]]:
    """Complete, validated assignments of every searched field."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(f"`points_to_evaluate` must be a list of mappings, but got {raw!r}")
        return []
    kinds = {name: p.kind for name, p in params.items()}
    flat_start = dataclasses.asdict(start)
    flat_start.update(start.arch)
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
                value = _normalise_scalar(value, kinds[key])
                if not params[key].contains(value):
                    problems.append(
                        f"{where}: `{key}`={value!r} is outside its distribution "
                        f"{params[key].describe()}"
                    )
                    bad = True
                complete[key] = value
        for name, param in params.items():
            if name in complete:
                continue
            default = flat_start.get(name)
            if param.contains(default):
                complete[name] = default
            else:
                problems.append(
                    f"{where}: `{name}` is missing and the base value {default!r} is outside "
                    f"{param.describe()}; give it"
                )
                bad = True
        if bad:
            continue
        complete = {name: complete[name] for name in params}  # Optuna wants every parameter
        found = _config_problems(complete, start)
        if found:
            problems.extend(f"{where}: {p}" for p in found)
            continue
        points.append(complete)
    return points


def to_tune(space: SearchSpace) -> dict[str, Any]:
    """Ray Tune `param_space` for the searched fields (fixed values live in the base config)."""
    return {name: param.to_tune() for name, param in space.params.items()}
