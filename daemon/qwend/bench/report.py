"""Editor: ``qwend bench``'s table (stdout) and JSON document (``--json PATH``).

The JSON is the source of truth; the table is rendered from it alone, so a
saved JSON can be re-rendered later. A figure that was not taken shows why
(``skipped: ...``), never a made-up number.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

SCHEMA: Final = 1  # bump when a key of the JSON document changes meaning
FIGURE_WIDTH: Final = 52


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _stat(summary: dict[str, Any] | None, digits: int = 3) -> tuple[str, str]:
    """(median, "min-max, n runs") of a stats.summarize() dict."""
    if not summary:
        return "-", ""
    spread = f"{_num(summary['min'], digits)}-{_num(summary['max'], digits)}"
    return _num(summary["median"], digits), f"{spread}, n={summary['n']}"


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.2f} GiB"


def render_table(result: dict[str, Any]) -> str:
    """The human-readable table of one ``qwend bench`` result."""
    env = result["environment"]
    model = result["model"]
    rows: list[tuple[str, str, str]] = []
    for entry in result["ttft"]:
        size = entry["prompt_tokens"]
        if "skipped" in entry:
            rows.append((f"time to first token, {size:,} tokens (s)", "skipped", entry["skipped"]))
            continue
        rows.append((f"time to first token, {size:,} tokens (s)", *_stat(entry["cold_s"])))
        hit_label = f"  same, prefix-cache hit ({entry['hit_prompt_tokens']:,} tokens) (s)"
        rows.append((hit_label, *_stat(entry["prefix_hit_s"])))
    decode = result.get("decode")
    if decode:
        value, spread = _stat(decode["tokens_per_s"], 1)
        rows.append(("decode tokens/s, 1 stream", value, f"{spread}, {decode['tokens']} tokens"))
    for entry in result.get("concurrency", []):
        value, spread = _stat(entry["aggregate_tokens_per_s"], 1)
        rows.append((f"aggregate tokens/s, {entry['streams']} streams", value, spread))
    lsp = result.get("lsp")
    if lsp and "skipped" in lsp:
        rows.append(("keystroke to completion, qwend lsp", "skipped", lsp["skipped"]))
    elif lsp:
        detail = (
            f"p95 {_num(lsp['p95_s'])} s; {lsp['keystrokes']} keys, {lsp['context_tokens']:,}-token"
            f" doc, <= {lsp['max_tokens']} tokens, debounce {lsp['debounce_ms']} ms, "
            f"{lsp['daemon_calls']} reached the daemon"
        )
        rows.append(("keystroke to completion p50, qwend lsp (s)", _num(lsp["p50_s"]), detail))
    rows += _under_load_rows(result.get("under_load"))
    memory = result["memory"]
    gpu = memory.get("gpu_peak_bytes")
    rows.append(("peak GPU memory", _gib(gpu) if gpu is not None else memory["gpu"], ""))
    rows.append(("daemon resident memory (RSS)", _gib(memory.get("rss_bytes")), ""))
    if result.get("status_wall_s"):
        rows.append(("`qwend status` wall time, new process (s)", *_stat(result["status_wall_s"])))
    rows += _compare_rows(result.get("compare") or {})

    head = [
        f"qwend bench: {model['name']} ({model['backend']}, {env['device']}), "
        f"qwend {env['versions']['qwend']}, {result['date']}",
        f"machine: {env['machine']}, {env['cpu_cores']} cores, {_gib(env['memory_bytes'])}; "
        + ", ".join(f"{name} {version}" for name, version in env["versions"].items()),
        f"greedy decoding; median and range of {result['settings']['runs']} runs",
        "",
        f"{'figure':<{FIGURE_WIDTH}} {'value':>10}   detail",
    ]
    body = [
        f"{name:<{FIGURE_WIDTH}} {value:>10}   {detail}".rstrip() for name, value, detail in rows
    ]
    return "\n".join(head + body)


def _under_load_rows(load: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """Keystroke latency idle and beside a background job (under_load.py)."""
    if not load:
        return []
    bg = load["background"]
    same = "same text as alone" if bg["same_text_as_alone"] else "TEXT DIFFERS from alone"
    resume = load.get("resume_step_p50_s")
    return [
        (
            "keystroke latency p50, idle (s)",
            _num(load["idle_p50_s"]),
            f"p95 {_num(load['idle_p95_s'])} s; {load['keystrokes']} `complete` tasks of "
            f"<= {load['complete_max_tokens']} tokens",
        ),
        (
            "  same, background job running (s)",
            _num(load["loaded_p50_s"]),
            f"p95 {_num(load['loaded_p95_s'])} s; {load['keystrokes_under_load']} keys; "
            f"{_num(load['p50_ratio'], 2)}x idle",
        ),
        (
            "  the background job",
            f"{bg['tokens_under_load']} tok",
            f"{bg['tokens_alone']} alone, {same}; {load['suspensions']} suspensions "
            f"({load['suspend_mode']}), {_num(load['suspended_s'], 2)} s suspended, "
            f"resume step p50 {_num(resume)} s vs {_num(load['background_s_per_token'])} s/token",
        ),
    ]


def _compare_rows(compare: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    bound = compare.get("bandwidth_bound")
    if bound is not None:
        if bound.get("bound_tokens_per_s") is None:
            rows.append(("memory-bandwidth bound, tokens/s", "-", f"{bound['reason']}"))
        else:
            detail = (
                f"{bound['bandwidth_bytes_per_s'] / 1e12:.2f} TB/s over "
                f"{bound['bytes_per_token'] / 1e9:.2f} GB/token ({bound['device']})"
            )
            rows.append(
                ("memory-bandwidth bound, tokens/s", _num(bound["bound_tokens_per_s"], 0), detail)
            )
    sides = (
        ("raw_exllamav2", "raw exllamav2"),
        ("raw_llamacpp", "raw llama.cpp"),
        ("transformers", "transformers"),
    )
    for key, label in sides:
        side = compare.get(key)
        if side is None:
            continue
        if "skipped" in side:
            rows.append((f"{label} decode tokens/s", "skipped", side["skipped"]))
            continue
        rows.append(
            (f"{label} decode tokens/s", _num(side["decode_tokens_per_s"], 1), side["setup"])
        )
        for size, seconds in side["ttft_s"].items():
            rows.append(
                (f"{label} time to first token, {int(size):,} tokens (s)", _num(seconds), "")
            )
        rows += _cpu_side_rows(label, side)
    for name, value in (compare.get("ratios") or {}).items():
        rows.append((f"ratio: {name.replace('_', ' ')}", _num(value, 2), ""))
    return rows


def _cpu_side_rows(label: str, side: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Keystroke (with and without prefix reuse), load time and memory, where taken."""
    rows: list[tuple[str, str, str]] = []
    keystroke = side.get("keystroke")
    if keystroke:
        detail = (
            f"{keystroke['prompt_tokens']:,}-token prompt, "
            f"{keystroke['cached_tokens']:,} of them cached"
        )
        rows.append((f"{label} keystroke, whole prompt (s)", _num(keystroke["full_s"]), detail))
        rows.append(
            (f"{label} keystroke, prefix reuse (s)", _num(keystroke["prefix_reuse_s"]), detail)
        )
    if side.get("load_s") is not None:
        rows.append((f"{label} load time (s)", _num(side["load_s"], 2), ""))
    if side.get("rss_growth_bytes") is not None:
        rows.append((f"{label} resident memory added", _gib(side["rss_growth_bytes"]), ""))
    return rows


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
