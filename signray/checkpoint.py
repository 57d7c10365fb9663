"""Checkpoint files: atomic writes and safe loads.

A kill at any moment leaves either the old file or the new one, never a truncated one: every
write goes to a temporary file in the same folder, is fsynced, then renamed over the target.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from signray.errors import ConfigError

__all__ = [
    "CHECKPOINT_FORMAT",
    "atomic_write",
    "atomic_write_text",
    "copy_atomic",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_paths",
    "model_from_checkpoint",
]

CHECKPOINT_FORMAT = 1


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> Path:
    """Call `write(fileobj)` on a temp file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def copy_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a file so that `dst` is never seen half-written."""
    with open(src, "rb") as source:
        return atomic_write(dst, lambda f: shutil.copyfileobj(source, f))


def checkpoint_paths(output_dir: str | os.PathLike, class_name: str) -> tuple[Path, Path]:
    """(`{ModelName}_best.pt`, `{ModelName}_last.pt`) inside `output_dir`."""
    out = Path(output_dir)
    return out / f"{class_name}_best.pt", out / f"{class_name}_last.pt"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load with `weights_only=True`: a crafted pickle is refused, never executed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"checkpoint {path} does not exist"])
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise ConfigError(
            [
                f"checkpoint {path} cannot be loaded safely (weights_only=True): "
                f"{_load_error(err)}. Only checkpoints written by signray (tensors and plain "
                "values) are accepted; nothing in the file was run."
            ]
        ) from None
    if (
        not isinstance(state, dict)
        or state.get("format") != CHECKPOINT_FORMAT
        or "model" not in state
    ):
        raise ConfigError(
            [f"checkpoint {path} is not a signray checkpoint (expected format {CHECKPOINT_FORMAT})"]
        )
    return state


def _load_error(err: BaseException) -> str:
    """The reason in torch's load error, without its advice to retry with weights_only=False."""
    text = str(err).strip()
    boilerplate = ("Weights only load failed", "Check the documentation")
    reasons = [
        " ".join(part.split())
        for part in re.split(r"\n\s*\n", text)
        if part.strip() and not part.strip().startswith(boilerplate)
    ]
    if reasons:
        return " ".join(reasons).rstrip(".")
    return text.splitlines()[0].rstrip(".") if text else type(err).__name__


def model_from_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """(model in eval mode, its TrainConfig, the raw state) rebuilt from a signray checkpoint."""
    from signray.config import resolve_config
    from signray.models import build_model

    state = load_checkpoint(path, map_location)
    cfg = resolve_config(state["config"])
    model = build_model(
        cfg.model,
        cfg.arch,
        input_dim=int(state["input_dim"]),
        num_gloss=cfg.num_gloss,
        num_cat=cfg.num_cat,
    )
    model.load_checkpoint_state_dict(state["model"])
    return model.to(map_location).eval(), cfg, state
