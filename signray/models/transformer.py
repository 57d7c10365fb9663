"""Pre-norm Transformer encoder over keypoint sequences, with gloss and category heads."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from signray.errors import Problem
from signray.fields import option
from signray.models.base import (
    ArchConfig,
    SignModel,
    check_inputs,
    dropout_problems,
    positive_int_problems,
)
from signray.models.registry import register_model

__all__ = ["SignTransformer", "TransformerConfig", "sinusoidal_positions"]

POOLS = ("mean", "max")


@dataclass(frozen=True)
class TransformerConfig(ArchConfig):
    """Architecture of `SignTransformer`; defaults match the FSL-105 reference (~3.3M params)."""

    d_model: int = option(256, "width of each frame's token vector")
    n_heads: int = option(8, "attention heads (must divide d_model)")
    depth: int = option(4, "layers (transformer blocks, or stacked GRUs)")
    ff_dim: int = option(1024, "hidden width of each block's feed-forward layer")
    dropout: float = option(0.1, "dropout probability")
    head_hidden: int = option(128, "hidden width of the gloss and category heads")
    pool: str = option("mean", "how frames become one vector: mean or max over the valid frames")
    drop_path: float = option(
        0.0,
        "stochastic depth: each clip skips a block's residual branches with a probability "
        "rising linearly to this at the last block (training only)",
    )

    @classmethod
    def rule_problems(cls, v: Mapping[str, Any]) -> list[Problem]:
        problems = positive_int_problems(v, "d_model", "n_heads", "depth", "ff_dim", "head_hidden")
        problems += dropout_problems(v) + dropout_problems(v, "drop_path")
        if v["d_model"] > 0 and v["n_heads"] > 0 and v["d_model"] % v["n_heads"]:
            problems.append(
                Problem(
                    f"`n_heads` must divide `d_model`, but got n_heads={v['n_heads']}, "
                    f"d_model={v['d_model']}",
                    ["n_heads", "d_model"],
                )
            )
        if v["d_model"] % 2:
            problems.append(
                Problem(
                    "`d_model` must be even for sinusoidal positions, but got "
                    f"d_model={v['d_model']}",
                    ["d_model"],
                )
            )
        if v["pool"] not in POOLS:
            problems.append(
                Problem(
                    f"`pool` must be one of {', '.join(POOLS)}, but got pool={v['pool']!r}",
                    ["pool"],
                )
            )
        return problems


def sinusoidal_positions(length: int, dim: int, *, device: torch.device | None = None) -> Tensor:
    """Sinusoidal encoding (Vaswani et al.) for any length, computed on the fly: no maximum T."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]  # (T, 1)
    inv_freq = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )  # (D/2,)
    angles = pos * inv_freq  # (T, D/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)  # (T, D): sin even, cos odd


class _EncoderBlock(nn.Module):
    """Pre-norm self-attention + feed-forward block.

    Written on `F.scaled_dot_product_attention` instead of `nn.TransformerEncoderLayer`: it is as
    fast on CPU, and it has no eval fast path or nested-tensor conversion that could treat padded
    batches differently from unpadded ones.
    """

    def __init__(
        self, d_model: int, n_heads: int, ff_dim: int, dropout: float, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.drop_path = drop_path
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(ff_dim, d_model),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        """`attn_mask` is (B, 1, 1, T) bool, True for keys that may be attended to."""
        B, T, D = x.shape
        qkv = self.qkv(self.norm1(x)).view(B, T, 3, self.n_heads, D // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, T, D/H)
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, D/H)
        x = x + self._skip(self.drop(self.proj(attn.transpose(1, 2).reshape(B, T, D))))
        return x + self._skip(self.drop(self.ff(self.norm2(x))))  # (B, T, D)

    def _skip(self, branch: Tensor) -> Tensor:
        """Stochastic depth: the whole branch of a clip is dropped (identity when off)."""
        if not (self.training and self.drop_path):
            return branch
        from torchvision.ops import stochastic_depth  # ~1 s to import: only when used

        return stochastic_depth(branch, self.drop_path, "row", self.training)


def _head(d_model: int, hidden: int, out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_model, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out)
    )


class SignTransformer(SignModel):
    """Keypoint-sequence classifier; padded frames never influence valid frames or pooling."""

    def __init__(self, input_dim: int, num_gloss: int, num_cat: int, config=None) -> None:
        c: TransformerConfig = config if config is not None else TransformerConfig()
        super().__init__(c, input_dim, num_gloss, num_cat)
        self.input_proj = nn.Linear(input_dim, c.d_model)
        self.input_drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            _EncoderBlock(
                c.d_model, c.n_heads, c.ff_dim, c.dropout, c.drop_path * (i + 1) / c.depth
            )
            for i in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.d_model)
        self.gloss_head = _head(c.d_model, c.head_hidden, num_gloss, c.dropout)
        self.cat_head = _head(c.d_model, c.head_hidden, num_cat, c.dropout)

    def forward(
        self, x: Tensor, lengths: Tensor, host_lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """x (B, T, input_dim), lengths (B,) int64 -> (gloss (B, G), category (B, C)) logits.

        Nothing here reads lengths on the host (`host_lengths` only serves the value check)."""
        check_inputs(x, lengths, host_lengths=host_lengths)
        T = x.shape[1]
        valid = torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]  # (B, T)
        h = self.input_proj(self.input_norm(x))  # (B, T, D)
        h = self.input_drop(h + sinusoidal_positions(T, h.shape[-1], device=x.device).to(h.dtype))
        attn_mask = valid[:, None, None, :]  # (B, 1, 1, T)
        for block in self.blocks:
            h = block(h, attn_mask)
        h = self.norm(h)  # (B, T, D)
        if self.config.pool == "mean":
            pooled = (h * valid[..., None]).sum(1) / lengths.to(h)[:, None]  # (B, D)
        else:
            pooled = h.masked_fill(~valid[..., None], float("-inf")).amax(1)  # (B, D)
        return self.gloss_head(pooled), self.cat_head(pooled)


@register_model(
    "transformer",
    class_name="SignTransformer",
    input_kind="keypoints",
    config_cls=TransformerConfig,
)
def build_transformer(
    arch: TransformerConfig, *, input_dim: int, num_gloss: int, num_cat: int
) -> SignTransformer:
    return SignTransformer(input_dim, num_gloss, num_cat, arch)
