"""Engine: one generation thread, bounded queues, and the model's state.

The asyncio side (HTTP handlers) never touches the model. It calls
``submit``, which checks the request against the context window and puts a
Job on a bounded queue (full: QueueFull at once), then awaits the Job's
events. The single generation thread owns the backend: it loads the model
(at start, or on the first job when ``preload`` is off) and runs as many
jobs side by side as the backend batches (``Backend.max_concurrent``; one
for the CPU backend), advancing each by one token per round. It checks every
job's cancel flag before each of its steps, so a client that goes away frees
its slot within one step. A job cancelled while queued is never run, and
leaves its lane at once (Lanes.withdraw), so its place is free for others.

Between two rounds the thread asks scheduling.py what to do next: admit the
best waiting work into a free slot, or suspend a running job of a lower lane
so that a queued job of a higher one gets its slot (preemption). Suspended
jobs are held here, not in the lanes; a cancelled one is freed before the next
step, and each one is resumed, with its output so far, when a slot is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from qwend.backends.base import Backend, Prompt
from qwend.engine.jobs import Finish, GenerationRequest, Job, RunningStream
from qwend.engine.lanes import LANES, STOP_THREAD, Lanes
from qwend.engine.scheduling import Admit, Policy, Suspend, decide
from qwend.engine.stats import Stats
from qwend.errors import (
    BadRequest,
    ContextLengthExceeded,
    GenerationFailed,
    ModelNotLoaded,
    QueueFull,
    QwendError,
    ShuttingDown,
)
from qwend.metrics import Metrics
from qwend.states import SERVING_STATES, ModelState

log = logging.getLogger(__name__)

# A text-streaming backend (remote) may have nothing new in a round; the thread
# then waits this long for its next piece before looking at the queue again,
# which bounds how late a new job or a cancel is noticed.
IDLE_WAIT_S: Final = 0.02
RESUME_STEPS_KEPT = 256  # recent resume costs behind status's median: minutes of typing


@dataclass
class _Call:
    """Run ``fn(backend)`` on the generation thread; the result lands in ``future``.

    An ``exclusive`` call (the model hand-over) waits until no job is running.
    """

    fn: Callable[[Backend], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    exclusive: bool = False

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        def apply() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
            self.loop.call_soon_threadsafe(apply)


class Engine:
    """Owns the backend and its thread. Thread-safe methods say so."""

    def __init__(
        self,
        backend: Backend,
        *,
        model_name: str,
        queue_size: int,
        metrics: Metrics,
        policy: Policy | None = None,
    ) -> None:
        self.backend = backend
        self.model_name = model_name
        self.metrics = metrics
        self.stats = Stats()
        self.state = ModelState.UNLOADED
        self.error: str | None = None
        self.load_seconds: float | None = None
        self.swap_target: str | None = None
        self._lanes = Lanes(queue_size)
        self._streams: list[RunningStream] = []  # running jobs; only the thread changes it
        self._suspended: list[RunningStream] = []  # preempted jobs; only the thread changes it
        self.policy = policy or Policy()
        self.preemptions = 0  # suspensions since start
        self.suspended_total_s = 0.0  # time finished jobs spent suspended, all together
        self._resume_steps: deque[float] = deque(maxlen=RESUME_STEPS_KEPT)
        self._held: _Call | None = None  # an exclusive call waiting for the jobs to end
        self._accepting = True
        self._tokenize_lock = threading.Lock()  # HF fast tokenizers are not re-entrant
        self._thread = threading.Thread(target=self._run, name="qwend-generation", daemon=True)
        self._preload = True
        self._set_state(ModelState.UNLOADED)

    # -- lifecycle -----------------------------------------------------------

    def start(self, *, preload: bool) -> None:
        self._preload = preload
        self._thread.start()

    def close(self, timeout: float) -> None:
        """Refuse new jobs, cancel queued and running ones, stop the thread."""
        self._accepting = False
        if not self._thread.is_alive():
            return
        for stream in (*self._streams, *self._suspended):
            stream.job.cancel()
        for item in self._lanes.drain():
            if isinstance(item, Job):
                item.cancel()
                self._finish_cancelled(item)
            elif isinstance(item, _Call):
                item.settle(error=ShuttingDown("the daemon is shutting down"))
        self._lanes.put_stop()
        self._thread.join(timeout)

    # -- asyncio side --------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return self._lanes.depth()

    @property
    def queue_capacity(self) -> int:
        return self._lanes.capacity

    @property
    def busy(self) -> bool:
        """A job is running or suspended (a suspended one still holds its output)."""
        return bool(self._streams or self._suspended)

    def require_available(self) -> None:
        """Raise ModelNotLoaded or ShuttingDown if no job could be accepted now."""
        if not self._accepting:
            raise ShuttingDown("the daemon is shutting down", hint="retry once it is back")
        if self.state is ModelState.FAILED:
            raise ModelNotLoaded(
                f"model '{self.model_name}' failed to load: {self.error}",
                hint="run `qwend status` for details; fix the cause and restart the daemon",
            )

    async def ensure_loaded(self) -> None:
        """Return once the model is ready; with lazy loading this loads it.

        Raises ModelNotLoaded if loading failed, QueueFull if the queue is full.
        """
        if self.state.value not in SERVING_STATES:
            await self.call(lambda backend: None)

    async def call(self, fn: Callable[[Backend], Any], lane: str = "interactive") -> Any:
        """Run ``fn(backend)`` on the generation thread, in queue order.

        The one way besides generation to touch the model (embeddings, the
        lazy first load), so the backend only ever sees one thread.
        """
        self.require_available()
        loop = asyncio.get_running_loop()
        call = _Call(fn, loop.create_future(), loop)
        self._enqueue(call, lane)
        try:
            return await call.future
        finally:
            call.future.cancel()  # a no-op once settled
            if call.future.cancelled():  # the caller left: a queued call leaves its lane now
                self._withdraw(call)

    async def tokenize(self, text: str) -> list[int]:
        """Exact token ids from the resident model's tokenizer (off the loop)."""
        await self.ensure_loaded()
        return await asyncio.to_thread(self._tokenize, text)

    def count(self, text: str) -> int:
        """Exact token count; the model must be ready. Thread-safe."""
        return len(self._tokenize(text))

    def count_prompt(self, prompt: Prompt) -> int:
        """Exact token count of a rendered prompt, as ``submit`` encodes it. Thread-safe."""
        return len(self._encode(prompt))

    def count_lines(self, lines: list[str]) -> list[int]:
        """Exact token count of each string, in one batch. Thread-safe."""
        with self._tokenize_lock:
            return [len(ids) for ids in self.backend.tokenize_batch(lines)]

    async def submit(self, request: GenerationRequest, lane: str = "interactive") -> Job:
        """Queue a generation. Raises QueueFull, ContextLengthExceeded, ModelNotLoaded.

        When the model is ready the prompt is tokenized and checked here, so
        an over-long prompt never reaches the queue; with a lazy model that
        check happens in the thread once the model is loaded.
        """
        self.require_available()
        prompt_ids = None
        if self.state.value in SERVING_STATES:
            prompt_ids = await asyncio.to_thread(self._prompt_ids, request)
        job = Job(request=request, loop=asyncio.get_running_loop(), prompt_ids=prompt_ids)
        job.on_cancel = partial(self._withdraw, job)
        self._enqueue(job, lane)
        return job

    def _withdraw(self, item: Job | _Call) -> None:
        """A queued item whose client left frees its place now; thread-safe."""
        if self._lanes.withdraw(item):
            self.metrics.queue_depth.set(self._lanes.depth())
            if isinstance(item, Job):
                self._finish_cancelled(item)

    def _enqueue(self, item: Job | _Call, lane: str) -> None:
        try:
            self._lanes.put(item, lane)
        except queue.Full:
            raise QueueFull(
                f"{self._lanes.capacity} requests are already waiting in the {lane} lane",
                hint="retry shortly, or raise server.queue_size",
            ) from None
        self.metrics.queue_depth.set(self._lanes.depth())

    def set_queue_capacity(self, capacity: int) -> None:
        """Applies to the next request; requests already waiting stay queued."""
        self._lanes.capacity = capacity

    def set_policy(self, policy: Policy) -> None:
        """Applies from the thread's next decision on (one attribute: atomic)."""
        self.policy = policy

    async def swap(self, backend: Backend, model_name: str, *, unload_first: bool) -> None:
        """Replace the resident model; raises QwendError and keeps the old one if
        the new one cannot load.

        Jobs queued before the swap finish on the old model: the hand-over is
        queued behind them. With ``unload_first`` (memory cannot hold both)
        the old model is unloaded only then, and reloaded if the new one fails.
        """
        old_name = self.model_name
        self.swap_target = model_name
        self._set_state(ModelState.SWAPPING)
        try:
            if not unload_first:
                await asyncio.to_thread(_load_or_raise, backend)
            loop = asyncio.get_running_loop()
            handover = _Call(
                partial(self._install, backend, model_name, unload_first),
                loop.create_future(),
                loop,
                exclusive=True,
            )
            self._lanes.put_last(handover)
            await handover.future
            log.info("model swapped: '%s' -> '%s'", old_name, model_name)
        finally:
            self.swap_target = None
            if self.state is ModelState.SWAPPING:
                self._set_state(ModelState.READY)

    def _install(self, backend: Backend, model_name: str, unload_first: bool, _: Backend) -> None:
        """On the generation thread, with nothing else running."""
        old = self.backend
        if unload_first:
            old.unload()
            try:
                _load_or_raise(backend)
            except QwendError:
                log.error("new model failed to load; reloading '%s'", self.model_name)
                old.load()
                raise
        else:
            old.unload()
        self.backend = backend
        self.model_name = model_name

    # -- generation thread ---------------------------------------------------

    def _run(self) -> None:
        if self._preload:
            self._load()
        while self._admit():
            self._step_streams()
        for stream in (*self._streams, *self._suspended):  # close() cancelled them
            stream.job.cancel()
            stream.reason = "cancelled"
            self._end(stream)
        self.backend.unload()
        self._set_state(ModelState.UNLOADED)

    def _admit(self) -> bool:
        """Apply scheduling decisions until the running jobs should step; False
        once told to stop.

        Waits for work only when nothing is running or suspended. A held
        exclusive call keeps queued work waiting until the running and the
        suspended jobs have ended.
        """
        while True:
            self._reap_suspended()
            if self._held is not None:
                if self._suspended and len(self._streams) < self.backend.max_concurrent:
                    self._resume(min(self._suspended, key=_suspended_since))
                    continue
                if self._streams:
                    return True
                held, self._held = self._held, None
                self._run_call(held)
                continue
            if not self._streams and not self._suspended:
                self._lanes.wait()
            now = time.monotonic()
            heads = self._lanes.heads()
            if heads.get(LANES[0]) is STOP_THREAD:
                return False
            decision = decide(
                now,
                self.policy,
                running=self._streams,
                suspended=self._suspended,
                heads=[(lane, _queued_at(item, now), item) for lane, item in heads.items()],
                slots=self.backend.max_concurrent,
                needs_slot=lambda item: isinstance(item, Job),
            )
            if decision is None:
                return True
            if isinstance(decision, Suspend):
                assert isinstance(decision.stream, RunningStream)
                self._suspend(decision.stream, now)
                continue
            self._apply_admit(decision, now)

    def _apply_admit(self, decision: Admit, now: float) -> None:
        waiting = decision.waiting
        if waiting.suspended:
            assert isinstance(waiting.item, RunningStream)
            self._resume(waiting.item)
            stream = waiting.item
        else:
            item = waiting.item
            if not self._lanes.take(waiting.lane, item):  # gone meanwhile: decide again
                return
            self.metrics.queue_depth.set(self._lanes.depth())
            if isinstance(item, _Call):
                if item.exclusive and (self._streams or self._suspended):
                    self._held = item
                else:
                    self._run_call(item)
                return
            assert isinstance(item, Job)
            if not self._accepting:  # dequeued while close() was draining the queue
                item.cancel()
            before = len(self._streams)
            self._start(item, waiting.lane)
            if len(self._streams) == before:
                return
            stream = self._streams[-1]
        if decision.protect_until is not None:
            stream.protected_until = decision.protect_until
            self.metrics.starvation_promotions.inc()
            log.info(
                "job %d (%s) waited %.1fs: runs ahead of higher lanes for %.1fs",
                stream.job.id,
                stream.lane,
                now - waiting.since,
                self.policy.starvation_run_s,
            )

    def _suspend(self, stream: RunningStream, now: float) -> None:
        """Between two steps: the stream keeps its output; its slot is free."""
        self._streams.remove(stream)
        try:
            stream.suspend(now)
        except Exception:  # closing a backend iterator failed: the job cannot resume
            log.exception("suspending job %d failed", stream.job.id)
            self._fail(stream.job, GenerationFailed("generation failed", hint="see the daemon log"))
            return
        self._suspended.append(stream)
        self.preemptions += 1
        self.metrics.preemptions.labels(lane=stream.lane).inc()
        self.metrics.suspended_jobs.set(len(self._suspended))
        log.info(
            "job %d (%s) suspended after %d tokens for a higher lane (%s)",
            stream.job.id,
            stream.lane,
            stream.produced,
            self.backend.suspend_mode,
        )

    def _resume(self, stream: RunningStream) -> None:
        self._suspended.remove(stream)
        self.metrics.suspended_jobs.set(len(self._suspended))
        try:
            stream.resume(time.monotonic())
        except QwendError as exc:
            stream.close()
            self._fail(stream.job, exc)
            return
        except Exception:  # a backend bug must fail this job, not the thread
            log.exception("resuming job %d failed", stream.job.id)
            stream.close()
            self._fail(stream.job, GenerationFailed("generation failed", hint="see the daemon log"))
            return
        self._streams.append(stream)

    def _reap_suspended(self) -> None:
        """End every suspended job whose client went away: its cache is freed now."""
        for stream in [s for s in self._suspended if s.job.cancelled]:
            self._suspended.remove(stream)
            self.metrics.suspended_jobs.set(len(self._suspended))
            stream.reason = "cancelled"
            self._end(stream)

    def _load(self) -> None:
        self._set_state(ModelState.LOADING)
        started = time.monotonic()
        log.info("loading model '%s' with the %s backend", self.model_name, self.backend.name)
        try:
            self.backend.load()
        except QwendError as exc:
            self._fail_load(str(exc))
            return
        except Exception as exc:  # any library error while loading: report, keep serving
            log.exception("model load failed")
            self._fail_load(f"{type(exc).__name__}: {exc}")
            return
        self.load_seconds = time.monotonic() - started
        self.metrics.model_load_seconds.set(self.load_seconds)
        log.info("model '%s' ready in %.2fs", self.model_name, self.load_seconds)
        self._set_state(ModelState.READY)

    def _fail_load(self, message: str) -> None:
        self.error = message
        log.error("model '%s' failed to load: %s", self.model_name, message)
        self._set_state(ModelState.FAILED)

    def _run_call(self, call: _Call) -> None:
        if call.future.done():  # the caller gave up while it waited
            return
        if self.state is ModelState.UNLOADED:
            self._load()
        try:
            self.require_available()
            call.settle(result=call.fn(self.backend))
        except QwendError as exc:
            call.settle(error=exc)
        except Exception:  # a backend bug must fail this call, not the thread
            log.exception("call on the generation thread failed")
            call.settle(error=GenerationFailed("the model call failed", hint="see the daemon log"))

    def _start(self, job: Job, lane: str) -> None:
        if job.cancelled:
            self._finish_cancelled(job)
            return
        if self.state is ModelState.UNLOADED:
            self._load()
        try:
            self.require_available()
            if job.prompt_ids is None:
                job.prompt_ids = self._prompt_ids(job.request)
            self._streams.append(RunningStream(job, self.backend, job.prompt_ids, lane))
        except QwendError as exc:
            self._fail(job, exc)
        except Exception:  # a backend bug must fail this job, not the thread
            log.exception("starting job %d failed", job.id)
            self._fail(job, GenerationFailed("generation failed", hint="see the daemon log"))

    def _step_streams(self) -> None:
        """One token for every running job, in the order they started.

        When no job received anything (a remote engine still thinking), wait
        for the backend's next piece instead of spinning.
        """
        progressed = False
        for stream in tuple(self._streams):
            try:
                done = stream.step()
                progressed = progressed or done or stream.progressed
            except QwendError as exc:
                self._streams.remove(stream)
                stream.close()
                self._fail(stream.job, exc)
                continue
            except Exception:  # a backend bug must fail this job, not the thread
                log.exception("generation failed for job %d", stream.job.id)
                self._streams.remove(stream)
                stream.close()
                failed = GenerationFailed("generation failed", hint="see the daemon log")
                self._fail(stream.job, failed)
                continue
            if done:
                self._end(stream)
        if self._streams and not progressed:
            self.backend.wait_for_output(IDLE_WAIT_S)

    def _end(self, stream: RunningStream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)
        finish = stream.finish()
        for seconds in stream.resume_steps_s:
            self.metrics.resume_step_seconds.observe(seconds)
            self._resume_steps.append(seconds)
        self._record(stream.job, finish)
        stream.job._post(finish)

    def _fail(self, job: Job, error: QwendError) -> None:
        self.metrics.jobs.labels(outcome=error.code).inc()
        job._post(error)

    def _record(self, job: Job, finish: Finish) -> None:
        self.metrics.jobs.labels(outcome=finish.reason).inc()
        self.metrics.prompt_tokens.inc(finish.prompt_tokens)
        self.metrics.generated_tokens.inc(finish.completion_tokens)
        if finish.time_to_first_token_s is not None:
            self.metrics.time_to_first_token.observe(finish.time_to_first_token_s)
        if finish.suspensions:
            self.metrics.suspended_seconds.observe(finish.suspended_s)
            self.suspended_total_s += finish.suspended_s
        self.stats.record(
            latency_s=time.monotonic() - job.enqueued_at,
            tokens=finish.completion_tokens,
            generate_s=finish.duration_s - finish.suspended_s,
        )
        log.info(
            "job %d: %s, %d prompt + %d generated tokens in %.2fs "
            "(suspended %dx, %.2fs), %d waiting",
            job.id,
            finish.reason,
            finish.prompt_tokens,
            finish.completion_tokens,
            finish.duration_s,
            finish.suspensions,
            finish.suspended_s,
            self._lanes.depth(),
        )

    def _finish_cancelled(self, job: Job) -> None:
        self.metrics.jobs.labels(outcome="cancelled").inc()
        log.info("job %d: cancelled before it ran", job.id)
        job._post(Finish("cancelled", 0, 0, None, 0.0))

    # -- shared helpers ------------------------------------------------------

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The prompt's ids, checked against the window. Without a tokenizer (a
        remote profile with tokenizer = "none") the engine behind it checks."""
        if not self.backend.has_tokenizer:
            return []
        ids = self._encode(request.prompt)
        self._check_context(len(ids), request.max_tokens)
        return ids

    def _tokenize(self, text: str) -> list[int]:
        with self._tokenize_lock:
            return self.backend.tokenize(text)

    def _encode(self, prompt: Prompt) -> list[int]:
        with self._tokenize_lock:
            return self.backend.encode(prompt)

    def _check_context(self, prompt_tokens: int, max_tokens: int) -> None:
        if prompt_tokens == 0:  # no token to predict from: no backend can run it
            raise BadRequest(
                "the prompt is empty: the model needs at least one token",
                hint="send some text (the endpoints give an empty prompt the document start)",
            )
        limit = self.backend.context_length
        if prompt_tokens + max_tokens > limit:
            raise ContextLengthExceeded(
                f"the prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}: "
                f"{prompt_tokens + max_tokens} is more than the model's context of {limit}",
                hint="shorten the prompt or lower max_tokens",
                prompt_tokens=prompt_tokens,
                max_tokens=max_tokens,
                context_length=limit,
            )

    def _set_state(self, state: ModelState) -> None:
        self.state = state
        self.metrics.model_state.state(state.value)

    def snapshot(self) -> dict[str, Any]:
        """Model state, queue and speed figures for /v1/status (cheap, lock-free)."""
        snap: dict[str, Any] = {
            "name": self.model_name,
            "backend": self.backend.name,
            "state": self.state.value,
            "swapping_to": self.swap_target,
            "error": self.error,
            "load_seconds": self.load_seconds,
            "context_length": self.backend.context_length,
        }
        if self.state.value in SERVING_STATES:
            snap.update(self.backend.describe())
        return {
            "model": snap,
            "queue": {
                **{lane: self._lanes.depth(lane) for lane in LANES},
                "capacity_per_lane": self._lanes.capacity,
                "active": len(self._streams),
                "slots": self.backend.max_concurrent,
                "suspended": len(self._suspended),
            },
            "scheduling": self._scheduling_snapshot(),
            "performance": self.stats.summary(),
        }

    def _scheduling_snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        suspended = [  # a copy: the thread may change the list meanwhile
            {
                "job": stream.job.id,
                "lane": stream.lane,
                "tokens": stream.produced,
                "suspended_for_s": round(now - (stream.suspended_at or now), 3),
                "suspended_total_s": round(stream.suspended_s, 3),
            }
            for stream in tuple(self._suspended)
        ]
        return {
            "lanes": list(LANES),
            "preempt": self.policy.preempt,
            "suspend_mode": self.backend.suspend_mode,
            "starvation_after_s": self.policy.starvation_after_s,
            "starvation_run_s": self.policy.starvation_run_s,
            "preemptions": self.preemptions,
            "suspended_total_s": round(self.suspended_total_s, 3),
            "resume_step_p50_s": _median(list(self._resume_steps)),
            "suspended": suspended,
        }


def _median(values: list[float]) -> float | None:
    """The middle value (upper of the two middles), rounded for status; None when empty."""
    return round(sorted(values)[len(values) // 2], 4) if values else None


def _suspended_since(stream: RunningStream) -> float:
    return stream.suspended_at if stream.suspended_at is not None else 0.0


def _queued_at(item: object, now: float) -> float:
    """When a queued item began waiting (a model call: now; it waits for nothing)."""
    return item.enqueued_at if isinstance(item, Job) else now


def _load_or_raise(backend: Backend) -> None:
    """Load ``backend``; any library error becomes ModelNotLoaded with its reason."""
    try:
        backend.load()
    except QwendError:
        raise
    except Exception as exc:
        log.exception("model load failed")
        raise ModelNotLoaded(f"the new model failed to load: {type(exc).__name__}: {exc}") from exc
