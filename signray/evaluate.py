"""Evaluate a checkpoint on a labelled split: overall and per-gloss accuracy, the most-confused
pairs and confusion-matrix PNGs (``python -m signray.evaluate``).

Writes metrics.json, per_gloss.csv, confused_pairs.csv and confusion-matrix PNGs into
``--output-dir`` (default: evaluation/ beside the checkpoint); see `signray.analysis.evaluation`.
The split is validated exactly as training validates it.
"""

from __future__ import annotations

import argparse

from signray.analysis.evaluation import evaluate_to_dir, load_eval_split
from signray.cli import add_output_dir_flag, command, command_parser
from signray.config import TrainConfig
from signray.errors import ConfigError
from signray.layout import RunFiles
from signray.training.checkpoint import load_checkpoint

__all__ = ["build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("signray.evaluate", __doc__)
    parser.add_argument(
        "--checkpoint", required=True, help="a signray checkpoint (*_best.pt), a path or a URI"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--keypoints-val", help="keypoint clips folder (per-clip or packed)")
    source.add_argument("--features-val", help="feature clips folder (per-clip or packed)")
    parser.add_argument(
        "--labels-val-csv", help="labels CSV file,gloss,cat (not needed for packed folders)"
    )
    parser.add_argument("--gloss-names", help="CSV with columns id,name for readable labels")
    parser.add_argument("--cat-names", help="CSV with columns id,name for category labels")
    add_output_dir_flag(parser, "output folder (default: evaluation/ beside the checkpoint)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=5, help="k of the top-k accuracy")
    return parser


def _check_args(args: argparse.Namespace, cfg: TrainConfig) -> None:
    problems = []
    if args.batch_size < 1:
        problems.append(f"`--batch-size` must be >= 1, but got {args.batch_size}")
    if args.top_k < 1:
        problems.append(f"`--top-k` must be >= 1, but got {args.top_k}")
    wanted = cfg.spec.input_kind
    given = "features" if args.features_val else "keypoints"
    if given != wanted:
        problems.append(
            f"the checkpoint's model {cfg.model!r} reads {wanted}: pass --{wanted}-val, "
            f"not --{given}-val"
        )
    if problems:
        raise ConfigError(problems)


def run(args: argparse.Namespace) -> None:
    ckpt = load_checkpoint(args.checkpoint)
    cfg = ckpt.train_config
    _check_args(args, cfg)
    source = args.features_val or args.keypoints_val
    split = load_eval_split(cfg, ckpt.input_dim, source, args.labels_val_csv)
    out = args.output_dir or RunFiles.evaluation_beside(args.checkpoint)
    m = evaluate_to_dir(
        args.checkpoint,
        split,
        out,
        args.gloss_names,
        args.cat_names,
        batch_size=args.batch_size,
        top_k=args.top_k,
    )
    print(
        f"{m['count']} clips: gloss accuracy {m['gloss_acc']:.4f}, "
        f"top-{args.top_k} {m[f'gloss_top{args.top_k}']:.4f}, "
        f"category accuracy {m['cat_acc']:.4f}, loss {m['loss']:.4f}\n"
        f"wrote metrics.json, per_gloss.csv, confused_pairs.csv, confusion_gloss.png, "
        f"confusion_cat.png to {out}",
        flush=True,
    )


main = command(build_parser, run, __name__)
