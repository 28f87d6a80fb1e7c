"""LSP: commit messages are cleaned into git's form: subject <= 72, blank line, body."""

from __future__ import annotations

from qwend_lsp.commit_message import SUBJECT_CHARS, clean

DIFF = (
    "diff --git a/add.py b/add.py\nnew file mode 100644\n--- /dev/null\n+++ b/add.py\n"
    "@@ -0,0 +1,2 @@\n+def add(a, b):\n+    return a + b\n"
)


def test_fences_labels_and_echoed_diff_go() -> None:
    answer = (
        "```\nCommit message: Add an add() helper\n\n+def add(a, b):\n@@ -0,0 +1,2 @@\n"
        "It sums.\n```"
    )
    assert clean(answer, DIFF) == "Add an add() helper\n\nIt sums.\n"


def test_a_long_subject_is_cut_at_a_word() -> None:
    words = "Add a helper that adds two numbers and returns their sum to the module for callers"
    message = clean(words, DIFF)
    subject, blank, body = message.split("\n")[:3]
    assert len(subject) <= SUBJECT_CHARS and words.startswith(subject)
    assert blank == "" and body == words[len(subject) :].strip()


def test_an_answer_with_nothing_left_still_has_the_form() -> None:
    assert clean("```diff\n" + DIFF + "```", DIFF) == "Update add.py\n\nChanged: add.py.\n"
    assert clean("- Add add()", DIFF) == "Add add()\n\nChanged: add.py.\n"
