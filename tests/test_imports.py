"""Imports run one way: the package layering of ../shared/DESIGN.md, and no cycle anywhere.

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
# The layers, highest first: a module imports its own package and lower layers only, never a
# higher layer nor another package of its own layer. The root (the lazy Python API) is above all.
LAYERS = (
    ("imgcls.cli",),
    ("imgcls.sweeps", "imgcls.inference", "imgcls.training"),
    ("imgcls.evaluation", "imgcls.transfer"),
    ("imgcls.run",),
    ("imgcls.config",),
    ("imgcls.data", "imgcls.models"),
    ("imgcls.parallel", "imgcls.losses", "imgcls.values"),
)
LAYER = {package: depth for depth, packages in enumerate(LAYERS) for package in packages}


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


def assert_runs(code: str) -> None:
    """Runs `code` in a fresh interpreter (nothing of imgcls imported yet); it must succeed."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def package_of(module: str) -> str:
    """'imgcls.training' of 'imgcls.training.loop'; the root for 'imgcls' itself."""
    return ".".join(module.split(".")[:2])


def layering_violations(graph) -> list[str]:
    """'a imports b' for every import against LAYERS (or of a package not in LAYERS)."""
    found = []
    for module, imported in sorted(graph.items()):
        here = package_of(module)
        if here == PACKAGE:
            continue
        for other in sorted(imported):
            there = package_of(other)
            if there == here:
                continue
            if here not in LAYER or there not in LAYER:
                found.append(f"{module} imports {other}: a package not in LAYERS")
            elif LAYER[there] <= LAYER[here]:
                found.append(f"{module} ({here}) imports {other} ({there}): not a lower layer")
    return found


def test_find_cycle_finds_cycles_and_only_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": {"y"}}) == ["y", "y"]


def test_layering_check_finds_upward_and_sideways_imports():
    graph = {
        "imgcls.data.folder": {"imgcls.training.loop", "imgcls.data.images", "imgcls.values"},
        "imgcls.inference.predict": {"imgcls.training.ema", "imgcls.evaluation.tta"},
        "imgcls.run.restore": {"imgcls.models.contract", "imgcls.config.schema"},
    }
    assert layering_violations(graph) == [
        "imgcls.data.folder (imgcls.data) imports imgcls.training.loop (imgcls.training): "
        "not a lower layer",
        "imgcls.inference.predict (imgcls.inference) imports imgcls.training.ema "
        "(imgcls.training): not a lower layer",
    ]


def test_graph_sees_top_level_lazy_and_submodule_imports():
    graph = import_graph()
    assert "imgcls.training.state" in graph["imgcls.training.loop"]  # `import state as state_lib`
    assert "imgcls.run.writers" in graph["imgcls.training.loop"]  # inside train_and_evaluate
    assert "imgcls.data.pipelines.tf_data" in graph["imgcls.data"]  # lazy, in the __init__
    assert "imgcls.data.info" in graph["imgcls.data.batching"]  # `from imgcls.data.info import`


def test_imgcls_imports_have_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_packages_import_one_way_by_layer():
    """The layering of DESIGN.md: e.g. data and models know nothing of training, inference
    nothing of the training loop, and every subpackage is in LAYERS."""
    graph = import_graph()
    assert {package_of(m) for m in graph} - {PACKAGE} == set(LAYER)
    assert layering_violations(graph) == []


@pytest.mark.parametrize("package", ["imgcls.inference", "imgcls.evaluation", "imgcls.sweeps"])
def test_modes_that_use_a_workdir_never_import_the_training_loop(package):
    graph = import_graph()
    for module in (m for m in graph if package_of(m) == package):
        assert not any(package_of(m) == "imgcls.training" for m in reachable(graph, module))


def test_every_subpackage_says_what_lives_there_and_what_it_may_import():
    for module, path in module_files().items():
        if path.endswith("__init__.py") and module.count(".") == 1:
            with open(path, encoding="utf-8") as f:
                docstring = ast.get_docstring(ast.parse(f.read())) or ""
            assert len(docstring.split()) >= 30, module
            assert "import" in docstring.lower(), module


def test_the_python_api_resolves_every_name_lazily():
    code = (
        "import sys, imgcls; "
        "assert 'imgcls.training.loop' not in sys.modules and 'jax' not in sys.modules; "
        "[getattr(imgcls, name) for name in imgcls.__all__]; "
        "assert imgcls.hyper.grid(a=[1, 2]) == [{'a': 1}, {'a': 2}]; "
        "from imgcls import hyper, train_and_evaluate"
    )
    assert_runs(code)


def test_the_web_server_reads_images_without_the_dataset_builders():
    """Serve and predict validate uploads with imgcls.data.images; importing them loads no
    dataset builder (only a workdir trained before dataset_info.json existed reads its dataset)."""
    assert "imgcls.data.images" in import_graph()["imgcls.inference.predict"]
    code = (
        "import sys, imgcls.inference.serve, imgcls.inference.predict; "
        "builders = {'imgcls.data.sources.folder', 'imgcls.data.sources.registry', 'tensorflow'}; "
        "loaded = builders & set(sys.modules); "
        "assert not loaded, loaded"
    )
    assert_runs(code)


def test_the_training_loop_and_the_modes_of_a_workdir_import_without_tensorflow():
    code = (
        "import sys, imgcls.training.loop, imgcls.evaluation.evaluate, imgcls.inference.export; "
        "assert 'tensorflow' not in sys.modules, 'TF imported'"
    )
    assert_runs(code)


def test_sweep_results_read_without_jax():
    """A sweep folder copied to any machine: its results table needs no JAX or TensorFlow."""
    code = (
        "import sys, imgcls.sweeps.results; "
        "assert not {'jax', 'tensorflow'} & set(sys.modules), 'JAX or TF imported'"
    )
    assert_runs(code)
