"""The package's layers, as its docstring lists them: no module imports from a layer above its own (``TYPE_CHECKING``
imports, which only name types, aside). A room that reached up would pull the CLI or the Session into code below
them, and a reader could no longer see the design from the top down."""

import ast
from pathlib import Path

import styleprefs

PACKAGE = Path(styleprefs.__file__).parent
LAYERS = [
    {"cli", "terminal", "server", "ray_apply", "export"},
    {"session"},
    {"creating", "looks", "reporting", "training", "checkpoints", "start", "preference", "refining", "guard", "render",
     "tiling", "applying", "pipeline", "outputs", "page", "polish", "rounds", "migrate"},
    {"store", "schema", "inputs"},
    {"networks", "kernels", "controls", "losses", "vgg", "edges"},
    {"images", "files", "config", "device", "errors"},
]


def imported(tree: ast.Module) -> set[str]:
    """The package's own modules a module imports at run time."""
    names = set()
    for node in tree.body:  # top level and functions alike, but not under ``if TYPE_CHECKING:``
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom) and inner.level == 1:
                names |= {inner.module} if inner.module else {alias.name for alias in inner.names}
    return names - {"__version__"}


def test_every_module_is_in_a_layer_and_imports_nothing_above_it():
    layer = {name: k for k, names in enumerate(LAYERS) for name in names}
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert modules == set(layer), "a module missing from LAYERS (and the package docstring), or one that has gone"
    upward = [f"{m} imports {d}" for m in sorted(modules)
              for d in sorted(imported(ast.parse((PACKAGE / f"{m}.py").read_text()))) if layer[d] < layer[m]]
    assert not upward, upward


def test_the_package_docstring_names_every_module():
    missing = [m for names in LAYERS for m in names if f"``{m}``" not in styleprefs.__doc__]
    assert not missing, missing
