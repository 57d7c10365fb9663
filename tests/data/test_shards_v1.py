"""Format 1 shards (one .npz per shard), as signray wrote them before format 2: they still load,
and every problem in them is still found."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from datahelpers import clip, write_csv, write_v1_shards

from signray.data import PackedSplit, load_split
from signray.data.shard_writer import shard_boundaries
from signray.errors import DataError

MakeDataset = Callable[..., tuple[Path, Path]]
LENGTHS = [7, 3, 12, 5, 9, 4, 8, 6, 10, 2]


def _split(dim: int = 5) -> PackedSplit:
    clips = [clip(n, dim=dim, seed=i) for i, n in enumerate(LENGTHS)]
    n = len(clips)
    return PackedSplit.from_clips(
        clips, [i % 4 for i in range(n)], [i % 4 % 2 for i in range(n)], [f"s{i}" for i in range(n)]
    )


def _assert_equal(a: PackedSplit, b: PackedSplit) -> None:
    for field in ("frames", "offsets", "gloss", "cat", "names"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field


def _load(folder: Path, **kw: object) -> PackedSplit:
    return load_split(folder, num_gloss=4, num_cat=2, **kw)  # type: ignore[arg-type]


def pack_split(split: PackedSplit, out: Path, num_shards: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return write_v1_shards(split, out, num_shards)


def test_round_trip(tmp_path: Path) -> None:
    split = _split()
    out = pack_split(split, tmp_path / "packed", 3)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_shards"] == 3 and manifest["num_clips"] == 10
    assert manifest["num_frames"] == sum(LENGTHS) and manifest["feature_dim"] == 5
    assert manifest["key"] == "X" and manifest["format_version"] == 1
    assert [s["file"] for s in manifest["shards"]] == [
        f"shard-0000{i}-of-00003.npz" for i in range(3)
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json"] + [s["file"] for s in manifest["shards"]]
    )  # no temp files left behind
    with np.load(out / "shard-00000-of-00003.npz", allow_pickle=False) as shard:
        assert shard["names"].dtype.kind == "U"
        assert sorted(shard.files) == ["cat", "frames", "gloss", "names", "offsets"]
    _assert_equal(_load(out), split)


def _take(split: PackedSplit, idx: list[int]) -> PackedSplit:
    """The clips `idx` of `split`, in that order, as a new packed split."""
    return PackedSplit.from_clips(
        [split.clip(i) for i in idx], split.gloss[idx], split.cat[idx], split.names[idx]
    )


def test_load_subset_of_shards(tmp_path: Path) -> None:
    split = _split()
    out = pack_split(split, tmp_path / "packed", 4)
    cuts = shard_boundaries(split.lengths, 4)
    part = _load(out, shard_indices=[1, 3])
    expected = _take(split, list(range(cuts[1], cuts[2])) + list(range(cuts[3], cuts[4])))
    _assert_equal(part, expected)


def test_labels_csv_must_agree_with_shards(tmp_path: Path) -> None:
    split = _split()
    out = pack_split(split, tmp_path / "packed", 2)
    rows = [(n, g, c) for n, g, c in zip(split.names, split.gloss, split.cat, strict=True)]
    good = write_csv(tmp_path / "good.csv", rows)
    _assert_equal(_load(out, labels_csv=good), split)
    rows[3] = ("s3", 0, 0)
    bad = write_csv(tmp_path / "bad.csv", [*rows[:-1], ("extra", 1, 1)])
    with pytest.raises(DataError) as err:
        _load(out, labels_csv=bad)
    text = str(err.value)
    assert "bad.csv line 5: 's3' has gloss 0, cat 0 but the shards" in text
    assert "'s9' is in the shards but not in" in text
    assert "bad.csv line 11: 'extra' is not in the shards" in text


def test_max_frames_applies_to_shards(tmp_path: Path) -> None:
    out = pack_split(_split(), tmp_path / "packed", 2)
    assert _load(out, max_frames=4).lengths.max() == 4


def _corrupt_manifest(field: str, value: object) -> Callable[[Path], None]:
    def apply(out: Path) -> None:
        manifest = json.loads((out / "manifest.json").read_text())
        manifest[field] = value
        (out / "manifest.json").write_text(json.dumps(manifest))

    return apply


def _corrupt_entry(field: str, value: object) -> Callable[[Path], None]:
    def apply(out: Path) -> None:
        manifest = json.loads((out / "manifest.json").read_text())
        old = manifest["shards"][1][field]
        manifest["shards"][1][field] = value
        manifest[field] += value - old  # keep the totals consistent: only the entry is wrong
        (out / "manifest.json").write_text(json.dumps(manifest))

    return apply


def _replace_shard(out: Path) -> None:
    other = _take(_split(), [0, 1])
    pack_split(other, out.parent / "other", 2)
    (out / "shard-00001-of-00003.npz").write_bytes(
        (out.parent / "other" / "shard-00001-of-00002.npz").read_bytes()
    )


MANIFEST_CASES = [
    (
        "missing-shard",
        lambda o: (o / "shard-00001-of-00003.npz").unlink(),
        ["shard-00001", "missing"],
    ),
    ("bad-json", lambda o: (o / "manifest.json").write_text("{"), ["manifest.json", "cannot read"]),
    ("version", _corrupt_manifest("format_version", 99), ["format_version is 99"]),
    ("num-clips", _corrupt_manifest("num_clips", 11), ["shards hold 10 clips", "num_clips is 11"]),
    ("entry-count", _corrupt_entry("num_clips", 4), ["shard-00001", "manifest says 4 clips"]),
    ("shard-swapped", _replace_shard, ["shard-00001-of-00003.npz: holds 1 clips"]),
    ("dim", _corrupt_manifest("feature_dim", 6), ["D = 5", "feature_dim = 6"]),
    ("key", _corrupt_manifest("key", "X2048"), ["packed from key 'X2048'"]),
]


@pytest.mark.parametrize(
    ("case", "breaker", "expected"), MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES]
)
def test_manifest_corruption_detected(
    tmp_path: Path, case: str, breaker: Callable[[Path], None], expected: list[str]
) -> None:
    out = pack_split(_split(), tmp_path / "packed", 3)
    breaker(out)
    with pytest.raises(DataError) as err:
        _load(out)
    for part in expected:
        assert part in str(err.value), f"{part!r} not in:\n{err.value}"


def test_shard_ids_checked_against_num_gloss(tmp_path: Path) -> None:
    out = pack_split(_split(), tmp_path / "packed", 2)
    with pytest.raises(DataError) as err:
        load_split(out, num_gloss=3, num_cat=2)
    assert "gloss id(s) out of range" in str(err.value) and "0 <= gloss < 3" in str(err.value)


def test_bad_shard_indices(tmp_path: Path) -> None:
    out = pack_split(_split(), tmp_path / "packed", 3)
    with pytest.raises(DataError, match=r"shard_indices \[3\]"):
        _load(out, shard_indices=[3])
