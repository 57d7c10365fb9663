"""A/B measurements behind each performance change (kept or reverted), side by side in one run.

Every ablation builds variants of benchmark 1's signray step (same data, batch 32) that differ
in one thing and times them interleaved (A B A B ...), reporting median real frames/s and the
ratio to the first variant:

- gru_dense:  IV3GRU forward GRUs on packed sequences (before) vs over the padded batch (kept);
- adamw:      AdamW for-loop (before) vs foreach vs fused (kept); also times optimizer.step alone;
- chunk:      BucketBatchSampler chunk_batches 10 / 50 (default) / 200 / whole epoch;
- bucket:     no bucketing vs bucketing;
- precision:  fp32 vs `torch.set_float32_matmul_precision("medium")` vs bf16 autocast (--amp);
- threads:    1 vs 2 torch threads for one process (on 2 cores; sensitive to other load);
- compile:    eager vs `torch.compile(dynamic=True)` (compile time reported separately);
- eval:       `evaluate` under `torch.no_grad` (kept) vs `torch.inference_mode` (reverted);
- collate:    iv3_gru on float16 frames (kept in their stored dtype) collated by NumPy's cast
              (before) vs torch's (kept), and on frames cast to float32 at load (the old path).

    python -m benchmarks.ablations [NAME ...] [--reps 3] [--steps 16] [--threads 1] [--tiny]
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks._common import base_parser, target, write_result
from benchmarks.flops import matmul_precision
from benchmarks.throughput import (
    FULL_DATA,
    TINY_DATA,
    SignrayStep,
    bench_dataset,
    load_train_split,
    measure,
    signray_config,
)
from signray.data import build_loader

__all__ = ["ABLATIONS", "main"]


class Variant(SignrayStep):
    """A signray step with one thing changed: `around` wraps every call (e.g. a precision)."""

    def __init__(self, *args: Any, around: Callable[[], Any] | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.around = around

    def __call__(self) -> tuple[int, float]:
        with self.around() if self.around else contextlib.nullcontext():
            return super().__call__()


def _gru_dense(ctx) -> dict[str, Variant]:
    before = Variant(ctx.cfg("iv3_gru"), ctx.split("iv3_gru"), ctx.steps)
    before.model._causal_last = before.model._packed_last  # the old path for forward GRUs
    return {"packed": before, "dense": Variant(ctx.cfg("iv3_gru"), ctx.split("iv3_gru"), ctx.steps)}


def _adamw(ctx) -> dict[str, Variant]:
    variants = {}
    for name, options in (("for_loop", {"foreach": False}), ("foreach", {"foreach": True}),
                          ("fused", {"fused": True})):  # fmt: skip
        v = Variant(ctx.cfg(ctx.model), ctx.split(ctx.model), ctx.steps)
        params = [p for p in v.model.parameters() if p.requires_grad]
        v.optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, **options)
        for p in params:
            p.grad = torch.randn_like(p)
        v.optimizer.step()
        tic = time.perf_counter()
        for _ in range(10):
            v.optimizer.step()
        ctx.extra[f"adamw_{name}_step_ms"] = (time.perf_counter() - tic) * 100
        variants[name] = v
    return variants


def _chunk(ctx) -> dict[str, Variant]:
    split = ctx.split(ctx.model)
    variants = {}
    for chunk in (10, 50, 200, 10_000):
        v = Variant(ctx.cfg(ctx.model), split, ctx.steps)
        v.loader.batch_sampler.chunk_batches = chunk
        v.loader.batch_sampler.set_epoch(0)
        batches = list(v.loader.batch_sampler)
        real = sum(int(split.lengths[b].sum()) for b in batches)
        padded = sum(len(b) * int(split.lengths[b].max()) for b in batches)
        ctx.extra[f"chunk_{chunk}_padding"] = padded / real - 1
        variants[f"chunk_{chunk}"] = v
    return variants


def _bucket(ctx) -> dict[str, Variant]:
    split = ctx.split(ctx.model)
    off = Variant(ctx.cfg(ctx.model, bucket=False), split, ctx.steps)
    off.loader = build_loader(split, batch_size=32, train=True, bucket=False)
    return {"no_bucket": off, "bucket": Variant(ctx.cfg(ctx.model), split, ctx.steps)}


def _precision(ctx) -> dict[str, Variant]:
    split = ctx.split(ctx.model)
    return {
        "fp32": Variant(ctx.cfg(ctx.model), split, ctx.steps),
        "fp32_matmul_medium": Variant(
            ctx.cfg(ctx.model), split, ctx.steps, around=lambda: matmul_precision("medium")
        ),
        "bf16_autocast": Variant(ctx.cfg(ctx.model, amp=True), split, ctx.steps),
    }


@contextlib.contextmanager
def _num_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _threads(ctx) -> dict[str, Variant]:
    split = ctx.split(ctx.model)
    return {
        f"{n}_threads": Variant(
            ctx.cfg(ctx.model), split, ctx.steps, around=lambda n=n: _num_threads(n)
        )
        for n in (1, 2)
    }


def _compile(ctx) -> dict[str, Variant]:
    split = ctx.split(ctx.model)
    compiled = Variant(ctx.cfg(ctx.model), split, ctx.steps)
    compiled.model = torch.compile(compiled.model, dynamic=True)
    tic = time.perf_counter()
    compiled()  # compiles (and recompiles for the first shapes)
    ctx.extra["compile_first_epoch_s"] = time.perf_counter() - tic
    return {"eager": Variant(ctx.cfg(ctx.model), split, ctx.steps), "compiled": compiled}


class _Eval:
    """The engine's `evaluate` over a split under `mode` (its own decorator bypassed)."""

    def __init__(self, ctx, mode: Callable[[], Any]) -> None:
        self.mode = mode
        self.step = SignrayStep(ctx.cfg(ctx.model), ctx.split(ctx.model), ctx.steps)
        self.loader = build_loader(ctx.split(ctx.model), batch_size=32, train=False)

    def __call__(self) -> tuple[int, float]:
        from signray.training.steps import evaluate

        tic = time.perf_counter()
        with self.mode():
            evaluate.__wrapped__(
                self.step.model, self.loader, device=torch.device("cpu"), weights=self.step.weights
            )
        return int(self.loader.dataset.split.num_frames), time.perf_counter() - tic


