"""Protocol: qwend's configuration, parsed and validated into typed objects.

Two TOML files are read: the shipped defaults (``config/qwend.toml``) and the
user's file (``$XDG_CONFIG_HOME/qwend/config.toml`` or ``--config``), which
overrides them table by table, key by key. An unknown key, a wrong type or an
out-of-range value raises ConfigError naming the file, the key and the reason;
nothing is guessed and nothing falls back silently.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qwend import paths
from qwend.backends.exllamav2.limits import GPU_ONLY_KEYS, profile_problem
from qwend.backends.remote import limits as remote_limits
from qwend.errors import ConfigError
from qwend.tasks.registry import TASK_NAMES, TASKS

BackendName = Literal["transformers", "exllamav2", "llama.cpp", "remote"]
FamilyName = Literal["qwen2.5", "smollm2"]
BACKEND_DEVICES: dict[str, str] = {
    "transformers": "cpu",
    "exllamav2": "cuda",
    "llama.cpp": "cpu",
    "remote": "remote",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DaemonSettings(_Strict):
    model: str = Field(min_length=1)
    preload: bool = True


class ServerSettings(_Strict):
    socket: str = ""
    max_body_bytes: int = Field(ge=1024, le=64 * 2**20)
    queue_size: int = Field(ge=1, le=4096)
    shutdown_timeout_s: float = Field(ge=0, le=600)
    # Stalled clients (docs/config.md#server): a connection without a complete request,
    # a body that stops arriving, an answer the client stops reading.
    idle_timeout_s: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False)
    read_timeout_s: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False)
    write_timeout_s: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False)


class ModelProfile(_Strict):
    backend: BackendName
    family: FamilyName
    device: Literal["cpu", "cuda", "remote"]
    context_length: int = Field(ge=256, le=1_048_576)
    path: str = ""
    # Where `qwend pull` fetches the weights (a remote profile: its tokenizer).
    # Required for the local backends (checked below).
    source: str = ""
    threads: int = Field(default=0, ge=0, le=256)
    description: str = ""
    # exllamav2 only (docs/gpu.md). The KV cache's element type: fp16, or
    # quantized q8/q6/q4 (less memory, dequantized on every forward).
    cache_type: Literal["fp16", "q8", "q6", "q4"] = "fp16"
    # Tokens the KV cache holds for all running requests together; 0 sizes it
    # to context_length. A multiple of EXL2_PAGE_TOKENS.
    cache_tokens: int = Field(default=0, ge=0, le=4_194_304)
    # Requests decoded side by side when paged attention is on. Each slot
    # costs a pinned logits buffer of 8 x vocab x 4 bytes (4.9 MB for Qwen2.5);
    # exllamav2's default of 256 slots wastes 1.25 GB of host memory.
    max_batch_size: int = Field(default=16, ge=1, le=256)
    # auto: flash-attn if it is installed, else one request at a time.
    # torch: qwend's paged attention in plain torch (batches without flash-attn).
    paged_attention: Literal["auto", "flash_attn", "torch", "off"] = "auto"
    # Prompt tokens per forward pass while prefilling: lower makes the pauses
    # other streams see when a long prompt arrives shorter. A multiple of 256.
    prefill_chunk_tokens: int = Field(default=2048, ge=256, le=16384)
    # remote only (docs/remote.md): an OpenAI-compatible engine on another
    # machine or process; rules in qwend.backends.remote.limits.
    url: str = ""  # the server's root; http only to loopback
    model: str = ""  # the engine's model id (its /v1/models)
    api_key_env: str = ""  # the variable holding the key, or
    api_key_file: str = ""  # a file holding it, mode 0600
    ca_bundle: str = ""  # PEM certificates to trust besides the system's
    # "": tokenizer.json in the profile's cache folder (`qwend pull NAME`);
    # a path (the file, or its folder); "engine": the engine's tokenize
    # endpoint; "none": no exact counts (see budget.estimate_without_tokenizer).
    tokenizer: str = ""
    connect_timeout_s: float = Field(default=5.0, gt=0, le=300, allow_inf_nan=False)
    # Longest wait for the engine's next token (its queue and prefill included).
    read_timeout_s: float = Field(default=120.0, gt=0, le=3600, allow_inf_nan=False)
    # Requests this daemon runs on the engine at once; more wait in qwend's lanes.
    max_concurrent: int = Field(default=4, ge=1, le=256)


class GenerationDefaults(_Strict):
    max_tokens: int = Field(ge=1)
    max_tokens_limit: int = Field(ge=1)
    temperature: float = Field(ge=0, le=2, allow_inf_nan=False)
    top_p: float = Field(gt=0, le=1, allow_inf_nan=False)


# Task tables are keyed by the registry's names (an unknown table is refused by name).
if TYPE_CHECKING:
    TaskName = str
else:
    TaskName = Literal[TASK_NAMES]


class TaskSettings(_Strict):
    # Priority, highest first (docs/tasks.md); None: the registry's lane.
    lane: Literal["completion", "interactive", "background"] | None = None
    template: Literal["fim", "prefix", "chat"]
    max_tokens: int = Field(ge=1)
    temperature: float = Field(ge=0, le=2, allow_inf_nan=False)
    top_p: float = Field(gt=0, le=1, allow_inf_nan=False)
    stop: list[str] = Field(default_factory=list, max_length=16)
    system: str = ""
    instruction: str = ""
    budget: dict[str, float] = Field(default_factory=dict)
    max_input_tokens: int = Field(default=0, ge=0)


class BudgetSettings(_Strict):
    # No tokenizer means no exact counts; estimating is allowed only when asked for.
    estimate_without_tokenizer: bool = False
    chars_per_token: float = Field(gt=0.5, le=10, allow_inf_nan=False)


class SchedulingSettings(_Strict):
    """Priorities and preemption (engine/scheduling.py; docs/config.md)."""

    preempt: bool = True
    starvation_after_s: float = Field(default=10.0, gt=0, le=3600, allow_inf_nan=False)
    starvation_run_s: float = Field(default=2.0, gt=0, le=3600, allow_inf_nan=False)


class Settings(_Strict):
    daemon: DaemonSettings
    server: ServerSettings
    scheduling: SchedulingSettings = SchedulingSettings()
    generation: GenerationDefaults
    budget: BudgetSettings
    tasks: dict[TaskName, TaskSettings]
    models: dict[str, ModelProfile]


@dataclass(frozen=True)
class Config:
    """The validated settings plus where they came from."""

    settings: Settings
    files: tuple[Path, ...]

    @property
    def model_name(self) -> str:
        return self.settings.daemon.model

    @property
    def profile(self) -> ModelProfile:
        return self.settings.models[self.model_name]

    def model_dir(self, name: str | None = None) -> Path:
        """The folder the profile's weights live in (``path`` or the cache)."""
        profile = self.settings.models[name or self.model_name]
        if profile.path:
            return Path(profile.path).expanduser()
        return paths.models_dir() / (name or self.model_name)

    def socket_path(self) -> Path:
        raw = self.settings.server.socket
        return Path(raw).expanduser() if raw else paths.default_socket_path()


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}", file=str(path)) from None


