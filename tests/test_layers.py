"""The package imports one way: every module imports only modules of lower layers (lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "yolo_vfl"

#: Bottom to top; a module may import modules of earlier layers only.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "fileio"),
    ("losses",),
    ("criterion",),
    ("trainer",),
    ("data",),
    ("labels",),
    ("checks",),
    ("executor",),
    ("pretrain",),
    ("ab.protocol",),
    ("ab.spec",),
    ("ab.jobs",),
    ("ab.stats",),
    ("ab.sequential",),
    ("ab.records",),
    ("ab.evaluation",),
    ("ab.results",),
    ("ab.run",),
    ("ab.backends",),
    ("ab.report",),
    ("ab.plots",),
    ("ab.orchestrate",),
    ("ab",),
    ("cli",),
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """The package modules ``name`` imports, at module level or inside functions."""
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.split(".")[0] == "yolo_vfl":
                target = node.module.split(".")[1:]
            else:
                continue
            modules = _modules()
            for alias in node.names:
                sub = ".".join([*target, alias.name])
                out.add(sub if sub in modules else ".".join(target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "yolo_vfl":
                    out.add(".".join(alias.name.split(".")[1:]))
    out.discard("")
    out.discard(name)
    return out


def test_every_module_has_a_layer():
    """A new module must be placed in LAYERS (so its imports are checked)."""
    assert sorted(set(_modules()) - set(RANK)) == []


@pytest.mark.parametrize("name", sorted(_modules()))
def test_imports_go_down(name):
    """Each module imports only modules of lower layers: no circle, no reaching up."""
    path = _modules()[name]
    up = sorted(m for m in _imports(name, path) if RANK.get(m, -1) >= RANK[name])
    assert up == [], f"{name} imports {up}, which are not below it"


def test_report_layer_needs_no_torch_or_ultralytics():
    """The report and plot modules import neither torch nor Ultralytics (they are functions of records).

    ab.report, the text report, does not import matplotlib either (not even lazily).
    """
    for name in ("ab.report", "ab.plots", "ab.stats", "ab.results", "ab.protocol"):
        path = _modules().get(name)
        if path is None:
            continue
        tree = ast.parse(path.read_text())
        heavy = {
            (n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in (n.names if isinstance(n, ast.Import) else [n])
            if (n.module if isinstance(n, ast.ImportFrom) else a.name)
        }
        assert not heavy & {"torch", "ultralytics", *(["matplotlib"] if name == "ab.report" else [])}, name


def test_every_function_fits_on_a_screen():
    """No function or method of the package is longer than 60 lines (docstring included)."""
    long = [
        f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60
    ]
    assert not long, long
