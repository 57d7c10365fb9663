"""Shared helpers for the data tests (a unique module name, importable from any test file)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

CsvRow = Sequence[object]


def write_csv(path: Path, rows: Sequence[CsvRow], header: str = "file,gloss,cat") -> Path:
    lines = [header] + [",".join(str(cell) for cell in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def clip(length: int, dim: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((length, dim), dtype=np.float32)


def write_v1_shards(split, out: Path, num_shards: int, *, key: str = "X") -> Path:
    """Shards in format 1 (one .npz per shard), exactly as signray wrote them before format 2."""
    import json

    from signray.data.shard_writer import shard_boundaries
    from signray.io import write_npz

    cuts = shard_boundaries(split.lengths, num_shards)
    entries = []
    for k in range(num_shards):
        lo, hi = int(cuts[k]), int(cuts[k + 1])
        f0, f1 = int(split.offsets[lo]), int(split.offsets[hi])
        name = f"shard-{k:05d}-of-{num_shards:05d}.npz"
        write_npz(
            out / name,
            {
                "frames": split.frames[f0:f1],
                "offsets": split.offsets[lo : hi + 1] - f0,
                "gloss": split.gloss[lo:hi],
                "cat": split.cat[lo:hi],
                "names": split.names[lo:hi],
            },
        )
        entries.append({"file": name, "num_clips": hi - lo, "num_frames": f1 - f0})
    manifest = {
        "format": "signray-packed", "format_version": 1, "num_shards": num_shards,
        "num_clips": len(split), "num_frames": split.num_frames,
        "feature_dim": split.feature_dim, "dtype": "float32", "key": key, "num_gloss": None,
        "num_cat": None, "max_frames": None, "shards": entries,
    }  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out
