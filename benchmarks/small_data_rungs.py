"""Benchmark 7: do ASHA's rungs fit small data? Epoch rungs vs rungs on samples seen.

The issue-13 case: a sign-language dataset with few clips per class. 10 glosses x 5 training
clips (50 clips; 4 val clips per gloss), medium difficulty, the shipped `search_spaces/tx.yaml`,
base batch 16 (4 optimizer steps per epoch), 12 trials x 60 epochs, TPE + ASHA (reduction 2),
2 trials at once; for each seed, interleaved:

- epochs, grace 1 (the old default): `--budget-unit epochs --grace-period 1`: a trial is judged
  after 4 optimizer steps;
- samples, default grace (the new default): a trial is judged after max(one epoch, 50 optimizer
  steps at the base batch size, the warm-up) = 800 samples (16 epochs) here.

Reported per search: the best trial's best val gloss accuracy, the first trial's (the space's
own first point, the default config), how many trials ran to the end and how many were stopped
at or near chance. Target: with the new default, the search's best beats its own first point
(median over seeds). `--fsl` adds the same comparison on FSL-105-sized data (1,680 training
clips: both grace periods are one epoch, so the two searches must agree).

    python -m benchmarks.small_data_rungs [--seeds 0 1 2] [--fsl] [--tiny]
"""

from __future__ import annotations

import csv
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import base_parser, median, target, write_result
from benchmarks.search_efficiency import FULL_DATA, SPACE, TINY_DATA, data_flags, run_search
from benchmarks.throughput import bench_dataset

__all__ = ["SMALL_DATA", "main"]

SMALL_DATA = dict(num_gloss=10, num_cat=2, train_per_gloss=5, val_per_gloss=4, min_len=16,
                  max_len=80)  # fmt: skip
CONTESTANTS = {
    "epochs_grace_1": ["--budget-unit", "epochs", "--grace-period", "1"],
    "samples_default": [],
}


def _search(root: Path, spec: dict, extra: list[str], *, seed: int, trials: int, epochs: int,
            storage: Path) -> dict[str, Any]:  # fmt: skip
    import optuna
    import ray

    from signray.tuning.searcher import RAY_TRIAL_ID_ATTR

    name = f"rungs-{seed}-{len(extra)}-{int(time.time())}"
    flags = [
        "--model", "transformer", "--search-space", str(SPACE), *data_flags(root, spec),
        "--epochs", str(epochs), "--num-samples", str(trials), "--seed", str(seed),
        "--batch-size", "16", "--max-concurrent", "2", "--cpus-per-trial", "1",
        *extra, "--name", name,
    ]  # fmt: skip
    tic = time.time()
    code, _ = run_search(flags, storage)
    wall = time.time() - tic
    ray.shutdown()
    with (storage / name / "trials.csv").open() as f:
        rows = {r["trial_id"]: r for r in csv.DictReader(f)}
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{storage / name / 'optuna.db'}")
    first = rows[study.trials[0].user_attrs[RAY_TRIAL_ID_ATTR]]  # the space's first point
    best = {k: float(r["best_val_gloss_acc"]) for k, r in rows.items()}
    chance = 1.0 / spec["num_gloss"]
    near_chance = 1.0 / (spec["num_gloss"] * spec["val_per_gloss"])  # one val clip above chance
    return {
        "exit_code": code,
        "wall_s": wall,
        "best_val_gloss_acc": max(best.values()),
        "first_point_val_gloss_acc": float(first["best_val_gloss_acc"]),
        "best_minus_first_point": max(best.values()) - float(first["best_val_gloss_acc"]),
        "ran_to_the_end": sum(r["status"] == "TERMINATED" for r in rows.values()),
        "stopped_near_chance": sum(
            r["status"] == "STOPPED_EARLY" and best[k] <= chance + near_chance + 1e-9
            for k, r in rows.items()
        ),
        "epochs_trained": sum(int(r["epochs"]) for r in rows.values()),
        "trials": len(rows),
    }


def _compare(root: Path, spec: dict, *, seeds: list[int], trials: int, epochs: int,
             storage: Path) -> dict[str, Any]:  # fmt: skip
    runs: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in CONTESTANTS}
    for seed in seeds:
        for name, extra in CONTESTANTS.items():
            r = _search(root, spec, extra, seed=seed, trials=trials, epochs=epochs,
                        storage=storage)  # fmt: skip
            runs[name][seed] = r
            print(
                f"seed {seed} {name:>16}: best {r['best_val_gloss_acc']:.3f}, first point "
                f"{r['first_point_val_gloss_acc']:.3f}, {r['ran_to_the_end']}/{r['trials']} ran "
                f"to the end, {r['stopped_near_chance']} stopped near chance, "
                f"{r['epochs_trained']} epochs, {r['wall_s']:.0f}s",
                flush=True,
            )
    return {
        name: {
            "per_seed": by_seed,
            **{
                f"median_{key}": median(r[key] for r in by_seed.values())
                for key in (
                    "best_val_gloss_acc",
                    "first_point_val_gloss_acc",
                    "best_minus_first_point",
                    "stopped_near_chance",
                    "epochs_trained",
                )
            },  # fmt: skip
        }
        for name, by_seed in runs.items()
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser("small_data_rungs", __doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (0 1 2)")
    p.add_argument("--trials", type=int, default=None, help="trials per search (12)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (60)")
    p.add_argument("--fsl", action="store_true", help="also compare on FSL-105-sized data")
    p.add_argument("--storage", type=Path, default=None, help="experiment folder (a temp dir)")
    args = p.parse_args(argv)
    spec = TINY_DATA if args.tiny else SMALL_DATA
    seeds = args.seeds or ([0] if args.tiny else [0, 1, 2])
    trials = args.trials or (2 if args.tiny else 12)
    epochs = args.epochs or (2 if args.tiny else 60)
    storage = args.storage or Path(tempfile.mkdtemp(prefix="signray-bench-rungs-"))
    results = {
        "small": _compare(
            bench_dataset(spec, features=False),
            spec,
            seeds=seeds,
            trials=trials,
            epochs=epochs,
            storage=storage,
        )  # fmt: skip
    }
    if args.fsl:
        results["fsl"] = _compare(bench_dataset(FULL_DATA, features=False), FULL_DATA,
                                  seeds=seeds[:1], trials=8, epochs=6, storage=storage)  # fmt: skip
    new = results["small"]["samples_default"]["median_best_minus_first_point"]
    return write_result(
        "small_data_rungs",
        args,
        {
            "config": {"data": spec, "seeds": seeds, "trials": trials, "epochs": epochs,
                       "base_batch_size": 16, "space": SPACE.name, "storage": str(storage)},
            "results": results,
            "targets": [
                target("small data: search best - first point (samples rungs, median)", new,
                       1e-9),
            ],
        },
    )  # fmt: skip


if __name__ == "__main__":
    main()
