"""Engine: what makes a folder a loadable model, the one rule every backend and source uses.

A model folder holds the architecture (config.json), the tokenizer
(tokenizer.json) and weights: any ``*.safetensors`` (transformers saves
model.safetensors, EXL2 quants ship output.safetensors or
output-0000N-of-M.safetensors). The CPU backend, the GPU backend, `qwend pull`
(local and hub) and `qwend doctor` all ask this module, so "is the model
there" has one answer. A ``llama.cpp`` profile runs a GGUF file as it is: its
folder (or its ``path``, a ``.gguf`` file itself) is complete when it holds one
GGUF model, one file or the shards of one split file (``gguf_file``).
Present is not enough: ``damaged_files`` reads what
can be checked cheaply (config.json and tokenizer.json parse as JSON objects;
each safetensors header parses and the file holds every byte its header
promises), so a truncated or empty download is named with its fix (``qwend
pull NAME --force``) instead of surfacing as a library error.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any, Final

from qwend.errors import ModelCorrupt, ModelMissing

REQUIRED_FILES: Final = ("config.json", "tokenizer.json")
WEIGHTS_GLOB: Final = "*.safetensors"
JSON_FILES: Final = ("config.json", "tokenizer.json")  # must parse as JSON objects
SAFETENSORS_LEN: Final = struct.Struct("<Q")  # the header's byte length, first in the file
MAX_SAFETENSORS_HEADER_BYTES: Final = 100 * 2**20  # the safetensors format's own ceiling
GGUF_BACKENDS: Final = frozenset({"llama.cpp"})  # backends that load a GGUF file as it is
GGUF_SUFFIX: Final = ".gguf"
# llama.cpp's split files: NAME-00001-of-00003.gguf; it loads the first and finds the rest.
GGUF_SHARD_RE: Final = re.compile(r"(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf")


def gguf_candidates(location: Path) -> list[Path]:
    """The GGUF files under ``location`` (itself, when it is a .gguf file).

    Hidden folders are skipped: a hub pull keeps its own state in one.
    """
    if location.suffix == GGUF_SUFFIX:
        return [location] if location.is_file() else []
    if not location.is_dir():
        return []
    return sorted(
        path
        for path in location.rglob(f"*{GGUF_SUFFIX}")
        if path.is_file() and not any(p.startswith(".") for p in path.relative_to(location).parts)
    )


def gguf_file(location: Path) -> Path | None:
    """The file llama.cpp loads: the one GGUF, or the first shard of one split GGUF.

    None when there is none, or more than one model to choose from.
    """
    found = gguf_candidates(location)
    if len(found) == 1:
        return found[0]
    shards = [GGUF_SHARD_RE.fullmatch(path.name) for path in found]
    if not found or any(m is None for m in shards):
        return None
    stems = {(p.parent, m["stem"], m["count"]) for p, m in zip(found, shards, strict=True) if m}
    if len(stems) != 1 or len(found) != int(next(iter(stems))[2]):
        return None
    return found[0]  # sorted: -00001-of- comes first


def missing_files(folder: Path, backend: str = "transformers") -> list[str]:
    """What ``folder`` lacks to be a loadable model folder for ``backend`` (empty when complete)."""
    if backend in GGUF_BACKENDS:
        if gguf_file(folder) is not None:
            return []
        found = gguf_candidates(folder)
        if not found:
            return [f"*{GGUF_SUFFIX}"]
        names = ", ".join(str(p.relative_to(folder)) for p in found)
        return [f"exactly one {GGUF_SUFFIX} model (found {len(found)}: {names})"]
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
    """Raise ModelMissing naming what is missing and the command that fetches it,
    or ModelCorrupt naming each damaged file and the command that fetches it again."""
    missing = missing_files(folder)
    if missing:
        raise ModelMissing(
            f"the model is not in {folder} (missing {', '.join(missing)})",
            hint=f"run: {pull_hint}",
        )
    require_intact(folder, pull_hint)


def require_intact(folder: Path, pull_hint: str) -> None:
    """Raise ModelCorrupt if a file of the (complete) folder is damaged."""
    damaged = damaged_files(folder)
    if damaged:
        raise ModelCorrupt(
            f"the model in {folder} is damaged: {'; '.join(damaged)}",
            hint=f"fetch it again: {pull_hint} --force",
        )


def damaged_files(folder: Path) -> list[str]:
    """``"NAME: why"`` for each file that cannot be what it claims (empty when intact).

    Reads the JSON files whole and only the header of each weights file.
    """
    damaged = [f"{name}: {why}" for name in JSON_FILES if (why := _json_problem(folder / name))]
    for path in sorted(folder.glob(WEIGHTS_GLOB)):
        if why := _safetensors_problem(path):
            damaged.append(f"{path.name}: {why}")
    return damaged


def _json_problem(path: Path) -> str:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return ""  # missing_files reports absence
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return "is empty" if path.stat().st_size == 0 else f"is not valid JSON ({exc})"
    return "" if isinstance(data, dict) else "is not a JSON object"


def _safetensors_problem(path: Path) -> str:
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(SAFETENSORS_LEN.size)
            if size == 0:
                return "is empty"
            if len(head) < SAFETENSORS_LEN.size:
                return f"is truncated ({size} bytes, not even a header)"
            (header_len,) = SAFETENSORS_LEN.unpack(head)
            if header_len > min(MAX_SAFETENSORS_HEADER_BYTES, size - SAFETENSORS_LEN.size):
                return f"is truncated or not safetensors (header of {header_len} bytes in {size})"
            header: Any = json.loads(handle.read(header_len))
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "has a header that is not valid JSON (not safetensors, or damaged)"
    if not isinstance(header, dict):
        return "has a header that is not a JSON object"
    ends = [
        entry["data_offsets"][1]
        for key, entry in header.items()
        if key != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry
    ]
    expected = SAFETENSORS_LEN.size + header_len + max(ends, default=0)
    if size < expected:
        return f"is truncated ({size} of {expected} bytes)"
    return ""
