"""Unit tests for the package layout: the rules docs/architecture.md states.

No runtime import cycle among qwend's and qwend_lsp's modules, the engine
folder and every module within their size limits, each module's docstring
naming its layer, and the GPU code under backends/exllamav2/.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    *(ROOT / "daemon" / "qwend").rglob("*.py"),
    *(ROOT / "lsp_server" / "qwend_lsp").rglob("*.py"),
]
ENGINE_MAX_LINES = 2500  # the scheduler, jobs, decoding, stats and the service; nothing else
MODULE_MAX_LINES = 700  # past this a module holds more than one job
# The layer a module's docstring may name, by where it lives (docs/architecture.md).
FOLDER_LAYERS = {
    "daemon/qwend/server": {"Transport"},
    "daemon/qwend/engine": {"Engine"},
    "daemon/qwend/backends": {"Engine"},
    "daemon/qwend/models": {"Engine"},
    "daemon/qwend/tasks": {"Engine", "Protocol"},
    "daemon/qwend/config": {"Protocol", "Engine"},
    "daemon/qwend/bench": {"Editor"},
    "lsp_server/qwend_lsp": {"Editor"},
    "daemon/qwend": {"Transport", "Protocol", "Engine", "Editor"},
}


def _load_cycle_checker():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "import_cycles", ROOT / "scripts" / "import_cycles.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_cycles"] = module
    spec.loader.exec_module(module)
    return module


def test_no_runtime_import_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    checker = _load_cycle_checker()
    assert checker.cycles(checker.graph()) == []


def test_the_checker_finds_a_cycle() -> None:
    checker = _load_cycle_checker()
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert checker.cycles(edges) == [["a", "b", "c", "a"]]


def test_engine_and_module_sizes() -> None:
    engine = sum(
        len(path.read_text().splitlines()) for path in (ROOT / "daemon/qwend/engine").glob("*.py")
    )
    assert engine <= ENGINE_MAX_LINES
    too_long = {
        str(path.relative_to(ROOT)): n
        for path in SOURCES
        if (n := len(path.read_text().splitlines())) > MODULE_MAX_LINES
    }
    assert too_long == {}


def test_every_module_docstring_names_its_layer() -> None:
    wrong = []
    for path in SOURCES:
        relative = path.relative_to(ROOT)
        if relative.as_posix() == "daemon/qwend/__init__.py":
            continue  # the package's own description
        folder = next(f for f in FOLDER_LAYERS if relative.as_posix().startswith(f + "/"))
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if doc.split(":", 1)[0].strip() not in FOLDER_LAYERS[folder]:
            wrong.append(f"{relative}: {doc[:40]!r}")
    assert wrong == []


def test_gpu_code_lives_under_backends_exllamav2() -> None:
    outside = []
    for path in SOURCES:
        if "backends/exllamav2" in path.as_posix() or path.name == "doctor.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                if any(n.split(".")[0] in ("exllamav2", "flash_attn") for n in names):
                    outside.append(str(path.relative_to(ROOT)))
    assert outside == []
