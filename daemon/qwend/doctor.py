"""Editor: ``qwend doctor``, what this machine has for the GPU backend and what to do.

Each check reports ``ok``, ``warn`` (works, with a cost) or ``fail`` (the
configured profile cannot run) with the fix beside it. Nothing here starts
or talks to the daemon; torch is imported, exllamav2 only with ``--build``,
which builds its CUDA extension in the foreground so its progress bar shows
instead of a silent multi-minute first start.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final, Literal

from qwend import __version__
from qwend.backends.exllamav2 import cuda as cuda_env
from qwend.config import Config
from qwend.errors import BackendUnavailable

Status = Literal["ok", "warn", "fail"]
NVCC_TIMEOUT_S: Final = 10.0
MARKS: Final = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def run_checks(config: Config) -> list[Check]:
    """Every check, in the order a user would fix them."""
    gpu_profile = config.profile.backend == "exllamav2"
    needed: Status = "fail" if gpu_profile else "warn"  # a CPU profile runs without them
    checks = [
        Check("qwend", "ok", f"qwend {__version__}, Python {platform.python_version()}"),
        Check(
            "profile",
            "ok",
            f"'{config.model_name}': {config.profile.backend} on {config.profile.device}",
        ),
        _torch_check(needed),
    ]
    gpu = cuda_env.gpu_facts()
    checks.append(_gpu_check(gpu, needed))
    checks.append(_toolkit_check(needed))
    checks.append(_exllamav2_check(needed))
    checks.append(_extension_check(gpu))
    checks.append(_flash_attn_check())
    if config.profile.backend == "llama.cpp":
        checks.append(_llama_cpp_check())
    checks.append(_model_check(config))
    return checks


def _llama_cpp_check() -> Check:
    """The CPU backend for GGUF models (only asked about for a llama.cpp profile)."""
    from qwend.backends.llamacpp import INSTALL_HINT, llama_cpp_version

    version = llama_cpp_version()
    if version is None:
        return Check("llama.cpp", "fail", "llama-cpp-python is not installed", INSTALL_HINT)
    return Check("llama.cpp", "ok", f"llama-cpp-python {version}")


def _torch_check(needed: Status) -> Check:
    info = cuda_env.torch_summary()
    if not info["installed"]:
        return Check("torch", "fail", "not installed", "pip install -e '.[gpu]' (docs/gpu.md)")
    if info["cuda"] is None:
        return Check(
            "torch",
            needed,
            f"{info['version']}, a CPU-only build",
            "install a CUDA build of torch for the GPU backend (docs/gpu.md)",
        )
    return Check("torch", "ok", f"{info['version']}, built for CUDA {info['cuda']}")


def _gpu_check(gpu: cuda_env.GpuFacts | None, needed: Status) -> Check:
    if gpu is None:
        return Check(
            "gpu", needed, "torch sees no NVIDIA GPU", "check nvidia-smi and CUDA_VISIBLE_DEVICES"
        )
    driver = cuda_env.driver_version() or "unknown (nvidia-smi not found)"
    return Check(
        "gpu",
        "ok",
        f"{gpu.name} (sm {gpu.capability}), driver {driver}, "
        f"{gpu.memory_free_bytes / 2**30:.1f} of {gpu.memory_total_bytes / 2**30:.1f} GiB free",
    )


def _toolkit_check(needed: Status) -> Check:
    """nvcc compiles exllamav2's extension on the first start."""
    home = os.environ.get("CUDA_HOME") or str(cuda_env.CUDA_HOME_DEFAULT)
    nvcc = Path(home) / "bin" / "nvcc"
    if not nvcc.exists():
        found = shutil.which("nvcc")
        if found is None:
            return Check(
                "cuda toolkit",
                needed,
                "nvcc not found",
                "install the CUDA toolkit and set CUDA_HOME (docs/gpu.md)",
            )
        nvcc = Path(found)
    try:
        out = subprocess.run(
            [str(nvcc), "--version"], capture_output=True, text=True, timeout=NVCC_TIMEOUT_S
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("cuda toolkit", needed, f"{nvcc} does not run: {exc}")
    release = next((line for line in out.splitlines() if "release" in line), out.strip())
    include = cuda_env.nvidia_include_dir()
    headers = f"; pip CUDA headers in {include}" if include else ""
    return Check("cuda toolkit", "ok", f"{nvcc}: {release.strip()}{headers}")


def _exllamav2_check(needed: Status) -> Check:
    try:
        version = cuda_env.require_exllamav2("this")
    except BackendUnavailable:
        return Check("exllamav2", needed, "not installed", "pip install -e '.[gpu]'")
    return Check("exllamav2", "ok", version)


def _extension_check(gpu: cuda_env.GpuFacts | None) -> Check:
    built = cuda_env.built_extension()
    if built is not None:
        return Check("exllamav2 extension", "ok", f"built: {built}")
    if gpu is None:
        return Check("exllamav2 extension", "warn", "not built (needs a GPU machine)")
    return Check(
        "exllamav2 extension",
        "warn",
        "not built yet: the first start compiles it (several minutes)",
        "qwend doctor --build (shows the build's progress)",
    )


def _flash_attn_check() -> Check:
    version = cuda_env.flash_attn_version()
    if version is not None:
        return Check("flash-attn", "ok", f"{version}: requests batch (paged attention)")
    return Check(
        "flash-attn",
        "warn",
        'absent: paged_attention = "auto" serves one request at a time',
        'set paged_attention = "torch" to batch with qwend\'s torch attention (docs/gpu.md)',
    )


def _model_check(config: Config) -> Check:
    from qwend.models.cache import model_present

    folder = config.model_dir()
    if model_present(config):
        return Check("model", "ok", f"{config.model_name} in {folder}")
    return Check(
        "model",
        "fail",
        f"{config.model_name} is not in {folder}",
        f"qwend pull {config.model_name}",
    )


def build_extension() -> float:
    """Import exllamav2 in the foreground, which builds its extension; the seconds it took.

    Raises BackendUnavailable when there is no GPU to build for, or the build fails.
    """
    gpu = cuda_env.gpu_facts()
    if gpu is None:
        raise BackendUnavailable(
            "there is no NVIDIA GPU here to build exllamav2's extension for",
            hint=cuda_env.GPU_INSTALL_HINT,
        )
    for key, value in cuda_env.prepare_build_env(gpu.capability).items():
        print(f"  {key}={value}", flush=True)
    started = time.monotonic()
    try:
        import exllamav2  # noqa: F401  (importing it is the build)
    except Exception as exc:  # the compiler's output is above; say what to do
        raise BackendUnavailable(
            f"building exllamav2's extension failed: {type(exc).__name__}: {exc}",
            hint="see the compiler output above and docs/gpu.md (troubleshooting)",
        ) from exc
    return time.monotonic() - started


def render(checks: list[Check]) -> str:
    width = max(len(check.name) for check in checks)
    lines = []
    for check in checks:
        lines.append(f"{MARKS[check.status]}  {check.name:<{width}}  {check.detail}")
        if check.fix and check.status != "ok":
            lines.append(f"{'':4}  {'':<{width}}  -> {check.fix}")
    return "\n".join(lines)


def as_json(checks: list[Check]) -> list[dict[str, str]]:
    return [asdict(check) for check in checks]


def exit_code(checks: list[Check]) -> int:
    return 1 if any(check.status == "fail" for check in checks) else 0
