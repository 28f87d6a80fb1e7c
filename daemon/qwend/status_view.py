"""Editor: the human tables of `qwend status` and `qwend reload`, from the daemon's JSON.

Pure functions of the status document (docs/api.md, GET /v1/status), so the
CLI stays a dispatcher and these tables are tested without a daemon. Fields
an older daemon does not send are left out, never guessed.
"""

from __future__ import annotations

import time
from typing import Any


def _section(status: dict[str, Any], key: str) -> dict[str, Any]:
    """A nested object of the status, or {} if the daemon sent something else."""
    value = status.get(key)
    return value if isinstance(value, dict) else {}


def format_status(status: dict[str, Any]) -> str:
    model = _section(status, "model")
    queue = _section(status, "queue")
    perf = _section(status, "performance")
    state = model.get("state", "?")
    detail = {
        "ready": f"loaded in {model.get('load_seconds') or 0:.1f}s",
        "loading": "loading the model",
        "unloaded": "loads on the first request",
        "failed": model.get("error") or "",
        "swapping": f"serving while '{model.get('swapping_to')}' loads",
    }.get(state, "")
    rows = [
        ("state", f"{state} ({detail})" if detail else state),
        ("model", _model_line(model, status)),
        ("context", f"{model.get('context_length')} tokens"),
        ("memory", _megabytes(_section(status, "memory").get("rss_bytes"))),
        *_gpu_rows(model),
        *_prefix_rows(model),
        *_engine_rows(model),
        ("uptime", _duration(status.get("uptime_s", 0))),
        (
            "queue",
            f"{queue.get('completion', 0)} completion + {queue.get('interactive', 0)} "
            f"interactive + {queue.get('background', 0)} background waiting "
            f"(max {queue.get('capacity_per_lane', 0)} each), "
            f"{queue.get('active', 0)} running of {queue.get('slots', 1)} slots",
        ),
        ("lanes", _lanes(status)),
        ("tokens", f"{status.get('token_counting', '?')} counts for budgets"),
        ("requests", f"{perf.get('completed_jobs', 0)} completed"),
        (
            "latency",
            f"p50 {_seconds(perf.get('latency_p50_s'))}, p95 {_seconds(perf.get('latency_p95_s'))}",
        ),
        ("speed", f"{perf.get('tokens_per_second') or '-'} tokens/s"),
        ("socket", status.get("socket", "")),
        ("config", ", ".join(status.get("config_files", []))),
        ("reload", _last_reload(_section(status, "config"))),
        *_log_rows(status.get("log")),
        ("pid", str(status.get("pid", ""))),
    ]
    head = f"qwend {status.get('version', '?')}: {state}"
    return "\n".join([head, *(f"  {name:<9}{value}" for name, value in rows)])


def _model_line(model: dict[str, Any], status: dict[str, Any]) -> str:
    engine = model.get("engine")
    if model.get("backend") == "remote" and engine:
        where = f"remote engine at {engine.get('url')}"
        return f"{model.get('name')} ({where}, model {engine.get('model')})"
    return f"{model.get('name')} ({model.get('backend')}, {status.get('device')})"


def _engine_rows(model: dict[str, Any]) -> list[tuple[str, str]]:
    """A remote profile's engine: reachable, what it serves, the round trip (else absent)."""
    engine = model.get("engine")
    if not engine:
        return []
    reachable = engine.get("reachable")
    if reachable is None:
        seen = "not checked yet"
    elif not reachable:
        seen = f"unreachable: {engine.get('error')}"
    else:
        latency = engine.get("latency_ms")
        seen = "reachable" + (f", round trip {latency:.1f} ms" if latency is not None else "")
        if engine.get("error"):
            seen += f"; {engine.get('error')}"
    if engine.get("checked_at"):
        seen += f" (checked {_duration(max(0.0, time.time() - engine['checked_at']))} ago)"
    return [
        ("engine", seen),
        (
            "upstream",
            f"{model.get('max_concurrent')} requests at once, tokenizer {model.get('tokenizer')}",
        ),
    ]


def _log_rows(log: Any) -> list[tuple[str, str]]:
    """Where the log goes, and loudly when writing it fails (absent on older daemons)."""
    if not isinstance(log, dict):
        return []
    if log.get("state") != "failing":
        return [("log", str(log.get("target")))]
    since = time.strftime("%H:%M:%S", time.localtime(float(log.get("failing_since") or 0)))
    return [
        (
            "log",
            f"FAILING: writing {log.get('target')} fails ({log.get('error')}) since {since}; "
            f"{log.get('lines_not_written')} lines went to {log.get('fallback') or 'nowhere'}",
        )
    ]


def _gpu_rows(model: dict[str, Any]) -> list[tuple[str, str]]:
    """The GPU backend's device, memory and batching (absent on the CPU backend)."""
    cuda = model.get("cuda")
    if not cuda:
        return []
    gib = 2**30
    return [
        (
            "gpu",
            f"{cuda.get('device_name')}: {cuda.get('memory_allocated_bytes', 0) / gib:.1f} GiB "
            f"allocated, peak {cuda.get('memory_peak_bytes', 0) / gib:.1f} of "
            f"{cuda.get('memory_total_bytes', 0) / gib:.0f} GiB",
        ),
        (
            "cache",
            f"{model.get('cache_tokens')} tokens ({model.get('cache_type')}), "
            f"paged attention {model.get('paged_attention')}",
        ),
    ]


def _prefix_rows(model: dict[str, Any]) -> list[tuple[str, str]]:
    """How much of the prompts the KV cache served (backends that reuse a prefix)."""
    cache = model.get("prefix_cache")
    if not cache:
        return []
    text = (
        f"{cache.get('cached_tokens', 0)} of {cache.get('prompt_tokens', 0)} prompt tokens "
        "came from the KV cache"
    )
    last = cache.get("last_request")
    if last:
        text += (
            f"; last request evaluated {last['evaluated_tokens']} of "
            f"{last['prompt_tokens']} ({last['cached_tokens']} cached)"
        )
    return [("prefix", text)]


def _lanes(status: dict[str, Any]) -> str:
    """Priority order with each lane's tasks, then what preemption is doing."""
    sched = _section(status, "scheduling")
    tasks = _section(status, "tasks")
    order = " > ".join(
        f"{lane} ({', '.join(n for n, t in tasks.items() if t == lane) or '-'})"
        for lane in sched.get("lanes", [])
    )
    if not sched.get("preempt"):
        return f"{order or '-'}; preemption off"
    suspended = _section(status, "queue").get("suspended", 0)
    return (
        f"{order}\n           preemption on ({sched.get('suspend_mode')} on suspend): "
        f"{suspended} suspended now, {sched.get('preemptions', 0)} suspensions, "
        f"{sched.get('suspended_total_s', 0):.1f}s suspended in all"
    )


def _last_reload(config: dict[str, Any]) -> str:
    last = config.get("last_reload")
    if not last:
        return "none since start"
    return format_reload(last).replace("\n", "\n           ")


def _megabytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB resident"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


# -- reload ----------------------------------------------------------------------


def format_reload(outcome: dict[str, Any]) -> str:
    line = f"{outcome.get('result')} at {outcome.get('at')} ({outcome.get('trigger')})"
    if outcome.get("error"):
        line += f": {outcome['error']}"
    if outcome.get("changes"):
        line += "\n  changed: " + ", ".join(outcome["changes"])
    if outcome.get("needs_restart"):
        line += "\n  applies at the next start: " + ", ".join(outcome["needs_restart"])
    return line


# -- ask -------------------------------------------------------------------------
