"""The one per-worker training loop shared by every mode (plain, Ray Train, Ray Tune).

It imports no Ray. Distribution comes from `torch.distributed` (set up by whoever launched the
worker); results leave through a `Reporter`. `cfg.batch_size` is the global batch: each of
`world_size` ranks trains on `batch_size // world_size` clips per step, so a config means the
same thing on one worker or eight.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from signray.checkpoint import CHECKPOINT_FORMAT
from signray.config import TrainConfig, config_to_flat
from signray.data import PackedSplit, build_loader
from signray.engine import LossWeights, ProgressFn, evaluate, train_one_epoch
from signray.errors import ConfigError
from signray.inputs import load_inputs
from signray.models import build_model
from signray.reporting import Reporter

__all__ = [
    "LoopResult",
    "train_loop",
    "seed_everything",
    "build_optimizer",
    "build_scheduler",
    "world_info",
]


@dataclass
class LoopResult:
    best_val_gloss_acc: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    last_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def world_info() -> tuple[int, int]:
    """(rank, world_size) of this process; (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW over the model's trainable parameters, fused where torch has the kernel.

    The fused step is ~3x faster than the default per-parameter loop on CPU (~6 -> 2 ms for the
    reference transformer; benchmarks/RESULTS.md).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    fused = all(p.device.type in ("cpu", "cuda") for p in params) or None
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    """Per-epoch LR schedule: plateau on val gloss accuracy, or warmup + cosine."""
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.5, patience=cfg.scheduler_patience
        )
    if cfg.scheduler == "cosine":
        warmup, total = cfg.warmup_epochs, cfg.epochs

        def factor(epoch: int) -> float:
            if epoch < warmup:
                return (epoch + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / max(total - warmup, 1)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return None


def _default_device(cfg: TrainConfig) -> torch.device:
    if cfg.use_gpu:
        if not torch.cuda.is_available():
            raise ConfigError(["`use_gpu` is set but CUDA is not available on this machine"])
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _local_batch_size(cfg: TrainConfig, world_size: int) -> int:
    if cfg.batch_size % world_size:
        raise ConfigError(
            [
                f"`batch_size` is the global batch and must be divisible by the number of "
                f"workers, but got batch_size={cfg.batch_size} with {world_size} workers"
            ]
        )
    return cfg.batch_size // world_size


def train_loop(
    cfg: TrainConfig,
    reporter: Reporter,
    data: tuple[PackedSplit, PackedSplit] | None = None,
    *,
    device: torch.device | None = None,
    progress: ProgressFn | None = None,
) -> LoopResult:
    """Train `cfg` to completion (or early stop), reporting every epoch.

    `progress` wraps each epoch's training batches (the single run's tqdm bar); off by default.
    """
    rank, world_size = world_info()
    device = device or _default_device(cfg)
    local_batch = _local_batch_size(cfg, world_size)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed, cfg.deterministic)
    train, val = data if data is not None else load_inputs(cfg)

    model = build_model(
        cfg.model,
        cfg.arch,
        input_dim=train.feature_dim,
        num_gloss=cfg.num_gloss,
        num_cat=cfg.num_cat,
    ).to(device)
    model.input_norm.fit(train.frames)  # replaced by the checkpoint's statistics on resume
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    amp_fp16 = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if amp_fp16 else None

    start_epoch, best, best_epoch, bad_epochs = 0, -1.0, 0, 0
    history: list[dict[str, float]] = []
    state = reporter.resume_state()
    if state is not None:
        _restore(state, cfg, model, optimizer, scheduler, scaler)
        start_epoch = int(state["epoch"])
        best, best_epoch = float(state["best_metric"]), int(state["best_epoch"])
        bad_epochs, history = int(state["bad_epochs"]), list(state.get("history", []))

    trained: nn.Module = model
    if world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        trained = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    loader_args: dict[str, Any] = dict(
        bucket=cfg.bucket,
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        num_workers=cfg.num_workers,
        pin_memory=cfg.pin_memory,
        prefetch_factor=cfg.prefetch_factor,
    )
    train_loader = build_loader(train, batch_size=local_batch, train=True, **loader_args)
    val_loader = build_loader(val, batch_size=local_batch, train=False, **loader_args)
    weights = LossWeights(cfg.gloss_weight, cfg.cat_weight, cfg.label_smoothing)

    metrics: dict[str, float] = history[-1] if history else {}
    stopped_early = False
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.early_stop and bad_epochs >= cfg.early_stop:
            stopped_early = True
            break
        tic = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loader.batch_sampler.set_epoch(epoch)
        tm = train_one_epoch(
            trained,
            train_loader,
            optimizer,
            device=device,
            weights=weights,
            scaler=scaler,
            amp=cfg.amp,
            grad_clip=cfg.grad_clip,
            epoch=epoch,
            progress=progress,
        )
        # Unwrapped model: DDP's forward would sync buffers, and ranks hold unequal val shards.
        vm = evaluate(model, val_loader, device=device, weights=weights, amp=cfg.amp)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(vm["val_gloss_acc"])
        elif scheduler is not None:
            scheduler.step()
        is_best = vm["val_gloss_acc"] > best
        if is_best:
            best, best_epoch, bad_epochs = vm["val_gloss_acc"], epoch + 1, 0
        else:
            bad_epochs += 1
        seconds = time.perf_counter() - tic
        metrics = {
            "epoch": epoch + 1,
            "train_loss": tm["train_loss"],
            **{k: v for k, v in vm.items() if k != "val_count"},
            "lr": lr,
            "epoch_seconds": seconds,
            "train_samples_per_s": tm["train_samples"] / tm["train_seconds"],
            "train_frames_per_s": tm["train_frames"] / tm["train_seconds"],
            "best_val_gloss_acc": best,
            "best_epoch": best_epoch,
        }
        history.append(metrics)

        def checkpoint_state(
            epoch: int = epoch,
            metrics: dict = metrics,
            best: float = best,
            best_epoch: int = best_epoch,
            bad_epochs: int = bad_epochs,
        ) -> dict[str, Any]:
            return {
                "format": CHECKPOINT_FORMAT,
                "model_name": cfg.model,
                "class_name": cfg.spec.class_name,
                "input_dim": train.feature_dim,
                "config": config_to_flat(cfg),
                "model": model.checkpoint_state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "epoch": epoch + 1,
                "best_metric": best,
                "best_epoch": best_epoch,
                "bad_epochs": bad_epochs,
                "metrics": metrics,
                "history": list(history),
                "rng_torch": torch.get_rng_state(),
            }

        reporter.report(metrics, checkpoint_state, is_best=is_best)
    return LoopResult(
        best_val_gloss_acc=best,
        best_epoch=best_epoch,
        epochs_run=len(history),
        stopped_early=stopped_early,
        last_metrics=metrics,
        history=history,
    )


def _restore(state, cfg, model, optimizer, scheduler, scaler) -> None:
    saved_model = state.get("model_name")
    if saved_model != cfg.model:
        raise ConfigError(
            [f"the checkpoint is for model {saved_model!r} but the config asks for {cfg.model!r}"]
        )
    try:
        model.load_checkpoint_state_dict(state["model"])
    except RuntimeError as err:
        raise ConfigError(
            [
                "the checkpoint's weights do not fit the configured architecture "
                f"(resume with the same architecture fields): {str(err).splitlines()[0]}"
            ]
        ) from None
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    if state.get("rng_torch") is not None:
        torch.set_rng_state(state["rng_torch"])
