"""Free the worker placement groups of multi-worker trials that ended, on any cluster.

A multi-worker trial runs a Ray Train `TorchTrainer`, whose worker group holds a placement group
(PG). When the trial's training returns, Train removes it. When Tune stops the trial early (ASHA)
or the trial fails, Tune kills the trial's process, and with it Train's controller, before that
happens; Train then relies on a cleaner actor that polls the dashboard's State API, which does
not exist on a cluster started with ``--include-dashboard=false`` (and which, on a host running
several clusters, may ask the wrong one). The group then stays reserved and later trials wait for
its CPUs forever (Ray issue 54305).

So rank 0 of every Train run reports its PG's id with each epoch (`PG_METRIC`), and this
driver-side callback removes the groups of a trial once the trial is no longer running (ended,
errored, or being retried), asking the GCS directly: no dashboard needed. Every id a trial
reported is kept, because a worker-group restart (``--worker-failures``) creates a new group.
Groups already removed (the normal end of a Train run) are left alone.
"""

from __future__ import annotations

import logging

import ray
from ray import tune
from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

__all__ = ["PG_METRIC", "RemoveTrainPlacementGroups", "current_placement_group_id"]

logger = logging.getLogger(__name__)

PG_METRIC = "train_placement_group"


def current_placement_group_id() -> str:
    """The hex id of the placement group this worker runs in ("" outside one)."""
    group = ray.util.get_current_placement_group()
    return group.id.hex() if group is not None else ""


class RemoveTrainPlacementGroups(tune.Callback):
    """Remove the Train worker groups' placement groups of trials that stopped running."""

    def __init__(self) -> None:
        self._groups: dict[str, set[str]] = {}  # trial id -> PG ids it reported
        self._ended: dict[str, object] = {}  # trial id -> Trial, waiting to stop running
        self.removed: list[str] = []

    def __getstate__(self) -> dict:
        return {"_groups": {}, "_ended": {}, "removed": []}

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        group = result.get(PG_METRIC)
        if group:
            self._groups.setdefault(trial.trial_id, set()).add(group)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._ended[trial.trial_id] = trial

    on_trial_error = on_trial_complete

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        # The failed attempt's process, and the controller it owned, are gone; the retry needs
        # the CPUs its group still holds.
        self._remove(trial.trial_id)

    def on_step_end(self, iteration, trials, **info) -> None:
        # Tune calls on_trial_complete before it stops the trial: wait until it has, so that a
        # controller still alive cannot answer the removal by starting a new worker group.
        for trial_id, trial in list(self._ended.items()):
            if trial.status != "RUNNING":
                self._remove(trial_id)

    def on_experiment_end(self, trials, **info) -> None:
        for trial in trials:
            if trial.status != "RUNNING":
                self._remove(trial.trial_id)

    def _remove(self, trial_id: str) -> None:
        self._ended.pop(trial_id, None)
        groups = self._groups.pop(trial_id, set())
        if not groups:
            return
        table = placement_group_table()
        for group in groups:
            state = table.get(group, {}).get("state")
            if state in (None, "REMOVED"):
                continue
            try:
                remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group))))
            except Exception as err:  # noqa: BLE001 - the search must go on; say what leaked
                logger.warning(
                    "cannot remove placement group %s of trial %s: %s", group, trial_id, err
                )
                continue
            self.removed.append(group)
            print(
                f"freed the worker placement group {group} of trial {trial_id}, which Tune "
                "ended before its Ray Train run could",
                flush=True,
            )
