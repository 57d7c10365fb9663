"""Malformed input through the real command lines: exit 2, one clear message, nothing started.

Every case runs ``python -m signray.train|tune|evaluate|predict ...`` as that command would run
(tests/integration/cli_runner.py runs the whole table in one subprocess, so the table costs one
interpreter start; two cases also run as their own ``python -m`` processes). Each case must:

- exit with code 2, printing one message (one ``error:`` block) on stderr and nothing on stdout;
- name the file / CSV line / field at fault and say what was expected (its ``expect`` strings);
- print no traceback and start no Ray cluster: Ray is not initialised, no child process was
  started, and the private ``RAY_TMPDIR`` holds no session;
- leave existing outputs byte-identical: a folder of checkpoints from an "earlier run" that the
  train cases write into (with ``--overwrite``), and an experiment folder the tune cases share.

The loaders' own unit tests (tests/data/test_datasets.py, tests/test_search_space.py, ...) cover
more variants of each rule; this table proves the commands surface them properly.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from rayhelpers import ROOT

from signray.data.synth import write_dataset
from signray.training.checkpoint import Checkpoint, save_checkpoint

pytestmark = pytest.mark.slow

RUNNER = Path(__file__).with_name("cli_runner.py")
TRAIN, TUNE = "signray.train", "signray.tune"
TINY = [
    "--num-gloss",
    6,
    "--num-cat",
    2,
    "--epochs",
    2,
    "--d-model",
    16,
    "--n-heads",
    2,
    "--depth",
    1,
    "--ff-dim",
    32,
    "--head-hidden",
    16,
    "--batch-size",
    4,
]
GOOD_SPACE = {"space": {"lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-2}}}


class Evil:
    """Unpickling this runs a shell command, which must never happen."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@dataclass
class Ctx:
    """Paths a case's command line is built from."""

    data: Path  # this case's dataset (a private copy when the case breaks it)
    out: Path  # an earlier run's outputs (must stay byte-identical)
    store: Path  # --storage-path holding an earlier experiment "old" (must stay byte-identical)
    files: Path  # config / search-space / checkpoint files written for the cases
    name: str  # the case id, used as the experiment name of tune cases


def _data(ctx: Ctx) -> list:
    d = ctx.data
    return [
        "--keypoints-train",
        d / "keypoints_train",
        "--keypoints-val",
        d / "keypoints_val",
        "--labels-train-csv",
        d / "train_labels.csv",
        "--labels-val-csv",
        d / "val_labels.csv",
    ]


def train(*extra, overwrite: bool = True) -> Callable[[Ctx], list]:
    return lambda c: [
        "--model",
        "transformer",
        *_data(c),
        *TINY,
        "--output-dir",
        c.out,
        *(["--overwrite"] if overwrite else []),
        *[_at(c, a) for a in extra],
    ]


def tune(*extra) -> Callable[[Ctx], list]:
    return lambda c: [
        "--model",
        "transformer",
        *_data(c),
        *TINY,
        "--storage-path",
        c.store,
        "--name",
        f"new-{c.name}",
        "--search-space",
        c.files / "good.yaml",
        *[_at(c, a) for a in extra],
    ]


def _at(c: Ctx, arg):
    """'@name' is the file `name` among the case files; '@out', '@store' the shared folders."""
    if isinstance(arg, str) and arg.startswith("@"):
        head, _, rest = arg[1:].partition("/")
        base = {"out": c.out, "store": c.store, "data": c.data}.get(head, c.files / head)
        return base / rest if rest else base
    return arg


def _npz(split: str, index: int = 0, **arrays) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        clip = sorted((root / f"keypoints_{split}").glob("*.npz"))[index]
        np.savez(clip, **arrays)

    return apply


def _all_npz(split: str, **arrays) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        for clip in (root / f"keypoints_{split}").glob("*.npz"):
            np.savez(clip, **arrays)

    return apply


def _bytes(split: str, data: bytes) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        sorted((root / f"keypoints_{split}").glob("*.npz"))[0].write_bytes(data)

    return apply


