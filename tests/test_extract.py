"""`signray.extract` end to end on real videos, on the shared Ray cluster: failures reported by
name and the rest extracted, resume after an interruption, settings refused when changed,
shards that pass signray's checks and train."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "video"))
from videohelpers import write_video, write_zero_frame_video  # noqa: E402

from signray.data.scan import scan_split  # noqa: E402
from signray.extract import main  # noqa: E402
from signray.train import main as train  # noqa: E402

pytestmark = pytest.mark.slow

GOOD = {"signer1/hello.mp4": (0, 0), "signer1/thanks.mkv": (1, 0), "bye.avi": (2, 1)}
BAD = {
    "corrupt.mp4": "cannot be read as a video",
    "empty.mp4": "empty file",
    "zero.avi": "no frames",
    "cut.mkv": "truncated",
    "nobody.mp4": "no person found",
}


def extract(args: list[str]) -> int:
    """The command's exit code (user errors leave through SystemExit, as in a shell)."""
    try:
        return main(args)
    except SystemExit as stop:
        return stop.code


def _videos(root: Path) -> Path:
    for rel in GOOD:
        write_video(root / rel, frames=16)
    (root / "corrupt.mp4").write_bytes(b"\x00 not a video " * 100)
    (root / "empty.mp4").write_bytes(b"")
    write_zero_frame_video(root / "zero.avi")
    whole = write_video(root.parent / "whole.mkv", frames=60).read_bytes()
    (root / "cut.mkv").write_bytes(whole[: len(whole) // 2])
    write_video(root / "nobody.mp4", frames=8, with_person=False)
    lines = ["file,gloss,cat"] + [f"{rel.replace('/', chr(92))},{g},{c}" for rel, (g, c) in
                                  GOOD.items()] + [f"{rel},0,0" for rel in BAD]  # fmt: skip
    (root.parent / "labels.csv").write_bytes("\r\n".join(lines).encode() + b"\r\n")
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A state dict shaped like torchvision's ImageNet InceptionV3 file (random values)."""
    from torchvision.models import inception_v3

    path = tmp_path_factory.mktemp("weights") / "inception_v3_google-test.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def extracted(ray_cluster, tmp_path_factory, weights):
    root = tmp_path_factory.mktemp("extract")
    src = _videos(root / "videos")
    out = root / "out"
    args = ["--src", str(src), "--labels", str(root / "labels.csv"), "--output-dir", str(out),
            "--features", "--backbone-weights", str(weights), "--chunk-frames", "8",
            "--num-shards", "2", "--num-gloss", "3", "--num-cat", "2"]  # fmt: skip
    return root, out, args, extract(args)


def test_bad_videos_are_reported_and_the_others_extracted(extracted):
    _, out, _, code = extracted
    assert code == 2  # failures make the exit code 2, at the end
    failures = (out / "failures.csv").read_text().splitlines()
    assert failures[0] == "file,reason"
    reasons = dict(line.split(",", 1) for line in failures[1:])
    assert set(reasons) == set(BAD)
    for rel, why in BAD.items():
        assert why in reasons[rel], (rel, reasons[rel])
    labels = (out / "labels.csv").read_text().splitlines()
    assert labels[0] == "file,gloss,cat,occluded"
    assert sorted(line.rsplit(",", 1)[0] for line in labels[1:]) == sorted(
        f"{rel.rsplit('.', 1)[0]},{g},{c}" for rel, (g, c) in GOOD.items()
    )
    with np.load(out / "clips" / "signer1" / "thanks.npz", allow_pickle=False) as npz:
        assert npz["X"].shape == (16, 156) and npz["mask"].shape == (16, 78)
        assert npz["X2048"].shape == (16, 2048) and npz["X2048"].dtype == np.float32
        assert npz["timestamps_ms"].tolist() == [round(i * 1000 / 30) for i in range(16)]
        meta = json.loads(str(npz["meta"]))
    assert meta["layout"] == "fsl78" and meta["source"] == "signer1/thanks.mkv"
    assert meta["size"] == [256, 192] and meta["fps"] == 30.0


def test_shards_pass_the_checks_and_train(extracted, tmp_path):
    _, out, _, _ = extracted
    for folder, key, dim in (("keypoints", "X", 156), ("features", "X2048", 2048)):
        index = scan_split(out / "shards" / folder, keys=(key,), num_gloss=3, num_cat=2)
        assert len(index) == 3 and index.feature_dim == dim and index.kind == "shards-v2"
    manifest = json.loads((out / "shards" / "keypoints" / "manifest.json").read_text())
    assert manifest["layout"] == "fsl78"
    shards = str(out / "shards" / "keypoints")
    code = train(["--model", "transformer", "--keypoints-train", shards, "--keypoints-val",
                  shards, "--num-gloss", "3", "--num-cat", "2", "--epochs", "1", "--d-model",
                  "32", "--n-heads", "4", "--output-dir", str(tmp_path / "run")])  # fmt: skip
    assert code == 0 and (tmp_path / "run" / "SignTransformer_best.pt").is_file()


def test_a_rerun_skips_finished_clips_and_refuses_other_settings(extracted, capsys):
    _, out, args, _ = extracted
    clips = sorted((out / "clips").rglob("*.npz"))
    before = {p: p.stat().st_mtime_ns for p in clips}
    capsys.readouterr()
    assert extract([*args, "--skip-bad"]) == 0
    assert "3 already extracted with these settings, 5 to extract" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in clips} == before
    assert extract([*args, "--target-fps", "25"]) == 2
    err = capsys.readouterr().err
    assert (
        "extracted with other settings (target_fps: 30.0 -> 25.0)" in err and "--overwrite" in err
    )
    assert {p: p.stat().st_mtime_ns for p in clips} == before


def test_an_interrupted_run_resumes_without_redoing_finished_clips(ray_cluster, tmp_path, capsys):
    src = tmp_path / "videos"
    for i in range(6):
        write_video(src / f"clip{i}.mp4", frames=24)
    out = tmp_path / "out"
    args = ["--src", str(src), "--gloss-id", "0", "--output-dir", str(out),
            "--keypoint-workers", "1"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "signray.extract", *args, "--address", ray_cluster],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        if line.startswith("[1/6]") or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    finished = sorted(out.glob("clips/*.npz"))
    assert 1 <= len(finished) < 6, "the run should have been stopped part way"
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    assert not list(out.glob("clips/.*.tmp"))  # no half-written clip left behind
    capsys.readouterr()
    assert extract(args) == 0
    text = capsys.readouterr().out
    assert f"{len(finished)} already extracted with these settings, {6 - len(finished)} to" in text
    assert {p: p.stat().st_mtime_ns for p in finished} == stamps
    assert len(list(out.glob("clips/*.npz"))) == 6
    assert len((out / "labels.csv").read_text().splitlines()) == 7
