"""The package reads one way, checked on the source's syntax trees (no import runs).

Layers, lowest first: errors, spec, families, check, builder, data, runner, report, then
sweeps, grading, trackers, api and cli. Every `import` counts, deferred ones too: a deferred
import still says which way the code leans. Between packages an `if TYPE_CHECKING:` import
counts as well; between the files of one package it does not (it names a type for an
annotation and never runs, which is what it is for).
"""
from __future__ import annotations

import ast
from importlib.util import find_spec
from pathlib import Path

PACKAGE = Path(find_spec("netspec").origin).parent  # the netspec on the path (found, not imported)
ROOT = PACKAGE.parent

MAX_RUNNER_LINES = 400
MAX_RUNNER_TOTAL = 2_300  # issue 32: the runner wing was 2,931 lines at 5ae2471
MAX_FUNCTION_LINES = 60
MAX_PARAMETERS = 8  # self and cls not counted
# public API functions that mirror a CLI command's options one for one (`netspec run` is `netspec.train`)
API_MIRRORS = {"netspec.api.train"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def resolve(name: str, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative imports counted from `name`)."""
    if not node.level:
        return node.module or ""
    base = name.split(".") if is_package(name) else name.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def typing_only(tree: ast.Module) -> set[int]:
    """Lines of the bodies of `if TYPE_CHECKING:` blocks."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines.update(range(inner.lineno, inner.end_lineno + 1))
    return lines


def imports(name: str, runtime: bool = False):
    """(imported module, imported name or None, line) for each netspec import in module `name`;
    `from pkg import sub` names the submodule when there is one. `runtime`: leave out the
    imports under `if TYPE_CHECKING:`."""
    skip = typing_only(TREES[name]) if runtime else set()
    for node in ast.walk(TREES[name]):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("netspec."):
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = resolve(name, node)
            if source != "netspec" and not source.startswith("netspec."):
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                yield (sub, None, node.lineno) if sub in MODULES else (source, alias.name, node.lineno)


def package_of(name: str) -> str:
    """netspec.X for a module in netspec/X/; a top-level module is its own package."""
    return ".".join(name.split(".")[:2])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def edges(group: list[str], graph: dict[str, set[str]], where: dict) -> list[str]:
    members = set(group)
    return sorted(f"{a} -> {b} ({where[a, b]})" for a in group for b in graph.get(a, ()) if b in members)


def file_graph(runtime: bool):
    graph, where = {}, {}
    for name in MODULES:
        if name == "netspec":  # the front door imports the API, which imports everything
            continue
        for target, _, line in imports(name, runtime):
            if target in MODULES and target != name and target != "netspec":
                graph.setdefault(name, set()).add(target)
                where.setdefault((name, target), f"{MODULES[name].relative_to(ROOT)}:{line}")
    return graph, where


def test_no_import_cycle_between_files():
    graph, where = file_graph(runtime=True)
    found = [edges(group, graph, where) for group in cycles(graph)]
    assert not found, "import cycles between files:\n" + "\n\n".join("\n".join(e) for e in found)


def test_no_import_cycle_between_packages():
    graph, where = {}, {}
    for a, targets in file_graph(runtime=False)[0].items():
        for b in targets:
            pa, pb = package_of(a), package_of(b)
            if pa != pb:
                graph.setdefault(pa, set()).add(pb)
                where.setdefault((pa, pb), f"{a} imports {b}")
    found = [edges(group, graph, where) for group in cycles(graph)]
    assert not found, "import cycles between packages:\n" + "\n\n".join("\n".join(e) for e in found)


def private(name: str | None) -> bool:
    return bool(name) and name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_name_crosses_a_package():
    """A name with a leading underscore is its package's own: share it under a public name."""
    found = []
    for name, tree in TREES.items():
        home = package_of(name) if name.count(".") > 1 or is_package(name) else "netspec"
        aliases = {}  # `import netspec.x.y as m` / `from netspec.x import y`: m._private is a crossing too
        for source, imported, line in imports(name):
            where = package_of(source) if source.count(".") > 1 or is_package(source) else "netspec"
            if private(imported) and where != home:
                found.append(f"{MODULES[name].relative_to(ROOT)}:{line}: {imported} from {source}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases.update({a.asname: a.name for a in node.names if a.asname and a.name in MODULES})
            elif isinstance(node, ast.ImportFrom):
                source = resolve(name, node)
                aliases.update({a.asname or a.name: f"{source}.{a.name}" for a in node.names
                                if f"{source}.{a.name}" in MODULES})
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and private(node.attr):
                target = aliases.get(node.value.id)
                if target and package_of(target) != home:
                    found.append(f"{MODULES[name].relative_to(ROOT)}:{node.lineno}: {node.attr} of {target}")
    assert not found, "private names used across packages:\n" + "\n".join(found)


def test_runner_modules_are_short():
    long = [f"{path.relative_to(ROOT)}: {n} lines" for path in sorted((PACKAGE / "runner").rglob("*.py"))
            if (n := len(path.read_text().splitlines())) > MAX_RUNNER_LINES]
    assert not long, f"runner modules over {MAX_RUNNER_LINES} lines:\n" + "\n".join(long)
    total = sum(len(path.read_text().splitlines()) for path in (PACKAGE / "runner").rglob("*.py"))
    assert total <= MAX_RUNNER_TOTAL, f"runner/ is {total} lines, over {MAX_RUNNER_TOTAL}"


def cli_command(node: ast.FunctionDef) -> bool:
    """A Typer command: decorated with `<app>.command(...)` or `<app>.callback(...)`."""
    for d in node.decorator_list:
        call = d.func if isinstance(d, ast.Call) else d
        if isinstance(call, ast.Attribute) and call.attr in ("command", "callback"):
            return True
    return False


def test_functions_are_short_and_take_few_parameters():
    found = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if (name.startswith("netspec.cli.") and cli_command(node)) or f"{name}.{node.name}" in API_MIRRORS:
                continue
            a = node.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x]
            params = len([n for n in names if n not in ("self", "cls")])
            lines = node.end_lineno - node.lineno + 1
            where = f"{MODULES[name].relative_to(ROOT)}:{node.lineno} {node.name}"
            if lines > MAX_FUNCTION_LINES:
                found.append(f"{where}: {lines} lines")
            if params > MAX_PARAMETERS:
                found.append(f"{where}: {params} parameters")
    assert not found, (f"functions over {MAX_FUNCTION_LINES} lines or {MAX_PARAMETERS} parameters:\n"
                       + "\n".join(sorted(found)))
