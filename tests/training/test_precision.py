"""What each precision means on each device, and training in bf16 and in fp16 with a GradScaler."""

from __future__ import annotations

import pytest
import torch

from signray.config import resolve_config
from signray.training.checkpoint import load_checkpoint
from signray.training.loop import train_loop
from signray.training.precision import (
    Precision,
    choose_precision,
    cpu_has_native_bf16,
    resolve_precision,
)
from signray.training.reporters import FileReporter

SMALL_TX = {"d_model": 32, "n_heads": 4, "depth": 1, "ff_dim": 64, "head_hidden": 32}


@pytest.mark.parametrize(
    ("requested", "device", "capability", "cpu_bf16", "expected"),
    [
        ("auto", "cuda", (9, 0), False, "bf16"),  # H100/H200
        ("auto", "cuda", (8, 0), False, "bf16"),  # A100
        ("auto", "cuda", (7, 5), False, "fp16"),  # T4
        ("auto", "cuda", (7, 0), False, "fp16"),  # V100
        ("auto", "cpu", None, True, "bf16"),
        ("auto", "cpu", None, False, "fp32"),
        ("fp16", "cuda", (9, 0), False, "fp16"),  # an explicit choice is kept
        ("bf16", "cpu", None, False, "bf16"),
        ("fp32", "cuda", (9, 0), False, "fp32"),
    ],
)
def test_auto_follows_the_hardware(requested, device, capability, cpu_bf16, expected):
    got = choose_precision(requested, device, cuda_capability=capability, cpu_bf16=cpu_bf16)
    assert got == expected


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu avx512f avx512bw avx512_bf16 avx512_vnni", True),
        ("fpu amx_tile amx_bf16", True),
        ("fpu avx2 avx512f avx512bw", False),
    ],  # fmt: skip
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: X\nflags\t\t: {flags}\n\n")
    assert cpu_has_native_bf16(str(info)) is native
    assert cpu_has_native_bf16(str(tmp_path / "missing")) is False


def test_autocast_and_scaler_per_precision():
    layer = torch.nn.Linear(4, 2)
    x = torch.randn(3, 4)
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        with Precision(name, "cpu").autocast():
            assert layer(x).dtype == dtype
    assert Precision("bf16", "cpu").grad_scaler() is None
    scaler = Precision("fp16", "cpu").grad_scaler()
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    expected = "bf16" if cpu_has_native_bf16() else "fp32"
    assert resolve_precision("auto", torch.device("cpu")).name == expected


def _train(tmp_path, data, resume=None, **over):
    cfg = resolve_config(
        {"num_gloss": 6, "num_cat": 2, "batch_size": 8, "epochs": 2, "lr": 3e-3,
         "output_dir": str(tmp_path), **SMALL_TX, **over}
    )  # fmt: skip
    reporter = FileReporter(
        cfg.output_dir, cfg.spec.class_name, total_epochs=cfg.epochs, resume=resume
    )
    train_loop(cfg, reporter, data)
    return load_checkpoint(tmp_path / "SignTransformer_last.pt")


def test_fp16_trains_with_an_active_grad_scaler(tmp_path, tiny_keypoints):
    ckpt = _train(tmp_path, tiny_keypoints, precision="fp16")
    assert ckpt.precision == "fp16"
    assert ckpt.scaler is not None and ckpt.scaler["scale"] > 0
    assert ckpt.scaler["_growth_tracker"] > 0  # steps were taken through the scaler
    assert all(m["train_loss"] == m["train_loss"] for m in ckpt.history)  # finite


def test_bf16_run_records_its_precision_and_resumes_identically(tmp_path, tiny_keypoints):
    full = _train(tmp_path / "full", tiny_keypoints, precision="bf16", epochs=4)
    _train(tmp_path / "half", tiny_keypoints, precision="bf16", epochs=2)
    half = _train(
        tmp_path / "half",
        tiny_keypoints,
        resume=tmp_path / "half" / "SignTransformer_last.pt",
        precision="bf16",
        epochs=4,
    )
    assert full.precision == half.precision == "bf16" and full.scaler is None
    for key, value in full.model.items():
        assert torch.equal(value, half.model[key]), key


def test_auto_records_what_it_resolved_to(tmp_path, tiny_keypoints):
    ckpt = _train(tmp_path, tiny_keypoints, precision="auto", epochs=1)
    assert ckpt.precision == resolve_precision("auto", torch.device("cpu")).name
    assert ckpt.config["precision"] == "auto"  # the request, for reruns on other hardware


def test_every_run_sets_the_tf32_flags_both_ways(tmp_path, tiny_keypoints):
    """A reused actor's trial with --no-tf32 after one with TF32 trains in IEEE fp32, and back."""
    _train(tmp_path / "a", tiny_keypoints, epochs=1, tf32=True)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    _train(tmp_path / "b", tiny_keypoints, epochs=1, tf32=False)
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    _train(tmp_path / "c", tiny_keypoints, epochs=1)  # the default: TF32 on CUDA
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_tf32_flags_leave_cpu_training_bit_identical(tmp_path, tiny_keypoints):
    """The flags only reach CUDA kernels: the same code path on the CPU gives the same weights,
    so CPU results (and tests) do not depend on the setting."""
    on = _train(tmp_path / "on", tiny_keypoints, epochs=2, tf32=True)
    off = _train(tmp_path / "off", tiny_keypoints, epochs=2, tf32=False)
    for key, value in on.model.items():
        assert torch.equal(value, off.model[key]), key
    assert torch.get_float32_matmul_precision() in ("high", "highest")
    assert torch.backends.mkldnn.matmul.fp32_precision == "none"  # oneDNN (CPU) untouched


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tf32_changes_cuda_fp32_matmuls_and_no_tf32_restores_ieee():
    from signray.training.precision import set_tf32

    a = torch.randn(512, 512, device="cuda", dtype=torch.float64)
    exact = (a @ a).float()
    a32 = a.float()
    try:
        set_tf32(False)
        ieee = (a32 @ a32 - exact).abs().max().item()
        set_tf32(True)
        tf32 = (a32 @ a32 - exact).abs().max().item()
    finally:
        set_tf32(True)
    capable = torch.cuda.get_device_capability() >= (8, 0)
    assert (tf32 > 10 * ieee) if capable else (tf32 == pytest.approx(ieee))
