from __future__ import annotations

import pytest
import yaml

from signray.config import (
    TrainConfig,
    config_to_flat,
    load_config_file,
    resolve_config,
    save_config,
)
from signray.errors import ConfigError


def test_flat_keys_route_to_arch_and_fields():
    cfg = resolve_config(
        {"model": "transformer", "lr": 3e-4, "depth": 2, "d_model": 64, "n_heads": 4}
    )
    assert cfg.lr == 3e-4
    assert cfg.arch["depth"] == 2 and cfg.arch["d_model"] == 64
    # the complete architecture is stored, defaults included
    assert cfg.arch["ff_dim"] == 1024


def test_round_trip_through_flat_dict(tmp_path):
    cfg = resolve_config({"model": "iv3_gru", "hidden1": 32, "epochs": 3})
    path = save_config(cfg, tmp_path / "c.yaml")
    again = resolve_config(load_config_file(path))
    assert again == cfg
    assert config_to_flat(again)["hidden1"] == 32


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as err:
        resolve_config({"epochs": 0, "batch_size": 0, "lr": -1.0, "scheduler": "step"})
    text = str(err.value)
    assert len(err.value.problems) == 4
    for needle in ("epochs=0", "batch_size=0", "lr=-1.0", "'step'"):
        assert needle in text


def test_unknown_field_lists_valid_ones_and_hints_other_model():
    with pytest.raises(ConfigError) as err:
        resolve_config({"model": "transformer", "hidden1": 8})
    assert "belongs to model 'iv3_gru'" in str(err.value)
    assert "valid fields" in str(err.value)


def test_unknown_model():
    with pytest.raises(ConfigError, match="known models: iv3_gru, transformer"):
        resolve_config({"model": "resnet"})


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"epochs": "ten"}, "`epochs` must be an integer"),
        ({"epochs": 2.5}, "`epochs` must be an integer"),
        ({"amp": "yes"}, "`amp` must be true or false"),
        ({"lr": "fast"}, "`lr` must be a number"),
        ({"warmup_epochs": 2}, "applies to the cosine scheduler"),
        ({"n_heads": 3}, "n_heads"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"prefetch_factor": 2}, "num_workers"),
        ({"batch_size": 7, "ray_workers": 2}, "divisible by `ray_workers`"),
    ],
)
def test_rules(values, needle):
    with pytest.raises(ConfigError, match=needle):
        resolve_config(values)


def test_integral_floats_become_ints_and_zero_means_off():
    cfg = resolve_config({"epochs": 4.0, "grad_clip": 0, "early_stop": 0})
    assert cfg.epochs == 4 and isinstance(cfg.epochs, int)
    assert cfg.grad_clip is None and cfg.early_stop is None


def test_config_file_must_be_mapping(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config_file(path)


def test_config_file_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("lr: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config_file(path)


def test_defaults_are_valid():
    assert TrainConfig().validate() == TrainConfig()
    assert (
        yaml.safe_load(yaml.safe_dump(config_to_flat(resolve_config({}))))["model"] == "transformer"
    )


def test_yaml_errors_name_the_line_and_refuse_python_tags(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("epochs: 3\nlr: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError) as info:
        load_config_file(evil)
    assert f"{evil} line 2, column 5" in str(info.value)
    assert "!!python/object/apply:os.system is not allowed" in str(info.value)
    binary = tmp_path / "model.pt"
    binary.write_bytes(b"\x80\x02\xff\xfe")
    with pytest.raises(ConfigError, match="cannot be read as a YAML text file"):
        load_config_file(binary)


def test_user_errors_survive_pickling_unchanged():
    """Ray pickles a trial's exception to the driver; the message must not grow a prefix."""
    import pickle

    from signray.errors import DataError

    error = ConfigError(["a", "b"], title="invalid configuration in x.yaml")
    again = pickle.loads(pickle.dumps(pickle.loads(pickle.dumps(error))))
    assert str(again) == str(error) and again.problems == ["a", "b"]
    assert type(pickle.loads(pickle.dumps(DataError("bad")))) is DataError


@pytest.mark.parametrize(
    ("values", "precision", "amp"),
    [
        ({}, "fp32", False),
        ({"amp": True}, "auto", True),
        ({"amp": False}, "fp32", False),
        ({"precision": "bf16"}, "bf16", True),
        ({"precision": "fp16", "amp": True}, "fp16", True),
        ({"precision": "fp32", "amp": False}, "fp32", False),
    ],
)
def test_amp_is_an_alias_of_precision(values, precision, amp):
    cfg = resolve_config(values)
    assert (cfg.precision, cfg.amp) == (precision, amp)
    assert resolve_config(config_to_flat(cfg)) == cfg  # saved configs read back the same


def test_amp_keeps_a_mixed_precision_the_base_has():
    base = resolve_config({"precision": "fp16"})
    assert resolve_config({"amp": True}, base).precision == "fp16"
    assert resolve_config({"amp": False}, base).precision == "fp32"


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"amp": True, "precision": "fp32"}, "`amp` and `precision` disagree"),
        ({"amp": False, "precision": "bf16"}, "`amp` and `precision` disagree"),
        ({"precision": "fp8"}, "`precision` must be one of auto, fp32, bf16, fp16"),
        ({"data_on_gpu": True}, "`data_on_gpu` needs `use_gpu`"),
    ],
)
def test_precision_and_device_rules(values, needle):
    with pytest.raises(ConfigError, match=needle):
        resolve_config(values)


def test_amp_flag_still_works():
    from signray.config.flags import config_from_args
    from signray.train import build_parser

    assert config_from_args(build_parser().parse_args(["--amp"])).precision == "auto"
    args = build_parser().parse_args(["--precision", "bf16", "--no-pin-memory", "--compile"])
    cfg = config_from_args(args)
    assert (cfg.precision, cfg.pin_memory, cfg.compile) == ("bf16", False, True)
