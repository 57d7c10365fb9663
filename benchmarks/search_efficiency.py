"""Benchmark 3: search efficiency and per-trial overhead of `python -m signray.tune`.

The search of issue 13: 8 trials x 6 epochs of `search_spaces/tx.yaml` on 20-gloss synthetic
keypoints (16 train + 4 val clips per gloss, lengths 16-120), TPE + ASHA, 2 trials at once on
1 CPU each. Each repetition runs the search twice:

1. as `signray.tune.run` in a process of its own (plan, then the driver, with a Tune callback
   that timestamps every trial on the driver and a thread that samples the cluster's free CPUs
   every 50 ms):
   - tuning efficiency = sum of the trials' wall times (trials.csv) / (2 x wall time of
     `Tuner.fit`), the issue's definition; "epochs only" counts only the loop's `epoch_seconds`;
   - start overhead = first epoch begins (first report's arrival minus its `epoch_seconds`)
     minus trial start: the moment the CPU it runs on was freed by the previous trial (`fit`
     start for the first trials), or, on a reused actor, the end of the actor's previous trial;
   - end overhead = last report's arrival -> the CPUs are free again or the next trial starts
     on the reused actor; per-epoch report overhead = Tune's time between two reports minus the
     epoch's own time (the report and the checkpoint written every epoch);
2. as the real command in a fresh process: whole-command efficiency = sum of the trials' wall
   times / (2 x the command's wall time: imports, validation, Ray start and stop, evaluation and
   report included).

   The command's output lines are timestamped as they arrive, which splits its wall time into
   phases: imports and validation (until the banner), cluster start (until the dashboard URL or
   the data mode), data holders, study and Tuner (until Tune's first status), tuning and the
   outputs (until the summary), evaluation and report (until the report's path), and cluster
   stop and exit.

Each search runs in a fresh process; `--smoke` times the README's smoke search instead.
`--baseline REF` runs every repetition once more with another version of signray (a checkout
folder such as ``/work/main``, or a git commit or branch, extracted once), interleaved with this
one, and reports both and their ratios. `--fsl` uses FSL-105-sized data (105 glosses);
`--workers 2` measures two-worker trials (a Ray Train TorchTrainer per trial); extra flags for
the command follow ``--``.

    python -m benchmarks.search_efficiency [--reps 2] [--baseline main] [--fsl] [--workers 1 2]
        [--smoke] [--tiny] [-- --no-dashboard]
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import tempfile
import threading
import time
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
    tree_env,
    write_result,
)
from benchmarks.throughput import bench_dataset

__all__ = ["SearchClock", "main", "run_command_timed", "run_search", "search_in_child"]

SPACE = Path(__file__).resolve().parent.parent / "search_spaces" / "tx.yaml"
FULL_DATA = dict(
    num_gloss=105, num_cat=10, train_per_gloss=16, val_per_gloss=4, min_len=16, max_len=120
)
# The search of issue 13: 20 glosses x (16 train + 4 val) clips, 8 trials x 6 epochs.
ISSUE_DATA = dict(
    num_gloss=20, num_cat=4, train_per_gloss=16, val_per_gloss=4, min_len=16, max_len=120
)
TINY_DATA = dict(num_gloss=6, num_cat=2, train_per_gloss=4, val_per_gloss=2, min_len=8, max_len=24)
CONCURRENCY = 2
# The README's smoke search (README.md, "Install and smoke test"), storage and name added.
README_SMOKE = ["--model", "transformer", "--search-space", str(SPACE), "--smoke-test"]


class SearchClock(tune.Callback):
    """Driver-side timestamps of every trial, and the cluster's free CPUs sampled in a thread."""

    def __init__(self, poll_s: float = 0.05) -> None:
        self.poll_s = poll_s
        self.trials: dict[str, dict[str, Any]] = {}
        self.cpu_samples: list[tuple[float, float]] = []
        self.fit_start = self.fit_end = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The Tuner pickles its run config (callbacks included) for a later restore.
        return {k: v for k, v in self.__dict__.items() if k not in ("_stop", "_thread")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _stop=threading.Event(), _thread=None)

    def _record(self, trial) -> dict[str, Any]:
        return self.trials.setdefault(trial.trial_id, {"results": [], "error": False})

    def _poll(self) -> None:
        import ray

        while not self._stop.is_set() and ray.is_initialized():
            try:
                free = ray.available_resources().get("CPU", 0.0)
            except Exception:  # the driver stopped the cluster after the search
                return
            self.cpu_samples.append((time.time(), free))
            self._stop.wait(self.poll_s)

    def setup(self, **info: Any) -> None:
        self.fit_start = time.time()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        record = self._record(trial)
        record["running"] = time.time()
        actor = trial.temporary_state.ray_actor
        record["actor"] = actor._actor_id.hex() if actor is not None else trial.trial_id

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        record = self._record(trial)
        arrival = (time.time(), float(result["epoch_seconds"]), float(result["val_gloss_acc"]))
        record["results"].append(arrival)
        if len(record["results"]) > 1:  # between two reports: the epoch + report + checkpoint
            record.setdefault("report_gaps", []).append(
                float(result["time_this_iter_s"]) - arrival[1]
            )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._record(trial)["done"] = time.time()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        record = self._record(trial)
        record["done"], record["error"] = time.time(), True

    def on_experiment_end(self, trials, **info) -> None:
        self.fit_end = time.time()

    def stop(self, linger_s: float = 3.0) -> None:
        """Keep sampling a little after `fit` so that the last trials' release is seen."""
        time.sleep(linger_s)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def analyse(self, concurrency: int) -> dict[str, Any]:
        frees = [t1 for (_, c0), (t1, c1) in itertools.pairwise(self.cpu_samples) if c1 > c0]
        started = sorted(
            (r for r in self.trials.values() if "running" in r), key=lambda r: r["running"]
        )
        rows = []
        for trial_id, rec in self.trials.items():
            if not rec["results"] or "running" not in rec:
                continue
            first_arrival, first_epoch, _ = rec["results"][0]
            first_epoch_begins = first_arrival - first_epoch
            last = rec["results"][-1][0]
            # A reused actor hands over from the trial before it to the trial after it; a new
            # actor starts on CPUs that another trial's end freed (or at fit start).
            same = [r for r in started if r["actor"] == rec["actor"]]
            i = same.index(rec)
            if i > 0:
                start = same[i - 1].get("done", same[i - 1]["running"])
            else:
                before = [t for t in frees if self.fit_start <= t <= rec["running"]]
                start = before[-1] if before else self.fit_start
            if i + 1 < len(same):
                released: float | None = same[i + 1]["running"]
            else:
                released = next((t for t in frees if t > last), None)
            rows.append(
                {
                    "trial_id": trial_id,
                    "epochs": len(rec["results"]),
                    "training_s": sum(r[1] for r in rec["results"]),
                    "start_overhead_s": first_epoch_begins - start,
                    "in_trial_setup_s": first_epoch_begins - rec["running"],
                    "end_overhead_s": (released - last) if released is not None else None,
                    "reused_actor": i > 0,
                    "error": rec["error"],
                }
            )
        wall = self.fit_end - self.fit_start
        training = sum(r["training_s"] for r in rows)
        gaps = [g for rec in self.trials.values() for g in rec.get("report_gaps", [])]

        def stats(key: str) -> dict[str, float | None]:
            values = [r[key] for r in rows if r[key] is not None]
            if not values:
                return {"median": None, "max": None}
            return {"median": median(values), "max": max(values)}

        return {
            "trials": len(self.trials),
            "trials_reporting": len(rows),
            "errors": sum(r["error"] for r in self.trials.values()),
            "reused_actor_trials": sum(r["reused_actor"] for r in rows),
            "epochs": sum(r["epochs"] for r in rows),
            "wall_s": wall,
            "training_s": training,
            "efficiency": training / (concurrency * wall) if wall > 0 else 0.0,
            "start_overhead_s": stats("start_overhead_s"),
            "in_trial_setup_s": stats("in_trial_setup_s"),
            "end_overhead_s": stats("end_overhead_s"),
            "per_epoch_report_overhead_s": median(gaps) if gaps else None,
            "per_trial": rows,
        }

    def arrivals(self) -> list[tuple[float, float]]:
        """(arrival time, val_gloss_acc) of every epoch of every trial, in arrival order."""
        return sorted((t, acc) for rec in self.trials.values() for t, _, acc in rec["results"])


