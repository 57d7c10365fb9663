"""Turn a config into the validated train/val splits its model needs, before any training starts."""

from __future__ import annotations

import os

from signray.config import TrainConfig
from signray.data import PackedSplit, load_split, synthetic_splits
from signray.errors import ConfigError, DataError
from signray.storage import RemotePath, as_location, explain_error

__all__ = ["SMOKE_DATA", "input_paths", "load_inputs", "load_split_for"]

# Small enough for a real forward/backward in seconds, big enough for every gloss to appear.
SMOKE_DATA = {"train_per_gloss": 3, "val_per_gloss": 1, "min_len": 12, "max_len": 40}


def input_paths(cfg: TrainConfig) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(train source, val source, npz keys to try) for the config's model."""
    if cfg.spec.input_kind == "features":
        keys = tuple(dict.fromkeys((cfg.feature_key, "X")))
        return cfg.features_train, cfg.features_val, keys
    return cfg.keypoints_train, cfg.keypoints_val, (cfg.kp_key,)


def _check_paths(cfg: TrainConfig) -> list[str]:
    train, val, _ = input_paths(cfg)
    flag = "features" if cfg.spec.input_kind == "features" else "keypoints"
    problems = []
    for split, src, csv in (
        ("train", train, cfg.labels_train_csv),
        ("val", val, cfg.labels_val_csv),
    ):
        if src is None:
            problems.append(
                f"`--{flag}-{split}` is required for model {cfg.model!r} (or use --smoke-test)"
            )
            continue
        try:
            if not as_location(src).is_dir():
                problems.append(f"`--{flag}-{split}` {src} is not a folder")
                continue
            packed = (as_location(src) / "manifest.json").is_file()
            if csv is None and not packed:
                problems.append(
                    f"`--labels-{split}-csv` is required: {src} is a per-clip folder "
                    "(no manifest.json)"
                )
            elif csv is not None and not as_location(csv).is_file():
                problems.append(f"`--labels-{split}-csv` {csv} does not exist")
        except OSError as err:
            problems.append(f"`--{flag}-{split}` {src}: {explain_error(err, src)}")
    return problems


def load_split_for(
    cfg: TrainConfig,
    source: str | os.PathLike[str] | RemotePath,
    labels_csv: str | None,
    split: str,
) -> PackedSplit:
    """One split, validated the way `cfg`'s model reads it (npz keys, id ranges, max_frames)."""
    _, _, keys = input_paths(cfg)
    return load_split(
        source,
        labels_csv,
        keys=keys,
        num_gloss=cfg.num_gloss,
        num_cat=cfg.num_cat,
        max_frames=cfg.max_frames,
        split=split,
    )


def load_inputs(cfg: TrainConfig) -> tuple[PackedSplit, PackedSplit]:
    """Validate and load both splits, reporting every problem in either split at once."""
    if cfg.smoke_test:
        return synthetic_splits(
            kind=cfg.spec.input_kind,
            num_gloss=cfg.num_gloss,
            num_cat=cfg.num_cat,
            seed=cfg.seed,
            difficulty="easy",
            **SMOKE_DATA,
        )
    problems = _check_paths(cfg)
    if problems:
        raise ConfigError(problems)
    train_src, val_src, _ = input_paths(cfg)
    splits: list[PackedSplit] = []
    problems = []
    for split, src, csv in (
        ("train", train_src, cfg.labels_train_csv),
        ("val", val_src, cfg.labels_val_csv),
    ):
        try:
            splits.append(load_split_for(cfg, src, csv, split))
        except DataError as err:
            problems.extend(f"[{split}] {p}" for p in err.problems)
    if problems:
        raise DataError(problems)
    train, val = splits
    if train.feature_dim != val.feature_dim:
        raise DataError(
            [
                f"train clips have D={train.feature_dim} features per frame but val clips have "
                f"D={val.feature_dim}; both splits must use the same layout"
            ]
        )
    return train, val
