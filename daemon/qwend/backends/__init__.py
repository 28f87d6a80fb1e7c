"""Engine: the model backends, one module or folder each, and the factory that picks one.

base.py        the interface every backend implements (the engine owns everything else)
folder.py      what makes a folder a loadable model (every backend and source asks it)
tokens.py      request text as plain text, template markers as ids (HF tokenizers' backends)
transformers   the CPU backend and the reference for correctness checks
exllamav2/     the GPU backend
llamacpp.py    GGUF models on the CPU through llama.cpp, with prefix reuse across requests
remote/        an OpenAI-compatible engine elsewhere (vLLM, SGLang, llama.cpp), over HTTP

The factory builds the backend a model profile names, or fails fast saying why.

There is exactly one backend per profile and no fallback between them: a
profile that cannot run here is an error the user sees at start-up, not a
quietly different model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qwend.backends.base import Backend
from qwend.errors import BackendUnavailable

if TYPE_CHECKING:
    from qwend.config import Config


def create_backend(config: Config) -> Backend:
    """The backend for the resident profile. Raises BackendUnavailable."""
    profile = config.profile
    name = config.model_name
    if profile.backend == "transformers":
        from qwend.backends.transformers import TransformersBackend

        return TransformersBackend(
            config.model_dir(),
            context_length=profile.context_length,
            threads=profile.threads,
            pull_hint=f"qwend pull {name}",
        )
    if profile.backend == "llama.cpp":
        from qwend.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(
            config.model_dir(),
            context_length=profile.context_length,
            threads=profile.threads,
            pull_hint=f"qwend pull {name}",
        )
    if profile.backend == "exllamav2":
        from qwend.backends.exllamav2.backend import ExLlamaV2Backend

        return ExLlamaV2Backend(config.model_dir(), profile, profile_name=name)
    if profile.backend == "remote":
        from qwend.backends.remote.backend import RemoteBackend

        return RemoteBackend(profile, profile_name=name, profile_folder=config.model_dir())
    raise BackendUnavailable(f"model profile '{name}' names an unknown backend: {profile.backend}")
