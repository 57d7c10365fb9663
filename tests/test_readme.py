"""Every command in README.md runs: code blocks are parsed and executed at a tiny scale."""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Appended to each README command (argparse keeps the last value), so the same command lines run
# in seconds on 6 glosses instead of FSL-105.
TINY = {
    "signray.data.synth": "--num-gloss 6 --num-cat 2 --train-per-gloss 3 --val-per-gloss 1 "
    "--max-len 24",
    "signray.data.pack": "--num-gloss 6 --num-cat 2 --num-shards 2",
    "signray.train": "--num-gloss 6 --num-cat 2 --epochs 1 --d-model 32 --n-heads 4 --depth 1 "
    "--ff-dim 64",
    "signray.tune": "--num-gloss 6 --num-cat 2 --epochs 1 --num-samples 2 --max-concurrent 2",
}


def readme_commands() -> list[list[str]]:
    """`python -m signray...` command lines from the README's bash blocks, continuations joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if "pip install" in line or "-m signray" not in line:
                continue
            words = shlex.split(line)
            commands.append(words[words.index("-m") + 1 :])
    return commands


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    assert "signray.tune" in blocks[0] and "--smoke-test" in blocks[0]
    assert "pytest" in blocks[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert blocks[1].strip() in ci  # CI runs exactly the README's test command


def test_every_readme_command_parses():
    import importlib

    commands = readme_commands()
    modules = {c[0] for c in commands}
    assert {
        "signray.train",
        "signray.tune",
        "signray.evaluate",
        "signray.predict",
        "signray.report",
        "signray.data.synth",
        "signray.data.pack",
        "signray.extract",
    } <= modules
    for module, *args in commands:
        importlib.import_module(module).build_parser().parse_args(args)


def write_sign_videos(root: Path) -> None:
    """The README's videos/: two glosses, two videos each for train and one for val (tiny real
    videos of a photographed person, tests/video/videohelpers.py)."""
    sys.path.insert(0, str(ROOT / "tests" / "video"))
    from videohelpers import write_video

    for split, per_gloss in (("train", 2), ("val", 1)):
        lines = ["file,gloss,cat"]
        for gloss in range(2):
            for i in range(per_gloss):
                write_video(root / split / f"g{gloss}" / f"{i}.mp4", frames=10 + 2 * gloss)
                lines.append(f"g{gloss}/{i}.mp4,{gloss},{gloss}")
        (root / f"{split}_labels.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_readme_walkthrough_runs(tmp_path, ray_cluster, monkeypatch, capsys):
    """Each command as written, run by its ``main`` in this process (the flags, folders and outputs
    of ``python -m``, without starting Python and importing torch a dozen times); its searches and
    extractions run on the session's cluster, this process's Ray. The ``python -m`` entry points
    and a search starting its own cluster are checked by test_packaging.py and test_security.py.
    """
    import importlib

    import torch

    shutil.copytree(ROOT / "search_spaces", tmp_path / "search_spaces")
    write_sign_videos(tmp_path / "videos")
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()  # a training run sets its own
    for module, *args in readme_commands():
        if "--smoke-test" in args:
            continue  # the main job, on a cluster of its own: tests/test_packaging.py
        if "--address" in args:
            continue  # needs a multi-node cluster: tests/integration/test_multinode.py
        if any(a.startswith("s3://") for a in args):
            continue  # needs a cluster or an S3 server: tests/integration/test_cluster_jobs.py
            # (ray job submit) and test_object_storage.py
        extra = shlex.split(TINY.get(module, ""))
        try:
            code = importlib.import_module(module).main([*args, *extra])
        finally:
            torch.set_num_threads(threads)
        out = capsys.readouterr()
        assert code == 0, (module, args, out.out[-2000:], out.err[-2000:])
    assert (tmp_path / "runs" / "tx" / "eval" / "metrics.json").is_file()
    assert (tmp_path / "ray_results" / "fsl-tx" / "report" / "index.html").is_file()
    assert (tmp_path / "ray_results" / "signs-tx" / "trials.csv").is_file()
