"""Benchmark: what resuming a suspended generation costs, "keep" against "reprefill".

Prints a table; nothing here is a test. On the transformers backend with the
real model it generates ``--generated`` tokens after prompts of several
lengths, then times the next token two ways:

- keep: the same iterator steps on (its KV cache was kept while suspended),
  which is what the transformers backend does;
- reprefill: the base class's ``Backend.resume`` over prompt + generated
  tokens, a new iterator whose first step prefills everything again, which is
  what exllamav2 unpaged and single-context backends do.

It also says whether the next ``--check`` greedy tokens are the same both
ways (one batched prefill against token-by-token decoding: the numerics
differ slightly, the argmax should not).

    python benchmarks/resume_cost.py MODEL_DIR [--prompts 128 512 2048]
        [--generated 32] [--check 16] [--threads 1] [--runs 3]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

from qwend.backends.base import Sampling
from qwend.backends.transformers import TransformersBackend
from qwend.bench.prompts import code_lines

GREEDY = Sampling(temperature=0.0, top_p=1.0, seed=0)


def prompt_ids(backend: TransformersBackend, size: int) -> list[int]:
    """``size`` token ids of synthetic code (prompts.code_lines), cut exactly."""
    text = "\n".join(itertools.islice(code_lines("resume-cost"), 4 * size))
    return backend.tokenize(text)[:size]


def measure(
    backend: TransformersBackend, size: int, generated: int, check: int
) -> tuple[float, float, bool]:
    """(keep step seconds, reprefill first step seconds, same greedy tokens)."""
    prompt = prompt_ids(backend, size)
    steps = backend.generate(prompt, GREEDY, generated + check)
    done = [next(steps) for _ in range(generated)]
    started = time.perf_counter()
    kept = [next(steps)]
    keep_s = time.perf_counter() - started
    kept += [next(steps) for _ in range(check - 1)]
    steps.close()
    resumed = backend.resume(prompt, done, GREEDY, check)
    started = time.perf_counter()
    again = [next(resumed)]
    reprefill_s = time.perf_counter() - started
    again += list(resumed)
    return keep_s, reprefill_s, again == kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--prompts", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--generated", type=int, default=32)
    parser.add_argument("--check", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    backend = TransformersBackend(
        args.model_dir, context_length=8192, threads=args.threads, pull_hint="qwend pull"
    )
    backend.load()
    measure(backend, 16, 2, 2)  # warm-up
    print(f"{'prompt + generated':>20} {'keep (s)':>10} {'reprefill (s)':>14} {'same tokens':>12}")
    for size in args.prompts:
        runs = [measure(backend, size, args.generated, args.check) for _ in range(args.runs)]
        keep = statistics.median(r[0] for r in runs)
        reprefill = statistics.median(r[1] for r in runs)
        same = all(r[2] for r in runs)
        label = f"{size} + {args.generated}"
        print(f"{label:>20} {keep:>10.3f} {reprefill:>14.3f} {'yes' if same else 'NO':>12}")


if __name__ == "__main__":
    main()
