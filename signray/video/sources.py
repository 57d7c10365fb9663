"""Which videos to extract, and with which labels: every video under ``--src`` (a folder or URI,
searched recursively, or one file), labelled by a ``file,gloss,cat`` CSV whose ``file`` names a
video relative to ``--src`` (with or without its suffix; Windows separators accepted) or by one
``--gloss-id``/``--cat-id`` for the whole run, as the reference's preprocessing takes them.

A clip is named after its video's path under ``--src`` without the suffix, ``/``-separated
(``signer1/hello.mp4`` -> ``signer1/hello``); that name is its file under ``clips/`` and its
``file`` in the labels CSV written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import PurePosixPath

from signray.data.labels import clip_name, parse_labels, range_text
from signray.errors import DataError
from signray.storage import Location, RemotePath, as_location
from signray.video.decode import VIDEO_SUFFIXES

__all__ = ["Job", "find_videos", "plan_jobs"]


@dataclass(frozen=True)
class Job:
    """One video to extract."""

    name: str  # the clip's name: its path under --src without suffix, '/'-separated
    source: str  # the video (local path or URI)
    relative: str  # the video's path under --src, as the failures file names it
    gloss: int
    cat: int


def find_videos(src: Location) -> dict[str, Location]:
    """Every video under `src` (recursively), by its '/'-separated path relative to `src`.
    Local videos are named by absolute paths: the workers that decode them may run in another
    folder (a joined cluster's workers do)."""
    if not isinstance(src, RemotePath):
        src = as_location(os.path.abspath(src))
    if src.is_file():
        return {src.name: src}
    found: dict[str, Location] = {}
    if isinstance(src, RemotePath):
        from pyarrow.fs import FileSelector, FileType

        base = src.fs_path.rstrip("/") + "/"
        for info in src.fs.get_file_info(FileSelector(src.fs_path, recursive=True)):
            if info.type == FileType.File and info.path.lower().endswith(VIDEO_SUFFIXES):
                rel = info.path[len(base) :]
                found[rel] = src / rel
        return found
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for file in sorted(files):
            if file.lower().endswith(VIDEO_SUFFIXES) and not file.startswith("."):
                path = os.path.join(root, file)
                found[PurePosixPath(*os.path.relpath(path, src).split(os.sep)).as_posix()] = (
                    as_location(path)
                )
    return found


def _stem(rel: str) -> str:
    return rel.rsplit(".", 1)[0]


def plan_jobs(
    src: str | os.PathLike[str] | RemotePath,
    labels: str | os.PathLike[str] | RemotePath | None,
    *,
    gloss_id: int | None,
    cat_id: int | None,
    num_gloss: int | None = None,
    num_cat: int | None = None,
) -> tuple[list[Job], list[str]]:
    """The videos to extract and notes for the user; raises one `DataError` with every problem
    (before anything starts)."""
    where = as_location(src)
    if not where.exists():
        raise DataError(f"--src {where} does not exist (expected a folder of videos or a video)")
    videos = find_videos(where)
    if not videos:
        kinds = ", ".join(VIDEO_SUFFIXES)
        raise DataError(f"--src {where}: no videos found (looked for {kinds}, in sub-folders too)")
    by_name: dict[str, list[str]] = {}
    for rel in videos:
        by_name.setdefault(_stem(rel), []).append(rel)
    problems = [
        f"--src {where}: {', '.join(rels)} would all become clip {name!r} (rename one)"
        for name, rels in by_name.items()
        if len(rels) > 1
    ]
    notes: list[str] = []
    if labels is None:
        if gloss_id is None:
            problems.append("give --labels CSV (file,gloss,cat) or --gloss-id [--cat-id]")
            raise DataError(problems)
        cat = gloss_id if cat_id is None else cat_id
        for field, value, limit in (("gloss", gloss_id, num_gloss), ("cat", cat, num_cat)):
            if value < 0 or (limit is not None and value >= limit):
                problems.append(f"--{field}-id {value} (expected {range_text(field, limit)})")
        if problems:
            raise DataError(problems)
        jobs = [Job(_stem(rel), str(path), rel, gloss_id, cat) for rel, path in videos.items()]
        return jobs, notes
    if gloss_id is not None or cat_id is not None:
        problems.append("--labels and --gloss-id/--cat-id exclude each other (give one)")
    csv = as_location(labels)
    rows, csv_problems, notes = parse_labels(csv, num_gloss, num_cat)
    problems += csv_problems
    jobs, listed = [], set()
    for row in rows:
        name = clip_name(row.name)  # the CSV may name the video with its suffix
        rel = name if name in videos else None
        if rel is None and len(by_name.get(name, [])) == 1:
            rel = by_name[name][0]
        if rel is None:
            problems.append(
                f"labels CSV {csv} line {row.line}: no video {row.name!r} under --src {where} "
                f"(expected the video's path relative to --src, with or without its suffix)"
            )
            continue
        listed.add(rel)
        jobs.append(Job(_stem(rel), str(videos[rel]), rel, row.gloss, row.cat))
    if problems:
        raise DataError(problems)
    unlisted = len(videos) - len(listed)
    if unlisted:
        notes.append(f"{unlisted} video(s) under --src are not in {csv} and are left out")
    return jobs, notes
