"""Packing into format-2 shards: the layout, the manifest, round trips from every source format,
bounded memory while packing, and the command's errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from datahelpers import clip, write_csv, write_v1_shards

from signray.data import PackedSplit, load_split, pack_split
from signray.data.manifest import SHARD_FILES
from signray.data.pack import main
from signray.data.packed import PackedParts
from signray.data.shard_writer import shard_boundaries
from signray.data.stats import FrameMoments
from signray.data.synth import write_dataset
from signray.errors import DataError

MakeDataset = Callable[..., tuple[Path, Path]]
LENGTHS = [7, 3, 12, 5, 9, 4, 8, 6, 10, 2]
ROOT = Path(__file__).resolve().parents[2]


def _split(dim: int = 5, dtype=np.float32) -> PackedSplit:
    clips = [clip(n, dim=dim, seed=i).astype(dtype) for i, n in enumerate(LENGTHS)]
    n = len(clips)
    return PackedSplit.from_clips(
        clips, [i % 4 for i in range(n)], [i % 4 % 2 for i in range(n)], [f"s{i}" for i in range(n)]
    )


def _clips(split) -> list[np.ndarray]:
    return [np.asarray(split.clip(i)) for i in range(len(split))]


def _assert_same_clips(a, b) -> None:
    assert len(a) == len(b)
    for field in ("gloss", "cat", "names", "lengths"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    for x, y in zip(_clips(a), _clips(b), strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)


def _load(folder: Path, **kw: object):
    return load_split(folder, num_gloss=4, num_cat=2, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_round_trip_keeps_dtype_and_maps_frames(tmp_path: Path, dtype) -> None:
    split = _split(dtype=dtype)
    assert split.frames.dtype == dtype  # packing clips of one dtype keeps it
    out = pack_split(split, tmp_path / "packed", 3, num_gloss=4, num_cat=2)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["dtype"] == np.dtype(dtype).name
    assert manifest["num_shards"] == 3 and manifest["num_clips"] == 10
    assert manifest["num_frames"] == sum(LENGTHS) and manifest["feature_dim"] == 5
    assert manifest["max_length"] == 12 and manifest["num_gloss"] == 4
    names = [f"shard-0000{i}-of-00003" for i in range(3)]
    assert [s["name"] for s in manifest["shards"]] == names
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.json", *names])
    for entry in manifest["shards"]:
        assert sorted(p.name for p in (out / entry["name"]).iterdir()) == sorted(SHARD_FILES)
        assert len(entry["files"]["frames.npy"]["sha256"]) == 64
    loaded = _load(out)
    assert isinstance(loaded, PackedParts) and loaded.dtype == dtype
    frames = loaded.parts[0].frames
    assert not frames.flags.writeable and not frames.flags.owndata  # a read-only file mapping
    _assert_same_clips(loaded, split)


def test_manifest_holds_counts_ranges_and_statistics(tmp_path: Path) -> None:
    split = _split()
    out = pack_split(split, tmp_path / "packed", 2)
    manifest = json.loads((out / "manifest.json").read_text())
    cuts = shard_boundaries(split.lengths, 2)
    for k, entry in enumerate(manifest["shards"]):
        rows = slice(int(cuts[k]), int(cuts[k + 1]))
        assert entry["num_clips"] == rows.stop - rows.start
        assert entry["num_frames"] == int(split.lengths[rows].sum())
        assert entry["max_length"] == int(split.lengths[rows].max())
        assert entry["gloss_range"] == [int(split.gloss[rows].min()), int(split.gloss[rows].max())]
    stats = FrameMoments.of(split.frames)
    assert manifest["norm"]["count"] == split.num_frames
    assert np.allclose(manifest["norm"]["mean"], stats.mean, rtol=1e-12)
    assert np.allclose(manifest["norm"]["std"], stats.std, rtol=1e-10)
    assert np.allclose(manifest["norm"]["mean"], split.frames.astype(np.float64).mean(0))


def test_shards_are_contiguous_and_balanced() -> None:
    lengths = _split().lengths
    for k in (1, 2, 3, 5, 10):
        cuts = shard_boundaries(lengths, k)
        assert cuts[0] == 0 and cuts[-1] == 10 and np.all(np.diff(cuts) >= 1)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        frames = np.diff(offsets[cuts])
        assert frames.max() - frames.min() <= 2 * max(LENGTHS), (k, frames)
    assert np.diff(shard_boundaries(np.ones(100, dtype=np.int64), 4)).tolist() == [25] * 4
    with pytest.raises(DataError, match="num_shards is 11"):
        shard_boundaries(lengths, 11)


def test_refuses_non_empty_out_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "packed"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(DataError, match=r"not empty.*--overwrite"):
        pack_split(_split(), out, 2)
    pack_split(_split(), out, 2, overwrite=True)
    pack_split(_split(), out, 3, overwrite=True)  # the 2-shard folders are removed
    assert len(list(out.glob("shard-*"))) == 3 and (out / "keep.txt").exists()
    assert len(_load(out)) == 10


def test_max_frames_cuts_clips_as_they_are_read(tmp_path: Path) -> None:
    split = _split()
    out = pack_split(split, tmp_path / "packed", 2)
    capped = _load(out, max_frames=4)
    assert capped.lengths.max() == 4 and len(capped.clip(2)) == 4
    assert np.array_equal(capped.clip(2), split.clip(2)[[0, 4, 7, 11]])


def test_cli_packs_a_clip_folder_in_its_dtype(tmp_path: Path, capsys) -> None:
    write_dataset(tmp_path / "ds", num_gloss=4, num_cat=2, train_per_gloss=3, val_per_gloss=1,
                  min_len=5, max_len=9, feature_dim=16)  # fmt: skip
    out = tmp_path / "packed"
    ds = tmp_path / "ds"
    argv = ["--src", str(ds / "features_train"), "--labels", str(ds / "train_labels.csv"),
            "--output-dir", str(out), "--num-shards", "2", "--key", "X2048",
            "--num-gloss", "4", "--num-cat", "2"]  # fmt: skip
    assert main(argv) == 0
    assert "peak memory" in capsys.readouterr().out
    packed = load_split(out, keys=("X2048",), num_gloss=4, num_cat=2)
    clips = load_split(tmp_path / "ds" / "features_train", tmp_path / "ds" / "train_labels.csv",
                       keys=("X2048",), num_gloss=4, num_cat=2)  # fmt: skip
    assert packed.dtype == clips.dtype == np.float16  # fp16 features stay fp16
    _assert_same_clips(packed, clips)
    # The same clips written straight to shards by the generator: the same bytes.
    write_dataset(tmp_path / "direct", num_gloss=4, num_cat=2, train_per_gloss=3,
                  val_per_gloss=1, min_len=5, max_len=9, feature_dim=16, num_shards=2)  # fmt: skip
    a = json.loads((out / "manifest.json").read_text())
    b = json.loads((tmp_path / "direct" / "features_train" / "manifest.json").read_text())
    assert a["shards"] == b["shards"] and a["norm"] == b["norm"]


def test_cli_repacks_format_1_and_format_2(tmp_path: Path) -> None:
    split = _split()
    v1 = tmp_path / "v1"
    v1.mkdir()
    write_v1_shards(split, v1, 3)
    assert main(["--src", str(v1), "--output-dir", str(tmp_path / "a"), "--num-shards", "2"]) == 0
    assert main(["--src", str(tmp_path / "a"), "--output-dir", str(tmp_path / "b"),
                 "--num-shards", "4", "--max-frames", "6"]) == 0  # fmt: skip
    _assert_same_clips(_load(tmp_path / "a"), split)
    again = _load(tmp_path / "b")
    assert again.lengths.tolist() == np.minimum(split.lengths, 6).tolist()
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["max_frames"] == 6


def test_cli_error_exit_code_and_message(make_dataset: MakeDataset, tmp_path: Path) -> None:
    folder, csv = make_dataset()
    (folder / "c1.npz").unlink()
    out = tmp_path / "packed"
    cmd = [sys.executable, "-m", "signray.data.pack", "--src", str(folder), "--labels", str(csv)]
    cmd += ["--out", str(out), "--num-shards", "2", "--num-gloss", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "c1.npz: file not found" in proc.stderr
    assert "gloss 2 is out of range (expected 0 <= gloss < 2)" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--num-shards", "0"], "--num-shards is 0"),
        (["--num-shards", "9"], "num_shards is 9 (expected 1 <= num_shards <= 4"),
        (["--output-dir", "SRC"], "is --src itself"),
    ],
)
def test_cli_bad_arguments(make_dataset: MakeDataset, tmp_path: Path, capsys, extra, expected):
    folder, csv = make_dataset()
    argv = ["--src", str(folder), "--labels", str(csv), "--output-dir", str(tmp_path / "out")]
    argv = [*argv, *[str(folder) if a == "SRC" else a for a in extra]]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert expected in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["c0.npz", "c1.npz", "c2.npz", "c3.npz"]


def test_packing_streams_in_bounded_memory(tmp_path: Path) -> None:
    """About 200 MB of fp16 features pack with a peak RSS far below their size."""
    write_dataset(tmp_path / "ds", keypoints=False, num_gloss=20, num_cat=2, train_per_gloss=30,
                  val_per_gloss=1, min_len=60, max_len=100, num_shards=12)  # fmt: skip
    src = tmp_path / "ds" / "features_train"
    size = sum(f.stat().st_size for f in src.rglob("frames.npy"))
    assert size > 180e6
    script = (
        "import sys; from signray.data.pack import main, peak_rss_bytes; "
        "code = main(sys.argv[1:]); print('PEAK', peak_rss_bytes()); sys.exit(code)"
    )
    argv = ["--src", str(src), "--output-dir", str(tmp_path / "out"), "--num-shards", "8",
            "--key", "X2048"]  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak = int(proc.stdout.split("PEAK")[-1])
    assert peak < size / 2, (peak, size)  # the imports take ~60 MB, one source shard 16 MB
    assert len(_load_features(tmp_path / "out")) == 600


def _load_features(folder: Path):
    return load_split(folder, keys=("X2048",), num_gloss=20, num_cat=2)


def test_labels_csv_optional_for_shards_but_checked(tmp_path: Path) -> None:
    split = _split()
    out = pack_split(split, tmp_path / "packed", 2)
    rows = [(n, g, c) for n, g, c in zip(split.names, split.gloss, split.cat, strict=True)]
    rows[0] = ("s0", 3, 1)
    bad = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError, match="line 2: 's0' has gloss 3, cat 1 but the shards"):
        _load(out, labels_csv=bad)
