"""Engine: what the socket's endpoints mean, above the generation engine.

The transport hands over validated protocol objects; this module applies the
config's defaults and limits, renders the prompt for the model's family, and
returns a running Job (or raises a QwendError). It knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from qwend import __version__
from qwend.backends import create_backend
from qwend.backends.base import Backend, Prompt, Sampling
from qwend.config import Config, ModelProfile
from qwend.engine.engine import Engine
from qwend.engine.jobs import GenerationRequest, Job
from qwend.engine.scheduling import Policy
from qwend.errors import (
    BackendUnavailable,
    BadRequest,
    ContextLengthExceeded,
    ModelNotFound,
    NotFound,
)
from qwend.models.cache import require_model
from qwend.protocol import (
    ChatRequest,
    CompleteInput,
    CompletionRequest,
    EmbeddingsRequest,
    SampledRequest,
    TaskInput,
    TokenizeRequest,
    parse_body,
)
from qwend.responses import embeddings_body, encode_embedding, models_body, tokenize_body
from qwend.tasks.prepare import PreparedTask, prepare
from qwend.tasks.prompts import FAMILIES, ChatTurn, nonempty, render_chat
from qwend.tasks.registry import TASK_INPUTS, TASKS


@dataclass(frozen=True)
class TaskJob:
    """A routed task in flight: its generation and the report of its prompt."""

    generation: Job
    prepared: PreparedTask
    stream: bool

    @property
    def sampling(self) -> dict[str, Any]:
        request = self.prepared.request
        return {
            "max_tokens": request.max_tokens,
            "temperature": request.sampling.temperature,
            "top_p": request.sampling.top_p,
            "seed": request.sampling.seed,
        }

    @property
    def budget(self) -> dict[str, Any]:
        return {
            "task": self.prepared.name,
            "lane": self.prepared.lane,
            "template": self.prepared.template,
            **self.prepared.budget.to_dict(),
        }


def _embed(backend: Backend, tokens: list[int]) -> list[float]:
    return backend.embed(tokens)


@dataclass(frozen=True)
class ExactCounting:
    engine: Engine
    mode: str = "exact"

    def count(self, text: str) -> int:
        return self.engine.count(text)

    def count_prompt(self, prompt: Prompt) -> int:
        return self.engine.count_prompt(prompt)

    def count_lines(self, lines: list[str]) -> list[int]:
        return self.engine.count_lines(lines)


@dataclass(frozen=True)
class EstimatedCounting:
    """Characters / chars_per_token, rounded up; only when configured (see config)."""

    chars_per_token: float
    mode: str = "estimate"

    def count(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token)

    def count_prompt(self, prompt: Prompt) -> int:
        return self.count(prompt.text)

    def count_lines(self, lines: list[str]) -> list[int]:
        return [self.count(line) for line in lines]


class InferenceService:
    def __init__(self, engine: Engine, config: Config, socket_path: Path) -> None:
        self.engine = engine
        self.config = config
        self.socket_path = socket_path
        self.family = FAMILIES[config.profile.family]
        self.started_at = time.time()
        self._started_monotonic = time.monotonic()
        self._no_swap = asyncio.Event()  # cleared while a swap holds new requests back
        self._no_swap.set()
        self.serving: tuple[str, ModelProfile] = (config.model_name, config.profile)
        # Set by the daemon's wiring: the config reloader's status and trigger.
        self.reload_status: Callable[[], dict[str, Any]] | None = None
        self.reload_now: Callable[[], Awaitable[dict[str, Any]]] | None = None
        self.log_status: Callable[[], dict[str, Any]] | None = None  # qwend.logsink's health

    def apply_config(self, config: Config) -> None:
        """Sampling, tasks, budgets and limits apply to the next request."""
        self.config = config
        self.engine.set_queue_capacity(config.settings.server.queue_size)
        self.engine.set_policy(scheduling_policy(config))

    async def swap_model(self, config: Config) -> None:
        """Make ``config``'s profile the resident model. Raises QwendError and
        keeps the old one serving if the new one cannot start.

        New requests wait until the swap ends, so none is prepared for one
        model and run on the other; requests already queued finish first.
        """
        backend = create_backend(config)
        await asyncio.to_thread(backend.check)  # may import torch: off the event loop
        require_model(config)
        unload_first = "cuda" in (config.profile.device, self.serving[1].device)
        self._no_swap.clear()
        try:
            await self.engine.swap(backend, config.model_name, unload_first=unload_first)
            self.family = FAMILIES[config.profile.family]
            self.serving = (config.model_name, config.profile)
        finally:
            self._no_swap.set()

    def max_body_bytes(self) -> int:
        return self.config.settings.server.max_body_bytes

    def read_timeout_s(self) -> float:
        return self.config.settings.server.read_timeout_s

    async def reload(self) -> dict[str, Any]:
        if self.reload_now is None:
            raise NotFound("config reloading is not enabled in this daemon")
        return await self.reload_now()

    def _serving_profile(self) -> ModelProfile:
        return self.serving[1]

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    def state(self) -> str:
        return self.engine.state.value

    def health(self) -> dict[str, Any]:
        """/health: the model's state, and for a remote profile its engine as last seen."""
        body: dict[str, Any] = {"status": self.state(), "model": self.model_name}
        engine = self.engine.backend.remote_health()
        if engine is not None:
            body["engine"] = engine
        return body

    async def complete(self, req: CompletionRequest) -> Job:
        """A plain completion; with a ``suffix`` it is the complete task's prompt."""
        await self._no_swap.wait()
        self._check_model(req.model)
        if not req.suffix:
            prompt = nonempty(self.family, Prompt.plain(req.prompt))
            return await self.engine.submit(self._generation(req, prompt, req.max_tokens, []))
        body = CompleteInput(
            prefix=req.prompt,
            suffix=req.suffix,
            max_tokens=req.max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=req.seed,
            stop=req.stop_list(),
        )
        task_job = await self._run_task("complete", body)
        return task_job.generation

    async def task(self, name: str, raw: Any) -> TaskJob:
        """Validate, budget and queue routed task ``name``. Raises NotFound for others."""
        if name not in TASK_INPUTS:
            raise NotFound(
                f"no task named '{name}'",
                hint="tasks: " + ", ".join(TASK_INPUTS),
                tasks=list(TASK_INPUTS),
            )
        body = parse_body(TASK_INPUTS[name], raw)
        await self._no_swap.wait()
        return await self._run_task(name, body)

    async def embed(self, req: EmbeddingsRequest) -> dict[str, Any]:
        await self._no_swap.wait()
        self._check_model(req.model)
        texts = req.texts()
        await self.engine.ensure_loaded()
        ids = [await self.engine.tokenize(text) for text in texts]
        limit = self.engine.backend.context_length
        for index, tokens in enumerate(ids):
            if not tokens or len(tokens) > limit:
                raise ContextLengthExceeded(
                    f"input {index} has {len(tokens)} tokens; embeddings take 1 to {limit}",
                    hint="split the text",
                )
        vectors = [await self.engine.call(partial(_embed, tokens=tokens)) for tokens in ids]
        encoded = [encode_embedding(v, req.encoding_format) for v in vectors]
        return embeddings_body(self.model_name, encoded, sum(len(t) for t in ids))

    async def _run_task(self, name: str, body: TaskInput) -> TaskJob:
        await self.engine.ensure_loaded()
        settings = self.config.settings
        prepared = await asyncio.to_thread(
            prepare,
            name,
            body,
            settings.tasks[name],
            self.family,
            context_length=self.engine.backend.context_length,
            max_tokens_limit=settings.generation.max_tokens_limit,
            counting=self.counting(),
        )
        request = prepared.request
        if prepared.suffix:
            request = replace(request, trim_suffix=prepared.suffix)
        job = await self.engine.submit(request, lane=prepared.lane)
        return TaskJob(job, prepared, body.stream)

    def counting(self) -> ExactCounting | EstimatedCounting:
        """Exact counts from the tokenizer; an estimate only where configured."""
        if self.engine.backend.has_tokenizer:
            return ExactCounting(self.engine)
        budget = self.config.settings.budget
        if budget.estimate_without_tokenizer:
            return EstimatedCounting(budget.chars_per_token)
        raise BackendUnavailable(
            "the model has no tokenizer, so prompts cannot be fitted by exact token counts",
            hint="set budget.estimate_without_tokenizer = true to accept a character estimate",
        )

    def _counting_mode(self) -> str:
        if self.engine.backend.has_tokenizer:
            return "exact"
        return "estimate" if self.config.settings.budget.estimate_without_tokenizer else "none"

    async def chat(self, req: ChatRequest) -> Job:
        await self._no_swap.wait()
        self._check_model(req.model)
        turns = [ChatTurn(m.role, m.content) for m in req.messages]
        prompt = render_chat(self.family, turns)
        return await self.engine.submit(self._generation(req, prompt, req.token_limit(), []))

    async def tokenize(self, req: TokenizeRequest) -> dict[str, Any]:
        await self._no_swap.wait()
        self._check_model(req.model)
        ids = await self.engine.tokenize(req.text)
        return tokenize_body(self.model_name, ids)

    def models(self) -> dict[str, Any]:
        profile = self._serving_profile()
        entry = {
            "id": self.model_name,
            "created": int(self.started_at),
            "owned_by": "qwend",
            "backend": profile.backend,
            "family": profile.family,
            "state": self.state(),
            "context_length": self.engine.backend.context_length,
            "embedding_dimension": self.engine.backend.embedding_dim,
        }
        return models_body([entry])

    def status(self) -> dict[str, Any]:
        """Everything `qwend status` shows; never waits on the generation thread."""
        settings = self.config.settings
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self._started_monotonic, 1),
            "socket": str(self.socket_path),
            "config": self.reload_status() if self.reload_status else None,
            "config_files": [str(p) for p in self.config.files],
            "log": self.log_status() if self.log_status else None,
            "preload": settings.daemon.preload,
            "device": self._serving_profile().device,
            "memory": {"rss_bytes": _resident_bytes()},
            "token_counting": self._counting_mode(),
            # Each task's lane, the registry's where the config does not say.
            "tasks": {name: task.lane or TASKS[name].lane for name, task in settings.tasks.items()},
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
        self, req: SampledRequest, prompt: Prompt, max_tokens: int | None, extra_stops: list[str]
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


def scheduling_policy(config: Config) -> Policy:
    """The engine's scheduling policy from the config's ``[scheduling]`` table."""
    s = config.settings.scheduling
    return Policy(s.preempt, s.starvation_after_s, s.starvation_run_s)


def _resident_bytes() -> int | None:
    """This process's resident memory, from /proc (Linux; None elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")
