"""Run a planned search on Ray: check the data (keeping none of it), start or join the cluster,
make the data reachable from every node, fit the Tuner, then write the outputs, evaluate the best
checkpoint and draw the report."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from dataclasses import dataclass

import ray

from signray.analysis.pareto import format_front, write_pareto
from signray.analysis.report import write_report
from signray.errors import ConfigError
from signray.io import read_text, write_text
from signray.layout import ExperimentFiles, Status
from signray.storage import RemotePath
from signray.training.inputs import check_inputs
from signray.tuning.cluster import init_ray
from signray.tuning.plan import TunePlan
from signray.tuning.resources import TrialShape, check_cluster_fits
from signray.tuning.results import format_summary, quiet_missing_results, write_outputs
from signray.tuning.schedulers import scheduler_budget
from signray.tuning.study import (
    check_new_study,
    create_study,
    finish_storage,
    load_warm_source,
    open_storage,
    warm_start,
)
from signray.tuning.trial import TrialSetup
from signray.tuning.trial_data import evaluate_best, start_trial_data
from signray.tuning.tuner import build_tuner, can_restore, restore_tuner, set_tune_environment

__all__ = ["SearchTime", "run_search"]


@dataclass
class SearchTime:
    """The search's wall time so far (all its runs: --resume adds to it) and its budget, so a
    resumed search knows whether its budget is spent (Tune itself resumes a budget's clock)."""

    budget_s: float | None
    seconds: float = 0.0

    @property
    def spent(self) -> bool:
        return self.budget_s is not None and self.seconds >= self.budget_s

    def add(self, seconds: float) -> SearchTime:
        self.seconds += seconds
        return self

    def save(self, files: ExperimentFiles) -> None:
        write_text(files.time_spent, json.dumps(dataclasses.asdict(self)) + "\n")

    @classmethod
    def load(cls, files: ExperimentFiles, budget_s: float | None) -> SearchTime:
        """The time an experiment has run so far (0 before its first save)."""
        clock = cls(budget_s)
        if files.time_spent.is_file():
            clock.seconds = float(json.loads(read_text(files.time_spent))["seconds"])
        return clock


def _check_study(plan: TunePlan) -> tuple | None:
    """(storage, warm-start source) of a new search that records an Optuna study, checked
    before anything is written or printed: a refused command leaves no folder behind."""
    o = plan.options
    if plan.resumed or not plan.searching or o.trial_scheduler == "pbt" or not o.optuna_storage:
        return None
    source = load_warm_source(o.warm_start) if o.warm_start else None
    storage = open_storage(o.optuna_storage)
    check_new_study(storage, plan.files.name)
    return storage, source


def _start_study(plan: TunePlan, checked: tuple | None):
    """Save the plan; create the study (told the warm start); its storage, or None."""
    if not plan.resumed:
        plan.save()
    if checked is None:
        return None
    storage, source = checked
    o = plan.options
    study = create_study(storage, plan.files.name, o.modes)
    if source is not None:
        told = warm_start(study, source, dict(plan.space.params), o.warm_start_top_k)
        print(told.describe(), flush=True)
    print(
        f"Optuna study {plan.files.name!r} in {o.optuna_storage}; watch it live with:\n"
        f"  optuna-dashboard {o.optuna_storage}",
        flush=True,
    )
    return storage


class _Background(threading.Thread):
    """`fn()` in a thread; `result()` joins it and returns its value or raises its error."""

    def __init__(self, fn) -> None:
        super().__init__(daemon=True)
        self._fn, self._value, self._error = fn, None, None
        self.start()

    def run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as err:  # noqa: BLE001 - re-raised by result()
            self._error = err

    def result(self):
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


def run_search(
    plan: TunePlan,
    *,
    address: str | None,
    dashboard: bool = True,
    dashboard_host: str,
    dashboard_port: int | None,
    resume_command: str,
    retry_errored: bool = False,
    callbacks: list | None = None,
    stop=None,
) -> int:
    """Exit code: 0 done, 1 every trial errored, 130 interrupted (resume with `resume_command`).

    Start-up overlaps: the data holders load while the Tuner is built and its first trials
    start (a trial opening its data waits for its node's holder).
    At the end, the best checkpoint is evaluated on the data the holders still hold while the
    report is drawn; the cluster then stops. `callbacks` and `stop` go to a new search's Tuner
    (the benchmarks' clocks and stoppers).
    """
    summary = check_inputs(plan.base)  # every data problem surfaces here, before Ray starts
    o = plan.options
    budget = None
    if plan.searching and o.trial_scheduler != "fifo":
        budget = scheduler_budget(o, plan.base, plan.space, len(summary.train))
    checked = _check_study(plan)
    print(
        f"signray.tune: model {plan.base.model}, {summary.describe()}, "
        f"{plan.base.epochs} epochs per trial, "
        + (
            "1 trial (single run)"
            if o.single_run
            else f"{o.num_samples} trials ({o.searcher} + {o.trial_scheduler})"
        )  # fmt: skip
        + f", {o.workers_per_trial} worker(s)/trial; experiment {plan.files.root}",
        flush=True,
    )
    if plan.searching:
        print("search space:\n  " + plan.space.describe().replace("\n", "\n  "), flush=True)
    if budget is not None:
        print(f"{o.trial_scheduler} counts training in {budget.unit}: {budget.describe()}")
        for note in budget.notes:
            print(f"note: {note}", file=sys.stderr, flush=True)

    set_tune_environment()
    started_here = not ray.is_initialized()
    init_ray(
        address, dashboard=dashboard, dashboard_host=dashboard_host,
        dashboard_port=dashboard_port,
    )  # fmt: skip
    check_cluster_fits(TrialShape.from_options(o), address, o.max_concurrent)
    loading = start_trial_data(plan.base, summary)
    storage = _start_study(plan, checked)
    root = plan.files.root
    setup = TrialSetup(
        base=plan.base,
        experiment_dir=root if isinstance(root, RemotePath) else str(root),
        workers=o.workers_per_trial,
        cpus_per_trial=o.cpus_per_trial,
        gpus_per_trial=o.gpus_per_trial,
        keep_checkpoints=o.keep_checkpoints,
        worker_failures=o.worker_failures,
        cost_metrics=tuple(o.metrics[1:]),
    ).with_runtime()
    clock = SearchTime.load(plan.files, o.time_budget_s)  # a new search has no time yet
    data = loading.data
    if plan.resumed:
        if not can_restore(plan.files):
            raise ConfigError([f"{plan.files.root} holds no Ray Tune state to resume from yet"])
        with quiet_missing_results():  # a trial that had not started has no results yet
            tuner = restore_tuner(plan.files, setup, data, retry_errored=retry_errored)
    else:
        tuner = build_tuner(
            plan.space if plan.searching else None, setup, data, o, budget=budget,
            storage=storage, study_name=plan.files.name, callbacks=callbacks, stop=stop,
        )  # fmt: skip
    loaded = _Background(loading.wait)  # says when the data is in place; its error, if any
    start = time.perf_counter()
    try:
        if clock.spent:
            print(f"the search has spent its --time-budget {o.time_budget}: nothing left to "
                  "run (to search on, start a new search with --warm-start "
                  f"{plan.files.root})", flush=True)  # fmt: skip
        else:
            with quiet_missing_results():
                tuner.fit()
    except KeyboardInterrupt:  # a second Ctrl-C skips Tune's final save
        clock.add(time.perf_counter() - start).save(plan.files)
        print(f"\ninterrupted; continue with:\n  {resume_command}", flush=True)
        return 130
    finally:
        finish_storage(o.optuna_storage, storage)
    wall_time_s = time.perf_counter() - start
    clock.add(wall_time_s).save(plan.files)
    loaded.result()  # a holder that could not load fails the command with its reason
    report = write_outputs(plan.files.root, base=setup.base, wall_time_s=wall_time_s)
    print(format_summary(report), flush=True)
    if o.multi_objective and not o.single_run:
        path, front = write_pareto(report.experiment, o.metrics[1:])
        print(f"{format_front(front, o.metrics[1:])}\n  table: {path}", flush=True)

    def evaluate_then_stop() -> None:
        # The evaluation reads the holders' copy; the report uses no cluster.
        try:
            if report.best_checkpoint is not None:
                evaluate_best(data, report.best_checkpoint, plan.files.evaluation)
        finally:
            if started_here:
                ray.shutdown()

    finishing = _Background(evaluate_then_stop)
    print(f"report: {write_report(report.experiment)}", flush=True)
    finishing.result()
    expected = 1 if o.single_run else o.num_samples
    ok = 0 if report.count(Status.ERROR) < len(report.trials) else 1
    if clock.spent:
        print(f"\ntime budget {o.time_budget} spent ({clock.seconds:.0f} s of search): the "
              "trials still running were stopped and the rest not started; the best so far is "
              "exported above", flush=True)  # fmt: skip
        return ok
    if report.count(Status.UNFINISHED) or len(report.trials) < expected:
        print(f"\nthe search was interrupted; continue it with:\n  {resume_command}", flush=True)
        return 130
    return ok
