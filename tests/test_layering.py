"""Imports point one way: config at the bottom, commands at the top (issue 13).

The import graph is read from the source (ast), counting what runs: imports inside functions count, imports under
`if TYPE_CHECKING:` do not (they never execute). Two checks: no module takes part in an import cycle, and each
package imports only the packages listed for it below. A new edge is a design decision: add it here, with the layer
order in mind, or move the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# package → the lmtune packages (top-level modules count as packages) it may import. Lower layers first.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "config": {"errors"},
    "registry": {"errors"},
    "io": {"errors"},
    "device": {"errors"},
    "report": set(),
    "results": {"errors", "io", "config"},
    "data": {"config", "errors", "io"},
    "models": {"device", "config", "errors", "io", "data"},
    "forms": {"errors", "models"},
    "evaluate": {"device", "config", "errors", "io", "data", "models", "forms"},
    "tasks": {"device", "config", "errors", "io", "registry", "data", "models", "evaluate", "forms"},
    "methods": {"config", "errors", "io", "registry", "models", "tasks", "forms"},
    "runconfig": {"device", "config", "errors", "registry", "methods", "tasks"},
    "train": {"device", "config", "errors", "io", "registry", "results", "data", "models", "evaluate", "forms", "tasks",
              "methods", "runconfig", "report"},
    "baselines": {"device", "config", "errors", "io", "registry", "results", "data", "models", "evaluate", "tasks",
                  "methods", "runconfig", "train"},
    "pretrain": {"device", "config", "errors", "io", "registry", "data", "models", "evaluate", "tasks", "methods",
                 "runconfig", "train"},
    "compare": {"config", "errors", "io", "results", "report", "data", "tasks", "methods", "runconfig", "train",
                "baselines", "html_report"},
    "tune": {"config", "errors", "io", "registry", "results", "report", "data", "tasks", "methods", "runconfig",
             "train", "html_report"},
    "serve": {"device", "config", "errors", "io", "registry", "forms", "data", "models", "evaluate", "tasks", "methods",
              "runconfig", "train"},
    "html_report": {"errors", "io"},
    "quickstart": {"config", "errors", "io", "runconfig", "compare", "train"},
    "cli": {"config", "errors", "io", "runconfig", "methods", "tasks", "train", "evaluate", "baselines", "compare",
            "tune", "serve", "pretrain", "quickstart", "report", "models", "data"},
    "__main__": {"cli"},
    "__init__": set(),  # the root package holds only __version__: anything may read it
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "lmtune").rglob("*.py"):
        parts = path.with_suffix("").relative_to(SRC).parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _executed(tree: ast.AST):
    """Every node that can run: skips `if TYPE_CHECKING:` blocks."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue
        yield child
        yield from _executed(child)


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in _executed(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import submodule` depends on the submodule; `from pkg import name` on the package
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.append(sub if sub in modules else node.module)
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_module_is_part_of_an_import_cycle():
    assert _cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_packages_import_only_the_layers_listed_for_them():
    wrong = []
    for module, targets in sorted(import_graph().items()):
        source = _package(module)
        assert source in ALLOWED, f"new package {source!r}: list what it may import in ALLOWED"
        for target in sorted(targets):
            package = _package(target)
            if package not in (source, "__init__") and package not in ALLOWED[source]:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_config_imports_nothing_above_errors():
    graph = import_graph()
    config = {m: t for m, t in graph.items() if _package(m) == "config"}
    assert config and all(_package(t) in ("config", "errors") for targets in config.values() for t in targets)


def _named_literals(path: Path, names: set[str]) -> list[str]:
    """String constants in `path` that are exactly one of `names` (docstrings and comments are not constants of
    interest: only code that branches on or builds from a name counts)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
            and id(node) not in docstrings]


def test_no_code_outside_the_strategies_names_a_strategy_or_a_peft_type():
    """Shared code asks a strategy's form or its registry, never which strategy (or PEFT type) it holds: the
    strategies (`methods/`) and the served PEFT readers (`serve/kinds/`) are the only places that name them."""
    from peft import PeftType

    from lmtune.methods import STRATEGIES

    names = set(STRATEGIES.names()) | {t.value for t in PeftType}
    owners = (SRC / "lmtune" / "methods", SRC / "lmtune" / "serve" / "kinds")
    found = [hit for path in sorted((SRC / "lmtune").rglob("*.py")) if not path.is_relative_to(owners[0])
             and not path.is_relative_to(owners[1]) for hit in _named_literals(path, names)]
    assert found == []


def _imports_ray(path: Path) -> bool:
    return any((isinstance(node, ast.Import) and any(a.name.split(".")[0] == "ray" for a in node.names))
               or (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ray" and not node.level)
               for node in _executed(ast.parse(path.read_text(encoding="utf-8"))))


def test_the_single_server_imports_nothing_of_ray():
    """`lmtune serve` without --replicas runs the app and the engine: nothing they import, even inside a function,
    imports Ray; the command imports serve/cluster.py (Ray Serve) only in `serve_replicas`."""
    graph, modules = import_graph(), _modules()
    reached, todo = set(), ["lmtune.serve.app", "lmtune.serve.engine"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph[module])
    assert "lmtune.serve.cluster" not in reached
    assert [m for m in sorted(reached) if _imports_ray(modules[m])] == []
    cli = ast.parse(modules["lmtune.serve.cli"].read_text(encoding="utf-8"))
    importers = [f.name for f in ast.walk(cli) if isinstance(f, ast.FunctionDef) for node in ast.walk(f)
                 if isinstance(node, ast.ImportFrom) and node.module == "lmtune.serve"
                 and any(a.name == "cluster" for a in node.names)]
    assert importers == ["serve_replicas"] and _imports_ray(modules["lmtune.serve.cluster"])
