"""Benchmark 1: training throughput, signray vs a naive PyTorch loop, side by side.

Real (unpadded) frames per second of forward + backward + optimizer step at batch 32 on an
FSL-like synthetic dataset written to disk with `write_dataset` (105 glosses x 20 clips = 2,100
training clips, lengths 16-120), for both models:

- signray: the data loaded once into a `PackedSplit`, length-bucketed batches from
  `build_loader`, the registry's model (`SignTransformer` on `scaled_dot_product_attention` with
  a key-padding mask; `IV3GRU` on packed sequences) and the engine's `train_one_epoch` with the
  optimizer `train_loop` builds.
- naive: a plain PyTorch loop whose Dataset `np.load`s one file per sample per epoch, pads every
  batch to its longest clip, no bucketing; `nn.TransformerEncoder` (norm_first, batch_first, same
  d_model 256 / 8 heads / 4 layers / FF 1024) or a plain GRU 2048->16->12 over the padded batch
  (no packing), Adam, `loss.item()` every step.

"signray" runs the default `TrainConfig` (its default `precision`, resolved for this CPU); for
the transformer, the other of `--precision fp32` / `--precision auto` (bf16 where the CPU has it
natively) is timed too, as "signray_fp32" or "signray_auto". The targets compare the defaults.

Each repetition runs `--steps` batches of a fresh epoch, or the whole epoch with `--epoch`
(per-epoch speed: what a user waits for); contestants alternate (A B A B ...). The files are
read back warm from the page cache, the naive loop's best case.

    python -m benchmarks.throughput [--reps 3] [--steps 24 | --epoch] [--tiny]
"""

from __future__ import annotations

import csv
import itertools
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from benchmarks._common import CACHE_DIR, base_parser, interleaved, median, target, write_result
from signray.config import TrainConfig, resolve_config
from signray.data import PackedSplit, build_loader, load_split, write_dataset
from signray.models import build_model
from signray.training.optim import build_optimizer
from signray.training.precision import cpu_has_native_bf16, resolve_precision
from signray.training.steps import LossWeights, train_one_epoch

__all__ = [
    "FULL_DATA",
    "TINY_DATA",
    "NaiveGRU",
    "NaiveTransformer",
    "bf16_supported",
    "SignrayStep",
    "bench_dataset",
    "main",
    "naive_loader",
]

FULL_DATA = dict(
    num_gloss=105, num_cat=10, train_per_gloss=20, val_per_gloss=1, min_len=16, max_len=120
)
TINY_DATA = dict(num_gloss=6, num_cat=2, train_per_gloss=6, val_per_gloss=1, min_len=8, max_len=24)
INPUT_KEYS = {"transformer": ("keypoints", "X"), "iv3_gru": ("features", "X2048")}
TARGETS = {"transformer": 3.0, "iv3_gru": 2.0}
BATCH = 32


def bf16_supported() -> bool:
    """Whether this CPU runs bf16 matmuls natively (AVX512-BF16 or AMX)."""
    return cpu_has_native_bf16()


def bench_dataset(
    spec: dict[str, int],
    seed: int = 0,
    features: bool = True,
    *,
    keypoints: bool = True,
    num_shards: int | None = None,
) -> Path:
    """The dataset for `spec` (per-clip files, or format-2 shards with `num_shards`), written
    once under CACHE_DIR and reused."""
    name = "fsl-" + "-".join(f"{v}" for v in spec.values()) + f"-s{seed}"
    name += ("" if features else "-kp") + ("" if keypoints else "-nokp")
    root = CACHE_DIR / (name + (f"-shards{num_shards}" if num_shards else ""))
    stamp = root / "complete"
    if not stamp.is_file():
        write_dataset(root, seed=seed, difficulty="medium", features=features,
                      keypoints=keypoints, num_shards=num_shards, **spec)  # fmt: skip
        stamp.write_text("ok\n")
    return root


# ---------------------------------------------------------------------------------------------
# The naive baseline: what a first PyTorch script looks like.


class FileDataset(Dataset):
    """One `np.load` per sample per epoch."""

    def __init__(self, folder: Path, labels_csv: Path, key: str) -> None:
        with labels_csv.open(newline="") as f:
            rows = list(csv.DictReader(f))
        self.paths = [
            folder / (r["file"] if r["file"].endswith(".npz") else r["file"] + ".npz") for r in rows
        ]
        self.gloss = [int(r["gloss"]) for r in rows]
        self.cat = [int(r["cat"]) for r in rows]
        self.key = key

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        x = np.load(self.paths[i])[self.key].astype(np.float32)
        return torch.from_numpy(x), self.gloss[i], self.cat[i]


