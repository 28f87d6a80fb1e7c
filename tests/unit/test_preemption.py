"""Preemption in the engine, over the scripted fake backend.

The fake's first step of the background job is held at a gate while the
higher-lane job is queued, so every test knows exactly after which token the
suspension happens. Both suspend modes are run: "keep" (the iterator stays
open, like the transformers backend) and "reprefill" (the iterator is closed
and the base class's ``resume`` re-runs prompt + generated tokens, the
contract a single-context backend implements).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from qwend.backends.base import Prompt, Sampling
from qwend.engine.engine import Engine
from qwend.engine.jobs import GenerationRequest, Job
from qwend.engine.scheduling import Policy
from qwend.states import ModelState

WAIT_S = 5.0
GREEDY = Sampling(temperature=0.0, top_p=1.0, seed=1)
SCRIPT = "abcdefgh"

MakeBackend = Callable[..., Any]
MakeEngine = Callable[..., Engine]
MODES = ("keep", "reprefill")


def request(prompt: str, max_tokens: int) -> GenerationRequest:
    return GenerationRequest(prompt=Prompt.plain(prompt), max_tokens=max_tokens, sampling=GREEDY)


async def ready(engine: Engine) -> Engine:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while engine.state is not ModelState.READY:
        assert asyncio.get_running_loop().time() < deadline, "engine never ready"
        await asyncio.sleep(0.002)
    return engine


async def wait_event(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, WAIT_S), "event never set"


async def text_of(job: Job) -> str:
    return await asyncio.wait_for(job.text(), WAIT_S)


def sample(engine: Engine, name: str, labels: dict[str, str] | None = None) -> float:
    return engine.metrics.registry.get_sample_value(name, labels or {}) or 0.0


async def background_then(
    engine: Engine, gate: threading.Event, backend: Any, lane: str, max_tokens: int = 3
) -> tuple[Job, Job]:
    """Start a background job, hold its first step, queue ``lane``'s job, let go."""
    background = await engine.submit(request("P", len(SCRIPT)), lane="background")
    await wait_event(backend.started)
    urgent = await engine.submit(request("Q", max_tokens), lane=lane)
    gate.set()
    return background, urgent


@pytest.mark.parametrize("mode", MODES)
async def test_a_completion_suspends_background_work_which_resumes_whole(
    make_backend: MakeBackend, make_engine: MakeEngine, mode: str
) -> None:
    gate = threading.Event()
    backend = make_backend(SCRIPT, step_gate=gate, suspend_mode=mode, continues=True)
    engine = await ready(make_engine(backend))
    background, completion = await background_then(engine, gate, backend, "completion")
    assert await text_of(completion) == "abc"
    assert await text_of(background) == SCRIPT  # nothing lost, nothing repeated
    # One background token, then the whole completion, then the rest of the background.
    order = [(run, chr(token)) for run, token in backend.steps_log]
    assert order[:4] == [(0, "a"), (1, "a"), (1, "b"), (1, "c")]
    assert "".join(token for _, token in order[4:]) == SCRIPT[1:]
    if mode == "keep":
        assert [run for run, _ in order[4:]] == [0] * 7  # the same iterator, never rebuilt
        assert len(backend.generate_calls) == 2
    else:  # closed on suspend, re-run over prompt + the token already sent
        assert [run for run, _ in order[4:]] == [2] * 7
        assert backend.generate_calls[2] == [ord(c) for c in "Pa"]
    assert background.finish is not None and completion.finish is not None
    assert background.finish.completion_tokens == len(SCRIPT)
    assert background.finish.suspensions == 1
    assert background.finish.suspended_s > 0
    assert completion.finish.suspensions == 0
    assert sample(engine, "qwend_preemptions_total", {"lane": "background"}) == 1
    assert sample(engine, "qwend_suspended_jobs") == 0
    assert sample(engine, "qwend_suspended_seconds_count") == 1
    assert sample(engine, "qwend_resume_step_seconds_count") == 1
    snap = engine.snapshot()["scheduling"]
    assert snap["preemptions"] == 1
    assert snap["suspend_mode"] == mode
    assert snap["suspended"] == []
    assert snap["suspended_total_s"] == pytest.approx(background.finish.suspended_s, abs=1e-3)


