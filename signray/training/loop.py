"""The one per-worker training loop shared by every mode (plain, Ray Train, Ray Tune).

It imports no Ray. Distribution comes from `torch.distributed` (set up by whoever launched the
worker); results leave through a `Reporter`. `cfg.batch_size` is the global batch: each of
`world_size` ranks trains on `batch_size // world_size` clips per step, so a config means the
same thing on one worker or eight.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from signray.config import TrainConfig
from signray.data import PackedSplit
from signray.errors import ConfigError
from signray.layout import METRIC, SAMPLES_ATTR, STEPS_ATTR
from signray.training.augment import build_augmenter
from signray.training.averaging import build_average
from signray.training.checkpoint import Checkpoint
from signray.training.device import (
    build_batches,
    peak_memory_mb,
    restore_rng_state,
    rng_state,
    select_device,
)
from signray.training.inputs import TrainingData, load_inputs
from signray.training.optim import build_optimizer, build_scheduler, seed_everything
from signray.training.precision import resolve_group_precision, set_tf32
from signray.training.reporters import Reporter
from signray.training.steps import LossWeights, ProgressFn, evaluate, train_one_epoch

__all__ = ["LoopResult", "compile_model", "resume_problems", "train_loop", "world_info"]


@dataclass
class LoopResult:
    best_val_gloss_acc: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    last_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class _Progress:
    """Where training stands after `epoch` completed epochs; saved in every checkpoint."""

    epoch: int = 0
    best: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def world_info() -> tuple[int, int]:
    """(rank, world_size) of this process; (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _local_batch_size(cfg: TrainConfig, world_size: int) -> int:
    """This rank's share of the global batch; the config checked that ray_workers divides it."""
    if world_size != cfg.ray_workers:
        raise ConfigError(
            f"the loop runs on {world_size} ranks but the config has ray_workers={cfg.ray_workers}"
        )
    return cfg.batch_size // world_size


def resume_problems(ckpt: Checkpoint, cfg: TrainConfig, input_dim: int, where: str) -> list[str]:
    """Why `ckpt` cannot continue a run of `cfg` on data of width `input_dim` (empty: it can)."""
    if ckpt.model_name != cfg.model:
        return [f"{where} is a checkpoint of model {ckpt.model_name!r}, but the run is for "
                f"{cfg.model!r}"]  # fmt: skip
    problems = [
        f"{where} was trained with {name}={ckpt.config[name]!r}, but the config has "
        f"{name}={value!r}"
        for name, value in cfg.arch.items()
        if name in ckpt.config and ckpt.config[name] != value
    ]
    if ckpt.input_dim != input_dim:
        problems.append(
            f"{where} was trained on D={ckpt.input_dim} features per frame, but the data has "
            f"D={input_dim}"
        )
    return problems


def train_loop(
    cfg: TrainConfig,
    reporter: Reporter,
    data: TrainingData | tuple[PackedSplit, PackedSplit] | None = None,
    *,
    device: torch.device | None = None,
    progress: ProgressFn | None = None,
) -> LoopResult:
    """Train `cfg` to completion (or early stop), reporting every epoch.

    `data` (default: `load_inputs(cfg)`) holds splits in memory or streamed from shards, and
    the training frames' statistics: nothing here passes over the training frames to get them.
    `progress` wraps each epoch's training batches (the single run's tqdm bar); off by default.
    """
    rank, world_size = world_info()
    device = device or select_device(cfg)
    local_batch = _local_batch_size(cfg, world_size)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    # Each rank its own stream (dropout masks differ); DDP gives every rank rank 0's initial
    # weights, and the samplers share `cfg.seed`, so the ranks still split one global batch.
    seed_everything(cfg.seed + rank, cfg.deterministic)
    set_tf32(cfg.tf32)
    if data is None:
        data = load_inputs(cfg)
    elif not isinstance(data, TrainingData):
        data = TrainingData(*data)
    train, val = data

    model = cfg.build_model(data.feature_dim).to(device)
    norm = data.normalisation()
    model.input_norm.set_stats(norm.mean, norm.std)  # a resumed checkpoint's replace these
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    precision = resolve_group_precision(cfg.precision, device)  # one for every rank
    scaler = precision.grad_scaler()

    state = _Progress()
    resumed = reporter.resume_state()
    if resumed is not None:
        state = _restore(resumed, cfg, data.feature_dim, model, optimizer, scheduler, scaler)
        restore_rng_state(resumed.rng, device, rank)
    # None: the clips as they are; noise is in units of the std the model normalises with
    augment = build_augmenter(cfg, data.feature_dim, model.input_norm.std)
    average = build_average(cfg, model)  # EMA/SWA weights, validated instead; None: off
    if average is not None and resumed is not None:
        average.load_state_dict(resumed.averaged)

    trained: nn.Module = model
    if world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        trained = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.compile:
        trained = compile_model(trained)

    train_loader, val_loader = build_batches(
        cfg, (train, val), device, batch_size=local_batch, rank=rank, world_size=world_size
    )
    weights = LossWeights(cfg.gloss_weight, cfg.cat_weight, cfg.label_smoothing)

    metrics: dict[str, float] = state.history[-1] if state.history else {}
    # How much training the run has had, the budget unit of the trial schedulers.
    steps, samples = int(metrics.get(STEPS_ATTR, 0)), int(metrics.get(SAMPLES_ATTR, 0))
    stopped_early = False
    for epoch in range(state.epoch, cfg.epochs):
        if cfg.early_stop and state.bad_epochs >= cfg.early_stop:
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
            precision=precision,
            grad_clip=cfg.grad_clip,
            epoch=epoch,
            progress=progress,
            augment=augment,
            average=average,
        )
        if average is not None:
            average.after_epoch(epoch)
        # Unwrapped model: DDP's forward would sync buffers, and ranks hold unequal val shards.
        validated = average.module if average is not None else model
        vm = evaluate(validated, val_loader, device=device, weights=weights)  # fp32: see evaluate
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(vm[METRIC])
        elif scheduler is not None:
            scheduler.step()
        is_best = vm[METRIC] > state.best
        steps += len(train_loader)
        samples += int(tm["train_samples"])
        state.epoch = epoch + 1
        if is_best:
            state.best, state.best_epoch, state.bad_epochs = vm[METRIC], epoch + 1, 0
        else:
            state.bad_epochs += 1
        metrics = {
            "epoch": epoch + 1,
            "train_loss": tm["train_loss"],
            **{k: v for k, v in vm.items() if k != "val_count"},
            "lr": lr,
            "epoch_seconds": time.perf_counter() - tic,
            "train_samples_per_s": tm["train_samples"] / tm["train_seconds"],
            "train_frames_per_s": tm["train_frames"] / tm["train_seconds"],
            "best_val_gloss_acc": state.best,
            "best_epoch": state.best_epoch,
            STEPS_ATTR: steps,
            SAMPLES_ATTR: samples,
        }
        if (peak := peak_memory_mb(device)) is not None:
            metrics["gpu_peak_memory_mb"] = peak
        state.history.append(metrics)
        snapshot = functools.partial(
            _checkpoint,
            cfg,
            data.feature_dim,
            model,
            optimizer,
            scheduler,
            scaler,
            dataclasses.replace(state, history=list(state.history)),
            precision=precision.name,
            rng=rng_state(device),  # every rank's (a collective), though rank 0 saves it
            average=average,
        )
        reporter.report(metrics, snapshot, is_best=is_best)
    return LoopResult(
        best_val_gloss_acc=state.best,
        best_epoch=state.best_epoch,
        epochs_run=len(state.history),
        stopped_early=stopped_early,
        last_metrics=metrics,
        history=state.history,
    )


