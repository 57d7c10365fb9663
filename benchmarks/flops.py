"""Benchmark 2: compute efficiency of the transformer training step vs the machine's GEMM peak.

Achieved FLOP/s = analytic training FLOPs of the real (unpadded) frames / measured time of the
training step (forward + backward + grad clip + AdamW, `engine.train_one_epoch`) over pre-collated
length-bucketed batches (data loading excluded; benchmark 1 includes it). The analytic count, per
clip of L real frames, with D_in inputs, width d, `depth` blocks, feed-forward width f, head
hidden width k and G + C classes (a multiply-add is 2 FLOPs):

    forward = 2 L D_in d                                  input projection
            + depth (2 L d 3d + 2 L d d + 4 L d f)         qkv, out-projection, feed-forward
            + depth (2 L^2 d + 2 L^2 d)                    attention scores Q K^T and weights x V
            + 2 (2 d k + k (G + C))                        the two heads on the pooled vector
    training = 3 x forward                                 backward ~ 2 x forward

Peak: the median rate of a 2048 x 2048 x 2048 fp32 `torch.mm` (what fp32 training uses),
timed in the same run and interleaved with the model, plus bf16 `torch.mm` where the CPU runs it
natively and fp32 through oneDNN (`torch.set_float32_matmul_precision("medium")`, which lets
oneDNN pick its own kernels) to show what the default fp32 GEMM leaves on the table. A profiled
step splits the step time into GEMMs (mm/addmm/bmm), dropout RNG and everything else.

    python -m benchmarks.flops [--reps 5] [--batches 12] [--threads 1] [--tiny]
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from benchmarks._common import base_parser, interleaved, median, target, write_result
from benchmarks.throughput import (
    FULL_DATA,
    TINY_DATA,
    SignrayStep,
    bench_dataset,
    bf16_supported,
    load_train_split,
    signray_config,
)
from signray.models import TransformerConfig
from signray.training.precision import FP32, Precision
from signray.training.steps import train_one_epoch

__all__ = ["main", "training_flops", "gemm_rate"]

TARGET_FRACTION = 0.40
GEMM_N = 2048


def training_flops(lengths: np.ndarray, c: TransformerConfig, input_dim: int, classes: int) -> int:
    """3 x the forward matmul FLOPs of `SignTransformer` over clips of these real lengths."""
    L = np.asarray(lengths, dtype=np.int64)
    d, f, k = c.d_model, c.ff_dim, c.head_hidden
    dense = 2 * L * input_dim * d + c.depth * (2 * L * d * 3 * d + 2 * L * d * d + 4 * L * d * f)
    attention = c.depth * 4 * L * L * d
    heads = 2 * (2 * d * k + k * classes)
    return int(3 * (dense + attention + heads).sum())


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def gemm_rate(dtype: torch.dtype, n: int = GEMM_N, iters: int = 3, precision: str = "highest"):
    """FLOP/s of an n x n x n matmul (median of `iters` after one warm-up)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    with matmul_precision(precision):
        a @ b
        times = []
        for _ in range(iters):
            tic = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - tic)
    return 2 * n**3 / median(times)


def step_breakdown(step: SignrayStep, batches: list) -> dict[str, float]:
    """Fractions of one pass's CPU time in GEMMs, dropout RNG and the rest (torch.profiler)."""
    from torch.profiler import profile

    with profile() as prof:
        _run(step, batches)
    gemm = rng = total = 0.0
    for event in prof.key_averages():
        total += event.self_cpu_time_total
        if event.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"):
            gemm += event.self_cpu_time_total
        elif event.key in ("aten::bernoulli_", "aten::uniform_"):
            rng += event.self_cpu_time_total
    return {"gemm": gemm / total, "dropout_rng": rng / total, "other": 1 - (gemm + rng) / total}


def _run(step: SignrayStep, batches: list, amp: bool = False) -> float:
    m = train_one_epoch(
        step.model,
        batches,
        step.optimizer,
        device=torch.device("cpu"),
        weights=step.weights,
        grad_clip=step.cfg.grad_clip,
        precision=Precision("bf16", "cpu") if amp else FP32,
    )
    return m["train_seconds"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser("flops", __doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=None, help="batches per repetition (12)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for everything (1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = TINY_DATA if args.tiny else FULL_DATA
    reps = args.reps or (1 if args.tiny else 5)
    n_batches = args.batches or (2 if args.tiny else 12)
    gemm_n = 256 if args.tiny else GEMM_N
    torch.manual_seed(0)
    split = load_train_split(bench_dataset(spec), "transformer", spec)
    cfg = signray_config("transformer", spec)
    step = SignrayStep(cfg, split, steps=n_batches)
    step.loader.batch_sampler.set_epoch(0)
    batches = list(itertools.islice(step.loader, n_batches))
    real = np.concatenate([b.lengths.numpy() for b in batches])
    padded = np.concatenate([np.full(len(b), b.x.shape[1]) for b in batches])
    classes = cfg.num_gloss + cfg.num_cat
    flops = training_flops(real, cfg.arch_config, split.feature_dim, classes)
    padded_flops = training_flops(padded, cfg.arch_config, split.feature_dim, classes)

    bf16 = bf16_supported()
    contestants = {
        "step_fp32": lambda: flops / _run(step, batches),
        "gemm_fp32": lambda: gemm_rate(torch.float32, gemm_n),
        "gemm_fp32_onednn": lambda: gemm_rate(torch.float32, gemm_n, precision="medium"),
    }
    if bf16:
        contestants["step_bf16_autocast"] = lambda: flops / _run(step, batches, amp=True)
        contestants["gemm_bf16"] = lambda: gemm_rate(torch.bfloat16, gemm_n)
    _run(step, batches)  # warm-up
    runs = interleaved(contestants, reps)
    rates = {name: median(values) for name, values in runs.items()}
    fraction = rates["step_fp32"] / rates["gemm_fp32"]
    results: dict[str, Any] = {
        "training_gflop_real_frames": flops / 1e9,
        "padding_overhead": padded_flops / flops - 1,
        "real_frames": int(real.sum()),
        "gflops_per_s": {k: v / 1e9 for k, v in rates.items()},
        "gflops_per_s_reps": {k: [v / 1e9 for v in vs] for k, vs in runs.items()},
        "fraction_of_fp32_gemm_peak": fraction,
        "fraction_of_fp32_onednn_peak": rates["step_fp32"] / rates["gemm_fp32_onednn"],
        "step_time_breakdown": step_breakdown(step, batches),
    }
    if bf16:
        results["bf16_step_fraction_of_bf16_peak"] = (
            rates["step_bf16_autocast"] / rates["gemm_bf16"]
        )
    for name, rate in rates.items():
        print(f"{name:>20}: {rate / 1e9:7.1f} GFLOP/s", flush=True)
    print(f"transformer fp32 step = {fraction:.0%} of the fp32 GEMM peak", flush=True)
    return write_result(
        "flops",
        args,
        {
            "config": {
                "data": spec,
                "batches": n_batches,
                "reps": reps,
                "threads": args.threads,
                "gemm_n": gemm_n,
                "bf16_supported": bf16,
            },
            "results": results,
            "targets": [target("transformer step / fp32 GEMM peak", fraction, TARGET_FRACTION)],
        },
    )


if __name__ == "__main__":
    main()
