"""The package's shape: layers import only downward, no import cycle, and light commands stay
light (no torch for `data info` or a warm `models`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ferbench"

# Lower layers never import higher ones.  report/ sits below train/ because the runner draws a
# run's figures with report.plots; report itself reads only run directories.
# A dotted key places one module apart from its package: `models.ship` writes the shipped
# weights beside their reader (models/pretrained.py) but measures them with infer/ and report/.
LAYERS = {
    "errors": 0,
    "config": 0,
    "__init__": 0,
    "device": 1,
    "runs": 1,
    "utils": 1,
    "faces": 1,
    "data": 1,
    "models": 2,
    "infer": 3,
    "report": 3,
    "train": 4,
    "bench": 5,
    "models.ship": 5,
    "cli": 6,
}
MAX_TOP_LEVEL_MODULES = 8


def _modules() -> dict[str, Path]:
    return {
        ".".join(("ferbench", *p.relative_to(PACKAGE).with_suffix("").parts)): p
        for p in PACKAGE.rglob("*.py")
    }


def _reexports(package: str) -> dict[str, str]:
    """Names a package's __init__ hands out lazily (its ``_EXPORTS`` table: name -> module)."""
    init = PACKAGE.joinpath(*package.split(".")[1:], "__init__.py")
    if not init.is_file():
        return {}
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets
        ):
            table = ast.literal_eval(node.value)
            return {name: f"{package}.{module}" for name, module in table.items()}
    return {}


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """The ferbench modules a file imports, at its top level or anywhere (inside functions
    too); a name taken from a package's __init__ counts as an import of the module behind it."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ferbench"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
            exports = _reexports(node.module)
            found.update(exports[a.name] for a in node.names if a.name in exports)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ferbench"))
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) > 2 and ".".join(parts[1:3]) in LAYERS:
        return LAYERS[".".join(parts[1:3])]
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def test_few_modules_directly_under_the_package():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_nothing_imports_upward():
    modules = _modules()
    upward = [
        f"{name} -> {target}"
        for name, path in modules.items()
        for target in _imports(path, top_level_only=False)
        if target in modules and _layer(target) > _layer(name)
    ]
    assert not upward, upward


def test_no_import_cycle():
    """No cycle between modules, counting imports inside functions too (a function-level
    import hides a cycle from Python, not from the design)."""
    modules = _modules()
    graph = {
        name: {
            t
            for t in _imports(path, top_level_only=False)
            if t in modules and t != name and not name.startswith(t + ".")  # a package's own init
        }
        for name, path in modules.items()
    }
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack + [node, nxt]
            if nxt not in state:
                cycle = visit(nxt, stack + [node])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            assert visit(module, []) is None


def _modules_after(args: list[str], env_root: Path) -> set[str]:
    code = (
        "import sys\nfrom ferbench.cli import app\n"
        f"try:\n    app({args!r}, standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "print('TORCH:', *sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    )
    env = {"FERBENCH_CACHE_DIR": str(env_root), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return set(out.stdout.strip().splitlines()[-1].split()[1:])


def test_warm_models_and_data_info_never_import_torch(tmp_path):
    _modules_after(["models"], tmp_path)  # fills the catalog cache
    assert not _modules_after(["models"], tmp_path)
    assert not _modules_after(["data", "info", "synthetic"], tmp_path)
