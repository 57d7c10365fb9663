"""The search's Optuna study in a database, and warm starts from an earlier study.

Every search records into an Optuna study named after the experiment, in ``--optuna-storage``
(default: ``sqlite:///EXPERIMENT/optuna.db``). The study holds every trial's per-epoch
``val_gloss_acc`` and its final state (COMPLETE; PRUNED when the scheduler stopped it; FAIL), so
``optuna-dashboard URL`` shows the search live, another driver can read it, ``--resume``
continues it, and a later search can ``--warm-start`` from it.

The SQLite file must be on a local disk (SQLite's locking does not work on object stores or
most network file systems): when the experiment lives in an object store the default goes to
``~/.cache/signray/optuna/NAME-HASH.db`` on the driver's machine, and the summary says so. Only the
driver writes to the study (the searcher runs there), so SQLite is enough for one search; use
PostgreSQL to share a study between machines.

Imports no Ray.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from signray.errors import ConfigError
from signray.layout import ExperimentFiles
from signray.storage import RemotePath, absolute, is_uri

__all__ = [
    "WarmStart",
    "check_new_study",
    "create_study",
    "default_storage_url",
    "finish_storage",
    "load_warm_source",
    "open_storage",
    "warm_start",
]

# Where the study goes when the experiment folder is not a local path.
LOCAL_STUDY_DIR = Path("~/.cache/signray/optuna")


def default_storage_url(files: ExperimentFiles) -> str:
    """``sqlite:///EXPERIMENT/optuna.db``, or, for a remote experiment, a local cache file named
    after the experiment and its URI (experiments of one name in two buckets do not share it)."""
    if isinstance(files.root, RemotePath):  # SQLite needs a local file
        folder = LOCAL_STUDY_DIR.expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(str(files.root).encode()).hexdigest()[:12]
        return f"sqlite:///{folder / f'{files.name}-{key}.db'}"
    return f"sqlite:///{files.root.resolve() / ExperimentFiles.OPTUNA_DB}"


def open_storage(url: str, flag: str = "--optuna-storage"):
    """An Optuna RDB storage for `url`; a ConfigError naming `flag` when it cannot be opened."""
    import optuna

    sqlite = url.startswith("sqlite:///")
    if sqlite:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        storage = optuna.storages.RDBStorage(url)
    except Exception as err:  # a bad URL, a missing database driver, an unreachable server
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError([f"`{flag}` {url} cannot be opened: {reason}"]) from None
    if sqlite:
        _write_ahead_log(storage)
    return storage


def _write_ahead_log(storage) -> None:
    """SQLite in write-ahead-log mode with normal syncs: the searcher writes every epoch of
    every trial from Tune's event loop, and a rollback journal's fsync per write made an ask
    2x and a report 4x slower here (130 -> 65 ms, 8 -> 2 ms). Readers (optuna-dashboard) are
    not blocked; WAL mode stays set in the file."""
    from sqlalchemy import event

    @event.listens_for(storage.engine, "connect")
    def _pragmas(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    storage.engine.dispose()  # connections made from now on get the pragmas


def finish_storage(url: str | None, storage=None) -> None:
    """Close `storage`'s connections and write a SQLite study's log into its database file, so
    that the file alone holds every trial once the command ends (it ends without the teardown
    that would close the last connection: `signray.cli`)."""
    if storage is not None:
        storage.engine.dispose()
    if url and url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def check_new_study(storage, name: str) -> None:
    """Refuse to record a new search into an existing study (its trials would mix)."""
    import optuna

    if name in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        raise ConfigError(
            [
                f"the Optuna storage already has a study named {name!r}: continue it with "
                "--resume, or choose another --name (or --optuna-storage)"
            ]
        )


def create_study(storage, name: str, directions: list[str]):
    """A new, empty study `name` in `storage` (see `check_new_study`)."""
    import optuna

    check_new_study(storage, name)
    directions = ["maximize" if d == "max" else "minimize" for d in directions]
    return optuna.create_study(storage=storage, study_name=name, directions=directions)


@dataclass
class WarmStart:
    """What a warm start told the new study, and what it could not carry over."""

    source: str
    told: int = 0
    enqueued: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [
            f"warm start from {self.source}: {self.told} finished trial(s) told to the study; "
            f"{len(self.enqueued)} best config(s) run first"
        ]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def _source(spec: str) -> tuple[str, str | None, str]:
    """(storage URL, study name or None for "the only one", description) of `--warm-start`."""
    if "://" in spec and not is_uri(spec):  # a database, not an experiment on object storage
        url, _, name = spec.partition("#")
        return url, name or None, spec
    files = ExperimentFiles(absolute(spec))
    if files.driver_state.is_file():
        from signray.config.experiment_state import ExperimentState

        url = ExperimentState.load(files.driver_state).options.optuna_storage
        return url or default_storage_url(files), files.name, str(files.root)
    if (files.root / ExperimentFiles.OPTUNA_DB).is_file():
        return default_storage_url(files), files.name, str(files.root)
    raise ConfigError(
        [
            f"`--warm-start` {spec} is neither a signray.tune experiment folder (no "
            f"{ExperimentFiles.DRIVER_STATE} or {ExperimentFiles.OPTUNA_DB}) nor a storage URL "
            "(sqlite:///FILE.db#STUDY, postgresql://...#STUDY)"
        ]
    )


def load_warm_source(spec: str):
    """The earlier study `--warm-start SPEC` names, read-only; ConfigError if there is none."""
    import optuna

    url, name, description = _source(spec)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise ConfigError([f"`--warm-start` {spec}: no study database at {url}"])
    storage = open_storage(url, "--warm-start")
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if name is None:
        if len(names) != 1:
            raise ConfigError(
                [
                    f"`--warm-start` {spec} holds {len(names)} studies ({', '.join(names)}): "
                    "name one as URL#STUDY"
                ]
            )
        name = names[0]
    if name not in names:
        raise ConfigError(
            [f"`--warm-start` {spec} has no study {name!r} (it has: {', '.join(names) or 'none'})"]
        )
    return optuna.load_study(study_name=name, storage=storage), description


def _fits(dist: BaseDistribution, value: Any) -> bool:
    try:
        return dist._contains(dist.to_internal_repr(value))
    except (ValueError, TypeError):
        return False


def _nearest(dist: BaseDistribution, value: Any) -> Any | None:
    """`value` moved into `dist` (clipped to its range, onto its step); None if it cannot be."""
    if isinstance(dist, CategoricalDistribution):
        return value if value in dist.choices else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return None
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    clipped = min(max(value, dist.low), dist.high)
    if dist.step is not None:
        clipped = dist.low + round((clipped - dist.low) / dist.step) * dist.step
        clipped = min(clipped, dist.high)
    return int(round(clipped)) if isinstance(dist, IntDistribution) else float(clipped)


def _score(trial) -> float:
    """How good an earlier trial was: its first objective (accuracy), else its best epoch."""
    values = trial.values or list(trial.intermediate_values.values()) or [-math.inf]
    return float(values[0] if trial.values else max(values))


def warm_start(study, source, distributions: dict[str, BaseDistribution], top_k: int) -> WarmStart:
    """Tell `study` every finished trial of `source` (`load_warm_source`), and enqueue its best
    `top_k` configs (moved into the new distributions) so that they run first.

    An earlier trial's field that the new space does not search is left out (and reported);
    a value outside the new distribution is left out of the told trial (telling it would
    teach the sampler about points it cannot suggest) and clipped into range for an enqueued
    config (reported either way).
    """
    from optuna.trial import TrialState, create_trial

    old, description = source
    report = WarmStart(description)
    finished = [t for t in old.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if not finished:
        report.notes.append("the earlier study has no finished trial; nothing to start from")
        return report
    same_objectives = len(old.directions) == len(study.directions)
    if not same_objectives:
        report.notes.append(
            f"the earlier study has {len(old.directions)} objective(s), this one "
            f"{len(study.directions)}: its trials are not told, only its best configs run first"
        )
    dropped: dict[str, int] = {}
    outside: dict[str, int] = {}
    for trial in finished:
        params, dists = {}, {}
        for name, value in trial.params.items():
            if name not in distributions:
                dropped[name] = dropped.get(name, 0) + 1
            elif not _fits(distributions[name], value):
                outside[name] = outside.get(name, 0) + 1
            else:
                params[name], dists[name] = value, distributions[name]
        if not same_objectives:
            continue
        complete = trial.state == TrialState.COMPLETE
        study.add_trial(
            create_trial(
                state=trial.state,
                params=params,
                distributions=dists,
                values=trial.values if complete else None,
                intermediate_values=dict(trial.intermediate_values),
                user_attrs={"warm_start_from": f"{old.study_name}#{trial.number}"},
            )
        )
        report.told += 1
    if dropped:
        report.notes.append(
            "fields the new space does not search (left out): "
            + ", ".join(f"{k} ({n} trials)" for k, n in sorted(dropped.items()))
        )
    if outside:
        report.notes.append(
            "values outside the new space's distributions (left out of the told trials): "
            + ", ".join(f"{k} ({n} trials)" for k, n in sorted(outside.items()))
        )
    ranked = sorted(
        finished, key=lambda t: (t.state == TrialState.COMPLETE, _score(t)), reverse=True
    )
    seen: list[dict[str, Any]] = []
    for trial in ranked:
        if len(seen) >= top_k:
            break
        point = {}
        for name, value in trial.params.items():
            if name not in distributions:
                continue
            moved = _nearest(distributions[name], value)
            if moved is None:
                report.notes.append(
                    f"trial #{trial.number}: {name}={value!r} is not among the new choices; "
                    "the sampler picks it"
                )
            else:
                if moved != value:
                    report.notes.append(
                        f"trial #{trial.number}: {name}={value!r} is outside the new space; "
                        f"runs with {moved!r}"
                    )
                point[name] = moved
        if point and point not in seen:
            seen.append(point)
            study.enqueue_trial(point, user_attrs={"warm_start_best_of": old.study_name})
    report.enqueued = seen
    return report
