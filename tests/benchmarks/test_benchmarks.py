"""Every benchmark runs in its --tiny configuration and writes a well-formed result.

No timing is asserted: the figures of a tiny run mean nothing. Each benchmark runs as the command
a user types (`python -m benchmarks.NAME --tiny`), so torch thread settings never leak between
them or into other tests. The searches of those that only need a cluster to search on run on the
session's (`ray_cluster`, through RAY_ADDRESS); the memory, data-scale and GPU benchmarks start
their own, whose processes, nodes or shape they measure.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rayhelpers import joining

from signray.tuning.address import LOOPBACK_ENV

REPO = Path(__file__).resolve().parents[2]


def _run(
    name: str, tmp_path: Path, *extra: str, timeout: float = 240, cluster: str | None = None
) -> dict:
    out = tmp_path / f"{name}.json"
    env = {
        **(joining(cluster) if cluster else os.environ),
        "PYTHONPATH": str(REPO),
        "SIGNRAY_BENCH_CACHE": str(tmp_path / "cache"),
        LOOPBACK_ENV: "0",
    }
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--tiny", "--out", str(out), *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["benchmark"] == name and record["tiny"] is True
    assert record["command"].startswith(f"python -m benchmarks.{name}")
    assert record["machine"]["cores"] >= 1 and record["machine"]["cpu"]
    assert record["date"]
    assert record["targets"], "every benchmark states its targets"
    for row in record["targets"]:
        assert set(row) == {"name", "measured", "target", "met"}
        assert isinstance(row["met"], bool) and math.isfinite(row["measured"])
    return record["results"]


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0 and math.isfinite(value)


def test_throughput(tmp_path):
    results = _run("throughput", tmp_path)
    for model in ("transformer", "iv3_gru"):
        r = results[model]
        assert _positive(r["ratio"])
        for contestant in ("naive", "signray"):
            assert _positive(r[contestant]["median_frames_per_s"])
            assert all(f > 0 for f in r[contestant]["frames_per_rep"])


def test_flops(tmp_path):
    results = _run("flops", tmp_path)
    assert _positive(results["training_gflop_real_frames"])
    assert 0 < results["fraction_of_fp32_gemm_peak"]
    assert results["padding_overhead"] >= 0
    assert {"step_fp32", "gemm_fp32", "gemm_fp32_onednn"} <= set(results["gflops_per_s"])
    assert all(_positive(v) for v in results["gflops_per_s"].values())
    shares = results["step_time_breakdown"]
    assert math.isclose(sum(shares.values()), 1.0) and shares["gemm"] > 0


def test_training_flops_formula():
    from benchmarks.flops import training_flops
    from signray.models import TransformerConfig

    c = TransformerConfig(d_model=4, n_heads=2, depth=1, ff_dim=8, head_hidden=2)
    # One clip of 3 frames, 5 inputs, 3 classes: forward 2*3*5*4 + 2*3*4*12 + 2*3*4*4
    # + 4*3*4*8 + 4*9*4 + 2*(2*4*2 + 2*3) = 120 + 288 + 96 + 384 + 144 + 44 = 1076.
    assert training_flops([3], c, input_dim=5, classes=3) == 3 * 1076


@pytest.mark.slow
def test_compile_trials(tmp_path):
    """Two configs per process with Dynamo's recompile_limit at 1: the second trial compiles
    with a fresh cache and runs eagerly with the shared one."""
    results = _run("compile_trials", tmp_path, timeout=600)
    assert results["fresh_cache"]["trials_compiled"] == 2
    assert results["shared_cache"]["trials_compiled"] == 1
    assert results["eager"]["trials_compiled"] == 0
    for name in ("fresh_cache", "shared_cache", "eager"):
        assert all(_positive(t["wall_s"]) for t in results[name]["per_trial"])


@pytest.mark.slow
def test_search_efficiency(tmp_path, ray_cluster):
    from benchmarks.search_efficiency import PHASES

    results = _run("search_efficiency", tmp_path, timeout=480, cluster=ray_cluster)
    summary = results["1_worker"]["signray"]
    (r,) = summary["runs"]
    assert r["exit_code"] == 0 and r["trials"] == r["trials_reporting"] == 2
    assert 0 < r["efficiency"] <= r["tuning_efficiency"] <= 1
    assert r["start_overhead_s"]["median"] > 0 and 2 <= r["epochs"] <= 4  # ASHA may stop one
    assert all(row["training_s"] > 0 for row in r["per_trial"])
    (command,) = summary["commands"]
    assert command["trials"] == 2 and 0 < command["command_efficiency"] < 1
    assert command["command_wall_s"] > command["fit_wall_s"] > 0
    phases = command["phases_s"]  # the command's wall time, phase by phase
    assert list(phases) == [*(name for name, _ in PHASES), "stop_and_exit"]
    assert all(v >= 0 for v in phases.values())
    assert sum(phases.values()) == pytest.approx(command["command_wall_s"])
    # Tune prints its first status from inside Tuner.fit
    assert phases["holders_study_tuner"] + phases["tuning_and_outputs"] >= command["fit_wall_s"]


@pytest.mark.slow
def test_time_to_accuracy(tmp_path, ray_cluster):
    results = _run("time_to_accuracy", tmp_path, timeout=600, cluster=ray_cluster)  # 2 on Ray
    for name in ("signray", "stock_ray_tune", "optuna_standalone"):
        run = results[name]["per_seed"]["0"]
        assert _positive(run["time_to_target_s"]) and run["time_to_target_s"] <= run["wall_s"]
        assert run["epochs"] >= 1 and 0 <= run["best_val_gloss_acc"] <= 1


@pytest.mark.slow
def test_small_data_rungs(tmp_path, ray_cluster):
    results = _run("small_data_rungs", tmp_path, timeout=480, cluster=ray_cluster)
    for name in ("epochs_grace_1", "samples_default"):
        run = results["small"][name]["per_seed"]["0"]
        assert run["exit_code"] == 0 and run["trials"] == 2
        assert run["best_val_gloss_acc"] >= run["first_point_val_gloss_acc"]


@pytest.mark.slow
def test_search_quality(tmp_path, ray_cluster):
    results = _run("search_quality", tmp_path, timeout=480, cluster=ray_cluster)
    for method in ("random_fifo", "optuna_asha", "optuna_standalone"):
        seed = results[method]["per_seed"]["0"]
        assert 0 <= seed["best_val_gloss_acc"] <= 1 and seed["epochs"] == 4
        assert _positive(seed["wall_s"])
    assert "reach_fifo_best_fraction" in results["optuna_asha"]


@pytest.mark.slow
def test_memory(tmp_path):
    results = _run("memory", tmp_path)
    for n in (1, 2):
        r = results[f"{n}_concurrent"]
        assert r["reps"][0]["exit_code"] == 0
        assert r["median_peak_pss_mb"] > 50 and r["median_peak_rss_mb"] >= r["median_peak_pss_mb"]
    assert _positive(results["ratio_pss"])


@pytest.mark.slow
def test_data_scale(tmp_path):
    results = _run("data_scale", tmp_path, timeout=900)
    (size,) = [key for key in results if key.endswith("GB")]
    for mode in ("memory", "stream"):
        r = results[size][mode]
        assert r["exit_code"] == 0 and r["time_to_first_batch_s"] > 0
        for key in ("driver_peak_rss_mb", "worker_node_peak_pss_mb", "train_frames_per_s"):
            assert _positive(r[key]), (mode, key, r[key])
    assert results["pack"]["exit_code"] == 0 and _positive(results["pack"]["peak_rss_mb"])
    probe = results["reader_probe"]
    assert _positive(probe["signray_stream"]["frames_per_s"])
    assert _positive(probe["ray_data_read_numpy"]["frames_per_s"])


def test_throughput_whole_epochs(tmp_path):
    results = _run("throughput", tmp_path, "--epoch", "--models", "transformer")
    r = results["transformer"]
    assert r["signray_precision"] in ("fp32", "bf16")
    assert _positive(r["naive"]["median_seconds"]) and _positive(r["signray"]["median_seconds"])
    # a whole epoch: every clip once (the naive loop counts the same real frames)
    assert r["naive"]["frames_per_rep"] == r["signray"]["frames_per_rep"]


def test_precision_parity(tmp_path):
    results = _run("precision_parity", tmp_path)
    for name in ("synthetic", "digits", "features"):
        r = results[name]
        assert r["val_clips"] > 0 and r["noise"] > 0
        run = r["per_seed"]["0"]
        for precision in ("fp32", "bf16"):
            assert 0 <= run[precision]["final_val_gloss_acc"] <= 1
            assert len(run[precision]["curve"]) == r["epochs"]
        assert r["paired_diffs"] == [
            run["bf16"]["final_val_gloss_acc"] - run["fp32"]["final_val_gloss_acc"]
        ]


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    """The GPU benchmark's every section, in its CPU mode (no GPU here): no section errors, so
    the command exits 0 (it exits 1 when any section fails)."""
    results = _run("gpu_check", tmp_path, "--cpu", "--budget-s", "100000", timeout=1500)
    assert results["failed"] == []
    for section in ("peak", "smoke", "packing"):
        assert "error" not in results[section], results[section]
    for kind in ("bf16", "fp16", "tf32", "fp32"):
        assert _positive(results["peak"][f"{kind}_tflops"])
    for key in ("transformer_fp32", "transformer_fp32_ieee", "transformer_bf16",
                "transformer_fp16", "iv3_gru_bf16", "iv3_gru_fp16"):  # fmt: skip
        row = results["speed"][key]
        assert "error" not in row, row
        assert _positive(row["frames_per_s"]) and _positive(row["tflops"])
        assert 0 < row["share_of_measured_peak"]
    assert results["speed"]["transformer_fp16"]["scaler_scale"] > 0
    # What ran: the GRUs in fp32 under bf16 autocast, the heads (Linear) in bf16.
    assert results["speed"]["iv3_gru_bf16"]["computed_in"] == {
        "GRU": ["float32"], "Linear": ["bfloat16"]}  # fmt: skip
    for precision in ("bf16", "fp16"):
        assert results["runs"][precision]["precision"] == precision
    assert results["runs"]["fp16"]["grad_scaler"]["growth_tracker"] > 0
    assert results["runs"]["bf16"]["grad_scaler"] is None
    assert results["smoke"]["exit_code"] == 0 and results["smoke"]["trials"] == 4
    packed = results["packing"]["packed_4"]
    assert packed["trials"] == 4 and _positive(results["packing"]["ratio"])
    assert _positive(packed["window"]["window_s"]) and _positive(packed["frames_per_s"])


def test_gpu_check_counts_frames_only_where_all_packed_trials_trained():
    """Epochs as (start, end, frames): the window runs from the latest end of a first epoch to
    the earliest end of a last one; an epoch counts in proportion to its overlap."""
    from benchmarks.gpu_check import common_window

    a = [(0, 10, 100), (10, 20, 100), (20, 30, 100)]  # starts first
    b = [(5, 15, 100), (15, 25, 100), (25, 35, 100)]  # starts 5 s later, ends 5 s later
    window = common_window([a, b])
    assert window["window_s"] == 15  # from 15 (b's first epoch ends) to 30 (a's last ends)
    # a: half of (10, 20) and all of (20, 30); b: all of (15, 25) and half of (25, 35)
    assert window["frames"] == pytest.approx(50 + 100 + 100 + 50)
    assert window["frames_per_s"] == pytest.approx(300 / 15)
    alone = common_window([a])
    assert alone["window_s"] == 20 and alone["frames_per_s"] == pytest.approx(10)
    skewed = common_window([a, [(40, 50, 100), (50, 60, 100)]])  # never trained together
    assert skewed["frames_per_s"] is None and skewed["window_s"] == 0
    assert common_window([a, [(0, 10, 100)]])["frames_per_s"] is None  # one epoch: all warm-up


def test_gpu_check_peaks_of_known_cards():
    from benchmarks.gpu_check import datasheet_peaks

    assert datasheet_peaks("NVIDIA H200")["bf16"] == 989.0
    assert datasheet_peaks("NVIDIA H100 PCIe")["tf32"] == 378.0
    assert datasheet_peaks("NVIDIA A100-SXM4-80GB")["tf32"] == 156.0
    assert datasheet_peaks("Tesla V100-SXM2-16GB")["bf16"] is None
    assert datasheet_peaks("a card nobody listed") == {}


def test_gpu_check_counts_gru_flops():
    from benchmarks.gpu_check import gru_training_flops
    from signray.models import IV3GRUConfig

    c = IV3GRUConfig(hidden1=4, hidden2=3, depth=2)
    # One clip of 2 frames, 5 inputs, 2 classes: layer 1 2*2*3*4*(5+4) = 432, layer 2
    # 2*2*3*3*(4+3) = 252, heads 2*3*2 = 12; x3 for training.
    assert gru_training_flops([2], c, input_dim=5, classes=2) == 3 * (432 + 252 + 12)


@pytest.mark.slow
def test_extract(tmp_path):
    results = _run("extract", tmp_path, timeout=600)
    for name in ("reference", "ray_kp_1", "ray_kp_2", "reference_features", "ray_features"):
        assert results[name]["frames"] == 16 and _positive(results[name]["frames_per_s"]), name
    assert _positive(results["ratios"]["kp_2_workers_over_1"])


@pytest.mark.slow
def test_augmentation(tmp_path, ray_cluster):
    results = _run("augmentation", tmp_path, timeout=900, cluster=ray_cluster)  # 4 searches
    for name in ("digits", "spoken_digits"):
        r = results[name]
        assert r["train_clips"] > 0 and r["feature_dim"] == (8 if name == "digits" else 13)
        for variant in ("shipped", "augmented"):
            run = r["per_seed"]["0"][variant]
            assert run["exit_code"] == 0 and run["trials"] == 2
            assert 0 <= run["best_val_gloss_acc"] <= 1 and _positive(run["wall_s"])
        assert _positive(r["epoch_slowdown"])
        fixed = r["fixed_point"]
        assert set(fixed) == {"off", "mixup", "noise+warp", "speed+crop", "feature_drop", "ema"}
        assert all(0 <= v["mean"] <= 1 and len(v["paired_diffs"]) == 1 for v in fixed.values())


def test_a_command_wall_time_splits_into_phases_at_its_output_lines():
    from benchmarks.search_efficiency import _phases

    lines = [
        (0.4, "WARNING from Ray"),
        (2.0, "signray.tune: model transformer, 60 train / 20 val clips"),
        (6.0, "Ray dashboard: http://127.0.0.1:8265"),
        (7.0, "== Status =="),
        (9.0, "== Status =="),
        (20.0, "signray.tune summary"),
        (23.0, "report: /x/report/index.html"),
    ]
    assert _phases(lines, 24.5) == {
        "imports_and_validation": 2.0,
        "cluster_start": 4.0,
        "holders_study_tuner": 1.0,
        "tuning_and_outputs": 13.0,
        "evaluation_and_report": 3.0,
        "stop_and_exit": 1.5,
    }
    # without the dashboard, the data mode line ends the cluster's start
    assert _phases([(2.0, "signray.tune: model x"), (5.0, "data: memory mode (auto)")], 6.0) == {
        "imports_and_validation": 2.0,
        "cluster_start": 3.0,
        "stop_and_exit": 1.0,
    }


def test_a_baseline_runs_its_own_version_of_signray(tmp_path, monkeypatch):
    """A checkout folder is used as it is; a commit is extracted from git once."""
    import benchmarks._common as common

    monkeypatch.setattr(common, "CACHE_DIR", tmp_path / "cache")
    code = "import json, signray\nprint('@@RESULT ' + json.dumps(signray.__file__))"
    folder = tmp_path / "checkout"
    (folder / "signray").mkdir(parents=True)
    (folder / "signray" / "__init__.py").write_text("")
    assert common.baseline_tree(str(folder)) == folder
    assert common.result_of_code(code, None, folder) == str(folder / "signray" / "__init__.py")
    extracted = common.baseline_tree("HEAD")
    assert extracted.parent == tmp_path / "cache"
    assert {p.name for p in extracted.iterdir()} >= {"signray", "benchmarks", "search_spaces"}
    assert common.result_of_code(code, None, extracted).startswith(str(extracted))
    assert common.baseline_tree("HEAD") == extracted  # once
