"""Engine: what makes a folder a loadable model, the one rule every backend and source uses.

A model folder holds the architecture (config.json), the tokenizer
(tokenizer.json) and weights: any ``*.safetensors`` (transformers saves
model.safetensors, EXL2 quants ship output.safetensors or
output-0000N-of-M.safetensors). The CPU backend, the GPU backend, `qwend pull`
(local and hub) and `qwend doctor` all ask this module, so "is the model
there" has one answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Final

from qwend.errors import ModelMissing

REQUIRED_FILES: Final = ("config.json", "tokenizer.json")
WEIGHTS_GLOB: Final = "*.safetensors"


def missing_files(folder: Path) -> list[str]:
    """What ``folder`` lacks to be a loadable model folder (empty when complete)."""
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not any(path.is_file() for path in folder.glob(WEIGHTS_GLOB)):
        missing.append(WEIGHTS_GLOB)
    return missing


def missing_from_listing(names: Iterable[str]) -> list[str]:
    """The same rule over a repository's file list (top-level files only count)."""
    top = {name for name in names if "/" not in name}
    missing = [name for name in REQUIRED_FILES if name not in top]
    if not any(PurePosixPath(name).match(WEIGHTS_GLOB) for name in top):
        missing.append(WEIGHTS_GLOB)
    return missing


def require_complete(folder: Path, pull_hint: str) -> None:
    """Raise ModelMissing naming what is missing and the command that fetches it."""
    missing = missing_files(folder)
    if missing:
        raise ModelMissing(
            f"the model is not in {folder} (missing {', '.join(missing)})",
            hint=f"run: {pull_hint}",
        )
