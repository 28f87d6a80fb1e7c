"""Engine: which waiting work runs next, and which running job yields to it.

The policy is pure: ``decide`` reads a snapshot (running jobs, suspended jobs,
the head of every lane, the time) and returns one action, which the
generation thread applies before it looks again. No threads, no backend, so
the rules below are tested on their own (tests/unit/test_scheduling.py).

Priority. Lanes rank in ``LANES`` order: completion, interactive, background.
A free slot goes to the best-ranked waiting work; within a lane a suspended
job (it ran before) goes before queued ones, and queued ones go in order.

Preemption. When no slot is free and a queued job's lane ranks above a
running job's, the lowest-ranked running job (the most recently admitted of
those) is suspended between two token steps; it waits, with its output so
far, for the next free slot. A suspended job never preempts, jobs of one lane
never preempt each other, and ``preempt = false`` turns preemption off (the
lanes then only order the queue).

Age rule (no starvation). A job that has waited ``starvation_after_s`` in a
row, queued or suspended, is "aged": it takes the next free slot ahead of any
better-ranked work. If it did jump ahead of such work, it then runs
``starvation_run_s`` without being preempted. Under an endless stream of
completions a background job therefore still gets about
run / (after + run) of the model (2 s in every 12 s with the defaults); in
the gaps between keystrokes it runs anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from qwend.engine.lanes import LANES

STARVATION_AFTER_S: Final = 10.0  # a wait past this is starvation, not a keystroke's pause
STARVATION_RUN_S: Final = 2.0  # the aged job's guaranteed run: 1/6 of the model under load


@dataclass(frozen=True)
class Policy:
    """The scheduling settings (config ``[scheduling]``; docs/config.md)."""

    preempt: bool = True
    starvation_after_s: float = STARVATION_AFTER_S
    starvation_run_s: float = STARVATION_RUN_S


class Slot(Protocol):
    """What the policy reads of a running or suspended job."""

    @property
    def lane(self) -> str: ...
    @property
    def admitted_at(self) -> float: ...  # when it last took a slot
    @property
    def suspended_at(self) -> float | None: ...  # None while it runs
    @property
    def protected_until(self) -> float: ...  # no preemption before this time


@dataclass(frozen=True)
class Waiting:
    """One candidate for a free slot: a suspended job or the head of a lane."""

    lane: str
    since: float  # when its current wait began (queued, or suspended)
    item: object  # the suspended stream, or the queued item
    suspended: bool


@dataclass(frozen=True)
class Admit:
    """Give ``waiting`` a slot (or run it at once, if it needs none).

    ``protect_until`` is set when an aged job jumped ahead of better-ranked
    work: it must not be preempted before then.
    """

    waiting: Waiting
    protect_until: float | None = None


@dataclass(frozen=True)
class Suspend:
    """Suspend ``stream`` between two steps; its slot goes to better-ranked work."""

    stream: object


Decision = Admit | Suspend | None


def rank(lane: str) -> int:
    """0 for the highest-priority lane."""
    return LANES.index(lane)


def decide(
    now: float,
    policy: Policy,
    *,
    running: Sequence[Slot],
    suspended: Sequence[Slot],
    heads: Sequence[tuple[str, float, object]],
    slots: int,
    needs_slot: Callable[[object], bool],
) -> Decision:
    """The next action, or None when the running jobs should just step on.

    ``heads`` is (lane, queued since, item) for the first item of every
    non-empty lane. ``needs_slot`` tells generation jobs (which occupy a slot
    until they end) from short model calls (which run between two steps).
    """
    candidates = [
        Waiting(s.lane, s.suspended_at if s.suspended_at is not None else now, s, True)
        for s in suspended
    ] + [Waiting(lane, since, item, False) for lane, since, item in heads]
    if not candidates:
        return None

    def aged(w: Waiting) -> bool:
        return now - w.since >= policy.starvation_after_s

    def order(w: Waiting) -> tuple[bool, int, bool, float]:
        return (not aged(w), rank(w.lane), not w.suspended, w.since)

    best = min(candidates, key=order)
    if len(running) < slots:
        outranked = any(rank(w.lane) < rank(best.lane) for w in candidates)
        protect = now + policy.starvation_run_s if aged(best) and outranked else None
        return Admit(best, protect)
    queued = [w for w in candidates if not w.suspended]
    if not queued:
        return None
    first = min(queued, key=lambda w: (rank(w.lane), w.since))  # age never preempts
    below = [s for s in running if rank(s.lane) > rank(first.lane)]
    if not needs_slot(first.item):
        # A model call (embeddings, the lazy load) takes no slot: it runs
        # between two steps, ahead of running jobs of a lower lane.
        return Admit(first) if below else None
    if not policy.preempt:
        return None
    victims = [s for s in below if s.protected_until <= now]
    if not victims:
        return None
    victim = max(victims, key=lambda s: (rank(s.lane), s.admitted_at))
    return Suspend(victim)
