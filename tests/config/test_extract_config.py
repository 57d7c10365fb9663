"""Extraction settings: checked at once and named by flag; a missing backbone says where to get
torchvision's weights."""

from __future__ import annotations

import pytest
from torchvision.models import Inception_V3_Weights

from signray.config.extract import ExtractConfig
from signray.errors import ConfigError


def test_features_without_weights_name_where_to_get_them():
    with pytest.raises(ConfigError) as err:
        ExtractConfig.from_mapping({"features": True})
    assert Inception_V3_Weights.IMAGENET1K_V1.url in str(err.value)
    assert "--backbone-weights" in str(err.value)


def test_every_bad_value_is_reported():
    with pytest.raises(ConfigError) as err:
        ExtractConfig.from_mapping(
            {"target_fps": 0, "chunk_frames": 0, "conf_thresh": 2, "precision": "fp8"}
        )
    text = str(err.value)
    for name in ("--target-fps", "--chunk-frames", "--conf-thresh", "--precision"):
        assert name in text


def test_the_fingerprint_follows_the_output_settings():
    base = ExtractConfig()
    same = ExtractConfig(keypoint_workers=3, feature_batch=8)  # how, not what
    other = ExtractConfig(target_fps=25)
    fp = ExtractConfig.fingerprint
    assert fp(base.settings(None)) == fp(same.settings(None)) != fp(other.settings(None))
