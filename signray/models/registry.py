"""Name -> model registry, so configs, search spaces and checkpoints refer to models by name.

A model registers itself with `@register_model` in its own module; adding one means writing that
module and importing it from `signray/models/__init__.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from signray.errors import ConfigError
from signray.models.base import ArchConfig, check_dims

__all__ = [
    "ModelSpec",
    "arch_fields",
    "build_model",
    "get_model_spec",
    "list_models",
    "make_arch",
    "register_model",
]

INPUT_KINDS = ("keypoints", "features")

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """Everything the rest of signray needs to know about one model."""

    name: str
    class_name: str
    input_kind: str
    config_cls: type[ArchConfig]
    builder: Builder


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, *, class_name: str, input_kind: str, config_cls: type[ArchConfig]
) -> Callable[[Builder], Builder]:
    """Decorator registering `builder(arch, *, input_dim, num_gloss, num_cat) -> nn.Module`.

    The built module must be a `SignModel` (sizes checked, an `input_norm` the training loop sets
    from the training frames' statistics, checkpoint filtering).
    """
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"`input_kind` must be one of {INPUT_KINDS}, but got {input_kind!r}")
    if not (dataclasses.is_dataclass(config_cls) and issubclass(config_cls, ArchConfig)):
        raise TypeError(f"`config_cls` must be an ArchConfig dataclass, but got {config_cls!r}")
    missing = [
        f.name
        for f in dataclasses.fields(config_cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise TypeError(f"every field of {config_cls.__name__} needs a default: {missing}")

    def decorator(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(name, class_name, input_kind, config_cls, builder)
        return builder

    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(list_models())
        raise ConfigError([f"unknown model {name!r}; known models: {known}"]) from None


def arch_fields(name: str) -> dict[str, dataclasses.Field[Any]]:
    """Architecture fields by name, so flat config / search-space keys can be routed."""
    return {f.name: f for f in dataclasses.fields(get_model_spec(name).config_cls)}


def make_arch(name: str, values: Mapping[str, Any]) -> ArchConfig:
    """Validated config for `name` from flat keys; every problem is raised in one ConfigError."""
    return get_model_spec(name).config_cls.from_mapping(values)


def build_model(
    name: str,
    arch: Mapping[str, Any] | ArchConfig | None,
    *,
    input_dim: int,
    num_gloss: int,
    num_cat: int,
) -> nn.Module:
    """Build model `name` from a mapping of arch fields, a config instance, or None (defaults)."""
    spec = get_model_spec(name)
    if arch is None:
        config = spec.config_cls()
    elif isinstance(arch, spec.config_cls):
        config = arch
    elif isinstance(arch, Mapping):
        config = spec.config_cls.from_mapping(arch)
    else:
        raise ConfigError(
            f"arch for model {name!r} must be a mapping or {spec.config_cls.__name__}, "
            f"but got {type(arch).__name__}"
        )
    check_dims(input_dim, num_gloss, num_cat)
    return spec.builder(config, input_dim=input_dim, num_gloss=num_gloss, num_cat=num_cat)
