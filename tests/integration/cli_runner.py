"""Run many signray command lines in one Python process: `python cli_runner.py CASES.json OUT.json`.

Each case runs its module exactly as ``python -m MODULE ARGV...`` would (``runpy`` with
``__name__ == "__main__"``), with its own stdout/stderr captured, so a table of bad inputs costs
one interpreter start and one torch import instead of one per case. Recorded per case: the exit
code (``"uncaught"`` when an exception escaped, as a traceback would), both streams, whether Ray
was initialised or any child process was started, and which files in the watched folders changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import runpy
import sys
import traceback
from pathlib import Path


def _snapshot(folders: list[str]) -> dict[str, str]:
    files = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def _children() -> list[str]:
    """Live child processes of this one (Linux /proc), e.g. a Ray GCS or raylet."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, _, rest = text.rpartition(")")
        fields = rest.split()
        if len(fields) > 1 and fields[0] != "Z" and int(fields[1]) == os.getpid():
            kids.append(name.partition("(")[2])
    return kids


def run_case(case: dict) -> dict:
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [case["module"], *case["argv"]]
    os.chdir(case["cwd"])
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module(case["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
        except BaseException:  # noqa: BLE001 - what the interpreter would print as a traceback
            traceback.print_exc()
            code = "uncaught"
    ray = sys.modules.get("ray")
    return {
        "code": code,
        "stdout": out.getvalue(),
        "stderr": err.getvalue(),
        "ray_started": bool(ray is not None and ray.is_initialized()),
        "children": _children(),
    }


def main() -> None:
    spec_path, results_path = map(Path, sys.argv[1:3])  # the cases replace sys.argv
    spec = json.loads(spec_path.read_text())
    before = _snapshot(spec["watch"])
    results = {}
    for case in spec["cases"]:
        result = run_case(case)
        after = _snapshot(spec["watch"])
        result["changed"] = sorted(
            path for path in before.keys() | after.keys() if before.get(path) != after.get(path)
        )
        before = after
        results[case["id"]] = result
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()
    results_path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
