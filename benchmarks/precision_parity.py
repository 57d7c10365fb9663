"""Benchmark 6: does bf16 autocast train as well as fp32? Final val gloss accuracy, paired seeds.

The same runs of the one training loop (`train_loop`, default config: reference architecture,
AdamW lr 1e-3, plateau schedule, batch 32) trained in fp32 and in bf16 autocast (validation is
fp32 in both, as in every run), for each training seed (init, batch order, dropout), on
datasets of different structure:

- synthetic:  the FSL-like synthetic keypoints (`synthetic_splits`, medium difficulty): 78 points
  x (x, y) per frame, 16-60 frames, 20 confusable glosses; reference transformer.
- digits:     scikit-learn's bundled handwritten digits (1,797 real 8x8 scans), each read as a
  sequence of 8 rows of 8 pixels; 10 glosses (the digit), 2 categories (odd / even); a fixed
  stratified 80/20 split; reference transformer.
- features:   the synthetic stand-in InceptionV3 features (2048-d) with the IV3-GRU.

Runs alternate fp32 / bf16 within each seed. The verdict per dataset: the mean of the paired
differences (bf16 - fp32) of the final val gloss accuracy, against the noise of training itself
(the standard deviation of fp32's final accuracy over the seeds, at least one val clip).

    python -m benchmarks.precision_parity [--seeds 3] [--datasets synthetic digits features]
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch

from benchmarks._common import base_parser, median, target, write_result
from signray.config import resolve_config
from signray.data import PackedSplit, synthetic_splits
from signray.training.loop import train_loop
from signray.training.precision import cpu_has_native_bf16

__all__ = ["DATASETS", "digit_splits", "digits_splits", "main"]

# name -> (model, epochs, tiny epochs)
DATASETS = {
    "synthetic": ("transformer", 15, 2),
    "digits": ("transformer", 12, 2),
    "features": ("iv3_gru", 15, 2),
}
SYNTH = dict(num_gloss=20, num_cat=5, train_per_gloss=10, val_per_gloss=5, difficulty="medium",
             min_len=16, max_len=60)  # fmt: skip
SYNTH_TINY = dict(num_gloss=6, num_cat=2, train_per_gloss=4, val_per_gloss=2, difficulty="easy",
                  min_len=8, max_len=24)  # fmt: skip
TINY_ARCH = {"d_model": 32, "n_heads": 4, "depth": 1, "ff_dim": 64, "head_hidden": 32}


def digits_splits(
    tiny: bool = False, train_per_class: int | None = None
) -> tuple[PackedSplit, PackedSplit]:
    """scikit-learn's digits as (8 frames x 8 pixels) sequences; a stratified 80/20 split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)  # (N, 8, 8) in [0, 1]
    return digit_splits(list(images), digits.target, "d", tiny, train_per_class)


def digit_splits(
    clips: list[np.ndarray],
    labels: np.ndarray,
    prefix: str,
    tiny: bool = False,
    train_per_class: int | None = None,
) -> tuple[PackedSplit, PackedSplit]:
    """(train, val) of digit sequences: gloss = the digit, category = its parity; a fixed
    stratified 80/20 split (every 10th clip of each with `tiny`), of which the first
    `train_per_class` training clips of each digit are kept (all by default)."""
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(0)
    train_idx, val_idx = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        cut = int(round(0.8 * len(idx)))
        train_idx += list(idx[:cut][:train_per_class])
        val_idx += list(idx[cut:])
    if tiny:
        train_idx, val_idx = train_idx[::10], val_idx[::10]
    splits = []
    for idx in (sorted(train_idx), sorted(val_idx)):
        splits.append(
            PackedSplit.from_clips(
                [clips[i] for i in idx], labels[idx], labels[idx] % 2, [f"{prefix}{i}" for i in idx]
            )
        )
    return splits[0], splits[1]


def _splits(name: str, tiny: bool) -> tuple[PackedSplit, PackedSplit, int, int]:
    """(train, val, num_gloss, num_cat)."""
    if name == "digits":
        return (*digits_splits(tiny), 10, 2)
    spec = SYNTH_TINY if tiny else SYNTH
    kind = "features" if name == "features" else "keypoints"
    train, val = synthetic_splits(kind=kind, seed=0, **spec)
    return train, val, spec["num_gloss"], spec["num_cat"]


