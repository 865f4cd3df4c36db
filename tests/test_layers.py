"""The code's shape (issue 17): the layer contract holds, no module imports itself back in a cycle, and a module over
400 lines says at its top why it is one module. These fail on a real mistake (an upward import, a new cycle, a
grown module), not on style."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import stillroom

grimp = pytest.importorskip("grimp")
pytest.importorskip("importlinter")

SRC = Path(stillroom.__file__).parent
PYPROJECT = SRC.parent.parent / "pyproject.toml"
MAX_LINES = 400


def test_layer_contract_is_kept():
    """The same check as `lint-imports` in `make lint`: data -> models -> runs -> train | softlabels -> distill ->
    evaluate -> deploy -> report -> pipeline -> cli, arrows pointing down only."""
    from importlinter.application.use_cases import lint_imports
    from importlinter.configuration import configure

    if not PYPROJECT.is_file():
        pytest.skip("installed without the source tree")
    configure()
    assert lint_imports(config_filename=str(PYPROJECT), no_logo=True, cache_dir=None), "a layer contract is broken"


def test_no_import_cycles():
    graph = grimp.build_graph("stillroom", exclude_type_checking_imports=True)
    cycles = sorted(
        {
            tuple(sorted((m, imp)))
            for m in graph.modules
            for imp in graph.find_modules_directly_imported_by(m)
            if graph.chain_exists(importer=imp, imported=m)
        }
    )
    assert cycles == [], f"import cycles: {cycles}"


def test_long_modules_say_why():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_LINES:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "Why one module" not in doc:
                offenders.append(f"{path.relative_to(SRC)} ({text.count(chr(10))} lines)")
    assert offenders == [], f"modules over {MAX_LINES} lines without a reason at the top: {offenders}"
