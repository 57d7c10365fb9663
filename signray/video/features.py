"""InceptionV3 features of frames, as the reference computes them: RGB frames at 299 x 299
scaled to [0, 1], normalised with ImageNet's mean and std, through torchvision's InceptionV3
(`signray.models.iv3_gru.build_inception_backbone`) to its 2048-d pooled output.

Frames go through the network in batches of `batch` on the given device, in the chosen
precision (`signray.training.precision`: bf16 or fp16 autocast on GPUs with ``auto``; features
come back as float32 either way).
"""

from __future__ import annotations

import contextlib
import hashlib
import io

import numpy as np
import torch

from signray.models.iv3_gru import build_inception_backbone
from signray.training.precision import choose_precision, cpu_has_native_bf16

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FeatureExtractor",
    "backbone_identity",
    "load_backbone",
    "normalise",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def normalise(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``(n, H, W, 3)`` RGB -> float32 ``(n, 3, H, W)``, /255 then ImageNet mean/std."""
    x = frames.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def backbone_identity(weights: bytes | None) -> str:
    """What the features depend on: the weights file's sha256, or the seeded random init."""
    return "random-seed-0" if weights is None else f"sha256:{hashlib.sha256(weights).hexdigest()}"


def load_backbone(weights: bytes | None) -> torch.nn.Module:
    """The backbone from a weights file's bytes (None: the seeded random init); a file that is
    not an InceptionV3 state dict raises `ConfigError`."""
    if weights is None:
        return build_inception_backbone(pretrained=False)
    return build_inception_backbone(pretrained=True, weights_file=io.BytesIO(weights))


class FeatureExtractor:
    """The backbone on one device, built once per worker."""

    def __init__(
        self,
        weights: bytes | None,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        batch: int = 32,
    ) -> None:
        self.device = torch.device(device)
        self.net = load_backbone(weights).eval().requires_grad_(False).to(self.device)
        capability = torch.cuda.get_device_capability(self.device) if device != "cpu" else None
        self.precision = choose_precision(
            precision, self.device.type, cuda_capability=capability, cpu_bf16=cpu_has_native_bf16()
        )
        self.batch = batch

    def _autocast(self):
        if self.precision in _AUTOCAST:
            return torch.autocast(self.device.type, dtype=_AUTOCAST[self.precision])
        return contextlib.nullcontext()

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 ``(n, 299, 299, 3)`` RGB -> float32 ``(n, 2048)``."""
        out = np.zeros((len(frames), 2048), dtype=np.float32)
        with torch.inference_mode(), self._autocast():
            for lo in range(0, len(frames), self.batch):
                chunk = torch.from_numpy(np.ascontiguousarray(frames[lo : lo + self.batch]))
                x = normalise(chunk.to(self.device, non_blocking=True))
                out[lo : lo + len(chunk)] = self.net(x).float().cpu().numpy()
        return out
