"""Integration: a completion preempts a background task on the real CPU model.

The background ``tests`` task streams; as soon as its first text arrives a
``complete`` task is sent, which suspends it (one slot on the CPU backend).
Greedy, both answers must equal the same requests run alone: the suspended
job's output is neither lost nor repeated. The shared daemon serves the
llama.cpp profile, which suspends by "reprefill" (the slot is given up and
prompt plus generated tokens are evaluated again on resume); the
transformers backend's "keep" mode is covered by the unit tests and the
bench integration test.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.fixtures.daemon import Daemon

pytestmark = pytest.mark.slow

BACKGROUND_TOKENS = 48  # long enough to still be running when the completion arrives
CODE = (
    "def merge_intervals(intervals):\n"
    "    out = []\n"
    "    for start, end in sorted(intervals):\n"
    "        if out and start <= out[-1][1]:\n"
    "            out[-1][1] = max(out[-1][1], end)\n"
    "        else:\n"
    "            out.append([start, end])\n"
    "    return out\n"
)
BACKGROUND = {"code": CODE, "language": "python", "max_tokens": BACKGROUND_TOKENS, "temperature": 0}
COMPLETE = {"prefix": "def add(a, b):\n    ", "suffix": "\n", "max_tokens": 12, "temperature": 0}


def _task(daemon: Daemon, name: str, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = daemon.client(timeout=600).request("POST", f"/v1/tasks/{name}", body)
    assert status == 200, answer
    return answer


def _scheduling(daemon: Daemon) -> dict[str, Any]:
    status = daemon.client().request("GET", "/v1/status")[1]
    return dict(status["scheduling"])


def test_a_preempted_background_task_ends_as_if_it_ran_alone(shared_daemon: Daemon) -> None:
    alone = _task(shared_daemon, "tests", BACKGROUND)
    complete_alone = _task(shared_daemon, "complete", COMPLETE)
    assert alone["budget"]["lane"] == "background"
    assert complete_alone["budget"]["lane"] == "completion"
    before = _scheduling(shared_daemon)["preemptions"]

    stream = shared_daemon.client(timeout=600).stream(
        "/v1/tasks/tests", {**BACKGROUND, "stream": True}
    )
    events = [next(stream)]  # the background task is generating
    assert "delta" in events[0], events[0]
    answers: list[dict[str, Any]] = []
    sender = threading.Thread(
        target=lambda: answers.append(_task(shared_daemon, "complete", COMPLETE))
    )
    sender.start()
    events += list(stream)
    sender.join(timeout=600)

    (complete,) = answers
    assert complete["text"] == complete_alone["text"]
    streamed = "".join(e.get("delta", "") for e in events)
    assert streamed == alone["text"]  # nothing lost, nothing repeated
    final = events[-1]
    assert final["usage"] == alone["usage"]
    assert final["finish_reason"] == alone["finish_reason"]
    after = _scheduling(shared_daemon)
    assert after["preemptions"] == before + 1
    assert after["suspended"] == []
    assert after["suspended_total_s"] > 0
    log = shared_daemon.log()
    assert "suspended after" in log and f"({after['suspend_mode']})" in log
    assert "suspended 1x" in log
