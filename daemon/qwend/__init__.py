"""qwend: a local code-assistant daemon keeping one model resident for every editor."""

__version__ = "0.1.0"
