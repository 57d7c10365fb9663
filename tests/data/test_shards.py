"""Format-2 shards checked against their manifest: every broken rule is found before anything is
used, named by the shard (and file) at fault, all at once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from datahelpers import clip

from signray.data import PackedSplit, load_split, pack_split
from signray.data.scan import scan_split
from signray.errors import DataError

LENGTHS = [7, 3, 12, 5, 9, 4, 8, 6, 10, 2]
SHARD1 = "shard-00001-of-00003"


def _split() -> PackedSplit:
    clips = [clip(n, dim=5, seed=i).astype(np.float16) for i, n in enumerate(LENGTHS)]
    n = len(clips)
    return PackedSplit.from_clips(
        clips, [i % 4 for i in range(n)], [i % 4 % 2 for i in range(n)], [f"s{i}" for i in range(n)]
    )


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _save_manifest(out: Path, manifest: dict) -> None:
    (out / "manifest.json").write_text(json.dumps(manifest))


def _edit_manifest(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(out: Path) -> None:
        manifest = _manifest(out)
        edit(manifest)
        _save_manifest(out, manifest)

    return apply


def _replace_array(file: str, array: np.ndarray, *, fix_checksum: bool = True):
    """Shard 1's `file` replaced by `array`; with `fix_checksum`, the manifest says so too, so
    that only the rule under test is broken."""

    def apply(out: Path) -> None:
        path = out / SHARD1 / file
        np.save(path, array)
        if fix_checksum:
            manifest = _manifest(out)
            data = path.read_bytes()
            manifest["shards"][1]["files"][file] = {
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            _save_manifest(out, manifest)

    return apply


def _frames(out: Path) -> np.ndarray:
    return np.load(out / SHARD1 / "frames.npy")


def _flip_byte(out: Path) -> None:
    path = out / SHARD1 / "frames.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))


def _with(out_fn: Callable[[np.ndarray], np.ndarray], file: str = "frames.npy"):
    def apply(out: Path) -> None:
        _replace_array(file, out_fn(np.load(out / SHARD1 / file)))(out)

    return apply


def _nan(frames: np.ndarray) -> np.ndarray:
    frames = frames.copy()
    frames[2, 1] = np.nan
    return frames


def _truncate(out: Path) -> None:
    path = out / SHARD1 / "frames.npy"
    path.write_bytes(path.read_bytes()[:-10])


def _move_clip_count(manifest: dict) -> None:
    """Shard 1 says one clip fewer, shard 2 one more: the totals still agree."""
    manifest["shards"][1]["num_clips"] -= 1
    manifest["shards"][2]["num_clips"] += 1


CASES = [
    ("shard-folder-missing", lambda o: __import__("shutil").rmtree(o / SHARD1),
     [f"{SHARD1}/frames.npy", "missing"]),
    ("file-missing", lambda o: (o / SHARD1 / "names.npy").unlink(),
     [f"{SHARD1}/names.npy", "missing"]),
    ("checksum", _flip_byte, [f"{SHARD1}/frames.npy", "sha256 differs from the manifest"]),
    ("truncated", _truncate, [f"{SHARD1}/frames.npy", "bytes but the manifest says"]),
    ("not-npy", lambda o: (o / SHARD1 / "offsets.npy").write_bytes(b"x" * 160),
     [f"{SHARD1}/offsets.npy", "not a valid .npy file"]),
    ("mixed-dtype", _with(lambda f: f.astype(np.float32)),
     [SHARD1, "frames.npy is float32", "manifest says float16", "one D and one dtype"]),
    ("mixed-d", _with(lambda f: np.zeros((len(f), 6), np.float16)),
     [SHARD1, "(", "6)", "one D and one dtype"]),
    ("nan-frames", _with(_nan), [f"{SHARD1}/frames.npy", "NaN/Inf"]),
    ("clip-count", _edit_manifest(_move_clip_count),
     [SHARD1, "holds 3 clips", "manifest says 2 clips"]),
    ("total-count", _edit_manifest(lambda m: m.update(num_clips=11)),
     ["shards hold 10 clips in all but num_clips is 11"]),
    ("gloss-range", _edit_manifest(lambda m: m["shards"][1].update(gloss_range=[0, 1])),
     [SHARD1, "gloss ids span", "manifest says [0, 1]"]),
    ("gloss-out-of-range", _with(lambda g: g + 10, "gloss.npy"),
     [SHARD1, "gloss id(s) out of range", "clip 's3' has gloss 13", "0 <= gloss < 4"]),
    ("offsets", _with(lambda o: o[::-1].copy(), "offsets.npy"),
     [SHARD1, "offsets are inconsistent"]),
    ("names-object", _with(lambda n: np.arange(len(n)), "names.npy"), [SHARD1, "names has dtype"]),
    ("version", _edit_manifest(lambda m: m.update(format_version=99)), ["format_version is 99"]),
    ("dtype", _edit_manifest(lambda m: m.update(dtype="int8")), ["dtype is 'int8'"]),
    ("norm", _edit_manifest(lambda m: m["norm"].update(mean=[0.0])),
     ["norm mean is not a list of 5 finite numbers"]),
    ("sha-missing", _edit_manifest(lambda m: m["shards"][1]["files"]["cat.npy"].pop("sha256")),
     ["shards[1].files['cat.npy']", "sha256 hex digest"]),
    ("escaping-name", _edit_manifest(lambda m: m["shards"][1].update(name="../elsewhere")),
     ["shards[1].name is '../elsewhere'"]),
    ("key", _edit_manifest(lambda m: m.update(key="X2048")), ["packed from key 'X2048'"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "breaker", "expected"), CASES, ids=[c[0] for c in CASES])
def test_broken_shards_are_named(tmp_path: Path, case, breaker, expected) -> None:
    out = pack_split(_split(), tmp_path / "packed", 3)
    breaker(out)
    for check in (scan_split, load_split):
        with pytest.raises(DataError) as err:
            check(out, num_gloss=4, num_cat=2)
        for part in expected:
            assert part in str(err.value), f"{part!r} not in:\n{err.value}"


def test_every_broken_shard_is_reported_at_once(tmp_path: Path) -> None:
    out = pack_split(_split(), tmp_path / "packed", 3)
    _flip_byte(out)
    (out / "shard-00002-of-00003" / "gloss.npy").unlink()
    with pytest.raises(DataError) as err:
        scan_split(out, num_gloss=4, num_cat=2)
    assert len(err.value.problems) == 2
    assert SHARD1 in err.value.problems[0] and "shard-00002" in err.value.problems[1]


def test_scan_keeps_no_frames_and_gives_the_manifest_statistics(tmp_path: Path) -> None:
    split = _split()
    out = pack_split(split, tmp_path / "packed", 3)
    index = scan_split(out, num_gloss=4, num_cat=2)
    assert index.kind == "shards-v2" and index.streamable and index.dtype == np.float16
    assert index.lengths.tolist() == LENGTHS and index.names.tolist() == split.names.tolist()
    assert index.nbytes == sum(LENGTHS) * 5 * 2
    assert np.array_equal(index.norm.mean, np.asarray(_manifest(out)["norm"]["mean"]))
    # Clips cut by max_frames change the statistics: they are computed over the cut clips.
    capped = scan_split(out, num_gloss=4, num_cat=2, max_frames=4)
    loaded = load_split(out, num_gloss=4, num_cat=2, max_frames=4)
    frames = np.concatenate([loaded.clip(i) for i in range(len(loaded))]).astype(np.float64)
    assert capped.lengths.max() == 4 and capped.norm.count == len(frames)
    assert np.allclose(capped.norm.mean, frames.mean(0)) and np.allclose(
        capped.norm.std, frames.std(0)
    )
