"""Integration: routed tasks and embeddings from the real daemon with SmolLM2."""

from __future__ import annotations

import math
from typing import Any

import httpx
import openai
import pytest

from tests.fixtures.daemon import Daemon

pytestmark = pytest.mark.slow

CODE = "def add(a, b):\n    return a + b\n"
INPUTS: dict[str, dict[str, Any]] = {
    "complete": {"prefix": "def fibonacci(n):\n    ", "suffix": "\n", "language": "python"},
    "explain": {"code": CODE, "language": "python", "path": "calc.py"},
    "refactor": {"code": CODE, "language": "python", "instruction": "Use type hints."},
    "docstring": {"code": CODE, "language": "python"},
    "tests": {"code": CODE, "language": "python"},
    "fix": {"code": "def add(a, b):\n    return a - b\n", "instruction": "It should add."},
    "commit_message": {"diff": "--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-helo\n+hello\n"},
    "chat": {"messages": [{"role": "user", "content": "What is a Python list?"}]},
    "reasoning": {"messages": [{"role": "user", "content": "Is 17 prime?"}]},
}


def _task(daemon: Daemon, name: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return daemon.client(timeout=300).request("POST", f"/v1/tasks/{name}", body)


def _check_budget(budget: dict[str, Any]) -> None:
    assert budget["counting"] == "exact"
    parts = sum(part["tokens"] for part in budget["parts"])
    assert parts + budget["template_tokens"] == budget["prompt_tokens"]
    assert budget["prompt_tokens"] <= budget["input_budget"]
    assert budget["input_budget"] + budget["max_tokens"] <= budget["context_length"]


@pytest.mark.parametrize("name", list(INPUTS))
def test_each_task_returns_model_text_and_its_budget(shared_daemon: Daemon, name: str) -> None:
    status, answer = _task(shared_daemon, name, {**INPUTS[name], "max_tokens": 12})
    assert status == 200, answer
    assert answer["task"] == name
    assert answer["model"] == "smollm2-135m"
    assert answer["text"].strip()
    assert answer["usage"]["completion_tokens"] >= 1
    assert answer["budget"]["task"] == name
    _check_budget(answer["budget"])


def test_task_lanes_and_templates_are_reported(shared_daemon: Daemon) -> None:
    _, explain = _task(shared_daemon, "explain", {**INPUTS["explain"], "max_tokens": 4})
    assert (explain["budget"]["lane"], explain["budget"]["template"]) == ("interactive", "chat")
    _, tests = _task(shared_daemon, "tests", {**INPUTS["tests"], "max_tokens": 4})
    assert tests["budget"]["lane"] == "background"
    _, complete = _task(shared_daemon, "complete", {**INPUTS["complete"], "max_tokens": 4})
    # SmolLM2 has no fill-in-the-middle tokens: the prompt form says so.
    assert complete["budget"]["template"] == "prefix"
    assert complete["budget"]["lane"] == "completion"


def test_complete_in_a_3000_line_file_keeps_the_nearest_lines(shared_daemon: Daemon) -> None:
    lines = [f"def func_{i}(x):\n    return x * {i}\n" for i in range(1500)]
    before, after = "".join(lines[:750]), "".join(lines[750:])
    body = {"prefix": before + "def middle(a, b):\n    ", "suffix": after, "max_tokens": 8}
    status, answer = _task(shared_daemon, "complete", body)
    assert status == 200, answer
    budget = answer["budget"]
    _check_budget(budget)
    prefix = next(p for p in budget["parts"] if p["name"] == "prefix")
    assert prefix["dropped"] == "start"  # the far end of the file went, not the cursor's side
    assert 0 < prefix["kept_lines"] < prefix["total_lines"]
    assert prefix["original_tokens"] > budget["input_budget"]


def test_task_streams_deltas_then_final_budget(shared_daemon: Daemon) -> None:
    events = list(
        shared_daemon.client(timeout=300).stream(
            "/v1/tasks/chat", {**INPUTS["chat"], "max_tokens": 12, "stream": True}
        )
    )
    deltas = [e["delta"] for e in events if "delta" in e]
    assert len(deltas) >= 2 and "".join(deltas).strip()
    final = events[-1]
    assert final["finish_reason"] in ("stop", "length")
    _check_budget(final["budget"])


def test_unknown_task_lists_the_tasks(shared_daemon: Daemon) -> None:
    status, answer = _task(shared_daemon, "poem", {})
    assert status == 404
    assert answer["error"]["tasks"] == list(INPUTS)


def test_invalid_task_input_names_the_field(shared_daemon: Daemon) -> None:
    status, answer = _task(shared_daemon, "explain", {"code": CODE, "colour": "red"})
    assert (status, answer["error"]["field"]) == (400, "colour")
    status, answer = _task(shared_daemon, "explain", {"language": "python"})
    assert (status, answer["error"]["field"]) == (400, "code")


def test_required_code_too_large_is_refused_with_numbers(shared_daemon: Daemon) -> None:
    status, answer = _task(shared_daemon, "explain", {"code": "x = 1\n" * 9000})
    assert status == 400
    assert answer["error"]["code"] == "context_length_exceeded"
    assert answer["error"]["input_budget"] < answer["error"]["required_tokens"]


def test_completion_with_suffix_uses_the_complete_task(shared_daemon: Daemon) -> None:
    status, answer = shared_daemon.client(timeout=300).request(
        "POST",
        "/v1/completions",
        {"prompt": "def area(r):\n    ", "suffix": "\nprint(area(2))\n", "max_tokens": 24},
    )
    assert status == 200, answer
    text = answer["choices"][0]["text"]
    assert "print(area(2))" not in text  # never repeats the text after the cursor


def test_embeddings_are_deterministic_unit_vectors(shared_daemon: Daemon) -> None:
    _, models = shared_daemon.client().request("GET", "/v1/models")
    dimension = models["data"][0]["embedding_dimension"]
    assert dimension == 576  # SmolLM2-135M's hidden size
    texts = ["def add(a, b): return a + b", "the cat sat on the mat"]
    status, first = shared_daemon.client(timeout=120).request(
        "POST", "/v1/embeddings", {"input": texts}
    )
    assert status == 200, first
    vectors = [item["embedding"] for item in first["data"]]
    assert [item["index"] for item in first["data"]] == [0, 1]
    assert all(len(v) == dimension for v in vectors)
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vectors)
    assert vectors[0] != vectors[1]
    _, again = shared_daemon.client(timeout=120).request(
        "POST", "/v1/embeddings", {"input": texts[0]}
    )
    assert again["data"][0]["embedding"] == vectors[0]
    assert first["usage"]["prompt_tokens"] > 0


def test_openai_client_embeddings_default_base64(shared_daemon: Daemon) -> None:
    http_client = httpx.Client(transport=httpx.HTTPTransport(uds=str(shared_daemon.socket)))
    client = openai.OpenAI(base_url="http://qwend/v1", api_key="unused", http_client=http_client)
    result = client.embeddings.create(model="smollm2-135m", input=["def f(): pass"])
    vector = result.data[0].embedding  # sent as base64 float32, decoded by the client
    _, plain = shared_daemon.client(timeout=120).request(
        "POST", "/v1/embeddings", {"input": "def f(): pass"}
    )
    expected = plain["data"][0]["embedding"]
    assert len(vector) == len(expected) == 576
    assert all(
        math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
        for a, b in zip(vector, expected, strict=True)
    )
    http_client.close()


def test_empty_embedding_input_is_a_bad_request(shared_daemon: Daemon) -> None:
    status, answer = shared_daemon.client().request("POST", "/v1/embeddings", {"input": ["ok", ""]})
    assert (status, answer["error"]["code"], answer["error"]["field"]) == (
        400,
        "bad_request",
        "input",
    )
