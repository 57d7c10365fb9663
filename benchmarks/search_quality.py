"""Benchmark 4: search quality per epoch budget: Optuna+ASHA vs random+FIFO vs Optuna standalone.

All three search `search_spaces/tx.yaml` on one fixed synthetic keypoint dataset (40 glosses,
medium difficulty, 10 train + 4 val clips per gloss, lengths 16-80) with the same total budget
of B = 8 trials x 8 epochs = 64 epochs, for each of 3 seeds (the seed drives the sampler and
training):

- random+FIFO: `python -m signray.tune --searcher random --trial-scheduler fifo --num-samples 8`
  (its 8 x 8 epochs are the budget);
- Optuna+ASHA: `python -m signray.tune` (TPE + ASHA, grace 1, reduction 2) with 24 samples,
  stopped (a Tune stopper) once B epochs have been reported;
- Optuna standalone: one process, no Ray: Optuna TPE + MedianPruner asking for configs and
  calling `signray.training.loop.train_loop` with a Reporter that reports every epoch to the
  Optuna trial
  and raises `optuna.TrialPruned` when the pruner says so, until B epochs have been trained.

The Ray searches run 2 trials at once on 1 CPU each; the standalone study runs one trial at a
time with 2 torch threads. Reported per method and seed: the best val gloss accuracy among the
first B epochs, the wall time, and for the two Optuna methods the fraction of B after which
their running best first reached random+FIFO's best (target for Optuna+ASHA: <= 0.4).

    python -m benchmarks.search_quality [--seeds 0 1 2] [--budget-trials 8] [--tiny]
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

from ray import tune

from benchmarks._common import base_parser, median, target, write_result
from benchmarks.search_efficiency import SPACE, TINY_DATA, data_config, data_flags, run_search
from benchmarks.throughput import bench_dataset

__all__ = ["BudgetStopper", "main", "reach_fraction", "run_standalone"]

QUALITY_DATA = dict(
    num_gloss=40, num_cat=8, train_per_gloss=10, val_per_gloss=4, min_len=16, max_len=80
)
ASHA_SAMPLES_PER_BUDGET_TRIAL = 3
TARGET_REACH = 0.4


class BudgetStopper(tune.Stopper):
    """Ends the whole experiment once `budget` epochs have been reported over all trials.

    Epochs are counted as distinct (trial, epoch) pairs: Tune may consult a stopper more than
    once per result.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.epochs: set[tuple[str, int]] = set()

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self.epochs.add((trial_id, int(result["epoch"])))
        return False

    def stop_all(self) -> bool:
        return len(self.epochs) >= self.budget


class _BudgetSpent(Exception):
    pass


class OptunaReporter:
    """The loop's Reporter for a standalone Optuna trial: report each epoch, prune on request."""

    def __init__(self, trial, arrivals: list[tuple[float, float]], budget: int) -> None:
        self.trial, self.arrivals, self.budget = trial, arrivals, budget

    def resume_state(self) -> None:
        return None

    def report(self, metrics: dict[str, float], state, *, is_best: bool) -> None:
        import optuna

        self.arrivals.append((time.time(), float(metrics["val_gloss_acc"])))
        self.trial.report(metrics["val_gloss_acc"], int(metrics["epoch"]))
        if len(self.arrivals) >= self.budget:
            raise _BudgetSpent
        if self.trial.should_prune():
            raise optuna.TrialPruned()


def run_standalone(
    root: Path, spec: dict[str, int], *, epochs: int, budget: int, seed: int, startup: int
) -> dict[str, Any]:
    """Optuna TPE + MedianPruner over `train_loop` in this process until `budget` epochs."""
    import optuna
    import torch
    from optuna.trial import TrialState

    from signray.config import resolve_config
    from signray.config.search_space import load_search_space
    from signray.training.inputs import load_inputs
    from signray.training.loop import train_loop

    base = resolve_config(
        {
            **data_config(root, spec),
            "model": "transformer",
            "epochs": epochs,
            "seed": seed,
            "num_threads": 2,
        }
    )
    space = load_search_space(SPACE, "transformer", base)
    base = space.apply_fixed(base)
    data = load_inputs(base)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    for point in space.points_to_evaluate:
        study.enqueue_trial(dict(point))
    distributions = dict(space.params)  # Optuna distributions already
    arrivals: list[tuple[float, float]] = []
    start = time.time()
    while len(arrivals) < budget:
        trial = study.ask(distributions)
        sampled = {k: float(f"{v:.12g}") if isinstance(v, float) else v
                   for k, v in trial.params.items()}  # fmt: skip
        cfg = resolve_config(sampled, base)
        try:
            result = train_loop(cfg, OptunaReporter(trial, arrivals, budget), data)
        except (optuna.TrialPruned, _BudgetSpent):
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, result.last_metrics["val_gloss_acc"])
    torch.set_num_threads(1)
    return {
        "arrivals": [(t - start, acc) for t, acc in arrivals],
        "wall_s": time.time() - start,
        "trials": len(study.trials),
    }


