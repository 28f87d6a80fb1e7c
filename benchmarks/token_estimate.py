"""Benchmark: how far a characters-per-token estimate is from exact counts.

Budgets use exact token counts. Only when no tokenizer can be loaded, and the
config allows it (budget.estimate_without_tokenizer), does qwend estimate
tokens as characters / budget.chars_per_token. This measures that estimate's
error on a real code corpus (the Python standard library's own sources) for
each tokenizer given, and prints the best-fitting ratio.

    python benchmarks/token_estimate.py TOKENIZER_JSON [TOKENIZER_JSON ...]
"""

from __future__ import annotations

import argparse
import statistics
import sysconfig
from pathlib import Path

from tokenizers import Tokenizer

CHUNK_LINES = 80  # about what one budget part (a snippet, a window side) holds


def corpus(limit: int) -> list[str]:
    """Chunks of CHUNK_LINES lines from the stdlib's .py files, in a stable order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    chunks: list[str] = []
    for path in sorted(stdlib.glob("*.py"))[:limit]:
        lines = path.read_text(errors="replace").splitlines(keepends=True)
        for start in range(0, len(lines), CHUNK_LINES):
            chunk = "".join(lines[start : start + CHUNK_LINES])
            if chunk.strip():
                chunks.append(chunk)
    return chunks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tokenizers", nargs="+", type=Path)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--ratio", type=float, default=3.5, help="the configured chars_per_token")
    args = parser.parse_args()
    chunks = corpus(args.files)
    chars = [len(c) for c in chunks]
    print(f"corpus: {len(chunks)} chunks of up to {CHUNK_LINES} lines, {sum(chars):,} characters")
    for path in args.tokenizers:
        tokenizer = Tokenizer.from_file(str(path))
        exact = [len(e.ids) for e in tokenizer.encode_batch(chunks, add_special_tokens=False)]
        best = sum(chars) / sum(exact)
        for label, ratio in ((f"configured {args.ratio}", args.ratio), (f"best {best:.2f}", best)):
            errors = sorted((c / ratio - e) / e for c, e in zip(chars, exact, strict=True))
            under = sum(1 for err in errors if err < 0) / len(errors)
            p95 = statistics.quantiles([abs(err) for err in errors], n=20)[-1]
            print(
                f"{path.parent.name or path.name}: ratio {label}: mean error "
                f"{statistics.mean(errors):+.1%}, mean |error| "
                f"{statistics.mean(abs(e) for e in errors):.1%}, p95 |error| {p95:.1%}, "
                f"underestimates {under:.0%} of chunks (worst {errors[0]:+.1%})"
            )


if __name__ == "__main__":
    main()
