"""Local paths and object-store URIs behind one API, against a real S3 server (moto, 127.0.0.1).

The writers' behaviour on object stores (whole objects, nothing partial) is in test_io.py.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from s3server import MotoServer, free_port

from signray import io
from signray.errors import ConfigError
from signray.layout import ExperimentFiles, RunFiles
from signray.storage import RemotePath, absolute, as_location, require_local, writable_problem


def test_uris_become_remote_paths_and_everything_else_stays_local(tmp_path):
    assert as_location("s3://b/x/y") == RemotePath("s3://b/x/y")
    assert str(as_location("gs://b/x/")) == "gs://b/x"  # gs, gcs and abfs(s) too
    assert isinstance(as_location("abfss://c@acct.dfs.core.windows.net/x"), RemotePath)
    assert as_location(tmp_path / "a") == tmp_path / "a"
    assert as_location(f"file://{tmp_path}") == tmp_path
    assert absolute("rel") == Path.cwd() / "rel"
    with pytest.raises(ConfigError, match=r"s3:/b/x looks like an object-store URI that lost its"):
        as_location(Path("s3://b/x"))  # what pathlib makes of a URI
    with pytest.raises(ConfigError, match=r"unsupported URI scheme 'ftp'"):
        as_location("ftp://host/x")
    with pytest.raises(ConfigError, match="must be a local path, but got the object-store URI"):
        require_local("s3://b/x", "the MLflow store")


def test_a_uri_never_becomes_a_local_folder():
    path = RemotePath("s3://b/exp")
    with pytest.raises(TypeError, match="s3://b/exp is an object-store URI"):
        Path(path)
    with pytest.raises(TypeError):
        open(path / "x", "w")  # noqa: SIM115


def test_layout_keeps_uris(tmp_path):
    files = ExperimentFiles("s3://b/runs/exp")
    assert str(files.trials_csv) == "s3://b/runs/exp/trials.csv"
    assert str(files.done_marker("t1")) == "s3://b/runs/exp/trials_done/t1.json"
    assert files.name == "exp" and str(files.root.parent) == "s3://b/runs"
    assert str(RunFiles("s3://b/r", "SignTransformer").best) == "s3://b/r/SignTransformer_best.pt"
    assert str(RunFiles.evaluation_beside("s3://b/r/X_best.pt")) == "s3://b/r/evaluation"
    assert ExperimentFiles(tmp_path).trials_csv == tmp_path / "trials.csv"


def test_remote_paths_read_list_and_pickle_like_local_ones(s3_bucket):
    root = RemotePath(f"s3://{s3_bucket}/exp")
    assert not root.exists() and list(root.iterdir()) == []
    io.write_text(root / "a" / "one.txt", "1")
    io.write_bytes(root / "b.bin", b"\x00\x01")
    assert root.is_dir() and (root / "a").is_dir() and (root / "a/one.txt").is_file()
    assert not (root / "a").is_file() and not (root / "missing").exists()
    assert sorted(p.name for p in root.iterdir()) == ["a", "b.bin"]
    assert [p.name for p in root.glob("*.bin")] == ["b.bin"]
    assert (root / "a/one.txt").read_text() == "1" and io.read_bytes(root / "b.bin") == b"\x00\x01"
    with (root / "b.bin").open() as f:  # seekable, for np.load and torch.load
        f.seek(1)
        assert f.read() == b"\x01"
    with pytest.raises(FileNotFoundError):
        (root / "missing").read_bytes()
    io.remove_tree(root / "a")
    assert not (root / "a").exists()
    # A path pickles with the filesystem its process opened: a worker whose environment has no
    # endpoint still reaches the same server.
    io.write_text(root / "c.txt", "from the bucket")
    script = "import pickle, sys; print(pickle.load(sys.stdin.buffer).read_text())"
    child = subprocess.run(
        [sys.executable, "-c", script],
        input=pickle.dumps(root / "c.txt"),
        env={k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"},
        capture_output=True,
    )
    assert child.stdout.decode().strip() == "from the bucket", child.stderr.decode()[-2000:]


def test_preflight_accepts_a_bucket_and_explains_each_failure(s3, s3_bucket, tmp_path):
    assert writable_problem(f"s3://{s3_bucket}/exps", "--storage-path") is None
    assert s3.keys(s3_bucket) == []  # the probe object is gone
    missing = writable_problem("s3://no-such-bucket/exps", "--storage-path")
    assert missing == (
        f"`--storage-path` s3://no-such-bucket/exps: bucket 'no-such-bucket' does not exist at "
        f"{s3.endpoint}"
    )
    # Local folders: the nearest existing ancestor decides, nothing is created.
    (tmp_path / "file").write_text("x")
    assert "is a file, not a folder" in writable_problem(tmp_path / "file" / "sub", "--output-dir")
    assert writable_problem(tmp_path / "new" / "deeper", "--output-dir") is None
    assert not (tmp_path / "new").exists()


def test_preflight_names_an_unreachable_store(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    problem = writable_problem("s3://unreachable-bucket/exps", "--storage-path")
    assert problem.startswith("`--storage-path` s3://unreachable-bucket/exps: cannot reach the ")
    assert "check the URI, AWS_ENDPOINT_URL and the network" in problem


def test_preflight_says_when_credentials_are_missing(tmp_path, monkeypatch):
    server = MotoServer(tmp_path, open_actions=1)  # then checks every request's signature
    try:
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        server.create_bucket("locked")  # the one open action
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws either
        problem = writable_problem("s3://locked/exps", "--storage-path")
    finally:
        server.stop()
    assert problem.startswith("`--storage-path` s3://locked/exps: the object store refused")
    assert "no AWS credentials were found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in (
        problem
    )