def _numpy_collate(items):
    """The collate before: NumPy casts each float16 clip into the float32 batch."""
    from signray.data.loader import Batch

    lengths = torch.tensor([clip.shape[0] for clip, _, _ in items], dtype=torch.int64)
    x = np.zeros((len(items), int(lengths.max()), items[0][0].shape[1]), dtype=np.float32)
    for row, (clip, _, _) in enumerate(items):
        x[row, : clip.shape[0]] = clip
    ids = [torch.tensor([item[k] for item in items], dtype=torch.int64) for k in (1, 2)]
    return Batch(torch.from_numpy(x), lengths, *ids)


def _collate(ctx) -> dict[str, Variant]:
    from torch.utils.data import DataLoader

    from signray.data import PackedSplit
    from signray.data.loader import ClipDataset

    half = ctx.split("iv3_gru")
    assert half.frames.dtype == np.float16, half.frames.dtype
    single = PackedSplit(half.frames.astype(np.float32), half.offsets, half.gloss, half.cat,
                         half.names)  # fmt: skip
    before = Variant(ctx.cfg("iv3_gru"), half, ctx.steps)
    sampler = before.loader.batch_sampler
    before.loader = DataLoader(ClipDataset(half), batch_sampler=sampler, collate_fn=_numpy_collate)
    return {
        "fp16_numpy_cast": before,
        "fp16_torch_cast": Variant(ctx.cfg("iv3_gru"), half, ctx.steps),
        "fp32_in_memory": Variant(ctx.cfg("iv3_gru"), single, ctx.steps),
    }


def _eval(ctx) -> dict[str, _Eval]:
    return {
        "no_grad": _Eval(ctx, torch.no_grad),
        "inference_mode": _Eval(ctx, torch.inference_mode),
    }


ABLATIONS: dict[str, Callable] = {
    "gru_dense": _gru_dense,
    "adamw": _adamw,
    "chunk": _chunk,
    "bucket": _bucket,
    "precision": _precision,
    "threads": _threads,
    "compile": _compile,
    "eval": _eval,
    "collate": _collate,
}
DEFAULT = ["gru_dense", "adamw", "chunk", "bucket", "precision", "eval"]


class _Context:
    def __init__(self, spec: dict[str, int], steps: int, model: str) -> None:
        self.spec, self.steps, self.model = spec, steps, model
        self.root = bench_dataset(spec)
        self._splits: dict[str, Any] = {}
        self.extra: dict[str, float] = {}

    def split(self, model: str):
        if model not in self._splits:
            self._splits[model] = load_train_split(self.root, model, self.spec)
        return self._splits[model]

    def cfg(self, model: str, **overrides: Any):
        return signray_config(model, self.spec, **overrides)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser("ablations", __doc__.splitlines()[0])
    p.add_argument("names", nargs="*", choices=[*ABLATIONS, []], default=None)
    p.add_argument("--model", default="transformer", choices=["transformer", "iv3_gru"])
    p.add_argument("--steps", type=int, default=None, help="batches per repetition (16)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.names or (["gru_dense", "adamw", "eval"] if args.tiny else DEFAULT)
    spec = TINY_DATA if args.tiny else FULL_DATA
    reps = args.reps or (1 if args.tiny else 3)
    ctx = _Context(spec, args.steps or (2 if args.tiny else 16), args.model)
    results: dict[str, Any] = {}
    for name in names:
        torch.manual_seed(0)
        res = measure(ABLATIONS[name](ctx), reps)
        first = next(iter(res.values()))["median_frames_per_s"]
        for r in res.values():
            r["ratio_to_first"] = r["median_frames_per_s"] / first
        results[name] = res
        summary = ", ".join(f"{k} {v['ratio_to_first']:.2f}x" for k, v in res.items())
        print(f"{name}: {summary}", flush=True)
    results["extra"] = ctx.extra
    return write_result(
        "ablations",
        args,
        {
            "config": {"data": spec, "model": args.model, "reps": reps, "threads": args.threads},
            "results": results,
            "targets": [target("ablations ran", len(names), 1)],
        },
    )


if __name__ == "__main__":
    main()
