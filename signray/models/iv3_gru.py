"""GRU classifier over per-frame InceptionV3 features, with an optional built-in backbone.

Precomputed 2048-d features are the normal input; the backbone is only needed for raw frames.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from signray.errors import ConfigError, Problem
from signray.fields import option
from signray.models.base import (
    ArchConfig,
    SignModel,
    check_inputs,
    dropout_problems,
    positive_int_problems,
)
from signray.models.registry import register_model

__all__ = ["IV3GRU", "IV3GRUConfig", "build_inception_backbone", "inception_weights_path"]

BACKBONE_DIM = 2048
BACKBONE_INIT_SEED = 0


@dataclass(frozen=True)
class IV3GRUConfig(ArchConfig):
    """Architecture of `IV3GRU`; defaults match the FSL-105 reference (GRU 2048->16->12)."""

    # GRU layers: hidden1 units, then hidden2 units for each further layer
    # GRU layers: hidden1 units, then hidden2 units in each further layer
    hidden1: int = option(16, "units of the first GRU layer")
    hidden2: int = option(12, "units of every further GRU layer")
    depth: int = option(2, "layers (transformer blocks, or stacked GRUs)")
    dropout: float = option(0.3, "dropout probability")
    bidirectional: bool = option(False, "bidirectional GRUs (packed sequences)")
    # the InceptionV3 backbone, for raw frames instead of features
    use_backbone: bool = option(
        False, "read raw frames through an InceptionV3 backbone instead of features"
    )
    pretrained_backbone: bool = option(
        False, "iv3_gru backbone: load ImageNet weights (never downloaded)"
    )
    freeze_backbone: bool = option(
        True, "keep the backbone's weights fixed (and out of checkpoints)"
    )

    @classmethod
    def rule_problems(cls, v: Mapping[str, Any]) -> list[Problem]:
        problems = positive_int_problems(v, "hidden1", "hidden2", "depth") + dropout_problems(v)
        if v["pretrained_backbone"] and not v["use_backbone"]:
            problems.append(
                Problem(
                    "`pretrained_backbone` needs `use_backbone`, but got "
                    "pretrained_backbone=True, use_backbone=False",
                    ["pretrained_backbone", "use_backbone"],
                )
            )
        return problems


def inception_weights_path() -> Path:
    """Where torch hub keeps the ImageNet InceptionV3 weights (honours TORCH_HOME)."""
    from torchvision.models import Inception_V3_Weights

    filename = os.path.basename(urlparse(Inception_V3_Weights.IMAGENET1K_V1.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def build_inception_backbone(
    *, pretrained: bool, weights_file: str | os.PathLike[str] | BinaryIO | None = None
) -> nn.Module:
    """InceptionV3 with fc=Identity, mapping (N, 3, H, W) frames (H, W >= 75) to (N, 2048).

    Pretrained weights are read from `weights_file` (torchvision's ImageNet state dict, a path or
    an open binary file) or else
    only from the local hub cache, never downloaded: training hosts are often offline, and a
    download there would hang. Random weights come from a fixed seed so that a frozen random
    backbone can be rebuilt exactly and need not be checkpointed.
    """
    from torchvision.models import Inception_V3_Weights, inception_v3

    if pretrained or weights_file is not None:
        path = weights_file if weights_file is not None else inception_weights_path()
        if weights_file is None and not path.is_file():
            raise ConfigError(
                f"pretrained InceptionV3 weights are not in the torch hub cache: {path} does "
                "not exist, and signray never downloads them. Download "
                f"{Inception_V3_Weights.IMAGENET1K_V1.url} on a machine with internet access "
                f"and copy it to {path} (set TORCH_HOME to use another cache folder), or "
                "train without them: --no-pretrained-backbone (pretrained_backbone=false)"
            )
        # transform_input=True is what torchvision uses with these weights.
        net = inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=True)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
            net.load_state_dict(state)
        except Exception as err:
            raise ConfigError(
                [f"cannot load pretrained InceptionV3 weights from {path}: {err}"]
            ) from err
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(BACKBONE_INIT_SEED)
            net = inception_v3(weights=None, aux_logits=False, init_weights=False)
    net.fc = nn.Identity()
    return net


class IV3GRU(SignModel):
    """Stacked GRUs read at each clip's last frame; padding never changes a sample's outputs.

    Input is (B, T, input_dim) features, or (B, T, 3, H, W) raw frames when `use_backbone`
    (then `input_dim` is unused: the backbone emits 2048-d features). Dropout follows every GRU
    layer, the last one included, i.e. it is also applied before the heads.

    The GRUs compute in fp32 under every `precision` (see `_without_autocast`).

    Forward-only GRUs run over the padded batch: a forward GRU's output at frame t depends only
    on frames <= t, so the padding after a clip never reaches the output at its last frame, and
    on dense input ATen projects the inputs of all frames in one GEMM (packed input is projected
    step by step, ~1.3x slower on CPU for 2048-d features). Bidirectional GRUs, whose backward
    direction would start in the padding, run on packed sequences.
    """

    backbone_chunk = 64  # frames per backbone call; bounds activation memory on long clips

    def __init__(self, input_dim: int, num_gloss: int, num_cat: int, config=None) -> None:
        c: IV3GRUConfig = config if config is not None else IV3GRUConfig()
        if c.use_backbone:
            input_dim = BACKBONE_DIM  # the backbone emits 2048-d features; they are normalised
        super().__init__(c, input_dim, num_gloss, num_cat)
        self.backbone: nn.Module | None = None
        if c.use_backbone:
            self.backbone = build_inception_backbone(pretrained=c.pretrained_backbone)
            if c.freeze_backbone:
                self.backbone.requires_grad_(False)
                self.backbone.eval()
        directions = 2 if c.bidirectional else 1
        sizes = [c.hidden1] + [c.hidden2] * (c.depth - 1)
        self.grus = nn.ModuleList()
        for size in sizes:
            self.grus.append(
                nn.GRU(input_dim, size, batch_first=True, bidirectional=c.bidirectional)
            )
            input_dim = size * directions
        self.drop = nn.Dropout(c.dropout)
        self.gloss_head = nn.Linear(input_dim, num_gloss)
        self.cat_head = nn.Linear(input_dim, num_cat)

    @property
    def backbone_frozen(self) -> bool:
        return self.backbone is not None and self.config.freeze_backbone

    def train(self, mode: bool = True) -> IV3GRU:
        """Keep a frozen backbone in eval mode, so its batch-norm statistics never drift."""
        super().train(mode)
        if self.backbone_frozen:
            assert self.backbone is not None
            self.backbone.eval()
        return self

    def checkpoint_excluded_prefixes(self) -> tuple[str, ...]:
        return ("backbone.",) if self.backbone_frozen else ()

    def _frame_features(self, frames: Tensor, lengths: Tensor) -> Tensor:
        """(B, T, 3, H, W) -> (B, T, 2048); padded frames are skipped and left as zeros."""
        assert self.backbone is not None
        B, T = frames.shape[:2]
        valid = torch.arange(T, device=frames.device)[None, :] < lengths.to(frames.device)[:, None]
        flat = frames[valid]  # (N, 3, H, W), N = lengths.sum()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.backbone_frozen):
            feats = torch.cat(
                [self.backbone(chunk) for chunk in flat.split(self.backbone_chunk)]
            )  # (N, 2048)
        out = feats.new_zeros(B, T, feats.shape[-1])  # (B, T, 2048)
        out[valid] = feats
        return out

    def forward(
        self, x: Tensor, lengths: Tensor, host_lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """x (B, T, D) or (B, T, 3, H, W), lengths (B,) int64 -> (gloss (B, G), category (B, C)).

        `host_lengths` (the same values on the CPU) lets bidirectional GRUs pack the batch
        without copying `lengths` back from the GPU."""
        frame_dims = 3 if self.backbone is not None else 1
        check_inputs(x, lengths, frame_dims=frame_dims, host_lengths=host_lengths)
        if self.backbone is not None:
            x = self._frame_features(x, lengths)  # (B, T, 2048)
        x = self.input_norm(x).float()
        with _without_autocast(x.device.type):
            if self.config.bidirectional:
                host = host_lengths if host_lengths is not None else lengths.cpu()  # (B,) CPU
                last = self._packed_last(x, host)
            else:
                last = self._causal_last(x, lengths)
        last = self.drop(last)  # (B, directions * H)
        return self.gloss_head(last), self.cat_head(last)

    def _causal_last(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Forward GRUs over the padded (B, T, D) batch -> (B, H) outputs at each last frame."""
        h = x
        for i, gru in enumerate(self.grus):
            h, _ = gru(self.drop(h) if i else h)  # (B, T, H)
        rows = torch.arange(h.shape[0], device=h.device)
        return h[rows, lengths.to(h.device) - 1]  # (B, H)

    def _packed_last(self, x: Tensor, host_lengths: Tensor) -> Tensor:
        """Bidirectional GRUs over packed sequences -> (B, 2 * H) final states.

        The batch is sorted by length here, from the host lengths, and the sort indices go to
        the device with non-blocking copies: `pack_padded_sequence(enforce_sorted=False)` would
        copy them with a blocking one, a stream sync every step."""
        order = torch.argsort(host_lengths, descending=True, stable=True)  # (B,) CPU
        unsort = torch.empty_like(order)
        unsort[order] = torch.arange(len(order))
        to_device = order.to(x.device, non_blocking=True), unsort.to(x.device, non_blocking=True)
        seq = pack_padded_sequence(
            x.index_select(0, to_device[0]), host_lengths[order], batch_first=True
        )
        h_n = torch.empty(0)
        for i, gru in enumerate(self.grus):
            if i:
                seq = PackedSequence(self.drop(seq.data), seq.batch_sizes)
            seq, h_n = gru(seq)  # h_n: (2, B, H), longest clip first
        h_n = h_n.index_select(1, to_device[1])  # (2, B, H) in the batch's order
        return h_n.transpose(0, 1).reshape(x.shape[0], -1)  # (B, 2 * H)


def _without_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast off for the GRUs, which then compute in fp32 under every precision.

    On CUDA, autocast runs cuDNN RNNs in float16 whatever its dtype, bf16 included
    (`aten/src/ATen/cudnn/AutocastRNN.cpp`), and only fp16 runs come with a GradScaler. fp32
    GRUs cost little here: the recurrent state is 16-12 units wide, and the 2048-wide input
    projection still uses TF32 tensor cores where `tf32` allows it. The backbone and the heads
    keep the chosen precision.
    """
    if device_type in ("cpu", "cuda"):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()  # devices without autocast (e.g. meta)


@register_model("iv3_gru", class_name="IV3GRU", input_kind="features", config_cls=IV3GRUConfig)
def build_iv3_gru(arch: IV3GRUConfig, *, input_dim: int, num_gloss: int, num_cat: int) -> IV3GRU:
    return IV3GRU(input_dim, num_gloss, num_cat, arch)
