"""The checkpoint schema (`Checkpoint`, one dataclass with named fields and a format version),
safe loading, and rebuilding a model from a checkpoint file.

Files are written with `signray.io.atomic_write` (a kill leaves the old file or the new one) and
read with ``torch.load(weights_only=True)``: a crafted pickle is refused, never run. Either may be
a local path or an object-store URI (``s3://bucket/runs/x/SignTransformer_best.pt``). Format 1
(written before the restructure, with ``rng_torch``), format 2 (before `precision` and the
CUDA generator state) and format 3 (before `averaged`, the EMA/SWA weights) still load.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from signray.config import TrainConfig, config_to_flat, resolve_config
from signray.errors import ConfigError
from signray.io import atomic_write
from signray.storage import Location, RemotePath, as_location, explain_error

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "load_checkpoint",
    "model_from_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = 4
_READABLE_FORMATS = (1, 2, 3, 4)


@dataclass
class Checkpoint:
    """Everything a run needs to continue, and a model needs to be rebuilt for inference."""

    model_name: str
    class_name: str
    input_dim: int
    config: dict[str, Any]  # flat (`config_to_flat`): `resolve_config` rebuilds the TrainConfig
    model: dict[str, torch.Tensor]  # `CheckpointMixin.checkpoint_state_dict()`
    epoch: int  # epochs completed
    best_metric: float  # best val_gloss_acc so far
    best_epoch: int
    bad_epochs: int = 0  # epochs since the best one (early stopping)
    metrics: dict[str, float] = field(default_factory=dict)  # this epoch's
    history: list[dict[str, float]] = field(default_factory=list)  # every epoch's
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    # "torch": the CPU generator state; "cuda": the GPU's, when trained on one
    rng: dict[str, Any] = field(default_factory=dict)
    precision: str | None = None  # what training computed in (fp32, bf16, fp16); None: unknown
    # EMA/SWA of the weights (`training.averaging`): {"kind", "updates", "model"}; None: none
    averaged: dict[str, Any] | None = None

    @classmethod
    def for_config(cls, cfg: TrainConfig, input_dim: int, **fields: Any) -> Checkpoint:
        return cls(cfg.model, cfg.spec.class_name, input_dim, config_to_flat(cfg), **fields)

    @property
    def inference_weights(self) -> dict[str, torch.Tensor]:
        """The weights this checkpoint's metrics were validated with: the EMA/SWA average once
        it has been updated, else the trained weights."""
        if self.averaged and self.averaged.get("updates"):
            return self.averaged["model"]
        return self.model

    @property
    def train_config(self) -> TrainConfig:
        return resolve_config(self.config)

    def to_dict(self) -> dict[str, Any]:
        """What is saved: plain containers and tensors only, so weights_only=True can load it.

        The fields themselves, not copies: `dataclasses.asdict` deep-copies every tensor, which
        for a model on the GPU held three times its parameters there at every save.
        """
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"format": CHECKPOINT_FORMAT, **fields}

    @classmethod
    def from_dict(cls, state: Any, source: str = "checkpoint") -> Checkpoint:
        if not isinstance(state, dict) or state.get("format") not in _READABLE_FORMATS:
            raise ConfigError(
                [f"{source} is not a signray checkpoint (expected format {CHECKPOINT_FORMAT})"]
            )
        values = {k: v for k, v in state.items() if k != "format"}
        if state["format"] == 1:
            values["rng"] = {"torch": values.pop("rng_torch", None)}
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if _required(f)}
        missing = sorted(required - values.keys())
        if missing:
            raise ConfigError([f"{source} is not a complete signray checkpoint: no {missing}"])
        return cls(**{k: v for k, v in values.items() if k in names})


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


PathLike = str | os.PathLike[str] | RemotePath


def save_checkpoint(checkpoint: Checkpoint, path: PathLike) -> Location:
    return atomic_write(path, lambda f: torch.save(checkpoint.to_dict(), f))


def load_checkpoint(path: PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load with `weights_only=True`: a crafted pickle is refused, never executed."""
    path = as_location(path)
    try:
        if not path.is_file():
            raise FileNotFoundError(path)
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"checkpoint {path} does not exist"]) from None
    except OSError as err:
        why = explain_error(err, path)
        raise ConfigError([f"checkpoint {path} cannot be read: {why}"]) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pickle protocol of foreign files
            state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise ConfigError(
            [
                f"checkpoint {path} cannot be loaded safely (weights_only=True): "
                f"{_load_error(err)}. Only checkpoints written by signray (tensors and plain "
                "values) are accepted; nothing in the file was run."
            ]
        ) from None
    return Checkpoint.from_dict(state, source=f"checkpoint {path}")


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


def model_from_checkpoint(
    path: PathLike, map_location: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, TrainConfig, Checkpoint]:
    """(model in eval mode, its TrainConfig, the checkpoint) rebuilt from a signray checkpoint."""
    ckpt = load_checkpoint(path, map_location)
    cfg = ckpt.train_config
    model = cfg.build_model(ckpt.input_dim)
    model.load_checkpoint_state_dict(ckpt.inference_weights)
    return model.to(map_location).eval(), cfg, ckpt
