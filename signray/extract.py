"""Extract keypoints (and InceptionV3 features) from sign videos into the clips signray trains on.

Usage::

    python -m signray.extract --src VIDEOS --labels LABELS.csv --output-dir OUT \\
        [--features --backbone-weights inception_v3_google-0cc3c7bd.pth] [--num-shards N]

``OUT/clips/`` gets one ``.npz`` per video (``X`` [T, 156], ``mask``, ``timestamps_ms``,
``meta``, and ``X2048`` [T, 2048] with ``--features``), ``OUT/labels.csv`` their
``file,gloss,cat,occluded``, ``OUT/failures.csv`` the videos that failed and why, and with
``--num-shards`` the format-2 shard folders ``OUT/shards/keypoints`` (and ``features``). Runs on
Ray Data (a local cluster, or ``--address``); everything is checked before Ray starts. A re-run
skips clips already extracted with the same settings; other settings are refused unless
``--overwrite``. Exit code 2 at the end when a video failed, unless ``--skip-bad``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time

from signray.cli import (
    add_cluster_flags,
    add_dataclass_flags,
    add_output_dir_flag,
    command,
    command_parser,
    given_values,
)
from signray.config.extract import ExtractConfig
from signray.config.train import PRECISIONS
from signray.errors import ConfigError, DataError
from signray.io import read_bytes, write_text
from signray.layout import ExtractionFiles
from signray.storage import RemotePath, absolute, as_location, writable_problem
from signray.video.clip import ClipCollector, Outcome, read_meta, versions
from signray.video.keypoints import LAYOUT
from signray.video.sources import Job, plan_jobs

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("signray.extract", __doc__)
    p.add_argument(
        "--src", required=True, help="folder (or URI) of videos, searched recursively, or a video"
    )
    p.add_argument(
        "--labels", default=None, help="labels CSV file,gloss,cat (file: a video under --src)"
    )
    p.add_argument("--gloss-id", type=int, default=None,
                   help="instead of --labels: one gloss id for every video")  # fmt: skip
    p.add_argument("--cat-id", type=int, default=None,
                   help="with --gloss-id: the category id (default: the gloss id)")  # fmt: skip
    p.add_argument("--num-gloss", type=int, default=None, help="gloss ids must be < this")
    p.add_argument("--num-cat", type=int, default=None, help="category ids must be < this")
    add_output_dir_flag(p, "folder (or URI) to write the clips into", required=True)
    p.add_argument("--num-shards", type=int, default=None,
                   help="also pack the clips into N format-2 shards per key")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="re-extract every clip, also when --output-dir was made with other "
                   "settings")  # fmt: skip
    p.add_argument(
        "--skip-bad", action="store_true", help="exit 0 even when videos failed (failures.csv)"
    )
    add_dataclass_flags(
        p.add_argument_group("extraction"), ExtractConfig, choices={"precision": PRECISIONS}
    )
    add_cluster_flags(p)
    return p


def _weights(cfg: ExtractConfig) -> bytes | None:
    """The backbone weights' bytes, checked by building the backbone (before Ray starts)."""
    if not cfg.features or cfg.random_backbone:
        return None
    from signray.video.features import load_backbone

    path = as_location(cfg.backbone_weights)
    if not path.is_file():
        raise ConfigError(
            f"`--backbone-weights` {path} does not exist. Get torchvision's ImageNet "
            "InceptionV3 weights (IMAGENET1K_V1) on a machine with internet access: "
            "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
        )
    weights = read_bytes(path)
    load_backbone(weights)
    return weights


def _settings_problem(files: ExtractionFiles, settings: dict) -> str | None:
    """Why the output folder's recorded settings differ from these, or None."""
    if not files.settings.is_file():
        return None
    try:
        before = json.loads(files.settings.read_text()).get("settings", {})
    except (OSError, ValueError, AttributeError) as err:
        return f"{files.settings} cannot be read ({err})"
    changed = [
        f"{k}: {before.get(k)!r} -> {settings.get(k)!r}"
        for k in sorted(set(before) | set(settings))
        if before.get(k) != settings.get(k)
    ]
    return "; ".join(changed) or None


