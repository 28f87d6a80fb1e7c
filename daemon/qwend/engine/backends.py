"""Engine: build the backend a model profile names, or fail fast saying why.

There is exactly one backend per profile and no fallback between them: a
profile that cannot run here is an error the user sees at start-up, not a
quietly different model.
"""

from __future__ import annotations

from qwend.config import Config
from qwend.engine.backend import Backend
from qwend.errors import BackendUnavailable


def create_backend(config: Config) -> Backend:
    """The backend for the resident profile. Raises BackendUnavailable."""
    profile = config.profile
    name = config.model_name
    if profile.backend == "transformers":
        from qwend.engine.transformers_backend import TransformersBackend

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
        from qwend.engine.exllamav2_backend import ExLlamaV2Backend

        return ExLlamaV2Backend(config.model_dir(), profile, profile_name=name)
    raise BackendUnavailable(f"model profile '{name}' names an unknown backend: {profile.backend}")
