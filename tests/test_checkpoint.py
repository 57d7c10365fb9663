from __future__ import annotations

import os
import pickle

import pytest
import torch

from signray.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from signray.errors import ConfigError


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "x.pt"
    target.write_bytes(b"old")

    def crash(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x.pt"]


def test_round_trip(tmp_path):
    state = {"format": 1, "model": {"w": torch.ones(2)}, "epoch": 3}
    save_checkpoint(state, tmp_path / "a.pt")
    assert load_checkpoint(tmp_path / "a.pt")["epoch"] == 3


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_crafted_pickle_is_refused_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"format": 1, "model": _Evil()}, f)
    with pytest.raises(ConfigError, match="weights_only=True") as info:
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()
    assert "weights_only` set to `False`" not in str(info.value)  # no advice to run it anyway


def test_crafted_torch_checkpoint_is_refused_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": 1, "model": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ConfigError, match="unsupported GLOBAL posix.system"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_foreign_file_is_refused(tmp_path):
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="not a signray checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
