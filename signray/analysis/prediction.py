"""Top-k glosses and the category of each clip, from a checkpoint (`signray.predict` runs it).

Clips are validated as training validates them (no pickles, the npz key from the checkpoint's
config, finite values, T >= 1, the D the model was trained on, `max_frames` subsampling), and
every bad file is reported at once, by name, with exit code 2, before the model runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from signray.analysis.evaluation import Names, read_names, run_model
from signray.config import TrainConfig
from signray.data.clips import ClipProblem, read_clip
from signray.errors import DataError
from signray.storage import RemotePath, as_location
from signray.training.checkpoint import model_from_checkpoint
from signray.training.inputs import input_paths

__all__ = ["GlossScore", "Prediction", "format_prediction", "predict_clips", "read_clips"]


@dataclass(frozen=True)
class GlossScore:
    id: int
    name: str
    prob: float


@dataclass(frozen=True)
class Prediction:
    file: str
    frames: int
    top: list[GlossScore]
    category: GlossScore


def read_clips(
    paths: Sequence[str | os.PathLike | RemotePath], cfg: TrainConfig, input_dim: int
) -> list[np.ndarray]:
    """Load and validate every clip; one DataError names every bad file."""
    _, _, keys = input_paths(cfg)
    clips: list[np.ndarray] = []
    problems: list[str] = []
    for path in map(as_location, paths):
        try:
            arr, _ = read_clip(path, keys, cfg.max_frames)  # the reader training uses
        except ClipProblem as err:
            problems.append(str(err))
            continue
        if arr.shape[1] != input_dim:
            problems.append(
                f"{path}: has D = {arr.shape[1]} features per frame but the checkpoint's model "
                f"was trained on D = {input_dim}"
            )
            continue
        clips.append(np.asarray(arr, dtype=np.float32))
    if problems:
        raise DataError(problems, title="invalid clip")
    return clips


def predict_clips(
    checkpoint: str | os.PathLike | RemotePath,
    paths: Sequence[str | os.PathLike | RemotePath],
    *,
    top_k: int = 5,
    gloss_names: Names = None,
    cat_names: Names = None,
    batch_size: int = 32,
) -> list[Prediction]:
    """Validate the clips, run the model once over them, return top-k glosses and the category."""
    model, cfg, ckpt = model_from_checkpoint(checkpoint)
    gnames = read_names(gloss_names, cfg.num_gloss, "gloss")
    cnames = read_names(cat_names, cfg.num_cat, "category")
    clips = read_clips(paths, cfg, ckpt.input_dim)
    gloss_logits, cat_logits = run_model(model, clips, batch_size)
    gloss_p = gloss_logits.softmax(dim=1)  # (N, G)
    cat_p = cat_logits.softmax(dim=1)  # (N, C)
    top_p, top_i = gloss_p.topk(min(top_k, cfg.num_gloss), dim=1)  # (N, k)
    cat_i = cat_p.argmax(dim=1)
    out = []
    for n, path in enumerate(paths):
        top = [
            GlossScore(int(i), gnames[int(i)], float(p))
            for p, i in zip(top_p[n].tolist(), top_i[n].tolist(), strict=True)
        ]
        c = int(cat_i[n])
        out.append(
            Prediction(str(path), len(clips[n]), top, GlossScore(c, cnames[c], float(cat_p[n, c])))
        )
    return out


def _name(score: GlossScore) -> str:
    return f"{score.id} {score.name}" if score.name else str(score.id)


def format_prediction(pred: Prediction) -> str:
    lines = [f"{pred.file} ({pred.frames} frames)"]
    width = max(len(_name(s)) for s in pred.top)
    for rank, score in enumerate(pred.top, start=1):
        lines.append(f"  {rank}. gloss {_name(score):<{width}}  {score.prob:6.1%}")
    lines.append(f"  category {_name(pred.category)}  {pred.category.prob:6.1%}")
    return "\n".join(lines)