def reach_fraction(arrivals: list[tuple[float, float]], goal: float, budget: int) -> float:
    """Fraction of the budget after which the running best first reached `goal` (inf: never)."""
    for i, (_, acc) in enumerate(arrivals[:budget], start=1):
        if acc >= goal - 1e-9:
            return i / budget
    return math.inf


def _ray_method(name: str, flags: list[str], storage: Path, budget: int | None) -> dict[str, Any]:
    """One `signray.tune` search; stopped after `budget` epochs unless it is None."""
    stop = BudgetStopper(budget) if budget is not None else None
    code, clock = run_search(flags + ["--name", f"{name}-{int(time.time())}"], storage, stop)
    return {
        "arrivals": [(t - clock.fit_start, acc) for t, acc in clock.arrivals()],
        "wall_s": clock.fit_end - clock.fit_start,
        "trials": len(clock.trials),
        "exit_code": code,
    }


def _summary(run: dict[str, Any], budget: int) -> dict[str, Any]:
    within = run["arrivals"][:budget]
    return {
        "best_val_gloss_acc": max((acc for _, acc in within), default=0.0),
        "epochs": len(within),
        "wall_s": run["wall_s"],
        "trials": run["trials"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser("search_quality", __doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (0 1 2)")
    p.add_argument("--budget-trials", type=int, default=None, help="random+FIFO trials (8)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (8)")
    p.add_argument("--storage", type=Path, default=None, help="experiment folder (a temp dir)")
    args = p.parse_args(argv)
    spec = TINY_DATA if args.tiny else QUALITY_DATA
    seeds = args.seeds or ([0] if args.tiny else [0, 1, 2])
    epochs = args.epochs or (2 if args.tiny else 8)
    fifo_trials = args.budget_trials or (2 if args.tiny else 8)
    budget = fifo_trials * epochs
    asha_samples = fifo_trials * ASHA_SAMPLES_PER_BUDGET_TRIAL
    startup = min(10, max(2, asha_samples // 4))  # what signray's TPE uses for this many samples
    root = bench_dataset(spec, features=False)
    storage = args.storage or Path(tempfile.mkdtemp(prefix="signray-bench-quality-"))
    common = [
        "--model", "transformer", "--search-space", str(SPACE), *data_flags(root, spec),
        "--epochs", str(epochs), "--max-concurrent", "2", "--cpus-per-trial", "1",
    ]  # fmt: skip
    runs: dict[str, dict[int, dict[str, Any]]] = {"random_fifo": {}, "optuna_asha": {}}
    runs["optuna_standalone"] = {}
    for seed in seeds:
        s = ["--seed", str(seed)]
        runs["random_fifo"][seed] = _ray_method(
            "random-fifo",
            [*common, *s, "--searcher", "random", "--trial-scheduler", "fifo",
             "--num-samples", str(fifo_trials)],
            storage, None,  # its trials x epochs are the budget
        )  # fmt: skip
        runs["optuna_asha"][seed] = _ray_method(
            "optuna-asha",
            [*common, *s, "--num-samples", str(asha_samples)],
            storage,
            budget,
        )
        runs["optuna_standalone"][seed] = run_standalone(
            root, spec, epochs=epochs, budget=budget, seed=seed, startup=startup
        )
    import ray

    ray.shutdown()
    results: dict[str, Any] = {}
    for method, by_seed in runs.items():
        per_seed = {seed: _summary(run, budget) for seed, run in by_seed.items()}
        results[method] = {
            "per_seed": per_seed,
            "median_best_val_gloss_acc": median(r["best_val_gloss_acc"] for r in per_seed.values()),
            "median_wall_s": median(r["wall_s"] for r in per_seed.values()),
            "arrivals": {seed: run["arrivals"] for seed, run in by_seed.items()},
        }
    for method in ("optuna_asha", "optuna_standalone"):
        fractions = {
            seed: reach_fraction(
                runs[method][seed]["arrivals"],
                results["random_fifo"]["per_seed"][seed]["best_val_gloss_acc"],
                budget,
            )
            for seed in seeds
        }
        results[method]["reach_fifo_best_fraction"] = fractions
        results[method]["median_reach_fifo_best_fraction"] = median(fractions.values())
    for method, r in results.items():
        print(
            f"{method:>18}: best val gloss acc (median over seeds) "
            f"{r['median_best_val_gloss_acc']:.3f}, wall {r['median_wall_s']:.0f}s",
            flush=True,
        )
    reach = results["optuna_asha"]["median_reach_fifo_best_fraction"]
    return write_result(
        "search_quality",
        args,
        {
            "config": {
                "data": spec,
                "seeds": seeds,
                "epochs_per_trial": epochs,
                "budget_epochs": budget,
                "random_fifo_trials": fifo_trials,
                "optuna_asha_samples": asha_samples,
                "tpe_startup_trials": startup,
                "space": SPACE.name,
                "storage": str(storage),
            },
            "results": results,
            "targets": [
                target(
                    "Optuna+ASHA epochs to reach random+FIFO best / budget (median)",
                    reach if math.isfinite(reach) else 99.0,
                    TARGET_REACH,
                    higher_is_better=False,
                )
            ],
        },
    )


if __name__ == "__main__":
    main()
