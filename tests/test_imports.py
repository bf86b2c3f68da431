"""Imports run one way: from the modes down to the library, with no cycle among imgcls modules.

The graph is built from the source with `ast` and counts every import, at the top of a file or
inside a function: a lazy import is still a dependency.
"""

import ast
import os
import subprocess
import sys

import pytest
from conftest import ROOT

PACKAGE = "imgcls"


def module_files() -> dict[str, str]:
    """{'imgcls.data.pipelines.tf_data': path, ...} of every module of the package."""
    modules = {}
    for directory, _, names in os.walk(os.path.join(ROOT, PACKAGE)):
        for name in names:
            if not name.endswith(".py"):
                continue
            parts = os.path.relpath(os.path.join(directory, name), ROOT)[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = os.path.join(directory, name)
    return modules


def imported_modules(module: str, path: str, modules) -> set[str]:
    """The package's modules that `module` imports anywhere in its source."""
    is_package = path.endswith("__init__.py")
    found = set()
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                parent = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:  # `from a import b`: the submodule a.b, else a itself
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {name for name in found if name in modules and name != module}


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == "open":
                return stack[stack.index(child) :] + [child]
            if child not in state:
                cycle = visit(child)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def reachable(graph, start) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for child in graph.get(todo.pop(), ()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def test_find_cycle_finds_cycles_and_only_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": {"y"}}) == ["y", "y"]


def test_graph_sees_top_level_lazy_and_submodule_imports():
    graph = import_graph()
    assert (
        "imgcls.training.state" in graph["imgcls.training.loop"]
    )  # `from imgcls import state as state_lib`
    assert (
        "imgcls.run.writers" in graph["imgcls.training.loop"]
    )  # imported inside train_and_evaluate
    assert (
        "imgcls.data.pipelines.tf_data" in graph["imgcls.data"]
    )  # lazy, in the package's __init__
    assert "imgcls.data.info" in graph["imgcls.data.batching"]  # `from imgcls.data.info import`


def test_imgcls_imports_have_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    "module",
    [
        "imgcls.inference.predict",
        "imgcls.inference.export",
        "imgcls.inference.serve",
        "imgcls.evaluation.evaluate",
    ],
)
def test_modes_that_use_a_workdir_never_import_the_training_loop(module):
    assert "imgcls.training.loop" not in reachable(import_graph(), module)


def test_the_web_server_reads_images_without_the_dataset_builders():
    """Serve and predict validate uploads with imgcls.data.images; importing them loads no dataset
    builder (only a workdir trained before dataset_info.json existed reads its dataset)."""
    assert "imgcls.data.images" in import_graph()["imgcls.inference.predict"]
    code = (
        "import sys, imgcls.inference.serve, imgcls.inference.predict; "
        "loaded = {'imgcls.data.sources.folder', 'imgcls.data.sources.registry', 'tensorflow'} & set(sys.modules); "
        "assert not loaded, loaded"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_run_library_and_the_train_step_import_without_tensorflow():
    code = (
        "import sys, imgcls.training.state, imgcls.training.loop, imgcls.evaluation.evaluate, imgcls.inference.export; "
        "assert 'tensorflow' not in sys.modules, 'TF imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
