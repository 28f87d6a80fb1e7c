"""Editor: keystroke latency while a background job runs, beside the idle figure.

What a user who asked for tests and keeps typing feels. In one run:

1. the background ``tests`` task alone (greedy, up to ``background_tokens``;
   SmolLM2 uses all 400 on its nine synthetic functions), its text kept as
   the reference;
2. ``keystrokes`` short ``complete`` tasks on the idle daemon, one after the
   other with a typing pause between them (``gap_s``, qwend lsp's debounce),
   each the editor's file so far (a small module plus one more typed character);
3. the same background task again and, once its first text has arrived, the
   same keystrokes; those sent while it was still generating count as "under
   load" (with preemption off, the first one waits for the whole task);
4. the background task's text and token count against step 1, and the
   preemption figures from ``/v1/status`` (suspensions, time suspended, the
   median first step after a resume: the resume cost).

Both keystroke series send the same prefixes, greedy, so they do the same
work; the ratio of their medians is the figure issue 16 bounds at 1.5.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Final

from qwend.bench.measure import BenchFailed, Probe
from qwend.bench.prompts import LINES_PER_FUNCTION, code_lines
from qwend.bench.stats import percentile, ratio

KEYSTROKE_FILE: Final = (
    "def merge_intervals(intervals):\n"
    '    """Merge overlapping [start, end] intervals; the result is sorted."""\n'
    "    out = []\n"
    "    for start, end in sorted(intervals):\n"
    "        if out and start <= out[-1][1]:\n"
    "            out[-1][1] = max(out[-1][1], end)\n"
    "        else:\n"
    "            out.append([start, end])\n"
    "    return out\n"
)
BACKGROUND_FUNCTIONS: Final = 9  # SmolLM2 writes 400+ tokens of tests for these, greedy
# The line the user types, one character per keystroke, below the background task's code.
TYPED_LINE: Final = "def interval_length(start, end):\n    return end - start\n"
GAP_S: Final = 0.15  # the pause between keystroke requests: qwend lsp's default debounce


@dataclass
class _Background:
    """The background task streaming on its own thread."""

    probe: Probe
    body: dict[str, Any]
    first_text: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    events: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None
    seconds: float = 0.0

    def run(self) -> None:
        started = time.perf_counter()
        try:
            for event in self.probe.task_stream("tests", self.body):
                self.events.append(event)
                if "delta" in event:
                    self.first_text.set()
        except BaseException as exc:  # reported on the caller's thread
            self.error = exc
        finally:
            self.seconds = time.perf_counter() - started
            self.first_text.set()
            self.done.set()

    def result(self) -> dict[str, Any]:
        if self.error is not None:
            raise BenchFailed(f"the background task failed: {self.error}") from self.error
        if not self.events or "usage" not in self.events[-1]:
            raise BenchFailed(f"the background task ended without usage: {self.events[-1:]}")
        final = self.events[-1]
        return {
            "text": "".join(e.get("delta", "") for e in self.events),
            "tokens": int(final["usage"]["completion_tokens"]),
            "finish_reason": final.get("finish_reason"),
            "seconds": self.seconds,
        }


def background_code() -> str:
    """The code the background task writes tests for: synthetic, deterministic
    functions (prompts.code_lines), enough of them for a long answer."""
    count = BACKGROUND_FUNCTIONS * LINES_PER_FUNCTION - 1  # without the last blank line
    return "\n".join(itertools.islice(code_lines("under-load"), 1, 1 + count)) + "\n"


def keystroke_prefixes(count: int) -> list[str]:
    """What the editor sends after each of ``count`` keystrokes: the file so far."""
    base = KEYSTROKE_FILE + "\n\n"
    return [base + TYPED_LINE[: 1 + i % len(TYPED_LINE)] for i in range(count)]


def keystrokes_under_load(
    probe: Probe,
    *,
    keystrokes: int,
    complete_tokens: int,
    background_tokens: int,
    gap_s: float = GAP_S,
) -> dict[str, Any]:
    """The figures above, as one JSON-ready dict."""
    background_body = {
        "code": background_code(),
        "language": "python",
        "max_tokens": background_tokens,
        "temperature": 0,
        "stream": True,
    }
    before = probe.status().get("scheduling", {})
    alone = _run_background(probe, background_body)
    prefixes = keystroke_prefixes(keystrokes)
    idle = [_keystroke(probe, prefix, complete_tokens, gap_s) for prefix in prefixes]

    background = _Background(probe, background_body)
    thread = threading.Thread(target=background.run, name="bench-background")
    thread.start()
    background.first_text.wait()
    busy: list[tuple[float, int]] = []
    for prefix in prefixes:
        if background.done.is_set():  # typed after the background task ended
            break
        busy.append(_keystroke(probe, prefix, complete_tokens, gap_s))
    thread.join()
    loaded = background.result()
    after = probe.status().get("scheduling", {})
    if not busy:
        raise BenchFailed(
            "the background task ended before the first keystroke was sent",
            hint="raise --load-background-tokens",
        )
    idle_s = [seconds for seconds, _ in idle]
    busy_s = [seconds for seconds, _ in busy]
    return {
        "keystrokes": keystrokes,
        "keystrokes_under_load": len(busy),
        "complete_max_tokens": complete_tokens,
        "complete_tokens_mean": sum(tokens for _, tokens in idle) / len(idle),
        "gap_s": gap_s,
        "idle_p50_s": percentile(idle_s, 50),
        "idle_p95_s": percentile(idle_s, 95),
        "loaded_p50_s": percentile(busy_s, 50),
        "loaded_p95_s": percentile(busy_s, 95),
        "p50_ratio": ratio(percentile(busy_s, 50), percentile(idle_s, 50)),
        "idle_latencies_s": idle_s,
        "loaded_latencies_s": busy_s,
        "background": {
            "max_tokens": background_tokens,
            "tokens_alone": alone["tokens"],
            "tokens_under_load": loaded["tokens"],
            "finish_reason": loaded["finish_reason"],
            "same_text_as_alone": loaded["text"] == alone["text"],
            "seconds_alone": alone["seconds"],
            "seconds_under_load": loaded["seconds"],
        },
        "suspend_mode": after.get("suspend_mode"),
        "suspensions": int(after.get("preemptions", 0)) - int(before.get("preemptions", 0)),
        "suspended_s": float(after.get("suspended_total_s", 0.0))
        - float(before.get("suspended_total_s", 0.0)),
        "resume_step_p50_s": after.get("resume_step_p50_s"),
        "background_s_per_token": alone["seconds"] / max(alone["tokens"], 1),
    }


def _run_background(probe: Probe, body: dict[str, Any]) -> dict[str, Any]:
    alone = _Background(probe, body)
    alone.run()
    return alone.result()


def _keystroke(probe: Probe, prefix: str, max_tokens: int, gap_s: float) -> tuple[float, int]:
    """One ``complete`` task after a typing pause: (seconds to the answer, tokens)."""
    time.sleep(gap_s)
    body = {"prefix": prefix, "suffix": "\n", "max_tokens": max_tokens, "temperature": 0}
    started = time.perf_counter()
    answer = probe.task("complete", body)
    return time.perf_counter() - started, int(answer["usage"]["completion_tokens"])
