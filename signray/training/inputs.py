"""Turn a config into the validated train/val data its model needs, before any training starts.

`load_inputs` gives a single process its data (no Ray). `check_inputs` is the Ray driver's
check: both splits completely, in bounded memory, keeping no frames; the data is then loaded by
the nodes that use it (`signray.tuning.trial_data`). Either way the training split's
normalisation statistics are computed once (or read from the manifest) and travel with the data.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from signray.config import TrainConfig
from signray.data import NormStats, Split, SplitIndex, load_split, scan_split, synthetic_splits
from signray.data.manifest import is_shard_dir, read_manifest
from signray.data.splits import load_split_indexed
from signray.data.streaming import ShardStream
from signray.errors import ConfigError, DataError
from signray.storage import RemotePath, as_location, explain_error
from signray.training.augment import layout_problems

__all__ = [
    "MEMORY_SHARE",
    "SMOKE_DATA",
    "InputsSummary",
    "TrainingData",
    "check_inputs",
    "choose_data_mode",
    "input_paths",
    "load_inputs",
    "load_split_for",
    "smoke_spec",
    "stream_inputs",
]

# Small enough for a real forward/backward in seconds, big enough for every gloss to appear.
SMOKE_DATA = {"train_per_gloss": 3, "val_per_gloss": 1, "min_len": 12, "max_len": 40}
# `data_mode: auto` keeps the data in memory when it takes at most this share of the smallest
# object store (or of this machine's memory without Ray); the rest is left for everything else.
MEMORY_SHARE = 0.5


@dataclass
class TrainingData:
    """What the loop trains on: each split in memory (sampled with one global permutation) or a
    `ShardStream` (each rank reads its own shards), and the training frames' statistics."""

    train: Split | ShardStream
    val: Split | ShardStream
    norm: NormStats | None = None  # None: computed from `train`, which must be in memory

    def __iter__(self) -> Iterator[Split | ShardStream]:
        return iter((self.train, self.val))

    @property
    def feature_dim(self) -> int:
        return self.train.feature_dim

    def normalisation(self) -> NormStats:
        if self.norm is not None:
            return self.norm
        if isinstance(self.train, ShardStream):
            raise ValueError("streamed training data needs its statistics (`norm`) given")
        return self.train.norm_stats()


@dataclass(frozen=True)
class InputsSummary:
    """Both splits, checked, without their frames."""

    train: SplitIndex
    val: SplitIndex

    @property
    def nbytes(self) -> int:
        return self.train.nbytes + self.val.nbytes

    @property
    def streamable(self) -> bool:
        return self.train.streamable and self.val.streamable

    def describe(self) -> str:
        return (
            f"{len(self.train)} train / {len(self.val)} val clips, D={self.train.feature_dim} "
            f"{self.train.dtype.name}, {self.nbytes / 2**20:.0f} MiB of frames"
        )


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


def _split_options(cfg: TrainConfig, split: str) -> dict:
    _, _, keys = input_paths(cfg)
    return dict(keys=keys, num_gloss=cfg.num_gloss, num_cat=cfg.num_cat,
                max_frames=cfg.max_frames, split=split)  # fmt: skip


def load_split_for(
    cfg: TrainConfig,
    source: str | os.PathLike[str] | RemotePath,
    labels_csv: str | None,
    split: str,
) -> Split:
    """One split, validated the way `cfg`'s model reads it (npz keys, id ranges, max_frames)."""
    return load_split(source, labels_csv, **_split_options(cfg, split))


def smoke_spec(cfg: TrainConfig) -> dict:
    """The `synthetic_splits` arguments of `cfg`'s built-in smoke-test data."""
    return dict(kind=cfg.spec.input_kind, num_gloss=cfg.num_gloss, num_cat=cfg.num_cat,
                seed=cfg.seed, difficulty="easy", **SMOKE_DATA)  # fmt: skip


def _both(cfg: TrainConfig, read) -> list:
    """`read(source, csv, split)` for train and val; every problem of either split at once."""
    if cfg.smoke_test:
        return [(split, None) for split in synthetic_splits(**smoke_spec(cfg))]
    problems = _check_paths(cfg)
    if problems:
        raise ConfigError(problems)
    train_src, val_src, _ = input_paths(cfg)
    results, problems = [], []
    for split, src, csv in (("train", train_src, cfg.labels_train_csv),
                            ("val", val_src, cfg.labels_val_csv)):  # fmt: skip
        try:
            results.append(read(src, csv, split))
        except DataError as err:
            problems.extend(f"[{split}] {p}" for p in err.problems)
    if problems:
        raise DataError(problems)
    dims = [r[1].feature_dim if r[1] is not None else r[0].feature_dim for r in results]
    if dims[0] != dims[1]:
        raise DataError(
            [f"train clips have D={dims[0]} features per frame but val clips have D={dims[1]}; "
             "both splits must use the same layout"]
        )  # fmt: skip
    if problems := layout_problems(cfg, dims[0]):  # --keypoint-layout against the data
        raise ConfigError(problems)
    return results


