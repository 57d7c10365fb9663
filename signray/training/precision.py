"""Numeric precision of a run: which one `auto` means on this device, its autocast context and,
for fp16, its GradScaler. The one place that knows what each precision needs.

- ``fp32``: no autocast.
- ``bf16``: autocast to bfloat16; same exponent range as fp32, so no loss scaling.
- ``fp16``: autocast to float16 with a `GradScaler` (small gradients would flush to zero).
- ``auto``: bf16 where the hardware computes it natively (CUDA compute capability >= 8.0; a CPU
  with AVX512-BF16 or AMX), fp16 on older CUDA GPUs, fp32 everywhere else.

Losses are computed in fp32 either way (`steps.multitask_loss` casts the logits).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from signray.config.train import PRECISIONS

__all__ = [
    "FP32",
    "PRECISIONS",
    "Precision",
    "choose_precision",
    "cpu_has_native_bf16",
    "resolve_precision",
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
