"""The house rules of docs/ARCHITECTURE.md, checked on the source: imports only go down, and no function is
longer than 80 lines."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "cuelab"


def _imports(path: Path) -> set[str]:
    """Every cuelab module a file imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cuelab"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("cuelab"))
    return out


@pytest.mark.parametrize("folder,forbidden", [
    ("report", ("cuelab.pipeline", "cuelab.cli")),
    ("export", ("cuelab.pipeline", "cuelab.cli")),
    ("video", ("cuelab.data",)),
    ("model", ("cuelab.data.synthetic", "cuelab.attention", "cuelab.evaluate", "cuelab.pipeline")),
    ("data", ("cuelab.model", "cuelab.evaluate", "cuelab.pipeline")),
])
def test_imports_only_go_down(folder, forbidden):
    bad = [f"{p.relative_to(PKG.parent)} imports {m}" for p in sorted((PKG / folder).rglob("*.py"))
           for m in sorted(_imports(p)) if any(m == f or m.startswith(f + ".") for f in forbidden)]
    assert not bad, "\n".join(bad)


def test_no_function_over_80_lines():
    long = []
    for p in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{p.relative_to(PKG.parent)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "\n".join(long)