def compile_model(model: nn.Module) -> nn.Module:
    """`torch.compile` for this run, with Dynamo's caches cleared first.

    Dynamo guards on float module attributes such as dropout's ``p``: a process that trains one
    config after another (a reused Tune actor) would recompile the same forward for every config,
    keep every old graph, and after `torch._dynamo.config.recompile_limit` (8) configs run it
    eagerly. Cleared, each run compiles once (inductor's FX graph cache still serves graphs it
    has seen). ``dynamic=True``: clip lengths vary from batch to batch.
    """
    torch._dynamo.reset()
    return torch.compile(model, dynamic=True)


def _checkpoint(
    cfg,
    input_dim,
    model,
    optimizer,
    scheduler,
    scaler,
    state: _Progress,
    *,
    precision,
    rng,
    average=None,
) -> Checkpoint:
    """The checkpoint of `state`; built only by the rank and epochs that save one."""
    return Checkpoint.for_config(
        cfg,
        input_dim,
        model=model.checkpoint_state_dict(),
        epoch=state.epoch,
        best_metric=state.best,
        best_epoch=state.best_epoch,
        bad_epochs=state.bad_epochs,
        metrics=state.history[-1],
        history=state.history,
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict() if scheduler is not None else None,
        scaler=scaler.state_dict() if scaler is not None else None,
        rng=rng,
        precision=precision,
        averaged=average.state_dict() if average is not None else None,
    )


def _restore(ckpt, cfg, input_dim, model, optimizer, scheduler, scaler) -> _Progress:
    problems = resume_problems(ckpt, cfg, input_dim, "the checkpoint")
    if problems:
        raise ConfigError(problems)
    try:
        model.load_checkpoint_state_dict(ckpt.model)
    except RuntimeError as err:
        raise ConfigError(
            [
                "the checkpoint's weights do not fit the configured architecture "
                f"(resume with the same architecture fields): {str(err).splitlines()[0]}"
            ]
        ) from None
    optimizer.load_state_dict(ckpt.optimizer)
    if scheduler is not None and ckpt.scheduler is not None:
        scheduler.load_state_dict(ckpt.scheduler)
    if scaler is not None and ckpt.scaler is not None:
        scaler.load_state_dict(ckpt.scaler)
    _apply_optimizer_settings(ckpt, cfg, optimizer, scheduler)
    return _Progress(
        ckpt.epoch, ckpt.best_metric, ckpt.best_epoch, ckpt.bad_epochs, list(ckpt.history)
    )


def _apply_optimizer_settings(ckpt, cfg: TrainConfig, optimizer, scheduler) -> None:
    """Give the restored optimizer the config's `lr` and `weight_decay` when they changed.

    Loading an optimizer's state restores the checkpoint's learning rate and weight decay. A run
    resumed with other values (population-based training perturbs them, then restores the
    exploited trial's checkpoint into the new config) must train with the new ones; a plain
    resume keeps the checkpoint's, so a plateau scheduler's reductions survive it.
    """
    lr, wd = cfg.lr, cfg.weight_decay
    if ckpt.config.get("lr") == lr and ckpt.config.get("weight_decay") == wd:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        scheduler.base_lrs = [lr] * len(optimizer.param_groups)
        factors = [fn(scheduler.last_epoch) for fn in scheduler.lr_lambdas]
    else:
        factors = [1.0] * len(optimizer.param_groups)
    for group, factor in zip(optimizer.param_groups, factors, strict=True):
        group["lr"] = lr * factor
        group["weight_decay"] = wd
        if "initial_lr" in group:
            group["initial_lr"] = lr
