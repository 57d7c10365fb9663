"""A non-editable install (what a wheel on a cluster node is) works from any folder."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_packaged_search_spaces_equal_the_examples():
    """search_spaces/ (user-facing examples) and signray/search_spaces/ (shipped) stay equal."""
    examples = sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml"))
    packaged = sorted(p.name for p in (ROOT / "signray" / "search_spaces").glob("*.yaml"))
    assert examples == packaged and examples
    _, mismatch, errors = filecmp.cmpfiles(
        ROOT / "search_spaces", ROOT / "signray" / "search_spaces", examples, shallow=False
    )
    assert not mismatch and not errors, mismatch + errors


@pytest.mark.slow
def test_non_editable_install_runs_the_smoke_searches_from_another_folder(tmp_path):
    target, elsewhere, source = tmp_path / "site", tmp_path / "elsewhere", tmp_path / "src"
    elsewhere.mkdir()
    # A copy: a non-editable build writes build/ into the folder it builds from.
    junk = (".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "ray_results")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*junk))
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(target)}

    def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            args, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=timeout
        )

    where = run(
        sys.executable, "-c", "import signray; print(signray.__file__, signray.__version__)"
    )
    assert where.stdout.startswith(str(target / "signray")), where.stdout + where.stderr
    assert (target / "bin" / "signray-tune").is_file()  # console scripts
    assert run(str(target / "bin" / "signray-train"), "--help").returncode == 0

    packaged = target / "signray" / "search_spaces" / "tx.yaml"
    tune = [sys.executable, "-m", "signray.tune", "--storage-path", str(tmp_path / "runs")]
    with_space = run(*tune, "--model", "transformer", "--search-space", str(packaged),
                     "--smoke-test", "--name", "with-space")  # fmt: skip
    assert with_space.returncode == 0, with_space.stdout[-3000:] + with_space.stderr[-3000:]
    default = run(*tune, "--smoke-test", "--name", "default-space")
    assert default.returncode == 0, default.stdout[-3000:] + default.stderr[-3000:]
    assert (tmp_path / "runs" / "default-space" / "search_space.yaml").read_text() == (
        packaged.read_text()
    )
    assert not any(elsewhere.iterdir())  # nothing written into the working directory