def data_config(root: Path, spec: dict[str, int]) -> dict[str, Any]:
    """The config fields that point a keypoint run at the dataset in `root`."""
    return {
        "keypoints_train": str(root / "keypoints_train"),
        "keypoints_val": str(root / "keypoints_val"),
        "labels_train_csv": str(root / "train_labels.csv"),
        "labels_val_csv": str(root / "val_labels.csv"),
        "num_gloss": spec["num_gloss"],
        "num_cat": spec["num_cat"],
    }


def data_flags(root: Path, spec: dict[str, int]) -> list[str]:
    """`data_config` as command-line flags."""
    items = data_config(root, spec).items()
    return [s for key, value in items for s in ("--" + key.replace("_", "-"), str(value))]


def run_search(
    flags: list[str], storage: Path, stop: tune.Stopper | None = None
) -> tuple[int, SearchClock]:
    """`python -m signray.tune FLAGS` in this process (plan, then the driver), timed by a
    SearchClock that the driver hands to its Tuner with the `stop`per."""
    from signray.cli import run_command
    from signray.tune import build_parser, run

    clock = SearchClock()
    try:
        args = build_parser().parse_args([*flags, "--storage-path", str(storage)])
        code = run_command(lambda: run(args, callbacks=[clock], stop=stop))
    finally:
        clock.stop()
    return code, clock