def _merge(
    base: dict[str, Any], override: dict[str, Any], path: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Override key by key; a task's ``budget`` shares replace the shipped ones
    whole (they only make sense together)."""
    merged = dict(base)
    for key, value in override.items():
        whole = len(path) == 2 and path[0] == "tasks" and key == "budget"
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and not whole:
            merged[key] = _merge(merged[key], value, (*path, key))
        else:
            merged[key] = value
    return merged


def _has_key(data: dict[str, Any], loc: tuple[str | int, ...]) -> bool:
    node: Any = data
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _validation_error(
    exc: ValidationError, layers: list[tuple[Path, dict[str, Any]]]
) -> ConfigError:
    first = exc.errors(include_url=False)[0]
    loc = tuple(first["loc"])
    key = ".".join(str(part) for part in loc)
    # Blame the last file that set the key; a missing key belongs to the last file.
    source = next((p for p, d in reversed(layers) if _has_key(d, loc)), layers[-1][0])
    value = f" (got {first['input']!r})" if first["type"] != "missing" else ""
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return ConfigError(
        f"{source}: key '{key}': {first['msg']}{value}{more}",
        hint="see docs/config.md for every key and its allowed values",
        file=str(source),
        key=key,
    )


def load_config(user_path: Path | None = None, *, model_override: str | None = None) -> Config:
    """Read shipped defaults, then the user file (if it exists), and validate.

    ``user_path`` given explicitly must exist; the default user path may be
    absent. ``model_override`` (``qwend serve --model``) picks the resident
    profile visibly, on the command line. Raises ConfigError.
    """
    shipped = paths.shipped_config_path()
    layers = [(shipped, _read_toml(shipped))]
    if user_path is not None:
        layers.append((user_path, _read_toml(user_path)))
    elif paths.user_config_path().is_file():
        layers.append((paths.user_config_path(), _read_toml(paths.user_config_path())))
    merged: dict[str, Any] = {}
    for _, data in layers:
        merged = _merge(merged, data)
    if model_override is not None:
        merged = _merge(merged, {"daemon": {"model": model_override}})
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise _validation_error(exc, layers) from None
    files = tuple(path for path, _ in layers)
    _check_consistency(settings, files[-1])
    return Config(settings=settings, files=files)


def _check_consistency(settings: Settings, source: Path) -> None:
    name = settings.daemon.model
    if name not in settings.models:
        raise ConfigError(
            f"{source}: key 'daemon.model': no model profile named '{name}'",
            hint="choose one of: " + ", ".join(sorted(settings.models)),
            key="daemon.model",
        )
    for profile_name, profile in settings.models.items():
        _check_profile(profile_name, profile, source)
    gen = settings.generation
    if gen.max_tokens > gen.max_tokens_limit:
        raise ConfigError(
            f"{source}: key 'generation.max_tokens': {gen.max_tokens} is above "
            f"generation.max_tokens_limit ({gen.max_tokens_limit})",
            key="generation.max_tokens",
        )
    for task_name in TASK_NAMES:
        if task_name not in settings.tasks:
            raise ConfigError(f"{source}: table 'tasks.{task_name}' is missing", key="tasks")
    for task_name, task in settings.tasks.items():
        _check_task(task_name, task, settings.generation.max_tokens_limit, source)


def _check_profile(name: str, profile: ModelProfile, source: Path) -> None:
    def fail(key: str, reason: str) -> ConfigError:
        return ConfigError(
            f"{source}: key 'models.{name}.{key}': {reason}", key=f"models.{name}.{key}"
        )

    expected = BACKEND_DEVICES[profile.backend]
    if profile.device != expected:
        raise fail(
            "device", f"the {profile.backend} backend runs on '{expected}', not '{profile.device}'"
        )
    if profile.backend != "remote":
        if not profile.source:
            raise fail("source", "required: where `qwend pull` fetches the weights")
        for key in remote_limits.REMOTE_ONLY_KEYS:
            if key in profile.model_fields_set:
                raise fail(key, f"only the remote backend uses it, not {profile.backend}")
    if profile.backend != "exllamav2":
        for key in GPU_ONLY_KEYS:
            if key in profile.model_fields_set:
                raise fail(key, f"only the exllamav2 backend uses it, not {profile.backend}")
    problem = None
    if profile.backend == "exllamav2":
        problem = profile_problem(profile)
    elif profile.backend == "remote":
        problem = remote_limits.profile_problem(profile)
    if problem is not None:
        raise fail(*problem)


def _check_task(name: str, task: TaskSettings, max_tokens_limit: int, source: Path) -> None:
    def fail(key: str, reason: str) -> ConfigError:
        return ConfigError(
            f"{source}: key 'tasks.{name}.{key}': {reason}", key=f"tasks.{name}.{key}"
        )

    spec = TASKS[name]
    if task.template not in spec.templates:
        raise fail("template", f"must be one of {sorted(spec.templates)}")
    if task.max_tokens > max_tokens_limit:
        raise fail("max_tokens", f"above generation.max_tokens_limit ({max_tokens_limit})")
    unknown = set(task.budget) - spec.flexible_parts
    if unknown:
        raise fail("budget", f"unknown part {sorted(unknown)[0]!r}; parts: "
                   + ", ".join(sorted(spec.flexible_parts)))  # fmt: skip
    if any(share < 0 for share in task.budget.values()) or sum(task.budget.values()) > 1.0001:
        raise fail("budget", "shares must be non-negative and add up to at most 1")
