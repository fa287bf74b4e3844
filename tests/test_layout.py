"""The package's layout holds: imports run one way between its stages, and modules and
functions stay small enough to read."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "textonly"
#: The stages, lowest first: a module imports from its own stage or a lower one, never a higher.
STAGES = ("core", "data", "models", "organism", "pipeline", "cost", "study", "report", "cli")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _stage(dotted: str) -> str | None:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "textonly" and parts[1] in STAGES else None


def _imports(path: Path):
    """Every ``textonly`` module a file imports, at the top or inside a function."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("textonly"):
            yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names if a.name.startswith("textonly"))


def test_every_module_belongs_to_a_stage():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert loose == [], "modules outside the stage folders"
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} <= set(STAGES)


def test_imports_run_one_way():
    upward = []
    for path in _modules():
        here = _stage(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        for module, line in _imports(path):
            there = _stage(module)
            if here and there and STAGES.index(there) > STAGES.index(here):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({here}) imports {module} ({there})")
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path):
    # the walk above must find a lazy import inside a function, the kind that hides a circle
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from textonly.report.common import pct\n")
    assert list(_imports(source)) == [("textonly.report.common", 2)]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_are_small(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []
