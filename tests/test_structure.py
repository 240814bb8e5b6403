"""The package's shape, read from its source with `ast`: no import cycles (imports inside
functions and `importlib.import_module` included), lower layers never import higher ones, no
function longer than MAX_LINES (declared tables excepted), no class longer than MAX_CLASS_LINES
and no module longer than MAX_MODULE_LINES."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "charwise"
MAX_LINES = 80
MAX_CLASS_LINES = 300
MAX_MODULE_LINES = 400
# Functions allowed to be longer because they are declarative tables, not logic.
TABLES: set[str] = set()
# The core: what every command builds on. None of it may import the layers above it.
LOWER = {"charwise.settings.train", "charwise.settings.toml", "charwise.runs.rundir",
         "charwise.data.corpus", "charwise.data.vocab", "charwise.model", "charwise.scoring",
         "charwise.generation.charmodel", "charwise.generation.params", "charwise.generation.sampler",
         "charwise.generation.steps", "charwise.runs.checkpoint"}
HIGHER = ("charwise.training", "charwise.inspect", "charwise.cli", "charwise.server",
          "charwise.api", "charwise.exporting", "charwise.runs.runinfo")


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    mods = {}
    for p in sorted(SRC.rglob("*.py")):
        parts = p.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = (p, ast.parse(p.read_text(encoding="utf-8")))
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> the charwise modules it imports anywhere (function-level imports included, so
    a cycle cannot hide inside a function)."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, tree) in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set(_imported_by_name(tree, mods))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] == "charwise"}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "charwise":
                    continue
                # `from . import x` names a submodule when there is one, else the package
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                deps |= set(subs) if subs else {target}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def _imported_by_name(tree: ast.Module, mods) -> set[str]:
    """Modules a module may import by name at run time: where it calls importlib.import_module,
    every string constant in it that names one of our modules counts as an import of it."""
    calls = any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "import_module"
                for n in ast.walk(tree))
    if not calls:
        return set()
    return {n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in mods}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_import_graph_has_no_cycles():
    graph = import_graph()
    assert "charwise.training.trainer" in graph and "charwise.generation.charmodel" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_lower_layers_do_not_import_higher_ones():
    graph = import_graph()
    bad = sorted(f"{m} -> {d}" for m in LOWER for d in graph[m]
                 if any(d == h or d.startswith(h + ".") for h in HIGHER))
    assert not bad, bad


def test_no_long_functions():
    long = []
    for name, (_, tree) in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                qual = f"{name}.{node.name}"
                if n > MAX_LINES and qual not in TABLES:
                    long.append(f"{qual}: {n} lines")
    assert not long, long


def test_importlib_imports_are_followed():
    graph = import_graph()
    assert {"charwise.api", "charwise.notebook"} <= graph["charwise"]


def test_no_long_classes_or_modules():
    long = []
    for name, (path, tree) in _modules().items():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            long.append(f"{name}: {n} lines")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                long.append(f"{name}.{node.name}: class of {node.end_lineno - node.lineno + 1} lines")
    assert not long, long
