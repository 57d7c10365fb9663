"""`python -m signray.evaluate`: score a checkpoint on a labelled split, per gloss and overall.

Writes into `--out`:

- ``metrics.json``: overall gloss accuracy, category accuracy, top-5, loss, clip count;
- ``per_gloss.csv``: id, name, support, correct, accuracy for every gloss id;
- ``confused_pairs.csv``: the most frequent true -> predicted gloss mistakes;
- ``confusion_gloss.png`` / ``confusion_cat.png``: row-normalised confusion matrices.

The split is validated exactly as training validates it (same keys, id ranges and max_frames,
taken from the checkpoint's own config), so a split that trains also evaluates.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from signray.checkpoint import atomic_write_text, model_from_checkpoint
from signray.cli import user_errors_exit
from signray.config import TrainConfig
from signray.data import PackedSplit, collate_padded, load_split
from signray.engine import LossWeights, multitask_loss
from signray.errors import ConfigError, DataError
from signray.inputs import input_paths
from signray.plotting import plot_confusion

__all__ = [
    "main",
    "build_parser",
    "evaluate_to_dir",
    "load_eval_split",
    "read_names",
    "run_model",
    "confusion_matrix",
    "Names",
]

# gloss/category names: a CSV path (columns id,name), a list indexed by id, or {id: name}.
Names = str | os.PathLike | Sequence[str] | Mapping[int, str] | None

DEFAULT_PAIRS = 20


def read_names(source: Names, count: int, what: str = "gloss") -> list[str]:
    """Names for ids 0..count-1; ids the source does not name are left empty.

    A CSV must have a header with columns ``id`` and ``name``; every problem (bad id, id out of
    range, duplicate) is reported at once with its line number.
    """
    names = [""] * count
    if source is None:
        return names
    if isinstance(source, Mapping):
        items = [(int(k), str(v)) for k, v in source.items()]
    elif isinstance(source, (str, os.PathLike)):
        return _read_names_csv(Path(source), count, what)
    else:
        items = list(enumerate(map(str, source)))
    problems = [
        f"{what} name id {i} is out of range 0..{count - 1}" for i, _ in items if not 0 <= i < count
    ]
    if problems:
        raise DataError(problems, title=f"invalid {what} names")
    for i, name in items:
        names[i] = name
    return names


def _read_names_csv(path: Path, count: int, what: str) -> list[str]:
    if not path.is_file():
        raise DataError([f"{what} names CSV {path} does not exist"])
    try:
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline="")))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError([f"{what} names CSV {path}: cannot read it ({err})"]) from None
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if "id" not in header or "name" not in header:
        raise DataError(
            [f"{what} names CSV {path}: needs a header with columns id,name (found {header})"]
        )
    col_id, col_name = header.index("id"), header.index("name")
    names = [""] * count
    first: dict[int, int] = {}
    problems = []
    for line, cells in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
        get = [c.strip() for c in cells] + [""] * len(header)
        text = get[col_id]
        where = f"{what} names CSV {path} line {line}"
        try:
            i = int(text)
        except ValueError:
            problems.append(f"{where}: id {text!r} is not an integer")
            continue
        if not 0 <= i < count:
            problems.append(f"{where}: id {i} is out of range (expected 0 <= id < {count})")
        elif i in first:
            problems.append(f"{where}: id {i} is listed twice (first on line {first[i]})")
        else:
            first[i] = line
            names[i] = get[col_name]
    if problems:
        raise DataError(problems, title=f"invalid {what} names")
    return names


def _label(i: int, name: str) -> str:
    return f"{i} {name}" if name else str(i)


def load_eval_split(
    cfg: TrainConfig,
    input_dim: int,
    source: str | os.PathLike,
    labels_csv: str | os.PathLike | None,
) -> PackedSplit:
    """Validate and load a labelled split for a checkpoint trained with `cfg` on D=`input_dim`."""
    _, _, keys = input_paths(cfg)
    split = load_split(
        source,
        labels_csv,
        keys=keys,
        num_gloss=cfg.num_gloss,
        num_cat=cfg.num_cat,
        max_frames=cfg.max_frames,
        split="evaluation",
    )
    if split.feature_dim != input_dim:
        raise DataError(
            [
                f"clips in {source} have D={split.feature_dim} features per frame but the "
                f"checkpoint's model was trained on D={input_dim}"
            ]
        )
    return split


@torch.no_grad()
def run_model(
    model: torch.nn.Module, clips: Sequence[np.ndarray], batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """(gloss logits (N, G), category logits (N, C)) in the order of `clips`.

    Clips are batched by length (less padding); the model masks padding, so batching does not
    change any clip's prediction.
    """
    if not clips:
        raise DataError(["no clips to run the model on"])
    model.eval()
    device = next(model.parameters()).device
    order = np.argsort([len(c) for c in clips], kind="stable")
    gloss_out: list[torch.Tensor | None] = [None] * len(clips)
    cat_out: list[torch.Tensor | None] = [None] * len(clips)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = collate_padded([(clips[i], 0, 0) for i in idx])
        g, c = model(batch.x.to(device), batch.lengths.to(device))  # (B, G), (B, C)
        for row, i in enumerate(idx):
            gloss_out[i], cat_out[i] = g[row].float().cpu(), c[row].float().cpu()
    return torch.stack(gloss_out), torch.stack(cat_out)  # type: ignore[arg-type]


def confusion_matrix(true: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """(n, n) counts; row = true id, column = predicted id."""
    flat = np.asarray(true, dtype=np.int64) * n + np.asarray(pred, dtype=np.int64)
    return np.bincount(flat, minlength=n * n).reshape(n, n)


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def evaluate_to_dir(
    checkpoint: str | os.PathLike,
    split: PackedSplit,
    out_dir: str | os.PathLike,
    gloss_names: Names = None,
    cat_names: Names = None,
    *,
    batch_size: int = 64,
    top_k: int = 5,
    max_pairs: int = DEFAULT_PAIRS,
) -> dict[str, Any]:
    """Evaluate `checkpoint` on a loaded `split`; write the files above; return metrics.json."""
    model, cfg, state = model_from_checkpoint(checkpoint)
    if split.feature_dim != int(state["input_dim"]):
        raise DataError(
            [
                f"the split has D={split.feature_dim} features per frame but {checkpoint} was "
                f"trained on D={int(state['input_dim'])}"
            ]
        )
    gnames = read_names(gloss_names, cfg.num_gloss, "gloss")
    cnames = read_names(cat_names, cfg.num_cat, "category")
    clips = [split.clip(i) for i in range(len(split))]
    gloss_logits, cat_logits = run_model(model, clips, batch_size)
    gloss = torch.tensor(split.gloss)  # a copy: object-store arrays are read-only
    cat = torch.tensor(split.cat)
    weights = LossWeights(cfg.gloss_weight, cfg.cat_weight, cfg.label_smoothing)
    loss = multitask_loss(gloss_logits, cat_logits, gloss, cat, weights, "sum").item()
    k = min(top_k, cfg.num_gloss)
    topk = gloss_logits.topk(k, dim=1).indices  # (N, k)
    pred_gloss = topk[:, 0].numpy()
    pred_cat = cat_logits.argmax(dim=1).numpy()
    n = len(split)
    metrics: dict[str, Any] = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "model": cfg.model,
        "epoch": int(state.get("epoch", 0)),
        "count": n,
        "gloss_acc": float((pred_gloss == split.gloss).mean()),
        f"gloss_top{top_k}": float((topk == gloss[:, None]).any(dim=1).double().mean()),
        "cat_acc": float((pred_cat == split.cat).mean()),
        "loss": loss / n,
        "num_gloss": cfg.num_gloss,
        "num_cat": cfg.num_cat,
    }

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cm_gloss = confusion_matrix(split.gloss, pred_gloss, cfg.num_gloss)
    cm_cat = confusion_matrix(split.cat, pred_cat, cfg.num_cat)
    support = cm_gloss.sum(axis=1)
    correct = np.diag(cm_gloss)
    per_gloss = [
        (
            i,
            gnames[i],
            int(support[i]),
            int(correct[i]),
            f"{correct[i] / support[i]:.6f}" if support[i] else "",
        )
        for i in range(cfg.num_gloss)
    ]
    atomic_write_text(
        out / "per_gloss.csv",
        _csv_text(("id", "name", "support", "correct", "accuracy"), per_gloss),
    )
    off = cm_gloss.copy()
    np.fill_diagonal(off, 0)
    true_ids, pred_ids = np.nonzero(off)
    counts = off[true_ids, pred_ids]
    ranked = sorted(zip(-counts, true_ids, pred_ids, strict=True))[:max_pairs]
    pairs = [(t, gnames[t], p, gnames[p], -c, f"{-c / support[t]:.6f}") for c, t, p in ranked]
    atomic_write_text(
        out / "confused_pairs.csv",
        _csv_text(
            ("true_id", "true_name", "pred_id", "pred_name", "count", "share_of_true"), pairs
        ),
    )
    plot_confusion(
        cm_gloss,
        [_label(i, gnames[i]) for i in range(cfg.num_gloss)],
        out / "confusion_gloss.png",
        title=f"Gloss confusion ({n} clips, accuracy {metrics['gloss_acc']:.1%})",
        axis_name="gloss",
    )
    plot_confusion(
        cm_cat,
        [_label(i, cnames[i]) for i in range(cfg.num_cat)],
        out / "confusion_cat.png",
        title=f"Category confusion (accuracy {metrics['cat_acc']:.1%})",
        axis_name="category",
    )
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m signray.evaluate",
        description="Evaluate a checkpoint on a labelled split: overall and per-gloss accuracy, "
        "most-confused pairs and confusion-matrix PNGs.",
    )
    parser.add_argument("--checkpoint", required=True, help="a signray checkpoint (*_best.pt)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--keypoints-val", help="keypoint clips folder (per-clip or packed)")
    source.add_argument("--features-val", help="feature clips folder (per-clip or packed)")
    parser.add_argument(
        "--labels-val-csv", help="labels CSV file,gloss,cat (not needed for packed folders)"
    )
    parser.add_argument("--gloss-names", help="CSV with columns id,name for readable labels")
    parser.add_argument("--cat-names", help="CSV with columns id,name for category labels")
    parser.add_argument("--out", help="output folder (default: evaluation/ beside the checkpoint)")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with user_errors_exit():
        _, cfg, state = model_from_checkpoint(args.checkpoint)
        _check_args(args, cfg)
        source = args.features_val or args.keypoints_val
        split = load_eval_split(cfg, int(state["input_dim"]), source, args.labels_val_csv)
        out = Path(args.out) if args.out else Path(args.checkpoint).parent / "evaluation"
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
