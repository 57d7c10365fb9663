"""`python -m signray.predict`: top-k glosses and the category for each clip, from a checkpoint.

Clips are validated as training validates them; every bad file is reported at once, by name,
with exit code 2, before the model runs (see `signray.analysis.prediction`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from signray.analysis.prediction import format_prediction, predict_clips
from signray.cli import run_command
from signray.errors import ConfigError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m signray.predict",
        description="Print the top-k glosses (with probabilities) and the category of each clip.",
    )
    parser.add_argument("--checkpoint", required=True, help="a signray checkpoint (*_best.pt)")
    parser.add_argument("clips", nargs="+", metavar="CLIP.npz", help="clips to classify")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--gloss-names", help="CSV with columns id,name")
    parser.add_argument("--cat-names", help="CSV with columns id,name")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
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
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
