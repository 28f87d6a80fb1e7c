"""Editor: syntax trees (tree-sitter) so that code actions never break a file.

One rule per module, each a pure function over text and trees (no pygls,
no I/O), so commands.py calls them from short handlers:

- languages.py: LSP language ids -> grammar wheels, and parsing;
- targets.py: the unit an action works on (the smallest enclosing function,
  method or class, in whole lines);
- checks.py: a cut-off answer is refused; a document that parsed before
  must parse after the edit;
- docstrings.py: each language's own doc-comment form and place;
- testfiles.py: where generated tests go (a new file beside the source).

Unknown languages (no grammar) keep the line-based behaviour; the parse
check is then skipped and says so.
"""
