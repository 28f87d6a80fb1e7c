"""The GPU backend's CPU-side logic: job multiplexing, tokenizer, start-up checks.

exllamav2's forward pass needs CUDA, so here its dynamic generator is a
scripted stand-in that reports results in exllamav2 0.3.2's own format
(stage/identifier/eos/token_ids, held tokens on a stop token; read from
exllamav2/generator/dynamic.py). The real generator is exercised by
tests/gpu on a lent GPU.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from tests.fixtures.exllamav2_cpu import import_exllamav2
from tests.fixtures.fake_backend import QWEN_TOKENIZER_CACHE, qwen_tokenizer_json
from tokenizers import Tokenizer

from qwend.backends import create_backend
from qwend.backends.base import Backend, Prompt, Sampling
from qwend.backends.exllamav2 import cuda as cuda_env
from qwend.backends.exllamav2.backend import (
    ExLlamaV2Backend,
    dynamic_job,
    kv_cache_tokens,
    sampler_settings,
    stop_ids_from_folder,
)
from qwend.backends.exllamav2.jobmux import JobMux
from qwend.backends.folder import missing_files as model_files_missing
from qwend.backends.tokens import TokenizerPair
from qwend.config import ModelProfile, load_config
from qwend.engine.engine import Engine
from qwend.engine.jobs import GenerationRequest
from qwend.errors import BackendUnavailable, GenerationFailed, ModelMissing, OutOfMemory
from qwend.metrics import Metrics

GREEDY = Sampling(temperature=0.0, top_p=1.0, seed=1)
IM_END, END_OF_TEXT = 151645, 151643


class FakeJob:
    def __init__(self, identifier: int, script: list[int], stop_tokens: set[int]) -> None:
        self.identifier = identifier
        self.script = script
        self.stop_tokens = stop_tokens
        self.position = 0
        self.held: list[int] = []


class FakeDynamicGenerator:
    """Each iterate() advances every active job by one token, as one batched forward.

    A token whose id is in ``hold_ids`` is held back (as exllamav2 holds an
    incomplete UTF-8 character) and released with the next result.
    """

    def __init__(self, *, hold_ids: frozenset[int] = frozenset()) -> None:
        self.active: list[FakeJob] = []
        self.cancelled: list[int] = []
        self.iterations = 0
        self.fail_with: BaseException | None = None
        self.hold_ids = hold_ids

    def enqueue(self, job: FakeJob) -> None:
        self.active.append(job)

    def cancel(self, job: FakeJob) -> None:
        if job in self.active:
            self.active.remove(job)
        self.cancelled.append(job.identifier)

    def num_remaining_jobs(self) -> int:
        return len(self.active)

    def iterate(self) -> list[dict[str, Any]]:
        self.iterations += 1
        if self.fail_with is not None:
            raise self.fail_with
        results: list[dict[str, Any]] = []
        for job in list(self.active):
            token = job.script[job.position]
            job.position += 1
            job.held.append(token)
            result: dict[str, Any] = {"stage": "streaming", "identifier": job.identifier}
            if token in job.stop_tokens:  # eos on a stop token: the held tokens ride along
                result.update(eos=True, held={"token_ids": torch.tensor([job.held])})
                result.update(eos_reason="stop_token", prompt_tokens=3, cached_tokens=2)
                self.active.remove(job)
            elif job.position == len(job.script):  # max_new_tokens: emitted with the eos
                result.update(eos=True, token_ids=torch.tensor([job.held]))
                result.update(eos_reason="max_new_tokens", prompt_tokens=3, cached_tokens=0)
                self.active.remove(job)
            elif token in self.hold_ids:
                result.update(eos=False)
            else:
                result.update(eos=False, token_ids=torch.tensor([job.held]))
            if result.get("token_ids") is not None or result["eos"]:
                job.held = []
            results.append(result)
        return results


def stream(mux: JobMux, script: list[int], stops: frozenset[int] = frozenset()) -> Generator[int]:
    return mux.stream(lambda identifier: FakeJob(identifier, script, set(stops)))


# -- JobMux ------------------------------------------------------------------------------


def test_streams_share_one_iterate_per_round() -> None:
    fake = FakeDynamicGenerator()
    mux = JobMux(fake)
    first, second = stream(mux, [1, 2, 3]), stream(mux, [4, 5, 6])
    got: dict[str, list[int]] = {"first": [], "second": []}
    for _ in range(3):
        got["first"].append(next(first))
        got["second"].append(next(second))
    assert got == {"first": [1, 2, 3], "second": [4, 5, 6]}
    # One batched step feeds both streams: six tokens in four steps (the second
    # job is enqueued on its first next(), one step after the first).
    assert fake.iterations == 4
    assert list(first) == [] and list(second) == []
    assert fake.cancelled == []  # finished jobs are not cancelled
    assert mux.running == 0


def test_a_stop_token_arrives_with_the_held_tokens() -> None:
    fake = FakeDynamicGenerator(hold_ids=frozenset({7}))
    mux = JobMux(fake)
    assert list(stream(mux, [5, 7, IM_END, 9], stops=frozenset({IM_END}))) == [5, 7, IM_END]
    assert (mux.prompt_tokens_total, mux.cached_tokens_total) == (3, 2)


def test_held_tokens_are_released_in_order() -> None:
    fake = FakeDynamicGenerator(hold_ids=frozenset({7}))
    mux = JobMux(fake)
    assert list(stream(mux, [7, 7, 8, 7])) == [7, 7, 8, 7]


def test_closing_a_stream_cancels_its_job_and_frees_its_slot() -> None:
    fake = FakeDynamicGenerator()
    mux = JobMux(fake)
    doomed, kept = stream(mux, list(range(10, 20))), stream(mux, [1, 2, 3])
    assert (next(doomed), next(kept)) == (10, 1)
    doomed.close()
    assert fake.cancelled == [0]
    assert fake.num_remaining_jobs() == 1
    assert list(kept) == [2, 3]


def test_out_of_memory_fails_the_stream_and_cancels_its_job() -> None:
    fake = FakeDynamicGenerator()
    mux = JobMux(fake)
    steps = stream(mux, [1, 2, 3])
    assert next(steps) == 1
    fake.fail_with = RuntimeError("CUDA error: out of memory")
    with pytest.raises(OutOfMemory):
        next(steps)
    assert fake.cancelled == [0]
    fake.fail_with = None
    assert list(stream(mux, [4])) == [4]  # the next request is served


def test_other_library_errors_pass_through() -> None:
    fake = FakeDynamicGenerator()
    fake.fail_with = ValueError("a bug")
    with pytest.raises(ValueError):
        next(stream(JobMux(fake), [1]))


def test_a_job_the_generator_dropped_fails_instead_of_spinning() -> None:
    fake = FakeDynamicGenerator()
    mux = JobMux(fake)
    steps = stream(mux, [1, 2, 3])
    assert next(steps) == 1
    fake.active.clear()
    with pytest.raises(GenerationFailed):
        next(steps)


class MuxBackend(Backend):
    """The engine's view of a batching backend: tokens come through JobMux."""

    name = "mux"

    def __init__(self, fake: FakeDynamicGenerator, slots: int) -> None:
        self.mux = JobMux(fake)
        self.slots = slots
        self.loaded = threading.Event()  # the test queues its requests, then lets it load

    def load(self) -> None:
        assert self.loaded.wait(10)

    def unload(self) -> None:
        pass

    @property
    def context_length(self) -> int:
        return 256

    @property
    def max_concurrent(self) -> int:
        return self.slots

    @property
    def stop_token_ids(self) -> frozenset[int]:
        return frozenset({0})

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def tokenize_markup(self, marker: str) -> list[int]:
        return self.tokenize(marker)

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)

    def generate(self, prompt_ids: list[int], sampling: Sampling, max_new_tokens: int) -> Any:
        script = [ord(c) for c in "".join(chr(i) for i in prompt_ids).upper()][:max_new_tokens]
        return self.mux.stream(lambda identifier: FakeJob(identifier, [*script, 0], {0}))

    def describe(self) -> dict[str, Any]:
        return {"device": "fake"}


