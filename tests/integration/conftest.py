"""Integration fixtures: the real daemon, as a subprocess, with the real model.

Each daemon gets its own short socket directory, XDG directories and config
file, and the network guard in netguard/ (every non-Unix connect fails and is
logged). The daemons serve `smollm2-135m`, SmolLM2's GGUF through llama.cpp;
tests that need the reference (transformers on the converted weights) use
`smollm2-135m-hf`. Both come from `qwend pull`, which the README's test command
runs first; QWEND_TEST_MODEL_DIR and QWEND_TEST_HF_MODEL_DIR point elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from qwend import paths
from qwend.client import DaemonClient
from qwend.errors import DaemonUnavailable

NETGUARD_DIR = Path(__file__).parent / "netguard"
START_TIMEOUT_S = 120.0  # torch import plus model load on a slow 2-core CI machine


MODEL = "smollm2-135m"  # the llama.cpp profile every daemon test serves
HF_MODEL = "smollm2-135m-hf"  # the transformers reference on the same weights


def _default_model_dir(variable: str, profile: str) -> Path:
    return Path(os.environ.get(variable) or paths.models_dir() / profile)


# Read before any test changes the environment.
MODEL_DIR = _default_model_dir("QWEND_TEST_MODEL_DIR", MODEL)
HF_MODEL_DIR = _default_model_dir("QWEND_TEST_HF_MODEL_DIR", HF_MODEL)


def require_models(folder: Path, profile: str, variable: str) -> Path:
    """``folder`` if it holds ``profile``'s weights, else fail saying how to get them."""
    from qwend.backends.folder import missing_files

    backend = "llama.cpp" if profile == MODEL else "transformers"
    if missing_files(folder, backend):
        pytest.fail(
            f"the SmolLM2 test model is not in {folder}: run `qwend pull {profile}` "
            f"(the README's test command does) or set {variable}"
        )
    return folder


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The GGUF folder of `smollm2-135m` (llama.cpp)."""
    return require_models(MODEL_DIR, MODEL, "QWEND_TEST_MODEL_DIR")


@pytest.fixture(scope="session")
def hf_model_dir() -> Path:
    """The converted safetensors folder of `smollm2-135m-hf` (transformers)."""
    return require_models(HF_MODEL_DIR, HF_MODEL, "QWEND_TEST_HF_MODEL_DIR")


class Daemon:
    """A `qwend serve` subprocess in its own sandbox of directories."""

    def __init__(
        self, root: Path, config: dict[str, Any], env: Mapping[str, str] | None = None
    ) -> None:
        """``env`` adds to the daemon's environment; its PYTHONPATH entries go after
        the network guard's (tests/gpu passes the emulated-extension hook this way)."""
        self.root = root
        self.socket = root / "run" / "qwend.sock"
        self.config_path = root / "config.toml"
        self.log_path = root / "daemon.log"
        self.netguard_log = root / "netguard.log"
        self.config_path.write_text(_to_toml(config))
        self.process: subprocess.Popen[bytes] | None = None
        extra = dict(env or {})
        extra_path = extra.pop("PYTHONPATH", "")
        paths = [str(NETGUARD_DIR), extra_path] if extra_path else [str(NETGUARD_DIR)]
        self.env = {
            **os.environ,
            **extra,
            "XDG_CONFIG_HOME": str(root / "xdg-config"),
            "XDG_CACHE_HOME": str(root / "xdg-cache"),
            "XDG_STATE_HOME": str(root / "xdg-state"),
            "XDG_RUNTIME_DIR": str(root / "xdg-run"),
            "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]),
            "QWEND_NETGUARD_LOG": str(self.netguard_log),
            "PYTHONUNBUFFERED": "1",
        }

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "qwend", *args]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a qwend CLI command against this daemon's config and socket."""
        return subprocess.run(
            self.command(*args, "--config", str(self.config_path), "--socket", str(self.socket)),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self) -> Daemon:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command("serve", "--config", str(self.config_path), "--socket", str(self.socket)),
            env=self.env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        return self

    def client(self, timeout: float | None = 30.0) -> DaemonClient:
        return DaemonClient(self.socket, timeout=timeout)

    def health(self) -> str:
        try:
            _, body = self.client(timeout=2).request("GET", "/health")
        except DaemonUnavailable:
            return "unreachable"
        return str(body.get("status"))

    def wait_for(self, *states: str, timeout: float = START_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.health()
            if state in states:
                return state
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"daemon exited early:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"daemon never reached {states}:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _to_toml(data: dict[str, Any], prefix: str = "") -> str:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    lines = [f"[{prefix}]"] if prefix and scalars else []
    lines += [f"{key} = {json.dumps(value)}" for key, value in scalars.items()]
    text = "\n".join(lines) + ("\n" if lines else "")
    for key, table in tables.items():
        name = f'{prefix}."{key}"' if prefix else key
        text += _to_toml(table, name)
    return text


def smollm2_config(model_path: Path, *, profile: str = MODEL, **server: Any) -> dict[str, Any]:
    """A daemon config serving ``profile`` from ``model_path`` (llama.cpp by default)."""
    preload = server.pop("preload", True)
    model: dict[str, Any] = {"path": str(model_path)}
    if profile == MODEL:
        # The suite runs the daemon beside pytest, a language server and, on a shared
        # machine, other work: llama.cpp's spinning threads stall each other when the
        # cores are busy (docs/troubleshooting.md), and one thread does not.
        model["threads"] = 1
    return {
        "daemon": {"model": profile, "preload": preload},
        "server": {"shutdown_timeout_s": 20.0, **server},
        "models": {profile: model},
    }


@pytest.fixture
def make_daemon(sandbox: Path) -> Iterator[Any]:
    started: list[Daemon] = []

    def make(config: dict[str, Any], name: str = "d") -> Daemon:
        root = sandbox / name
        root.mkdir()
        daemon = Daemon(root, config)
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.stop()


@pytest.fixture(scope="module")
def shared_daemon(model_dir: Path) -> Iterator[Daemon]:
    """One ready daemon (queue of 1) for the tests that do not restart it."""
    root = Path(tempfile.mkdtemp(prefix="qwt-", dir="/tmp"))
    daemon = Daemon(root, smollm2_config(model_dir, queue_size=1)).start()
    try:
        daemon.wait_for("ready")
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
