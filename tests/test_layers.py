"""The layers go one way (docs/ARCHITECTURE.md): model/ (the math) imports nothing above it, config/ (the
settings) nothing but model/, and the HTTP service reaches stored data only through the engine, never
through the store or its backends."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.clips import ROOT


def imports(folder: Path) -> list[tuple[str, str]]:
    """(file, imported module) for every import statement under `folder`, lazy ones inside functions too."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(str(path.relative_to(ROOT)), alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((str(path.relative_to(ROOT)), node.module))
    return found


def test_model_imports_nothing_above_it():
    above = [(f, m) for f, m in imports(ROOT / "model") if m.split(".")[0] in ("config", "indexer", "service", "bench", "demo")]
    assert not above, above


def test_the_settings_sit_below_the_engine():
    above = [(f, m) for f, m in imports(ROOT / "config") if m.split(".")[0] in ("indexer", "service", "bench", "demo")]
    assert not above, above
    assert not (ROOT / "indexer" / "settings.py").exists()


def test_the_service_reaches_stored_data_only_through_the_engine():
    storage = ("indexer.store", "indexer.catalog", "indexer.catalog_postgres", "indexer.features",
               "indexer.features_s3", "indexer.backends", "indexer.coarse")
    direct = [(f, m) for f, m in imports(ROOT / "service") if m in storage]
    assert not direct, direct
    touches = []
    for path in sorted((ROOT / "service").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("store", "coarse") and \
                    isinstance(node.value, (ast.Name, ast.Attribute)):
                touches.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not touches, touches


def test_the_engine_stages_are_handed_their_collaborators():
    """models, embedding, ingest and search never reach back into the engine that composes them."""
    stages = [ROOT / "indexer" / f"{name}.py" for name in ("models", "embedding", "ingest", "search")]
    back = [(str(p.relative_to(ROOT)), m) for p in stages for f, m in imports(p.parent) if f == str(p.relative_to(ROOT))
            and m == "indexer.engine"]
    assert not back, back
