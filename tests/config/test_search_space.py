"""Search-space YAML: every shipped file loads, every rule breaks with a clear, complete error."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from signray.config import TrainConfig, resolve_config
from signray.config.distributions import grid, representatives
from signray.config.search_space import load_search_space, parse_search_space
from signray.errors import ConfigError

SPACES = sorted((Path(__file__).resolve().parents[2] / "search_spaces").glob("*.yaml"))


def _write(tmp_path, data) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _problems(tmp_path, data, model="transformer") -> tuple[str, list[str]]:
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_search_space(path, model)
    assert str(path) in str(info.value)  # the error names the file
    return str(info.value), info.value.problems


def test_shipped_spaces_exist():
    assert {p.name for p in SPACES} >= {"tx.yaml", "iv3_gru.yaml"}


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_shipped_space_loads_and_every_sample_builds(path):
    model = yaml.safe_load(path.read_text())["model"]
    space = load_search_space(path, model)
    required = {"lr", "weight_decay", "depth", "dropout", "batch_size"}
    if path.name == "tx_pba.yaml":  # PBT: a fixed architecture, augmentation strengths searched
        required = {"lr", "aug_flip", "aug_rotate", "aug_speed", "aug_part_drop"}
    assert required <= set(space.params)
    assert space.points_to_evaluate, "ship a known-good point"
    base = space.apply_fixed(TrainConfig(model=model))
    for point in space.points_to_evaluate:
        assert set(point) == set(space.params)
        resolve_config(point, base)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(200):  # anything the space samples is a buildable config
        resolve_config(study.ask(dict(space.params)).params, base)


def test_transformer_space_searches_the_main_knobs():
    space = load_search_space(SPACES[[p.name for p in SPACES].index("tx.yaml")], "transformer")
    assert {"d_model", "n_heads", "ff_dim", "label_smoothing"} <= set(space.params)


def test_iv3_gru_space_searches_the_main_knobs():
    path = SPACES[[p.name for p in SPACES].index("iv3_gru.yaml")]
    space = load_search_space(path, "iv3_gru")
    assert {"hidden1", "hidden2"} <= set(space.params)


def test_formats_and_bounds():
    space = parse_search_space(
        {
            "space": {
                "lr": {"distribution": "loguniform", "low": "1e-4", "high": "1e-2"},
                "depth": {"distribution": "randint", "low": 1, "high": 3},
                "d_model": {"distribution": "quniform", "low": 32, "high": 64, "q": 32},
                "dropout": {"distribution": "uniform", "low": 0.0, "high": 0.2},
                "pool": "max",
            },
            "points_to_evaluate": [{"lr": 1e-3, "depth": 3, "d_model": 64}],
        },
        "transformer",
    )
    assert space.params["lr"].low == pytest.approx(1e-4)  # YAML 1.1 reads 1e-4 as a string
    assert space.fixed == {"pool": "max"}
    assert grid(space.params["depth"]) == [1, 2, 3]  # randint's high is included
    assert grid(space.params["d_model"]) == [32, 64]
    # A value a point leaves out comes from the base config when it lies inside the space.
    assert space.points_to_evaluate == ({"lr": 1e-3, "depth": 3, "d_model": 64, "dropout": 0.1},)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    assert {study.ask({"depth": space.params["depth"]}).params["depth"] for _ in range(200)} == {
        1,
        2,
        3,
    }


def test_missing_point_value_outside_the_space_is_an_error():
    with pytest.raises(ConfigError, match="points_to_evaluate\\[0\\]: `d_model` is missing"):
        parse_search_space(
            {
                "space": {"d_model": {"distribution": "choice", "values": [32, 64]}},
                "points_to_evaluate": [{}],
            },
            "transformer",
        )


def test_every_problem_is_reported_at_once(tmp_path):
    text, problems = _problems(
        tmp_path,
        {
            "spaces": 1,
            "space": {
                "lrr": 0.1,  # unknown field
                "lr": {"distribution": "normal", "low": 0, "high": 1},  # unknown distribution
                "weight_decay": {"distribution": "uniform", "low": 0.1, "high": 0.1},
                "label_smoothing": {"distribution": "loguniform", "low": 0.0, "high": 0.1},
                "batch_size": {"distribution": "choice", "values": []},
                "ff_dim": {"distribution": "randint", "low": "small", "high": 256},
                "dropout": 1.5,  # fixed value failing the model's rule
                "epochs": 3,
                "depth": [1, 2],
            },
        },
    )
    joined = "\n".join(problems)
    assert "unknown top-level key(s) spaces" in joined
    assert "`lrr`: unknown field for model 'transformer'" in joined
    assert "valid fields:" in joined and "d_model" in joined and "n_heads" in joined
    assert "unknown distribution 'normal'" in joined
    assert "`low < high` must hold, but got low=0.1, high=0.1" in joined
    assert "loguniform bounds must be > 0" in joined
    assert "choice `values` must not be empty" in joined
    assert "`low` must be a number, but got 'small'" in joined
    assert "fixed value: `dropout` must satisfy 0 <= dropout < 1" in joined
    assert "`epochs` cannot be set by a search space" in joined
    assert "write {distribution: choice, values: [1, 2]}" in joined
    assert len(problems) == 10
    assert text.startswith("invalid search space")


def test_unknown_field_names_the_model_it_belongs_to(tmp_path):
    _, problems = _problems(tmp_path, {"space": {"hidden1": 8}}, model="transformer")
    assert "belongs to model 'iv3_gru'" in problems[0]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"distribution": "choice", "values": ["wide", 64]}, "`d_model` must be an integer"),
        ({"distribution": "uniform", "low": 16.5, "high": 64}, "must be an integer"),
        ({"distribution": "randint", "low": 0, "high": 64}, "`d_model`: low=0 is invalid"),
        ({"distribution": "quniform", "low": 32, "high": 100, "q": 32}, "multiple of q"),
        ({"distribution": "choice", "values": [32, 32]}, "must be distinct"),
        ({"distribution": "uniform", "low": 32}, "uniform needs high"),
        ({"distribution": "uniform", "low": 32, "high": 64, "q": 2}, "do not apply to uniform"),
        ({"low": 32, "high": 64}, "a mapping needs `distribution:`"),
    ],
)
def test_bad_distribution(tmp_path, spec, message):
    text, _ = _problems(tmp_path, {"space": {"d_model": spec}})
    assert message in text


def test_wrong_types_for_bool_and_string_fields(tmp_path):
    text, _ = _problems(
        tmp_path,
        {
            "space": {
                "amp": {"distribution": "uniform", "low": 0, "high": 1},
                "pool": {"distribution": "choice", "values": ["mean", "attention"]},
                "bucket": "yes",
            }
        },
    )
    assert "`amp` is a bool field" in text
    assert "`pool` must be one of mean, max" in text
    assert "`bucket` must be true or false" in text


def test_heads_width_combination_is_checked(tmp_path):
    text, _ = _problems(
        tmp_path,
        {
            "space": {
                "d_model": {"distribution": "choice", "values": [36, 64]},
                "n_heads": {"distribution": "choice", "values": [4, 8]},
            }
        },
    )
    assert "invalid combination (d_model=36, n_heads=8)" in text
    assert "`n_heads` must divide `d_model`" in text


def test_compatible_heads_and_widths_pass():
    parse_search_space(
        {
            "space": {
                "d_model": {"distribution": "choice", "values": [32, 64, 128]},
                "n_heads": {"distribution": "choice", "values": [2, 4, 8]},
            }
        },
        "transformer",
    )


def test_cross_field_rules_on_training_fields(tmp_path):
    text, _ = _problems(
        tmp_path,
        {
            "space": {
                "scheduler": {"distribution": "choice", "values": ["cosine", "plateau"]},
                "warmup_epochs": {"distribution": "randint", "low": 0, "high": 2},
            }
        },
    )
    assert "invalid combination" in text and "`warmup_epochs` applies to the cosine" in text


def test_points_to_evaluate_are_checked(tmp_path):
    text, problems = _problems(
        tmp_path,
        {
            "space": {
                "lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-2},
                "pool": "mean",
            },
            "points_to_evaluate": [{"lr": 0.5}, {"pool": "max"}, {"depth": 2}, 3],
        },
    )
    assert "points_to_evaluate[0]: `lr`=0.5 is outside its distribution" in text
    assert "points_to_evaluate[1]: `pool` is fixed" in text
    assert "points_to_evaluate[2]: `depth` is not a searched field" in text
    assert "points_to_evaluate[3] must be a mapping" in text


def test_model_in_file_must_match(tmp_path):
    text, _ = _problems(tmp_path, {"model": "iv3_gru", "space": {"lr": 0.1}})
    assert "the file is for model 'iv3_gru'" in text


def test_model_comes_from_the_file_when_not_given(tmp_path):
    path = _write(tmp_path, {"model": "iv3_gru", "space": {"hidden1": 32}})
    assert load_search_space(path).model == "iv3_gru"


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_search_space(tmp_path / "nope.yaml", "transformer")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_search_space(_write(tmp_path, "space: [unclosed"), "transformer")
    with pytest.raises(ConfigError, match="non-empty mapping"):
        load_search_space(_write(tmp_path, "space: {}"), "transformer")


def test_unsafe_yaml_tags_are_refused(tmp_path):
    path = _write(tmp_path, "space:\n  lr: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_search_space(path, "transformer")


def test_fixed_values_apply_to_the_base():
    space = parse_search_space({"space": {"pool": "max", "lr": 0.01}}, "transformer")
    base = space.apply_fixed(TrainConfig())
    assert base.lr == 0.01 and base.arch["pool"] == "max"
    assert space.params == {}


def test_large_integer_ranges_are_checked_next_to_their_ends(tmp_path):
    """Divisibility rules are not ranges: 16..64 ends are fine but 17 is not (odd d_model)."""
    text, problems = _problems(
        tmp_path,
        {"space": {"d_model": {"distribution": "randint", "low": 16, "high": 64}, "n_heads": 4}},
    )
    assert "`d_model`: value 17 is invalid" in text
    ok = parse_search_space(
        {
            "space": {
                "d_model": {"distribution": "quniform", "low": 16, "high": 512, "q": 16},
                "n_heads": {"distribution": "choice", "values": [2, 4]},
            }
        },
        "transformer",
    )
    assert representatives(ok.params["d_model"]) == [16, 32, 496, 512]
