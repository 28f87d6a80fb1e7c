"""Engine: the bounded queues the generation thread takes work from, one per lane.

Lanes are listed from the highest priority down: ``completion`` (ghost text a
keystroke waits for), ``interactive`` (commands a user waits for) and
``background`` (tests, refactors, long reasoning). Each lane holds at most
``capacity`` waiting items, so a full lane answers at once (QueueFull) instead
of growing without bound. Which lane is served next, and whether a running
job yields to it, is scheduling.py's decision; this module only keeps order.
An item whose client left is withdrawn at once (``withdraw``), so its place
is free for the next request instead of counting until the thread reaches it.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from typing import Final

STOP_THREAD: Final = object()  # queue sentinel: the thread exits when it dequeues this
LANES: Final = ("completion", "interactive", "background")  # highest priority first


class Lanes:
    """One bounded FIFO queue per lane, listed in priority order."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._queues: dict[str, deque[object]] = {lane: deque() for lane in LANES}
        self._ready = threading.Condition()

    def put(self, item: object, lane: str) -> None:
        """Raise queue.Full at once when ``lane`` holds ``capacity`` items."""
        with self._ready:
            if len(self._queues[lane]) >= self.capacity:
                raise queue.Full
            self._queues[lane].append(item)
            self._ready.notify()

    def put_last(self, item: object) -> None:
        """Queue ``item`` behind everything waiting in every lane, past the capacity."""
        with self._ready:
            self._queues[LANES[-1]].append(item)
            self._ready.notify()

    def put_stop(self) -> None:
        with self._ready:
            self._queues[LANES[0]].appendleft(STOP_THREAD)
            self._ready.notify()

    def get(self, *, block: bool = True) -> object | None:
        """The next item, highest lane first; without ``block``, None when all are empty."""
        with self._ready:
            while block and not any(self._queues.values()):
                self._ready.wait()
            lane = next((q for q in self._queues.values() if q), None)
            return None if lane is None else lane.popleft()

    def withdraw(self, item: object) -> bool:
        """Remove ``item`` if it is still waiting; True if it was (it will never be taken).

        Exactly one of ``withdraw`` and ``get`` returns a given item, so the
        caller that gets True owns reporting its end.
        """
        with self._ready:
            for q in self._queues.values():
                for index, queued in enumerate(q):
                    if queued is item:  # identity: jobs are dataclasses, equal by value
                        del q[index]
                        return True
        return False

    def wait(self) -> None:
        """Block until some lane holds an item."""
        with self._ready:
            while not any(self._queues.values()):
                self._ready.wait()

    def heads(self) -> dict[str, object]:
        """The first item of every non-empty lane, by lane, in priority order."""
        with self._ready:
            return {lane: q[0] for lane, q in self._queues.items() if q}

    def take(self, lane: str, item: object) -> bool:
        """Remove ``item`` from the head of ``lane``; False if it is no longer there."""
        with self._ready:
            q = self._queues[lane]
            if q and q[0] is item:
                q.popleft()
                return True
            return False

    def drain(self) -> list[object]:
        with self._ready:
            items = [item for q in self._queues.values() for item in q]
            for q in self._queues.values():
                q.clear()
            return items

    def depth(self, lane: str | None = None) -> int:
        if lane is not None:
            return len(self._queues[lane])
        return sum(len(q) for q in self._queues.values())
