"""The import graph of kolray's own modules, read from the source with ``ast``.

Every ``import``/``from ... import`` counts, those inside functions included (a cycle hidden by a
function-level import is still a cycle once both functions have run), relative imports are resolved
against the importing module's package, and ``from pkg import name`` is an import of the submodule
``pkg.name`` when such a file exists. Only imports under ``if TYPE_CHECKING:`` are left out of the
cycle check: they never run.

Checked: no cycle; every module outside ``kolray.testing`` is reached from a product entry point
(the CLI and the command modules it loads by name, ``python -m kolray``, ``jobs/*.py``, the app of
``serve_config.yaml``; Alembic's scripts through ``kolray.db.migrate``); learning never reaches
serving; and ``import kolray.cli`` loads none of the heavy packages ruff keeps out of module level.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from kolray.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "kolray"
TESTING = "kolray.testing"
# Alembic runs env.py and versions/*.py from kolray.db.migrate's script_location, by path.
MIGRATIONS = "kolray.db.migrations"
MIGRATE = "kolray.db.migrate"


@dataclass(frozen=True)
class Import:
    target: str  # a kolray module
    line: int
    type_only: bool  # under ``if TYPE_CHECKING:``


@dataclass
class Graph:
    modules: dict[str, Path]
    imports: dict[str, list[Import]] = field(default_factory=dict)

    def runtime_edges(self, module: str) -> set[str]:
        return {i.target for i in self.imports.get(module, []) if not i.type_only}

    def all_edges(self, module: str) -> set[str]:
        return {i.target for i in self.imports.get(module, [])}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_nodes(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement in ``tree`` with whether it only runs for the type checker."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append((node, type_only))
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(tree, False)
    return found


def resolve(
    node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, modules: dict[str, Path]
) -> set[str]:
    """The kolray modules whose code runs (or must already have run) for this statement."""
    targets: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            targets.add(alias.name)
    else:
        if node.level:
            package = importer if is_package else importer.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{node.module}" if node.module else package
        else:
            base = node.module or ""
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            # ``from pkg import submodule`` loads the submodule; ``from pkg import name`` needs pkg's
            # code to have run up to the definition of ``name``.
            targets.add(submodule if submodule in modules else base)
    kolray_targets = {t for t in targets if within(t, PACKAGE)}
    unknown = {t for t in kolray_targets if t not in modules}
    assert not unknown, f"{importer} imports {sorted(unknown)}, which do not exist"
    # Importing a.b.c runs the __init__ of a and a.b first, unless the importer is inside them (then
    # they are already being imported).
    implied = {a for t in kolray_targets for a in ancestors(t) if not within(importer, a)}
    return (kolray_targets | implied) - {importer}


def read_imports(path: Path, importer: str, is_package: bool, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        Import(target, node.lineno, type_only)
        for node, type_only in import_nodes(tree)
        for target in sorted(resolve(node, importer, is_package, modules))
    ]


@cache
def product_graph() -> Graph:
    modules = {module_name(p, ROOT): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}
    graph = Graph(modules)
    for name, path in modules.items():
        graph.imports[name] = read_imports(path, name, path.name == "__init__.py", modules)
    return graph


def entry_points(graph: Graph) -> dict[str, set[str]]:
    """What each product entry point imports: the CLI, ``python -m kolray``, the Ray jobs and the
    application that ``serve_config.yaml`` deploys."""
    # The CLI imports each command's module when that command runs (by name, from its table).
    commands = {f"kolray.commands.{spec.module}" for spec in COMMANDS.values()}
    assert commands <= graph.modules.keys(), (
        f"the CLI names missing modules {commands - graph.modules.keys()}"
    )
    entries: dict[str, set[str]] = {
        "kolray.cli": {"kolray.cli", "kolray", *commands},
        "kolray.__main__": {"kolray.__main__", "kolray"},
    }
    for job in sorted((ROOT / "jobs").glob("*.py")):
        entries[f"jobs/{job.name}"] = {
            i.target for i in read_imports(job, f"jobs.{job.stem}", False, graph.modules)
        }
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text(encoding="utf-8"))
    for app in config["applications"]:
        module = app["import_path"].partition(":")[0]
        entries[f"serve_config.yaml:{app['name']}"] = {module, *ancestors(module)}
    return entries


def find_cycle(nodes: list[str], edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a path ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in nodes:
        if start in state:
            continue
        path = [start]
        stack = [iter(sorted(edges.get(start, ())))]
        state[start] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return [*path[path.index(child) :], child]
            elif child not in state:
                state[child] = 1
                path.append(child)
                stack.append(iter(sorted(edges.get(child, ()))))
    return None


def cyclic_groups(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def describe(path: list[str], graph: Graph) -> str:
    steps = []
    for a, b in itertools.pairwise(path):
        lines = sorted({i.line for i in graph.imports[a] if i.target == b and not i.type_only})
        steps.append(f"    {a} (line {', '.join(map(str, lines))}) -> {b}")
    return "\n".join(steps)


def test_no_import_cycle() -> None:
    graph = product_graph()
    edges = {m: graph.runtime_edges(m) for m in graph.modules}
    groups = cyclic_groups(sorted(graph.modules), edges)
    report = []
    for group in groups:
        inside = {m: edges[m] & set(group) for m in group}
        cycle = find_cycle(group, inside)
        assert cycle is not None
        report.append(f"{len(group)} modules in a cycle: {group}\n  for example:\n" + describe(cycle, graph))
    assert not groups, "import cycles:\n" + "\n".join(report)


def test_every_product_module_is_reached_from_an_entry_point() -> None:
    graph = product_graph()
    reached: set[str] = set()
    todo = [m for targets in entry_points(graph).values() for m in targets]
    while todo:
        module = todo.pop()
        if module in reached:
            continue
        reached.add(module)
        if within(module, TESTING):
            continue  # what fixtures import does not make it product code
        todo.extend(graph.all_edges(module))
        todo.extend(ancestors(module))
        if module == MIGRATE:
            assert 'with_name("migrations")' in graph.modules[MIGRATE].read_text(encoding="utf-8")
            todo.extend(m for m in graph.modules if within(m, MIGRATIONS))
    orphans = sorted(m for m in graph.modules if m not in reached and not within(m, TESTING))
    assert not orphans, (
        "product modules that no entry point reaches (imported only by tests or bench, or by "
        f"nothing): {orphans}"
    )
    leaked = sorted(m for m in reached if within(m, TESTING))
    assert not leaked, f"product code imports the test fixtures {leaked}"


def test_learning_imports_nothing_from_serving() -> None:
    graph = product_graph()
    for module in sorted(m for m in graph.modules if within(m, "kolray.learn")):
        # Depth-first over everything learning imports, recording how each module was reached.
        parent: dict[str, str | None] = {module: None}
        todo = [module]
        while todo:
            current = todo.pop()
            for target in sorted(graph.all_edges(current)):
                if target in parent:
                    continue
                parent[target] = current
                if within(target, "kolray.serve"):
                    chain = [target]
                    while (step := parent[chain[-1]]) is not None:
                        chain.append(step)
                    raise AssertionError("learning imports serving: " + " -> ".join(reversed(chain)))
                todo.append(target)


def heavy_packages() -> list[str]:
    """ruff's banned module-level imports (pyproject.toml): what the CLI must not load to start."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["ruff"]["lint"]["flake8-tidy-imports"]["banned-module-level-imports"]


