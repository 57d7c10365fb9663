"""Which videos an extraction takes, and every labels problem named before anything starts."""

from __future__ import annotations

import pytest

from signray.errors import DataError
from signray.video.sources import plan_jobs


@pytest.fixture
def videos(tmp_path):
    root = tmp_path / "videos"
    for rel in ("signer1/hello.mp4", "signer1/thanks.MOV", "bye.webm", "notes.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    return root


def test_a_windows_labels_csv_names_videos_in_subfolders(videos, tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_bytes(b"file,gloss,cat\r\nsigner1\\hello.mp4,3,1\r\nsigner1\\thanks,4,1\r\n")
    jobs, notes = plan_jobs(videos, csv, gloss_id=None, cat_id=None)
    assert [(j.name, j.relative, j.gloss, j.cat) for j in jobs] == [
        ("signer1/hello", "signer1/hello.mp4", 3, 1),
        ("signer1/thanks", "signer1/thanks.MOV", 4, 1),
    ]
    assert notes == [f"1 video(s) under --src are not in {csv} and are left out"]


def test_one_id_for_every_video(videos):
    jobs, _ = plan_jobs(videos, None, gloss_id=2, cat_id=None)
    assert sorted(j.name for j in jobs) == ["bye", "signer1/hello", "signer1/thanks"]
    assert {(j.gloss, j.cat) for j in jobs} == {(2, 2)}


def test_a_relative_src_names_videos_by_absolute_paths(videos, monkeypatch):
    """Decode workers of a joined cluster run in folders of their own."""
    monkeypatch.chdir(videos.parent)
    for src in ("videos", "videos/bye.webm"):
        jobs, _ = plan_jobs(src, None, gloss_id=0, cat_id=None)
        assert jobs and all(j.source.startswith(str(videos) + "/") for j in jobs), jobs


def test_every_problem_is_named(videos, tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("file,gloss,cat\nmissing.mp4,0,0\nbye,9,0\n")
    with pytest.raises(DataError) as err:
        plan_jobs(videos, csv, gloss_id=None, cat_id=None, num_gloss=5)
    text = str(err.value)
    assert "line 2: no video 'missing.mp4' under --src" in text
    assert "line 3: gloss 9 is out of range (expected 0 <= gloss < 5)" in text
    with pytest.raises(DataError, match="give --labels CSV"):
        plan_jobs(videos, None, gloss_id=None, cat_id=None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no videos found"):
        plan_jobs(tmp_path / "empty", None, gloss_id=0, cat_id=None)
