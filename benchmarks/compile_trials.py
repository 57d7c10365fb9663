"""Benchmark 11: `--compile` in a reused Tune actor: what each trial pays, and whether it runs
compiled at all.

A reused actor trains one sampled config after another in one process. Dynamo guards on float
module attributes (dropout's ``p``), so every new config recompiles the model's forward, and once
`torch._dynamo.config.recompile_limit` (8) configs have been compiled the forward runs eagerly.
`train_loop` now clears Dynamo's caches before it compiles (`loop.compile_model`). Contestants,
each a process training `--trials` configs (dropout 0.05, 0.10, ...) one after another with the
one training loop, as a reused actor does:

- fresh_cache:   `train_loop` as it is (caches cleared per run);
- shared_cache:  the same with `torch._dynamo.reset` made a no-op: the behaviour before the fix;
- eager:         no `--compile`.

Per trial: wall time (compilation included), the first epoch's time, the median of the later
epochs, and the graphs Dynamo compiled in it (0: the trial ran eagerly). Processes run in turn,
`--reps` times (A B C A B C ...); figures are medians over repetitions.

    python -m benchmarks.compile_trials [--trials 10] [--epochs 3] [--reps 2]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import base_parser, median, target, write_result

__all__ = ["main"]

CONTESTANTS = ("fresh_cache", "shared_cache", "eager")
DATA = dict(num_gloss=20, num_cat=5, train_per_gloss=10, val_per_gloss=3, difficulty="medium",
            min_len=16, max_len=60)  # fmt: skip
DATA_TINY = dict(num_gloss=6, num_cat=2, train_per_gloss=4, val_per_gloss=2, difficulty="easy",
                 min_len=8, max_len=24)  # fmt: skip
ARCH = {"d_model": 128, "n_heads": 4, "depth": 2, "ff_dim": 256, "head_hidden": 64}
# The tiny run trains the tiny model of tests/training/test_loop.py (same data, batch size,
# dropouts and one torch thread, which Inductor's cache keys on), so its FX graph cache serves
# those tests the kernels compiled here.
ARCH_TINY = {"d_model": 32, "n_heads": 4, "depth": 1, "ff_dim": 64, "head_hidden": 32}


def _trials(contestant: str, trials: int, epochs: int, tiny: bool, limit: int | None) -> list:
    """Run `trials` configs one after another in this process; one record per trial."""
    import torch
    from torch._dynamo.utils import counters

    from signray.config import resolve_config
    from signray.data import synthetic_splits
    from signray.training.loop import train_loop
    from signray.training.reporters import FileReporter

    if limit is not None:
        torch._dynamo.config.recompile_limit = limit
    if contestant == "shared_cache":
        torch._dynamo.reset = lambda: None  # what train_loop did before it cleared the caches
    data = synthetic_splits(kind="keypoints", seed=0, **(DATA_TINY if tiny else DATA))
    records = []
    runs = tempfile.TemporaryDirectory(prefix="compile_trials_")  # removed when the worker ends
    for i in range(trials):
        out = str(Path(runs.name, str(i)))
        cfg = resolve_config({
            "num_gloss": data[0].gloss.max() + 1, "num_cat": data[0].cat.max() + 1,
            "batch_size": 8 if tiny else 16, "epochs": epochs,
            "dropout": round((0.1 if tiny else 0.05) * (i + 1), 2),
            "compile": contestant != "eager", "output_dir": out, "scheduler": "none",
            **({**ARCH_TINY, "num_threads": 1} if tiny else ARCH),
        })  # fmt: skip
        reporter = FileReporter(out, cfg.spec.class_name, total_epochs=epochs, stream=io.StringIO())
        graphs = counters["stats"]["unique_graphs"]
        tic = time.perf_counter()
        result = train_loop(cfg, reporter, data)
        epoch_s = [m["epoch_seconds"] for m in result.history]
        records.append({
            "dropout": cfg.arch["dropout"], "wall_s": time.perf_counter() - tic,
            "first_epoch_s": epoch_s[0], "later_epoch_s": median(epoch_s[1:] or epoch_s),
            "graphs_compiled": counters["stats"]["unique_graphs"] - graphs,
        })  # fmt: skip
    return records


def _run_process(contestant: str, args: argparse.Namespace) -> list:
    """One contestant in a fresh process (Dynamo's state is per process)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "benchmarks.compile_trials", "--worker", contestant,
               "--trials", str(args.trials), "--epochs", str(args.epochs),
               "--json", out.name]  # fmt: skip
        if args.tiny:
            cmd.append("--tiny")
        if args.recompile_limit is not None:
            cmd += ["--recompile-limit", str(args.recompile_limit)]
        subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parents[1])
        return json.loads(Path(out.name).read_text())


def _summary(reps: list[list[dict]]) -> dict[str, Any]:
    trials = len(reps[0])
    per_trial = [
        {key: median(rep[i][key] for rep in reps) for key in reps[0][i]} for i in range(trials)
    ]
    return {
        "per_trial": per_trial,
        "median_trial_wall_s": median(t["wall_s"] for t in per_trial),
        "median_later_epoch_s": median(t["later_epoch_s"] for t in per_trial),
        "trials_compiled": sum(t["graphs_compiled"] > 0 for t in per_trial),
        "reps": reps,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser("compile_trials", __doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=None, help="configs per process (10; tiny 2)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (3; tiny 1)")
    p.add_argument("--recompile-limit", type=int, default=None,
                   help="Dynamo's recompile_limit (torch's default 8; tiny 1)")  # fmt: skip
    p.add_argument("--worker", choices=CONTESTANTS, help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.trials = args.trials or (2 if args.tiny else 10)
    args.epochs = args.epochs or (1 if args.tiny else 3)
    if args.tiny and args.recompile_limit is None:
        args.recompile_limit = 1
    if args.worker:
        records = _trials(args.worker, args.trials, args.epochs, args.tiny, args.recompile_limit)
        Path(args.json).write_text(json.dumps(records))
        return {}
    reps = args.reps or (1 if args.tiny else 2)
    runs: dict[str, list] = {name: [] for name in CONTESTANTS}
    for rep in range(reps):
        for name in CONTESTANTS:
            print(f"rep {rep + 1}/{reps}: {name}, {args.trials} trials", flush=True)
            runs[name].append(_run_process(name, args))
    results = {name: _summary(runs[name]) for name in CONTESTANTS}
    eager = results["eager"]["median_trial_wall_s"]
    for name in ("fresh_cache", "shared_cache"):
        r = results[name]
        r["compile_cost_per_trial_s"] = r["median_trial_wall_s"] - eager
        print(f"{name}: {r['trials_compiled']}/{args.trials} trials compiled, median trial "
              f"{r['median_trial_wall_s']:.1f} s (eager {eager:.1f} s), later epochs "
              f"{r['median_later_epoch_s']:.2f} s", flush=True)  # fmt: skip
    fresh = results["fresh_cache"]
    return write_result(
        "compile_trials",
        args,
        {
            "config": {
                "trials": args.trials,
                "epochs": args.epochs,
                "tiny": args.tiny,
                "recompile_limit": args.recompile_limit,
                "reps": reps,
            },  # fmt: skip
            "results": results,
            "targets": [
                target(
                    "trials that ran compiled (fresh cache)", fresh["trials_compiled"], args.trials
                ),  # fmt: skip
            ],
        },
    )


if __name__ == "__main__":
    main()
