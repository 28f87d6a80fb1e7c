"""Editor: ``qwend bench``, a client-side benchmark of the resident model through the daemon.

Like the CLI, it only talks to a running daemon (its socket, and ``qwend
lsp`` over stdio); it never loads the daemon's model itself, except for the
side-by-side runs of ``--compare`` (raw exllamav2, Hugging Face transformers).

- stats.py: medians and percentiles of repeated runs
- prompts.py: prompts of an exact token count, and their one-line-changed twins
- measure.py: time to first token, decode speed and concurrency over the socket
- lsp_probe.py: keystroke-to-completion latency through ``qwend lsp``
- compare.py: raw exllamav2, transformers ``generate`` and the bandwidth bound
- report.py: the table and the JSON document
- runner.py: the options and the order of the steps, with a progress bar
"""
