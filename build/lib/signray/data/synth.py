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
from pathlib import Path
from typing import Any

from signray.cli import (
    add_dataclass_flags,
    add_output_dir_flag,
    command,
    command_parser,
    given_values,
)
from signray.data.synth_generator import (
    DIFFICULTIES,
    SynthClip,
    SynthSpec,
    feature_stream,
    generate,
)
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


def write_dataset(out_dir: str | os.PathLike[str], *, features: bool = True, **spec: Any) -> Path:
    """Write the FSL-like layout of `SynthSpec(**spec)`: ``keypoints_{train,val}/``,
    ``features_{train,val}/`` (unless not `features`) and ``{train,val}_labels.csv``.

    Same arguments give byte-identical files. Files of the same name are replaced atomically;
    other files already in ``out_dir`` are left alone (the label CSVs list only the new clips).
    """
    synth = SynthSpec(**spec)
    world, splits = generate(synth)
    out = Path(out_dir)
    for split, (clips, feat_rng) in splits.items():
        for clip in clips:
            write_npz(out / f"keypoints_{split}" / f"{clip.name}.npz", {"X": clip.keypoints})
        if features:
            stream = feature_stream(clips, feat_rng, world, DIFFICULTIES[synth.difficulty])
            for clip, feats in zip(clips, stream, strict=True):
                write_npz(out / f"features_{split}" / f"{clip.name}.npz", {"X2048": feats})
        write_text(out / f"{split}_labels.csv", _labels_csv(clips))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("signray.data.synth", __doc__)
    add_output_dir_flag(p, "folder to write the dataset into", required=True)
    add_dataclass_flags(p, SynthSpec, choices={"difficulty": sorted(DIFFICULTIES)})
    p.add_argument("--no-features", action="store_true", help="write keypoints only")
    return p


def run(args: argparse.Namespace) -> None:
    spec = SynthSpec(**given_values(args, SynthSpec))
    out = write_dataset(args.output_dir, features=not args.no_features, **vars(spec))
    n_train, n_val = spec.num_gloss * spec.train_per_gloss, spec.num_gloss * spec.val_per_gloss
    print(f"wrote {n_train} train and {n_val} val clips ({spec.difficulty}) to {out}")


main = command(build_parser, run, __name__)
