"""Tiny real-file fixtures for the data tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from datahelpers import clip, write_csv


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """Writes ``clips/`` with one npz per ``(name, gloss, cat, array)`` plus ``labels.csv``."""

    def make(
        items: Sequence[tuple[str, int, int, np.ndarray]] | None = None,
        *,
        key: str = "X",
    ) -> tuple[Path, Path]:
        if items is None:
            items = [(f"c{i}", i % 3, i % 3 % 2, clip(5 + i, seed=i)) for i in range(4)]
        folder = tmp_path / "clips"
        folder.mkdir(exist_ok=True)
        for name, _, _, arr in items:
            np.savez(folder / f"{name}.npz", **{key: arr})
        csv = write_csv(tmp_path / "labels.csv", [(n, g, c) for n, g, c, _ in items])
        return folder, csv

    return make
