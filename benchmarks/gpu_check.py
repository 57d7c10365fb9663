"""Benchmark 7: the GPU path end to end on one GPU, in at most ~8 minutes: one table, one JSON.

Sections, each timed and recorded even when another fails (the error is kept in the JSON):

1. peak      a large bf16 (and fp32) matmul: the card's practical peak in this run.
2. speed     reference transformer and IV3-GRU training steps in fp32, bf16 and fp16 on
             FSL-size synthetic data held on the GPU: real frames/s, the transformer step's
             share of the bf16 matmul peak (analytic FLOPs, `benchmarks.flops`), peak memory, and
             the host syncs per step (`torch.cuda.set_sync_debug_mode("warn")`).
3. runs      single runs with bf16 and with fp16 (`train_loop`; the GradScaler's scale and
             growth counter show it was active), final val accuracy, peak memory.
4. smoke     `signray.tune --smoke-test` with 4 trials sharing the GPU (--gpus-per-trial 0.25),
             joined to this benchmark's cluster: exit code, trials, peak memory per trial.
5. packing   one trial alone, then 4 trials packed on the GPU (0.25 each): aggregate real
             frames/s of the 4 vs the one (target >= 2.5x).

``--cpu`` (implied when there is no GPU) runs the same sections on the CPU without GPU
resources, so the script is tested end to end where no GPU is lent; ``--tiny`` shrinks every
size. CPU figures say nothing about a GPU.

    python -m benchmarks.gpu_check [--tiny] [--cpu] [--budget-s 420]
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._common import base_parser, median, target, write_result
from benchmarks.flops import training_flops
from signray.config import resolve_config
from signray.data import synthetic_splits
from signray.training.checkpoint import load_checkpoint
from signray.training.device import build_batches, peak_memory_mb, release_device_memory
from signray.training.loop import train_loop
from signray.training.optim import build_optimizer
from signray.training.precision import resolve_precision
from signray.training.reporters import FileReporter
from signray.training.steps import LossWeights, train_one_epoch

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]
FSL = dict(num_gloss=105, num_cat=10, train_per_gloss=20, val_per_gloss=2, min_len=16, max_len=120)
TINY = dict(num_gloss=6, num_cat=2, train_per_gloss=6, val_per_gloss=2, min_len=8, max_len=24)
TINY_ARCH = {
    "transformer": {"d_model": 32, "n_heads": 4, "depth": 1, "ff_dim": 64, "head_hidden": 32},
    "iv3_gru": {},
}
PRECISIONS = ("fp32", "bf16", "fp16")
PACKING_TARGET = 2.5


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.gpu = torch.cuda.is_available() and not args.cpu
        self.device = torch.device("cuda", 0) if self.gpu else torch.device("cpu")
        self.spec = TINY if args.tiny else FSL
        self.start = time.perf_counter()
        self.work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
        self._splits: dict[str, Any] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def splits(self, kind: str):
        if kind not in self._splits:
            self._splits[kind] = synthetic_splits(kind=kind, seed=0, difficulty="medium",
                                                  **self.spec)  # fmt: skip
        return self._splits[kind]

    def cfg(self, model: str, **over: Any):
        arch = TINY_ARCH[model] if self.args.tiny else {}
        return resolve_config(
            {"model": model, "num_gloss": self.spec["num_gloss"], "num_cat": self.spec["num_cat"],
             "use_gpu": self.gpu, "batch_size": 32, **arch, **over}
        )  # fmt: skip

    def sync(self) -> None:
        if self.gpu:
            torch.cuda.synchronize()


def section_peak(b: Bench) -> dict[str, Any]:
    n = 512 if b.args.tiny else (8192 if b.gpu else 2048)
    out = {"n": n}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        x = torch.randn(n, n, device=b.device, dtype=dtype)
        y = torch.randn(n, n, device=b.device, dtype=dtype)
        x @ y
        b.sync()
        times = []
        for _ in range(5 if b.gpu else 2):
            tic = time.perf_counter()
            for _ in range(10 if b.gpu else 1):
                x @ y
            b.sync()
            times.append((time.perf_counter() - tic) / (10 if b.gpu else 1))
        out[f"{name}_tflops"] = 2 * n**3 / median(times) / 1e12
    return out


def _count_syncs(b: Bench, fn):
    """(fn's result, synchronizing CUDA calls it made); None without CUDA."""
    if not b.gpu:
        return fn(), None
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return result, sum("synchroniz" in str(w.message) for w in caught)


def _speed_one(b: Bench, model: str, precision: str) -> dict[str, Any]:
    kind = "keypoints" if model == "transformer" else "features"
    train, val = b.splits(kind)
    cfg = b.cfg(model, precision=precision)
    net = cfg.build_model(train.feature_dim).to(b.device)
    norm = train.norm_stats()
    net.input_norm.set_stats(norm.mean, norm.std)
    optimizer = build_optimizer(cfg, net)
    prec = resolve_precision(precision, b.device)
    scaler = prec.grad_scaler()
    batches, _ = build_batches(cfg, (train, val), b.device, batch_size=32, rank=0, world_size=1)
    steps = 2 if b.args.tiny else 30
    weights = LossWeights()

    def run(epoch: int) -> dict[str, float]:
        batches.batch_sampler.set_epoch(epoch)
        return train_one_epoch(net, batches, optimizer, device=b.device, weights=weights,
                               scaler=scaler, precision=prec, grad_clip=cfg.grad_clip,
                               progress=lambda it, _: itertools.islice(it, steps))  # fmt: skip

    if b.gpu:
        torch.cuda.reset_peak_memory_stats()
    run(0)  # warm-up (cuDNN/cuBLAS autotuning, allocator)
    reps = []
    for epoch in range(1, 2 if b.args.tiny else 4):
        m, syncs = _count_syncs(b, lambda e=epoch: run(e)) if epoch == 1 else (run(epoch), None)
        batches.batch_sampler.set_epoch(epoch)
        lengths = np.concatenate(
            [train.lengths[i] for i in itertools.islice(batches.batch_sampler, steps)]
        )
        reps.append({"frames_per_s": m["train_frames"] / m["train_seconds"], "syncs": syncs,
                     "seconds": m["train_seconds"], "lengths": lengths})  # fmt: skip
    best = median(r["frames_per_s"] for r in reps)
    out = {
        "frames_per_s": best,
        "host_syncs_per_step": None if reps[0]["syncs"] is None else reps[0]["syncs"] / steps,
        "peak_memory_mb": peak_memory_mb(b.device),
        "scaler_scale": scaler.get_scale() if scaler is not None else None,
    }
    if model == "transformer":
        classes = cfg.num_gloss + cfg.num_cat
        rates = [training_flops(r["lengths"], cfg.arch_config, train.feature_dim, classes)
                 / r["seconds"] for r in reps]  # fmt: skip
        out["tflops"] = median(rates) / 1e12
    return out


def section_speed(b: Bench, peak: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in ("transformer", "iv3_gru"):
        for precision in PRECISIONS:
            out[f"{model}_{precision}"] = guarded(lambda m=model, p=precision: _speed_one(b, m, p))
            release_device_memory()  # the step's model and batches are gone: free their memory
    for precision in PRECISIONS:
        r = out[f"transformer_{precision}"]
        if "tflops" in r and peak.get("bf16_tflops"):
            r["share_of_bf16_peak"] = r["tflops"] / peak["bf16_tflops"]
    return out


def _single_run(b: Bench, precision: str) -> dict[str, Any]:
    out_dir = b.work / f"run_{precision}"
    cfg = b.cfg("transformer", precision=precision, epochs=2 if b.args.tiny else 8,
                output_dir=str(out_dir))  # fmt: skip
    reporter = FileReporter(out_dir, cfg.spec.class_name, total_epochs=cfg.epochs,
                            stream=open(os.devnull, "w"))  # fmt: skip
    tic = time.perf_counter()
    result = train_loop(cfg, reporter, b.splits("keypoints"), device=b.device)
    ckpt = load_checkpoint(reporter.last_path)
    release_device_memory()
    return {
        "precision": ckpt.precision,
        "wall_s": time.perf_counter() - tic,
        "best_val_gloss_acc": result.best_val_gloss_acc,
        "final_train_loss": result.last_metrics["train_loss"],
        "epoch_s": median(m["epoch_seconds"] for m in result.history),
        "peak_memory_mb": result.last_metrics.get("gpu_peak_memory_mb"),
        "grad_scaler": None if ckpt.scaler is None else {
            "scale": ckpt.scaler["scale"], "growth_tracker": ckpt.scaler["_growth_tracker"]},
    }  # fmt: skip


def _trial_records(experiment: Path) -> list[list[dict]]:
    runs = []
    for result in sorted(experiment.glob("trial_*/result.json")):
        runs.append([json.loads(line) for line in result.read_text().splitlines() if line])
    return runs


def _share(b: Bench) -> tuple[float, float]:
    """(GPUs, CPUs) per trial when 4 trials share the device."""
    return (0.25, 1.0) if b.gpu else (0.0, 1.0)


def section_smoke(b: Bench, address: str) -> dict[str, Any]:
    gpus, cpus = _share(b)
    name = "smoke"
    cmd = [sys.executable, "-m", "signray.tune", "--model", "transformer", "--smoke-test",
           "--gpus-per-trial", str(gpus), "--cpus-per-trial", str(cpus), "--max-concurrent", "4",
           "--storage-path", str(b.work), "--name", name, "--address", address]  # fmt: skip
    if b.args.tiny:
        cmd += ["--epochs", "2", "--num-samples", "4", *_tiny_arch_flags()]
    if b.gpu:
        cmd += ["--use-gpu"]
    tic = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    trials = _trial_records(b.work / name)
    return {
        "exit_code": proc.returncode,
        "wall_s": time.perf_counter() - tic,
        "trials": len(trials),
        "epochs": sum(len(t) for t in trials),
        "peak_memory_mb_per_trial": [
            max((r.get("gpu_peak_memory_mb", 0) for r in t), default=0) for t in trials
        ],  # fmt: skip
        "output_tail": (proc.stdout + proc.stderr)[-1500:] if proc.returncode else "",
    }


def _tiny_arch_flags() -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in TINY_ARCH["transformer"].items()]


def _trial_data(b: Bench):
    """The keypoint splits in this node's object store, handed to trials as a search does."""
    import ray

    from signray.tuning.holder import SplitHolder
    from signray.tuning.trial_data import TrialData

    holder = SplitHolder.remote()
    spec = dict(kind="keypoints", seed=0, difficulty="medium", **b.spec)  # = b.splits
    ray.get(holder.load.remote((None, None), ("X",), None, spec))
    node = ray.get_runtime_context().get_node_id()
    return TrialData("memory", b.splits("keypoints")[0].norm_stats(), None, {node: holder})


def _packed_search(b: Bench, trials: int, data) -> dict[str, Any]:
    from ray import tune

    from signray.tuning.trial import TrialSetup, make_trainable

    gpus, cpus = _share(b)
    epochs = 2 if b.args.tiny else 6
    base = b.cfg("transformer", epochs=epochs, scheduler="none")
    name = f"packed_{trials}"
    setup = TrialSetup(base, str(b.work / name), workers=1, cpus_per_trial=cpus,
                       gpus_per_trial=gpus)  # fmt: skip
    tuner = tune.Tuner(
        make_trainable(setup, data),
        param_space={"seed": tune.grid_search(list(range(trials)))},
        tune_config=tune.TuneConfig(trial_dirname_creator=lambda t: f"trial_{t.trial_id}"),
        run_config=tune.RunConfig(name=name, storage_path=str(b.work), verbose=0),
    )
    tic = time.perf_counter()
    tuner.fit()
    wall = time.perf_counter() - tic
    runs = _trial_records(b.work / name)
    # Frames/s of each trial over its epochs after the first (warm-up, staggered starts).
    rates = [median(r["train_frames_per_s"] for r in (t[1:] or t)) for t in runs]
    return {
        "trials": len(runs),
        "wall_s": wall,
        "frames_per_s_per_trial": rates,
        "aggregate_frames_per_s": sum(rates),
        "peak_memory_mb_per_trial": [
            max(r.get("gpu_peak_memory_mb", 0) for r in t) for t in runs
        ],  # fmt: skip
    }


def section_packing(b: Bench) -> dict[str, Any]:
    data = _trial_data(b)
    alone = _packed_search(b, 1, data)
    packed = _packed_search(b, 4, data)
    return {
        "alone": alone,
        "packed_4": packed,
        "ratio": packed["aggregate_frames_per_s"] / alone["aggregate_frames_per_s"],
    }


def guarded(fn) -> dict[str, Any]:
    """Run one measurement; a failure is recorded, not fatal (the other sections still run)."""
    tic = time.perf_counter()
    try:
        out = fn()
    except Exception as err:  # noqa: BLE001  (recorded in the JSON and the table)
        out = {"error": f"{type(err).__name__}: {str(err)[:400]}"}
    out["section_s"] = time.perf_counter() - tic
    return out


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def table(results: dict[str, Any]) -> str:
    rows = [("measurement", "value")]
    peak = results.get("peak", {})
    rows.append(("bf16 matmul peak (TFLOP/s)", _fmt(peak.get("bf16_tflops"))))
    rows.append(("fp32 matmul peak (TFLOP/s)", _fmt(peak.get("fp32_tflops"))))
    for key, r in results.get("speed", {}).items():
        if not isinstance(r, dict):
            continue
        if "error" in r:
            rows.append((f"{key} frames/s", r["error"][:60]))
            continue
        share = r.get("share_of_bf16_peak")
        extra = f", {share:.1%} of bf16 peak" if share is not None else ""
        rows.append((f"{key} frames/s", f"{r['frames_per_s']:,.0f}{extra}, peak "
                     f"{_fmt(r['peak_memory_mb'], '.0f')} MB, syncs/step "
                     f"{_fmt(r['host_syncs_per_step'], '.2f')}"))  # fmt: skip
    for precision, r in results.get("runs", {}).items():
        if not isinstance(r, dict):
            continue
        value = r.get("error") or (
            f"acc {r['best_val_gloss_acc']:.3f}, {r['epoch_s']:.2f} s/epoch, peak "
            f"{_fmt(r['peak_memory_mb'], '.0f')} MB, scaler {r['grad_scaler']}"
        )
        rows.append((f"single run {precision}", value))
    smoke = results.get("smoke", {})
    rows.append(("smoke search (4 share the device)", smoke.get("error") or (
        f"exit {smoke['exit_code']}, {smoke['trials']} trials, {smoke['epochs']} epochs, "
        f"{smoke['wall_s']:.0f} s, peak MB/trial {smoke['peak_memory_mb_per_trial']}"
    )))  # fmt: skip
    packing = results.get("packing", {})
    rows.append(("4 packed / 1 alone, aggregate frames/s", packing.get("error") or (
        f"{packing['ratio']:.2f}x ({packing['packed_4']['aggregate_frames_per_s']:,.0f} vs "
        f"{packing['alone']['aggregate_frames_per_s']:,.0f}); peak MB/trial "
        f"{packing['packed_4']['peak_memory_mb_per_trial']}")))  # fmt: skip
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{width}}  {v}" for a, v in rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser("gpu_check", __doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="skip the sections not started after this many seconds (420)")  # fmt: skip
    args = p.parse_args(argv)
    b = Bench(args)
    device = torch.cuda.get_device_name(0) if b.gpu else "cpu"
    auto = resolve_precision("auto", b.device).name
    print(f"gpu_check on {device} (precision auto -> {auto}), work dir {b.work}", flush=True)
    results: dict[str, Any] = {"device": device, "auto_precision": auto}
    if b.gpu:
        results["capability"] = list(torch.cuda.get_device_capability(0))
        results["memory_gb"] = torch.cuda.get_device_properties(0).total_memory / 1e9

    from signray.tuning.cluster import init_ray

    sections = [
        ("peak", lambda: section_peak(b)),
        ("speed", lambda: section_speed(b, results.get("peak", {}))),
        ("runs", lambda: {p: guarded(lambda p=p: _single_run(b, p)) for p in ("bf16", "fp16")}),
        ("smoke", lambda: section_smoke(b, address)),
        ("packing", lambda: section_packing(b)),
    ]
    address = None
    for name, fn in sections:
        if b.elapsed() > args.budget_s:
            results[name] = {"error": f"skipped: {b.elapsed():.0f} s > --budget-s"}
            continue
        if name == "smoke" and address is None:
            init_ray(num_cpus=None if b.gpu else 4, dashboard=True, quiet=True)
            import ray

            address = ray.get_runtime_context().gcs_address
        print(f"[{b.elapsed():5.0f}s] {name}", flush=True)
        results[name] = guarded(fn)
    results["total_s"] = b.elapsed()
    print(table(results), flush=True)
    packing = results["packing"]
    ratio = packing.get("ratio", 0.0)
    return write_result(
        "gpu_check",
        args,
        {
            "config": {"data": b.spec, "tiny": args.tiny, "gpu": b.gpu},
            "results": results,
            "targets": [
                target("4 packed trials / 1 alone, aggregate frames/s", ratio, PACKING_TARGET),
                target("total seconds", results["total_s"], 480, higher_is_better=False),
            ],
        },
    )


if __name__ == "__main__":
    main()
