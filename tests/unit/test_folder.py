"""What makes a model folder loadable: present files, and files that are not damaged.

Truncated, empty and garbage files are named with the command that fetches
them again; the check reads headers only and runs before any library loads.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from qwend.backends.folder import damaged_files, require_complete
from qwend.backends.transformers import TransformersBackend
from qwend.errors import ModelCorrupt, ModelMissing, QwendError

PULL = "qwend pull smollm2-135m"


def safetensors_bytes(values: int = 4) -> bytes:
    """A valid safetensors file: one F32 tensor of ``values`` numbers."""
    header = json.dumps(
        {
            "__metadata__": {"format": "pt"},
            "w": {"dtype": "F32", "shape": [values], "data_offsets": [0, 4 * values]},
        }
    ).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * (4 * values)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    model = tmp_path / "models" / "smollm2-135m"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "tokenizer.json").write_text('{"version": "1.0"}')
    (model / "model.safetensors").write_bytes(safetensors_bytes())
    return model


def test_an_intact_folder_passes(folder: Path) -> None:
    assert damaged_files(folder) == []
    require_complete(folder, PULL)


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("model.safetensors", b"", "model.safetensors: is empty"),
        ("model.safetensors", safetensors_bytes()[:-3], "model.safetensors: is truncated"),
        ("model.safetensors", safetensors_bytes()[:20], "model.safetensors: is truncated"),
        ("model.safetensors", b"\x01\x02\x03", "model.safetensors: is truncated"),
        ("model.safetensors", b"GARBAGE!" + b"x" * 64, "model.safetensors: is truncated or not"),
        ("config.json", b"{ not json", "config.json: is not valid JSON"),
        ("config.json", b"", "config.json: is empty"),
        ("config.json", b"[1, 2]", "config.json: is not a JSON object"),
        ("tokenizer.json", b"\xff\xfe", "tokenizer.json: is not valid JSON"),
    ],
)
def test_a_damaged_file_is_named_with_the_fix(
    folder: Path, name: str, content: bytes, why: str
) -> None:
    (folder / name).write_bytes(content)
    assert [d for d in damaged_files(folder) if d.startswith(why)] != []
    with pytest.raises(ModelCorrupt) as info:
        require_complete(folder, PULL)
    assert why in info.value.message
    assert info.value.hint == f"fetch it again: {PULL} --force"
    assert isinstance(info.value, QwendError) and info.value.code == "model_corrupt"


def test_a_missing_file_is_still_missing_not_corrupt(folder: Path) -> None:
    (folder / "config.json").unlink()
    with pytest.raises(ModelMissing):
        require_complete(folder, PULL)


def test_the_cpu_backend_names_the_damaged_file_before_loading(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(safetensors_bytes()[:10])
    backend = TransformersBackend(folder, context_length=2048, threads=1, pull_hint=PULL)
    with pytest.raises(ModelCorrupt) as info:
        backend.load()
    assert "model.safetensors: is truncated" in info.value.message
    assert f"{PULL} --force" in str(info.value)
    # Over the socket the body names the file but not where it lives.
    body = json.dumps(info.value.to_dict())
    assert "model.safetensors" in body and str(folder) not in body
