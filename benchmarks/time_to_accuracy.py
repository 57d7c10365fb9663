"""Benchmark 6: wall time until a search's best val gloss accuracy first reaches a target.

Three contestants search the same space (`search_spaces/tx.yaml`, its points_to_evaluate
first) on the same data with the same budget (at most `--trials` trials of `--epochs` epochs),
for each seed, interleaved (seed 0: A B C, seed 1: A B C, ...):

- signray: `signray.tune` as a user runs it (plan, data validated and shared once, Ray started,
  TPE + ASHA on samples seen, reused one-worker trials), 2 trials at once on 1 CPU each;
- stock Ray Tune, as Ray's documentation shows it: a Tune function per trial that runs a Ray
  Train `TorchTrainer` (1 worker, 1 CPU; `TuneReportCallback`), `OptunaSearch` (TPE) +
  `ASHAScheduler` on `training_iteration` (grace 1), each trial's worker loading its data from
  the files, 2 trials at once; the same training loop (`signray.training.loop.train_loop`);
- Optuna standalone: one process, no Ray: TPE + MedianPruner asking for configs and calling the
  same loop with 2 torch threads, one trial at a time.

`--baseline REF` adds signray as another version has it (a checkout folder such as
``/work/main``, or a git commit or branch, extracted once): both signray contestants then run in
fresh processes of their own trees, interleaved with the others.

Each clock starts when the contestant starts (signray and stock Ray include starting Ray; the
shared Python imports are not counted) and stops at the first epoch whose val gloss accuracy
reaches `--target`; every contestant then stops. A contestant that spends its budget without
reaching the target scores its whole wall time and is marked "not reached". Targets: signray's
median time <= 0.5x stock Ray Tune's and <= Optuna standalone's.

The default target, 0.55, is above what the space's first point reaches in 8 epochs on this
data (0.38-0.50 in benchmark 4) and below what the searches found there (0.53-0.58): it takes a
search to reach it.

    python -m benchmarks.time_to_accuracy [--seeds 0 1 2] [--target 0.55] [--baseline main] [--tiny]
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ray import tune

from benchmarks._common import (
    REPO,
    base_parser,
    baseline_tree,
    median,
    result_of_code,
    target,
    write_result,
)
from benchmarks.search_efficiency import SPACE, TINY_DATA, data_config, data_flags, run_search
from benchmarks.search_quality import QUALITY_DATA
from benchmarks.throughput import bench_dataset

__all__ = ["TargetStopper", "main", "run_signray", "run_standalone", "run_stock_ray"]

CONCURRENCY = 2


class TargetStopper(tune.Stopper):
    """Records every epoch's arrival; ends the experiment once one reaches the target."""

    def __init__(self, goal: float) -> None:
        self.goal = goal
        self.arrivals: list[tuple[float, float]] = []

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self.arrivals.append((time.time(), float(result["val_gloss_acc"])))
        return False

    def stop_all(self) -> bool:
        return any(acc >= self.goal for _, acc in self.arrivals)


def _outcome(start: float, arrivals: list[tuple[float, float]], goal: float, **extra) -> dict:
    end = time.time()
    reached = next((t - start for t, acc in arrivals if acc >= goal), None)
    return {
        "time_to_target_s": reached if reached is not None else end - start,
        "reached": reached is not None,
        "best_val_gloss_acc": max((acc for _, acc in arrivals), default=0.0),
        "epochs": len(arrivals),
        "wall_s": end - start,
        **extra,
    }


def run_signray(root: Path, spec: dict, *, epochs: int, trials: int, seed: int, goal: float,
                storage: Path) -> dict[str, Any]:  # fmt: skip
    import ray

    stop = TargetStopper(goal)
    flags = [
        "--model", "transformer", "--search-space", str(SPACE), *data_flags(root, spec),
        "--epochs", str(epochs), "--num-samples", str(trials), "--seed", str(seed),
        "--max-concurrent", str(CONCURRENCY), "--cpus-per-trial", "1",
        "--name", f"tta-signray-{seed}-{int(time.time())}",
    ]  # fmt: skip
    start = time.time()
    code, _ = run_search(flags, storage, stop)
    ray.shutdown()
    return _outcome(start, stop.arrivals, goal, exit_code=code)


def _stock_worker(config: dict) -> None:
    """Ray Train worker: load the data from the files, run the loop, report every epoch."""
    import ray.train

    from signray.config import resolve_config
    from signray.training.loop import train_loop
    from signray.tuning.reporters import RayReporter

    cfg = resolve_config(config["params"], config["base"])
    reporter = RayReporter(ray.train.report, ray.train.get_checkpoint, cfg.epochs, progress=False)
    train_loop(cfg, reporter)  # load_inputs(cfg): reads and validates the files


