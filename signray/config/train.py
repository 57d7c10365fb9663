"""`TrainConfig`, everything one training run needs, and `resolve_config`, the one place that
turns flat values (defaults -> YAML file -> flags, or a sampled trial) into a validated config.

Config files and search spaces are flat (`lr: 3e-4`, `depth: 4`): every key is either a field of
`TrainConfig` or an architecture field of the chosen model, which lands in `TrainConfig.arch`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from signray.data.layouts import KEYPOINT_LAYOUTS
from signray.errors import ConfigError, Problem
from signray.fields import coerce, field_types, option
from signray.models import arch_fields, build_model, get_model_spec, list_models, make_arch

__all__ = [
    "AUGMENTATIONS",
    "DATA_MODES",
    "KEYPOINT_AUGMENTATIONS",
    "PRECISIONS",
    "SCHEDULERS",
    "TRAIN_FIELDS",
    "TrainConfig",
    "config_keys",
    "config_to_flat",
    "resolve_config",
]

SCHEDULERS = ("plateau", "cosine", "none")
DATA_MODES = ("auto", "memory", "stream")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # resolved per device by training.precision


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; `arch` holds the model's own architecture fields."""

    model: str = option("transformer", "model to train (a registered name: transformer, iv3_gru)")
    # data
    keypoints_train: str | None = option(
        None, "folder of per-clip keypoint .npz files (or a packed shard folder)"
    )
    keypoints_val: str | None = option(None, "validation keypoints folder (per-clip or packed)")
    features_train: str | None = option(
        None, "folder of per-clip InceptionV3 feature .npz files (or packed)"
    )
    features_val: str | None = option(None, "validation features folder (per-clip or packed)")
    labels_train_csv: str | None = option(
        None, "labels CSV with columns file,gloss,cat (0-based ids)"
    )
    labels_val_csv: str | None = option(None, "validation labels CSV")
    kp_key: str = option("X", "npz key holding keypoints [T, D]")
    feature_key: str = option("X2048", "npz key holding features [T, 2048]; falls back to X")
    num_gloss: int = option(105, "number of glosses: gloss ids must be < this")
    num_cat: int = option(10, "number of categories: category ids must be < this")
    max_frames: int | None = option(None, "uniformly subsample clips longer than this many frames")
    bucket: bool = option(True, "batch clips of similar length together (less padding)")
    data_mode: str = option(
        "auto",
        "memory: each node holds one copy of the data, shared by its trials, shuffled globally; "
        "stream: each DDP rank memory-maps only its own format-2 shards (shared storage), "
        "shuffled shard by shard; auto: memory if it fits half the smallest object store",
    )
    # optimisation
    epochs: int = option(30, "epochs to train (in total, when resuming)")
    batch_size: int = option(32, "global batch size (split across Ray workers)")
    lr: float = option(1e-3, "peak learning rate of AdamW")
    weight_decay: float = option(0.01, "AdamW weight decay")
    label_smoothing: float = option(0.0, "label smoothing of both cross-entropy losses")
    gloss_weight: float = option(0.5, "weight of the gloss loss")
    cat_weight: float = option(0.5, "weight of the category loss")
    grad_clip: float | None = option(1.0, "clip the gradient norm to this value (0 = off)")
    precision: str = option(
        "fp32",
        "auto (bf16 where native: CUDA capability >= 8.0, CPUs with AVX512-BF16/AMX; fp16 + "
        "GradScaler on older GPUs; else fp32), fp32, bf16, or fp16 (+ GradScaler)",
    )
    amp: bool = option(False, "alias: --amp is --precision auto, --no-amp is --precision fp32")
    tf32: bool = option(
        True,
        "on CUDA (Ampere and newer), fp32 matmuls, convolutions and GRUs use TF32 tensor cores "
        "(10-bit mantissa inputs, fp32 accumulation); --no-tf32 keeps IEEE fp32",
    )
    scheduler: str = option("plateau", "LR schedule: plateau (on val gloss acc), cosine, none")
    scheduler_patience: int = option(5, "plateau: epochs without improvement before the LR halves")
    warmup_epochs: int = option(0, "linear warmup epochs before cosine decay")
    early_stop: int | None = option(
        None, "stop after this many epochs without val gloss acc improvement (0 = off)"
    )
    # augmentation of training batches (signray.training.augment); 0 = off
    keypoint_layout: str | None = option(
        None,
        "what each frame's features are: fsl78 (78 points x (x, y): pose, left hand, right "
        "hand, face); needed by the keypoint augmentations (flip, rotate, scale, shift, "
        "part drop)",
    )
    aug_speed: float = option(
        0.0,
        "time resampling: each clip plays at a speed in [1-S, 1+S] (no longer than the "
        "longest clip of its batch)",
    )
    aug_time_warp: float = option(
        0.0, "smooth monotone time warp; its strength in [0, 0.9] (frames move by up to ~S/3)"
    )
    aug_crop: float = option(0.0, "random temporal crop: keep a span of [1-C, 1] of each clip")
    aug_frame_drop: float = option(0.0, "drop each frame with this probability (one stays)")
    aug_noise: float = option(
        0.0, "Gaussian noise added to the frames: its std as a share of each feature's std"
    )
    aug_feature_drop: float = option(
        0.0,
        "zero each feature (each point, with a keypoint layout) of a clip with this probability",
    )
    aug_mixup: float = option(
        0.0, "mixup: alpha of the Beta(alpha, alpha) weight mixing clip pairs and both labels"
    )
    aug_cutmix: float = option(
        0.0, "cutmix in time: alpha of the Beta weight; a span of a clip comes from another"
    )
    aug_flip: float = option(
        0.0, "probability of a horizontal mirror that swaps the hands (keypoint layout)"
    )
    aug_rotate: float = option(0.0, "rotation in the image plane: up to this many degrees")
    aug_scale: float = option(0.0, "scale about the body centre by a factor in [1-S, 1+S]")
    aug_shift: float = option(0.0, "shift in the image plane by up to this much per axis")
    aug_part_drop: float = option(
        0.0, "probability that each hand, and the face, is missing from a whole clip"
    )
    # weight averaging
    ema_decay: float = option(
        0.0, "exponential moving average of the weights (e.g. 0.999), validated and saved"
    )
    swa_epochs: int = option(
        0, "stochastic weight averaging over the last N epochs, validated and saved (0 = off)"
    )
    # runtime
    output_dir: str = option(
        "data/processed", "where checkpoints, the CSV log and the resolved config go"
    )
    resume: str | None = option(
        None, "checkpoint (*_last.pt) to continue from, up to --epochs in total"
    )
    log_csv: str | None = option(None, "CSV log path (default: OUTPUT_DIR/{ModelName}_log.csv)")
    num_workers: int = option(0, "DataLoader worker processes (0: load in the training process)")
    pin_memory: bool | None = option(
        None, "page-locked batches for asynchronous copies to the GPU (default: on with CUDA)"
    )
    data_on_gpu: bool | None = option(
        None,
        "keep both packed splits in GPU memory and cut batches there (default: on with CUDA "
        "when they fit in a quarter of the GPU memory this process may use)",
    )
    compile: bool = option(False, "torch.compile the model for training (slower on CPU)")
    prefetch_factor: int | None = option(None, "batches each DataLoader worker prepares ahead")
    seed: int = option(42, "seed of every random number generator")
    deterministic: bool = option(
        False,
        "deterministic kernels and cuBLAS workspaces (slower): a rerun or a resumed run on the "
        "same hardware and software gives the same weights",
    )
    num_threads: int | None = option(None, "torch intra-op threads for this process")
    use_gpu: bool = option(False, "train on CUDA")
    ray_workers: int = option(
        1, "1 trains in this process; N > 1 runs DDP under a Ray Train TorchTrainer"
    )
    smoke_test: bool = option(False, "train on tiny built-in synthetic data (no files needed)")
    arch: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self):
        return get_model_spec(self.model)

    def problems(self) -> list[Problem]:
        """Every rule this config breaks, each naming the fields it concerns."""
        p: list[Problem] = []

        def add(text: str, *names: str) -> None:
            p.append(Problem(text, names))

        if self.model not in list_models():
            add(f"unknown model {self.model!r}; known models: {', '.join(list_models())}", "model")
        for name in ("epochs", "batch_size", "num_gloss", "num_cat", "ray_workers"):
            if getattr(self, name) < 1:
                add(f"`{name}` must be >= 1, but got {name}={getattr(self, name)}", name)
        for name in ("num_workers", "scheduler_patience", "warmup_epochs"):
            if getattr(self, name) < 0:
                add(f"`{name}` must be >= 0, but got {name}={getattr(self, name)}", name)
        for name in ("max_frames", "early_stop", "prefetch_factor", "num_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                add(f"`{name}` must be >= 1 or unset, but got {name}={value}", name)
        if self.batch_size >= 1 and self.ray_workers >= 1 and self.batch_size % self.ray_workers:
            add(
                f"`batch_size` is the global batch and must be divisible by `ray_workers`, but "
                f"got batch_size={self.batch_size}, ray_workers={self.ray_workers}",
                "batch_size",
                "ray_workers",
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            add(f"`lr` must be a positive finite number, but got lr={self.lr}", "lr")
        if self.weight_decay < 0:
            add(
                f"`weight_decay` must be >= 0, but got weight_decay={self.weight_decay}",
                "weight_decay",
            )
        if not 0 <= self.label_smoothing < 1:
            add(
                f"`label_smoothing` must be in [0, 1), but got {self.label_smoothing}",
                "label_smoothing",
            )
        if self.gloss_weight < 0 or self.cat_weight < 0 or self.gloss_weight + self.cat_weight == 0:
            add(
                "`gloss_weight` and `cat_weight` must be >= 0 and not both 0, but got "
                f"gloss_weight={self.gloss_weight}, cat_weight={self.cat_weight}",
                "gloss_weight",
                "cat_weight",
            )
        if self.grad_clip is not None and self.grad_clip <= 0:
            add(
                f"`grad_clip` must be > 0 or unset, but got grad_clip={self.grad_clip}", "grad_clip"
            )
        choices = (("scheduler", SCHEDULERS), ("precision", PRECISIONS), ("data_mode", DATA_MODES))
        for name, allowed in choices:
            if (value := getattr(self, name)) not in allowed:
                add(f"`{name}` must be one of {', '.join(allowed)}, but got {value!r}", name)
        if self.data_on_gpu and not self.use_gpu:
            add("`data_on_gpu` needs `use_gpu` (the splits would stay on the CPU)", "data_on_gpu")
        if self.warmup_epochs and self.scheduler != "cosine":
            add(
                f"`warmup_epochs` applies to the cosine scheduler only, but got "
                f"warmup_epochs={self.warmup_epochs} with scheduler={self.scheduler!r}",
                "warmup_epochs",
                "scheduler",
            )
        if self.warmup_epochs >= self.epochs > 0 and self.scheduler == "cosine":
            add(
                f"`warmup_epochs` must be < `epochs`, but got warmup_epochs={self.warmup_epochs}, "
                f"epochs={self.epochs}",
                "warmup_epochs",
                "epochs",
            )
        if self.prefetch_factor is not None and self.num_workers == 0:
            add(
                "`prefetch_factor` needs `num_workers` >= 1 (DataLoader worker processes)",
                "prefetch_factor",
                "num_workers",
            )
        p.extend(self._augmentation_problems())
        if self.model in list_models():
            try:
                make_arch(self.model, self.arch)
            except ConfigError as err:
                p.extend(err.problems)
        return p

    def _augmentation_problems(self) -> list[Problem]:
        """Ranges of the augmentation and averaging fields, and what they need."""
        p: list[Problem] = []
        for name, low, high, closed in _AUG_RANGES:
            value = getattr(self, name)
            inside = low <= value <= high if closed else low <= value < high
            if not (inside and math.isfinite(value)):
                bracket = "]" if closed else ")"
                p.append(
                    Problem(
                        f"`{name}` must be in [{low:g}, {high:g}{bracket}, but got {name}={value}",
                        [name],
                    )
                )
        if self.keypoint_layout is not None and self.keypoint_layout not in KEYPOINT_LAYOUTS:
            p.append(
                Problem(
                    f"`keypoint_layout` must be one of {', '.join(KEYPOINT_LAYOUTS)} or unset, "
                    f"but got {self.keypoint_layout!r}",
                    ["keypoint_layout"],
                )
            )
        keypoint_augs = [n for n in KEYPOINT_AUGMENTATIONS if getattr(self, n)]
        if keypoint_augs and self.keypoint_layout is None:
            p.append(
                Problem(
                    f"{', '.join(f'`{n}`' for n in keypoint_augs)} need(s) `keypoint_layout` "
                    "(e.g. --keypoint-layout fsl78): which features are which body points",
                    [*keypoint_augs, "keypoint_layout"],
                )
            )
        if self.keypoint_layout is not None and self.model in list_models():
            if self.spec.input_kind != "keypoints":
                p.append(
                    Problem(
                        f"`keypoint_layout` describes keypoints, but model {self.model!r} reads "
                        f"{self.spec.input_kind}",
                        ["keypoint_layout", "model"],
                    )
                )
        if self.ema_decay and self.swa_epochs:
            p.append(
                Problem(
                    "`ema_decay` and `swa_epochs` both average the weights: set one of them",
                    ["ema_decay", "swa_epochs"],
                )
            )
        if self.swa_epochs < 0 or self.swa_epochs > self.epochs >= 1:
            p.append(
                Problem(
                    f"`swa_epochs` must be in [0, epochs], but got swa_epochs={self.swa_epochs}, "
                    f"epochs={self.epochs}",
                    ["swa_epochs", "epochs"],
                )
            )
        return p

    def validate(self) -> TrainConfig:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)
        return self

    @property
    def arch_config(self):
        return make_arch(self.model, self.arch)

    def build_model(self, input_dim: int):
        """This config's model for frames of width `input_dim` (untrained, on the CPU)."""
        return build_model(
            self.model,
            self.arch,
            input_dim=input_dim,
            num_gloss=self.num_gloss,
            num_cat=self.num_cat,
        )


# (field, low, high, high included): the ranges of the augmentation and averaging strengths.
_AUG_RANGES = (
    ("aug_speed", 0.0, 0.5, True),
    ("aug_time_warp", 0.0, 0.9, True),
    ("aug_crop", 0.0, 0.9, True),
    ("aug_frame_drop", 0.0, 0.9, True),
    ("aug_noise", 0.0, math.inf, False),
    ("aug_feature_drop", 0.0, 1.0, False),
    ("aug_mixup", 0.0, math.inf, False),
    ("aug_cutmix", 0.0, math.inf, False),
    ("aug_flip", 0.0, 1.0, True),
    ("aug_rotate", 0.0, 180.0, True),
    ("aug_scale", 0.0, 0.9, True),
    ("aug_shift", 0.0, math.inf, False),
    ("aug_part_drop", 0.0, 1.0, True),
    ("ema_decay", 0.0, 1.0, False),
)
# Augmentations that move or remove body points: they need `keypoint_layout`.
KEYPOINT_AUGMENTATIONS = ("aug_flip", "aug_rotate", "aug_scale", "aug_shift", "aug_part_drop")
# Every augmentation strength (0 = off): all 0 trains on the clips as they are.
AUGMENTATIONS = tuple(name for name, *_ in _AUG_RANGES if name.startswith("aug_"))

# For these, 0 is the familiar way to say "off" on a command line.
_ZERO_MEANS_OFF = ("grad_clip", "early_stop")
TRAIN_FIELDS = {f.name: f for f in fields(TrainConfig) if f.name != "arch"}


def config_keys() -> set[str]:
    """Every flat key a config file, a flag or a search space may set, for any model."""
    keys = set(TRAIN_FIELDS)
    for model in list_models():
        keys |= set(arch_fields(model))
    return keys


def resolve_config(
    overrides: Mapping[str, Any], base: TrainConfig | None = None, *, source: str | None = None
) -> TrainConfig:
    """Apply flat overrides on top of `base`, route architecture keys, validate everything once."""
    base = base or TrainConfig()
    model = overrides.get("model", base.model)
    if not isinstance(model, str) or model not in list_models():
        raise ConfigError(
            [
                Problem(
                    f"unknown model {model!r}; known models: {', '.join(list_models())}", ["model"]
                )
            ],
            title=_title(source),
        )
    model_fields = arch_fields(model)
    # Architecture of a different model does not carry over when the model changes.
    arch = dict(base.arch) if model == base.model else {}
    top: dict[str, Any] = {}
    problems: list[str] = []
    overrides = {k: (None if k in _ZERO_MEANS_OFF and v == 0 else v) for k, v in overrides.items()}
    for key, value in overrides.items():
        if key == "arch":
            if not isinstance(value, Mapping):
                problems.append(Problem(f"`arch` must be a mapping, but got {value!r}", ["arch"]))
                continue
            arch.update(value)
        elif key in TRAIN_FIELDS:
            coerced, problem = coerce(key, value, field_types(TrainConfig)[key])
            if problem:
                problems.append(problem)
            else:
                top[key] = coerced
        elif key in model_fields:
            arch[key] = value
        else:
            other = [m for m in list_models() if m != model and key in arch_fields(m)]
            hint = f" (it belongs to model {other[0]!r})" if other else ""
            problems.append(
                Problem(
                    f"unknown field {key!r} for model {model!r}{hint}; valid fields: "
                    f"{', '.join(sorted([*TRAIN_FIELDS, *model_fields]))}",
                    [key],
                )
            )
    problems.extend(_apply_amp_alias(top, base))
    if problems:
        raise ConfigError(problems, title=_title(source))
    cfg = dataclasses.replace(base, **top, arch=arch)
    problems = cfg.problems()
    if problems:
        raise ConfigError(problems, title=_title(source))
    # Store the complete architecture so saved configs are self-describing.
    return dataclasses.replace(cfg, arch=asdict(cfg.arch_config))


def _apply_amp_alias(top: dict[str, Any], base: TrainConfig) -> list[Problem]:
    """`amp` is an alias of `precision` (older configs and checkpoints have only `amp`).

    Given alone, ``amp: true`` keeps a mixed precision the base already has, else means ``auto``;
    ``amp: false`` means ``fp32``. Afterwards `amp` always says whether the run is mixed
    (``precision != fp32``), so saved configs read back the same.
    """
    if "amp" in top and "precision" in top and top["amp"] != (top["precision"] != "fp32"):
        return [
            Problem(
                f"`amp` and `precision` disagree: amp={top['amp']}, precision="
                f"{top['precision']!r} (amp is an alias: true = a mixed precision, false = fp32)",
                ["amp", "precision"],
            )
        ]
    if "amp" in top and "precision" not in top:
        mixed = base.precision if base.precision != "fp32" else "auto"
        top["precision"] = mixed if top["amp"] else "fp32"
    top["amp"] = top.get("precision", base.precision) != "fp32"
    return []


def _title(source: str | None) -> str:
    return f"invalid configuration in {source}" if source else "invalid configuration"


def config_to_flat(cfg: TrainConfig) -> dict[str, Any]:
    """A flat dict (architecture fields inlined) that `resolve_config` turns back into `cfg`."""
    flat = {k: v for k, v in asdict(cfg).items() if k != "arch"}
    flat.update(cfg.arch)
    return flat
