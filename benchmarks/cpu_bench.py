"""Benchmark: CPU figures of a running daemon (tokens/s, time to first token,
`qwend status` wall time). Prints a table; nothing here is a test.

    qwend serve --model smollm2-135m --detach
    python benchmarks/cpu_bench.py [--socket PATH] [--runs 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from qwend import __version__, paths
from qwend.client import DaemonClient

PROMPT = "def quicksort(items):\n    "
DECODE_TOKENS = 128


def stream_once(client: DaemonClient, max_tokens: int) -> tuple[float, float, int]:
    """(time to first token, decode seconds after it, completion tokens)."""
    body = {
        "prompt": PROMPT,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = last = 0.0
    tokens = 0
    for event in client.stream("/v1/completions", body):
        now = time.perf_counter()
        if "usage" in event:
            tokens = event["usage"]["completion_tokens"]
        elif not first:
            first = now
        last = now
    return first - started, last - first, tokens


def status_wall_time(socket: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "qwend", "status", "--socket", str(socket)],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", type=Path, default=paths.configured_socket_path(None))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    client = DaemonClient(args.socket, timeout=300)
    _, status = client.request("GET", "/v1/status")
    model = status["model"]
    stream_once(client, 8)  # warm-up: first-call allocations are not steady state

    ttfts, speeds = [], []
    for _ in range(args.runs):
        ttft, decode_s, tokens = stream_once(client, DECODE_TOKENS)
        ttfts.append(ttft)
        speeds.append((tokens - 1) / decode_s if decode_s > 0 else 0.0)
    status_times = [status_wall_time(args.socket) for _ in range(args.runs)]

    print(f"qwend {__version__}, model {model['name']} ({model['backend']}, {status['device']})")
    print(
        f"machine: {platform.processor() or platform.machine()}, {_cores()} cores, "
        f"Python {platform.python_version()}"
    )
    print(f"runs: {args.runs}, decode: {DECODE_TOKENS} tokens greedy, median (min-max)")
    rows = [
        ("decode tokens/s", speeds, "{:.1f}"),
        ("time to first token (s)", ttfts, "{:.3f}"),
        ("`qwend status` wall (s)", status_times, "{:.3f}"),
    ]
    for name, values, fmt in rows:
        spread = f"{fmt.format(min(values))}-{fmt.format(max(values))}"
        print(f"  {name:<26}{fmt.format(statistics.median(values)):>8}   ({spread})")


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