def _stock_trial(config: dict, base, storage: str) -> None:
    """The Tune trial: one TorchTrainer, as Ray's "Tune + Train" guide writes it."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trainer = TorchTrainer(
        _stock_worker,
        train_loop_config={"params": config, "base": base},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(
            name=f"stock-{tune.get_context().get_trial_id()}",
            storage_path=storage,
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


# This process's environment before any contestant ran: the stock setup runs with Ray's own
# defaults, not with the settings signray's contestant leaves here (Tune's snapshot period, Ray
# Train's poll interval, ...).
_ENV_AT_START = dict(os.environ)


@contextlib.contextmanager
def _environment_at_start() -> Iterator[None]:
    now = dict(os.environ)
    os.environ.clear()
    os.environ.update(_ENV_AT_START)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(now)


def run_stock_ray(root: Path, spec: dict, **kw) -> dict[str, Any]:
    """`_run_stock_ray` with Ray's defaults (`_environment_at_start`)."""
    with _environment_at_start():
        return _run_stock_ray(root, spec, **kw)


def _run_stock_ray(root: Path, spec: dict, *, epochs: int, trials: int, seed: int, goal: float,
                   storage: Path) -> dict[str, Any]:  # fmt: skip
    import ray
    from ray.tune.search.optuna import OptunaSearch

    from signray.config import resolve_config
    from signray.config.search_space import load_search_space
    from signray.tuning.cluster import init_ray
    from signray.tuning.resources import DRIVER_MEMORY_BYTES

    start = time.time()
    base = resolve_config(
        {**data_config(root, spec), "model": "transformer", "epochs": epochs, "seed": seed,
         "num_threads": 1}
    )  # fmt: skip
    space = load_search_space(SPACE, "transformer", base)
    base = space.apply_fixed(base)
    init_ray(num_cpus=CONCURRENCY, quiet=True)
    stop = TargetStopper(goal)
    trainable = tune.with_resources(
        tune.with_parameters(_stock_trial, base=base, storage=str(storage / "stock_train")),
        {"CPU": 0, "memory": DRIVER_MEMORY_BYTES},
    )
    searcher = OptunaSearch(
        space=dict(space.params),
        metric="val_gloss_acc",
        mode="max",
        points_to_evaluate=[dict(p) for p in space.points_to_evaluate] or None,
        seed=seed,
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            num_samples=trials,
            search_alg=searcher,
            scheduler=tune.schedulers.ASHAScheduler(max_t=epochs, grace_period=1),
            metric="val_gloss_acc",
            mode="max",
            max_concurrent_trials=CONCURRENCY,
        ),
        run_config=tune.RunConfig(
            name=f"tta-stock-{seed}-{int(time.time())}",
            storage_path=str(storage),
            stop=stop,
            verbose=0,
        ),
    )
    tuner.fit()
    outcome = _outcome(start, stop.arrivals, goal)
    ray.shutdown()
    return outcome


class _Reached(Exception):
    pass


def run_standalone(root: Path, spec: dict, *, epochs: int, trials: int, seed: int, goal: float,
                   storage: Path) -> dict[str, Any]:  # fmt: skip
    """Optuna TPE + MedianPruner over the loop in this process, 2 torch threads."""
    import optuna
    import torch
    from optuna.trial import TrialState

    from signray.analysis.experiment import tidy_params
    from signray.config import resolve_config
    from signray.config.search_space import load_search_space
    from signray.training.inputs import load_inputs
    from signray.training.loop import train_loop

    start = time.time()
    base = resolve_config(
        {**data_config(root, spec), "model": "transformer", "epochs": epochs, "seed": seed,
         "num_threads": CONCURRENCY}
    )  # fmt: skip
    space = load_search_space(SPACE, "transformer", base)
    base = space.apply_fixed(base)
    data = load_inputs(base)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    for point in space.points_to_evaluate:
        study.enqueue_trial(dict(point))
    arrivals: list[tuple[float, float]] = []

    class Reporter:
        def __init__(self, trial) -> None:
            self.trial = trial

        def resume_state(self) -> None:
            return None

        def report(self, metrics, state, *, is_best) -> None:
            acc = float(metrics["val_gloss_acc"])
            arrivals.append((time.time(), acc))
            if acc >= goal:
                raise _Reached
            self.trial.report(acc, int(metrics["epoch"]))
            if self.trial.should_prune():
                raise optuna.TrialPruned()

    for _ in range(trials):
        trial = study.ask(dict(space.params))
        cfg = resolve_config(tidy_params(trial.params), base)
        try:
            result = train_loop(cfg, Reporter(trial), data)
        except _Reached:
            break
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, result.last_metrics["val_gloss_acc"])
    torch.set_num_threads(1)
    return _outcome(start, arrivals, goal)


