"""Write a deterministic FSL-like synthetic dataset in the layout every command reads.

Usage::

    python -m signray.data.synth --output-dir DIR [--num-gloss 105 --num-cat 10
        --train-per-gloss 16 --val-per-gloss 4 --seed 0 --difficulty medium --min-len 16
        --max-len 120 --no-features --no-keypoints --num-shards 8]

The clips come from `signray.data.synth_generator`; `synthetic_splits` gives the same clips in
memory. ``--num-shards N`` writes each split as format-2 shards (what `signray.data.pack` would
make of the per-clip files) straight away, streaming: how large datasets are made quickly.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from signray.cli import (
    add_dataclass_flags,
    add_output_dir_flag,
    command,
    command_parser,
    given_values,
)
from signray.data.shard_writer import ShardWriter, prepare_output
from signray.data.synth_generator import (
    DIFFICULTIES,
    KEYPOINT_DIM,
    SynthClip,
    SynthSpec,
    feature_stream,
    generate,
)
from signray.errors import ConfigError
from signray.io import write_npz, write_text

__all__ = ["build_parser", "main", "write_dataset"]


def _labels_csv(clips: list[SynthClip]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "gloss", "cat", "occluded"])
    for i, clip in enumerate(clips):
        # Both spellings of `file` occur in real label files; exercise both.
        name = clip.name if i % 2 == 0 else f"{clip.name}.npz"
        writer.writerow([name, clip.gloss, clip.cat, int(clip.occluded)])
    return buf.getvalue()


def _write_shards(folder: Path, clips: list[SynthClip], arrays, key: str, num_shards: int,
                  dim: int, dtype: str, spec: SynthSpec) -> None:  # fmt: skip
    prepare_output(folder, overwrite=True)
    writer = ShardWriter(folder, num_shards, dim, dtype, key=key, num_gloss=spec.num_gloss,
                         num_cat=spec.num_cat)  # fmt: skip
    rows = ((a, c.name, c.gloss, c.cat) for a, c in zip(arrays, clips, strict=True))
    writer.write_all(rows, np.asarray([len(c.keypoints) for c in clips]))


def write_dataset(
    out_dir: str | os.PathLike[str],
    *,
    features: bool = True,
    keypoints: bool = True,
    num_shards: int | None = None,
    **spec: Any,
) -> Path:
    """Write the FSL-like layout of `SynthSpec(**spec)`: ``keypoints_{train,val}/``,
    ``features_{train,val}/`` (unless not `keypoints` / `features`) and
    ``{train,val}_labels.csv``; with `num_shards`, each split folder holds format-2 shards
    (at most as many as it has clips) instead of per-clip files.

    Same arguments give byte-identical files. Files of the same name are replaced atomically;
    other files already in ``out_dir`` are left alone (the label CSVs list only the new clips).
    """
    synth = SynthSpec(**spec)
    world, splits = generate(synth)
    out = Path(out_dir)
    for split, (clips, feat_rng) in splits.items():
        kp = (c.keypoints for c in clips)
        feats = feature_stream(clips, feat_rng, world, DIFFICULTIES[synth.difficulty])
        kinds = [("keypoints", kp, "X", KEYPOINT_DIM, "float32")] if keypoints else []
        if features:
            kinds.append(("features", feats, "X2048", synth.feature_dim, "float16"))
        for kind, arrays, key, dim, dtype in kinds:
            folder = out / f"{kind}_{split}"
            if num_shards:
                n = min(num_shards, len(clips))
                _write_shards(folder, clips, arrays, key, n, dim, dtype, synth)
                continue
            for clip, array in zip(clips, arrays, strict=True):
                write_npz(folder / f"{clip.name}.npz", {key: array})
        write_text(out / f"{split}_labels.csv", _labels_csv(clips))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("signray.data.synth", __doc__)
    add_output_dir_flag(p, "folder to write the dataset into", required=True)
    add_dataclass_flags(p, SynthSpec, choices={"difficulty": sorted(DIFFICULTIES)})
    p.add_argument("--no-features", action="store_true", help="write no features")
    p.add_argument("--no-keypoints", action="store_true", help="write no keypoints")
    p.add_argument(
        "--num-shards",
        type=int,
        default=None,
        help="write each split as this many format-2 shards (default: per-clip files)",
    )
    return p


def run(args: argparse.Namespace) -> None:
    spec = SynthSpec(**given_values(args, SynthSpec))
    if args.num_shards is not None and args.num_shards < 1:
        raise ConfigError(f"--num-shards is {args.num_shards} (expected a positive integer)")
    out = write_dataset(
        args.output_dir, features=not args.no_features, keypoints=not args.no_keypoints,
        num_shards=args.num_shards, **vars(spec),
    )  # fmt: skip
    n_train, n_val = spec.num_gloss * spec.train_per_gloss, spec.num_gloss * spec.val_per_gloss
    print(f"wrote {n_train} train and {n_val} val clips ({spec.difficulty}) to {out}")


main = command(build_parser, run, __name__)
