"""Benchmark 7: the GPU path end to end on one GPU, within a hard budget (8 min): one table, one
JSON, exit status 1 if any section failed or did not run.

Sections, each timed and recorded even when another fails (the error is kept in the JSON):

1. peak      large bf16, fp16, fp32-with-TF32 and IEEE-fp32 matmuls: the card's practical peaks
             in this run, next to its datasheet peaks (`DATASHEET_TFLOPS`, dense figures).
2. speed     reference transformer and IV3-GRU training steps in fp32 (TF32 on CUDA), IEEE fp32
             (`--no-tf32`), bf16 and fp16 on FSL-size synthetic data held on the GPU: real
             frames/s, the step's analytic FLOP/s and its share of the matmul peak of the
             precision that ran (measured and datasheet), the dtype each kind of layer computed
             in (forward hooks: iv3_gru's GRUs run in fp32 under every precision), peak memory,
             and the host syncs per step (`torch.cuda.set_sync_debug_mode("warn")`).
3. runs      single runs with bf16 and with fp16 (`train_loop`; the GradScaler's scale and
             growth counter show it was active), final val accuracy, peak memory.
4. smoke     `signray.tune --smoke-test` with 4 trials sharing the GPU (--gpus-per-trial 0.25),
             joined to this benchmark's cluster: exit code, trials, peak memory per trial.
5. packing   one trial alone, then 4 trials packed on the GPU (0.25 each): training frames per
             second of all of them over the wall-clock window in which all of them trained
             (`common_window`), vs the one (target >= 2.5x); peak memory per trial.

The budget is hard: a section starts only if time is left, the smoke search runs with the time
left as its timeout (the subprocess is killed there), the Tune sections with it as their
`time_budget_s`, and the speed rows stop when it is spent.

``--cpu`` (implied when there is no GPU) runs the same sections on the CPU without GPU
resources, so the script is tested end to end where no GPU is lent; ``--tiny`` shrinks every
size. CPU figures say nothing about a GPU.

    python -m benchmarks.gpu_check [--tiny] [--cpu] [--budget-s 480]
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
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
from signray.training.precision import resolve_precision, set_tf32
from signray.training.reporters import FileReporter
from signray.training.steps import LossWeights, train_one_epoch

__all__ = ["DATASHEET_TFLOPS", "common_window", "datasheet_peaks", "gru_training_flops", "main"]

REPO = Path(__file__).resolve().parents[1]
FSL = dict(num_gloss=105, num_cat=10, train_per_gloss=20, val_per_gloss=2, min_len=16, max_len=120)
TINY = dict(num_gloss=6, num_cat=2, train_per_gloss=6, val_per_gloss=2, min_len=8, max_len=24)
TINY_ARCH = {
    "transformer": {"d_model": 32, "n_heads": 4, "depth": 1, "ff_dim": 64, "head_hidden": 32},
    "iv3_gru": {},
}
# Speed rows: name -> (precision, tf32). fp32 means TF32 matmuls on CUDA by default.
PRECISIONS = {"fp32": ("fp32", True), "fp32_ieee": ("fp32", False), "bf16": ("bf16", True),
              "fp16": ("fp16", True)}  # fmt: skip
# Which matmul peak a precision's step is measured against (fp32 with TF32: the TF32 peak).
PEAK_OF = {"fp32": "tf32", "fp32_ieee": "fp32", "bf16": "bf16", "fp16": "fp16"}
PACKING_TARGET = 2.5
PACKING_EPOCHS = 30  # enough for the packed trials to train together well past their start skew
DEFAULT_BUDGET_S = 480.0

# Dense (no sparsity) tensor-core peaks in TFLOP/s from NVIDIA's product datasheets, by a
# substring of `torch.cuda.get_device_name()`, most specific first; fp32 is the CUDA-core
# (IEEE) rate. None: no such tensor-core path.
DATASHEET_TFLOPS: list[tuple[str, dict[str, float | None]]] = [
    ("H200", {"bf16": 989.0, "fp16": 989.0, "tf32": 494.0, "fp32": 67.0}),
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.0}),
    ("H100 NVL", {"bf16": 835.0, "fp16": 835.0, "tf32": 418.0, "fp32": 60.0}),
    ("H100", {"bf16": 989.0, "fp16": 989.0, "tf32": 494.0, "fp32": 67.0}),  # SXM
    ("A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.0, "fp16": 362.0, "tf32": 183.0, "fp32": 91.6}),
    ("L4", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    ("A10", {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2}),
    ("V100", {"bf16": None, "fp16": 125.0, "tf32": None, "fp32": 15.7}),  # SXM2
    ("T4", {"bf16": None, "fp16": 65.0, "tf32": None, "fp32": 8.1}),
]


def datasheet_peaks(device_name: str) -> dict[str, float | None]:
    """The datasheet peaks (TFLOP/s) of the card named `device_name`; {} for an unknown card."""
    for key, peaks in DATASHEET_TFLOPS:
        if key in device_name:
            return dict(peaks)
    return {}


def gru_training_flops(lengths: np.ndarray, c, input_dim: int, classes: int) -> int:
    """3 x the forward matmul FLOPs of `IV3GRU` (no backbone) over clips of these lengths: each
    GRU layer and direction computes 3 gates from its input and its state, 2 FLOPs per
    multiply-add; the heads read one vector per clip."""
    L = np.asarray(lengths, dtype=np.int64)
    dirs = 2 if c.bidirectional else 1
    sizes = [c.hidden1] + [c.hidden2] * (c.depth - 1)
    total, width = np.zeros_like(L), input_dim
    for h in sizes:
        total = total + dirs * 2 * L * 3 * h * (width + h)
        width = dirs * h
    heads = 2 * width * classes
    return int(3 * (total + heads).sum())


def common_window(trials: Sequence[Sequence[tuple[float, float, float]]]) -> dict[str, Any]:
    """Training frames per second of `trials` together over the wall-clock window in which all
    of them trained: from the latest end of a first epoch (start-up and warm-up excluded) to the
    earliest end of a last epoch. Each trial is its epochs as (start, end, frames) in one clock;
    an epoch's frames count in proportion to its overlap with the window (a constant rate within
    an epoch). No window (a trial with one epoch, or trials that never overlapped): rate None."""
    if not trials or any(len(epochs) < 2 for epochs in trials):
        return {"window_s": 0.0, "frames": 0.0, "frames_per_s": None}
    lo = max(epochs[0][1] for epochs in trials)
    hi = min(epochs[-1][1] for epochs in trials)
    if hi <= lo:
        return {"window_s": 0.0, "frames": 0.0, "frames_per_s": None}
    frames = 0.0
    for epochs in trials:
        for start, end, count in epochs:
            overlap = min(end, hi) - max(start, lo)
            if overlap > 0 and end > start:
                frames += count * overlap / (end - start)
    return {"window_s": hi - lo, "frames": frames, "frames_per_s": frames / (hi - lo)}


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

    def remaining(self) -> float:
        """Seconds left of the total budget."""
        return self.args.budget_s - self.elapsed()

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
    out: dict[str, Any] = {"n": n}
    kinds = (("bf16", torch.bfloat16, True), ("fp16", torch.float16, True),
             ("tf32", torch.float32, True), ("fp32", torch.float32, False))  # fmt: skip
    try:
        for name, dtype, tf32 in kinds:
            set_tf32(tf32)
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
    finally:
        set_tf32(True)
    out["datasheet_tflops"] = datasheet_peaks(torch.cuda.get_device_name(0)) if b.gpu else {}
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


def _dtypes_that_ran(net: torch.nn.Module) -> tuple[dict[str, set], list]:
    """Hooks recording the dtype each kind of layer (GRU, Linear, ...) computed in."""
    seen: dict[str, set] = collections.defaultdict(set)
    kinds = (torch.nn.GRU, torch.nn.Linear, torch.nn.MultiheadAttention, torch.nn.Conv2d)

    def record(module, args, result) -> None:
        out = result[0] if isinstance(result, tuple) else result
        out = out.data if isinstance(out, torch.nn.utils.rnn.PackedSequence) else out
        if isinstance(out, torch.Tensor):
            seen[type(module).__name__].add(str(out.dtype).removeprefix("torch."))

    hooks = [m.register_forward_hook(record) for m in net.modules() if isinstance(m, kinds)]
    return seen, hooks


def _speed_one(b: Bench, model: str, row: str) -> dict[str, Any]:
    precision, tf32 = PRECISIONS[row]
    kind = "keypoints" if model == "transformer" else "features"
    train, val = b.splits(kind)
    cfg = b.cfg(model, precision=precision, tf32=tf32)
    set_tf32(cfg.tf32)
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
    dtypes, hooks = _dtypes_that_ran(net)
    run(0)  # warm-up (cuDNN/cuBLAS autotuning, allocator); records what each layer ran in
    for hook in hooks:
        hook.remove()
    reps = []
    for epoch in range(1, 2 if b.args.tiny else 4):
        m, syncs = _count_syncs(b, lambda e=epoch: run(e)) if epoch == 1 else (run(epoch), None)
        batches.batch_sampler.set_epoch(epoch)
        lengths = np.concatenate(
            [train.lengths[i] for i in itertools.islice(batches.batch_sampler, steps)]
        )
        reps.append({"frames_per_s": m["train_frames"] / m["train_seconds"], "syncs": syncs,
                     "seconds": m["train_seconds"], "lengths": lengths})  # fmt: skip
    flops = training_flops if model == "transformer" else gru_training_flops
    classes = cfg.num_gloss + cfg.num_cat
    rates = [flops(r["lengths"], cfg.arch_config, train.feature_dim, classes) / r["seconds"]
             for r in reps]  # fmt: skip
    return {
        "frames_per_s": median(r["frames_per_s"] for r in reps),
        "tflops": median(rates) / 1e12,
        "computed_in": {k: sorted(v) for k, v in sorted(dtypes.items())},
        "host_syncs": reps[0]["syncs"],
        "host_syncs_per_step": None if reps[0]["syncs"] is None else reps[0]["syncs"] / steps,
        "peak_memory_mb": peak_memory_mb(b.device),
        "scaler_scale": scaler.get_scale() if scaler is not None else None,
    }


def section_speed(b: Bench, peak: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sheet = peak.get("datasheet_tflops", {})
    try:
        for model in ("transformer", "iv3_gru"):
            for row in PRECISIONS:
                if b.remaining() <= 0:
                    out[f"{model}_{row}"] = {"error": "skipped: the budget is spent"}
                    continue
                r = guarded(lambda m=model, p=row: _speed_one(b, m, p))
                release_device_memory()  # the step's model and batches are gone: free them
                kind = r["peak_kind"] = PEAK_OF[row]
                if "tflops" in r and peak.get(f"{kind}_tflops"):
                    r["share_of_measured_peak"] = r["tflops"] / peak[f"{kind}_tflops"]
                if "tflops" in r and sheet.get(kind):
                    r["share_of_datasheet_peak"] = r["tflops"] / sheet[kind]
                out[f"{model}_{row}"] = r
    finally:
        set_tf32(True)
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
    try:  # killed when the budget runs out
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                              timeout=max(1.0, b.remaining()))  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"killed at the budget after {time.perf_counter() - tic:.0f} s"}
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

    class EpochEnds(tune.Callback):
        """When each epoch of each trial ended, in this process's clock."""

        def __init__(self) -> None:
            self.ends: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            self.ends[trial.trial_id].append((time.time(), result["epoch_seconds"]))

    gpus, cpus = _share(b)
    base = b.cfg("transformer", epochs=PACKING_EPOCHS, scheduler="none")
    name = f"packed_{trials}"
    setup = TrialSetup(base, str(b.work / name), workers=1, cpus_per_trial=cpus,
                       gpus_per_trial=gpus)  # fmt: skip
    clock = EpochEnds()
    tuner = tune.Tuner(
        make_trainable(setup, data),
        param_space={"seed": tune.grid_search(list(range(trials)))},
        tune_config=tune.TuneConfig(
            trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
            time_budget_s=max(1.0, b.remaining()),
        ),  # fmt: skip
        run_config=tune.RunConfig(
            name=name, storage_path=str(b.work), verbose=0, callbacks=[clock]
        ),  # fmt: skip
    )
    tic = time.perf_counter()
    tuner.fit()
    wall = time.perf_counter() - tic
    # Every epoch trains every clip once: the split's frames.
    frames = float(b.splits("keypoints")[0].lengths.sum())
    epochs = [[(end - seconds, end, frames) for end, seconds in ends]
              for ends in clock.ends.values()]  # fmt: skip
    window = common_window(epochs)
    runs = _trial_records(b.work / name)
    return {
        "trials": len(epochs),
        "epochs": [len(e) for e in epochs],
        "wall_s": wall,
        "start_skew_s": (max(e[0][0] for e in epochs) - min(e[0][0] for e in epochs))
        if epochs
        else None,
        "window": window,
        "frames_per_s": window["frames_per_s"],
        "peak_memory_mb_per_trial": [
            max(r.get("gpu_peak_memory_mb", 0) for r in t) for t in runs
        ],  # fmt: skip
    }


