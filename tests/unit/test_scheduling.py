"""The scheduling policy on its own: priorities, preemption and the age rule."""

from __future__ import annotations

from dataclasses import dataclass

from qwend.engine.scheduling import Admit, Policy, Suspend, decide, rank

NOW = 1000.0
POLICY = Policy(preempt=True, starvation_after_s=10.0, starvation_run_s=2.0)


@dataclass
class FakeSlot:
    lane: str
    admitted_at: float = NOW - 1.0
    suspended_at: float | None = None
    protected_until: float = 0.0


class Call:
    """A queued model call: it needs no slot."""


def is_job(item: object) -> bool:
    return not isinstance(item, Call)


def run(
    *,
    running: list[FakeSlot] | None = None,
    suspended: list[FakeSlot] | None = None,
    heads: list[tuple[str, float, object]] | None = None,
    slots: int = 1,
    policy: Policy = POLICY,
    now: float = NOW,
) -> Admit | Suspend | None:
    return decide(
        now,
        policy,
        running=running or [],
        suspended=suspended or [],
        heads=heads or [],
        slots=slots,
        needs_slot=is_job,
    )


def test_lane_ranks_follow_the_lanes_order() -> None:
    assert rank("completion") < rank("interactive") < rank("background")


def test_nothing_waiting_means_nothing_to_do() -> None:
    assert run(running=[FakeSlot("background")]) is None
    assert run() is None


def test_a_free_slot_goes_to_the_highest_lane() -> None:
    heads = [("interactive", NOW - 5, "i"), ("background", NOW - 8, "b"), ("completion", NOW, "c")]
    decision = run(heads=heads)
    assert isinstance(decision, Admit)
    assert decision.waiting.item == "c"
    assert decision.protect_until is None


def test_a_suspended_job_goes_before_queued_ones_of_its_lane_only() -> None:
    old = FakeSlot("background", suspended_at=NOW - 1)
    decision = run(suspended=[old], heads=[("background", NOW - 3, "b")])
    assert isinstance(decision, Admit) and decision.waiting.item is old
    assert decision.waiting.suspended
    decision = run(suspended=[old], heads=[("interactive", NOW, "i")])
    assert isinstance(decision, Admit) and decision.waiting.item == "i"


def test_two_suspended_jobs_resume_in_lane_then_age_order() -> None:
    first = FakeSlot("background", suspended_at=NOW - 4)
    second = FakeSlot("background", suspended_at=NOW - 2)
    interactive = FakeSlot("interactive", suspended_at=NOW - 1)
    decision = run(suspended=[second, first, interactive])
    assert isinstance(decision, Admit) and decision.waiting.item is interactive
    decision = run(suspended=[second, first])
    assert isinstance(decision, Admit) and decision.waiting.item is first


def test_a_higher_lane_suspends_the_lowest_most_recent_running_job() -> None:
    interactive = FakeSlot("interactive", admitted_at=NOW - 1)
    older = FakeSlot("background", admitted_at=NOW - 9)
    newer = FakeSlot("background", admitted_at=NOW - 2)
    decision = run(running=[interactive, older, newer], heads=[("completion", NOW, "c")], slots=3)
    assert decision == Suspend(newer)
    # An interactive job preempts the background ones only, never its own lane.
    decision = run(running=[interactive, older], heads=[("interactive", NOW, "i")], slots=2)
    assert decision == Suspend(older)
    assert run(running=[interactive], heads=[("interactive", NOW, "i")]) is None


def test_no_preemption_within_a_lane_or_from_a_lower_one() -> None:
    running = [FakeSlot("interactive")]
    assert run(running=running, heads=[("interactive", NOW, "i")]) is None
    assert run(running=running, heads=[("background", NOW, "b")]) is None


def test_a_suspended_job_never_preempts() -> None:
    waiting = FakeSlot("completion", suspended_at=NOW - 1)
    assert run(running=[FakeSlot("background")], suspended=[waiting]) is None


def test_preemption_off_only_orders_the_queue() -> None:
    off = Policy(preempt=False)
    assert (
        run(running=[FakeSlot("background")], heads=[("completion", NOW, "c")], policy=off) is None
    )
    decision = run(heads=[("background", NOW - 1, "b"), ("completion", NOW, "c")], policy=off)
    assert isinstance(decision, Admit) and decision.waiting.item == "c"


def test_a_protected_job_is_not_suspended() -> None:
    guarded = FakeSlot("background", protected_until=NOW + 0.5)
    assert run(running=[guarded], heads=[("completion", NOW, "c")]) is None
    assert run(running=[guarded], heads=[("completion", NOW, "c")], now=NOW + 0.5) == Suspend(
        guarded
    )


def test_a_model_call_runs_between_steps_ahead_of_a_lower_lane() -> None:
    call = Call()
    decision = run(running=[FakeSlot("background")], heads=[("interactive", NOW, call)])
    assert isinstance(decision, Admit) and decision.waiting.item is call
    # Behind a running job of its own lane it waits for the slot, as before.
    assert run(running=[FakeSlot("interactive")], heads=[("interactive", NOW, call)]) is None


def test_an_aged_job_jumps_ahead_and_is_then_protected() -> None:
    starved = FakeSlot("background", suspended_at=NOW - 10.0)
    decision = run(suspended=[starved], heads=[("completion", NOW - 0.1, "c")])
    assert isinstance(decision, Admit)
    assert decision.waiting.item is starved
    assert decision.protect_until == NOW + 2.0
    # One moment younger, it would still wait.
    young = FakeSlot("background", suspended_at=NOW - 9.9)
    decision = run(suspended=[young], heads=[("completion", NOW - 0.1, "c")])
    assert isinstance(decision, Admit) and decision.waiting.item == "c"


def test_a_queued_job_ages_too() -> None:
    decision = run(heads=[("completion", NOW, "c"), ("background", NOW - 11, "b")])
    assert isinstance(decision, Admit) and decision.waiting.item == "b"
    assert decision.protect_until == NOW + 2.0


def test_an_aged_job_with_nothing_better_waiting_gets_no_protection() -> None:
    # Two background jobs in a row: the second waited long, but jumped over nobody.
    decision = run(heads=[("background", NOW - 60, "b")])
    assert isinstance(decision, Admit) and decision.protect_until is None


def test_age_never_preempts() -> None:
    starved = FakeSlot("background", suspended_at=NOW - 60)
    running = [FakeSlot("completion")]
    assert run(running=running, suspended=[starved]) is None
    assert run(running=running, heads=[("background", NOW - 60, "b")]) is None
