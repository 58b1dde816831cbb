"""The import graph of lben_ode: layers only import from below, and no module imports itself back.

Every ``import`` of the package counts, those under ``TYPE_CHECKING`` included: a type-only import
of a higher layer is still a dependency of the lower one on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lben_ode

ROOT = Path(lben_ode.__file__).parent
#: Subpackages and top-level modules from the bottom layer up; a module may import its own layer
#: and those below it.
LAYERS = [
    {"errors", "warning_location"},
    {"validation", "activations"},
    {"solvers"},
    {"gradients", "implicit"},
    {"models"},
    {"normalization", "robustness", "continuous"},
    {"baselines"},
    {"__init__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__") or "__init__"


def imports(path: Path) -> set[str]:
    """The lben_ode modules ``path`` imports (relative imports resolved), as dotted names under lben_ode."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    if name == "__init__":
        package = []
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("lben_ode"):
                target = node.module.removeprefix("lben_ode").lstrip(".")
            else:
                continue
            for alias in node.names:  # `from . import solvers` names a module, not an attribute
                candidate = f"{target}.{alias.name}" if target else alias.name
                found.add(candidate if resolve(candidate) else target)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("lben_ode.") for a in node.names if a.name.startswith("lben_ode."))
    return {m for m in found if m and resolve(m)}


def resolve(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def layer(name: str) -> int:
    top = name.split(".")[0]
    return next(i for i, members in enumerate(LAYERS) if top in members)


def graph() -> dict[str, set[str]]:
    # The Lightning and data subpackages sit above the library (their own folders in a checkout,
    # mapped under lben_ode only when installed); the layers here are the library's.
    return {
        module_name(p): imports(p)
        for p in ROOT.rglob("*.py")
        if p.relative_to(ROOT).parts[0] not in ("lightning_modules", "datasets")
    }


def test_layers_only_import_downwards():
    upward = [
        f"{source} imports {target}"
        for source, targets in graph().items()
        for target in targets
        if layer(target) > layer(source)
    ]
    assert not upward, upward


def test_no_solver_imports_a_model_or_a_gradient_method():
    for source, targets in graph().items():
        if source.startswith("solvers"):
            assert not {t for t in targets if t.split(".")[0] in ("models", "gradients", "implicit")}, source


def test_no_import_cycles():
    edges = graph()
    # A package's __init__ re-exports its modules; those edges point down into it, never back up.
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in edges.get(node, ()):
            if nxt == node or node.startswith(nxt + ".") or (node.split(".")[0] == nxt):
                continue  # a module importing its own package (its __init__ is already loading)
            if state.get(nxt) == 1:
                cycle.extend([*path, node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, [*path, node]):
                return True
        state[node] = 2
        return False

    for node in edges:
        if state.get(node) is None and visit(node, []):
            break
    assert not cycle, " -> ".join(cycle)
