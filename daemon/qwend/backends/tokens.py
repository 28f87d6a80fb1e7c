"""Engine: request text and template markup to ids with HF ``tokenizers`` (base.py's contract).

A ``tokenizers.Tokenizer`` matches its added tokens in any text before BPE,
and ``encode_special_tokens`` only turns that off for the ones flagged
special: Qwen2.5's FIM markers (``<|fim_prefix|>``, ``<|file_sep|>``, ...)
are added but not special, so they would still be matched. ``TokenizerPair``
keeps the model's tokenizer for markers and a copy for plain text with every
added token flagged special and ``encode_special_tokens`` on: no added token
can come out of it, and text without added-token markup gets exactly the ids
the original gives.
"""

from __future__ import annotations

import json
from typing import Any

from qwend.errors import ModelNotLoaded


class TokenizerPair:
    """The model's ``tokenizers.Tokenizer`` and its plain-text copy."""

    def __init__(self, tokenizer: Any) -> None:
        from tokenizers import Tokenizer

        self.markup = tokenizer
        spec = json.loads(tokenizer.to_str())
        for added in spec.get("added_tokens") or []:
            added["special"] = True
        self.plain = Tokenizer.from_str(json.dumps(spec))
        self.plain.encode_special_tokens = True

    def encode_plain(self, texts: list[str]) -> list[list[int]]:
        """Plain-text ids for each of ``texts`` (no BOS or other token added)."""
        if not texts:
            return []
        return [list(e.ids) for e in self.plain.encode_batch(texts, add_special_tokens=False)]

    def encode_markup(self, marker: str) -> list[int]:
        """Ids for a template marker: added tokens matched."""
        return list(self.markup.encode(marker, add_special_tokens=False).ids)


class TokenizedByPair:
    """The tokenization half of ``Backend`` for a backend with a Hugging Face
    tokenizer: plain text and markers through its ``TokenizerPair``
    (``_tokens``, None while no model is loaded)."""

    _tokens: TokenizerPair | None

    def tokenize(self, text: str) -> list[int]:
        return self.tokenize_batch([text])[0]

    def tokenize_batch(self, texts: list[str]) -> list[list[int]]:
        return self._pair().encode_plain(texts)

    def tokenize_markup(self, marker: str) -> list[int]:
        return self._pair().encode_markup(marker)

    def _pair(self) -> TokenizerPair:
        if self._tokens is None:
            raise ModelNotLoaded("the model is not loaded")
        return self._tokens
