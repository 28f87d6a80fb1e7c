"""Language-server fixtures: a real daemon and `qwend lsp` clients (fixtures/lsp_client.py)."""

from tests.fixtures.lsp_client import daemon, start_lsp

__all__ = ["daemon", "start_lsp"]
