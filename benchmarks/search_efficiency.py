"""Benchmark 3: search efficiency and per-trial overhead of `python -m signray.tune`.

Runs the real CLI path (`signray.tune.main`: data validated and `ray.put` once, Optuna TPE +
ASHA, trial folders, results table) in this process, with a Tune callback that timestamps every
trial on the driver and a thread that samples the cluster's free CPUs every 50 ms:

- efficiency = sum over trials of the time spent in epochs (the loop's `epoch_seconds`: train +
  validation) / (concurrency x wall time of `Tuner.fit`);
- start overhead = first epoch begins (first report's arrival minus its `epoch_seconds`) minus
  trial start: the moment the CPU it runs on was freed by the previous trial (`fit` start for
  the first trials), or, when Tune reuses an actor, the end of the actor's previous trial;
  `in_trial_setup` is the part after Tune marked the trial RUNNING;
- end overhead = last report's arrival -> the next time the cluster's free CPUs go up (the
  trial's resources are back), or the next trial starting on its reused actor;
- per-epoch report overhead = Tune's time between two reports minus the epoch's own time: the
  report and the checkpoint the trial writes every epoch.

Both one-worker trials (the loop in the trial) and two-worker trials (a Ray Train TorchTrainer
per trial, 0.5 CPU per worker) are measured; the latter with fewer trials (each TorchTrainer
costs tens of seconds to start on 2 cores). Default data: FSL-105-sized synthetic keypoints
(105 glosses x 16 + 4 clips, lengths 16-120), `search_spaces/tx.yaml`, 8 epochs per trial.

    python -m benchmarks.search_efficiency [--workers 1 2] [--num-samples 16] [--tiny]
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ray import tune

from benchmarks._common import base_parser, median, target, write_result
from benchmarks.throughput import bench_dataset

__all__ = ["SearchClock", "instrumented_search", "run_search", "main"]

SPACE = Path(__file__).resolve().parent.parent / "search_spaces" / "tx.yaml"
FULL_DATA = dict(
    num_gloss=105, num_cat=10, train_per_gloss=16, val_per_gloss=4, min_len=16, max_len=120
)
TINY_DATA = dict(num_gloss=6, num_cat=2, train_per_gloss=4, val_per_gloss=2, min_len=8, max_len=24)
CONCURRENCY = 2


class SearchClock(tune.Callback):
    """Driver-side timestamps of every trial, and the cluster's free CPUs sampled in a thread."""

    def __init__(self, poll_s: float = 0.05) -> None:
        self.poll_s = poll_s
        self.trials: dict[str, dict[str, Any]] = {}
        self.cpu_samples: list[tuple[float, float]] = []
        self.fit_start = self.fit_end = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self, trial) -> dict[str, Any]:
        return self.trials.setdefault(trial.trial_id, {"results": [], "error": False})

    def _poll(self) -> None:
        import ray

        while not self._stop.is_set():
            self.cpu_samples.append((time.time(), ray.available_resources().get("CPU", 0.0)))
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


@contextlib.contextmanager
def instrumented_search(
    clock: SearchClock, stop: tune.Stopper | None = None, reuse_actors: bool = False
) -> Iterator[None]:
    """Attach `clock` (and `stop`) to the Tuner that `signray.tune` builds.

    The tune driver's `build_tuner` takes no callbacks or stopper, so they are added to the
    RunConfig of the Tuner it returns. `reuse_actors` turns on Tune's actor reuse (a what-if for
    the driver: `TuneConfig(reuse_actors=True)`).
    """
    import signray.tuning.driver as search

    original = search.build_tuner

    def build_tuner(*args: Any, **kwargs: Any):
        tuner = original(*args, **kwargs)
        run_config = tuner._local_tuner.get_run_config()
        run_config.callbacks = [*(run_config.callbacks or []), clock]
        if stop is not None:
            run_config.stop = stop
        tuner._local_tuner._tune_config.reuse_actors = reuse_actors
        return tuner

    search.build_tuner = build_tuner
    try:
        yield
    finally:
        search.build_tuner = original


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
    flags: list[str], storage: Path, stop: tune.Stopper | None = None, reuse_actors: bool = False
) -> tuple[int, SearchClock]:
    """`python -m signray.tune FLAGS` in this process, timed by a SearchClock."""
    from signray.tune import main as tune_main

    clock = SearchClock()
    with instrumented_search(clock, stop, reuse_actors):
        try:
            code = tune_main([*flags, "--storage-path", str(storage)])
        finally:
            clock.stop()
    return code, clock


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser("search_efficiency", __doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=None, help="workers per trial (1 2)")
    p.add_argument("--num-samples", type=int, default=None, help="trials, one-worker (16)")
    p.add_argument("--num-samples-multi", type=int, default=None, help="trials, two-worker (4)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (8)")
    p.add_argument("--storage", type=Path, default=None, help="experiment folder (a temp dir)")
    p.add_argument(
        "--reuse-actors",
        action="store_true",
        help="what-if: Tune reuses trial processes (TuneConfig(reuse_actors=True))",
    )
    args = p.parse_args(argv)
    spec = TINY_DATA if args.tiny else FULL_DATA
    workers = args.workers or ([1] if args.tiny else [1, 2])
    epochs = args.epochs or (2 if args.tiny else 8)
    samples = {1: args.num_samples or (2 if args.tiny else 16)}
    samples[2] = args.num_samples_multi or (2 if args.tiny else 4)
    root = bench_dataset(spec, features=False)
    storage = args.storage or Path(tempfile.mkdtemp(prefix="signray-bench-search-"))
    results: dict[str, Any] = {}
    targets = []
    for n in workers:
        flags = [
            "--model", "transformer", "--search-space", str(SPACE), *data_flags(root, spec),
            "--epochs", str(epochs), "--num-samples", str(samples[n]),
            "--max-concurrent", str(CONCURRENCY), "--cpus-per-trial", "1",
            "--workers-per-trial", str(n), "--name", f"efficiency-{n}w-{int(time.time())}",
        ]  # fmt: skip
        code, clock = run_search(flags, storage, reuse_actors=args.reuse_actors)
        res = clock.analyse(CONCURRENCY)
        res["exit_code"] = code
        results[f"{n}_worker"] = res
        print(
            f"{n}-worker trials: efficiency {res['efficiency']:.3f}, start overhead median "
            f"{res['start_overhead_s']['median']}, end overhead median "
            f"{res['end_overhead_s']['median']}",
            flush=True,
        )
        if n == 1:
            targets.append(target("search efficiency (1-worker trials)", res["efficiency"], 0.85))
            overhead = [
                r["start_overhead_s"] + (r["end_overhead_s"] or 0.0) for r in res["per_trial"]
            ]
            results["1_worker"]["total_overhead_median_s"] = median(overhead) if overhead else 0
            targets.append(
                target(
                    "1-worker trial overhead median (start + end), s",
                    median(overhead) if overhead else 0.0,
                    3.0,
                    higher_is_better=False,
                )
            )
    import ray

    ray.shutdown()
    return write_result(
        "search_efficiency",
        args,
        {
            "config": {
                "data": spec,
                "epochs": epochs,
                "num_samples": {f"{n}_worker": samples[n] for n in workers},
                "concurrency": CONCURRENCY,
                "cpus_per_trial": 1,
                "space": str(SPACE.name),
                "storage": str(storage),
                "reuse_actors": args.reuse_actors,
            },
            "results": results,
            "targets": targets,
        },
    )


if __name__ == "__main__":
    main()
