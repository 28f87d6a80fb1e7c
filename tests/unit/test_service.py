"""The service layer over a fake engine: token counting choice, routed tasks end
to end (validate, budget, queue on the task's lane, generate, trim), embeddings."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qwend.config import load_config
from qwend.engine.engine import Engine
from qwend.engine.service import EstimatedCounting, ExactCounting, InferenceService
from qwend.errors import (
    BackendUnavailable,
    BadRequest,
    ContextLengthExceeded,
    ModelNotFound,
    NotFound,
)
from qwend.protocol import CompletionRequest, EmbeddingsRequest
from qwend.states import ModelState

WAIT_S = 5.0

MakeBackend = Callable[..., Any]
MakeEngine = Callable[..., Engine]


def raw(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


@pytest.fixture
def make_service(
    xdg: Path, make_backend: MakeBackend, make_engine: MakeEngine
) -> Callable[..., InferenceService]:
    """A service over a fake engine; the config is the shipped one plus ``toml``."""

    def make(
        *,
        script: str = "ok",
        has_tokenizer: bool = True,
        toml: str = "",
        preload: bool = True,
        context_length: int = 16384,
        step_gate: threading.Event | None = None,
    ) -> InferenceService:
        class Backend(make_backend):  # type: ignore[misc, valid-type]
            @property
            def has_tokenizer(self) -> bool:
                return has_tokenizer

            @property
            def embedding_dim(self) -> int | None:
                return 2

            def embed(self, ids: list[int]) -> list[float]:
                self.embed_threads.append(threading.current_thread().name)
                norm = math.hypot(len(ids), sum(ids))
                return [len(ids) / norm, sum(ids) / norm]

        if toml:
            path = xdg / "config" / "qwend" / "config.toml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(toml)
        backend = Backend(script, context_length=context_length, step_gate=step_gate)
        backend.embed_threads = []
        engine = make_engine(backend, queue_size=2, preload=preload)
        return InferenceService(engine, load_config(), xdg / "run" / "qwend.sock")

    return make


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not predicate():
            await asyncio.sleep(0.002)


# -- token counting ------------------------------------------------------------------


def test_estimated_counting() -> None:
    counting = EstimatedCounting(3.5)
    assert counting.mode == "estimate"
    assert counting.count("") == 0
    assert counting.count("abc") == 1
    assert counting.count("abcd") == 2  # rounded up
    assert counting.count("a" * 35) == 10
    assert counting.count_lines(["abcd\n", "", "x" * 8]) == [2, 0, 3]
    assert EstimatedCounting(1.0).count("中文") == 2  # characters, not bytes


async def test_exact_counting_with_a_tokenizer(
    make_service: Callable[..., InferenceService],
) -> None:
    service = make_service()
    counting = service.counting()
    assert isinstance(counting, ExactCounting)
    assert counting.mode == "exact"
    assert counting.count("héllo") == 5  # the fake backend: one token per character
    assert counting.count_lines(["ab\n", "", "c"]) == [3, 0, 1]
    assert service.status()["token_counting"] == "exact"


async def test_no_tokenizer_refuses_tasks_by_default(
    make_service: Callable[..., InferenceService],
) -> None:
    service = make_service(has_tokenizer=False)
    with pytest.raises(BackendUnavailable) as info:
        service.counting()
    assert "budget.estimate_without_tokenizer" in info.value.hint
    with pytest.raises(BackendUnavailable):
        await service.task("explain", raw(code="x = 1"))
    assert service.status()["token_counting"] == "none"
    assert service.engine.queue_depth == 0


async def test_no_tokenizer_estimates_when_configured(
    make_service: Callable[..., InferenceService],
) -> None:
    service = make_service(
        has_tokenizer=False, toml="[budget]\nestimate_without_tokenizer = true\n"
    )
    counting = service.counting()
    assert isinstance(counting, EstimatedCounting)
    assert counting.chars_per_token == 3.5
    assert service.status()["token_counting"] == "estimate"
    run = await service.task("explain", raw(code="x = 1"))
    assert run.budget["counting"] == "estimate"
    assert run.budget["task"] == "explain"
    prompt = run.generation.request.prompt.text
    assert run.budget["prompt_tokens"] == math.ceil(len(prompt) / 3.5)
    assert await asyncio.wait_for(run.generation.text(), WAIT_S) == "ok"


async def test_chars_per_token_comes_from_the_config(
    make_service: Callable[..., InferenceService],
) -> None:
    service = make_service(
        has_tokenizer=False,
        toml="[budget]\nestimate_without_tokenizer = true\nchars_per_token = 2.0\n",
    )
    counting = service.counting()
    assert isinstance(counting, EstimatedCounting)
    assert counting.count("abcde") == 3


# -- routed tasks --------------------------------------------------------------------


async def test_task_end_to_end(make_service: Callable[..., InferenceService]) -> None:
    service = make_service(script="A docstring.")
    run = await service.task("docstring", raw(code="def f(): pass", max_tokens=50))
    assert run.stream is False
    budget = run.budget
    assert {k: budget[k] for k in ("task", "lane", "template", "counting", "max_tokens")} == {
        "task": "docstring",
        "lane": "interactive",
        "template": "chat",
        "counting": "exact",
        "max_tokens": 50,
    }
    assert budget["context_length"] == 16384
    assert run.sampling == {"max_tokens": 50, "temperature": 0.1, "top_p": 0.95, "seed": None}
    assert budget["input_budget"] == 16384 - 50
    prompt = run.generation.request.prompt.text
    assert budget["prompt_tokens"] == len(prompt)  # exact: the fake's one token per char
    assert "Code:\n```\ndef f(): pass\n```" in prompt
    assert await asyncio.wait_for(run.generation.text(), WAIT_S) == "A docstring."


async def test_unknown_task_is_not_found(make_service: Callable[..., InferenceService]) -> None:
    service = make_service()
    with pytest.raises(NotFound) as info:
        await service.task("summarize", raw(code="x"))
    assert "summarize" in info.value.message
    assert info.value.details["tasks"] == [
        "complete", "explain", "refactor", "docstring", "tests", "fix",
        "commit_message", "chat", "reasoning",
    ]  # fmt: skip


async def test_task_input_is_validated(make_service: Callable[..., InferenceService]) -> None:
    service = make_service()
    with pytest.raises(BadRequest) as info:
        await service.task("explain", raw(code="x", prefix="y"))
    assert info.value.details == {"field": "prefix"}


async def test_task_runs_on_its_lane(make_service: Callable[..., InferenceService]) -> None:
    gate = threading.Event()
    service = make_service(script="ab", step_gate=gate)
    first = await service.task("chat", raw(messages=[{"role": "user", "content": "1"}]))
    await until(lambda: service.engine.busy)
    background = await service.task("refactor", raw(code="x = 1"))
    interactive = await service.task("fix", raw(code="y = 2"))
    assert background.budget["lane"] == "background"
    queue = service.engine.snapshot()["queue"]
    assert (queue["interactive"], queue["background"], queue["active"]) == (1, 1, 1)
    gate.set()
    for run in (first, background, interactive):
        assert await asyncio.wait_for(run.generation.text(), WAIT_S) == "ab"
    # The interactive job queued after the background one still ran before it.
    prompts = ["".join(map(chr, ids)) for ids in service.engine.backend.generate_calls]
    assert "y = 2" in prompts[1]
    assert "x = 1" in prompts[2]


async def test_task_loads_a_lazy_model(make_service: Callable[..., InferenceService]) -> None:
    service = make_service(preload=False)
    assert service.engine.state is ModelState.UNLOADED
    run = await service.task("chat", raw(messages=[{"role": "user", "content": "hi"}]))
    assert service.engine.state is ModelState.READY
    assert run.budget["counting"] == "exact"
    assert await asyncio.wait_for(run.generation.text(), WAIT_S) == "ok"


async def test_completion_with_a_suffix_uses_the_complete_task(
    make_service: Callable[..., InferenceService],
) -> None:
    service = make_service(script="a, b)")
    req = CompletionRequest(prompt="print(f(", suffix=")\n", temperature=0.0, max_tokens=10)
    job = await service.complete(req)
    # The shipped model profile is Qwen2.5: a FIM prompt, and the suffix trims the answer.
    assert job.request.prompt.text == "<|fim_prefix|>print(f(<|fim_suffix|>)\n<|fim_middle|>"
    assert job.request.trim_suffix == ")\n"
    assert job.request.sampling.temperature == 0.0
    assert job.request.max_tokens == 10
    assert "<|fim_middle|>" in job.request.stops
    assert await asyncio.wait_for(job.text(), WAIT_S) == "a, b"  # ")" was already there


async def test_task_too_large_for_the_window(
    make_service: Callable[..., InferenceService],
) -> None:
    service = make_service(context_length=1200)
    with pytest.raises(ContextLengthExceeded) as info:
        await service.task("explain", raw(code="x" * 1000))
    assert info.value.details["input_budget"] == 1200 - 512
    assert info.value.details["required_tokens"] > 1000
    assert service.engine.queue_depth == 0


# -- embeddings ----------------------------------------------------------------------


async def test_embed(make_service: Callable[..., InferenceService]) -> None:
    service = make_service(preload=False)
    body = await service.embed(EmbeddingsRequest(input=["ab", "c"]))
    assert body["object"] == "list"
    assert body["model"] == "fake-model"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    for item in body["data"]:
        assert item["object"] == "embedding"
        assert math.isclose(math.hypot(*item["embedding"]), 1.0)
    # The model was loaded, and every embed() ran on the generation thread.
    assert service.engine.state is ModelState.READY
    assert service.engine.backend.embed_threads == ["qwend-generation"] * 2
    single = await service.embed(EmbeddingsRequest(input="ab"))
    assert single["data"][0]["embedding"] == body["data"][0]["embedding"]
    packed = await service.embed(EmbeddingsRequest(input="ab", encoding_format="base64"))
    vector = struct.unpack("<2f", base64.b64decode(packed["data"][0]["embedding"]))
    assert vector == pytest.approx(body["data"][0]["embedding"], rel=1e-6)  # float32


async def test_embed_refusals(make_service: Callable[..., InferenceService]) -> None:
    service = make_service(context_length=4)
    with pytest.raises(BadRequest, match="must not be empty"):
        await service.embed(EmbeddingsRequest(input=["a", ""]))
    with pytest.raises(ContextLengthExceeded, match="input 0 has 5 tokens"):
        await service.embed(EmbeddingsRequest(input="abcde"))
    with pytest.raises(ModelNotFound):
        await service.embed(EmbeddingsRequest(input="a", model="other"))
    with pytest.raises(BadRequest, match="at most 256"):
        await service.embed(EmbeddingsRequest(input=["a"] * 257))
    assert service.engine.backend.embed_threads == []