def section_packing(b: Bench) -> dict[str, Any]:
    data = _trial_data(b)
    alone = _packed_search(b, 1, data)
    packed = _packed_search(b, 4, data)
    out = {"alone": alone, "packed_4": packed}
    if not (alone["frames_per_s"] and packed["frames_per_s"]):
        out["error"] = "no window in which every trial trained (the budget, or no overlap)"
    else:
        out["ratio"] = packed["frames_per_s"] / alone["frames_per_s"]
    return out


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


def _share_text(r: dict[str, Any]) -> str:
    parts = []
    for key, what in (("share_of_measured_peak", "measured"), ("share_of_datasheet_peak", "sheet")):
        if r.get(key) is not None:
            parts.append(f"{r[key]:.1%} of {what} {r['peak_kind']} peak")
    return ", ".join(parts)


def table(results: dict[str, Any]) -> str:
    rows = [("measurement", "value")]
    peak = results.get("peak", {})
    sheet = peak.get("datasheet_tflops") or {}
    for kind in ("bf16", "fp16", "tf32", "fp32"):
        rows.append((f"{kind} matmul peak (TFLOP/s)", f"{_fmt(peak.get(f'{kind}_tflops'))} "
                     f"(datasheet {_fmt(sheet.get(kind))})"))  # fmt: skip
    for key, r in results.get("speed", {}).items():
        if not isinstance(r, dict):
            continue
        if "error" in r:
            rows.append((f"{key} frames/s", r["error"][:60]))
            continue
        ran = ", ".join(f"{k} {'/'.join(v)}" for k, v in r["computed_in"].items())
        rows.append((f"{key} frames/s", f"{r['frames_per_s']:,.0f}, {_fmt(r['tflops'])} TFLOP/s "
                     f"({_share_text(r)}); ran {ran}; peak {_fmt(r['peak_memory_mb'], '.0f')} MB, "
                     f"syncs/step {_fmt(r['host_syncs_per_step'], '.2f')}"))  # fmt: skip
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
    packed, alone = packing.get("packed_4", {}), packing.get("alone", {})
    rows.append(("4 packed / 1 alone, frames/s together", packing.get("error") or (
        f"{packing['ratio']:.2f}x ({packed['frames_per_s']:,.0f} vs {alone['frames_per_s']:,.0f},"
        f" over the {packed['window']['window_s']:.1f} s in which all 4 trained); peak MB/trial "
        f"{packed['peak_memory_mb_per_trial']}")))  # fmt: skip
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{width}}  {v}" for a, v in rows)