def _csv_text(header: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _pack(files: ExtractionFiles, cfg: ExtractConfig, num_shards: int, args) -> None:
    from signray.data.pack import pack_index
    from signray.data.scan import scan_split

    targets = [("X", files.keypoint_shards)]
    if cfg.features:
        targets.append(("X2048", files.feature_shards))
    for key, out in targets:
        index = scan_split(
            files.clips, files.labels_csv, keys=(key,), num_gloss=args.num_gloss,
            num_cat=args.num_cat, split="extracted",
        )  # fmt: skip
        pack_index(
            index, out, num_shards, keys=(key,), num_gloss=args.num_gloss, num_cat=args.num_cat,
            overwrite=True, extra={"layout": LAYOUT} if key == "X" else None,
        )  # fmt: skip
        print(f"packed {len(index)} clips ({key}) into {num_shards} shards: {out}", flush=True)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    cfg = ExtractConfig.from_mapping(given_values(args, ExtractConfig))
    files = ExtractionFiles(args.output_dir)
    problem = writable_problem(files.root, "--output-dir")
    if problem:
        raise ConfigError(problem)
    jobs, notes = plan_jobs(
        args.src, args.labels, gloss_id=args.gloss_id, cat_id=args.cat_id,
        num_gloss=args.num_gloss, num_cat=args.num_cat,
    )  # fmt: skip
    for note in notes:
        print(f"note: {note}", flush=True)
    if args.num_shards is not None:
        if not 1 <= args.num_shards <= len(jobs):
            raise ConfigError(f"--num-shards is {args.num_shards} (expected 1 to {len(jobs)}, "
                              "the videos)")  # fmt: skip
        if isinstance(files.root, RemotePath):
            raise ConfigError("--num-shards writes shards to a local --output-dir; pack shards "
                              "on object storage from a local copy")  # fmt: skip
    weights = _weights(cfg)
    from signray.video.features import backbone_identity

    settings = cfg.settings(backbone_identity(weights) if cfg.features else None)
    fingerprint = ExtractConfig.fingerprint(settings)
    changed = _settings_problem(files, settings)
    if changed and not args.overwrite:
        raise ConfigError(
            f"--output-dir {files.root} was extracted with other settings ({changed}); pass "
            "--overwrite to extract every clip again with the new ones, or use another "
            "--output-dir"
        )
    keys = ("X", "X2048") if cfg.features else ("X",)
    done: dict[str, Outcome] = {}
    if not args.overwrite:
        for job in jobs:
            meta = read_meta(files.clip(job.name), keys)
            if meta is not None and meta.get("settings") == fingerprint:
                done[job.name] = Outcome(job.name, occluded=int(meta.get("occluded", 0)))
    write_text(files.settings, json.dumps({
        "settings": settings, "fingerprint": fingerprint, "layout": LAYOUT,
        "src": str(absolute(args.src)), "versions": versions(),
    }, indent=1) + "\n")  # fmt: skip
    todo = [job for job in jobs if job.name not in done]
    print(f"{len(jobs)} video(s): {len(done)} already extracted with these settings, "
          f"{len(todo)} to extract into {files.clips}", flush=True)  # fmt: skip
    failures = _extract(todo, cfg, weights, files, fingerprint, args, done) if todo else []
    by_name = {job.name: job for job in jobs}
    write_text(files.labels_csv, _csv_text(
        ["file", "gloss", "cat", "occluded"],
        [[j.name, j.gloss, j.cat, done[j.name].occluded] for j in jobs if j.name in done],
    ))  # fmt: skip
    if failures:
        rows = [[by_name[o.name].relative, o.reason] for o in failures]
        write_text(files.failures_csv, _csv_text(["file", "reason"], rows))
    elif files.failures_csv.exists():
        files.failures_csv.unlink()
    print(f"extracted {len(done)} of {len(jobs)} clip(s) in {time.perf_counter() - start:.1f}s; "
          f"labels: {files.labels_csv}", flush=True)  # fmt: skip
    if args.num_shards is not None and done:
        _pack(files, cfg, args.num_shards, args)
    if failures:
        lines = [f"{by_name[o.name].relative}: {o.reason}" for o in failures]
        message = f"{len(failures)} video(s) failed (listed in {files.failures_csv})"
        if args.skip_bad:
            print(f"{message}:\n  " + "\n  ".join(lines), file=sys.stderr, flush=True)
            return 0
        raise DataError(lines, title=message)
    return 0


def _extract(
    todo: list[Job],
    cfg: ExtractConfig,
    weights: bytes | None,
    files: ExtractionFiles,
    fingerprint: str,
    args: argparse.Namespace,
    done: dict[str, Outcome],
) -> list[Outcome]:
    """Run the Ray Data pipeline over `todo`; fills `done`, returns the failures."""
    from signray.tuning.cluster import init_ray
    from signray.tuning.extraction import cluster_resources, plan_pools, run_pipeline

    init_ray(args.address, dashboard_host=args.dashboard_host,
             dashboard_port=args.dashboard_port)  # fmt: skip
    pools = plan_pools(cfg, *cluster_resources())
    print(f"stages: {pools.describe()}", flush=True)
    failures: list[Outcome] = []
    count, finished = len(todo), iter(range(1, len(todo) + 1))

    def report(outcome: Outcome) -> None:
        finished_now = next(finished)
        if outcome.reason:
            failures.append(outcome)
            print(f"[{finished_now}/{count}] FAILED {outcome.name}: {outcome.reason}", flush=True)
        else:
            done[outcome.name] = outcome
            occ = ", occluded" if outcome.occluded else ""
            print(
                f"[{finished_now}/{count}] {outcome.name}: {outcome.frames} frames{occ}", flush=True
            )

    sources = {job.name: job.relative for job in todo}
    collector = ClipCollector(cfg, files.clip, sources, fingerprint, report)
    run_pipeline(todo, cfg, pools, weights, collector)
    return failures


main = command(build_parser, run, __name__)
