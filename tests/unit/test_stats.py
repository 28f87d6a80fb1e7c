"""Rolling latency percentiles and decode speed."""

from __future__ import annotations

import threading

import pytest

from qwend.engine.stats import WINDOW, Stats


def stats_with(latencies: list[float], tokens: int = 10, generate_s: float = 1.0) -> Stats:
    stats = Stats()
    for latency in latencies:
        stats.record(latency_s=latency, tokens=tokens, generate_s=generate_s)
    return stats


def test_empty_summary_is_none() -> None:
    assert Stats().summary() == {
        "completed_jobs": 0,
        "latency_p50_s": None,
        "latency_p95_s": None,
        "tokens_per_second": None,
    }


def test_one_sample() -> None:
    summary = stats_with([0.25], tokens=50, generate_s=2.0).summary()
    assert summary == {
        "completed_jobs": 1,
        "latency_p50_s": 0.25,
        "latency_p95_s": 0.25,
        "tokens_per_second": 25.0,
    }


def test_percentiles_of_unsorted_samples() -> None:
    summary = stats_with([4.0, 1.0, 3.0, 2.0]).summary()
    assert summary["latency_p50_s"] == 2.0
    assert summary["latency_p95_s"] == 4.0


def test_nearest_rank_on_seven_values() -> None:
    summary = stats_with([7.0, 1.0, 6.0, 2.0, 5.0, 3.0, 4.0]).summary()
    assert summary["latency_p50_s"] == 4.0  # rank ceil(0.5 * 7) = 4
    assert summary["latency_p95_s"] == 7.0  # rank ceil(6.65) = 7


@pytest.mark.parametrize(
    ("n", "p50", "p95"), [(10, 5.0, 10.0), (20, 10.0, 19.0), (100, 50.0, 95.0)]
)
def test_nearest_rank_when_q_times_n_is_whole(n: int, p50: float, p95: float) -> None:
    summary = stats_with([float(i) for i in range(1, n + 1)]).summary()
    assert (summary["latency_p50_s"], summary["latency_p95_s"]) == (p50, p95)


def test_latency_is_rounded_to_four_places() -> None:
    assert stats_with([0.123456]).summary()["latency_p50_s"] == 0.1235


def test_tokens_per_second_sums_tokens_and_time() -> None:
    stats = Stats()
    stats.record(latency_s=1.0, tokens=10, generate_s=1.0)
    stats.record(latency_s=1.0, tokens=20, generate_s=2.0)
    stats.record(latency_s=1.0, tokens=1, generate_s=0.0)
    assert stats.summary()["tokens_per_second"] == round(31 / 3.0, 2)


def test_tokens_per_second_none_when_no_time() -> None:
    assert stats_with([0.1], tokens=0, generate_s=0.0).summary()["tokens_per_second"] is None


def test_window_keeps_the_most_recent_samples() -> None:
    stats = stats_with([float(i) for i in range(WINDOW + 88)])
    summary = stats.summary()
    assert summary["completed_jobs"] == WINDOW + 88
    # Samples 0..87 fell out; the median of 88..599 by nearest rank is the 256th.
    assert summary["latency_p50_s"] == 88.0 + 255
    assert summary["latency_p95_s"] == 88.0 + 486  # rank ceil(0.95 * 512) = 487


def test_record_is_thread_safe() -> None:
    stats = Stats()

    def worker() -> None:
        for _ in range(1000):
            stats.record(latency_s=0.5, tokens=1, generate_s=0.1)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stats.summary()["completed_jobs"] == 4000
