from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from datahelpers import clip, write_csv

from signray.data import load_split, subsample_indices
from signray.errors import DataError

MakeDataset = Callable[..., tuple[Path, Path]]


def _load(folder: Path, csv: Path | None, **kw: object) -> object:
    kw.setdefault("num_gloss", 3)
    kw.setdefault("num_cat", 2)
    return load_split(folder, csv, **kw)  # type: ignore[arg-type]


def test_loads_valid_folder(make_dataset: MakeDataset) -> None:
    folder, csv = make_dataset()
    split = _load(folder, csv)
    assert len(split) == 4
    assert split.names.tolist() == ["c0", "c1", "c2", "c3"]
    assert split.gloss.tolist() == [0, 1, 2, 0] and split.cat.tolist() == [0, 1, 0, 0]
    assert split.lengths.tolist() == [5, 6, 7, 8]
    assert np.array_equal(split.clip(2), clip(7, seed=2))


def test_extra_columns_whitespace_and_both_file_spellings(tmp_path: Path) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    np.savez(folder / "a.npz", X=clip(3))
    np.savez(folder / "b.npz", X=clip(4))
    csv = tmp_path / "labels.csv"
    csv.write_text(" file , gloss ,cat, occluded \n a ,2, 1 ,0\n\n b.npz , 0,0 ,1\n")
    split = _load(folder, csv)
    assert split.names.tolist() == ["a", "b"]
    assert split.gloss.tolist() == [2, 0] and split.cat.tolist() == [1, 0]


@pytest.mark.parametrize("dim", [12, 1629])
def test_any_feature_dim_works(make_dataset: MakeDataset, dim: int) -> None:
    items = [(f"c{i}", i, 0, clip(4 + i, dim=dim, seed=i)) for i in range(3)]
    folder, csv = make_dataset(items)
    split = _load(folder, csv)
    assert split.feature_dim == dim and split.frames.dtype == np.float32


def test_keys_are_tried_in_order_and_cast_to_float32(tmp_path: Path) -> None:
    folder = tmp_path / "feats"
    folder.mkdir()
    np.savez(folder / "a.npz", X2048=np.ones((3, 8), np.float16), X=np.zeros((3, 8)))
    np.savez(folder / "b.npz", X=np.arange(16, dtype=np.int64).reshape(2, 8))
    csv = write_csv(tmp_path / "l.csv", [("a", 0, 0), ("b", 1, 1)])
    split = _load(folder, csv, keys=("X2048", "X"))
    assert split.frames.dtype == np.float32
    assert np.all(split.clip(0) == 1.0)
    assert split.clip(1)[1, 7] == 15.0


def test_max_frames_subsamples_uniformly(make_dataset: MakeDataset) -> None:
    long, short = clip(300, seed=1), clip(10, seed=2)
    folder, csv = make_dataset([("long", 0, 0, long), ("short", 1, 1, short)])
    split = _load(folder, csv, max_frames=50)
    assert split.lengths.tolist() == [50, 10]
    expected = np.linspace(0, 299, 50).round().astype(int)
    assert np.array_equal(split.clip(0), long[expected])
    assert np.array_equal(split.clip(1), short)
    assert subsample_indices(300, 50)[[0, -1]].tolist() == [0, 299]


def test_no_hard_length_limit(make_dataset: MakeDataset) -> None:
    folder, csv = make_dataset([("huge", 0, 0, clip(2000, dim=4))])
    assert _load(folder, csv).lengths.tolist() == [2000]


