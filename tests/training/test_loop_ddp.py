"""The loop on two real DDP ranks (torch.distributed with gloo on the CPU, no Ray): each rank
has its own random stream, every rank's stream is saved and restored, and `--precision auto` is
agreed by the group."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from signray.config import resolve_config
from signray.data import synthetic_splits
from signray.training.checkpoint import load_checkpoint
from signray.training.loop import train_loop
from signray.training.precision import agree_on_precision
from signray.training.reporters import FileReporter

TINY = dict(num_gloss=6, num_cat=2, train_per_gloss=4, val_per_gloss=2, min_len=8, max_len=24)
pytestmark = pytest.mark.slow  # each test starts two processes that import torch

SMALL_TX = {"d_model": 16, "n_heads": 2, "depth": 1, "ff_dim": 32, "head_hidden": 16}


def _cfg(out: Path, world: int, **over):
    return resolve_config({"num_gloss": 6, "num_cat": 2, "batch_size": 8, "lr": 3e-3,
                           "ray_workers": world, "output_dir": str(out), "num_threads": 1,
                           "bucket": False, **SMALL_TX, **over})  # fmt: skip


def _rank(rank: int, world: int, store: str, job: str, args: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        if job == "train":
            cfg = _cfg(Path(args["out"]), world, **args["config"])
            data = synthetic_splits(kind="keypoints", seed=0, difficulty="easy", **TINY)
            reporter = FileReporter(
                cfg.output_dir,
                cfg.spec.class_name,
                total_epochs=cfg.epochs,
                resume=args.get("resume"),
                rank=rank,
                stream=io.StringIO(),
            )
            train_loop(cfg, reporter, data)
            # The stream each rank ends with (nothing draws from it after the last report).
            torch.save(torch.get_rng_state(), Path(args["out"]) / f"rng_end_{rank}.pt")
        else:
            chosen = agree_on_precision(args["local"][rank], torch.device("cpu"))
            Path(args["out"], f"precision_{rank}.json").write_text(json.dumps(chosen))
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path: Path, job: str, world: int = 2, **args) -> None:
    store = tmp_path / f"store-{job}-{len(list(tmp_path.glob('store-*')))}"
    mp.spawn(_rank, args=(world, str(store), job, args), nprocs=world, join=True)


def _train(tmp_path: Path, name: str, world: int = 2, resume=None, **config) -> Path:
    out = tmp_path / name
    out.mkdir(parents=True, exist_ok=True)
    resume = str(resume) if resume else None
    _spawn(tmp_path, "train", world, out=str(out), config=config, resume=resume)
    return out


def test_each_rank_draws_its_own_stream_and_the_checkpoint_keeps_every_ranks(tmp_path):
    out = _train(tmp_path, "run", epochs=1, dropout=0.3)
    rng = load_checkpoint(out / "SignTransformer_last.pt").rng
    assert len(rng["ranks"]) == 2
    assert torch.equal(rng["ranks"][0]["torch"], rng["torch"])  # the top level is rank 0's
    assert not torch.equal(rng["ranks"][0]["torch"], rng["ranks"][1]["torch"])  # seed + rank
    for rank in (0, 1):
        assert torch.equal(torch.load(out / f"rng_end_{rank}.pt"), rng["ranks"][rank]["torch"])


def test_a_resumed_ddp_run_continues_every_ranks_stream_exactly(tmp_path):
    """Dropout on both ranks: the resumed run equals the uninterrupted one only if each rank got
    its own generator state back."""
    full = _train(tmp_path, "full", epochs=3, dropout=0.3)
    half = _train(tmp_path, "half", epochs=1, dropout=0.3)
    _train(tmp_path, "half", epochs=3, dropout=0.3, resume=half / "SignTransformer_last.pt")
    a = load_checkpoint(full / "SignTransformer_last.pt")
    b = load_checkpoint(half / "SignTransformer_last.pt")
    assert a.epoch == b.epoch == 3
    for key, value in a.model.items():
        assert torch.equal(value, b.model[key]), key
    for rank in (0, 1):
        assert torch.equal(a.rng["ranks"][rank]["torch"], b.rng["ranks"][rank]["torch"])


def test_two_ranks_split_the_global_batch_of_one_process_without_dropout(tmp_path):
    """Per-rank seeds change nothing else: the samplers share the seed and DDP starts every rank
    from rank 0's weights, which are the single process's."""
    one = load_checkpoint(_train(tmp_path, "one", world=1, epochs=2, dropout=0.0)
                          / "SignTransformer_last.pt")  # fmt: skip
    two = load_checkpoint(_train(tmp_path, "two", epochs=2, dropout=0.0)
                          / "SignTransformer_last.pt")  # fmt: skip
    for epoch in (0, 1):
        losses = [c.history[epoch]["train_loss"] for c in (one, two)]
        assert losses[1] == pytest.approx(losses[0], rel=1e-4), epoch


@pytest.mark.parametrize(
    ("local", "agreed"),
    [(["bf16", "fp16"], "fp16"), (["bf16", "bf16"], "bf16"), (["fp16", "fp32"], "fp32")],
)
def test_auto_precision_is_one_for_the_whole_group(tmp_path, local, agreed):
    """A mixed cluster (A100: bf16, V100: fp16) trains every rank in what all of them run."""
    _spawn(tmp_path, "precision", out=str(tmp_path), local=local)
    assert [json.loads((tmp_path / f"precision_{r}.json").read_text()) for r in (0, 1)] == [
        agreed,
        agreed,
    ]
