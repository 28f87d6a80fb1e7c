"""Engine: rolling latency and speed figures for /v1/status.

Prometheus histograms (metrics.py) serve scrapers; these are the few
human-sized numbers ``qwend status`` prints: p50/p95 latency and decode speed
over the most recent requests.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Final

WINDOW: Final = 512  # recent jobs kept; enough for a stable p95, small to sort


@dataclass(frozen=True)
class _Sample:
    latency_s: float
    tokens: int
    generate_s: float


class Stats:
    """Thread-safe: the generation thread records, the event loop reads."""

    def __init__(self) -> None:
        self._samples: deque[_Sample] = deque(maxlen=WINDOW)
        self._lock = threading.Lock()
        self.completed = 0

    def record(self, *, latency_s: float, tokens: int, generate_s: float) -> None:
        with self._lock:
            self._samples.append(_Sample(latency_s, tokens, generate_s))
            self.completed += 1

    def summary(self) -> dict[str, float | int | None]:
        with self._lock:
            samples = list(self._samples)
            completed = self.completed
        latencies = sorted(s.latency_s for s in samples)
        tokens = sum(s.tokens for s in samples)
        seconds = sum(s.generate_s for s in samples)
        return {
            "completed_jobs": completed,
            "latency_p50_s": _percentile(latencies, 0.50),
            "latency_p95_s": _percentile(latencies, 0.95),
            "tokens_per_second": round(tokens / seconds, 2) if seconds > 0 else None,
        }


def _percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered) - 1e-9) - 1))
    return round(ordered[rank], 4)
