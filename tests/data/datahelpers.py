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
