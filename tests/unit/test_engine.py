"""The engine over a scripted fake backend: queue, states, stops, cancel, failures."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from qwend.backends.base import Prompt, Sampling
from qwend.engine.engine import Engine
from qwend.engine.jobs import GenerationRequest, Job
from qwend.engine.lanes import LANES, STOP_THREAD, Lanes
from qwend.engine.scheduling import Policy
from qwend.errors import (
    BackendUnavailable,
    BadRequest,
    ContextLengthExceeded,
    GenerationFailed,
    ModelMissing,
    ModelNotLoaded,
    OutOfMemory,
    QueueFull,
    ShuttingDown,
)
from qwend.states import ModelState

WAIT_S = 5.0
SAMPLING = Sampling(temperature=0.0, top_p=1.0, seed=1)

MakeBackend = Callable[..., Any]
MakeEngine = Callable[..., Engine]


def request(
    prompt: str = "p", max_tokens: int = 16, stops: tuple[str, ...] = ()
) -> GenerationRequest:
    return GenerationRequest(
        prompt=Prompt.plain(prompt), max_tokens=max_tokens, sampling=SAMPLING, stops=stops
    )


async def wait_until(predicate: Callable[[], bool], what: str = "condition") -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


async def wait_event(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, WAIT_S), "event never set"


async def ready(engine: Engine) -> Engine:
    await wait_until(lambda: engine.state is ModelState.READY, "ready")
    return engine


async def text_of(job: Job) -> str:
    return await asyncio.wait_for(job.text(), WAIT_S)


def jobs_total(engine: Engine, outcome: str) -> float:
    value = engine.metrics.registry.get_sample_value("qwend_jobs_total", {"outcome": outcome})
    return value or 0.0


def state_metric(engine: Engine, state: str) -> float | None:
    return engine.metrics.registry.get_sample_value(
        "qwend_model_state", {"qwend_model_state": state}
    )


# -- model state ---------------------------------------------------------------------


async def test_preload_goes_unloaded_loading_ready(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    backend = make_backend("x", load_gate=gate)
    engine = make_engine(backend, start=False)
    assert engine.state is ModelState.UNLOADED
    assert state_metric(engine, "unloaded") == 1.0
    engine.start(preload=True)
    await wait_until(lambda: engine.state is ModelState.LOADING, "loading")
    assert state_metric(engine, "loading") == 1.0
    assert engine.load_seconds is None
    gate.set()
    await ready(engine)
    assert state_metric(engine, "ready") == 1.0
    assert state_metric(engine, "loading") == 0.0
    assert backend.load_calls == 1
    assert engine.load_seconds is not None
    assert engine.error is None
    assert engine.metrics.registry.get_sample_value("qwend_model_load_seconds") == pytest.approx(
        engine.load_seconds
    )


async def test_job_submitted_while_loading_runs_once_ready(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    backend = make_backend("ok", load_gate=gate)
    engine = make_engine(backend)
    await wait_until(lambda: engine.state is ModelState.LOADING, "loading")
    job = await engine.submit(request("p", max_tokens=2))
    assert job.prompt_ids is None  # not tokenized before the model is ready
    gate.set()
    assert await text_of(job) == "ok"
    assert engine.state is ModelState.READY


async def test_lazy_model_loads_on_first_submit(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    backend = make_backend("hi")
    engine = make_engine(backend, preload=False)
    await asyncio.sleep(0.05)
    assert engine.state is ModelState.UNLOADED
    assert backend.load_calls == 0
    job = await engine.submit(request("prompt", max_tokens=2))
    assert await text_of(job) == "hi"
    assert engine.state is ModelState.READY
    assert backend.load_calls == 1
    assert backend.generate_calls == [[ord(c) for c in "prompt"]]
    # The second job finds the model loaded.
    assert await text_of(await engine.submit(request("x", max_tokens=1))) == "h"
    assert backend.load_calls == 1


async def test_load_failure_marks_the_model_failed(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    backend = make_backend("x", load_error=ModelMissing("no weights in /models/x"))
    engine = make_engine(backend)
    await wait_until(lambda: engine.state is ModelState.FAILED, "failed")
    assert engine.error is not None
    assert "no weights in /models/x" in engine.error
    assert state_metric(engine, "failed") == 1.0
    with pytest.raises(ModelNotLoaded) as info:
        await engine.submit(request())
    assert info.value.code == "model_not_loaded"
    assert info.value.http_status == 503
    assert "no weights in /models/x" in info.value.message
    assert "fake-model" in info.value.message
    with pytest.raises(ModelNotLoaded):
        await engine.tokenize("abc")
    assert backend.generate_calls == []
    assert engine.snapshot()["model"]["error"] == engine.error


async def test_load_failure_with_a_library_exception(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    engine = make_engine(make_backend("x", load_error=ValueError("bad header")))
    await wait_until(lambda: engine.state is ModelState.FAILED, "failed")
    assert engine.error == "ValueError: bad header"


async def test_lazy_load_failure_fails_the_waiting_job(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    backend = make_backend("x", load_error=ModelMissing("weights gone"))
    engine = make_engine(backend, preload=False)
    job = await engine.submit(request())
    with pytest.raises(ModelNotLoaded, match="weights gone"):
        await text_of(job)
    assert engine.state is ModelState.FAILED
    assert jobs_total(engine, "model_not_loaded") == 1.0
    with pytest.raises(ModelNotLoaded):
        await engine.submit(request())


# -- generation ----------------------------------------------------------------------


async def test_text_and_finish_length(make_backend: MakeBackend, make_engine: MakeEngine) -> None:
    backend = make_backend("hello world")
    engine = await ready(make_engine(backend))
    job = await engine.submit(request("abc", max_tokens=5))
    assert job.prompt_ids == [97, 98, 99]
    assert await text_of(job) == "hello"
    assert job.finish_reason == "length"
    assert job.usage == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert backend.generate_calls == [[97, 98, 99]]
    assert backend.samplings == [SAMPLING]
    assert jobs_total(engine, "length") == 1.0
    assert engine.metrics.registry.get_sample_value("qwend_generated_tokens_total") == 5.0
    assert engine.metrics.registry.get_sample_value("qwend_prompt_tokens_total") == 3.0
    assert engine.stats.completed == 1


async def test_script_shorter_than_max_tokens_ends_with_length(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    engine = await ready(make_engine(make_backend("hi")))
    job = await engine.submit(request(max_tokens=10))
    assert await text_of(job) == "hi"
    assert job.finish_reason == "length"
    assert job.usage["completion_tokens"] == 2


async def test_stream_yields_deltas(make_backend: MakeBackend, make_engine: MakeEngine) -> None:
    engine = await ready(make_engine(make_backend("abc")))
    job = await engine.submit(request(max_tokens=3))
    deltas = [d async for d in job.stream()]
    assert deltas == ["a", "b", "c"]
    assert job.finish is not None
    assert job.finish.reason == "length"
    assert job.finish.time_to_first_token_s is not None


async def test_stop_token_ends_with_stop(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    backend = make_backend([ord("h"), ord("i"), 0, ord("x"), ord("y")])
    engine = await ready(make_engine(backend))
    job = await engine.submit(request(max_tokens=10))
    assert await text_of(job) == "hi"
    assert job.finish_reason == "stop"
    assert backend.yielded == 3  # nothing is generated past the stop token
    assert backend.closed == 1
    assert jobs_total(engine, "stop") == 1.0


async def test_stop_string_ends_with_stop(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    backend = make_backend("hello world, and more")
    engine = await ready(make_engine(backend))
    job = await engine.submit(request(max_tokens=50, stops=("wor",)))
    assert await text_of(job) == "hello "
    assert job.finish_reason == "stop"
    assert backend.yielded == len("hello wor")


async def test_partial_stop_string_never_reaches_the_client(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    engine = await ready(make_engine(make_backend("hello")))
    job = await engine.submit(request(max_tokens=10, stops=("lo",)))
    deltas = [d async for d in job.stream()]
    assert deltas == ["h", "e", "l"]  # the first "l" was held, then released
    assert job.finish_reason == "stop"


async def test_held_partial_stop_is_released_at_the_end(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    engine = await ready(make_engine(make_backend("say <|im")))
    job = await engine.submit(request(max_tokens=20, stops=("<|im_end|>",)))
    assert await text_of(job) == "say <|im"
    assert job.finish_reason == "length"


async def test_context_length_exceeded_at_submit(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    backend = make_backend("abcdef", context_length=10)
    engine = await ready(make_engine(backend))
    with pytest.raises(ContextLengthExceeded) as info:
        await engine.submit(request("abcdef", max_tokens=5))
    err = info.value
    assert err.code == "context_length_exceeded"
    assert err.http_status == 400
    assert err.details == {"prompt_tokens": 6, "max_tokens": 5, "context_length": 10}
    assert engine.queue_depth == 0
    # Exactly the context fits.
    job = await engine.submit(request("abcdef", max_tokens=4))
    assert await text_of(job) == "abcd"
    assert backend.generate_calls == [[ord(c) for c in "abcdef"]]


@pytest.mark.parametrize("preload", [True, False])
async def test_an_empty_prompt_is_a_bad_request_not_a_failed_generation(
    make_backend: MakeBackend, make_engine: MakeEngine, preload: bool
) -> None:
    """No backend can predict from zero tokens; the endpoints never send an empty
    prompt (tasks/prompts.nonempty), and anything else gets a 400, not a 500."""
    backend = make_backend("abc")
    engine = make_engine(backend, preload=preload)
    if preload:
        await ready(engine)
    with pytest.raises(BadRequest, match="the prompt is empty"):
        await text_of(await engine.submit(request("")))
    assert backend.generate_calls == []


async def test_context_length_exceeded_with_a_lazy_model(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    backend = make_backend("abc", context_length=8)
    engine = make_engine(backend, preload=False)
    job = await engine.submit(request("abcdef", max_tokens=3))
    with pytest.raises(ContextLengthExceeded):
        await text_of(job)
    assert backend.generate_calls == []
    assert jobs_total(engine, "context_length_exceeded") == 1.0


async def test_tokenize_loads_a_lazy_model(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    backend = make_backend("x")
    engine = make_engine(backend, preload=False)
    await asyncio.sleep(0.02)
    assert engine.state is ModelState.UNLOADED
    assert await engine.tokenize("ab") == [97, 98]
    assert engine.state is ModelState.READY
    assert backend.load_calls == 1
    assert await engine.tokenize("") == []
    assert backend.load_calls == 1
    engine2 = await ready(make_engine(make_backend("x")))
    assert await engine2.tokenize("ab") == [97, 98]


async def test_tokenize_after_a_failed_load(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    backend = make_backend("x", load_error=ModelMissing("weights gone"))
    engine = make_engine(backend, preload=False)
    with pytest.raises(ModelNotLoaded, match="weights gone"):
        await engine.tokenize("ab")  # the lazy load runs, fails, and says why
    assert engine.state is ModelState.FAILED
    assert backend.load_calls == 1
    with pytest.raises(ModelNotLoaded, match="weights gone"):
        await engine.tokenize("ab")  # refused at once, no second load
    assert backend.load_calls == 1


# -- queue and cancellation ------------------------------------------------------------


async def test_queue_full(make_backend: MakeBackend, make_engine: MakeEngine) -> None:
    gate = threading.Event()
    backend = make_backend("ab", step_gate=gate)
    engine = await ready(make_engine(backend, queue_size=1))
    running = await engine.submit(request("1", max_tokens=2))
    await wait_event(backend.started)
    assert engine.busy
    waiting = await engine.submit(request("2", max_tokens=2))
    assert engine.queue_depth == 1
    assert engine.metrics.registry.get_sample_value("qwend_queue_depth") == 1.0
    with pytest.raises(QueueFull) as info:
        await engine.submit(request("3", max_tokens=2))
    assert info.value.code == "queue_full"
    assert info.value.http_status == 429
    assert "interactive lane" in info.value.message
    # Each lane is bounded on its own: the background lane still has room.
    background = await engine.submit(request("b", max_tokens=2), lane="background")
    assert engine.queue_depth == 2
    assert engine.metrics.registry.get_sample_value("qwend_queue_depth") == 2.0
    with pytest.raises(QueueFull, match="background lane"):
        await engine.submit(request("c", max_tokens=2), lane="background")
    snap = engine.snapshot()
    assert snap["queue"] == {
        "completion": 0,
        "interactive": 1,
        "background": 1,
        "capacity_per_lane": 1,
        "active": 1,
        "slots": 1,
        "suspended": 0,
    }
    gate.set()
    assert await text_of(running) == "ab"
    assert await text_of(waiting) == "ab"
    assert await text_of(background) == "ab"
    # The refused jobs never ran; interactive went before background.
    assert backend.generate_calls == [[ord("1")], [ord("2")], [ord("b")]]
    # Room again once the queue drained.
    assert await text_of(await engine.submit(request("4", max_tokens=1))) == "a"
    assert engine.snapshot()["queue"]["interactive"] == 0


async def test_cancelled_queued_job_never_runs(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    backend = make_backend("abc", step_gate=gate)
    engine = await ready(make_engine(backend))
    running = await engine.submit(request("run", max_tokens=3))
    await wait_event(backend.started)
    queued = await engine.submit(request("queued", max_tokens=3))
    queued.cancel()
    assert queued.cancelled
    gate.set()
    assert await text_of(running) == "abc"
    assert await text_of(queued) == ""
    assert queued.finish_reason == "cancelled"
    assert queued.usage == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert backend.generate_calls == [[ord(c) for c in "run"]]
    assert jobs_total(engine, "cancelled") == 1.0
    assert jobs_total(engine, "length") == 1.0
    # The engine goes on serving.
    assert await text_of(await engine.submit(request("next", max_tokens=1))) == "a"


async def test_cancel_running_job_stops_within_one_step(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    backend = make_backend("z" * 1000, step_gate=gate, context_length=4096)
    engine = await ready(make_engine(backend))
    job = await engine.submit(request(max_tokens=1000))
    await wait_event(backend.started)
    job.cancel()
    gate.set()
    assert await text_of(job) == ""
    assert job.finish_reason == "cancelled"
    assert backend.yielded == 1  # the step in flight, then nothing more
    assert backend.closed == 1  # the engine closed the generator
    assert jobs_total(engine, "cancelled") == 1.0
    await wait_until(lambda: not engine.busy, "the thread to go idle")


async def test_cancel_mid_stream(make_backend: MakeBackend, make_engine: MakeEngine) -> None:
    backend = make_backend("y" * 5000, step_delay_s=0.001, context_length=8192)
    engine = await ready(make_engine(backend))
    job = await engine.submit(request(max_tokens=5000))
    received = ""
    yielded_at_cancel = -1
    async for delta in job.stream():
        received += delta
        if len(received) >= 3 and not job.cancelled:
            yielded_at_cancel = backend.yielded
            job.cancel()
    assert job.finish_reason == "cancelled"
    assert 3 <= yielded_at_cancel <= backend.yielded <= yielded_at_cancel + 1
    assert backend.yielded < 5000
    assert set(received) == {"y"}


async def test_out_of_memory_fails_one_job_only(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    backend = make_backend("ok")
    engine = await ready(make_engine(backend))
    backend.fail_next(OutOfMemory("CUDA out of memory"), after=1)
    job = await engine.submit(request(max_tokens=2))
    with pytest.raises(OutOfMemory) as info:
        await text_of(job)
    assert info.value.code == "out_of_memory"
    assert info.value.http_status == 503
    assert jobs_total(engine, "out_of_memory") == 1.0
    assert engine.state is ModelState.READY
    nxt = await engine.submit(request(max_tokens=2))
    assert await text_of(nxt) == "ok"
    assert nxt.finish_reason == "length"


async def test_host_memory_error_becomes_out_of_memory(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    backend = make_backend("ok")
    engine = await ready(make_engine(backend))
    backend.fail_next(MemoryError())
    with pytest.raises(OutOfMemory, match="host ran out of memory"):
        await text_of(await engine.submit(request(max_tokens=2)))
    assert await text_of(await engine.submit(request(max_tokens=2))) == "ok"


async def test_backend_exception_becomes_generation_failed(
    make_backend: MakeBackend, make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    backend = make_backend("ok")
    engine = await ready(make_engine(backend))
    backend.fail_next(RuntimeError("kernel exploded"), after=1)
    job = await engine.submit(request(max_tokens=2))
    with pytest.raises(GenerationFailed) as info:
        await text_of(job)
    assert info.value.code == "generation_failed"
    assert info.value.http_status == 500
    assert "kernel exploded" not in info.value.message  # no internals to the client
    assert "kernel exploded" in caplog.text  # but the log has them
    assert jobs_total(engine, "generation_failed") == 1.0
    assert engine.state is ModelState.READY
    assert await text_of(await engine.submit(request(max_tokens=2))) == "ok"


# -- shutdown --------------------------------------------------------------------------


async def test_close_cancels_queued_and_running_jobs(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    backend = make_backend("abc", step_gate=gate)
    engine = await ready(make_engine(backend))
    running = await engine.submit(request("1", max_tokens=3))
    await wait_event(backend.started)
    queued = [await engine.submit(request(str(i), max_tokens=3)) for i in (2, 3)]
    closing = asyncio.create_task(asyncio.to_thread(engine.close, WAIT_S))
    for job in queued:  # close() finishes queued jobs before it waits for the thread
        assert await text_of(job) == ""
        assert job.finish_reason == "cancelled"
    await wait_until(lambda: running.cancelled, "close() to cancel the running job")
    gate.set()
    await asyncio.wait_for(closing, WAIT_S)
    assert await text_of(running) == ""
    assert running.finish_reason == "cancelled"
    assert backend.generate_calls == [[ord("1")]]
    assert jobs_total(engine, "cancelled") == 3.0
    assert backend.unload_calls == 1
    assert engine.state is ModelState.UNLOADED
    with pytest.raises(ShuttingDown) as info:
        await engine.submit(request())
    assert info.value.code == "shutting_down"


async def test_close_an_idle_engine(make_backend: MakeBackend, make_engine: MakeEngine) -> None:
    backend = make_backend("x")
    engine = await ready(make_engine(backend))
    await asyncio.to_thread(engine.close, WAIT_S)
    assert backend.unload_calls == 1
    assert engine.state is ModelState.UNLOADED
    with pytest.raises(ShuttingDown):
        engine.require_available()


# -- snapshot --------------------------------------------------------------------------


async def test_snapshot(make_backend: MakeBackend, make_engine: MakeEngine) -> None:
    backend = make_backend("ab", context_length=128)
    engine = make_engine(backend, preload=False, queue_size=7)
    snap = engine.snapshot()
    assert snap["model"] == {
        "name": "fake-model",
        "backend": "fake",
        "state": "unloaded",
        "swapping_to": None,
        "error": None,
        "load_seconds": None,
        "context_length": 128,
    }
    assert snap["queue"] == {
        "completion": 0,
        "interactive": 0,
        "background": 0,
        "suspended": 0,
        "capacity_per_lane": 7,
        "active": 0,
        "slots": 1,
    }
    assert snap["performance"]["completed_jobs"] == 0
    assert await text_of(await engine.submit(request(max_tokens=2))) == "ab"
    snap = engine.snapshot()
    assert snap["model"]["state"] == "ready"
    assert snap["model"]["device"] == "fake"  # describe() is merged once ready
    assert snap["performance"]["completed_jobs"] == 1


# -- lanes -----------------------------------------------------------------------------


def test_lanes_serve_interactive_first_fifo_within_a_lane() -> None:
    lanes = Lanes(capacity=3)
    for item in ("b1", "b2"):
        lanes.put(item, "background")
    for item in ("i1", "i2"):
        lanes.put(item, "interactive")
    assert (lanes.depth(), lanes.depth("interactive"), lanes.depth("background")) == (4, 2, 2)
    assert [lanes.get() for _ in range(2)] == ["i1", "i2"]
    lanes.put("i3", "interactive")  # arrives after b1 and b2, still goes first
    assert [lanes.get() for _ in range(3)] == ["i3", "b1", "b2"]
    assert lanes.depth() == 0


def test_lanes_are_bounded_separately() -> None:
    lanes = Lanes(capacity=2)
    lanes.put(1, "interactive")
    lanes.put(2, "interactive")
    with pytest.raises(queue.Full):
        lanes.put(3, "interactive")
    lanes.put(4, "background")  # the other lane has its own room
    lanes.put(5, "background")
    with pytest.raises(queue.Full):
        lanes.put(6, "background")
    assert lanes.get() == 1
    lanes.put(7, "interactive")  # room again once one left
    assert lanes.drain() == [2, 7, 4, 5]
    assert lanes.depth() == 0


def test_lanes_stop_sentinel_goes_first_and_get_waits() -> None:
    lanes = Lanes(capacity=1)
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(lanes.get()))
    reader.start()
    time.sleep(0.02)
    assert got == []  # blocked on the empty lanes
    lanes.put("b", "background")
    reader.join(WAIT_S)
    assert got == ["b"]
    lanes.put("i", "interactive")
    lanes.put_stop()
    assert lanes.get() is STOP_THREAD
    assert lanes.get() == "i"
    assert LANES == ("completion", "interactive", "background")


async def test_interactive_jobs_run_before_background_ones(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    backend = make_backend("a", step_gate=gate)
    # Without preemption the lanes only order the queue (test_preemption.py has the rest).
    engine = await ready(make_engine(backend, queue_size=4, policy=Policy(preempt=False)))
    running = await engine.submit(request("0", max_tokens=1), lane="background")
    await wait_event(backend.started)
    jobs = [
        await engine.submit(request("b1", max_tokens=1), lane="background"),
        await engine.submit(request("b2", max_tokens=1), lane="background"),
        await engine.submit(request("i1", max_tokens=1), lane="interactive"),
        await engine.submit(request("i2", max_tokens=1)),  # interactive by default
    ]
    assert engine.snapshot()["queue"] == {
        "completion": 0,
        "interactive": 2,
        "background": 2,
        "capacity_per_lane": 4,
        "active": 1,
        "slots": 1,
        "suspended": 0,
    }
    gate.set()
    for job in (running, *jobs):
        assert await text_of(job) == "a"
    order = ["".join(map(chr, ids)) for ids in backend.generate_calls]
    assert order == ["0", "i1", "i2", "b1", "b2"]


# -- calls on the generation thread ----------------------------------------------------


async def test_call_runs_on_the_generation_thread(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    backend = make_backend("x")
    engine = await ready(make_engine(backend))
    seen = await engine.call(lambda b: (threading.current_thread().name, b))
    assert seen == ("qwend-generation", backend)
    assert await engine.call(lambda b: 42, lane="background") == 42
    assert engine.queue_depth == 0


async def test_ensure_loaded_loads_a_lazy_model(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    backend = make_backend("x")
    engine = make_engine(backend, preload=False)
    await asyncio.sleep(0.02)
    assert engine.state is ModelState.UNLOADED
    assert backend.load_calls == 0
    await asyncio.wait_for(engine.ensure_loaded(), WAIT_S)
    assert engine.state is ModelState.READY
    assert backend.load_calls == 1
    await engine.ensure_loaded()  # already ready: returns at once, no second load
    assert backend.load_calls == 1


async def test_ensure_loaded_waits_for_a_preload_in_progress(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    backend = make_backend("x", load_gate=gate)
    engine = make_engine(backend)
    await wait_until(lambda: engine.state is ModelState.LOADING, "loading")
    waiter = asyncio.create_task(engine.ensure_loaded())
    await asyncio.sleep(0.02)
    assert not waiter.done()
    gate.set()
    await asyncio.wait_for(waiter, WAIT_S)
    assert engine.state is ModelState.READY
    assert backend.load_calls == 1


async def test_call_after_a_failed_load(make_backend: MakeBackend, make_engine: MakeEngine) -> None:
    backend = make_backend("x", load_error=ModelMissing("weights gone"))
    engine = make_engine(backend, preload=False)
    ran: list[bool] = []
    with pytest.raises(ModelNotLoaded, match="weights gone"):
        await engine.call(lambda b: ran.append(True))
    assert ran == []
    with pytest.raises(ModelNotLoaded):
        await engine.ensure_loaded()
    assert backend.load_calls == 1


async def test_call_errors(
    make_backend: MakeBackend, make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await ready(make_engine(make_backend("x")))

    def qwend_error(backend: Any) -> None:
        raise BackendUnavailable("no embeddings here")

    def library_bug(backend: Any) -> None:
        raise ZeroDivisionError("secret internals")

    with pytest.raises(BackendUnavailable, match="no embeddings here"):
        await engine.call(qwend_error)
    with pytest.raises(GenerationFailed) as info:
        await engine.call(library_bug)
    assert "secret internals" not in info.value.message
    assert "secret internals" in caplog.text
    assert await engine.call(lambda b: "still serving") == "still serving"


async def test_cancelled_queued_call_is_skipped(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    backend = make_backend("ab", step_gate=gate)
    engine = await ready(make_engine(backend))
    running = await engine.submit(request("1", max_tokens=2))
    await wait_event(backend.started)
    ran: list[str] = []
    waiting = asyncio.create_task(engine.call(lambda b: ran.append("cancelled")))
    await wait_until(lambda: engine.queue_depth == 1, "the call to be queued")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    after = asyncio.create_task(engine.call(lambda b: ran.append("after")))
    gate.set()
    assert await text_of(running) == "ab"
    await asyncio.wait_for(after, WAIT_S)
    assert ran == ["after"]  # the cancelled call never ran, the next one did
    assert engine.queue_depth == 0


async def test_call_on_a_full_lane_is_refused(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    backend = make_backend("ab", step_gate=gate)
    engine = await ready(make_engine(backend, queue_size=1))
    running = await engine.submit(request("1", max_tokens=2))
    await wait_event(backend.started)
    queued = await engine.submit(request("2", max_tokens=2))
    with pytest.raises(QueueFull, match="interactive lane"):
        await engine.call(lambda b: None)
    in_background = asyncio.create_task(engine.call(lambda b: "bg", lane="background"))
    gate.set()
    assert await asyncio.wait_for(in_background, WAIT_S) == "bg"
    for job in (running, queued):
        assert await text_of(job) == "ab"


async def test_close_refuses_queued_calls(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    backend = make_backend("ab", step_gate=gate)
    engine = await ready(make_engine(backend))
    running = await engine.submit(request("1", max_tokens=2))
    await wait_event(backend.started)
    ran: list[bool] = []
    pending = asyncio.create_task(engine.call(lambda b: ran.append(True)))
    await wait_until(lambda: engine.queue_depth == 1, "the call to be queued")
    closing = asyncio.create_task(asyncio.to_thread(engine.close, WAIT_S))
    with pytest.raises(ShuttingDown):
        await asyncio.wait_for(pending, WAIT_S)
    gate.set()
    await asyncio.wait_for(closing, WAIT_S)
    assert await text_of(running) == ""
    assert ran == []
    with pytest.raises(ShuttingDown):
        await engine.call(lambda b: None)


# -- several jobs side by side (a batching backend) ------------------------------------


async def test_jobs_run_side_by_side_one_token_per_round(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    backend = make_backend(
        "abc", max_concurrent=2, load_gate=threading.Event(), step_gate=gate, context_length=256
    )
    engine = make_engine(backend)  # both jobs queue while the model loads
    first = await engine.submit(request("1", max_tokens=3))
    second = await engine.submit(request("2", max_tokens=3))
    assert backend.load_gate is not None
    backend.load_gate.set()
    await wait_until(lambda: engine.snapshot()["queue"]["active"] == 2, "both jobs to start")
    gate.set()
    assert [await text_of(first), await text_of(second)] == ["abc", "abc"]
    runs = [run for run, _ in backend.steps_log]
    assert runs == [0, 1, 0, 1, 0, 1]  # interleaved, not one job after the other


async def test_a_third_job_waits_for_a_free_slot(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    backend = make_backend(
        "ab", max_concurrent=2, load_gate=threading.Event(), step_gate=gate, context_length=256
    )
    engine = make_engine(backend)
    jobs = [await engine.submit(request(str(n), max_tokens=2)) for n in range(3)]
    assert backend.load_gate is not None
    backend.load_gate.set()
    await wait_until(lambda: engine.snapshot()["queue"]["active"] == 2, "two jobs to start")
    assert engine.queue_depth == 1
    gate.set()
    assert [await text_of(job) for job in jobs] == ["ab", "ab", "ab"]
    assert ["".join(map(chr, ids)) for ids in backend.generate_calls] == ["0", "1", "2"]


async def test_cancelling_one_of_two_running_jobs_frees_its_slot_only(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    backend = make_backend("x" * 2000, max_concurrent=2, step_delay_s=0.001, context_length=4096)
    engine = await ready(make_engine(backend))
    doomed = await engine.submit(request("d", max_tokens=2000))
    kept = await engine.submit(request("k", max_tokens=50))
    async for _ in doomed.stream():
        doomed.cancel()
    assert doomed.finish_reason == "cancelled"
    assert await text_of(kept) == "x" * 50
    doomed_steps = sum(1 for run, _ in backend.steps_log if run == 0)
    assert doomed_steps < 100  # it stopped while the other job went on
    await wait_until(lambda: backend.closed == 2, "both generators to close")


async def test_a_failing_job_leaves_the_others_running(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    backend = make_backend(
        "abcd", max_concurrent=2, load_gate=threading.Event(), context_length=256
    )
    backend.fail_next(OutOfMemory("the GPU ran out of memory"), after=1)
    engine = make_engine(backend)
    failing = await engine.submit(request("f", max_tokens=4))
    fine = await engine.submit(request("o", max_tokens=4))
    assert backend.load_gate is not None
    backend.load_gate.set()
    with pytest.raises(OutOfMemory):
        await text_of(failing)
    assert await text_of(fine) == "abcd"
    assert jobs_total(engine, "out_of_memory") == 1.0


async def test_a_swap_waits_for_running_jobs_and_holds_new_ones(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    old = make_backend("old", max_concurrent=2, step_gate=gate, context_length=256)
    new = make_backend("new", context_length=256)
    engine = await ready(make_engine(old))
    running = await engine.submit(request("r", max_tokens=3))
    await wait_event(old.started)
    swap = asyncio.create_task(engine.swap(new, "new-model", unload_first=False))
    await wait_until(lambda: engine.queue_depth == 1, "the hand-over to queue")
    later = await engine.submit(request("l", max_tokens=3), lane="background")
    gate.set()  # the hand-over is taken while a job runs: it is held, and holds `later`
    assert await text_of(running) == "old"
    await asyncio.wait_for(swap, WAIT_S)
    assert await text_of(later) == "new"
    assert len(old.generate_calls) == 1
    assert old.unload_calls == 1
    assert engine.model_name == "new-model"


async def test_close_settles_a_held_swap_instead_of_running_it(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    old = make_backend("x" * 2000, max_concurrent=2, step_delay_s=0.002, context_length=4096)
    new = make_backend("new", context_length=256)
    engine = await ready(make_engine(old))
    running = await engine.submit(request("r", max_tokens=2000))
    await wait_event(old.started)
    swap = asyncio.create_task(engine.swap(new, "new-model", unload_first=True))
    await wait_until(lambda: engine._held is not None, "the hand-over to be held")
    await asyncio.to_thread(engine.close, WAIT_S)
    with pytest.raises(ShuttingDown):
        await asyncio.wait_for(swap, WAIT_S)
    assert running.cancelled
    assert new.load_calls == 0  # the new model was never loaded during shutdown


async def test_queued_jobs_whose_clients_left_free_their_places_at_once(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    backend = make_backend("ab", step_gate=gate)
    engine = await ready(make_engine(backend, queue_size=3))
    running = await engine.submit(request("1", max_tokens=2))
    await wait_event(backend.started)
    left = [await engine.submit(request(f"q{i}", max_tokens=2)) for i in range(3)]
    for job in left:  # what the handler does when its client disconnects
        job.cancel()
    # The model is still busy with the first job, yet the lane is empty again.
    assert engine.queue_depth == 0
    assert engine.metrics.registry.get_sample_value("qwend_queue_depth") == 0.0
    assert jobs_total(engine, "cancelled") == 3
    for job in left:
        assert await text_of(job) == ""
        assert job.finish_reason == "cancelled"
    live = [await engine.submit(request(f"l{i}", max_tokens=2)) for i in range(3)]
    gate.set()
    for job in (running, *live):
        assert await text_of(job) == "ab"
    assert len(backend.generate_calls) == 4  # the cancelled ones never ran


async def test_a_queued_call_whose_caller_left_frees_its_place(
    make_backend: MakeBackend, make_engine: MakeEngine
) -> None:
    gate = threading.Event()
    backend = make_backend("ab", step_gate=gate)
    engine = await ready(make_engine(backend, queue_size=1))
    running = await engine.submit(request("1", max_tokens=2))
    await wait_event(backend.started)
    waiting = asyncio.create_task(engine.call(lambda b: "never"))
    await wait_until(lambda: engine.queue_depth == 1, "the call queued")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert engine.queue_depth == 0
    after = asyncio.create_task(engine.call(lambda b: "ran"))
    gate.set()
    assert await asyncio.wait_for(after, WAIT_S) == "ran"
    assert await text_of(running) == "ab"
