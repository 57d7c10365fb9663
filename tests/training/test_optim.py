"""Seeding: what every run sets before it draws a random number or calls a CUDA library."""

from __future__ import annotations

import os

import pytest
import torch

from signray.training.optim import CUBLAS_WORKSPACE_CONFIG, seed_everything


def test_seeding_sets_the_cublas_workspace_that_deterministic_cuda_needs(monkeypatch):
    """torch reads CUBLAS_WORKSPACE_CONFIG when the process first calls cuBLAS: every run sets
    it first, so a reused actor's later --deterministic trial is deterministic too."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seed_everything(0, deterministic=False)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE_CONFIG == ":4096:8"
    seed_everything(0, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    seed_everything(0, deterministic=False)  # and back, for the next run in this process
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic


def test_a_workspace_config_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    seed_everything(0, deterministic=True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    seed_everything(0, deterministic=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_deterministic_cuda_matmuls_raise_no_cublas_warning(recwarn):
    seed_everything(0, deterministic=True)
    try:
        a = torch.randn(64, 64, device="cuda")
        (a @ a).sum().item()
    finally:
        seed_everything(0, deterministic=False)
    assert not [w for w in recwarn if "CUBLAS_WORKSPACE_CONFIG" in str(w.message)]