class _Keep:
    """A reporter that keeps the metrics in memory (no files, no checkpoints)."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def resume_state(self):
        return None

    def report(self, metrics, checkpoint, *, is_best: bool) -> None:
        self.history.append(dict(metrics))


def run_one(name: str, precision: str, seed: int, epochs: int, data, tiny: bool) -> dict:
    train, val, num_gloss, num_cat = data
    model = DATASETS[name][0]
    arch = TINY_ARCH if tiny and model == "transformer" else {}
    cfg = resolve_config(
        dict(model=model, num_gloss=num_gloss, num_cat=num_cat, epochs=epochs, seed=seed,
             precision=precision, num_threads=torch.get_num_threads(), **arch)
    )  # fmt: skip
    reporter = _Keep()
    tic = time.perf_counter()
    result = train_loop(cfg, reporter, (train, val))
    last = reporter.history[-1]
    return {
        "final_val_gloss_acc": last["val_gloss_acc"],
        "final_val_loss": last["val_loss"],
        "best_val_gloss_acc": result.best_val_gloss_acc,
        "wall_s": time.perf_counter() - tic,
        "curve": [m["val_gloss_acc"] for m in reporter.history],
    }


def verdict(per_seed: dict[int, dict[str, dict]], val_clips: int) -> dict[str, Any]:
    """Paired bf16 - fp32 differences of the final accuracy against the seed-to-seed noise."""
    fp32 = [r["fp32"]["final_val_gloss_acc"] for r in per_seed.values()]
    bf16 = [r["bf16"]["final_val_gloss_acc"] for r in per_seed.values()]
    diffs = [b - f for b, f in zip(bf16, fp32, strict=True)]
    noise = max(statistics.stdev(fp32) if len(fp32) > 1 else 0.0, 1 / val_clips)
    speed = [r["fp32"]["wall_s"] / r["bf16"]["wall_s"] for r in per_seed.values()]
    mean_diff = statistics.fmean(diffs)
    return {
        "fp32_mean": statistics.fmean(fp32),
        "bf16_mean": statistics.fmean(bf16),
        "paired_diffs": diffs,
        "mean_diff": mean_diff,
        "noise": noise,
        "within_noise": abs(mean_diff) <= noise,
        "bf16_speedup_wall": median(speed),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser("precision_parity", __doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=None, help="training seeds (3)")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = range(args.seeds or (1 if args.tiny else 3))
    if not cpu_has_native_bf16():
        print("note: this CPU emulates bf16 (no AVX512-BF16/AMX): accuracy still compares, "
              "speed does not", flush=True)  # fmt: skip
    results: dict[str, Any] = {}
    targets = []
    for name in args.datasets:
        data = _splits(name, args.tiny)
        epochs = DATASETS[name][2 if args.tiny else 1]
        per_seed: dict[int, dict[str, dict]] = {}
        for seed in seeds:
            per_seed[seed] = {}
            for precision in ("fp32", "bf16"):
                run = run_one(name, precision, seed, epochs, data, args.tiny)
                per_seed[seed][precision] = run
                print(f"{name} seed {seed} {precision}: final val_gloss_acc "
                      f"{run['final_val_gloss_acc']:.4f}, best {run['best_val_gloss_acc']:.4f}, "
                      f"{run['wall_s']:.0f}s", flush=True)  # fmt: skip
        v = verdict(per_seed, len(data[1]))
        results[name] = {
            "model": DATASETS[name][0],
            "epochs": epochs,
            "train_clips": len(data[0]),
            "val_clips": len(data[1]),
            "per_seed": per_seed,
            **v,
        }
        print(f"{name}: fp32 {v['fp32_mean']:.4f}, bf16 {v['bf16_mean']:.4f}, mean diff "
              f"{v['mean_diff']:+.4f} (noise {v['noise']:.4f}): "
              f"{'within' if v['within_noise'] else 'OUTSIDE'} noise", flush=True)  # fmt: skip
        targets.append(
            target(
                f"{name}: |bf16 - fp32| final val gloss acc - noise",
                abs(v["mean_diff"]) - v["noise"],
                0.0,
                higher_is_better=False,
            )  # fmt: skip
        )
    return write_result(
        "precision_parity",
        args,
        {
            "config": {
                "seeds": list(seeds),
                "threads": args.threads,
                "synthetic": SYNTH,
                "cpu_native_bf16": cpu_has_native_bf16(),
            },  # fmt: skip
            "results": results,
            "targets": targets,
        },
    )


if __name__ == "__main__":
    main()
