"""``qwend pull`` from a Hugging Face hub, against a real local hub server.

tests/fixtures/fake_hub.py answers the hub's endpoints the way huggingface.co
does; HF_ENDPOINT points every test at it, and a loopback-only guard (in this
process and in every subprocess) refuses anything else, so no test can reach
the network. Most tests call ``pull`` in-process; the CLI tests run the real
``qwend pull`` in a subprocess, as a user would.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pty
import signal
import socket
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest
from tests.fixtures.fake_hub import FakeHub, loopback_only, write_loopback_guard

from qwend import paths
from qwend.backends.folder import gguf_candidates, gguf_file, missing_files
from qwend.config import Config, load_config
from qwend.errors import (
    HubTokenInvalid,
    HubUnreachable,
    ModelMissing,
    PullFailed,
    RepoGated,
    RepoNotFound,
    RevisionNotFound,
)
from qwend.models.cache import model_present, require_model
from qwend.models.hub import HubSource, parse_hf_source, pick_gguf
from qwend.models.pull import pull

PROFILE = "qwen2.5-7b-instruct"
REPO = "test-org/Qwen2.5-7B-Instruct-exl2"
GATED = "test-org/Gated-7B-exl2"
BRANCH = "4.0bpw"
# huggingface_hub writes what it receives in blocks of DOWNLOAD_CHUNK_SIZE (10 MiB),
# so only a cut after the first block leaves bytes to resume from.
WEIGHTS_SIZE = huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE + 2 * 2**20
CUT_AT = huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE + 2**20
STALL_AT = 50_000  # bytes of the weights sent before a stalled response waits
WAIT_LIMIT_S = 60.0  # a condition a test waits for; hitting it fails the test


def weights(seed: str) -> bytes:
    block = hashlib.sha256(seed.encode()).digest()
    return (block * (WEIGHTS_SIZE // len(block) + 1))[:WEIGHTS_SIZE]


# What an EXL2 quant branch holds: the model files plus what pull must leave out.
MODEL_FILES = {
    "config.json": b'{"architectures": ["Qwen2ForCausalLM"], "quantization_config": '
    b'{"quant_method": "exl2", "bits": 4.0}}',
    "generation_config.json": b'{"eos_token_id": [151645, 151643]}',
    "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE"}}',
    "tokenizer_config.json": b'{"model_max_length": 32768}',
    "vocab.json": b'{"a": 0}',
    "merges.txt": b"#version: 0.2\n",
    "output.safetensors": weights("4.0bpw"),
}
SKIPPED_FILES = {
    ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    "README.md": b"# EXL2 quants\n",
    "measurement.json": b'{"measurement": {}}',
    "huggingface-metadata.txt": b"url: https://huggingface.co/Qwen/Qwen2.5-7B-Instruct\n",
    "images/banner.png": b"\x89PNG\r\n",
    # Some quanters copy the fp16 model's index along; it names shards the quant lacks.
    "model.safetensors.index.json": b'{"weight_map": {"lm_head.weight": '
    b'"model-00004-of-00004.safetensors"}}',
}
# A GGUF repo keeps every quant side by side on main (as Qwen's and bartowski's do).
GGUF_REPO = "test-org/Coder-1.5B-Instruct-GGUF"
GGUF_FILES = {
    "coder-1.5b-instruct-q4_k_m.gguf": weights("q4_k_m"),
    "coder-1.5b-instruct-q4_k_s.gguf": b"GGUF q4_k_s",
    "coder-1.5b-instruct-q8_0.gguf": b"GGUF q8_0",
    "coder-1.5b-instruct-fp16-00001-of-00002.gguf": b"GGUF fp16 part 1",
    "coder-1.5b-instruct-fp16-00002-of-00002.gguf": b"GGUF fp16 part 2",
    "README.md": b"# GGUF quants\n",
    "LICENSE": b"Apache-2.0\n",
}
GGUF_PROFILE = "qwen2.5-coder-1.5b"  # the shipped llama.cpp profile on a hub GGUF
BRANCHES = {
    "main": {".gitattributes": SKIPPED_FILES[".gitattributes"], "README.md": b"# EXL2\n"},
    BRANCH: {**MODEL_FILES, **SKIPPED_FILES},
    "5.0bpw": {**MODEL_FILES, "output.safetensors": weights("5.0bpw")},
}


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        server.add_repo(REPO, BRANCHES)
        server.add_repo(GATED, {"main": dict(MODEL_FILES)}, gated=True)
        server.add_repo(GGUF_REPO, {"main": dict(GGUF_FILES)})
        yield server


@pytest.fixture
def hub_env(xdg: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This process talks to the fake hub only: no token, no offline mode, no network."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    # huggingface_hub read these when first imported. qwend passes the endpoint to
    # every call, but the library also uses the import-time one (its User-Agent
    # registry fetch, and to recognise its own URLs), so set both as HF_ENDPOINT
    # would have. A saved login and the user's HF_HOME must not leak in either.
    hf = huggingface_hub.constants
    monkeypatch.setattr(hf, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        hf, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(hf, "HF_TOKEN_PATH", str(xdg / "hf-home" / "token"))
    monkeypatch.setattr(hf, "AGENT_HARNESSES_PATH", str(xdg / "hf-home" / "agents.json"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    with loopback_only() as refused:
        yield xdg
    assert refused == [], "a test tried to leave the machine"


def write_config(root: Path, source: str) -> Path:
    path = root / "config" / "qwend" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[models."{PROFILE}"]\nsource = "{source}"\n')
    return path


@pytest.fixture
def configure(hub_env: Path) -> Callable[[str], Config]:
    def make(source: str) -> Config:
        write_config(hub_env, source)
        return load_config()

    return make


def folder_files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def staging_dir(config: Config) -> Path:
    target = config.model_dir(PROFILE)
    return target.parent / f".{target.name}.partial"


# -- sources and presence ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("hf:org/repo@4.0bpw", HubSource("org/repo", "4.0bpw")),
        ("hf:org/repo", HubSource("org/repo", "main")),
        ("hf:bartowski/Qwen2.5-72B-exl2@5_0", HubSource("bartowski/Qwen2.5-72B-exl2", "5_0")),
        ("hf:org/repo@refs/pr/1", HubSource("org/repo", "refs/pr/1")),
    ],
)  # fmt: skip
def test_hub_source_forms(source: str, expected: HubSource) -> None:
    assert parse_hf_source(source) == expected


def test_gguf_sources_name_the_quant() -> None:
    source = parse_hf_source("hf:Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF:q4_k_m")
    assert source == HubSource("Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF", "main", "q4_k_m")
    assert str(source) == "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF@main:q4_k_m"
    assert parse_hf_source("hf:org/repo@v2:Q8_0") == HubSource("org/repo", "v2", "Q8_0")


@pytest.mark.parametrize(
    ("files", "quant", "expected"),
    [
        (["m-q4_k_m.gguf", "m-q8_0.gguf"], "q4_k_m", ["m-q4_k_m.gguf"]),
        (["M-Q4_K_M.gguf", "M-Q8_0.gguf"], "q4_k_m", ["M-Q4_K_M.gguf"]),  # any case
        (["only.gguf", "README.md"], "", ["only.gguf"]),
        (["m-f16-00001-of-00002.gguf", "m-f16-00002-of-00002.gguf", "m-q8_0.gguf"], "f16",
         ["m-f16-00001-of-00002.gguf", "m-f16-00002-of-00002.gguf"]),
        (["Q4_K_M/m-00001-of-00002.gguf", "Q4_K_M/m-00002-of-00002.gguf", "m-q8_0.gguf"],
         "Q4_K_M", ["Q4_K_M/m-00001-of-00002.gguf", "Q4_K_M/m-00002-of-00002.gguf"]),
    ],
)  # fmt: skip
def test_pick_gguf_takes_one_model_whole(files: list[str], quant: str, expected: list[str]) -> None:
    assert pick_gguf(files, quant) == expected


@pytest.mark.parametrize(
    ("files", "quant", "says"),
    [
        (["m-q4_k_m.gguf", "m-q8_0.gguf"], "", "holds 2 GGUF models; name one with :QUANT"),
        (["a-q8_0.gguf", "b-q8_0.gguf"], "q8_0", "2 GGUF models matching 'q8_0'"),
        (["m-q4_k_m.gguf", "m-q4_k_s.gguf"], "q4_k", "no GGUF file of quant 'q4_k'"),
        (["m-q4_k_m.gguf"], "q5_k_m", "no GGUF file of quant 'q5_k_m'"),
        (["README.md"], "q4_k_m", "holds no .gguf file"),
        (["m-q4_k_m.gguf"], "k_m", "no GGUF file of quant 'k_m'"),  # a whole word only
    ],
)  # fmt: skip
def test_pick_gguf_refuses_naming_the_quants(files: list[str], quant: str, says: str) -> None:
    with pytest.raises(PullFailed) as info:
        pick_gguf(files, quant)
    assert says in info.value.message
    assert "hf:ORG/REPO:QUANT" in info.value.hint


@pytest.mark.parametrize(
    "source", ["hf:", "hf:repo-without-org", "hf:org/repo@", "hf:a/b/c", "hf:org/re po",
               "hf:org/repo:", "hf:org/repo@:q4_k_m"]
)  # fmt: skip
def test_malformed_hub_sources_say_the_form(source: str) -> None:
    with pytest.raises(PullFailed) as info:
        parse_hf_source(source)
    assert type(info.value) is PullFailed
    assert "hf:ORG/REPO@REVISION" in info.value.hint


def test_shipped_qwen_profile_names_a_hub_exl2_quant(xdg: Path) -> None:
    source = load_config().settings.models[PROFILE].source
    expected = HubSource("DrNicefellow/Qwen2.5-7B-Instruct-4.0bpw-exl2", "main")
    assert parse_hf_source(source) == expected


def test_require_model_names_the_pull_command_for_a_missing_exl2_model(xdg: Path) -> None:
    config = load_config()
    assert config.profile.backend == "exllamav2"
    with pytest.raises(ModelMissing) as info:
        require_model(config)
    assert info.value.hint == f"run: qwend pull {PROFILE}"
    assert "not downloaded" in info.value.message


def test_require_model_accepts_an_exl2_folder_and_names_what_is_missing(xdg: Path) -> None:
    config = load_config()
    folder = config.model_dir()
    folder.mkdir(parents=True)
    for name in ("config.json", "output-00001-of-00002.safetensors"):
        (folder / name).write_bytes(b"{}")
    with pytest.raises(ModelMissing) as info:
        require_model(config)
    assert "incomplete" in info.value.message and "tokenizer.json" in info.value.message
    assert info.value.hint == f"run: qwend pull {PROFILE}"
    (folder / "tokenizer.json").write_bytes(b"{}")
    require_model(config)
    assert model_present(config)


def test_a_converted_transformers_folder_is_still_present(xdg: Path) -> None:
    config = load_config(model_override="smollm2-135m-hf")
    folder = config.model_dir()
    folder.mkdir(parents=True)
    with pytest.raises(ModelMissing):
        require_model(config)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_bytes(b"{}")
    require_model(config)


# -- downloading ----------------------------------------------------------------------------


def configure_gguf(root: Path, source: str) -> Config:
    path = root / "config" / "qwend" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[models."{GGUF_PROFILE}"]\nsource = "{source}"\n')
    return load_config(model_override=GGUF_PROFILE)


def test_a_gguf_pull_fetches_only_the_quant_it_names(hub_env: Path, hub: FakeHub) -> None:
    config = configure_gguf(hub_env, f"hf:{GGUF_REPO}:Q4_K_M")
    assert config.profile.backend == "llama.cpp"
    target = pull(config, GGUF_PROFILE)
    name = "coder-1.5b-instruct-q4_k_m.gguf"
    assert folder_files(target) == {name: GGUF_FILES[name]}
    assert hub.file_gets() == [name]
    assert model_present(config)
    require_model(config)
    assert gguf_file(target) == target / name


def test_a_gguf_pull_of_a_split_model_fetches_every_shard(hub_env: Path, hub: FakeHub) -> None:
    config = configure_gguf(hub_env, f"hf:{GGUF_REPO}@main:fp16")
    target = pull(config, GGUF_PROFILE)
    shards = sorted(name for name in GGUF_FILES if "fp16" in name)
    assert sorted(folder_files(target)) == shards
    assert gguf_file(target) == target / shards[0]  # llama.cpp opens the first, finds the rest


def test_a_gguf_repo_without_the_quant_lists_what_it_has(hub_env: Path, hub: FakeHub) -> None:
    config = configure_gguf(hub_env, f"hf:{GGUF_REPO}:q6_k")
    with pytest.raises(PullFailed) as info:
        pull(config, GGUF_PROFILE)
    assert "no GGUF file of quant 'q6_k'" in info.value.message
    assert "coder-1.5b-instruct-q8_0" in info.value.message
    assert hub.file_gets() == []
    assert not model_present(config)


def test_a_quant_on_a_folder_profile_is_refused(configure: Callable[[str], Config]) -> None:
    config = configure(f"hf:{REPO}@{BRANCH}:q4_k_m")
    with pytest.raises(PullFailed) as info:
        pull(config, PROFILE)
    assert "only picks a GGUF file for the llama.cpp backend" in info.value.message


def test_a_gguf_folder_holds_one_model(tmp_path: Path) -> None:
    assert missing_files(tmp_path, "llama.cpp") == ["*.gguf"]
    (tmp_path / "a-q4_k_m.gguf").write_bytes(b"GGUF")
    assert missing_files(tmp_path, "llama.cpp") == []
    (tmp_path / "a-q8_0.gguf").write_bytes(b"GGUF")
    (missing,) = missing_files(tmp_path, "llama.cpp")
    assert missing == "exactly one .gguf model (found 2: a-q4_k_m.gguf, a-q8_0.gguf)"
    assert gguf_file(tmp_path) is None
    # A profile's path may name the file itself.
    assert gguf_file(tmp_path / "a-q8_0.gguf") == tmp_path / "a-q8_0.gguf"
    assert missing_files(tmp_path / "a-q8_0.gguf", "llama.cpp") == []
    # A hub pull's hidden state folder is never taken for a model.
    hidden = tmp_path / "b" / ".cache"
    hidden.mkdir(parents=True)
    (hidden / "x.gguf").write_bytes(b"GGUF")
    assert gguf_candidates(tmp_path / "b") == []


def test_pull_fetches_only_the_model_files_and_sends_no_token(
    configure: Callable[[str], Config], hub: FakeHub
) -> None:
    config = configure(f"hf:{REPO}@{BRANCH}")
    target = pull(config, PROFILE)
    assert target == paths.models_dir() / PROFILE
    assert folder_files(target) == MODEL_FILES
    assert sorted(hub.file_gets()) == sorted(MODEL_FILES)
    assert not staging_dir(config).exists()
    assert model_present(config, PROFILE)
    assert all(r.authorization is None for r in hub.log)
    # The revision lookup and the listing used the branch, the files the commit.
    commit = hub.repos[REPO].commit(BRANCH)
    assert hub.requests("GET", f"/api/models/{REPO}/revision/{BRANCH}")
    assert hub.requests("GET", f"/api/models/{REPO}/tree/{commit}")


def test_a_remote_profile_pulls_only_the_tokenizer(hub_env: Path, hub: FakeHub) -> None:
    path = hub_env / "config" / "qwend" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        '[daemon]\nmodel = "team"\n[models.team]\nbackend = "remote"\nfamily = "qwen2.5"\n'
        'device = "remote"\ncontext_length = 32768\nurl = "https://gpu1.example.com"\n'
        f'model = "coder"\nsource = "hf:{REPO}@{BRANCH}"\n'
    )
    config = load_config()
    target = pull(config, "team")
    weights_and_config = ("config.json", "generation_config.json", "output.safetensors")
    tokenizer_files = {k: v for k, v in MODEL_FILES.items() if k not in weights_and_config}
    assert "tokenizer.json" in tokenizer_files and len(tokenizer_files) < len(MODEL_FILES)
    assert folder_files(target) == tokenizer_files
    assert sorted(hub.file_gets()) == sorted(tokenizer_files)  # no weights crossed the network
    require_model(config)  # the tokenizer is all a remote profile needs here


def test_a_second_pull_asks_the_hub_nothing(
    configure: Callable[[str], Config], hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    config = configure(f"hf:{REPO}@{BRANCH}")
    pull(config, PROFILE)
    hub.clear_log()
    pull(config, PROFILE)
    assert hub.log == []
    assert "already" in capsys.readouterr().out


def test_force_downloads_again(configure: Callable[[str], Config], hub: FakeHub) -> None:
    config = configure(f"hf:{REPO}@{BRANCH}")
    pull(config, PROFILE)
    hub.clear_log()
    pull(config, PROFILE, force=True)
    assert sorted(hub.file_gets()) == sorted(MODEL_FILES)


def test_a_connection_cut_mid_file_resumes_with_a_range_request(
    configure: Callable[[str], Config], hub: FakeHub
) -> None:
    config = configure(f"hf:{REPO}@{BRANCH}")
    hub.drop_once("output.safetensors", after=CUT_AT)
    target = pull(config, PROFILE)
    assert (target / "output.safetensors").read_bytes() == MODEL_FILES["output.safetensors"]
    cdn = hub.requests("GET", "/cdn/")
    assert len(cdn) == 2
    assert cdn[0].range is None
    assert cdn[1].range is not None
    start = int(cdn[1].range.removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= CUT_AT  # continued where the cut left it, not from the start


def test_another_revision_never_mixes_with_a_kept_partial_download(
    configure: Callable[[str], Config], hub: FakeHub
) -> None:
    config = configure(f"hf:{REPO}@{BRANCH}")
    staging = staging_dir(config)
    staging.mkdir(parents=True)
    (staging / ".qwend-source").write_text(f"{REPO}@5.0bpw")
    (staging / "output-00002-of-00002.safetensors").write_bytes(b"from 5.0bpw")
    target = pull(config, PROFILE)
    assert folder_files(target) == MODEL_FILES


def test_a_hub_that_stops_answering_never_yields_a_partial_model(
    configure: Callable[[str], Config], hub: FakeHub
) -> None:
    # The listing works for qwend's plan, then fails for snapshot_download, which
    # then falls back to the (empty) staging folder as if it were the download.
    config = configure(f"hf:{REPO}@{BRANCH}")
    hub.fail_once("/tree/", 403, after=1)
    with pytest.raises(HubUnreachable) as info:
        pull(config, PROFILE)
    assert "stopped before" in info.value.message and "output.safetensors" in info.value.message
    assert not config.model_dir(PROFILE).exists()
    target = pull(config, PROFILE)  # the hub is back
    assert folder_files(target) == MODEL_FILES


@pytest.mark.parametrize("token", [None, "hf_known"])
def test_hf_token_is_sent_only_when_set_and_never_to_the_cdn(
    configure: Callable[[str], Config],
    hub: FakeHub,
    monkeypatch: pytest.MonkeyPatch,
    token: str | None,
) -> None:
    hub.tokens.add("hf_known")
    if token is not None:
        monkeypatch.setenv("HF_TOKEN", token)
    pull(configure(f"hf:{REPO}@{BRANCH}"), PROFILE)
    on_hub = [r for r in hub.log if r.host == f"127.0.0.1:{hub.port}"]
    on_cdn = [r for r in hub.log if r.host == f"localhost:{hub.port}"]
    assert on_hub and on_cdn
    expected = None if token is None else f"Bearer {token}"
    assert {r.authorization for r in on_hub} == {expected}
    assert {r.authorization for r in on_cdn} == {None}


# -- errors ---------------------------------------------------------------------------------


def test_gated_repo_without_a_token_says_how_to_get_access(
    configure: Callable[[str], Config], hub: FakeHub
) -> None:
    config = configure(f"hf:{GATED}@main")
    with pytest.raises(RepoGated) as info:
        pull(config, PROFILE)
    err = info.value
    assert err.code == "repo_gated"
    assert GATED in err.message and "not authenticated" in err.message
    assert f"https://huggingface.co/{GATED}" in err.hint
    assert "hf auth login" in err.hint and "huggingface-cli login" in err.hint
    assert "HF_TOKEN" in err.hint
    assert not config.model_dir(PROFILE).exists()


def test_gated_repo_with_a_token_not_yet_granted(
    configure: Callable[[str], Config], hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.tokens.add("hf_waiting")
    monkeypatch.setenv("HF_TOKEN", "hf_waiting")
    with pytest.raises(RepoGated) as info:
        pull(configure(f"hf:{GATED}@main"), PROFILE)
    assert "not been granted access" in info.value.message
    assert f"request access at https://huggingface.co/{GATED}" in info.value.hint
    assert "HF_TOKEN" in info.value.hint and "hf auth login" in info.value.hint
    assert {r.authorization for r in hub.requests("HEAD")} == {"Bearer hf_waiting"}


def test_gated_repo_downloads_once_access_is_granted(
    configure: Callable[[str], Config], hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.tokens.add("hf_granted")
    hub.repos[GATED].granted.add("hf_granted")
    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    target = pull(configure(f"hf:{GATED}@main"), PROFILE)
    assert folder_files(target) == MODEL_FILES


def test_a_token_the_hub_rejects_is_not_reported_as_gated_or_missing(
    configure: Callable[[str], Config], hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_revoked")
    with pytest.raises(HubTokenInvalid) as info:
        pull(configure(f"hf:{REPO}@{BRANCH}"), PROFILE)
    assert info.value.code == "hub_token_invalid"
    assert "HF_TOKEN" in info.value.message
    assert "https://huggingface.co/settings/tokens" in info.value.hint


def test_missing_repo(configure: Callable[[str], Config], hub: FakeHub) -> None:
    with pytest.raises(RepoNotFound) as info:
        pull(configure("hf:test-org/no-such-repo@main"), PROFILE)
    assert info.value.code == "repo_not_found"
    assert "test-org/no-such-repo" in info.value.message
    assert f"models.{PROFILE}" in info.value.hint


def test_missing_revision_lists_the_branches(
    configure: Callable[[str], Config], hub: FakeHub
) -> None:
    with pytest.raises(RevisionNotFound) as info:
        pull(configure(f"hf:{REPO}@4_25"), PROFILE)
    err = info.value
    assert err.code == "revision_not_found"
    assert "'4_25'" in err.message and REPO in err.message
    assert "4.0bpw, 5.0bpw, main" in err.hint
    assert f"hf:{REPO}@<branch>" in err.hint


def test_a_branch_without_model_files_is_refused(
    configure: Callable[[str], Config], hub: FakeHub
) -> None:
    config = configure(f"hf:{REPO}@main")
    with pytest.raises(PullFailed) as info:
        pull(config, PROFILE)
    assert type(info.value) is PullFailed
    assert "config.json, tokenizer.json, *.safetensors" in info.value.message
    assert hub.file_gets() == []  # refused from the listing, before any download
    assert not config.model_dir(PROFILE).exists()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_no_network(configure: Callable[[str], Config], monkeypatch: pytest.MonkeyPatch) -> None:
    config = configure(f"hf:{REPO}@{BRANCH}")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(HubUnreachable) as info:
        pull(config, PROFILE)
    err = info.value
    assert err.code == "hub_unreachable"
    assert "could not reach the Hugging Face hub" in err.message
    assert f"models.{PROFILE}.path" in err.hint and "HF_HUB_OFFLINE" in err.hint


def test_offline_mode(
    configure: Callable[[str], Config], hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = configure(f"hf:{REPO}@{BRANCH}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnreachable) as info:
        pull(config, PROFILE)
    assert "HF_HUB_OFFLINE is set" in info.value.message
    assert f"models.{PROFILE}.path" in info.value.hint
    assert hub.log == []


# -- the real CLI ---------------------------------------------------------------------------


class Cli:
    """``python -m qwend pull`` in a sandbox: its own XDG and HF homes, the hub's
    HF_ENDPOINT, and the loopback-only guard."""

    def __init__(self, root: Path, hub: FakeHub, source: str) -> None:
        self.root = root
        self.config = write_config(root, source)
        self.netguard_log = root / "netguard.log"
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("HF_", "HUGGING_FACE_", "XDG_")) and key != "PYTHONPATH"
        }
        self.env.update(
            HOME=str(root / "home"),
            XDG_CONFIG_HOME=str(root / "xdg-config"),
            XDG_CACHE_HOME=str(root / "xdg-cache"),
            XDG_STATE_HOME=str(root / "xdg-state"),
            HF_HOME=str(root / "hf-home"),
            HF_ENDPOINT=hub.url,
            PYTHONPATH=str(write_loopback_guard(root / "guard")),
            QWEND_NETGUARD_LOG=str(self.netguard_log),
            PYTHONUNBUFFERED="1",
        )
        self.target = root / "xdg-cache" / "qwend" / "models" / PROFILE
        self.staging = self.target.parent / f".{PROFILE}.partial"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "qwend", "pull", PROFILE, "--config", str(self.config)]

    def run(self) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(), env=self.env, capture_output=True, text=True, timeout=WAIT_LIMIT_S
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def assert_stayed_local(self) -> None:
        refused = self.netguard_log.read_text() if self.netguard_log.exists() else ""
        assert refused == "", refused


def test_cli_pull_end_to_end(sandbox: Path, hub: FakeHub) -> None:
    cli = Cli(sandbox, hub, f"hf:{REPO}@{BRANCH}")
    result = cli.run()
    assert result.returncode == 0, result.stderr
    plan = f"downloading {len(MODEL_FILES)} files (12.6 MB) of {REPO}@{BRANCH} from {hub.url}"
    assert plan in result.stdout
    assert f"{PROFILE} is ready in {cli.target}" in result.stdout
    assert folder_files(cli.target) == MODEL_FILES
    again = cli.run()
    assert again.returncode == 0 and "already" in again.stdout
    cli.assert_stayed_local()


def test_cli_gated_repo_message(sandbox: Path, hub: FakeHub) -> None:
    cli = Cli(sandbox, hub, f"hf:{GATED}@main")
    result = cli.run()
    assert result.returncode == 1
    assert f"\nqwend: {GATED} is a gated repository" in result.stderr
    license_url = f"https://huggingface.co/{GATED}"
    for needed in (license_url, "hf auth login", "huggingface-cli login", "HF_TOKEN"):
        assert needed in result.stderr
    cli.assert_stayed_local()


def test_cli_no_network(sandbox: Path, hub: FakeHub) -> None:
    cli = Cli(sandbox, hub, f"hf:{REPO}@{BRANCH}")
    cli.env["HF_ENDPOINT"] = f"http://127.0.0.1:{closed_port()}"
    result = cli.run()
    assert result.returncode == 1
    assert "qwend: could not reach the Hugging Face hub" in result.stderr
    assert "hint:" in result.stderr
    cli.assert_stayed_local()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def finished(staging: Path, name: str) -> bool:
    """The file is in place and huggingface_hub has recorded it as done."""
    meta = staging / ".cache" / "huggingface" / "download" / f"{name}.metadata"
    return (staging / name).is_file() and meta.is_file() and meta.read_text().count("\n") >= 2


def test_cli_ctrl_c_stops_at_once_and_the_next_pull_resumes(sandbox: Path, hub: FakeHub) -> None:
    cli = Cli(sandbox, hub, f"hf:{REPO}@{BRANCH}")
    cli.env["HF_HUB_DOWNLOAD_TIMEOUT"] = "600"  # the stall must outlast the Ctrl-C
    stall = hub.stall("output.safetensors", after=STALL_AT)
    small = [name for name in MODEL_FILES if name != "output.safetensors"]
    process = subprocess.Popen(
        cli.command(), env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert stall.stalled.wait(WAIT_LIMIT_S), "the weights download never started"
        wait_until(lambda: all(finished(cli.staging, n) for n in small), "small files finished")
        process.send_signal(signal.SIGINT)
        # The stall is only released at teardown: exiting proves Ctrl-C did not wait for it.
        _, stderr = process.communicate(timeout=WAIT_LIMIT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert "pull interrupted; run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    assert not cli.target.exists()
    assert not (cli.staging / "output.safetensors").exists()

    hub.unstall("output.safetensors")
    hub.clear_log()
    result = cli.run()
    assert result.returncode == 0, result.stderr
    assert f"; resuming, {len(small)} already here" in result.stdout
    assert hub.file_gets() == ["output.safetensors"]  # only the unfinished file again
    assert folder_files(cli.target) == MODEL_FILES
    assert not cli.staging.exists()
    cli.assert_stayed_local()


def test_cli_progress_bars_show_on_a_terminal(sandbox: Path, hub: FakeHub) -> None:
    cli = Cli(sandbox, hub, f"hf:{REPO}@{BRANCH}")
    main_fd, child_fd = pty.openpty()
    # A real terminal has a size; tqdm fits its bars to it (0 columns: empty bars).
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(
        cli.command(), env=cli.env, stdin=child_fd, stdout=child_fd, stderr=child_fd
    )
    os.close(child_fd)
    chunks: list[bytes] = []

    def drain() -> None:  # a pty must be read while the child writes, or it blocks
        while True:
            try:
                data = os.read(main_fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert process.wait(timeout=WAIT_LIMIT_S) == 0
    finally:
        if process.poll() is None:
            process.kill()
        reader.join(WAIT_LIMIT_S)
        os.close(main_fd)
    screen = b"".join(chunks).decode(errors="replace")
    assert f"Fetching {len(MODEL_FILES)} files" in screen, screen
    assert "100%" in screen and "Download complete" in screen and "12.6MB" in screen, screen
    assert folder_files(cli.target) == MODEL_FILES
    cli.assert_stayed_local()


def test_pull_under_umask_0_keeps_the_cache_private(
    configure: Callable[[str], Config], hub: FakeHub, umask0: None
) -> None:
    config = configure(f"hf:{REPO}@{BRANCH}")
    pull(config, PROFILE)
    created = [paths.cache_dir(), *paths.cache_dir().rglob("*")]
    assert len(created) > len(MODEL_FILES)
    modes = {str(p): oct(stat.S_IMODE(os.lstat(p).st_mode)) for p in created}
    wide = {p: mode for p, mode in modes.items() if int(mode, 8) & 0o077}
    assert wide == {}
    assert modes[str(config.model_dir(PROFILE))] == oct(0o700)
    assert os.umask(0) == 0  # the user's umask is back once the pull is over
