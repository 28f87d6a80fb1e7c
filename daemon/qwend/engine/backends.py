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
    raise BackendUnavailable(
        f"model profile '{name}' needs the {profile.backend} backend, which this "
        "qwend release does not include yet (the GPU backend is still being built)",
        hint="start the CPU model instead: qwend serve --model smollm2-135m",
    )
