"""Benchmark: the two CPU backends and raw llama-cpp-python, decode speed in one run.

Starts two daemons side by side, `smollm2-135m` (llama.cpp on the GGUF) and
`smollm2-135m-hf` (transformers on the converted fp32 weights), and loads the
same GGUF into llama-cpp-python in this process with the daemon's threads.
Each round times, one after the other, a greedy 128-token `/v1/completions`
stream on each daemon and the same decode on raw llama-cpp-python, so a
change in the machine's load hits all three alike; the medians and ratios
are printed (and written as JSON with --json). Then one keystroke on the
llama.cpp daemon: the same prompt plus one character, with what
`/v1/status` says it evaluated.

    python -m benchmarks.cpu_backends --rounds 5 --json cpu-backends.json

Figures are printed, never asserted (docs/benchmarks.md has a run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qwend import paths
from qwend.bench.measure import DECODE_PROMPT, Probe
from qwend.client import DaemonClient
from qwend.errors import DaemonUnavailable

READY_TIMEOUT_S = 300.0  # a cold transformers import on a busy 2-core machine
KEYSTROKE_FILE_LINES = 60  # a file of about 1,000 tokens for the keystroke


def start_daemon(root: Path, profile: str, model_dir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    root.mkdir(parents=True)
    config = root / "config.toml"
    config.write_text(
        f'[daemon]\nmodel = "{profile}"\n[models."{profile}"]\npath = "{model_dir}"\n'
    )
    socket = root / "q.sock"
    env = {**os.environ, "XDG_STATE_HOME": str(root / "state")}
    log = (root / "daemon.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "qwend", "serve", "--config", str(config), "--socket", str(socket)],
        stdout=log,
        stderr=log,
        env=env,
    )
    return process, socket


def wait_ready(socket: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            _, body = DaemonClient(socket, timeout=5).request("GET", "/health")
            if body.get("status") == "ready":
                return
        except DaemonUnavailable:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the daemon on {socket} never became ready")


def raw_decode(llm: Any, prompt: list[int], tokens: int) -> float:
    """Tokens/s of llama-cpp-python's own greedy loop after ``prompt`` (first token excluded)."""
    llm.reset()
    stamps: list[float] = []
    for _ in llm.generate(prompt, temp=0.0, reset=True):
        stamps.append(time.perf_counter())
        if len(stamps) == tokens:
            break
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--model-dir", type=Path, default=paths.models_dir() / "smollm2-135m")
    parser.add_argument("--hf-model-dir", type=Path, default=paths.models_dir() / "smollm2-135m-hf")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import llama_cpp

    from qwend.backends.folder import gguf_file

    gguf = gguf_file(args.model_dir)
    if gguf is None:
        raise SystemExit(f"no GGUF in {args.model_dir}: qwend pull smollm2-135m")
    root = Path(tempfile.mkdtemp(prefix="qcpu-", dir="/tmp"))
    daemons = [
        start_daemon(root / "llama", "smollm2-135m", args.model_dir),
        start_daemon(root / "hf", "smollm2-135m-hf", args.hf_model_dir),
    ]
    try:
        for _, socket in daemons:
            wait_ready(socket)
        probes = {"llama.cpp": Probe(daemons[0][1]), "transformers": Probe(daemons[1][1])}
        model = probes["llama.cpp"].status()["model"]
        threads = (int(model["threads"]), int(model["threads_prompt"]))
        llm = llama_cpp.Llama(
            model_path=str(gguf),
            n_ctx=int(model["context_length"]),
            n_threads=threads[0],
            n_threads_batch=threads[1],
            verbose=False,
        )
        prompt = llm.tokenize(DECODE_PROMPT.encode(), add_bos=False, special=True)
        for probe in probes.values():  # warm-up: first-call allocations
            probe.stream(DECODE_PROMPT, 8)
        runs: dict[str, list[float]] = {"llama.cpp": [], "raw": [], "transformers": []}
        loads: list[float] = []
        for round_ in range(args.rounds):
            loads.append(os.getloadavg()[0])
            for name, probe in probes.items():
                timing = probe.stream(DECODE_PROMPT, args.tokens)
                if timing.completion_tokens != args.tokens:  # an early end of text
                    print(f"{name}: {timing.completion_tokens} tokens", file=sys.stderr)
                runs[name].append(timing.decode_tokens_per_s or 0.0)
            runs["raw"].append(raw_decode(llm, prompt, args.tokens))
            print(
                f"round {round_ + 1}: load {loads[-1]:.1f}, "
                + ", ".join(f"{k} {v[-1]:.1f}" for k, v in runs.items()),
                file=sys.stderr,
            )
        llm.close()
        keystroke = measure_keystroke(probes["llama.cpp"])
    finally:
        for process, _ in daemons:
            process.terminate()
            process.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)

    medians = {k: statistics.median(v) for k, v in runs.items()}
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": len(os.sched_getaffinity(0)),
        "load_average_1m": loads,
        "tokens": args.tokens,
        "threads_llama_cpp": threads,
        "decode_tokens_per_s": runs,
        "median": medians,
        "daemon_llama_cpp_over_daemon_transformers": medians["llama.cpp"] / medians["transformers"],
        "daemon_llama_cpp_of_raw": medians["llama.cpp"] / medians["raw"],
        "keystroke": keystroke,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "decode_tokens_per_s"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def measure_keystroke(probe: Probe) -> dict[str, Any]:
    """A file, then the same file with one more character: what the second evaluated."""
    code = "".join(
        f"def handler_{i}(event):\n    return event.get('{i}')\n\n"
        for i in range(KEYSTROKE_FILE_LINES // 3)
    )
    first = probe.stream(code + "def main(", 1)
    second = probe.stream(code + "def main(a", 1)
    last = probe.status()["model"]["prefix_cache"]["last_request"]
    return {
        "prompt_tokens": second.prompt_tokens,
        "evaluated_tokens": last["evaluated_tokens"],
        "cached_tokens": last["cached_tokens"],
        "first_token_s_whole_file": first.ttft_s,
        "first_token_s_keystroke": second.ttft_s,
    }


if __name__ == "__main__":
    main()
