"""Score a checkpoint on a labelled split, overall and per gloss (`signray.evaluate` runs it).

Writes into the output folder:

- ``metrics.json``: overall gloss accuracy, category accuracy, top-5, loss, clip count;
- ``per_gloss.csv``: id, name, support, correct, accuracy for every gloss id;
- ``confused_pairs.csv``: the most frequent true -> predicted gloss mistakes;
- ``confusion_gloss.png`` / ``confusion_cat.png``: row-normalised confusion matrices.

The split is validated exactly as training validates it (same keys, id ranges and max_frames,
taken from the checkpoint's own config), so a split that trains also evaluates.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from signray.analysis.figures import plot_confusion
from signray.config import TrainConfig
from signray.data import PackedSplit, collate_padded
from signray.errors import DataError
from signray.io import write_text
from signray.layout import EVALUATION_FILES
from signray.storage import Location, RemotePath, absolute, as_location, explain_error
from signray.training.checkpoint import model_from_checkpoint
from signray.training.inputs import load_split_for
from signray.training.metrics import ClassificationMetrics
from signray.training.steps import LossWeights, multitask_loss

__all__ = [
    "Names",
    "confusion_matrix",
    "evaluate_to_dir",
    "load_eval_split",
    "read_names",
    "run_model",
]

# gloss/category names: a CSV path (columns id,name), a list indexed by id, or {id: name}.
Names = str | os.PathLike | RemotePath | Sequence[str] | Mapping[int, str] | None

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
    elif isinstance(source, (str, os.PathLike, RemotePath)):
        return _read_names_csv(as_location(source), count, what)
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


def _read_names_csv(path: Location, count: int, what: str) -> list[str]:
    try:
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline="")))
    except FileNotFoundError:
        raise DataError([f"{what} names CSV {path} does not exist"]) from None
    except OSError as err:
        raise DataError([f"{what} names CSV {path}: {explain_error(err, path)}"]) from None
    except (UnicodeDecodeError, csv.Error) as err:
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
    source: str | os.PathLike | RemotePath,
    labels_csv: str | os.PathLike | RemotePath | None,
) -> PackedSplit:
    """Validate and load a labelled split for a checkpoint trained with `cfg` on D=`input_dim`."""
    split = load_split_for(cfg, source, labels_csv, "evaluation")
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
        on = batch.to(device)
        g, c = model(on.x, on.lengths, on.host_lengths)  # (B, G), (B, C)
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
    checkpoint: str | os.PathLike | RemotePath,
    split: PackedSplit,
    out_dir: str | os.PathLike | RemotePath,
    gloss_names: Names = None,
    cat_names: Names = None,
    *,
    batch_size: int = 64,
    top_k: int = 5,
    max_pairs: int = DEFAULT_PAIRS,
) -> dict[str, Any]:
    """Evaluate `checkpoint` on a loaded `split`; write the files above; return metrics.json."""
    model, cfg, ckpt = model_from_checkpoint(checkpoint)
    if split.feature_dim != ckpt.input_dim:
        raise DataError(
            [
                f"the split has D={split.feature_dim} features per frame but {checkpoint} was "
                f"trained on D={ckpt.input_dim}"
            ]
        )
    gnames = read_names(gloss_names, cfg.num_gloss, "gloss")
    cnames = read_names(cat_names, cfg.num_cat, "category")
    clips = [split.clip(i) for i in range(len(split))]
    gloss_logits, cat_logits = run_model(model, clips, batch_size)
    gloss = torch.tensor(split.gloss)  # a copy: object-store arrays are read-only
    cat = torch.tensor(split.cat)
    weights = LossWeights(cfg.gloss_weight, cfg.cat_weight, cfg.label_smoothing)
    scores = ClassificationMetrics(top_k=top_k)
    loss = multitask_loss(gloss_logits, cat_logits, gloss, cat, weights, "sum")
    scores.update(gloss_logits, cat_logits, gloss, cat, loss)
    pred_gloss = gloss_logits.argmax(dim=1).numpy()
    pred_cat = cat_logits.argmax(dim=1).numpy()
    n = len(split)
    metrics: dict[str, Any] = {
        "checkpoint": str(absolute(checkpoint)),
        "model": cfg.model,
        "epoch": ckpt.epoch,
        **scores.compute(distributed=False),
        "num_gloss": cfg.num_gloss,
        "num_cat": cfg.num_cat,
    }

    out = as_location(out_dir)
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
    write_text(
        out / EVALUATION_FILES["per_gloss"],
        _csv_text(("id", "name", "support", "correct", "accuracy"), per_gloss),
    )
    off = cm_gloss.copy()
    np.fill_diagonal(off, 0)
    true_ids, pred_ids = np.nonzero(off)
    counts = off[true_ids, pred_ids]
    ranked = sorted(zip(-counts, true_ids, pred_ids, strict=True))[:max_pairs]
    pairs = [(t, gnames[t], p, gnames[p], -c, f"{-c / support[t]:.6f}") for c, t, p in ranked]
    write_text(
        out / EVALUATION_FILES["confused_pairs"],
        _csv_text(
            ("true_id", "true_name", "pred_id", "pred_name", "count", "share_of_true"), pairs
        ),
    )
    for kind, matrix, names, title in (
        (
            "gloss",
            cm_gloss,
            gnames,
            f"Gloss confusion ({n} clips, accuracy {metrics['gloss_acc']:.1%})",
        ),
        ("cat", cm_cat, cnames, f"Category confusion (accuracy {metrics['cat_acc']:.1%})"),
    ):
        labels = [_label(i, name) for i, name in enumerate(names)]
        axis = "gloss" if kind == "gloss" else "category"
        path = out / EVALUATION_FILES[f"confusion_{kind}"]
        plot_confusion(matrix, labels, path, title=title, axis_name=axis)
    write_text(out / EVALUATION_FILES["metrics"], json.dumps(metrics, indent=2) + "\n")
    return metrics
