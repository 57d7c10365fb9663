"""The layout's promises, checked on the source: an acyclic import graph, Ray only in tuning/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "signray"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, line) of every import in the file, at any depth (functions included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
    return found


def _graph() -> dict[str, set[str]]:
    """signray module -> the signray modules importing it runs (parent packages included)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, _ in _imports(path):
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            # Importing a.b.c runs a/__init__ and a/b/__init__ first.
            parts = target.split(".") if target.startswith("signray") else []
            for i in range(1, len(parts) + 1):
                dep = ".".join(parts[:i])
                if dep != name and not name.startswith(dep + "."):
                    graph[name].add(dep)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_is_found():
    assert {"signray.training.loop", "signray.tuning.trial", "signray.config.train"} <= set(MODULES)


def test_import_graph_has_no_cycles():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_the_tuning_package_imports_ray(name):
    if name == "signray.tuning" or name.startswith("signray.tuning."):
        return
    ray = [line for target, line in _imports(MODULES[name]) if target.split(".")[0] == "ray"]
    assert not ray, f"{MODULES[name]} imports Ray on line(s) {ray}; only signray/tuning/ may"


def test_data_models_and_training_do_not_import_later_stages():
    """Data flows one way: the loop never reaches into analysis, tuning or the commands."""
    later = ("signray.analysis", "signray.tuning", "signray.train", "signray.tune")
    graph = _graph()
    for name in graph:
        if name.startswith(("signray.data", "signray.models", "signray.training")):
            bad = sorted(
                d for d in graph[name] if any(d == p or d.startswith(p + ".") for p in later)
            )
            assert not bad, f"{name} imports {bad}"


def test_trial_and_train_worker_processes_import_no_plotting_or_optuna():
    """Every trial actor and Train worker is a fresh process that imports these modules before it
    trains: matplotlib (evaluation's figures) and Optuna (search spaces) belong to the driver,
    and importing them there cost each worker ~0.5 s of its start."""
    import subprocess
    import sys

    probe = (
        "import sys, signray.tuning.trial, signray.tuning.launcher; "
        "print(sorted(m for m in ('matplotlib', 'optuna', 'signray.analysis') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
