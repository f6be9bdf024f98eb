"""The house rules that a refactor can break silently: no import cycles among odt's modules (type-only
imports included), no import of odt's own modules inside a function (where it hides a cycle), no
arrow back up from the floors (envs/, models/), no class over 250 lines and no function over 60."""
import ast
from pathlib import Path

import odt

SRC = Path(odt.__file__).parent


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = (ast.parse(path.read_text()), path.name == "__init__.py")
    return out


def _target(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _odt_imports(module: str, is_package: bool, nodes) -> set[str]:
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            target = _target(module, is_package, node)
            if target.startswith("odt"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)  # `from . import resume`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("odt"))
    return found


def test_no_import_of_odt_inside_a_function():
    offenders = []
    for module, (tree, is_package) in _modules().items():
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if _odt_imports(module, is_package, ast.walk(fn)):
                    offenders.append(f"{module}.{fn.name}")
    assert not offenders


def test_no_import_cycles():
    modules = _modules()
    graph = {}
    for module, (tree, is_package) in modules.items():
        # Every import, wherever it stands: under `if TYPE_CHECKING:` and inside functions too.
        graph[module] = {m for m in _odt_imports(module, is_package, ast.walk(tree)) if m in modules and m != module}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if n.startswith(m + "."):  # a package importing its own submodules is not a cycle
                continue
            assert state.get(n) != 1, "import cycle: " + " -> ".join(path + [n])
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_no_class_longer_than_250_lines():
    long = [f"{module}.{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for module, (tree, _) in _modules().items() for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 250]
    assert not long


def test_no_function_longer_than_60_lines():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        module = ".".join(("odt", *path.relative_to(SRC).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{module}.{node.name}")
    assert long == []


# The floors: what each of these packages may import of odt. Environments and networks know
# nothing of data, learners or the run; data/ stands on envs/, algos/ on data/ and models/.
FLOORS = {"odt.envs": ("odt.config", "odt.envs"), "odt.models": ("odt.models",),
          "odt.algos": ("odt.config", "odt.data.buffer", "odt.data.trajectories", "odt.models", "odt.algos")}


def test_no_arrow_runs_back_up():
    up = []
    for module, (tree, is_package) in _modules().items():
        floor = next((allowed for pkg, allowed in FLOORS.items() if module.startswith(pkg + ".")), None)
        if floor is None:
            continue
        for target in _odt_imports(module, is_package, ast.walk(tree)):
            if target in _modules() and not target.startswith(floor):
                up.append(f"{module} -> {target}")
    assert up == []


def test_the_layout_checks_see_type_only_imports():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .evaluation import EvalArgs\n")
    assert "odt.evaluation" in _odt_imports("odt.following", False, ast.walk(tree))


def test_trainer_and_learner_hold_one_statement_a_line():
    """No packing of several assignments into one (``a, b = x, y``) or statements after ``;``: the
    size limit counts responsibilities, not how tightly they are written."""
    packed = []
    for path, name in ((SRC / "train.py", "Trainer"), (SRC / "algos" / "learner.py", "Learner")):
        cls = next(n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef) and n.name == name)
        for node in ast.walk(cls):
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple)
                    and any(isinstance(t, ast.Tuple) for t in node.targets)):
                packed.append(f"{name}: line {node.lineno}")
            body = getattr(node, "body", None)
            if isinstance(body, list):
                lines = [s.lineno for s in body]
                packed += [f"{name}: line {n} holds two statements" for n in set(lines) if lines.count(n) > 1]
    assert packed == []