def failures(results: dict[str, Any]) -> list[str]:
    """Every section or row that failed or did not run (the exit status is 1 if any)."""
    found = []
    for name, section in results.items():
        if not isinstance(section, dict):
            continue
        if "error" in section:
            found.append(f"{name}: {section['error']}")
        for key, row in section.items():
            if isinstance(row, dict) and "error" in row:
                found.append(f"{name}.{key}: {row['error']}")
    if results.get("smoke", {}).get("exit_code", 0) != 0:
        found.append(f"smoke: exit code {results['smoke']['exit_code']}")
    return found


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser("gpu_check", __doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present")
    p.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                   help="hard limit on the whole run, in seconds (480)")  # fmt: skip
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
        if b.remaining() <= 0:
            results[name] = {"error": f"skipped: the {args.budget_s:g} s budget is spent"}
            continue
        if name == "smoke" and address is None:
            init_ray(num_cpus=None if b.gpu else 4, dashboard=True, quiet=True)
            import ray

            address = ray.get_runtime_context().gcs_address
        print(f"[{b.elapsed():5.0f}s] {name}", flush=True)
        release_device_memory()  # what the last section cached is not the next one's
        results[name] = guarded(fn)
    results["total_s"] = b.elapsed()
    results["failed"] = failures(results)
    print(table(results), flush=True)
    for line in results["failed"]:
        print(f"FAILED {line}", flush=True)
    ratio = results["packing"].get("ratio", 0.0)
    return write_result(
        "gpu_check",
        args,
        {
            "config": {"data": b.spec, "tiny": args.tiny, "gpu": b.gpu, "budget_s": args.budget_s},
            "results": results,
            "targets": [
                target(
                    "4 packed trials / 1 alone, frames/s over the common window",
                    ratio,
                    PACKING_TARGET,
                ),  # fmt: skip
                target("total seconds", results["total_s"], args.budget_s, higher_is_better=False),
            ],
        },
    )


if __name__ == "__main__":
    sys.exit(1 if main()["results"]["failed"] else 0)
