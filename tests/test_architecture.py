"""The package's import structure: no circle between modules, the layer contracts kept, no file over 600 lines."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "eotwin"
MAX_LINES = 600


def _circles() -> list[tuple[str, ...]]:
    graph = grimp.build_graph("eotwin", exclude_type_checking_imports=True)
    found = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if module.startswith(imported + ".") or imported.startswith(module + "."):
                continue  # a package and its own submodules
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                found.append((module, *back))
    return found


def test_no_import_circle_between_modules() -> None:
    assert _circles() == []


def test_layer_contracts_are_kept() -> None:
    importlinter = pytest.importorskip("importlinter")
    from importlinter.cli import lint_imports

    assert importlinter is not None
    assert lint_imports(config_filename=str(SRC.parents[1] / "pyproject.toml")) == 0


def test_each_source_file_holds_one_idea_and_says_it() -> None:
    long, silent = [], []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_LINES:
            long.append(path.relative_to(SRC).as_posix())
        if not text.startswith('"""'):
            silent.append(path.relative_to(SRC).as_posix())
    assert long == [] and silent == []
