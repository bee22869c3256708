"""The architecture, enforced: imports only run downward and nothing imports in a circle.

Layers, top to bottom (a module may import its own layer and any layer below it)::

    cli        modelops.cli.*            the console script
    flows      flows.*                   every @flow: the order of work
    tasks      tasks.*                   every @task: thin, one module per outside system
    library    modelops.* (not cli)      integrations, serving, scoring, model, data, monitoring, stack

Imports inside function bodies are only for heavy optional dependencies kept lazy on purpose
(:data:`LAZY_ALLOWED`, or a project module that imports one of them at its top, such as
``modelops.model.export`` for TensorFlow); everything else is imported at the top of the module.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("modelops", "flows", "tasks")
LAYERS = {"cli": 3, "flows": 2, "tasks": 1, "library": 0}
# Heavy dependencies a module may import inside a function so that importing the module stays cheap.
LAZY_ALLOWED = {
    "tensorflow",
    "keras",
    "mlflow",
    "docker",
    "kubernetes",
    "kubernetes_asyncio",
    "prefect_docker",
    "prefect_kubernetes",
    "matplotlib",
    "scipy",  # scipy.stats: ~0.5 s, paid before a flow run is Running when imported at a top
    "pandas",  # ~0.3 CPU-s; the log sidecar and the label loader write the scoring log without it
    "prefect",  # ~1 CPU-s; modelops.secrets needs it only for a Prefect Secret block, and the client
    # image's commands (ship, traffic) read that module without Prefect installed
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, ast.Module]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            modules[_module_name(path)] = ast.parse(path.read_text(), filename=str(path))
    return modules


SOURCES = _sources()


def layer_of(module: str) -> str:
    if module == "modelops.cli" or module.startswith("modelops.cli."):
        return "cli"
    return module.split(".", 1)[0] if module.split(".", 1)[0] in ("flows", "tasks") else "library"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    is_package = (PROJECT_ROOT / Path(*base) / "__init__.py").exists()
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _project_target(name: str) -> str | None:
    """The project module ``name`` refers to (``a.b.c`` may be a module or a name in ``a.b``)."""
    while name:
        if name in SOURCES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, tree: ast.Module) -> list[tuple[str, ast.stmt, bool]]:
    """Every (imported name, node, inside a function body) of ``module``, except TYPE_CHECKING blocks."""
    found: list[tuple[str, ast.stmt, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((alias.name, child, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(module, child)
                found.extend((f"{base}.{alias.name}", child, in_function) for alias in child.names)
            visit(child, nested)

    visit(tree, False)
    return found


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, tree in SOURCES.items():
        for name, _node, _lazy in _imports(module, tree):
            target = _project_target(name)
            if target and target != module and not module.startswith(target + "."):
                edges[module].add(target)
    return edges


def test_imports_only_run_downward() -> None:
    upward = [
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in _graph().items()
        for target in sorted(targets)
        if LAYERS[layer_of(target)] > LAYERS[layer_of(module)]
    ]
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_no_import_cycle() -> None:
    edges = _graph()
    cycles = [sorted(component) for component in _strongly_connected(edges) if len(component) > 1]
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def _heavy_modules() -> set[str]:
    """Project modules that import a heavy dependency at their top: importing them is as heavy."""
    return {
        module
        for module, tree in SOURCES.items()
        if any(
            not lazy and name.split(".", 1)[0] in LAZY_ALLOWED for name, _node, lazy in _imports(module, tree)
        )
    }


def _is_heavy(name: str, heavy_modules: set[str]) -> bool:
    return name.split(".", 1)[0] in LAZY_ALLOWED or _project_target(name) in heavy_modules


def test_no_import_inside_functions_but_heavy_optional_ones() -> None:
    heavy = _heavy_modules()
    lazy = [
        f"{module}:{node.lineno} imports {name}"
        for module, tree in SOURCES.items()
        for name, node, in_function in _imports(module, tree)
        if in_function and not _is_heavy(name, heavy)
    ]
    assert not lazy, "imports inside function bodies (hoist them, or justify a heavy one):\n" + "\n".join(
        lazy
    )


@pytest.mark.parametrize("decorator, home", [("flow", "flows"), ("task", "tasks")])
def test_every_flow_and_task_lives_in_its_folder(decorator: str, home: str) -> None:
    misplaced = []
    for module, tree in SOURCES.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                if name == decorator and module.split(".", 1)[0] != home:
                    misplaced.append(f"{module}.{node.name}")
    assert not misplaced, f"@{decorator} outside {home}/: {misplaced}"


def test_the_checks_catch_what_they_look_for() -> None:
    """The checks above can fail: an upward import, a cycle and a lazy import are each detected."""
    upward = ast.parse("from flows.train import train\n")
    assert any(
        LAYERS[layer_of(_project_target(name) or "")] > LAYERS["library"]
        for name, _n, _l in _imports("modelops.config", upward)
    )
    assert [["a", "b"]] == [sorted(c) for c in _strongly_connected({"a": {"b"}, "b": {"a"}}) if len(c) > 1]
    lazy = ast.parse("def f():\n    import json\n")
    assert [(name, inside) for name, _n, inside in _imports("modelops.config", lazy)] == [("json", True)]


def _strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm (recursive: the project has a few hundred modules, far below the limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in edges.get(node, ()):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in list(edges):
        if node not in index:
            connect(node)
    return components
