from __future__ import annotations

import dataclasses

import pytest
from torch import nn

from signray.errors import ConfigError
from signray.models import (
    IV3GRUConfig,
    SignTransformer,
    TransformerConfig,
    arch_fields,
    build_model,
    get_model_spec,
    list_models,
    make_arch,
    register_model,
    registry,
)
from signray.models.base import ArchConfig


def test_known_models_and_specs() -> None:
    assert list_models() == ["iv3_gru", "transformer"]
    tx = get_model_spec("transformer")
    assert (tx.class_name, tx.input_kind, tx.config_cls) == (
        "SignTransformer",
        "keypoints",
        TransformerConfig,
    )
    gru = get_model_spec("iv3_gru")
    assert (gru.class_name, gru.input_kind, gru.config_cls) == ("IV3GRU", "features", IV3GRUConfig)


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown model 'x'; known models: iv3_gru, transformer"):
        get_model_spec("x")
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("x", None, input_dim=4, num_gloss=3, num_cat=2)


@dataclasses.dataclass(frozen=True)
class _TinyConfig(ArchConfig):
    width: int = 3


def test_register_new_model_and_reject_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_model("tiny", class_name="Tiny", input_kind="keypoints", config_cls=_TinyConfig)
    def build_tiny(arch: _TinyConfig, *, input_dim: int, num_gloss: int, num_cat: int) -> nn.Module:
        return nn.Linear(input_dim, arch.width)

    assert "tiny" in list_models()
    model = build_model("tiny", {"width": 5}, input_dim=4, num_gloss=3, num_cat=2)
    assert isinstance(model, nn.Linear) and model.out_features == 5
    with pytest.raises(ValueError, match="'tiny' is already registered"):
        register_model("tiny", class_name="T", input_kind="keypoints", config_cls=_TinyConfig)(
            build_tiny
        )
    with pytest.raises(ValueError, match="already registered"):
        register_model(
            "transformer", class_name="T", input_kind="keypoints", config_cls=_TinyConfig
        )(build_tiny)
    with pytest.raises(ValueError, match="input_kind"):
        register_model("other", class_name="T", input_kind="pixels", config_cls=_TinyConfig)


def test_arch_fields() -> None:
    fields = arch_fields("transformer")
    assert list(fields) == [
        "d_model",
        "n_heads",
        "depth",
        "ff_dim",
        "dropout",
        "head_hidden",
        "pool",
        "drop_path",
    ]
    assert fields["d_model"].default == 256
    assert "bidirectional" in arch_fields("iv3_gru")


def test_make_arch_defaults_and_int_as_float() -> None:
    arch = make_arch("transformer", {"d_model": 64.0, "n_heads": 4, "dropout": 0})
    assert arch == TransformerConfig(d_model=64, n_heads=4, dropout=0.0)
    assert type(arch.d_model) is int and type(arch.dropout) is float
    assert make_arch("iv3_gru", {}) == IV3GRUConfig()


def test_make_arch_unknown_field_names_it_and_lists_valid_fields() -> None:
    with pytest.raises(ConfigError) as info:
        make_arch("iv3_gru", {"hiden1": 4, "hidden1": 8})
    message = str(info.value)
    assert "hiden1" in message
    assert "valid fields: hidden1, hidden2, depth, dropout, bidirectional" in message


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        ("transformer", "depth", "abc"),
        ("transformer", "depth", 2.5),
        ("transformer", "depth", True),
        ("transformer", "dropout", "high"),
        ("transformer", "pool", 1),
        ("iv3_gru", "bidirectional", 3),
        ("iv3_gru", "bidirectional", "yes"),
        ("iv3_gru", "hidden1", None),
    ],
)
def test_make_arch_rejects_wrong_types(model: str, field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"`{field}` must be"):
        make_arch(model, {field: value})


def test_heads_must_divide_d_model() -> None:
    with pytest.raises(ConfigError) as info:
        make_arch("transformer", {"n_heads": 3})
    assert "`n_heads` must divide `d_model`, but got n_heads=3, d_model=256" in str(info.value)
    with pytest.raises(ConfigError, match="must divide"):
        TransformerConfig(n_heads=3)  # direct construction is validated too


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        make_arch(
            "transformer",
            {"n_heads": 3, "depth": 0, "dropout": 1.0, "ff_dim": "big", "pool": "cls", "x": 1},
        )
    problems = info.value.problems
    assert len(problems) == 6, problems
    assert "found 6 problems" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_badly_typed_field_does_not_trigger_misleading_rule_errors() -> None:
    with pytest.raises(ConfigError) as info:
        make_arch("transformer", {"d_model": "wide", "n_heads": 3})
    assert info.value.problems == ["`d_model` must be an integer, but got 'wide'"]


def test_build_model_accepts_mapping_instance_or_none() -> None:
    kwargs = {"input_dim": 6, "num_gloss": 5, "num_cat": 2}
    small = {"d_model": 8, "n_heads": 2, "depth": 1, "ff_dim": 16, "head_hidden": 4}
    from_map = build_model("transformer", small, **kwargs)
    from_cfg = build_model("transformer", TransformerConfig(**small), **kwargs)
    assert isinstance(from_map, SignTransformer) and from_map.config == from_cfg.config
    assert build_model("iv3_gru", None, **kwargs).config == IV3GRUConfig()
    with pytest.raises(ConfigError, match="must be a mapping or TransformerConfig"):
        build_model("transformer", IV3GRUConfig(), **kwargs)


def test_build_model_rejects_bad_sizes() -> None:
    with pytest.raises(ConfigError) as info:
        build_model("iv3_gru", None, input_dim=0, num_gloss=-1, num_cat=2.0)  # type: ignore[arg-type]
    assert len(info.value.problems) == 3