def test_the_cli_starts_without_the_heavy_packages() -> None:
    heavy = heavy_packages()
    assert "torch" in heavy and "ray" in heavy
    probe = (
        "import sys, kolray.cli\n"
        f"heavy = {heavy!r}\n"
        "print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    assert loaded == "[]", f"importing kolray.cli loads {loaded}"


def test_the_graph_sees_function_level_relative_and_submodule_imports(tmp_path: Path) -> None:
    package = tmp_path / "kolray" / "pkg"
    package.mkdir(parents=True)
    (tmp_path / "kolray" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("from .a import A\n")
    (package / "a.py").write_text("A = 1\ndef f():\n    from kolray.pkg import b\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\nfrom . import a\nif TYPE_CHECKING:\n    from kolray import other\n"
    )
    (tmp_path / "kolray" / "other.py").write_text("import kolray.pkg.b\n")
    modules = {module_name(p, tmp_path): p for p in (tmp_path / "kolray").rglob("*.py")}
    graph = Graph(modules)
    for name, path in modules.items():
        graph.imports[name] = read_imports(path, name, path.name == "__init__.py", modules)

    assert graph.runtime_edges("kolray.pkg") == {"kolray.pkg.a"}
    assert graph.runtime_edges("kolray.pkg.a") == {"kolray.pkg.b"}
    assert graph.runtime_edges("kolray.pkg.b") == {"kolray.pkg.a"}
    assert graph.all_edges("kolray.pkg.b") == {"kolray.pkg.a", "kolray.other"}
    assert graph.runtime_edges("kolray.other") == {"kolray.pkg", "kolray.pkg.b"}
    edges = {m: graph.runtime_edges(m) for m in modules}
    assert find_cycle(sorted(modules), edges) == ["kolray.pkg.a", "kolray.pkg.b", "kolray.pkg.a"]
    assert cyclic_groups(sorted(modules), edges) == [["kolray.pkg.a", "kolray.pkg.b"]]
    del edges["kolray.pkg.a"]
    assert find_cycle(sorted(modules), edges) is None
    assert cyclic_groups(sorted(modules), edges) == []
