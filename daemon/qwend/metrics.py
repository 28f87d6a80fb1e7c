"""Protocol: the Prometheus metrics qwend exports on GET /metrics.

A registry per daemon (not the library's global one) so that tests can run
several daemons in one process and every series is qwend's own.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram

from qwend.states import ALL_STATES

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# One token step: a few ms on a GPU, tens on a CPU; a re-prefill up to seconds.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "qwend_requests",
            "HTTP requests by endpoint and outcome",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.request_duration = Histogram(
            "qwend_request_duration_seconds",
            "HTTP request duration",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.jobs = Counter(
            "qwend_jobs",
            "Generation jobs by how they ended (stop, length, cancelled, error code)",
            ["outcome"],
            registry=r,
        )
        self.prompt_tokens = Counter("qwend_prompt_tokens", "Prompt tokens processed", registry=r)
        self.generated_tokens = Counter("qwend_generated_tokens", "Tokens generated", registry=r)
        self.time_to_first_token = Histogram(
            "qwend_time_to_first_token_seconds",
            "From start of generation to the first token",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("qwend_queue_depth", "Jobs waiting for the model", registry=r)
        # Preemption (engine/scheduling.py): a lower lane's job suspended for a higher one.
        self.preemptions = Counter(
            "qwend_preemptions",
            "Running jobs suspended for a higher lane's job, by the suspended job's lane",
            ["lane"],
            registry=r,
        )
        self.suspended_jobs = Gauge(
            "qwend_suspended_jobs", "Jobs suspended now, waiting for a slot", registry=r
        )
        self.suspended_seconds = Histogram(
            "qwend_suspended_seconds",
            "Time a finished job spent suspended, over all its suspensions (suspended jobs only)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.resume_step_seconds = Histogram(
            "qwend_resume_step_seconds",
            "The first token step after a resume: the resume's cost (a re-prefill or none)",
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.starvation_promotions = Counter(
            "qwend_starvation_promotions",
            "Jobs that waited past scheduling.starvation_after_s and ran ahead of higher lanes",
            registry=r,
        )
        self.model_state = Enum(
            "qwend_model_state",
            "State of the resident model",
            states=list(ALL_STATES),
            registry=r,
        )
        self.config_reloads = Counter(
            "qwend_config_reloads",
            "Config reloads by result",
            ["result"],
            registry=r,
        )
        self.model_load_seconds = Gauge(
            "qwend_model_load_seconds",
            "How long the last model load took",
            registry=r,
        )
