"""Shared by every benchmark: machine description, interleaved repetitions, JSON output.

Every benchmark compares contestants side by side in one process and one run: repetitions are
interleaved (A B A B ...) so that load from other processes on a shared machine hits all of them
alike, and figures are medians over the repetitions.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "CACHE_DIR",
    "REPO",
    "TreeMemoryPoller",
    "base_parser",
    "baseline_tree",
    "cpu_model",
    "interleaved",
    "machine_info",
    "median",
    "result_of_code",
    "target",
    "tree_env",
    "write_result",
]

# Datasets are written once and reused by later runs (keyed by their generation arguments).
CACHE_DIR = Path(os.environ.get("SIGNRAY_BENCH_CACHE", "/tmp/signray-bench"))
REPO = Path(__file__).resolve().parent.parent
# What a baseline tree needs to run `python -m signray.*` and the benchmarks' own helpers.
TREE_PARTS = ("signray", "benchmarks", "search_spaces")


def baseline_tree(ref: str) -> Path:
    """Another version of signray to run side by side with this one: a folder holding a checkout
    (used as it is, e.g. ``/work/main``), or a commit or branch of this repository, extracted
    once with ``git archive`` under `CACHE_DIR`."""
    folder = Path(ref).expanduser()
    if (folder / "signray").is_dir():
        return folder.resolve()
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run(
        [*git, "rev-parse", "--verify", f"{ref}^{{commit}}"], check=True, capture_output=True,
        text=True,
    ).stdout.strip()  # fmt: skip
    tree = CACHE_DIR / f"tree-{commit[:12]}"
    if not (tree / "complete").is_file():
        names = subprocess.run(
            [*git, "ls-tree", "--name-only", commit], check=True, capture_output=True, text=True
        ).stdout.split()
        parts = [p for p in TREE_PARTS if p in names]
        archive = subprocess.run(
            [*git, "archive", commit, *parts], check=True, capture_output=True
        ).stdout
        tree.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        (tree / "complete").write_text(commit + "\n")
    return tree


def tree_env(tree: Path, **extra: str) -> dict[str, str]:
    """The environment of a process that runs `tree`'s signray (run it with ``cwd=tree`` too:
    ``python -m`` puts the working folder first on sys.path, before PYTHONPATH)."""
    return {**os.environ, "PYTHONPATH": str(tree), **extra}


RESULT_MARK = "@@RESULT "


def result_of_code(code: str, args: Any, tree: Path = REPO) -> Any:
    """Run `code` in a fresh Python process of `tree` with ``json.dumps(args)`` as its
    ``sys.argv[1]``; it prints its result as ``@@RESULT <json>`` (`RESULT_MARK`). The code uses
    only what both this tree and a baseline tree define, so that both can be measured alike."""
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args, default=str)],
        cwd=tree,
        env=tree_env(tree),
        capture_output=True,
        text=True,
    )
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"{tree}: " + proc.stdout[-3000:] + proc.stderr[-3000:])
    return json.loads(found[-1].removeprefix(RESULT_MARK))


def cpu_model() -> str:
    """`lscpu`'s model name (falls back to `platform.processor()`)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_avg_at_end": os.getloadavg()[0],
    }


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def interleaved(contestants: Mapping[str, Callable[[], Any]], reps: int) -> dict[str, list[Any]]:
    """Run every contestant once per repetition, in turn (A B A B ...); results by name."""
    results: dict[str, list[Any]] = {name: [] for name in contestants}
    for _ in range(reps):
        for name, fn in contestants.items():
            results[name].append(fn())
    return results


def target(name: str, measured: float, goal: float, *, higher_is_better: bool = True) -> dict:
    """One row of a benchmark's targets table."""
    met = measured >= goal if higher_is_better else measured <= goal
    return {
        "name": name,
        "measured": round(measured, 4),
        "target": f"{'>=' if higher_is_better else '<='} {goal:g}",
        "met": bool(met),
    }


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{prog}", description=description)
    p.add_argument(
        "--tiny",
        action="store_true",
        help="a seconds-long run that checks the benchmark works (figures meaningless)",
    )
    p.add_argument("--reps", type=int, default=None, help="repetitions per contestant")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the result JSON here (default: benchmarks/results/NAME.json, "
        "not written with --tiny unless given)",
    )
    return p


def write_result(name: str, args: argparse.Namespace, payload: dict[str, Any]) -> dict[str, Any]:
    """Print the result and write it as JSON; returns the full record."""
    record = {
        "benchmark": name,
        "command": "python -m benchmarks." + name + " " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(),
        "tiny": bool(args.tiny),
        **payload,
    }
    out = args.out
    if out is None and not args.tiny:
        out = Path(__file__).resolve().parent / "results" / f"{name}.json"
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(json.dumps({k: record[k] for k in ("benchmark", "targets") if k in record}, indent=2))
    return record


class TreeMemoryPoller:
    """Peak memory of a process and all its descendants, polled in a thread.

    Records the peak of the summed RSS (shared pages, e.g. Ray's object store, count once per
    process that maps them) and of the summed PSS (shared pages divided among the processes
    sharing them, so the sum is the tree's real footprint).
    """

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        import ray  # noqa: F401  (puts the psutil it bundles on sys.path)

        psutil = importlib.import_module("psutil")

        self._root = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil  # importable once __init__ has imported ray

        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return
        rss = pss = 0
        for proc in procs:
            try:
                info = proc.memory_full_info()
            except psutil.Error:
                continue
            rss += info.rss
            pss += info.pss
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_processes = max(self.peak_processes, len(procs))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> TreeMemoryPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
