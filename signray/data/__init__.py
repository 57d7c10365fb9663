"""Data layer: validated loading into packed splits, shards (format 2: memory-mappable, with a
checksummed manifest), streaming per rank, samplers, loaders, synthetic data.

Nothing here imports Ray, so it runs and is tested without a cluster.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from signray.data.clips import read_clip
from signray.data.labels import LabelRow, read_labels
from signray.data.packed import PackedParts, PackedSplit, Split, subsample_indices
from signray.data.scan import SplitIndex, scan_split
from signray.data.splits import load_split
from signray.data.stats import NormStats

if TYPE_CHECKING:
    from signray.data.loader import Batch, ClipDataset, build_loader, collate_padded
    from signray.data.pack import pack_split
    from signray.data.samplers import BucketBatchSampler, ShardBatchSampler
    from signray.data.streaming import ShardStream
    from signray.data.synth import write_dataset
    from signray.data.synth_generator import DIFFICULTIES, synthetic_splits

__all__ = [
    "DIFFICULTIES",
    "Batch",
    "BucketBatchSampler",
    "ClipDataset",
    "LabelRow",
    "NormStats",
    "PackedParts",
    "PackedSplit",
    "ShardBatchSampler",
    "ShardStream",
    "Split",
    "SplitIndex",
    "build_loader",
    "collate_padded",
    "load_split",
    "pack_split",
    "read_clip",
    "read_labels",
    "scan_split",
    "subsample_indices",
    "synthetic_splits",
    "write_dataset",
]

# Lazy so `python -m signray.data.pack` neither imports itself twice nor waits for torch.
_LAZY = {
    "Batch": "signray.data.loader",
    "ClipDataset": "signray.data.loader",
    "build_loader": "signray.data.loader",
    "collate_padded": "signray.data.loader",
    "BucketBatchSampler": "signray.data.samplers",
    "ShardBatchSampler": "signray.data.samplers",
    "ShardStream": "signray.data.streaming",
    "pack_split": "signray.data.pack",
    "DIFFICULTIES": "signray.data.synth_generator",
    "synthetic_splits": "signray.data.synth_generator",
    "write_dataset": "signray.data.synth",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