async def test_lanes_preempt_in_rank_order(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    """An interactive job preempts background work; a completion preempts both."""
    gate = threading.Event()
    backend = make_backend(SCRIPT, step_gate=gate, suspend_mode="keep")
    engine = await ready(make_engine(backend))
    background = await engine.submit(request("B", 4), lane="background")
    await wait_event(backend.started)
    interactive = await engine.submit(request("I", 2), lane="interactive")
    completion = await engine.submit(request("C", 1), lane="completion")
    later = await engine.submit(request("L", 1), lane="background")
    gate.set()
    texts = [await text_of(job) for job in (background, interactive, completion, later)]
    assert texts == ["abcd", "ab", "a", "a"]
    prompts = ["".join(map(chr, ids)) for ids in backend.generate_calls]
    assert prompts == ["B", "C", "I", "L"]  # the completion first; L waits for B
    runs = [run for run, _ in backend.steps_log]
    assert runs == [0, 1, 2, 2, 0, 0, 0, 3]


async def test_a_free_slot_means_no_preemption(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    backend = make_backend(SCRIPT, step_gate=gate, max_concurrent=2)
    engine = await ready(make_engine(backend))
    background, completion = await background_then(engine, gate, backend, "completion")
    assert await text_of(completion) == "abc"
    assert await text_of(background) == SCRIPT
    assert engine.preemptions == 0
    assert background.finish is not None and background.finish.suspensions == 0


async def test_preemption_off_lets_the_running_job_finish(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    backend = make_backend(SCRIPT, step_gate=gate)
    engine = await ready(make_engine(backend, policy=Policy(preempt=False)))
    background, completion = await background_then(engine, gate, backend, "completion")
    assert await text_of(background) == SCRIPT
    assert await text_of(completion) == "abc"
    assert [run for run, _ in backend.steps_log] == [0] * len(SCRIPT) + [1] * 3
    assert engine.preemptions == 0


@pytest.mark.parametrize("mode", MODES)
async def test_a_cancelled_suspended_job_is_freed_before_the_next_step(
    make_backend: MakeBackend,
    make_engine: MakeEngine,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While the completion runs, the suspended job's client leaves: the engine
    closes its iterator before the completion's next token, and reports it."""
    gate = threading.Event()
    paused = threading.Event()  # the completion's first step is being taken
    go_on = threading.Event()
    closed_at_second_step: list[int] = []
    holder: dict[str, Any] = {}

    def on_step(run: int, step: int) -> None:
        if run == 1 and step == 0:
            holder["snapshot"] = holder["engine"].snapshot()
            paused.set()
            assert go_on.wait(WAIT_S)
        if run == 1 and step == 1:
            closed_at_second_step.append(backend.closed)

    backend = make_backend(SCRIPT, step_gate=gate, suspend_mode=mode, on_step=on_step)
    engine = await ready(make_engine(backend))
    holder["engine"] = engine
    caplog.set_level(logging.INFO, logger="qwend.engine.engine")
    background, completion = await background_then(engine, gate, backend, "completion")
    await wait_event(paused)
    # While it is suspended, status shows the job, its lane and its output so far.
    (entry,) = holder["snapshot"]["scheduling"]["suspended"]
    assert (entry["job"], entry["lane"], entry["tokens"]) == (background.id, "background", 1)
    assert holder["snapshot"]["queue"]["suspended"] == 1
    background.cancel()
    go_on.set()
    assert await text_of(completion) == "abc"
    assert await text_of(background) == "a"
    assert background.finish is not None and background.finish.reason == "cancelled"
    assert background.finish.suspensions == 1
    assert closed_at_second_step == [1]  # the background iterator, before step 2
    assert len(backend.generate_calls) == 2  # never resumed
    assert sample(engine, "qwend_jobs_total", {"outcome": "cancelled"}) == 1
    assert sample(engine, "qwend_suspended_jobs") == 0
    line = next(r.getMessage() for r in caplog.records if f"job {background.id}:" in r.message)
    assert "cancelled" in line and "suspended 1x" in line


async def test_close_cancels_and_reports_a_suspended_job(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    paused = threading.Event()
    go_on = threading.Event()

    def on_step(run: int, step: int) -> None:
        if run == 1 and step == 0:
            paused.set()
            assert go_on.wait(WAIT_S)

    backend = make_backend(SCRIPT, step_gate=gate, suspend_mode="keep", on_step=on_step)
    engine = await ready(make_engine(backend))
    background, completion = await background_then(engine, gate, backend, "completion")
    await wait_event(paused)
    closing = asyncio.create_task(asyncio.to_thread(engine.close, WAIT_S))
    await asyncio.sleep(0.05)  # close() has cancelled both jobs; now let the step end
    go_on.set()
    await asyncio.wait_for(closing, WAIT_S)
    assert await text_of(background) == "a"
    assert await text_of(completion) == ""  # cancelled during its step: its token not sent
    assert background.finish is not None and background.finish.reason == "cancelled"
    assert completion.finish is not None and completion.finish.reason == "cancelled"
    assert backend.closed == 2  # both iterators closed: nothing left in memory


async def test_a_model_call_runs_between_steps_of_a_lower_lane(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    backend = make_backend(SCRIPT, step_gate=gate)
    engine = await ready(make_engine(backend))
    background = await engine.submit(request("B", len(SCRIPT)), lane="background")
    await wait_event(backend.started)
    call = asyncio.create_task(
        engine.call(lambda b: b.steps_log.append((-1, 0)), lane="interactive")
    )
    while engine.queue_depth == 0:
        await asyncio.sleep(0.002)
    gate.set()
    await asyncio.wait_for(call, WAIT_S)
    assert await text_of(background) == SCRIPT
    assert backend.steps_log.index((-1, 0)) == 1  # after the first token, not the last
    assert engine.preemptions == 0  # a call needs no slot


async def test_a_starved_job_runs_ahead_of_a_newer_completion(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    """The age rule end to end: the suspended job has waited past
    starvation_after_s when the slot frees; a completion that arrived just now
    waits behind it, and cannot suspend it during its protected run."""
    policy = Policy(starvation_after_s=1.0, starvation_run_s=60.0)
    gate = threading.Event()
    paused = threading.Event()
    go_on = threading.Event()

    def on_step(run: int, step: int) -> None:
        if run == 1 and step == 0:
            paused.set()
            assert go_on.wait(WAIT_S)

    backend = make_backend(SCRIPT, step_gate=gate, suspend_mode="keep", on_step=on_step)
    engine = await ready(make_engine(backend, policy=policy))
    background, first = await background_then(engine, gate, backend, "completion", max_tokens=1)
    await wait_event(paused)  # the first completion runs; the background is suspended
    await asyncio.sleep(1.2)  # ... for longer than starvation_after_s
    second = await engine.submit(request("R", 1), lane="completion")
    go_on.set()
    texts = [await text_of(job) for job in (background, first, second)]
    assert texts == [SCRIPT, "a", "a"]
    runs = [run for run, _ in backend.steps_log]
    assert runs == [0, 1, *[0] * (len(SCRIPT) - 1), 2]  # protected: never suspended again
    assert background.finish is not None and background.finish.suspensions == 1
    assert sample(engine, "qwend_starvation_promotions_total") == 1


async def test_a_job_suspended_after_its_last_token_is_not_reprefilled(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    backend = make_backend(SCRIPT, step_gate=gate, suspend_mode="reprefill", continues=True)
    engine = await ready(make_engine(backend))
    background = await engine.submit(request("P", 1), lane="background")
    await wait_event(backend.started)
    completion = await engine.submit(request("Q", 2), lane="completion")
    gate.set()
    assert (await text_of(background), await text_of(completion)) == ("a", "ab")
    assert background.finish is not None and background.finish.suspensions == 1
    assert len(backend.generate_calls) == 2  # no third run for zero remaining tokens
