"""The house rules of the package, checked on its source: stage folders, lower floors never import higher
ones, no import cycle at import time, small modules, and a wheel that holds every module."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mammo_utils"
# Floors, lowest first. A module may import its own floor and any floor below it, never one above.
FLOORS = ["ground", "dicom", "datasets", "prepare", "synthetic", "learn", "judge", "explore", "workflow", "cli"]
GROUND = {"paths", "tables", "errors", "progress", "locks", "tracking", "provenance", "metrics", "parallel"}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in GROUND or parts[1] == "__main__":
        return FLOORS.index("cli") if parts[-1] == "__main__" else 0
    return FLOORS.index(parts[1])


def imports(path: Path, top_level_only: bool = False):
    """(imported module, line) pairs of the package's own modules, relative imports resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    known = {module_name(p) for p in PACKAGE.rglob("*.py")}
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "mammo_utils":
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                yield (full if full in known else target), node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mammo_utils":
                    yield alias.name, node.lineno


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_ground_floor_is_small_and_every_other_module_lives_in_a_stage_folder():
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert top <= GROUND, f"modules directly under mammo_utils/ that belong in a stage folder: {top - GROUND}"
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(FLOORS) - {"ground"}


def test_lower_floors_never_import_higher_ones():
    wrong = [f"{module_name(p)}:{line} imports {target}" for p in SOURCES for target, line in imports(p)
             if floor(target) > floor(module_name(p))]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_at_import_time():
    graph = {module_name(p): {t for t, _ in imports(p, top_level_only=True)} for p in SOURCES}
    # a package imports its __init__ first: `import mammo_utils.a.b` runs mammo_utils.a
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if t == m or t not in graph:
                continue
            if state.get(t) == "open":
                cycle = stack[stack.index(t):] + [t]
                if not all(cycle[i].startswith(cycle[i + 1] + ".") for i in range(len(cycle) - 1)):
                    pytest.fail("import cycle: " + " -> ".join(cycle))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_module_is_over_400_lines():
    long = {module_name(p): n for p in SOURCES if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_every_module_imports_in_a_fresh_interpreter():
    """Importing each module alone (in one fresh interpreter, in sorted order, each from a clean slate of
    the package) surfaces an order-dependent import error that the static check cannot see."""
    import subprocess
    import sys

    names = [module_name(p) for p in SOURCES if module_name(p) != "mammo_utils.__main__"]
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    for m in [m for m in sys.modules if m == 'mammo_utils' or m.startswith('mammo_utils.')]:\n"
            "        del sys.modules[m]\n"
            "    importlib.import_module(name)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
