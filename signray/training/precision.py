"""Numeric precision of a run: which one `auto` means on this device, its autocast context and,
for fp16, its GradScaler. The one place that knows what each precision needs.

- ``fp32``: no autocast.
- ``bf16``: autocast to bfloat16; same exponent range as fp32, so no loss scaling.
- ``fp16``: autocast to float16 with a `GradScaler` (small gradients would flush to zero).
- ``auto``: bf16 where the hardware computes it natively (CUDA compute capability >= 8.0; a CPU
  with AVX512-BF16 or AMX), fp16 on older CUDA GPUs, fp32 everywhere else.

Losses are computed in fp32 either way (`steps.multitask_loss` casts the logits). iv3_gru's
GRUs compute in fp32 under every precision (`models.iv3_gru`). On CUDA, fp32 matmuls,
convolutions and GRUs use TF32 tensor cores unless ``tf32`` is off (`set_tf32`). DDP ranks agree
on what `auto` means (`resolve_group_precision`).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from signray.config.train import PRECISIONS

__all__ = [
    "FP32",
    "agree_on_precision",
    "PRECISIONS",
    "Precision",
    "choose_precision",
    "cpu_has_native_bf16",
    "resolve_group_precision",
    "resolve_precision",
    "set_tf32",
]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# /proc/cpuinfo flags of CPUs whose matrix units take bf16 natively (oneDNN uses them).
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), read from its flags.

    Not `torch.ops.mkldnn._is_mkldnn_bf16_supported()`: that is also true on AVX-512 CPUs that
    only emulate bf16, where autocast is slower than fp32. False where /proc/cpuinfo is absent.
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return any(flag in flags for flag in _CPU_BF16_FLAGS)


def choose_precision(
    requested: str,
    device_type: str,
    *,
    cuda_capability: tuple[int, int] | None = None,
    cpu_bf16: bool = False,
) -> str:
    """The precision (fp32, bf16 or fp16) that `requested` means on this hardware.

    Pure, so the rule is tested for hardware this machine does not have.
    """
    if requested != "auto":
        return requested
    if device_type == "cuda":
        return "bf16" if cuda_capability is not None and cuda_capability >= (8, 0) else "fp16"
    if device_type == "cpu" and cpu_bf16:
        return "bf16"
    return "fp32"


@dataclass(frozen=True)
class Precision:
    """A resolved precision on one device type."""

    name: str  # fp32, bf16 or fp16
    device_type: str  # "cpu" or "cuda"

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype; None for fp32."""
        return _DTYPES.get(self.name)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the forward pass runs in."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A GradScaler for fp16 (on CUDA and on CPU alike); None otherwise."""
        return torch.amp.GradScaler(self.device_type) if self.name == "fp16" else None


FP32 = Precision("fp32", "cpu")


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """`requested` (auto, fp32, bf16, fp16) for `device`, asking the hardware what `auto` means."""
    capability = None
    if device.type == "cuda" and requested == "auto":
        capability = torch.cuda.get_device_capability(device)
    cpu_bf16 = device.type == "cpu" and requested == "auto" and cpu_has_native_bf16()
    name = choose_precision(requested, device.type, cuda_capability=capability, cpu_bf16=cpu_bf16)
    return Precision(name, device.type)


# Ranks that resolved `auto` differently train in the first of these any of them chose: every
# CUDA GPU computes fp16 natively, bf16 needs compute capability 8.0.
_COMMON_ORDER = ("fp32", "fp16", "bf16")


def resolve_group_precision(requested: str, device: torch.device) -> Precision:
    """`resolve_precision`, agreed by every rank of the torch.distributed group: on a cluster of
    mixed GPUs (A100 and V100) `auto` would mean bf16 on some ranks and fp16 with a GradScaler on
    others, so DDP would average gradients scaled on some ranks only. One all-reduce, at start."""
    local = resolve_precision(requested, device)
    if requested != "auto" or not (dist.is_available() and dist.is_initialized()):
        return local
    return Precision(agree_on_precision(local.name, device), device.type)


def agree_on_precision(name: str, device: torch.device) -> str:
    """The precision of `_COMMON_ORDER` that every rank can run, given each rank's `name`."""
    code = torch.tensor([_COMMON_ORDER.index(name)], dtype=torch.int64, device=device)
    dist.all_reduce(code, op=dist.ReduceOp.MIN)
    return _COMMON_ORDER[int(code.item())]


def set_tf32(enabled: bool) -> None:
    """Whether fp32 matmuls (cuBLAS) and convolutions and RNNs (cuDNN) may use TF32 tensor cores
    on Ampere and newer GPUs: inputs rounded to 10 mantissa bits, products accumulated in fp32,
    several times IEEE fp32's matmul throughput. Only CUDA kernels read these flags. Set both
    ways every run (a reused Ray actor); the legacy flags, because code that still reads them
    fails once the newer ``fp32_precision`` setters were used."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