def check_inputs(cfg: TrainConfig) -> InputsSummary:
    """Check both splits completely in bounded memory, keeping no frames; raises one error
    with every problem, including a ``data_mode`` the data cannot serve."""
    if cfg.smoke_test:
        if cfg.data_mode == "stream":
            raise ConfigError(
                ["`--data-mode stream` reads format-2 shard folders, but --smoke-test data is "
                 "built in memory (use --data-mode memory or auto)"]
            )  # fmt: skip
        train, val = (SplitIndex.of_split(split) for split, _ in _both(cfg, None))
        return InputsSummary(train, val)
    results = _both(
        cfg, lambda src, csv, split: (None, scan_split(src, csv, **_split_options(cfg, split)))
    )
    summary = InputsSummary(results[0][1], results[1][1])
    problems = []
    if cfg.data_mode == "stream":
        for index in (summary.train, summary.val):
            if not index.streamable:
                problems.append(
                    f"`--data-mode stream` reads format-2 shard folders, but {index.source} is "
                    f"{'a per-clip folder' if index.kind == 'clips' else 'format 1 shards'} "
                    "(pack it with python -m signray.data.pack, or use --data-mode memory)"
                )
        if not problems:
            stream = ShardStream.from_index(summary.train, cfg.max_frames, "train")
            if why := stream.too_few_shards(cfg.ray_workers):
                problems.append(why)
    if problems:
        raise ConfigError(problems)
    return summary


def choose_data_mode(cfg: TrainConfig, summary: InputsSummary, capacity: int) -> tuple[str, str]:
    """(``"memory"`` or ``"stream"``, why) for `cfg.data_mode` on data that must fit `capacity`
    bytes (the smallest object store of the nodes that train, or this machine's memory)."""
    need = f"{summary.nbytes / 2**20:.0f} MiB of frames"
    room = f"{MEMORY_SHARE:.0%} of {capacity / 2**20:.0f} MiB"
    if cfg.data_mode != "auto":
        return cfg.data_mode, f"--data-mode {cfg.data_mode}"
    if summary.nbytes <= MEMORY_SHARE * capacity:
        return "memory", f"auto: {need} fit in {room}"
    stream = summary.streamable and summary.train.kind == "shards-v2"
    if (
        stream
        and ShardStream.from_index(summary.train, cfg.max_frames, "t").too_few_shards(
            cfg.ray_workers
        )
        is None
    ):
        return "stream", f"auto: {need} exceed {room}"
    return "memory", (
        f"auto: {need} exceed {room}, but only format-2 shards (at least one per worker) can "
        "stream: holding them in memory (pack them with python -m signray.data.pack)"
    )


def stream_inputs(cfg: TrainConfig, summary: InputsSummary) -> TrainingData:
    """Both splits as `ShardStream`s (each rank opens its own shards) with the statistics."""
    train = ShardStream.from_index(summary.train, cfg.max_frames, "train")
    val = ShardStream.from_index(summary.val, cfg.max_frames, "val")
    return TrainingData(train, val, summary.train.norm)


def _beyond_memory(cfg: TrainConfig) -> bool:
    """Whether both splits are format-2 shards whose frames (by their manifests) exceed
    `MEMORY_SHARE` of this machine's memory: only then can `auto` mean streaming here."""
    total = 0
    for source in input_paths(cfg)[:2]:
        manifest, _ = (
            read_manifest(as_location(source))
            if source and is_shard_dir(as_location(source))
            else (None, [])
        )
        if manifest is None or manifest["format_version"] != 2:
            return False
        total += (
            manifest["num_frames"] * manifest["feature_dim"] * np.dtype(manifest["dtype"]).itemsize
        )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return total > MEMORY_SHARE * memory


def load_inputs(cfg: TrainConfig) -> TrainingData:
    """Both splits for training in this process, every problem in either reported at once.

    In memory, a per-clip folder or format-1 shards are loaded, format-2 shards memory-mapped;
    ``data_mode`` stream (or auto, when format-2 shards exceed `MEMORY_SHARE` of this machine's
    memory) streams them shard by shard instead.
    """
    stream = cfg.data_mode == "stream" or (cfg.data_mode == "auto" and _beyond_memory(cfg))
    if stream and not cfg.smoke_test:
        return stream_inputs(cfg, check_inputs(cfg))
    results = _both(
        cfg, lambda src, csv, split: load_split_indexed(src, csv, **_split_options(cfg, split))
    )
    (train, train_index), (val, _) = results
    return TrainingData(train, val, train_index.norm if train_index is not None else None)
