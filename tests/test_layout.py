"""The layout holds: imports only go down, never in a circle, and the engine stays pure.

Every import of every module is read from its source (imports inside functions and under
TYPE_CHECKING included), so a cycle cannot hide behind a lazy or a type-only import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# From the top down: a module may import the modules of any layer below its own, and within
# its own folder (one layer) others of that folder, as long as no circle forms.
LAYERS = [
    "app",
    "cli",
    "web",
    "jobs",
    "loader",
    "loading",
    "models",
    "config",
    "report",
    "engine",
]
AT_THE_TOP = {"app", "cli", "config", "models", "loader", "report"}
OUTSIDE = {"tests", "bench", "docs", "data", "instance"}


def project_modules() -> dict[str, Path]:
    """Dotted name → file of every module of the service (tests and benchmarks aside)."""
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[0] in OUTSIDE or parts[0].startswith("."):
            continue
        name = ".".join(part for part in parts if part != "__init__")
        modules[name] = path
    return modules


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports, anywhere in it (imports are absolute)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: a relative import"
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported_modules(path, set(modules)) - {name} for name, path in modules.items()}


def layer_of(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_at_most_six_modules_at_the_top_and_the_rest_in_role_folders():
    top = {path.stem for path in ROOT.glob("*.py")}
    assert top == AT_THE_TOP
    folders = {name.split(".")[0] for name in project_modules()} - AT_THE_TOP
    assert folders == {"engine", "loading", "jobs", "web"}


def test_every_module_belongs_to_a_layer():
    assert {name.split(".")[0] for name in import_graph()} <= set(LAYERS)


def test_imports_only_go_down_the_layers():
    upward = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if layer_of(target) < layer_of(module)
    ]
    assert upward == []


def test_no_import_cycle_not_even_a_type_only_one():
    graph = import_graph()
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append([*trail[trail.index(target) :], target])
            elif target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


@pytest.mark.parametrize("module", ["report", "engine.arrays", "engine.timestamps", "engine.cells"])
def test_the_engine_imports_no_flask_sqlalchemy_or_models(module):
    # In a fresh interpreter: what importing the module pulls in, transitively.
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in ('flask', 'sqlalchemy', 'models', 'flask_sqlalchemy') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_test_modules_share_helpers_only_through_support_modules():
    borrowed = [
        f"{path.name} imports {node.module}"
        for path in sorted((ROOT / "tests").glob("test_*.py"))
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests.test_")
    ]
    assert borrowed == []
