"""The package layout stays a layering: no import cycle between the packages of batch_sender.

A package here is a sub-package (``store``, ``send``, ``gateway``, ...); the top-level modules
each count as one. Imports inside functions count too: a cycle hidden in a function is still one.
A ``__main__`` module is an entry point (``python -m ...``), above every layer: it may import
anything, as the console script does.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "batch_sender"


def _unit(module: str) -> str:
    """batch_sender.store.queue -> store; batch_sender.campaign -> campaign."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        if module == "batch_sender" or "migrations" in rel.parts or path.name == "__main__.py":
            continue
        here = _unit(module)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
                if node.module == "batch_sender":
                    targets = [f"batch_sender.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                if target.startswith("batch_sender.") and _unit(target) != here:
                    graph.setdefault(here, set()).add(_unit(target))
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_packages():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_every_internal_import_names_a_module_that_exists():
    """mypy runs with ignore_missing_imports (for untyped third-party packages), so an import
    of a batch_sender module that was moved or removed would pass it: this catches that."""
    import importlib.util

    missing = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("batch_sender") and importlib.util.find_spec(name) is None:
                    missing.add(f"{path.relative_to(PACKAGE.parent)}: {name}")
    assert not missing, sorted(missing)


#: Where SQL is built: the store, the migrations, and the SQL source (an operator's own query).
SQL_HOMES = ("store", "migrations", "sources")
#: What the rest may take from SQLAlchemy: URLs and errors, never a statement or a condition.
SQL_FREE = ("sqlalchemy.engine", "sqlalchemy.exc")


def _sqlalchemy_imports_outside_the_store() -> list[str]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in SQL_HOMES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.split(".")[0] == "sqlalchemy" and not name.startswith(SQL_FREE):
                    found.append(f"{rel}:{node.lineno} imports {name}")
    return found


def test_sql_is_built_in_the_store_alone():
    """The review found windows.py building the claim's window condition: a reader looking for
    the SQL a claim runs must find all of it under store/."""
    assert _sqlalchemy_imports_outside_the_store() == []


#: The regrouping's sizes: a store module holds one concern, and the CLI's run command parses
#: options and calls the library (its logic lives in the library).
STORE_MODULE_MAX_LINES = 500
RUN_COMMAND_MAX_LINES = 400


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_no_store_module_is_over_500_lines():
    too_long = {
        str(path.relative_to(PACKAGE.parent)): n
        for path in sorted((PACKAGE / "store").rglob("*.py"))
        if (n := _lines(path)) > STORE_MODULE_MAX_LINES
    }
    assert too_long == {}


def test_the_run_command_is_at_most_400_lines():
    assert _lines(PACKAGE / "cli" / "run.py") <= RUN_COMMAND_MAX_LINES