def pad_collate(items):
    xs, gloss, cat = zip(*items, strict=True)
    lengths = torch.tensor([len(x) for x in xs])
    return pad_sequence(xs, batch_first=True), lengths, torch.tensor(gloss), torch.tensor(cat)


def naive_loader(root: Path, model: str, seed: int) -> DataLoader:
    kind, key = INPUT_KEYS[model]
    ds = FileDataset(root / f"{kind}_train", root / "train_labels.csv", key)
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=BATCH, shuffle=True, collate_fn=pad_collate, generator=gen)


class NaiveTransformer(nn.Module):
    def __init__(self, input_dim: int, num_gloss: int, num_cat: int, max_len: int = 1024):
        super().__init__()
        d = 256
        self.input_proj = nn.Linear(input_dim, d)
        pos = torch.arange(max_len)[:, None] * torch.exp(
            torch.arange(0, d, 2) * (-math.log(10000.0) / d)
        )
        self.register_buffer("pe", torch.stack((pos.sin(), pos.cos()), -1).flatten(1))
        layer = nn.TransformerEncoderLayer(d, 8, 1024, 0.1, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 4, nn.LayerNorm(d), enable_nested_tensor=False)
        self.gloss_head = nn.Sequential(
            nn.Linear(d, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, num_gloss)
        )
        self.cat_head = nn.Sequential(
            nn.Linear(d, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, num_cat)
        )

    def forward(self, x, lengths):
        pad = torch.arange(x.shape[1])[None, :] >= lengths[:, None]  # (B, T)
        h = self.input_proj(x) + self.pe[: x.shape[1]]
        h = self.encoder(h, src_key_padding_mask=pad)
        pooled = h.masked_fill(pad[..., None], 0).sum(1) / lengths[:, None]
        return self.gloss_head(pooled), self.cat_head(pooled)


class NaiveGRU(nn.Module):
    def __init__(self, input_dim: int, num_gloss: int, num_cat: int):
        super().__init__()
        self.gru1 = nn.GRU(input_dim, 16, batch_first=True)
        self.gru2 = nn.GRU(16, 12, batch_first=True)
        self.drop = nn.Dropout(0.3)
        self.gloss_head = nn.Linear(12, num_gloss)
        self.cat_head = nn.Linear(12, num_cat)

    def forward(self, x, lengths):
        h, _ = self.gru1(x)
        h, _ = self.gru2(self.drop(h))
        last = self.drop(h[torch.arange(len(x)), lengths - 1])  # output at each clip's last frame
        return self.gloss_head(last), self.cat_head(last)


class NaiveStep:
    """A plain training loop over `naive_loader`; each call runs `steps` batches of a new epoch."""

    def __init__(self, root: Path, model: str, spec: dict[str, int], steps: int) -> None:
        input_dim = 156 if model == "transformer" else 2048
        cls = NaiveTransformer if model == "transformer" else NaiveGRU
        self.model = cls(input_dim, spec["num_gloss"], spec["num_cat"])
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.root, self.name, self.steps, self.epoch = root, model, steps, 0

    def __call__(self) -> tuple[int, float]:
        self.model.train()
        self.epoch += 1
        loader = naive_loader(self.root, self.name, seed=self.epoch)
        frames, running = 0, 0.0
        start = time.perf_counter()
        for x, lengths, gloss, cat in itertools.islice(loader, self.steps):
            g, c = self.model(x, lengths)
            loss = 0.5 * F.cross_entropy(g, gloss) + 0.5 * F.cross_entropy(c, cat)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            running += loss.item()
            frames += int(lengths.sum())
        return frames, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# signray: packed split, bucketed loader, registry model, the engine's epoch with the loop's
# optimizer.


def signray_config(model: str, spec: dict[str, int], **overrides: Any) -> TrainConfig:
    return resolve_config(
        {
            "model": model,
            "num_gloss": spec["num_gloss"],
            "num_cat": spec["num_cat"],
            "batch_size": BATCH,
            **overrides,
        }
    )


def load_train_split(root: Path, model: str, spec: dict[str, int]) -> PackedSplit:
    kind, key = INPUT_KEYS[model]
    return load_split(
        root / f"{kind}_train",
        root / "train_labels.csv",
        keys=(key,),
        num_gloss=spec["num_gloss"],
        num_cat=spec["num_cat"],
    )


