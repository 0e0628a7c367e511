"""The layout docs/reference.md ("Layout") promises, checked on the source: imports point one way
(no cycles among the modules of bench/ and sc_fast/, counting imports inside functions and modules
named in importlib strings), nothing imports the CLI entry, and sc_fast stays a library."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "sc_fast")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (top level, functions, importlib strings)."""
    tree, found = ast.parse(path.read_text()), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from bench import report`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if re.fullmatch(r"(bench|sc_fast)(\.\w+)+", node.value):
                found.add(node.value)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    return {m: {i for i in imports_of(p) if i in files and i != m} for m, p in files.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_imports_the_cli_entry() -> None:
    importers = [m for m, deps in graph().items() if "bench.cli" in deps and m != "bench.__main__"]
    assert importers == []


def test_commands_do_not_import_each_other_backwards() -> None:
    """Shared harness pieces never import a command module."""
    edges = graph()
    for m, deps in edges.items():
        if m.startswith("bench.") and not m.startswith(("bench.commands", "bench.cli", "bench.__main__")):
            assert not [d for d in deps if d.startswith("bench.commands")], m


def test_sc_fast_is_a_library() -> None:
    for p in (REPO / "sc_fast").rglob("*.py"):
        roots = {i.split(".")[0] for i in imports_of(p)}
        assert not roots & {"bench", "rich", "pandas"}, p.name
        if p.name != "pipeline.py":
            assert "nvidia" not in roots, f"{p.name} imports DALI"


def test_no_command_imports_another() -> None:
    """A command is a thin entry over harness functions (the suite calls bench.matrix, bench.trials and
    bench.range_test, never the run, throughput or lr-find command); only the CLI entry imports them."""
    edges = graph()
    for m, deps in edges.items():
        if m.startswith("bench.commands."):
            assert [d for d in deps if d.startswith("bench.commands.")] == [], m


def test_functions_are_short_and_take_few_parameters() -> None:
    """About 40 lines and at most 7 parameters (self not counted) for every function of bench/ and sc_fast/."""
    long = []
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                a = node.args
                params = [*a.posonlyargs, *a.args, *a.kwonlyargs] + [p for p in (a.vararg, a.kwarg) if p]
                n = len([p for p in params if p.arg not in ("self", "cls")])
                lines = node.end_lineno - node.lineno + 1
                if lines > 40 or n > 7:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {lines} lines, {n} parameters")
    assert long == []
