"""Pack a validated split into a few large shards so training never opens thousands of files.

Usage::

    python -m signray.data.pack --src DIR --labels CSV --output-dir DIR --num-shards 8 \\
        [--key X2048 --key X] [--num-gloss 105 --num-cat 10] [--max-frames 300] [--overwrite]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from signray.cli import add_output_dir_flag, command, command_parser
from signray.data.packed import PackedSplit
from signray.data.shards import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    shard_file_name,
)
from signray.data.splits import load_split_with_key
from signray.errors import DataError
from signray.io import write_npz, write_text

__all__ = ["main", "pack_split", "shard_boundaries"]


def shard_boundaries(offsets: np.ndarray, num_shards: int) -> np.ndarray:
    """Clip indices ``(num_shards + 1,)`` cutting contiguous shards with balanced frame counts.

    Each cut sits at the clip boundary nearest to an equal share of frames; every shard keeps at
    least one clip.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(offsets) - 1
    if not 1 <= num_shards <= n:
        raise DataError(f"num_shards is {num_shards} (expected 1 <= num_shards <= {n}, the clips)")
    total = offsets[-1]
    cuts = np.zeros(num_shards + 1, dtype=np.int64)
    cuts[-1] = n
    for k in range(1, num_shards):
        target = total * k / num_shards
        i = int(np.searchsorted(offsets, target))
        if i > 0 and target - offsets[i - 1] <= offsets[min(i, n)] - target:
            i -= 1
        cuts[k] = min(max(i, cuts[k - 1] + 1), n - (num_shards - k))
    return cuts


def _clear_outputs(out: Path) -> None:
    """Remove only what an earlier pack wrote (manifest first, so the folder reads as unpacked)."""
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    for path in out.glob("shard-*-of-*.npz"):
        path.unlink()


def pack_split(
    split: PackedSplit,
    out_dir: str | os.PathLike[str],
    num_shards: int,
    *,
    key: str = "X",
    num_gloss: int | None = None,
    num_cat: int | None = None,
    max_frames: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``split`` as ``num_shards`` contiguous shards plus ``manifest.json``; returns ``out``.

    Each shard is written to a temporary name and renamed, and the manifest is written last, so
    a crash never leaves a folder that loads as complete.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"output folder {out} is not empty (pass --overwrite to replace it)")
        _clear_outputs(out)
    out.mkdir(parents=True, exist_ok=True)

    cuts = shard_boundaries(split.offsets, num_shards)
    entries = []
    for k in range(num_shards):
        lo, hi = int(cuts[k]), int(cuts[k + 1])
        f0, f1 = int(split.offsets[lo]), int(split.offsets[hi])
        name = shard_file_name(k, num_shards)
        write_npz(
            out / name,
            {
                "frames": split.frames[f0:f1],
                "offsets": split.offsets[lo : hi + 1] - f0,
                "gloss": split.gloss[lo:hi],
                "cat": split.cat[lo:hi],
                "names": split.names[lo:hi],
            },
        )
        entries.append({"file": name, "num_clips": hi - lo, "num_frames": f1 - f0})

    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "num_shards": num_shards,
        "num_clips": len(split),
        "num_frames": split.num_frames,
        "feature_dim": split.feature_dim,
        "dtype": "float32",
        "key": key,
        "num_gloss": num_gloss,
        "num_cat": num_cat,
        "max_frames": max_frames,
        "shards": entries,
    }
    write_text(out / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("signray.data.pack", __doc__)
    p.add_argument("--src", required=True, type=Path, help="folder of per-clip .npz files")
    p.add_argument("--labels", required=True, type=Path, help="labels CSV (file,gloss,cat)")
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
    keys = tuple(args.keys or ("X",))
    if args.num_shards < 1:
        raise DataError(f"--num-shards is {args.num_shards} (expected a positive integer)")
    out = Path(args.output_dir)
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise DataError(f"output folder {out} is not empty (pass --overwrite to replace it)")
    split, key = load_split_with_key(
        args.src,
        args.labels,
        keys=keys,
        num_gloss=args.num_gloss,
        num_cat=args.num_cat,
        max_frames=args.max_frames,
        split=args.src.name or "input",
    )
    pack_split(
        split,
        out,
        args.num_shards,
        key=key,
        num_gloss=args.num_gloss,
        num_cat=args.num_cat,
        max_frames=args.max_frames,
        overwrite=args.overwrite,
    )
    mib = split.nbytes / 2**20
    print(
        f"packed {len(split)} clips, {split.num_frames} frames, D = {split.feature_dim} "
        f"({mib:.1f} MiB) into {args.num_shards} shards in {out}"
    )


main = command(build_parser, run, __name__)
