"""What a trained model costs to use: parameters and inference latency per clip, the optional
second objectives of a search (``signray.tune --objectives val_gloss_acc,latency|params``).

Latency is measured on a fixed batch (the first `LATENCY_BATCH` clips of the split, in file
order) so that every trial times the same input: the median of `LATENCY_REPS` forward passes in
eval mode (fp32, as evaluation), after one warm-up pass, divided by the batch size, on the device
the trial trains on (its GPU with ``use_gpu``, else its CPU threads), so a search on GPUs ranks
models by their GPU latency. Weights do not change the time of a dense forward pass, so a
freshly built model of the config is timed before training.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from signray.config import TrainConfig
from signray.data import Split
from signray.data.loader import ClipDataset, collate_padded
from signray.data.streaming import ShardStream
from signray.layout import LATENCY_METRIC, PARAMS_METRIC
from signray.training.device import select_device

__all__ = ["LATENCY_BATCH", "LATENCY_METRIC", "PARAMS_METRIC", "count_params", "model_costs"]

LATENCY_BATCH = 16
LATENCY_REPS = 5


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def _latency_ms(model: nn.Module, split: Split | ShardStream, device: torch.device) -> float:
    data = split.for_rank(0, 1) if isinstance(split, ShardStream) else ClipDataset(split)
    batch = collate_padded([data[i] for i in range(min(LATENCY_BATCH, len(split)))]).to(device)
    model.eval()
    times = []
    for _ in range(LATENCY_REPS + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        tic = time.perf_counter()
        model(batch.x, batch.lengths, batch.host_lengths)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - tic)
    return 1000.0 * statistics.median(times[1:]) / len(batch)


def model_costs(
    cfg: TrainConfig,
    split: Split | ShardStream,
    metrics: list[str],
    device: torch.device | None = None,
) -> dict[str, float]:
    """The cost `metrics` (LATENCY_METRIC, PARAMS_METRIC) of `cfg`'s model on `split`'s clips,
    timed on `device` (default: the one `cfg` trains on)."""
    wanted = [m for m in metrics if m in (LATENCY_METRIC, PARAMS_METRIC)]
    if not wanted:
        return {}
    device = device or select_device(cfg)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    model = cfg.build_model(split.feature_dim).to(device)
    costs: dict[str, float] = {}
    if PARAMS_METRIC in wanted:
        costs[PARAMS_METRIC] = float(count_params(model))
    if LATENCY_METRIC in wanted:
        costs[LATENCY_METRIC] = _latency_ms(model, split, device)
    return costs
