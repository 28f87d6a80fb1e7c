"""Integration fixtures: the real daemon as a subprocess (tests/fixtures/daemon.py)."""

from tests.fixtures.daemon import hf_model_dir, make_daemon, model_dir, shared_daemon

__all__ = ["hf_model_dir", "make_daemon", "model_dir", "shared_daemon"]
