"""Unit fixtures: the scripted backend, engines over it, tokenizers, private directories
(tests/fixtures/fake_backend.py)."""

from tests.fixtures.fake_backend import (
    countings,
    make_backend,
    make_engine,
    qwen_counting,
    qwen_tokenizer,
    short_tmp,
    smollm2_counting,
    smollm2_tokenizer,
    umask0,
    xdg,
)

__all__ = [
    "countings",
    "make_backend",
    "make_engine",
    "qwen_counting",
    "qwen_tokenizer",
    "short_tmp",
    "smollm2_counting",
    "smollm2_tokenizer",
    "umask0",
    "xdg",
]