class SignrayStep:
    """`train_one_epoch` over the first `steps` batches of a new bucketed epoch per call."""

    def __init__(self, cfg: TrainConfig, split: PackedSplit, steps: int) -> None:
        self.cfg = cfg
        self.model = build_model(
            cfg.model,
            cfg.arch,
            input_dim=split.feature_dim,
            num_gloss=cfg.num_gloss,
            num_cat=cfg.num_cat,
        )
        self.optimizer = build_optimizer(cfg, self.model)
        self.loader = build_loader(split, batch_size=cfg.batch_size, train=True, bucket=cfg.bucket)
        self.weights = LossWeights(cfg.gloss_weight, cfg.cat_weight, cfg.label_smoothing)
        self.precision = resolve_precision(cfg.precision, torch.device("cpu"))
        self.steps, self.epoch = steps, 0

    def __call__(self) -> tuple[int, float]:
        self.epoch += 1
        self.loader.batch_sampler.set_epoch(self.epoch)
        m = train_one_epoch(
            self.model,
            self.loader,
            self.optimizer,
            device=torch.device("cpu"),
            weights=self.weights,
            grad_clip=self.cfg.grad_clip,
            precision=self.precision,
            progress=lambda batches, _: itertools.islice(batches, self.steps),
        )
        return int(m["train_frames"]), m["train_seconds"]


def measure(contestants: dict[str, Any], reps: int) -> dict[str, dict[str, Any]]:
    """Warm every contestant up once, then time interleaved repetitions: frames/s per rep."""
    for fn in contestants.values():
        fn()
    runs = interleaved(contestants, reps)
    out = {}
    for name, values in runs.items():
        rates = [frames / seconds for frames, seconds in values]
        out[name] = {
            "frames_per_s": rates,
            "median_frames_per_s": median(rates),
            "median_seconds": median(seconds for _, seconds in values),
            "frames_per_rep": [frames for frames, _ in values],
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser("throughput", __doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="batches per repetition (default 24)")
    p.add_argument("--epoch", action="store_true", help="whole epochs per repetition")
    p.add_argument(
        "--models",
        nargs="+",
        default=["transformer", "iv3_gru"],
        choices=["transformer", "iv3_gru"],
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = TINY_DATA if args.tiny else FULL_DATA
    reps = args.reps or (1 if args.tiny else 3)
    steps = None if args.epoch else args.steps or (2 if args.tiny else 24)
    torch.manual_seed(0)
    tic = time.perf_counter()
    root = bench_dataset(spec)
    print(f"dataset {root} ready in {time.perf_counter() - tic:.1f}s", flush=True)
    results: dict[str, Any] = {}
    targets = []
    for model in args.models:
        tic = time.perf_counter()
        split = load_train_split(root, model, spec)
        load_s = time.perf_counter() - tic
        contestants = {
            "naive": NaiveStep(root, model, spec, steps),
            "signray": SignrayStep(signray_config(model, spec), split, steps),
        }
        default = contestants["signray"].precision.name
        requested = contestants["signray"].cfg.precision
        other = "fp32" if requested != "fp32" else "auto"
        if model == "transformer":
            step = SignrayStep(signray_config(model, spec, precision=other), split, steps)
            contestants[f"signray_{other}"] = step
        res = measure(contestants, reps)
        for r in res.values():
            r["ratio_to_naive"] = r["median_frames_per_s"] / res["naive"]["median_frames_per_s"]
        ratio = res["signray"]["ratio_to_naive"]
        results[model] = {
            **res,
            "ratio": ratio,
            "signray_load_s": load_s,
            "signray_precision": default,
            "signray_precision_requested": requested,
            "clips": len(split),
            "mean_length": float(split.lengths.mean()),
        }
        targets.append(target(f"throughput {model} signray/naive", ratio, TARGETS[model]))
        rows = ", ".join(
            f"{k} {v['median_frames_per_s']:.0f} frames/s ({v['ratio_to_naive']:.2f}x)"
            for k, v in res.items()
        )
        print(f"{model}: {rows}", flush=True)
    return write_result(
        "throughput",
        args,
        {
            "config": {
                "data": spec,
                "batch_size": BATCH,
                "steps": steps,
                "reps": reps,
                "threads": torch.get_num_threads(),
            },
            "results": results,
            "targets": targets,
        },
    )


if __name__ == "__main__":
    main()
