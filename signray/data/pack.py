"""Pack a split into a few large memory-mappable shards (format 2), streaming over its clips.

Usage::

    python -m signray.data.pack --src DIR [--labels CSV] --output-dir DIR --num-shards 8 \\
        [--key X2048 --key X] [--num-gloss 105 --num-cat 10] [--max-frames 300] [--overwrite]

``--src`` is a folder of per-clip ``.npz`` files (``--labels`` required) or a shard folder of
format 1 or 2 (re-packed, e.g. to another number of shards). Two passes, each holding one clip
(or one source shard) at a time: the first checks everything and learns every clip's length,
the second writes contiguous shards with balanced frame counts. Frames keep their dtype (float16
features stay float16); the manifest records counts, lengths, id ranges, checksums and the
split's normalisation statistics.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import time
from pathlib import Path

import numpy as np

from signray.cli import add_output_dir_flag, command, command_parser
from signray.data.packed import Split
from signray.data.scan import SplitIndex, iter_clips, scan_split
from signray.data.shard_writer import ShardWriter, prepare_output, shard_boundaries
from signray.errors import DataError

__all__ = ["main", "pack_index", "pack_split", "peak_rss_bytes", "shard_boundaries"]


def pack_index(
    index: SplitIndex,
    out_dir: str | os.PathLike[str],
    num_shards: int,
    *,
    keys: tuple[str, ...] = ("X",),
    num_gloss: int | None = None,
    num_cat: int | None = None,
    max_frames: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    extra: dict | None = None,
) -> dict:
    """Write a split `scan_split` checked as `num_shards` format-2 shards; returns the manifest."""
    out = Path(out_dir)
    shard_boundaries(index.lengths, num_shards)  # a bad count fails before anything is removed
    prepare_output(out, overwrite)

    def report(entry: dict) -> None:
        print(f"  {entry['name']}: {entry['num_clips']} clips, {entry['num_frames']} frames",
              flush=True)  # fmt: skip

    writer = ShardWriter(
        out, num_shards, index.feature_dim, index.dtype, key=index.key,
        num_gloss=num_gloss, num_cat=num_cat, max_frames=max_frames,
        on_shard=report if progress else None, extra=extra,
    )  # fmt: skip
    clips = iter_clips(index, keys=keys, max_frames=max_frames)
    return writer.write_all(clips, index.lengths)


def pack_split(
    split: Split,
    out_dir: str | os.PathLike[str],
    num_shards: int,
    *,
    key: str = "X",
    num_gloss: int | None = None,
    num_cat: int | None = None,
    max_frames: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a split already in memory as `num_shards` format-2 shards; returns the folder."""
    out = Path(out_dir)
    shard_boundaries(split.lengths, num_shards)
    prepare_output(out, overwrite)
    writer = ShardWriter(out, num_shards, split.feature_dim, split.dtype, key=key,
                         num_gloss=num_gloss, num_cat=num_cat, max_frames=max_frames)  # fmt: skip
    clips = (
        (split.clip(i), str(split.names[i]), int(split.gloss[i]), int(split.cat[i]))
        for i in range(len(split))
    )
    writer.write_all(clips, np.asarray(split.lengths))
    return out


def peak_rss_bytes() -> int:
    """This process's peak resident memory: VmHWM, which (unlike ``ru_maxrss``) does not carry
    the high-water mark of the process that forked it."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("signray.data.pack", __doc__)
    p.add_argument("--src", required=True, type=Path,
                   help="folder of per-clip .npz files, or a shard folder to re-pack")  # fmt: skip
    p.add_argument("--labels", type=Path, default=None,
                   help="labels CSV (file,gloss,cat); required for per-clip folders")  # fmt: skip
    add_output_dir_flag(p, "output folder for the shards", required=True)
    p.add_argument("--num-shards", type=int, default=8)
    p.add_argument(
        "--key",
        action="append",
        dest="keys",
        help="npz key to read, repeatable, tried in order (default: X)",
    )
    p.add_argument("--num-gloss", type=int, default=None, help="gloss ids must be < this")
    p.add_argument("--num-cat", type=int, default=None, help="category ids must be < this")
    p.add_argument("--max-frames", type=int, default=None, help="subsample longer clips")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an earlier pack in --output-dir"
    )
    return p


def run(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    keys = tuple(args.keys or ("X",))
    if args.num_shards < 1:
        raise DataError(f"--num-shards is {args.num_shards} (expected a positive integer)")
    out = Path(args.output_dir)
    if out.resolve() == args.src.resolve():
        raise DataError(f"--output-dir {out} is --src itself (expected another folder)")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise DataError(f"output folder {out} is not empty (pass --overwrite to replace it)")
    index = scan_split(
        args.src, args.labels, keys=keys, num_gloss=args.num_gloss, num_cat=args.num_cat,
        max_frames=args.max_frames, split=args.src.name or "input",
    )  # fmt: skip
    shard_boundaries(index.lengths, args.num_shards)
    print(
        f"checked {len(index)} clips, {index.num_frames} frames, D = {index.feature_dim} "
        f"{index.dtype.name} ({index.nbytes / 2**20:.1f} MiB); writing {args.num_shards} shards",
        flush=True,
    )
    pack_index(
        index, out, args.num_shards, keys=keys, num_gloss=args.num_gloss, num_cat=args.num_cat,
        max_frames=args.max_frames, overwrite=args.overwrite, progress=True,
    )  # fmt: skip
    print(
        f"packed into {out} in {time.perf_counter() - start:.1f}s "
        f"(peak memory {peak_rss_bytes() / 2**20:.0f} MiB)",
        flush=True,
    )


main = command(build_parser, run, __name__)
