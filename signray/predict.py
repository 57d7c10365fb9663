"""Print the top-k glosses (with probabilities) and the category of each clip, from a
checkpoint (``python -m signray.predict``).

Clips are validated as training validates them; every bad file is reported at once, by name,
with exit code 2, before the model runs (see `signray.analysis.prediction`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from signray.analysis.prediction import format_prediction, predict_clips
from signray.cli import command, command_parser
from signray.errors import ConfigError

__all__ = ["build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("signray.predict", __doc__)
    parser.add_argument(
        "--checkpoint", required=True, help="a signray checkpoint (*_best.pt), a path or a URI"
    )
    parser.add_argument("clips", nargs="+", metavar="CLIP.npz", help="clips to classify")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--gloss-names", help="CSV with columns id,name")
    parser.add_argument("--cat-names", help="CSV with columns id,name")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    return parser


def run(args: argparse.Namespace) -> None:
    problems = [
        f"`--{flag}` must be >= 1, but got {value}"
        for flag, value in (("top-k", args.top_k), ("batch-size", args.batch_size))
        if value < 1
    ]
    if problems:
        raise ConfigError(problems)
    preds = predict_clips(
        args.checkpoint,
        args.clips,
        top_k=args.top_k,
        gloss_names=args.gloss_names,
        cat_names=args.cat_names,
        batch_size=args.batch_size,
    )
    if args.json:
        doc = {"checkpoint": str(args.checkpoint), "predictions": [asdict(p) for p in preds]}
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(format_prediction(p) for p in preds))


main = command(build_parser, run, __name__)