async def test_the_engine_batches_concurrent_requests_through_the_mux() -> None:
    fake = FakeDynamicGenerator()
    backend = MuxBackend(fake, slots=4)
    engine = Engine(backend, model_name="m", queue_size=8, metrics=Metrics())
    engine.start(preload=True)
    try:
        request = GenerationRequest
        jobs = [
            await engine.submit(request(prompt=Prompt.plain(word), max_tokens=8, sampling=GREEDY))
            for word in ("alpha", "bravo", "charlie", "delta")
        ]
        backend.loaded.set()
        answers = await asyncio.wait_for(asyncio.gather(*(job.text() for job in jobs)), 10)
    finally:
        await asyncio.to_thread(engine.close, 5)
    assert answers == ["ALPHA", "BRAVO", "CHARLIE", "DELTA"]
    assert all(job.finish_reason == "stop" for job in jobs)
    # One after the other these take 6+6+8+6 = 26 steps; side by side, the
    # longest job's 8 plus one step per later job's start.
    assert fake.iterations <= 8 + 3


# -- the model folder and tokenizer --------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("qwen-exl2")
    shutil.copy(qwen_tokenizer_json(QWEN_TOKENIZER_CACHE), folder / "tokenizer.json")
    (folder / "config.json").write_text(json.dumps({"eos_token_id": IM_END}))
    (folder / "generation_config.json").write_text(
        json.dumps({"eos_token_id": [IM_END, END_OF_TEXT]})
    )
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    # A well-formed weights file (the folder check reads its header), not a real model.
    save_file({"placeholder": torch.zeros(1)}, str(folder / "output.safetensors"))
    return folder


