"""Imports go one way: flows/ -> tasks/*.py (Prefect tasks) -> the plain packages under tasks/.

The plain packages (samplers, the embedding store and index, corpus I/O, reporting, evaluation, planning)
never import a task module, a flow or Prefect, so every algorithm can be tested and reused without it.
Imports inside functions count too: a lazy import is still a dependency.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLAIN = ("io", "embedding", "samplers", "evaluation", "planning", "reporting")
# tasks/errors.py is the one error vocabulary every layer raises and catches; it imports nothing.
SHARED = {"selectflow.tasks.errors"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("selectflow", *parts))


def _layer(module: str) -> int | None:
    """2: a flow, 1: a task module, 0: plain code; None: outside the project."""
    parts = module.split(".")
    if parts[0] != "selectflow" or len(parts) < 2:
        return None
    if module in SHARED:
        return 0
    if parts[1] == "flows":
        return 2
    if parts[1] == "tasks":
        if len(parts) == 2:
            return 1
        return 0 if parts[2] in PLAIN else 1
    return None


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # `from selectflow.tasks import select` imports a module, not a name
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names
                      if (ROOT / Path(*module.split(".")[1:], alias.name)).with_suffix(".py").exists()]
    return found


SOURCES = sorted(p for d in ("flows", "tasks") for p in (ROOT / d).rglob("*.py"))


def test_the_project_has_every_layer():
    layers = {_layer(_module_name(p)) for p in SOURCES}
    assert layers == {0, 1, 2}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_go_down(path):
    source = _layer(_module_name(path))
    wrong = []
    for line, module in _imports(path):
        target = _layer(module)
        if target is not None and target > source:
            wrong.append(f"line {line}: {module}")
        if source == 0 and module.split(".")[0] == "prefect":
            wrong.append(f"line {line}: {module} (plain code never imports Prefect)")
    assert not wrong, f"{path.relative_to(ROOT)} imports upward: " + "; ".join(wrong)
