"""The package's layering, read from the source (ast, nothing imported): no module uses another jitnn
module's private (underscore) names, and no jitnn modules import each other in a circle.

Private names: a module may use its own, and a test file its module's (``test_config.py`` those of
``jitnn/config.py``); third-party names (numba's, numpy's) are not ours to judge. Circles count every
import, deferred function-level ones included (a deferred import hides a circle, it does not remove
it); imports under ``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "jitnn"
CHECKED_DIRS = ("jitnn", "perf", "examples", "tests")


def module_name(path: pathlib.Path) -> str | None:
    """``jitnn.x.y`` for a file of the package, None outside it."""
    rel = path.relative_to(ROOT)
    if rel.parts[0] != "jitnn":
        return None
    parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}


MODULES = package_modules()


def is_package(name: str) -> bool:
    return MODULES.get(name, pathlib.Path()).name == "__init__.py"


def checked_files() -> list[pathlib.Path]:
    files = []
    for d in CHECKED_DIRS:
        files += [p for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(files)


def absolute(node: ast.ImportFrom, here: str | None, path: pathlib.Path) -> str:
    """The module an ImportFrom names, relative imports resolved against ``here``."""
    if not node.level:
        return node.module or ""
    base = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    for _ in range(node.level - 1):
        base = base.rsplit(".", 1)[0]
    return f"{base}.{node.module}" if node.module else base


def runtime_imports(tree: ast.AST):
    """Every Import/ImportFrom node that runs (anywhere in the file, not under ``if TYPE_CHECKING:``)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skip]


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def bindings(tree, here, path):
    """Local name -> the jitnn module it is, or ("module", "name") for a name imported from one."""
    bound = {}
    for node in runtime_imports(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "jitnn":
                    if a.asname:
                        bound[a.asname] = a.name
                    else:
                        bound["jitnn"] = "jitnn"
        else:
            mod = absolute(node, here, path)
            if mod.split(".")[0] != "jitnn":
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                bound[a.asname or a.name] = sub if sub in MODULES else (mod, a.name)
    return bound


def owner_allowed(user: pathlib.Path, here: str | None, owner: str) -> bool:
    """A module may use its own private names, a test file those of the module it is named after."""
    if here is not None:
        return here == owner
    if user.parent.name == "tests" and user.stem.startswith("test_"):
        return user.stem[len("test_"):] in owner.split(".")
    return False


def private_uses(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    here = module_name(path)
    bound = bindings(tree, here, path)
    rel = path.relative_to(ROOT)
    found = []

    def report(node, owner, name):
        if is_private(name) and not owner_allowed(path, here, owner):
            found.append(f"{rel}:{node.lineno}: {owner}.{name}")

    for node in runtime_imports(tree):
        if isinstance(node, ast.ImportFrom):
            mod = absolute(node, here, path)
            if mod.split(".")[0] == "jitnn":
                for a in node.names:
                    report(node, mod, a.name)
    for node in ast.walk(tree):
        # module._name, jitnn.module._name, ImportedClass._name
        if isinstance(node, ast.Attribute):
            chain, base = [node.attr], node.value
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                target = bound[base.id]
                owner = target if isinstance(target, str) else target[0]
                for attr in reversed(chain):
                    report(node, owner, attr)
                    if isinstance(target, str) and f"{owner}.{attr}" in MODULES:
                        owner = f"{owner}.{attr}"
                    else:
                        break
        # monkeypatch.setattr(module, "_name", ...), getattr(module, "_name")
        if isinstance(node, ast.Call) and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                and isinstance(node.args[1].value, str) and isinstance(node.args[0], ast.Name) \
                and node.args[0].id in bound:
            fn = ast.unparse(node.func)
            if fn.endswith(("setattr", "getattr", "delattr")):
                target = bound[node.args[0].id]
                report(node, target if isinstance(target, str) else target[0], node.args[1].value)
    return sorted(set(found))  # a.b._c.d is walked as a.b._c.d and as a.b._c: one use


def test_no_module_uses_another_modules_private_names():
    found = [use for path in checked_files() for use in private_uses(path)]
    assert not found, "private names used across modules:\n" + "\n".join(found)


def import_graph() -> dict[str, set[str]]:
    """jitnn module -> the jitnn modules it imports (a package's ``__init__`` when a name comes from it)."""
    graph = {}
    for name, path in MODULES.items():
        edges = set()
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in runtime_imports(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                mod = absolute(node, name, path)
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
            edges |= {t for t in targets if t in MODULES and t != name}
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_circle_and_nothing_else():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_private_name_finder_sees_imports_attributes_and_monkeypatch(monkeypatch):
    source = ("from jitnn.config import _private_dir\nfrom jitnn import peak\nimport jitnn.config as cfg\n"
              "def f(monkeypatch):\n    peak._memory.clear()\n    cfg.threads_for(1)\n"
              "    monkeypatch.setattr(peak, '_read', None)\n    import numpy as np\n    np._NoValue\n")
    fake = ROOT / "perf" / "_layering_probe.py"
    monkeypatch.setattr(pathlib.Path, "read_text", lambda self, encoding=None: source)
    found = private_uses(fake)
    assert sorted(f.split(": ", 1)[1] for f in found) == ["jitnn.config._private_dir", "jitnn.peak._memory",
                                                           "jitnn.peak._read"]


def test_no_import_circle_among_jitnn_modules():
    graph = import_graph()
    assert "jitnn.saving" in graph["jitnn.model"]  # the graph sees imports (model saves through saving)
    found = cycles(graph)
    detail = [" -> ".join(c) + "\n    " + "\n    ".join(f"{m} imports {sorted(graph[m] & set(c))}" for m in c)
              for c in found]
    assert not found, "import circles:\n" + "\n".join(detail)
