"""Write a deterministic FSL-like synthetic dataset in the layout every command reads.

Usage::

    python -m signray.data.synth --output-dir DIR [--num-gloss 105 --num-cat 10
        --train-per-gloss 16 --val-per-gloss 4 --seed 0 --difficulty medium --min-len 16
        --max-len 120 --no-features]

The clips come from `signray.data.synth_generator`; `synthetic_splits` gives the same clips in
memory.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from signray.cli import add_output_dir_flag, run_command
from signray.data.synth_generator import DIFFICULTIES, SynthClip, feature_stream, generate
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


def write_dataset(
    out_dir: str | os.PathLike[str],
    *,
    num_gloss: int = 105,
    num_cat: int = 10,
    train_per_gloss: int = 16,
    val_per_gloss: int = 4,
    seed: int = 0,
    difficulty: str = "medium",
    min_len: int = 16,
    max_len: int = 120,
    features: bool = True,
    feature_dim: int = 2048,
) -> Path:
    """Write the FSL-like layout: ``keypoints_{train,val}/``, ``features_{train,val}/`` and
    ``{train,val}_labels.csv``; returns ``out_dir``.

    Same arguments give byte-identical files. Files of the same name are replaced atomically;
    other files already in ``out_dir`` are left alone (the label CSVs list only the new clips).
    """
    world, splits = generate(
        num_gloss=num_gloss,
        num_cat=num_cat,
        train_per_gloss=train_per_gloss,
        val_per_gloss=val_per_gloss,
        seed=seed,
        difficulty=difficulty,
        min_len=min_len,
        max_len=max_len,
        feature_dim=feature_dim,
    )
    diff = DIFFICULTIES[difficulty]
    out = Path(out_dir)
    for split, (clips, feat_rng) in splits.items():
        kp_dir = out / f"keypoints_{split}"
        kp_dir.mkdir(parents=True, exist_ok=True)
        for clip in clips:
            write_npz(kp_dir / f"{clip.name}.npz", {"X": clip.keypoints})
        if features:
            feat_dir = out / f"features_{split}"
            feat_dir.mkdir(parents=True, exist_ok=True)
            for clip, feats in zip(
                clips, feature_stream(clips, feat_rng, world, diff), strict=True
            ):
                write_npz(feat_dir / f"{clip.name}.npz", {"X2048": feats})
        write_text(out / f"{split}_labels.csv", _labels_csv(clips))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m signray.data.synth",
        description="Write a deterministic FSL-like synthetic dataset (keypoints and features).",
    )
    add_output_dir_flag(p, "folder to write the dataset into", required=True)
    p.add_argument("--num-gloss", type=int, default=105)
    p.add_argument("--num-cat", type=int, default=10)
    p.add_argument("--train-per-gloss", type=int, default=16)
    p.add_argument("--val-per-gloss", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--difficulty", choices=sorted(DIFFICULTIES), default="medium")
    p.add_argument("--min-len", type=int, default=16)
    p.add_argument("--max-len", type=int, default=120)
    p.add_argument("--no-features", action="store_true", help="write keypoints only")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _write(args))


def _write(args: argparse.Namespace) -> int:
    out = write_dataset(
        args.output_dir,
        num_gloss=args.num_gloss,
        num_cat=args.num_cat,
        train_per_gloss=args.train_per_gloss,
        val_per_gloss=args.val_per_gloss,
        seed=args.seed,
        difficulty=args.difficulty,
        min_len=args.min_len,
        max_len=args.max_len,
        features=not args.no_features,
    )
    n_train = args.num_gloss * args.train_per_gloss
    n_val = args.num_gloss * args.val_per_gloss
    print(f"wrote {n_train} train and {n_val} val clips ({args.difficulty}) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