def _csv(text: str, split: str = "train") -> Callable[[Path], None]:
    return lambda root: (root / f"{split}_labels.csv").write_text(text)


def _csv_edit(edit: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / "train_labels.csv"
        path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")

    return apply


def _packed(num_shards: int = 3, then: Callable[[Path], None] | None = None):
    """Both splits replaced by format-2 shards of the same clips, then `then(train shards)`."""

    def apply(root: Path) -> None:
        from signray.data.pack import pack_index
        from signray.data.scan import scan_split

        for split in ("train", "val"):
            src = root / f"keypoints_{split}"
            index = scan_split(src, root / f"{split}_labels.csv", num_gloss=None, num_cat=None)
            pack_index(index, root / "packed", num_shards)
            shutil.rmtree(src)
            (root / "packed").rename(src)
        if then is not None:
            then(root / "keypoints_train")

    return apply


def _flip_frames_byte(folder: Path) -> None:
    path = folder / "shard-00001-of-00003" / "frames.npy"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10
    path.write_bytes(bytes(data))


def _count_one_more(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["num_clips"] += 1
    (folder / "manifest.json").write_text(json.dumps(manifest))


NAN = np.full((10, 156), 0.5, dtype=np.float32)
NAN[3, 7] = np.nan
FIRST = "g000_train_000.npz"  # the first clip (sorted) of the train split


@dataclass
class Case:
    id: str
    argv: Callable[[Ctx], list]
    expect: list[str]
    module: str = TRAIN
    mutate: Callable[[Path], None] | None = None


CASES = [
    # ---- data files
    Case(
        "npz-object-array",
        train(),
        [FIRST, "object/pickled arrays are refused"],
        mutate=_npz("train", X=np.array([np.zeros(3), np.zeros(4)], dtype=object)),
    ),
    Case(
        "npz-corrupt",
        train(),
        [FIRST, "not a valid .npz archive"],
        mutate=_bytes("train", b"this is not a zip archive"),
    ),
    Case(
        "npz-pickle",
        train(),
        [FIRST, "is a pickle", "refused"],
        mutate=_bytes("train", pickle.dumps({"X": [1, 2]})),
    ),
    Case(
        "npz-nan-frames",
        train(),
        [FIRST, "NaN/Inf", "frame 3", "finite"],
        mutate=_npz("train", X=NAN),
    ),
    Case("npz-wrong-key", train("--kp-key", "Y"), [FIRST, "has no key 'Y' (keys present: 'X')"]),
    Case(
        "npz-d-mismatch-in-split",
        train(),
        ["has D = 7", "have D = 156"],
        mutate=_npz("train", 2, X=np.zeros((9, 7), dtype=np.float32)),
    ),
    Case(
        "npz-d-mismatch-train-val",
        train(),
        ["train clips have D=156", "val clips have D=12"],
        mutate=_all_npz("val", X=np.zeros((9, 12), dtype=np.float32)),
    ),
    Case(
        "npz-zero-frames",
        train(),
        [FIRST, "T = 0 frames"],
        mutate=_npz("train", X=np.zeros((0, 156), dtype=np.float32)),
    ),
    Case(
        "npz-listed-but-missing",
        train(),
        [FIRST, "file not found", "train_labels.csv line 2"],
        mutate=lambda root: (root / "keypoints_train" / FIRST).unlink(),
    ),
    Case(
        "data-folder-missing",
        train("--keypoints-train", "@nope"),
        ["`--keypoints-train`", "nope is not a folder"],
    ),
    # ---- label CSVs
    Case(
        "csv-missing",
        train("--labels-val-csv", "@missing.csv"),
        ["`--labels-val-csv`", "missing.csv does not exist"],
    ),
    Case(
        "csv-duplicate-rows",
        train(),
        ["train_labels.csv line 14: duplicate file", "first listed on line 2"],
        mutate=_csv_edit(lambda rows: [*rows, rows[1]]),
    ),
    Case(
        "csv-missing-columns",
        train(),
        ["train_labels.csv", "missing column(s) 'gloss'"],
        mutate=_csv_edit(lambda rows: [",".join(r.split(",")[::2]) for r in rows]),
    ),
    Case(
        "csv-non-integer-id",
        train(),
        ["train_labels.csv line 3: gloss 'two' is not an integer", "0 <= gloss < 6"],
        mutate=_csv_edit(
            lambda rows: [rows[0], rows[1], rows[2].replace(",0,", ",two,", 1), *rows[3:]]
        ),
    ),
    Case("csv-empty", train(), ["train_labels.csv", "is empty", "file,gloss,cat"], mutate=_csv("")),
    Case(
        "csv-binary",
        train(),
        ["train_labels.csv", "cannot read"],
        mutate=lambda root: (root / "train_labels.csv").write_bytes(b"\xff\xfe\x00\x81bad"),
    ),
    Case(
        "num-gloss-below-labels",
        train("--num-gloss", 3),
        ["train_labels.csv line 8: gloss 3 is out of range (expected 0 <= gloss < 3)"],
    ),
    # ---- config YAML (--config)
    Case(
        "config-python-tag",
        train("--config", "@tag.yaml"),
        ["tag.yaml line 1", "!!python/object/apply:os.system is not allowed"],
    ),
    Case(
        "config-unknown-field",
        train("--config", "@unknown.yaml"),
        ["unknown.yaml", "unknown field 'learning_rate' for model 'transformer'"],
    ),
    Case(
        "config-not-a-mapping",
        train("--config", "@list.yaml"),
        ["list.yaml must hold a mapping of field: value, but got list"],
    ),
    Case(
        "config-wrong-type",
        train("--config", "@type.yaml"),
        ["type.yaml", "`lr` must be a number, but got 'fast'"],
    ),
    Case(
        "config-bad-syntax",
        train("--config", "@syntax.yaml"),
        ["syntax.yaml line 3, column 1: not valid YAML", "found '<stream end>'"],
    ),
    Case(
        "config-missing",
        train("--config", "@nope.yaml"),
        ["config file", "nope.yaml does not exist"],
    ),
    # ---- flags
    Case(
        "unknown-model",
        train("--model", "resnet"),
        ["unknown model 'resnet'; known models: iv3_gru, transformer"],
    ),
    Case(
        "warmup-with-plateau",
        train("--warmup-epochs", 2, "--scheduler", "plateau"),
        [
            "`warmup_epochs` applies to the cosine scheduler only",
            "warmup_epochs=2 with scheduler='plateau'",
        ],
    ),
    Case("negative-epochs", train("--epochs", -3), ["`epochs` must be >= 1, but got epochs=-3"]),
    Case("batch-size-0", train("--batch-size", 0), ["`batch_size` must be >= 1"]),
    Case(
        "heads-not-dividing-d-model",
        train("--d-model", 30, "--n-heads", 4),
        ["`n_heads` must divide `d_model`, but got n_heads=4, d_model=30"],
    ),
    Case(
        "batch-not-split-by-workers",
        train("--ray-workers", 2, "--batch-size", 7),
        [
            "`batch_size` is the global batch and must be divisible by `ray_workers`",
            "batch_size=7, ray_workers=2",
        ],
    ),
    Case(
        "epochs-not-a-number",
        train("--epochs", "ten"),
        ["argument --epochs: `epochs` must be an integer, but got 'ten'"],
    ),
    Case(
        "output-dir-is-a-file",
        train("--output-dir", "@a-file"),
        ["`output_dir`", "a-file exists and is not a folder"],
    ),
    Case(
        "output-dir-unwritable",
        train("--output-dir", "@a-file/sub"),
        ["`output_dir`", "a-file/sub is not writable"],
    ),
    Case(
        "checkpoints-already-there",
        train(overwrite=False),
        ["SignTransformer_best.pt is already there from an earlier run", "--overwrite"],
    ),
    Case("resume-missing", train("--resume", "@nope.pt"), ["checkpoint", "nope.pt does not exist"]),
    Case(
        "resume-other-model",
        train("--resume", "@gru.pt"),
        [
            "`--resume`",
            "gru.pt is a checkpoint of model 'iv3_gru', but the run is for 'transformer'",
        ],
    ),
    Case(
        "resume-other-architecture",
        train("--resume", "@wide.pt"),
        ["wide.pt was trained with d_model=32, but the config has d_model=16"],
    ),
    # ---- search-space YAML (tune)
    Case(
        "space-bad-distribution",
        tune("--search-space", "@s-dist.yaml"),
        ["s-dist.yaml", "`lr`: unknown distribution 'normal'", "use one of loguniform"],
        module=TUNE,
    ),
    Case(
        "space-low-not-below-high",
        tune("--search-space", "@s-bounds.yaml"),
        ["s-bounds.yaml", "`lr`: `low < high` must hold, but got low=0.01, high=0.001"],
        module=TUNE,
    ),
    Case(
        "space-unknown-field",
        tune("--search-space", "@s-field.yaml"),
        ["s-field.yaml", "`learning_rate`: unknown field for model 'transformer'"],
        module=TUNE,
    ),
    Case(
        "space-heads-not-dividing",
        tune("--search-space", "@s-heads.yaml"),
        ["s-heads.yaml", "`n_heads`: value 3 is invalid: `n_heads` must divide `d_model`"],
        module=TUNE,
    ),
    Case(
        "space-range-with-odd-widths",
        tune("--search-space", "@s-range.yaml"),
        ["s-range.yaml", "`d_model`: value 17 is invalid"],
        module=TUNE,
    ),
    Case(
        "space-python-tag",
        tune("--search-space", "@s-tag.yaml"),
        ["s-tag.yaml line 3", "!!python/object/apply:os.system is not allowed"],
        module=TUNE,
    ),
    Case(
        "space-missing",
        tune("--search-space", "@nope.yaml"),
        ["search space file", "nope.yaml does not exist"],
        module=TUNE,
    ),
    Case(
        "space-batches-not-split",
        tune("--search-space", "@s-batch.yaml", "--workers-per-trial", 2),
        ["must be divisible by `ray_workers`", "batch_size=17, ray_workers=2"],
        module=TUNE,
    ),
    # ---- tune flags and experiment folders
    Case(
        "tune-num-samples-0",
        tune("--num-samples", 0),
        ["`--num-samples` must be >= 1"],
        module=TUNE,
    ),
    Case(
        "tune-negative-max-failures",
        tune("--max-failures", -1),
        ["`--max-failures` must be >= 0, but got -1"],
        module=TUNE,
    ),
    Case(
        "tune-grace-beyond-epochs",
        tune("--grace-period", 5, "--budget-unit", "epochs"),
        ["`--grace-period` must be <= --epochs", "grace_period=5, epochs=2"],
        module=TUNE,
    ),
    Case(
        "tune-grace-beyond-samples",
        tune("--grace-period", 1000),
        ["`--grace-period` must be <= the budget of one trial (24 samples, --epochs 2)"],
        module=TUNE,
    ),
    Case(
        "tune-grace-shorter-than-warmup",
        tune(
            "--budget-unit",
            "epochs",
            "--grace-period",
            1,
            "--epochs",
            4,
            "--scheduler",
            "cosine",
            "--warmup-epochs",
            2,
        ),  # fmt: skip
        ["`--grace-period` 1 epochs is shorter than the lr warm-up", "--grace-period >= 2"],
        module=TUNE,
    ),
    Case("tune-unknown-searcher", tune("--searcher", "bayes"), ["--searcher"], module=TUNE),
    Case("tune-bad-budget-unit", tune("--budget-unit", "hours"), ["--budget-unit"], module=TUNE),
    Case(
        "tune-unknown-objective",
        tune("--objectives", "val_gloss_acc,speed"),
        ["`--objectives` must be val_gloss_acc, optionally followed by latency"],
        module=TUNE,
    ),
    Case(
        "tune-objectives-with-asha",
        tune("--objectives", "val_gloss_acc,latency", "--trial-scheduler", "asha"),
        ["several `--objectives` need `--trial-scheduler fifo`"],
        module=TUNE,
    ),
    Case(
        "tune-objectives-with-cmaes",
        tune("--objectives", "val_gloss_acc,params", "--searcher", "cmaes"),
        ["`--searcher cmaes` optimises one objective"],
        module=TUNE,
    ),
    Case(
        "tune-optuna-storage-not-a-url",
        tune("--optuna-storage", "optuna.db"),
        ["`--optuna-storage` must be a database URL"],
        module=TUNE,
    ),
    Case(
        "tune-optuna-storage-unknown-database",
        tune("--optuna-storage", "nosuchdb://host/db"),
        ["`--optuna-storage` nosuchdb://host/db cannot be opened"],
        module=TUNE,
    ),
    Case(
        "tune-warm-start-missing",
        tune("--warm-start", "@nothing-here"),
        ["`--warm-start`", "neither a signray.tune experiment folder"],
        module=TUNE,
    ),
    Case(
        "tune-warm-start-without-study",
        tune("--warm-start", "sqlite:////no-such-folder/optuna.db"),
        ["`--warm-start` sqlite:////no-such-folder/optuna.db: no study database"],
        module=TUNE,
    ),
    Case(
        "tune-warm-start-top-k-0",
        tune("--warm-start-top-k", 0),
        ["`--warm-start-top-k` must be >= 1, but got 0"],
        module=TUNE,
    ),
    Case(
        "tune-perturbation-interval-0",
        tune("--trial-scheduler", "pbt", "--perturbation-interval", 0),
        ["`--perturbation-interval` must be >= 1, but got 0"],
        module=TUNE,
    ),
    Case(
        "tune-pbt-with-warm-start",
        tune("--trial-scheduler", "pbt", "--warm-start", "@store/old"),
        ["`--warm-start` tells an Optuna study, which `--trial-scheduler pbt` does not use"],
        module=TUNE,
    ),
    Case(
        "tune-storage-unwritable",
        tune("--storage-path", "@a-file/results"),
        ["`--storage-path`", "a-file/results cannot be created", "is a file, not a folder"],
        module=TUNE,
    ),
    Case(
        "tune-experiment-exists",
        tune("--name", "old"),
        ["old already exists: add --resume to continue it"],
        module=TUNE,
    ),
    Case(
        "tune-resume-unknown",
        lambda c: ["--resume", "--name", "ghost", "--storage-path", c.store],
        ["ghost is not a signray.tune experiment that can be resumed"],
        module=TUNE,
    ),
    Case("tune-bad-data", tune(), [FIRST, "NaN/Inf"], module=TUNE, mutate=_npz("train", X=NAN)),
    Case(
        "tune-no-cluster-at-address",
        tune("--address", "127.0.0.1:1"),  # nothing listens on port 1
        ["no Ray cluster answers at 127.0.0.1:1 (--address)"],
        module=TUNE,
    ),
    Case(
        "tune-storage-uri-lost-its-slashes",
        tune("--storage-path", "s3:/bucket/exps"),  # what pathlib makes of s3://bucket/exps
        ["s3:/bucket/exps looks like an object-store URI that lost its '//'"],
        module=TUNE,
    ),
    # ---- packed shards (format 2) and data modes
    Case(
        "shards-checksum",
        tune(),
        ["[train]", "shard-00001-of-00003/frames.npy", "sha256 differs from the manifest"],
        module=TUNE,
        mutate=_packed(then=_flip_frames_byte),
    ),
    Case(
        "shards-ids-out-of-range",
        train("--num-gloss", 3),
        ["shard-0000", "gloss id(s) out of range", "(expected 0 <= gloss < 3)"],
        mutate=_packed(),
    ),
    Case(
        "shards-manifest-count",
        train(),
        ["manifest.json: shards hold 12 clips in all but num_clips is 13"],
        mutate=_packed(then=_count_one_more),
    ),
    Case(
        "stream-needs-shards",
        tune("--data-mode", "stream"),
        ["`--data-mode stream` reads format-2 shard folders", "keypoints_train is a per-clip"],
        module=TUNE,
    ),
    Case(
        "stream-too-few-shards",
        tune("--data-mode", "stream", "--workers-per-trial", 2),
        ["has 1 shard(s) but training streams it on 2 ranks", "--num-shards >= 2"],
        module=TUNE,
        mutate=_packed(num_shards=1),
    ),
    Case(
        "data-mode-unknown",
        train("--data-mode", "disk"),
        ["argument --data-mode: invalid choice: 'disk'"],
    ),
    # ---- crafted pickle checkpoints (must be refused, never run)
    Case(
        "pickle-checkpoint-train-resume",
        train("--resume", "@evil.pt"),
        ["evil.pt cannot be loaded safely (weights_only=True)", "nothing in the file was run"],
    ),
    Case(
        "pickle-checkpoint-evaluate",
        lambda c: [
            "--checkpoint",
            c.files / "evil.pt",
            "--keypoints-val",
            c.data / "keypoints_val",
            "--labels-val-csv",
            c.data / "val_labels.csv",
            "--out",
            c.files / "eval-out",
        ],
        ["evil.pt cannot be loaded safely (weights_only=True)"],
        module="signray.evaluate",
    ),
    Case(
        "pickle-checkpoint-predict",
        lambda c: [
            "--checkpoint",
            c.files / "evil.pt",
            c.data / "keypoints_val" / "g000_val_000.npz",
        ],
        ["evil.pt cannot be loaded safely (weights_only=True)"],
        module="signray.predict",
    ),
]


def _write_files(files: Path, marker: Path) -> None:
    files.mkdir()
    (files / "a-file").write_text("not a folder")
    (files / "good.yaml").write_text(yaml.safe_dump(GOOD_SPACE))
    (files / "tag.yaml").write_text(f"lr: !!python/object/apply:os.system ['touch {marker}']\n")
    (files / "unknown.yaml").write_text("learning_rate: 0.01\n")
    (files / "list.yaml").write_text("- lr\n- 0.01\n")
    (files / "type.yaml").write_text("lr: fast\n")
    (files / "syntax.yaml").write_text("lr: 0.01\nepochs: [3,\n")
    spaces = {
        "s-dist": {"space": {"lr": {"distribution": "normal", "low": 0.0, "high": 1.0}}},
        "s-bounds": {"space": {"lr": {"distribution": "uniform", "low": 0.01, "high": 0.001}}},
        "s-field": {"space": {"learning_rate": 0.01}},
        "s-heads": {"space": {"n_heads": {"distribution": "choice", "values": [2, 3]}}},
        "s-range": {"space": {"d_model": {"distribution": "randint", "low": 16, "high": 64}}},
        "s-batch": {"space": {"batch_size": {"distribution": "randint", "low": 16, "high": 64}}},
    }
    for name, space in spaces.items():
        (files / f"{name}.yaml").write_text(yaml.safe_dump(space))
    (files / "s-tag.yaml").write_text(
        f"space:\n  depth: 1\n  lr: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    torch.save({"format": 1, "model": Evil(marker)}, files / "evil.pt")
    weights = {"w": torch.zeros(2)}
    save_checkpoint(
        Checkpoint("iv3_gru", "IV3GRU", 156, {"model": "iv3_gru"}, weights, 1, 0.0, 1),
        files / "gru.pt",
    )
    save_checkpoint(
        Checkpoint(
            "transformer",
            "SignTransformer",
            156,
            {"model": "transformer", "d_model": 32, "n_heads": 2},
            weights,
            1,
            0.0,
            1,
        ),
        files / "wide.pt",
    )


def _checkpoint(w: torch.Tensor, epoch: int) -> Checkpoint:
    return Checkpoint("transformer", "SignTransformer", 156, {}, {"w": w}, epoch, 0.0, epoch)


def _earlier_outputs(out: Path, store: Path) -> None:
    out.mkdir()
    for name in ("SignTransformer_best.pt", "SignTransformer_last.pt"):
        save_checkpoint(_checkpoint(torch.arange(4.0), epoch=3), out / name)
    (out / "config.yaml").write_text("model: transformer\nepochs: 3\n")
    (out / "SignTransformer_log.csv").write_text("epoch,train_loss\n1,2.0\n")
    old = store / "old"
    old.mkdir(parents=True)
    (old / "trials.csv").write_text("trial_id,status\nabc,TERMINATED\n")
    save_checkpoint(_checkpoint(torch.ones(2), epoch=2), old / "SignTransformer_best.pt")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    data = write_dataset(
        root / "data",
        num_gloss=6,
        num_cat=2,
        train_per_gloss=2,
        val_per_gloss=1,
        seed=0,
        difficulty="easy",
        min_len=8,
        max_len=16,
        features=False,
    )
    marker = root / "PWNED"
    _write_files(root / "files", marker)
    out, store = root / "earlier_run", root / "store"
    _earlier_outputs(out, store)
    ray_tmp = root / "ray_tmp"
    ray_tmp.mkdir()
    cases = []
    for case in CASES:
        cwd = root / "cwd" / case.id
        cwd.mkdir(parents=True)
        case_data = data
        if case.mutate is not None:
            case_data = cwd / "data"
            shutil.copytree(data, case_data)
            case.mutate(case_data)
        ctx = Ctx(data=case_data, out=out, store=store, files=root / "files", name=case.id)
        cases.append(
            {
                "id": case.id,
                "module": case.module,
                "cwd": str(cwd),
                "argv": [str(a) for a in case.argv(ctx)],
            }
        )
    spec = root / "cases.json"
    spec.write_text(json.dumps({"cases": cases, "watch": [str(out), str(store)]}))
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    # Two cases also run as their own `python -m` processes, alongside the batch.
    alone = {c["id"]: c for c in cases if c["id"] in ("unknown-model", "space-python-tag")}
    procs = {
        cid: subprocess.Popen(
            [sys.executable, "-m", c["module"], *c["argv"]],
            cwd=c["cwd"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cid, c in alone.items()
    }
    batch = subprocess.run(
        [sys.executable, str(RUNNER), str(spec), str(root / "results.json")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert batch.returncode == 0, batch.stderr[-3000:]
    results = json.loads((root / "results.json").read_text())
    for cid, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        results[f"{cid} (own process)"] = {
            "code": proc.returncode,
            "stdout": stdout,
            "stderr": stderr,
            "ray_started": False,
            "children": [],
            "changed": [],
        }
    return {"results": results, "marker": marker, "ray_tmp": ray_tmp}


def test_the_table_is_large_enough():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_clear_message(outcomes, case):
    for key in (case.id, f"{case.id} (own process)"):
        if key not in outcomes["results"]:
            continue
        r = outcomes["results"][key]
        err = r["stderr"]
        assert r["code"] == 2, f"{key}: exit {r['code']}\nstdout: {r['stdout'][-2000:]}\n{err}"
        assert "Traceback" not in err, err
        lines = [line for line in err.splitlines() if line.strip()]
        if "usage:" in err:  # argparse's own message for a malformed flag
            assert lines[-1].startswith(f"python -m {case.module}: error: "), err
        else:
            assert err.startswith("error: "), err
            assert sum(line.startswith("error:") for line in lines) == 1, err
        for part in case.expect:
            assert part in err, f"{key}: {part!r} not in:\n{err}"
        assert r["stdout"] == "", r["stdout"]  # nothing ran: no banner, no Ray dashboard line
        assert not r["ray_started"] and not r["children"], r
        assert r["changed"] == [], f"{key} changed existing outputs: {r['changed']}"


def test_nothing_was_executed_and_no_ray_session_was_created(outcomes):
    assert not outcomes["marker"].exists(), "a YAML tag or pickle ran a command"
    assert list(outcomes["ray_tmp"].iterdir()) == [], "a Ray session was started"