def test_stop_ids_come_from_the_folders_configs(qwen_folder: Path) -> None:
    tokenizer = Tokenizer.from_file(str(qwen_folder / "tokenizer.json"))
    assert stop_ids_from_folder(qwen_folder, tokenizer) == {IM_END, END_OF_TEXT}


def test_the_tokenizer_maps_only_template_markers_to_their_ids(qwen_folder: Path) -> None:
    backend = ExLlamaV2Backend(qwen_folder, _profile(), profile_name="qwen")
    backend._tokenizer = Tokenizer.from_file(str(qwen_folder / "tokenizer.json"))
    backend._tokens = TokenizerPair(backend._tokenizer)
    fim = Prompt.marker("<|fim_prefix|>") + "def f(" + Prompt.marker("<|fim_suffix|>") + ")"
    ids = backend.encode(fim + Prompt.marker("<|fim_middle|>"))
    assert ids[0] == 151659 and 151661 in ids and ids[-1] == 151660
    assert backend.decode(ids) == "<|fim_prefix|>def f(<|fim_suffix|>)<|fim_middle|>"
    assert backend.tokenize("Hello world") == [9707, 1879]
    # Markup typed in request text is text: special (<|im_start|>) or merely added
    # (<|fim_middle|>), it never becomes the control token.
    typed = backend.tokenize_batch(["Hello world", "<|im_start|>", "x<|fim_middle|>"])
    assert typed[0] == [9707, 1879]
    assert all(i < 151643 for i in typed[1] + typed[2])
    assert backend.decode(typed[1]) == "<|im_start|>"
    assert backend.tokenize_markup("<|im_start|>") == [151644]


def test_model_files_missing_names_what_is_absent(tmp_path: Path, qwen_folder: Path) -> None:
    assert model_files_missing(qwen_folder) == []
    assert model_files_missing(tmp_path) == ["config.json", "tokenizer.json", "*.safetensors"]


def test_load_without_the_model_names_the_pull_command(tmp_path: Path) -> None:
    backend = ExLlamaV2Backend(tmp_path, _profile(), profile_name="qwen2.5-7b-instruct")
    with pytest.raises(ModelMissing) as caught:
        backend.load()
    assert caught.value.hint == "run: qwend pull qwen2.5-7b-instruct"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a GPU-less machine gets")
def test_without_a_gpu_load_and_check_say_what_to_do(qwen_folder: Path) -> None:
    backend = ExLlamaV2Backend(qwen_folder, _profile(), profile_name="qwen2.5-7b-instruct")
    for attempt in (backend.check, backend.load):
        with pytest.raises(BackendUnavailable) as caught:
            attempt()
        message = str(caught.value)
        assert "qwen2.5-7b-instruct" in message and "NVIDIA GPU" in message
        assert "CPU-only build" in message
        assert "qwend serve --model smollm2-135m" in (caught.value.hint or "")
        assert "docs/gpu.md" in (caught.value.hint or "")


def test_the_shipped_gpu_profile_builds_the_exllamav2_backend(xdg: Path) -> None:
    config = load_config()
    assert config.model_name == "qwen2.5-7b-instruct"
    backend = create_backend(config)
    assert isinstance(backend, ExLlamaV2Backend)
    assert backend.model_dir == config.model_dir()
    assert backend.max_concurrent == 1  # until loaded with paged attention
    assert kv_cache_tokens(config.profile, backend.context_length) == 65536


def test_kv_cache_tokens_fill_whole_pages() -> None:
    assert kv_cache_tokens(_profile(context_length=1000), 1000) == 1024
    assert kv_cache_tokens(_profile(context_length=1000, cache_tokens=4096), 1000) == 4096


def _profile(**overrides: Any) -> ModelProfile:
    fields: dict[str, Any] = {
        "backend": "exllamav2",
        "family": "qwen2.5",
        "device": "cuda",
        "context_length": 32768,
        "source": "hf:example/model@main",
    }
    return ModelProfile(**(fields | overrides))


# -- exllamav2's own classes, imported on the CPU ------------------------------------------


def test_sampler_settings_do_only_what_the_request_says() -> None:
    import_exllamav2()
    greedy = sampler_settings(GREEDY)
    assert (greedy.top_k, greedy.token_repetition_penalty) == (1, 1.0)
    sampled = sampler_settings(Sampling(temperature=0.7, top_p=0.9, seed=3))
    assert (sampled.temperature, sampled.top_p) == (0.7, 0.9)
    assert (sampled.top_k, sampled.min_p, sampled.token_repetition_penalty) == (0, 0.0, 1.0)