# The lines that end each phase of the command (the first line starting with one of them).
PHASES = (
    ("imports_and_validation", ("signray.tune: model",)),
    ("cluster_start", ("Ray dashboard:", "data: memory mode", "data: stream mode")),
    ("holders_study_tuner", ("== Status ==",)),
    ("tuning_and_outputs", ("signray.tune summary",)),
    ("evaluation_and_report", ("report: ",)),
)


def _phases(lines: list[tuple[float, str]], wall: float) -> dict[str, float]:
    """Seconds from one phase's end to the next (see `PHASES`); the rest is stop and exit."""
    phases, last, i = {}, 0.0, 0
    for name, starts in PHASES:
        while i < len(lines) and not lines[i][1].startswith(starts):
            i += 1
        if i == len(lines):
            break
        phases[name], last = lines[i][0] - last, lines[i][0]
    phases["stop_and_exit"] = wall - last
    return phases


def run_command_timed(flags: list[str], storage: Path, tree: Path = REPO) -> dict[str, Any]:
    """The whole command in a fresh process (imports, validation, Ray start and stop,
    evaluation and report included), run from `tree`: its wall time, its phases and its trials'
    wall times."""
    import csv

    name = flags[flags.index("--name") + 1]
    tic = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "signray.tune", *flags, "--storage-path", str(storage)],
        cwd=tree,
        env=tree_env(tree),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = [(time.perf_counter() - tic, line.strip()) for line in proc.stdout]
    code = proc.wait()
    wall = time.perf_counter() - tic
    output = "\n".join(line for _, line in lines)
    if code != 0:
        raise RuntimeError(output[-6000:])
    with (storage / name / "trials.csv").open() as f:
        trial_walls = [float(r["wall_time_s"]) for r in csv.DictReader(f)]
    fit = re.search(r"; wall time ([0-9.]+)s", output)
    return {
        "command_wall_s": wall,
        "fit_wall_s": float(fit.group(1)) if fit else None,
        "phases_s": _phases(lines, wall),
        "trial_wall_sum_s": sum(trial_walls),
        "trials": len(trial_walls),
    }


# Run in a fresh process of the tree being measured (its own `run_search` and `_efficiencies`).
_SEARCH_CHILD = """
import json, sys
from pathlib import Path
import ray
from benchmarks.search_efficiency import _efficiencies, run_search
flags, storage = json.loads(sys.argv[1])
storage = Path(storage)
code, clock = run_search(flags, storage)
ray.shutdown()
result = _efficiencies(clock, storage / flags[flags.index("--name") + 1])
result["exit_code"] = code
print("@@RESULT " + json.dumps(result, default=float))
"""


def search_in_child(flags: list[str], storage: Path, tree: Path = REPO) -> dict[str, Any]:
    """`run_search` and its analysis (`_efficiencies`) in a fresh process running `tree`."""
    return result_of_code(_SEARCH_CHILD, [flags, str(storage)], tree)


def _efficiencies(clock: SearchClock, experiment: Path) -> dict[str, Any]:
    """The clock's analysis plus the issue's definition: Σ trial wall (trials.csv) / (2 x fit)."""
    import csv

    res = clock.analyse(CONCURRENCY)
    with (experiment / "trials.csv").open() as f:
        walls = [float(r["wall_time_s"]) for r in csv.DictReader(f)]
    res["trial_wall_sum_s"] = sum(walls)
    res["tuning_efficiency"] = sum(walls) / (CONCURRENCY * res["wall_s"])
    return res


def _flags(spec: dict, root: Path, *, epochs: int, samples: int, workers: int, seed: int,
           extra: list[str]) -> list[str]:  # fmt: skip
    return [
        "--model", "transformer", "--search-space", str(SPACE), *data_flags(root, spec),
        "--epochs", str(epochs), "--num-samples", str(samples),
        "--max-concurrent", str(CONCURRENCY), "--cpus-per-trial", "1",
        "--workers-per-trial", str(workers), "--seed", str(seed), *extra,
    ]  # fmt: skip


