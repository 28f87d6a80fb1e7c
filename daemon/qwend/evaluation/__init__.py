"""Editor: ``qwend eval``, completion quality measured through the daemon's real ``complete`` task.

Like ``qwend bench`` it is a client of a running daemon (or of daemons it
starts for ``--compare``); it never loads a model itself. The score is what
an editor user would see: each answer goes through the language server's
own ghost-text shaping before it is scored.

- suites.py: the built-in HumanEval-infilling suites (vendored in data/,
  MIT) and ``--file`` loading
- scoring.py: exact match, edit similarity, the program the tests run on
- sandbox.py: the tests in a subprocess with limits on time, memory, files,
  processes and network
- targets.py: the daemon(s) to evaluate: a socket, or one started from a
  config file or a model profile
- runner.py: the cases in order, under a progress bar
- report.py: figures, the table, the side-by-side comparison, the results file
"""
