"""Engine: what the socket's endpoints mean, above the generation engine.

The transport hands over validated protocol objects; this module applies the
config's defaults and limits, renders the prompt for the model's family, and
returns a running Job (or raises a QwendError). It knows nothing of HTTP.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from qwend import __version__
from qwend.config import Config
from qwend.engine.backend import Sampling
from qwend.engine.engine import Engine, GenerationRequest, Job
from qwend.engine.prompts import FAMILIES, ChatTurn, render_chat, render_completion
from qwend.errors import BadRequest, ModelNotFound
from qwend.protocol import ChatRequest, CompletionRequest, TokenizeRequest, _Sampled


class InferenceService:
    def __init__(self, engine: Engine, config: Config, socket_path: Path) -> None:
        self.engine = engine
        self.config = config
        self.socket_path = socket_path
        self.family = FAMILIES[config.profile.family]
        self.started_at = time.time()
        self._started_monotonic = time.monotonic()

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    def state(self) -> str:
        return self.engine.state.value

    async def complete(self, req: CompletionRequest) -> Job:
        self._check_model(req.model)
        prompt, suffix_stops = render_completion(self.family, req.prompt, req.suffix)
        return await self.engine.submit(self._generation(req, prompt, req.max_tokens, suffix_stops))

    async def chat(self, req: ChatRequest) -> Job:
        self._check_model(req.model)
        turns = [ChatTurn(m.role, m.content) for m in req.messages]
        prompt = render_chat(self.family, turns)
        return await self.engine.submit(self._generation(req, prompt, req.token_limit(), []))

    async def tokenize(self, req: TokenizeRequest) -> dict[str, Any]:
        self._check_model(req.model)
        ids = await self.engine.tokenize(req.text)
        return {"model": self.model_name, "count": len(ids), "ids": ids}

    def models(self) -> dict[str, Any]:
        profile = self.config.profile
        return {
            "object": "list",
            "data": [
                {
                    "id": self.model_name,
                    "object": "model",
                    "created": int(self.started_at),
                    "owned_by": "qwend",
                    "backend": profile.backend,
                    "family": profile.family,
                    "state": self.state(),
                    "context_length": self.engine.backend.context_length,
                }
            ],
        }

    def status(self) -> dict[str, Any]:
        """Everything `qwend status` shows; never waits on the generation thread."""
        settings = self.config.settings
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self._started_monotonic, 1),
            "socket": str(self.socket_path),
            "config_files": [str(p) for p in self.config.files],
            "preload": settings.daemon.preload,
            "device": self.config.profile.device,
            "memory": {"rss_bytes": _resident_bytes()},
            **self.engine.snapshot(),
        }

    def _check_model(self, requested: str | None) -> None:
        # Serving another model than the one asked for would be a silent fallback.
        if requested is not None and requested != self.model_name:
            raise ModelNotFound(
                f"model '{requested}' is not resident; this daemon serves '{self.model_name}'",
                hint="omit 'model' or use the id from GET /v1/models",
            )

    def _generation(
        self, req: _Sampled, prompt: str, max_tokens: int | None, extra_stops: list[str]
    ) -> GenerationRequest:
        gen = self.config.settings.generation
        limit = gen.max_tokens_limit
        if max_tokens is not None and max_tokens > limit:
            raise BadRequest(
                f"field 'max_tokens': {max_tokens} is above this daemon's limit of {limit}",
                field="max_tokens",
            )
        sampling = Sampling(
            temperature=gen.temperature if req.temperature is None else req.temperature,
            top_p=gen.top_p if req.top_p is None else req.top_p,
            seed=req.seed,
        )
        stops = (*req.stop_list(), *extra_stops, *self.family.stop_strings)
        return GenerationRequest(prompt, max_tokens or gen.max_tokens, sampling, stops)


def _resident_bytes() -> int | None:
    """This process's resident memory, from /proc (Linux; None elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")