CONTESTANTS = {"signray": run_signray, "stock_ray_tune": run_stock_ray,
               "optuna_standalone": run_standalone}  # fmt: skip

# `run_signray` in a fresh process of another tree (what both versions define).
_SIGNRAY_CHILD = """
import json, sys
from pathlib import Path
from benchmarks.time_to_accuracy import run_signray
a = json.loads(sys.argv[1])
r = run_signray(Path(a["root"]), a["spec"], epochs=a["epochs"], trials=a["trials"],
                seed=a["seed"], goal=a["goal"], storage=Path(a["storage"]))
print("@@RESULT " + json.dumps(r, default=float))
"""


def signray_in(tree: Path):
    """`run_signray` as `tree` has it, in a fresh process."""

    def run(root: Path, spec: dict, **kw) -> dict[str, Any]:
        return result_of_code(_SIGNRAY_CHILD, {"root": root, "spec": spec, **kw}, tree)

    return run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser("time_to_accuracy", __doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (0 1 2)")
    p.add_argument("--target", type=float, default=None, help="val gloss accuracy to reach (0.55)")
    p.add_argument("--trials", type=int, default=None, help="budget: trials per search (16)")
    p.add_argument("--epochs", type=int, default=None, help="budget: epochs per trial (8)")
    p.add_argument("--storage", type=Path, default=None, help="experiment folder (a temp dir)")
    p.add_argument("--baseline", default=None,
                   help="also run another version of signray: a checkout folder, or a git "
                   "commit or branch of this repository")  # fmt: skip
    args = p.parse_args(argv)
    spec = TINY_DATA if args.tiny else QUALITY_DATA
    seeds = args.seeds or ([0] if args.tiny else [0, 1, 2])
    goal = args.target if args.target is not None else (0.99 if args.tiny else 0.55)
    trials = args.trials or (2 if args.tiny else 16)
    epochs = args.epochs or (2 if args.tiny else 8)
    root = bench_dataset(spec, features=False)
    storage = args.storage or Path(tempfile.mkdtemp(prefix="signray-bench-tta-"))
    contestants = dict(CONTESTANTS)
    if args.baseline:
        contestants["signray"] = signray_in(REPO)
        contestants["signray_baseline"] = signray_in(baseline_tree(args.baseline))
    runs: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in contestants}
    record: dict[str, Any] = {}
    for seed in seeds:
        for name, fn in contestants.items():
            runs[name][seed] = fn(
                root, spec, epochs=epochs, trials=trials, seed=seed, goal=goal, storage=storage
            )
            r = runs[name][seed]
            print(
                f"seed {seed} {name:>18}: {r['time_to_target_s']:.1f}s "
                f"({'reached' if r['reached'] else 'NOT reached'}; best "
                f"{r['best_val_gloss_acc']:.3f} after {r['epochs']} epochs)",
                flush=True,
            )
        # Written after every seed: a long run stopped early keeps the seeds it finished.
        config = {"data": spec, "space": SPACE.name, "target_val_gloss_acc": goal,
                  "budget": {"trials": trials, "epochs_per_trial": epochs}, "seeds": seeds,
                  "seeds_done": sorted(runs["signray"]), "concurrency": CONCURRENCY,
                  "storage": str(storage), "baseline": args.baseline or ""}  # fmt: skip
        record = write_result("time_to_accuracy", args, _summary(runs, config))
    return record


def _summary(runs: dict[str, dict[int, dict[str, Any]]], config: dict) -> dict[str, Any]:
    results = {
        name: {
            "per_seed": by_seed,
            "median_time_to_target_s": median(r["time_to_target_s"] for r in by_seed.values()),
            "reached": sum(r["reached"] for r in by_seed.values()),
        }
        for name, by_seed in runs.items()
    }
    mine = results["signray"]["median_time_to_target_s"]
    stock = results["stock_ray_tune"]["median_time_to_target_s"]
    alone = results["optuna_standalone"]["median_time_to_target_s"]
    targets = [
        target("signray / stock Ray Tune time to target", mine / stock, 0.5,
               higher_is_better=False),
        target("signray / Optuna standalone time to target", mine / alone, 1.0,
               higher_is_better=False),
    ] if math.isfinite(mine) else []  # fmt: skip
    if "signray_baseline" in results and math.isfinite(mine):
        base = results["signray_baseline"]["median_time_to_target_s"]
        targets.append(
            target("signray / baseline signray time to target", mine / base, 1.0,
                   higher_is_better=False)
        )  # fmt: skip
    return {"config": config, "results": results, "targets": targets}


if __name__ == "__main__":
    main()
