"""How every ``python -m signray.*`` command ends: with its exit code and all of its output, after
every exit handler ran, but without the interpreter's teardown of torch and Ray."""

from __future__ import annotations

import os
import subprocess
import sys

from rayhelpers import ROOT

SITE = """
import atexit, os
atexit.register(lambda: open(os.environ["EXIT_MARKER"], "w").write("ran"))
"""


def test_a_finished_command_runs_the_exit_handlers_and_keeps_its_code_and_output(tmp_path):
    # Registered first (at interpreter start), so it runs last: after every handler signray's
    # imports registered, where the command ends the process.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "EXIT_MARKER": str(marker)}
    out = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "signray.data.synth", "--output-dir", out, "--num-gloss", "3",
         "--num-cat", "1", "--train-per-gloss", "2", "--val-per-gloss", "1", "--no-features"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout  # buffered output reached the pipe before the process ended
    assert marker.read_text() == "ran"
    assert len((out / "train_labels.csv").read_text().splitlines()) == 1 + 3 * 2


def test_a_refused_command_still_exits_2_the_ordinary_way(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "signray.data.synth", "--output-dir", tmp_path / "d",
         "--num-gloss", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stderr