def test_dynamic_job_carries_the_request() -> None:
    import_exllamav2()
    job = dynamic_job([1, 2, 3], Sampling(0.5, 1.0, seed=7), 12, [IM_END, END_OF_TEXT], 42)
    assert job.identifier == 42
    assert job.max_new_tokens == 12
    assert job.stop_tokens == {IM_END, END_OF_TEXT}
    assert job.sequences[0].input_ids.torch().tolist() == [[1, 2, 3]]
    assert job.gen_settings.temperature == 0.5


@pytest.mark.parametrize(
    ("wanted", "flash", "chosen"),
    [
        ("auto", True, "flash_attn"),
        ("auto", False, "off"),
        ("torch", True, "flash_attn"),
        ("flash_attn", True, "flash_attn"),
        ("off", True, "off"),
        ("off", False, "off"),
    ],
)
def test_paged_attention_mode(
    monkeypatch: pytest.MonkeyPatch, wanted: str, flash: bool, chosen: str
) -> None:
    monkeypatch.setattr(cuda_env, "flash_attn_version", lambda: "2.8.3" if flash else None)
    backend = ExLlamaV2Backend(Path("/nowhere"), _profile(paged_attention=wanted), profile_name="q")
    assert backend._choose_attention() == chosen


def test_flash_attn_mode_without_flash_attn_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cuda_env, "flash_attn_version", lambda: None)
    backend = ExLlamaV2Backend(
        Path("/nowhere"), _profile(paged_attention="flash_attn"), profile_name="q"
    )
    with pytest.raises(BackendUnavailable) as caught:
        backend._choose_attention()
    assert 'paged_attention = "torch"' in (caught.value.hint or "")


class ResumableMuxBackend(MuxBackend):
    """A one-slot (unpaged) backend whose "model" continues a resumed prompt.

    Lowercase letters in the prompt are the word to upper-case; uppercase ones
    were generated already, so prompt + generated tokens (the base class's
    ``resume``) yield only the rest, as a real model re-prefilled would.
    """

    def generate(self, prompt_ids: list[int], sampling: Sampling, max_new_tokens: int) -> Any:
        text = "".join(chr(i) for i in prompt_ids)
        word = "".join(c for c in text if c.islower()).upper()
        done = sum(c.isupper() for c in text)
        script = [ord(c) for c in word[done:]][:max_new_tokens]
        return self.mux.stream(lambda identifier: FakeJob(identifier, [*script, 0], {0}))


class GatedGenerator(FakeDynamicGenerator):
    """Holds each iterate() until ``gate`` is set; ``entered`` says one is waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.most_active = 0  # jobs enqueued at once: 1 for an unpaged cache

    def enqueue(self, job: FakeJob) -> None:
        super().enqueue(job)
        self.most_active = max(self.most_active, len(self.active))

    def iterate(self) -> list[dict[str, Any]]:
        self.entered.set()
        assert self.gate.wait(10)
        return super().iterate()


async def test_unpaged_preemption_cancels_the_job_and_reprefills_it() -> None:
    """One slot: a completion suspends the background job. Its exllamav2 job is
    cancelled (the cache is free for the completion) and a new one, over prompt
    + the token already sent, continues it."""
    fake = GatedGenerator()
    backend = ResumableMuxBackend(fake, slots=1)
    assert backend.suspend_mode == "reprefill"  # the base class's default
    engine = Engine(backend, model_name="m", queue_size=8, metrics=Metrics())
    engine.start(preload=True)
    try:
        request = GenerationRequest
        background = await engine.submit(
            request(prompt=Prompt.plain("alpha"), max_tokens=8, sampling=GREEDY), lane="background"
        )
        backend.loaded.set()
        assert await asyncio.to_thread(fake.entered.wait, 10)
        completion = await engine.submit(
            request(prompt=Prompt.plain("bravo"), max_tokens=8, sampling=GREEDY), lane="completion"
        )
        fake.gate.set()
        answers = await asyncio.wait_for(asyncio.gather(background.text(), completion.text()), 10)
    finally:
        await asyncio.to_thread(engine.close, 5)
    assert answers == ["ALPHA", "BRAVO"]
    # Job 0 (the background) is cancelled on suspend, before job 1 (the completion)
    # starts; job 2 is its continuation. (Jobs that end on a stop token are
    # cancelled too: the engine closes their streams at the stop token.)
    assert fake.cancelled == [0, 1, 2]
    assert fake.most_active == 1  # never two jobs in the one-sequence cache
    assert background.finish is not None and background.finish.suspensions == 1
    assert background.finish.completion_tokens == 5 + 1  # the letters and the stop token
