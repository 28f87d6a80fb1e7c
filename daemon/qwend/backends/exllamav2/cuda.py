"""Engine: find the NVIDIA GPU, and prepare the environment exllamav2 builds in.

exllamav2 compiles its CUDA extension with torch's JIT loader the first time
it is imported. On the GPU machines qwend targets, two defaults break that
build (docs/gpu.md, "The first start builds a CUDA extension"): torch guesses
CUDA_HOME from the directory of a wrapper script, and the system toolkit lacks
the cuBLAS and cuSPARSE headers that the pip ``nvidia`` packages (installed with torch) carry.
``prepare_build_env`` fills in those variables, never overriding the user's.

torch is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from qwend import paths
from qwend.errors import BackendUnavailable

CUDA_HOME_DEFAULT: Final = Path("/usr/local/cuda")  # the toolkit's usual symlink
EXTENSION_NAME: Final = "exllamav2_ext"  # the module exllamav2/ext.py builds or imports
NVIDIA_SMI_TIMEOUT_S: Final = 10.0  # a wedged driver must not hang `qwend doctor`
GPU_INSTALL_HINT: Final = (
    "on an NVIDIA machine install the GPU path (docs/gpu.md: pip install -e '.[gpu]' "
    "with a CUDA build of torch); or serve the CPU model: qwend serve --model smollm2-135m"
)


@dataclass(frozen=True)
class GpuFacts:
    """What torch sees of the first CUDA device."""

    name: str
    capability: str  # "9.0" for Hopper: the one architecture the extension is built for
    memory_total_bytes: int
    memory_free_bytes: int
    torch_version: str
    torch_cuda: str


def torch_summary() -> dict[str, Any]:
    """torch's version and the CUDA it was built for; {"installed": False} without torch."""
    try:
        import torch
    except ImportError:
        return {"installed": False}
    return {"installed": True, "version": torch.__version__, "cuda": torch.version.cuda}


def gpu_facts() -> GpuFacts | None:
    """The first visible CUDA device, or None (no torch, a CPU build, or no GPU)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    free, total = torch.cuda.mem_get_info(0)
    return GpuFacts(
        name=torch.cuda.get_device_name(0),
        capability=f"{major}.{minor}",
        memory_total_bytes=int(total),
        memory_free_bytes=int(free),
        torch_version=torch.__version__,
        torch_cuda=str(torch.version.cuda),
    )


def require_gpu(profile_name: str) -> GpuFacts:
    """The GPU the profile will run on; BackendUnavailable, saying what to do, if none."""
    facts = gpu_facts()
    if facts is not None:
        return facts
    torch_info = torch_summary()
    if not torch_info["installed"]:
        why = "torch is not installed"
    elif torch_info["cuda"] is None:
        why = f"torch {torch_info['version']} is a CPU-only build"
    else:
        why = f"torch {torch_info['version']} (CUDA {torch_info['cuda']}) sees no NVIDIA GPU"
    raise BackendUnavailable(
        f"model profile '{profile_name}' runs on an NVIDIA GPU with exllamav2, and {why}",
        hint=GPU_INSTALL_HINT,
    )


def require_exllamav2(profile_name: str) -> str:
    """exllamav2's installed version; BackendUnavailable if it is not installed."""
    try:
        return importlib.metadata.version("exllamav2")
    except importlib.metadata.PackageNotFoundError:
        raise BackendUnavailable(
            f"model profile '{profile_name}' needs exllamav2, which is not installed",
            hint="pip install -e '.[gpu]' (docs/gpu.md); or: qwend serve --model smollm2-135m",
        ) from None


def driver_version() -> str | None:
    """The NVIDIA driver's version from nvidia-smi, or None if it cannot be asked."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.strip().splitlines()
    return first[0].strip() if first else None


def nvidia_include_dir() -> Path | None:
    """The headers the pip ``nvidia`` packages ship (cuBLAS, cuSPARSE, ...), if any."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        for flavour in ("cu13", "cu12"):  # CUDA 13 wheels nest a cu13/ folder
            candidate = Path(root) / flavour / "include"
            if candidate.is_dir():
                return candidate
    return None


def extensions_dir(env: MutableMapping[str, str] = os.environ) -> Path:
    """Where torch's JIT loader builds and caches extensions for qwend."""
    configured = env.get("TORCH_EXTENSIONS_DIR")
    return Path(configured) if configured else paths.cache_dir() / "torch_extensions"


def prepare_build_env(
    capability: str | None, env: MutableMapping[str, str] = os.environ
) -> dict[str, str]:
    """Set what exllamav2's first build needs and the user did not set; return it.

    ``capability`` ("9.0") limits the build to this GPU's architecture, which
    cuts the first build from all architectures torch knows to one.
    """
    chosen: dict[str, str] = {}
    if "CUDA_HOME" not in env and (CUDA_HOME_DEFAULT / "bin" / "nvcc").exists():
        chosen["CUDA_HOME"] = str(CUDA_HOME_DEFAULT)
    include = nvidia_include_dir()
    if include is not None and str(include) not in env.get("CPATH", "").split(os.pathsep):
        chosen["CPATH"] = os.pathsep.join(filter(None, [env.get("CPATH", ""), str(include)]))
    if capability is not None and "TORCH_CUDA_ARCH_LIST" not in env:
        chosen["TORCH_CUDA_ARCH_LIST"] = capability
    if "TORCH_EXTENSIONS_DIR" not in env:
        chosen["TORCH_EXTENSIONS_DIR"] = str(extensions_dir(env))
    env.update(chosen)
    return chosen


def built_extension(env: MutableMapping[str, str] = os.environ) -> Path | None:
    """exllamav2's compiled extension if one exists (prebuilt, or built by a start)."""
    spec = importlib.util.find_spec(EXTENSION_NAME)
    if spec is not None and spec.origin:
        return Path(spec.origin)
    root = extensions_dir(env)
    found = sorted(root.glob(f"*/{EXTENSION_NAME}/{EXTENSION_NAME}*.so"))
    return found[0] if found else None


def flash_attn_version() -> str | None:
    """The installed flash-attn's version, or None (qwend then batches with torch, or not)."""
    try:
        return importlib.metadata.version("flash-attn")
    except importlib.metadata.PackageNotFoundError:
        return None
