"""A Qwen GGUF from a hub, end to end: `qwend pull` picks the quant, the daemon serves
fill-in-the-middle on it through llama.cpp.

The hub is tests/fixtures/fake_hub.py on loopback; the GGUF is the tiny
random-weight Qwen2 model with Qwen2.5's real vocabulary
(tests/fixtures/qwen_gguf.py), so the text it writes is noise while the
prompt, its tokens and the budget report are Qwen2.5's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.fixtures.daemon import Daemon
from tests.fixtures.fake_backend import QWEN_TOKENIZER_CACHE
from tests.fixtures.fake_hub import FakeHub, write_loopback_guard
from tests.fixtures.qwen_gguf import tiny_qwen_gguf

REPO = "test-org/Tiny-Qwen2.5-Coder-GGUF"
PROFILE = "qwen2.5-coder-1.5b"  # the shipped llama.cpp profile, its source pointed here
FIM_IDS = [151659, 151661, 151660]  # <|fim_prefix|>, <|fim_suffix|>, <|fim_middle|>


def test_pull_a_gguf_quant_from_a_hub_and_complete_with_fim(
    sandbox: Path, make_daemon: Any
) -> None:
    gguf = tiny_qwen_gguf(QWEN_TOKENIZER_CACHE).read_bytes()
    config = {
        "daemon": {"model": PROFILE},
        "server": {"shutdown_timeout_s": 20.0},
        "models": {PROFILE: {"source": f"hf:{REPO}:F16", "context_length": 4096}},
    }
    daemon: Daemon = make_daemon(config)
    with FakeHub() as hub:
        hub.add_repo(
            REPO,
            {
                "main": {
                    "tiny-qwen2.5-coder-f16.gguf": gguf,
                    "tiny-qwen2.5-coder-q8_0.gguf": b"GGUF another quant",
                    "README.md": b"# quants\n",
                }
            },
        )
        env = {
            **{k: v for k, v in daemon.env.items() if not k.startswith("HF_")},
            "HF_ENDPOINT": hub.url,
            "HF_HOME": str(daemon.root / "hf-home"),
            "PYTHONPATH": os.pathsep.join(
                [str(write_loopback_guard(daemon.root / "guard")), os.environ.get("PYTHONPATH", "")]
            ),
        }
        pulled = subprocess.run(
            [sys.executable, "-m", "qwend", "pull", PROFILE, "--config", str(daemon.config_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert pulled.returncode == 0, pulled.stderr
        assert hub.file_gets() == ["tiny-qwen2.5-coder-f16.gguf"]
    folder = daemon.root / "xdg-cache" / "qwend" / "models" / PROFILE
    assert sorted(p.name for p in folder.iterdir()) == ["tiny-qwen2.5-coder-f16.gguf"]

    daemon.start().wait_for("ready")
    client = daemon.client(timeout=300)
    _, status = client.request("GET", "/v1/status")
    assert (status["model"]["backend"], status["model"]["context_length"]) == ("llama.cpp", 4096)
    # Request text is plain text: typed FIM markers are never the control tokens.
    _, tokens = client.request("POST", "/v1/tokenize", {"text": "<|fim_prefix|>a<|fim_suffix|>"})
    assert not set(tokens["ids"]) & set(FIM_IDS)

    code, answer = client.request(
        "POST",
        "/v1/tasks/complete",
        {
            "prefix": "def area(r):\n    ",
            "suffix": "\n\nprint(area(2))\n",
            "path": "geometry.py",
            "max_tokens": 6,
            "temperature": 0,
        },
    )
    assert code == 200, answer
    assert answer["budget"]["template"] == "fim"
    assert answer["usage"]["completion_tokens"] >= 1
    assert not daemon.netguard_log.exists() or daemon.netguard_log.read_text() == ""
