"""The package layout follows the pipeline: no module imports one from a later stage.

Stages, lowest first (docs/architecture.md): the shared declarations (errors, schema, table, jit,
docgen), sources (frames from files or an interface), decode (frames -> packet table), tcp (the
engine), report (tables, writers, summary, live sessions, comparison, plots), demo (the TLS demo's
parts and its runner), commands (the command line). A module may import its own stage or any lower
one, at module level or inside a function alike. ``analyzer/__init__.py`` (the public API) and
``__main__`` are the top and are not checked.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "analyzer"
STAGES = ["base", "sources", "decode", "tcp", "report", "demo", "commands"]
BASE_MODULES = {"errors", "schema", "table", "jit", "docgen"}


def stage_of(module: str) -> str | None:
    """The stage of ``analyzer.x.y``; None for the package's top (``analyzer``, ``analyzer.__main__``)."""
    parts = module.split(".")
    if parts[0] != "analyzer" or len(parts) == 1 or parts[1] == "__main__":
        return None
    if parts[1] in BASE_MODULES:
        return "base"
    assert parts[1] in STAGES, f"{module}: not in a pipeline stage; add its folder to STAGES"
    return parts[1]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text() if text is None else text)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module:
                found.append((node.lineno, target))
            else:  # "from .. import schema": the names are modules of that package
                found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return [(line, m) for line, m in found if m == "analyzer" or m.startswith("analyzer.")]


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def later_imports(path: Path, text: str | None = None) -> list[str]:
    """The imports of ``path`` (or of ``text`` as if it were that file) from a later stage."""
    own = stage_of(module_name(path))
    if own is None:
        return []
    later = []
    for line, target in imports(path, text):
        theirs = stage_of(target) if target != "analyzer" else "top"
        if theirs == "top" or theirs is None or STAGES.index(theirs) > STAGES.index(own):
            later.append(f"line {line}: {target} ({theirs})")
    return later


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_later_stage(path):
    later = later_imports(path)
    assert not later, f"{module_name(path)} imports from a later stage: " + "; ".join(later)


def test_the_checker_sees_a_violation():
    """The check itself works: relative imports are resolved, upward ones caught wherever they are."""
    files = PACKAGE / "sources" / "files.py"
    assert {"analyzer.sources.pcap", "analyzer.errors"} <= {m for _, m in imports(files)}
    bad = "from . import pcap\nfrom .. import schema\n\ndef f():\n    from ..tcp import Engine\n    import analyzer\n"
    assert later_imports(files, bad) == ["line 5: analyzer.tcp (tcp)", "line 6: analyzer (top)"]


def test_every_folder_is_a_stage():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= set(STAGES), folders - set(STAGES)
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert modules <= BASE_MODULES, modules - BASE_MODULES
