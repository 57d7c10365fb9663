"""The searcher: one of Optuna's samplers over the search space's own Optuna distributions,
maximising ``val_gloss_acc`` (and minimising latency or size with several ``--objectives``), in
an Optuna study that can live in a database (`signray.tuning.study`).

`epoch` is the step of every intermediate value the study records: it stays right when a trial
resumes from a checkpoint, unlike Tune's own iteration counter.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from signray.config.search import SearchOptions
from signray.config.search_space import SearchSpace
from signray.layout import TIME_ATTR
from signray.tuning.resources import TrialShape, cluster_nodes

__all__ = [
    "PruningAwareOptunaSearch",
    "build_sampler",
    "build_searcher",
    "default_max_concurrent",
    "suggestions_ahead",
]

logger = logging.getLogger(__name__)

# The user attribute naming a study trial's Ray trial id.
RAY_TRIAL_ID_ATTR = "ray_trial_id"


class PruningAwareOptunaSearch(OptunaSearch):
    """`OptunaSearch` that tells Optuna which trials the scheduler stopped early: PRUNED.

    Ray's `OptunaSearch` runs Optuna with a `NopPruner` and reports every finished trial as
    COMPLETE with its last result. A trial ASHA stopped at epoch 1 would then enter TPE's model
    as a *final* score, as if its config could do no better than one epoch's accuracy; TPE would
    rank fast starters above configs that learn slowly but end higher, and it would treat the
    stopped config as fully explored. Optuna has a state for exactly this case, PRUNED, and TPE
    handles it: pruned trials are ranked behind complete ones by how far they got and then by
    their last intermediate value (``optuna.samplers.TPESampler``), which is what an early stop
    means.

    How a scheduler stop is recognised, without coupling to the scheduler: when a trial's result
    leads to a STOP decision, Tune does not pass that result to the searcher's `on_trial_result`
    but goes straight to `on_trial_complete` with it (``TuneController._process_trial_result``).
    So a completion whose ``epoch`` is newer than the last result the searcher saw, and below
    `max_t`, is a trial stopped before its last epoch. A trial whose training ends on its own
    (all epochs; or the loop's own ``early_stop``, after a result the searcher already saw), or
    that ASHA stops at `max_t`, stays COMPLETE. That final result is reported as an intermediate
    value first, so the pruned trial carries its last rung's score. Errors stay FAIL.
    """

    def __init__(
        self,
        *args: Any,
        max_t: int,
        time_attr: str = TIME_ATTR,
        ended_on_its_own: Callable[[str], bool] | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self._max_t = max_t
        # Whether a trial's training returned on its own (its done marker): then a completion
        # before max_t is the loop's own early stop, else the scheduler stopped the trial, also
        # one it had paused (HyperBand) after results the searcher already saw.
        self._ended_on_its_own = ended_on_its_own
        self._time_attr = time_attr
        self._last_step: dict[str, int] = {}
        self._last_result: dict[str, dict] = {}
        self.pruned_trials: set[str] = set()

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        if config is not None and trial_id in self._ot_trials:
            # Which Ray trial this is: trials.csv and the dashboard can then be matched.
            self._ot_trials[trial_id].set_user_attr(RAY_TRIAL_ID_ATTR, trial_id)
        return config

    def restore(self, checkpoint_path: str) -> None:
        """Restore after an interruption, consistent with the study in its database.

        The pickled state is a snapshot that can lag behind the database: trials asked for after
        it are ended as FAIL (left RUNNING they would never finish, and the constant liar would
        count them as pending forever), and the sampler gets a fresh random state (the
        snapshot's would propose the same configs again).
        """
        super().restore(checkpoint_path)
        from optuna.trial import TrialState

        known = {t.number for t in self._ot_trials.values()}
        for trial in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number not in known:
                self._ot_study.tell(trial.number, state=TrialState.FAIL)
        self._ot_study.sampler.reseed_rng()

    def _finished_in_study(self, trial_id: str) -> bool:
        """The study already holds this trial's outcome (told before an interruption)."""
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return False
        return self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished()

    def _step(self, result: dict) -> int | None:
        step = result.get(self._time_attr)
        return None if step is None else int(step)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, list) or trial_id in self._completed_trials:
            return super().on_trial_result(trial_id, result)
        if self._finished_in_study(trial_id):  # re-run after a resume: the study has its verdict
            self._completed_trials.add(trial_id)
            return
        step = self._step(result)
        if step is None or self.metric not in result:
            return
        # A trial retried from an older checkpoint repeats epochs; Optuna keeps the first value.
        if step > self._last_step.get(trial_id, 0):
            self._ot_trials[trial_id].report(result[self.metric], step)
            self._last_result[trial_id] = {self.metric: result[self.metric], self._time_attr: step}
        self._last_step[trial_id] = max(step, self._last_step.get(trial_id, 0))

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id not in self._completed_trials and self._finished_in_study(trial_id):
            self._completed_trials.add(trial_id)  # the study keeps its first verdict
            return
        if result is None and not error:
            # A trial stopped while paused (HyperBand) completes without a result: judge it
            # by the last one the searcher saw.
            result = self._last_result.get(trial_id)
        step = self._step(result) if result else None
        unseen = (  # a result the searcher was not shown: the one that ended the trial
            not isinstance(self.metric, list)  # several objectives: FIFO, no early stops
            and not error
            and result is not None
            and step is not None
            and self.metric in result
            and step > self._last_step.get(trial_id, 0)
            and trial_id not in self._completed_trials
            and trial_id in self._ot_trials
        )
        if unseen:  # recorded like every other epoch (the study shows every epoch's value)
            self._ot_trials[trial_id].report(result[self.metric], step)
            self._last_step[trial_id] = step
        stopped = unseen
        if self._ended_on_its_own is not None and not unseen:
            stopped = (
                not isinstance(self.metric, list)
                and not error
                and step is not None
                and trial_id not in self._completed_trials
                and trial_id in self._ot_trials
                and not self._ended_on_its_own(trial_id)
            )
        if not (stopped and step < self._max_t):
            return super().on_trial_complete(trial_id, result=result, error=error)
        from optuna.trial import TrialState

        try:
            self._ot_study.tell(self._ot_trials[trial_id], None, state=TrialState.PRUNED)
        except Exception as exc:  # same tolerance as the parent (e.g. a NaN metric)
            logger.warning(exc)
        self.pruned_trials.add(trial_id)
        self._completed_trials.add(trial_id)


def build_sampler(opts: SearchOptions, *, seed: int, concurrent: int):
    """The Optuna sampler `--searcher` names, seeded; model-based ones start modelling after a
    few finished trials (scaled to the budget: Optuna's default 10 would leave a small search
    unmodelled)."""
    import optuna

    startup = min(10, max(2, opts.num_samples // 4))
    kind = opts.searcher
    with warnings.catch_warnings():
        # QMC and TPE's `group` are marked experimental; the user chose them, no need to warn.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if kind == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, scramble=True)
        if kind == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
        if kind == "cmaes":
            # CMA-ES models numbers; categorical fields are sampled independently (at random).
            return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup)
        # Multivariate TPE models the fields jointly (`group`: also trials told by a warm start
        # that lack a field); with trials running at once, the constant liar counts running
        # trials as bad so that concurrent suggestions spread out.
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=startup,
            multivariate=True,
            group=True,
            constant_liar=concurrent > 1,
        )


def build_searcher(
    space: SearchSpace,
    opts: SearchOptions,
    *,
    max_t: int,
    seed: int,
    storage=None,
    study_name: str | None = None,
    ahead: int = 0,
    ended_on_its_own: Callable[[str], bool] | None = None,
):
    """Optuna (the `--searcher` sampler) over the space's distributions, at most
    `opts.max_concurrent` trials at once (plus `ahead` suggested early, waiting for a slot),
    recording into `storage`'s study `study_name` (in memory without one)."""
    concurrent = opts.max_concurrent or opts.num_samples
    points = [dict(p) for p in space.points_to_evaluate]
    single = not opts.multi_objective
    searcher = PruningAwareOptunaSearch(
        space=dict(space.params),
        metric=opts.metrics[0] if single else opts.metrics,
        mode=opts.modes[0] if single else opts.modes,
        points_to_evaluate=points or None,
        sampler=build_sampler(opts, seed=seed, concurrent=concurrent + ahead),
        storage=storage,
        study_name=study_name,
        max_t=max_t,
        ended_on_its_own=ended_on_its_own,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=concurrent + ahead)


def suggestions_ahead(workers: int, max_concurrent: int, fits: int) -> int:
    """How many trials the searcher suggests beyond those running: one for one-worker trials
    when the cluster (`fits` trials at once), not `max_concurrent`, is the limit. That trial
    waits PENDING and starts on the reused actor the moment a trial ends, without waiting for the
    sampler; Tune reserves one-worker trials' CPUs/GPUs itself, so it cannot start early. Below
    what fits, it could: then no trial is suggested ahead."""
    return 1 if workers == 1 and max_concurrent >= fits else 0


def default_max_concurrent(opts: SearchOptions) -> int:
    """How many trials the cluster can run at once, from its nodes' CPUs and GPUs (with GPUs
    asked for, the GPUs usually decide: 4 trials per card at --gpus-per-trial 0.25).

    Tune accounts for one-worker trials itself; a multi-worker trial's workers are reserved by
    Ray Train, outside Tune's view, so without this limit Tune would start trials whose worker
    groups wait for resources until Train's start-up timeout.
    """
    return max(1, TrialShape.from_options(opts).trials_that_fit(cluster_nodes()))
