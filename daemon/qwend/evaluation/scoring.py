"""Editor: scores of one suggestion against the canonical text (``qwend eval``).

Pure functions, no I/O. Edit similarity is RapidFuzz's ``fuzz.ratio``: the
normalized Indel similarity on a 0-100 scale, the same figure as
fuzzywuzzy's ``fuzz.ratio`` that Qwen2.5-Coder's HumanEval-FIM evaluation
reports (RapidFuzz is its maintained successor; it gives the unrounded
value, and 100 for two empty strings, where fuzzywuzzy gave 0).

- **single line**: the first line of the suggestion against the canonical
  line, both stripped: exact match and edit similarity. (Qwen's script
  skips a leading blank line of the raw model output; qwend scores the
  ghost text an editor shows, and the language server cuts a single-line
  suggestion at its first newline, so a suggestion that starts with one is
  empty, as the user sees it.)
- **block**: exact match of the blocks with trailing spaces and blank lines
  ignored (indentation counts: it is Python), and edit similarity of the
  two texts stripped at both ends, as Qwen strips them.

The functional check runs ``prompt + insertion + suffix`` followed by the
problem's ``test`` and ``check(entry_point)``; ``checked_program`` builds it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rapidfuzz import fuzz

from qwend.evaluation.suites import Case


@dataclass(frozen=True)
class TextScore:
    exact_match: bool
    edit_similarity: float  # 0-100


def first_line(text: str) -> str:
    return text.replace("\r\n", "\n").split("\n", 1)[0]


def edit_similarity(a: str, b: str) -> float:
    """RapidFuzz ``fuzz.ratio``: 100 * (1 - Indel distance / (len(a) + len(b)))."""
    return float(fuzz.ratio(a, b))


def score_single_line(suggestion: str, canonical: str) -> TextScore:
    predicted = first_line(suggestion).strip()
    expected = first_line(canonical).strip()
    return TextScore(predicted == expected, edit_similarity(predicted, expected))


def normalize_block(text: str) -> str:
    """Lines with trailing whitespace removed and blank lines dropped; indentation kept."""
    lines = (line.rstrip() for line in text.replace("\r\n", "\n").split("\n"))
    return "\n".join(line for line in lines if line)


def score_block(suggestion: str, canonical: str) -> TextScore:
    exact = normalize_block(suggestion) == normalize_block(canonical)
    return TextScore(exact, edit_similarity(suggestion.strip(), canonical.strip()))


def score(suggestion: str, canonical: str, mode: str) -> TextScore:
    """The suite's scores: first line for ``single``, the whole block otherwise."""
    if mode == "single":
        return score_single_line(suggestion, canonical)
    return score_block(suggestion, canonical)


def insertion(suggestion: str, mode: str, line_hole: bool = True) -> str:
    """The text the accepted suggestion puts into the hole.

    For a hole of whole lines, the user was on an empty line: the suggestion
    (its first line for ``single``) fills that line, and the line's own
    newline follows it. For a span inside a line, the suggestion goes in as
    it is. An empty suggestion inserts nothing.
    """
    text = first_line(suggestion) if mode == "single" else suggestion.replace("\r\n", "\n")
    if not text.strip():
        return ""
    if not line_hole or text.endswith("\n"):
        return text
    return text + "\n"


def checked_program(case: Case, inserted: str) -> str:
    """The program the sandbox runs: the completed file, then the problem's tests."""
    return f"{case.prompt}{inserted}{case.suffix}\n\n{case.test}\n\ncheck({case.entry_point})\n"