def test_each_file_is_read_once(make_dataset: MakeDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, csv = make_dataset()
    reads: list[str] = []
    loads: list[bool] = []
    real_read, real_load = Path.read_bytes, np.load

    def counting_read(path: Path) -> bytes:
        reads.append(path.name)
        return real_read(path)

    def counting_load(file: object, *args: object, **kwargs: object) -> object:
        loads.append(kwargs.get("allow_pickle") is False)
        return real_load(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "read_bytes", counting_read)
    monkeypatch.setattr(np, "load", counting_load)
    _load(folder, csv)
    assert sorted(reads) == ["c0.npz", "c1.npz", "c2.npz", "c3.npz"]
    assert loads == [True] * 4  # one parse per file, never with pickles allowed


def _set_csv(text: str) -> Callable[[Path, Path], None]:
    def apply(folder: Path, csv: Path) -> None:
        csv.write_text(text)

    return apply


def _save(name: str, **arrays: object) -> Callable[[Path, Path], None]:
    def apply(folder: Path, csv: Path) -> None:
        np.savez(folder / f"{name}.npz", **arrays)  # type: ignore[arg-type]

    return apply


def _write_bytes(name: str, data: bytes) -> Callable[[Path, Path], None]:
    def apply(folder: Path, csv: Path) -> None:
        (folder / f"{name}.npz").write_bytes(data)

    return apply


def _truncate(name: str) -> Callable[[Path, Path], None]:
    def apply(folder: Path, csv: Path) -> None:
        path = folder / f"{name}.npz"
        path.write_bytes(path.read_bytes()[:60])

    return apply


NAN = clip(5)
NAN[2, 3] = np.nan
INF = clip(5)
INF[4, 0] = np.inf

# (id, how to break the valid 4-clip dataset, substrings the one error must contain)
CASES = [
    ("csv-missing", lambda f, c: c.unlink(), ["labels.csv: file not found"]),
    (
        "csv-unreadable",
        lambda f, c: c.write_bytes(b"\xff\xfe\x00bad"),
        ["labels.csv", "cannot read"],
    ),
    ("csv-empty", _set_csv(""), ["labels.csv", "is empty", "file,gloss,cat"]),
    (
        "missing-columns",
        _set_csv("file,label\nc0,1\n"),
        ["missing column(s) 'gloss', 'cat'", "found 'file', 'label'"],
    ),
    (
        "non-integer-id",
        _set_csv("file,gloss,cat\nc0,0,0\nc1,abc,1\n"),
        ["labels.csv line 3: gloss 'abc' is not an integer", "0 <= gloss < 3"],
    ),
    (
        "gloss-out-of-range",
        _set_csv("file,gloss,cat\nc0,3,0\n"),
        ["labels.csv line 2: gloss 3 is out of range (expected 0 <= gloss < 3)"],
    ),
    (
        "cat-out-of-range",
        _set_csv("file,gloss,cat\nc0,0,-1\n"),
        ["labels.csv line 2: cat -1 is out of range (expected 0 <= cat < 2)"],
    ),
    (
        "duplicate-file",
        _set_csv("file,gloss,cat\nc0,0,0\nc1,1,1\nc0.npz,0,0\n"),
        ["labels.csv line 4: duplicate file 'c0' (first listed on line 2)"],
    ),
    ("empty-split", _set_csv("file,gloss,cat\n"), ["labels.csv", "no data rows"]),
    (
        "missing-npz",
        lambda f, c: (f / "c1.npz").unlink(),
        ["c1.npz: file not found (listed on", "labels.csv line 3"],
    ),
    ("missing-key", _save("c1", Y=clip(5)), ["c1.npz: has no key 'X' (keys present: 'Y')"]),
    ("wrong-rank", _save("c1", X=np.zeros(5)), ["c1.npz: key 'X' has shape (5,)", "rank 2"]),
    (
        "d-differs",
        _save("c2", X=clip(5, dim=7)),
        ["c2.npz: has D = 7", "majority", "have D = 12"],
    ),
    ("zero-frames", _save("c1", X=np.zeros((0, 12))), ["c1.npz", "T = 0 frames"]),
    ("nan", _save("c1", X=NAN), ["c1.npz", "1 NaN/Inf", "frame 2", "finite"]),
    ("inf", _save("c2", X=INF), ["c2.npz", "NaN/Inf", "frame 4"]),
    (
        "object-array",
        _save("c1", X=np.array([np.zeros(3), np.zeros(4)], dtype=object)),
        ["c1.npz", "object/pickled arrays are refused"],
    ),
    ("strings", _save("c1", X=np.array([["a", "b"]])), ["c1.npz", "non-numeric dtype <U1"]),
    ("not-a-zip", _write_bytes("c1", b"hello, not a zip"), ["c1.npz: not a valid .npz archive"]),
    ("truncated-zip", _truncate("c1"), ["c1.npz", "corrupt"]),
    ("pickle", _write_bytes("c1", pickle.dumps({"X": 1})), ["c1.npz: is a pickle", "refused"]),
    ("folder-missing", lambda f, c: f.rename(f.with_name("gone")), ["clips does not exist"]),
]


@pytest.mark.parametrize(("case", "breaker", "expected"), CASES, ids=[c[0] for c in CASES])
def test_validation_error(
    make_dataset: MakeDataset,
    case: str,
    breaker: Callable[[Path, Path], None],
    expected: list[str],
) -> None:
    folder, csv = make_dataset()
    breaker(folder, csv)
    with pytest.raises(DataError) as err:
        _load(folder, csv)
    text = str(err.value)
    for part in expected:
        assert part in text, f"{part!r} not in:\n{text}"
    assert isinstance(err.value, ValueError)


def test_all_problems_reported_at_once(make_dataset: MakeDataset) -> None:
    folder, csv = make_dataset()
    csv.write_text("file,gloss,cat\nc0,0,0\nc1,9,1\nc2,2,0\nc3,0,0\nc4,1,1\n")
    np.savez(folder / "c2.npz", X=NAN)
    np.savez(folder / "c3.npz", X=clip(5, dim=3))
    with pytest.raises(DataError) as err:
        _load(folder, csv)
    problems = err.value.problems
    assert len(problems) == 4, problems
    text = str(err.value)
    assert "found 4 problems" in text
    assert "line 3: gloss 9 is out of range" in text
    assert "c2.npz" in text and "NaN/Inf" in text
    assert "c3.npz: has D = 3" in text
    assert "c4.npz: file not found" in text


def test_labels_csv_required_for_clip_folder(make_dataset: MakeDataset) -> None:
    folder, _ = make_dataset()
    with pytest.raises(DataError, match="labels_csv is required"):
        _load(folder, None)


def test_inconsistent_gloss_category_only_warns(make_dataset: MakeDataset) -> None:
    folder, csv = make_dataset()
    csv.write_text("file,gloss,cat\nc0,0,0\nc1,1,1\nc2,0,1\nc3,0,0\n")
    with pytest.warns(UserWarning, match=r"gloss 0 has more than one category") as record:
        split = _load(folder, csv)
    assert len(split) == 4
    message = str(record[0].message)
    assert "cat 0 on line(s) 2, 5" in message and "cat 1 on line(s) 4" in message


def test_consistent_labels_do_not_warn(make_dataset: MakeDataset) -> None:
    folder, csv = make_dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _load(folder, csv)


def test_bad_arguments(make_dataset: MakeDataset) -> None:
    folder, csv = make_dataset()
    with pytest.raises(DataError) as err:
        load_split(folder, csv, num_gloss=0, num_cat=2, max_frames=0, keys=())
    text = str(err.value)
    assert "num_gloss is 0" in text and "max_frames is 0" in text and "keys is ()" in text
