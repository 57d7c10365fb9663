"""Shared pieces of every model: typed, validated architecture configs and checkpoint filtering."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from signray.errors import ConfigError, Problem, fields_of
from signray.fields import coerce, field_types

__all__ = [
    "ArchConfig",
    "CheckpointMixin",
    "InputNorm",
    "SignModel",
    "check_dims",
    "check_inputs",
    "dropout_problems",
    "positive_int_problems",
]


@dataclasses.dataclass(frozen=True)
class ArchConfig:
    """Base for architecture configs: coerces and type-checks fields, then checks model rules.

    Subclasses declare fields (int, float, bool or str, each with a default) and implement
    `rule_problems`. Every problem is reported in one `ConfigError`.
    """

    def __post_init__(self) -> None:
        problems: list[str] = []
        bad: set[str] = set()
        values: dict[str, Any] = {}
        types = field_types(type(self))
        for f in dataclasses.fields(self):
            value, problem = coerce(f.name, getattr(self, f.name), types[f.name])
            if problem is None:
                object.__setattr__(self, f.name, value)
                values[f.name] = value
            else:
                problems.append(problem)
                bad.add(f.name)
                values[f.name] = f.default
        # Rules are checked on well-typed values; a rule naming a badly typed field is dropped.
        for problem in self.rule_problems(values):
            if not bad & set(fields_of(problem)):
                problems.append(problem)
        if problems:
            raise ConfigError(problems, title=f"invalid {type(self).__name__}")

    @classmethod
    def rule_problems(cls, v: Mapping[str, Any]) -> list[Problem]:
        """Every broken architecture rule, each naming its fields; `v` holds well-typed values."""
        return []

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ArchConfig:
        """Build from flat keys, reporting unknown keys together with type and rule problems."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(str(k) for k in values if k not in names)
        problems = []
        if unknown:
            problems.append(
                Problem(
                    f"unknown field(s) {', '.join(unknown)} for {cls.__name__}; "
                    f"valid fields: {', '.join(names)}",
                    unknown,
                )
            )
        try:
            config = cls(**{k: v for k, v in values.items() if k in names})
        except ConfigError as err:
            problems.extend(err.problems)
        if problems:
            raise ConfigError(problems, title=f"invalid {cls.__name__}")
        return config


def positive_int_problems(v: Mapping[str, Any], *names: str) -> list[Problem]:
    """Problems for each named field that is not a positive int."""
    return [Problem(f"`{n}` must be > 0, but got {n}={v[n]}", [n]) for n in names if v[n] <= 0]


def dropout_problems(v: Mapping[str, Any], name: str = "dropout") -> list[Problem]:
    """A dropout of 1 zeroes everything, so the valid range is [0, 1)."""
    if 0.0 <= v[name] < 1.0:
        return []
    return [Problem(f"`{name}` must satisfy 0 <= {name} < 1, but got {name}={v[name]}", [name])]


def check_dims(input_dim: int, num_gloss: int, num_cat: int) -> None:
    """Validate data-derived sizes, which come from the dataset rather than the arch config."""
    problems = []
    for name, value in (("input_dim", input_dim), ("num_gloss", num_gloss), ("num_cat", num_cat)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
            problems.append(f"`{name}` must be a positive int, but got {name}={value!r}")
    if problems:
        raise ConfigError(problems, title="invalid model sizes")


def check_inputs(
    x: Tensor, lengths: Tensor, *, frame_dims: int = 1, host_lengths: Tensor | None = None
) -> None:
    """Fail with a clear message on shapes or lengths that would silently give wrong results."""
    if x.dim() != 2 + frame_dims:
        raise ValueError(f"x must have {2 + frame_dims} dims (B, T, ...), but got {tuple(x.shape)}")
    if lengths.shape != (x.shape[0],):
        raise ValueError(
            f"lengths must have shape (B,)=({x.shape[0]},), but got {tuple(lengths.shape)}"
        )
    # Values are checked where that is free, on the host: on the GPU, int() would stall the
    # stream every batch (the loaders build lengths from validated splits).
    host = lengths if lengths.device.type == "cpu" else host_lengths
    if torch.compiler.is_compiling():  # int() would break the compiled graph
        return
    if host is not None and host.numel() and (int(host.min()) < 1 or int(host.max()) > x.shape[1]):
        raise ValueError(
            f"lengths must lie in [1, T={x.shape[1]}], but got min={int(host.min())}, "
            f"max={int(host.max())}"
        )


class InputNorm(nn.Module):
    """Per-feature standardisation with training-set statistics kept as buffers.

    Keypoints in [0, 1] have a spread of ~0.1: projected as they are, they drown under unit-size
    positional encodings and the transformer barely learns. The statistics travel inside the
    checkpoint, so evaluation and prediction see inputs scaled exactly as in training.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def set_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Use these per-feature statistics of the training frames (computed once per split,
        e.g. at pack time: see `signray.data.stats`). A zero std (a constant feature) is
        clamped so nothing is divided by zero."""
        # np.array copies: statistics from the object store or a manifest may be read-only.
        self.mean.copy_(torch.from_numpy(np.array(mean, dtype=np.float64)))
        self.std.copy_(torch.from_numpy(np.array(std, dtype=np.float64)).clamp_min(1e-6))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class CheckpointMixin:
    """Checkpoint state that leaves out weights which can be rebuilt, e.g. a frozen backbone.

    Models list such key prefixes in `checkpoint_excluded_prefixes`; the checkpoint code calls
    only the two methods below, so it needs no knowledge of any architecture.
    """

    def checkpoint_excluded_prefixes(self) -> tuple[str, ...]:
        return ()

    def checkpoint_state_dict(self) -> dict[str, Tensor]:
        """The state dict minus excluded (frozen, rebuildable) entries."""
        assert isinstance(self, nn.Module)
        excluded = self.checkpoint_excluded_prefixes()
        return {
            k: v for k, v in self.state_dict().items() if not excluded or not k.startswith(excluded)
        }

    def load_checkpoint_state_dict(self, sd: Mapping[str, Tensor]) -> None:
        """Load strictly, except that excluded entries may be absent."""
        assert isinstance(self, nn.Module)
        excluded = self.checkpoint_excluded_prefixes()
        expected = self.state_dict().keys()
        missing = [k for k in expected if k not in sd and not (excluded and k.startswith(excluded))]
        unexpected = [k for k in sd if k not in expected]
        if missing or unexpected:
            # Checked before loading so that a mismatch leaves the model untouched.
            raise RuntimeError(
                f"checkpoint does not match {type(self).__name__}: "
                f"missing keys {missing}, unexpected keys {unexpected}"
            )
        self.load_state_dict(dict(sd), strict=False)


class SignModel(CheckpointMixin, nn.Module):
    """What every registered model shares: sizes checked, its config, standardised inputs.

    Subclasses build their layers after ``super().__init__(...)``; the training loop sets
    `input_norm` from the training split's statistics and it travels in checkpoints.
    Checkpoints leave out weights that can be rebuilt (see `CheckpointMixin`).

    ``forward(x, lengths, host_lengths=None)``: `lengths` on x's device; `host_lengths`, when
    given, the same values on the CPU (`Batch.host_lengths`), for whatever the model must know
    on the host, so that no step reads `lengths` back from the GPU.
    """

    def __init__(self, config: ArchConfig, input_dim: int, num_gloss: int, num_cat: int) -> None:
        super().__init__()
        check_dims(input_dim, num_gloss, num_cat)
        self.config = config
        self.input_norm = InputNorm(input_dim)