def _summary(runs: list[dict], commands: list[dict]) -> dict[str, Any]:
    phases = {
        k: median(c["phases_s"].get(k, 0.0) for c in commands) for k in commands[0]["phases_s"]
    }
    return {
        "tuning_efficiency": median(r["tuning_efficiency"] for r in runs),
        "epoch_efficiency": median(r["efficiency"] for r in runs),
        "command_efficiency": median(c["command_efficiency"] for c in commands),
        "command_wall_s": median(c["command_wall_s"] for c in commands),
        "fit_wall_s": median(r["wall_s"] for r in runs),
        "command_phases_s": phases,
        "start_overhead_median_s": median(
            r["start_overhead_s"]["median"] for r in runs if r["start_overhead_s"]["median"]
        ),
        "runs": runs,
        "commands": commands,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = base_parser("search_efficiency", __doc__.splitlines()[0])
    p.add_argument("--fsl", action="store_true", help="FSL-105-sized data instead of 20 glosses")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="workers per trial (1)")
    p.add_argument("--num-samples", type=int, default=None, help="trials (8)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (6)")
    p.add_argument("--storage", type=Path, default=None, help="experiment folder (a temp dir)")
    p.add_argument("--baseline", default=None,
                   help="also run this version of signray, interleaved: a checkout folder, or a "
                   "git commit or branch of this repository")  # fmt: skip
    p.add_argument("--smoke", action="store_true", help="time the README's smoke search instead")
    args = p.parse_args(argv)
    spec = TINY_DATA if args.tiny else FULL_DATA if args.fsl else ISSUE_DATA
    workers = args.workers or [1]
    epochs = args.epochs or (2 if args.tiny else 6)
    samples = args.num_samples or (2 if args.tiny else 8)
    reps = args.reps or (1 if args.tiny else 2)
    root = None if args.smoke else bench_dataset(spec, features=False)
    storage = args.storage or Path(tempfile.mkdtemp(prefix="signray-bench-search-"))
    trees = {"signray": REPO}
    if args.baseline:
        trees["baseline"] = baseline_tree(args.baseline)
    results: dict[str, Any] = {}
    targets = []
    for n in workers:
        runs: dict[str, list] = {name: [] for name in trees}
        commands: dict[str, list] = {name: [] for name in trees}
        for rep in range(reps):
            flags = [*README_SMOKE, *extra] if args.smoke else _flags(
                spec, root, epochs=epochs, samples=samples, workers=n, seed=rep, extra=extra
            )  # fmt: skip
            for contestant, tree in trees.items():  # interleaved: A B A B ...
                name = f"efficiency-{contestant}-{n}w-{rep}-{int(time.time())}"
                res = search_in_child([*flags, "--name", name], storage, tree)
                runs[contestant].append(res)
                c = run_command_timed([*flags, "--name", name + "-cmd"], storage, tree)
                c["command_efficiency"] = c["trial_wall_sum_s"] / (
                    CONCURRENCY * c["command_wall_s"]
                )
                commands[contestant].append(c)
                print(
                    f"{contestant}, {n}-worker trials, rep {rep}: tuning efficiency "
                    f"{res['tuning_efficiency']:.3f} (epochs only {res['efficiency']:.3f}), start "
                    f"overhead median {res['start_overhead_s']['median']}, whole command "
                    f"{c['command_efficiency']:.3f} ({c['command_wall_s']:.1f}s: "
                    + ", ".join(f"{k} {v:.1f}" for k, v in c["phases_s"].items())
                    + ")",
                    flush=True,
                )
        summary = {name: _summary(runs[name], commands[name]) for name in trees}
        if "baseline" in summary:
            mine, base = summary["signray"], summary["baseline"]
            summary["ratios_to_baseline"] = {
                k: mine[k] / base[k]
                for k in ("tuning_efficiency", "command_efficiency", "command_wall_s", "fit_wall_s")
            }
        results["readme_smoke" if args.smoke else f"{n}_worker"] = summary
        if n == 1 and not args.smoke:
            mine = summary["signray"]
            targets += [
                target("search efficiency within tuning", mine["tuning_efficiency"], 0.90),
                target("search efficiency, whole command", mine["command_efficiency"], 0.80),
                target(
                    "one-worker trial start, median s",
                    mine["start_overhead_median_s"],
                    0.5,
                    higher_is_better=False,
                ),
            ]
        if n == 1 and "baseline" in summary:
            targets.append(
                target(
                    "whole command wall, this / baseline",
                    summary["ratios_to_baseline"]["command_wall_s"],
                    1.0,
                    higher_is_better=False,
                )
            )
    return write_result(
        "search_efficiency",
        args,
        {
            "config": {
                "data": "readme smoke" if args.smoke else spec,
                "epochs": epochs,
                "num_samples": samples,
                "concurrency": CONCURRENCY,
                "cpus_per_trial": 1,
                "space": str(SPACE.name),
                "storage": str(storage),
                "reps": reps,
                "command_flags": extra,
                "baseline": str(trees.get("baseline", "")),
            },
            "results": results,
            "targets": targets,
        },
    )


if __name__ == "__main__":
    main()
