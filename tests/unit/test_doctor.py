"""qwend doctor: the GPU set-up report, on whatever machine runs the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.fixtures.fake_backend import SMOLLM2_DIR

from qwend import cli, doctor
from qwend.config import load_config
from qwend.errors import BackendUnavailable

NO_GPU = not torch.cuda.is_available()


def cpu_profile_config(
    xdg: Path, profile: str = "smollm2-135m-hf", folder: Path = SMOLLM2_DIR
) -> Path:
    path = xdg / "config" / "qwend" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[daemon]\nmodel = "{profile}"\n[models."{profile}"]\npath = "{folder}"\n')
    return path


def test_a_cpu_profile_passes_whatever_the_gpu(xdg: Path) -> None:
    cpu_profile_config(xdg)
    checks = doctor.run_checks(load_config())
    by_name = {check.name: check for check in checks}
    assert by_name["profile"].detail == "'smollm2-135m-hf': transformers on cpu"
    assert "llama.cpp" not in by_name
    assert by_name["model"].status == "ok"
    assert all(check.status != "fail" for check in checks)
    assert doctor.exit_code(checks) == 0


def test_a_llama_cpp_profile_checks_llama_cpp_and_its_gguf(xdg: Path) -> None:
    cpu_profile_config(xdg, "smollm2-135m", xdg / "no-model")
    by_name = {check.name: check for check in doctor.run_checks(load_config())}
    assert by_name["profile"].detail == "'smollm2-135m': llama.cpp on cpu"
    assert by_name["llama.cpp"].status == "ok"
    assert by_name["llama.cpp"].detail.startswith("llama-cpp-python ")
    assert (by_name["model"].status, by_name["model"].fix) == ("fail", "qwend pull smollm2-135m")
    (xdg / "no-model").mkdir()
    (xdg / "no-model" / "smollm2.gguf").write_bytes(b"GGUF")
    by_name = {check.name: check for check in doctor.run_checks(load_config())}
    assert by_name["model"].status == "ok"


@pytest.mark.skipif(not NO_GPU, reason="checks what a machine without a GPU is told")
def test_the_gpu_profile_fails_on_a_machine_without_a_gpu(xdg: Path) -> None:
    checks = doctor.run_checks(load_config())
    by_name = {check.name: check for check in checks}
    assert by_name["gpu"].status == "fail"
    assert by_name["gpu"].fix
    assert by_name["model"].status == "fail"
    assert by_name["model"].fix == "qwend pull qwen2.5-7b-instruct"
    assert doctor.exit_code(checks) == 1
    text = doctor.render(checks)
    assert "FAIL  gpu" in text and "-> qwend pull qwen2.5-7b-instruct" in text


@pytest.mark.skipif(not NO_GPU, reason="checks what a machine without a GPU is told")
def test_build_without_a_gpu_says_what_to_do() -> None:
    with pytest.raises(BackendUnavailable) as caught:
        doctor.build_extension()
    assert "no NVIDIA GPU" in str(caught.value)
    assert "docs/gpu.md" in (caught.value.hint or "")


def test_render_puts_fixes_under_what_is_not_ok() -> None:
    checks = [
        doctor.Check("torch", "ok", "2.11", "never shown"),
        doctor.Check("flash-attn", "warn", "absent", "set paged_attention"),
    ]
    assert doctor.render(checks).splitlines() == [
        "ok    torch       2.11",
        "warn  flash-attn  absent",
        "                  -> set paged_attention",
    ]
    assert doctor.exit_code(checks) == 0


def test_the_cli_prints_json(xdg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cpu_profile_config(xdg)
    assert cli.main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    names = [check["name"] for check in report]
    assert names[:3] == ["qwend", "profile", "torch"]
    assert {"gpu", "exllamav2", "exllamav2 extension", "flash-attn", "model"} <= set(names)
    assert all(set(check) == {"name", "status", "detail", "fix"} for check in report)
