"""Fixtures shared by the integration and LSP suites."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def sandbox() -> Iterator[Path]:
    """A short, private directory under /tmp: Unix socket paths must stay under 108 bytes."""
    root = Path(tempfile.mkdtemp(prefix="qwt-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)
