"""Engine: qwend's routed tasks (complete, explain, ..., reasoning).

registry.py   the catalogue: every task's name, input, budget parts, templates, lane, title
prepare.py    a validated input -> its prompt, fitted into the window, and its request
prompts.py    the prompt formats of each model family (FIM, chat, code tasks)
budget.py     exact-token budgets: which parts of a prompt keep how much

Adding a task is one entry in registry.py plus its table in config/qwend.toml.
"""
