"""Editor: a random-weight EXL2 model with Qwen2.5-7B's exact shapes (or a tiny one).

No real Qwen2.5-7B weights can be downloaded here, and decode speed does not
depend on weight values: exllamav2's EXL2 kernels have no data-dependent
control flow (their loops run over shapes and bit widths, never over values). So this writes the
packed EXL2 tensors directly from random codes, with the real Qwen2.5
tokenizer, and the daemon and exllamav2 load it like any EXL2 quant.

    python -m qwend.bench.synthetic_exl2 --out DIR               # Qwen2.5-7B, 4 bpw, 6-bit head
    python -m qwend.bench.synthetic_exl2 --out DIR --shape tiny  # hidden 256, 2 layers (tests)

The layout of one linear layer, as exllamav2 0.3.2 reads it
(``conversion/adaptivegptq.py:pack``, ``module.py:load_weight``,
``cuda/q_matrix.cu``); K = in_features (rows), N = out_features (columns):

- ``q_weight`` int32 ``[sum(rows_g * bits_g / 32), N]``: each column's codes,
  row after row, as one little-endian bitstream cut into 32-bit words
  (32 rows of b bits fill b words). Groups are stored in descending bit
  order (8, 6, 5, 4, 3, 2): the kernel derives its row ranges from that order.
- ``q_scale`` int32 ``[G, N / 8]``: a 4-bit scale code per group and column,
  8 to a word, low nibble first (stored as qs - 1, i.e. 0..15).
- ``q_scale_max`` fp16 ``[G]``: each group's largest scale.
- ``q_groups`` int16 ``[2G]``: (bits, first packed row) per group.
- ``q_invperm`` int32 ``[K]``: the act-order inverse permutation (exllamav2
  recomputes ``q_perm = argsort(q_invperm)``; the identity without act-order).
- ``bias`` fp16 ``[N]``: q, k and v only (Qwen2).

A weight dequantizes to ``(code - 2**(b-1)) * (qs + 1)**2 * q_scale_max / 256``.
The embedding and the norms are plain fp16; ``lm_head`` is quantized at the
head bits. ``config.json`` is a normal Qwen2 config plus an informational
``quantization_config`` (exllamav2 detects EXL2 per tensor by ``.q_weight``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import torch
from safetensors.torch import save_file

from qwend.bench.qwen25_tokenizer import write_tokenizer_files

SUPPORTED_BITS: Final = (2, 3, 4, 5, 6, 8)  # the widths exllamav2's EXL2 kernels decode
ROWS_PER_BLOCK: Final = 32  # 32 rows of b bits are exactly b words: groups are multiples of 32
SCALE_BITS: Final = 4  # q_scale codes; the only width exllamav2's pack() writes
SCALE_MAX: Final = 0.01  # with the random scale codes: weights of roughly std 0.02, as trained ones
EMBED_STD: Final = 0.02  # Qwen2's initializer_range
BIAS_STD: Final = 0.01
SHARD_BYTES: Final = 2 * 2**30  # shards of about 2 GiB keep the builder's memory low
EXL2_VERSION: Final = "0.3.2"  # the exllamav2 release whose layout this writes
BOS_ID: Final = 151643  # <|endoftext|>; Qwen2.5-Instruct adds no BOS, the config still names it
EOS_ID: Final = 151645  # <|im_end|>, Qwen2.5-Instruct's end of turn


@dataclass(frozen=True)
class Shape:
    """A Qwen2 decoder's dimensions (the fields of its config.json)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int = 152064  # Qwen2.5's embedding rows (the tokenizer has 151,665 entries)
    max_position_embeddings: int = 32768
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def linears(self) -> list[tuple[str, int, int, bool]]:
        """(name inside a layer, in_features, out_features, has bias) per linear layer."""
        kv = self.num_key_value_heads * self.head_dim
        h, i = self.hidden_size, self.intermediate_size
        return [
            ("self_attn.q_proj", h, h, True),
            ("self_attn.k_proj", h, kv, True),
            ("self_attn.v_proj", h, kv, True),
            ("self_attn.o_proj", h, h, False),
            ("mlp.gate_proj", h, i, False),
            ("mlp.up_proj", h, i, False),
            ("mlp.down_proj", i, h, False),
        ]


SHAPES: Final = {
    "qwen2.5-7b": Shape(3584, 28, 28, 4, 18944),
    "tiny": Shape(256, 2, 4, 2, 512),  # the same vocabulary, so the real tokenizer fits
}


# -- the EXL2 packing -------------------------------------------------------------------


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack ``codes`` (integers in [0, 2**bits), shape [rows, N]) down the rows.

    Each column becomes a little-endian bitstream: row r's code sits at bit
    ``r * bits`` of the column's words. ``rows`` must be a multiple of 32.
    Returns int32 ``[rows * bits / 32, N]`` (bit patterns, so words above
    2**31 read as negative numbers).
    """
    rows, columns = codes.shape
    if rows % ROWS_PER_BLOCK:
        raise ValueError(f"{rows} rows: a packed group needs a multiple of {ROWS_PER_BLOCK}")
    if not 1 <= bits <= 8:
        raise ValueError(f"{bits} bits: codes are 1 to 8 bits wide")
    blocks = codes.to(torch.int64).reshape(rows // ROWS_PER_BLOCK, ROWS_PER_BLOCK, columns)
    words = torch.zeros((rows // ROWS_PER_BLOCK, bits, columns), dtype=torch.int64)
    for row in range(ROWS_PER_BLOCK):
        word, shift = divmod(row * bits, 32)
        value = blocks[:, row, :]
        words[:, word, :] |= (value << shift) & 0xFFFFFFFF
        if shift + bits > 32:  # the code straddles two words
            words[:, word + 1, :] |= value >> (32 - shift)
    words = torch.where(words >= 2**31, words - 2**32, words)
    return words.reshape(rows * bits // 32, columns).to(torch.int32)


def pack_scales(scale_codes: torch.Tensor) -> torch.Tensor:
    """Pack 4-bit scale codes ``[G, N]`` (0..15, i.e. qs - 1) 8 to an int32 along N."""
    groups, columns = scale_codes.shape
    if columns % 8:
        raise ValueError(f"{columns} columns: q_scale packs 8 per word")
    nibbles = scale_codes.to(torch.int64).reshape(groups, columns // 8, 8)
    words = torch.zeros((groups, columns // 8), dtype=torch.int64)
    for i in range(8):
        words |= nibbles[:, :, i] << (SCALE_BITS * i)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def group_layout(rows: int, bits: Sequence[int], group_size: int) -> list[tuple[int, int]]:
    """(bits, rows) per group for ``rows`` input rows, in stored (descending-bits) order.

    ``bits`` is one width for every group, or one per group. Every group but
    the last has ``group_size`` rows.
    """
    if group_size % ROWS_PER_BLOCK or group_size <= 0:
        raise ValueError(f"group size {group_size}: must be a positive multiple of 32")
    if rows % ROWS_PER_BLOCK:
        raise ValueError(f"{rows} rows: must be a multiple of {ROWS_PER_BLOCK}")
    sizes = [min(group_size, rows - start) for start in range(0, rows, group_size)]
    widths = list(bits) * len(sizes) if len(bits) == 1 else list(bits)
    if len(widths) != len(sizes):
        raise ValueError(f"{len(widths)} bit widths for {len(sizes)} groups")
    for width in widths:
        if width not in SUPPORTED_BITS:
            raise ValueError(f"{width} bits: exllamav2 decodes only {SUPPORTED_BITS}")
    return list(zip(sorted(widths, reverse=True), sizes, strict=True))


def exl2_linear(
    codes: torch.Tensor,
    groups: Sequence[tuple[int, int]],
    scale_codes: torch.Tensor,
    scale_max: torch.Tensor,
    invperm: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The EXL2 tensors of one linear layer (names without the layer's key).

    ``codes`` [K, N] are in stored row order; ``groups`` is (bits, rows) per
    group in that order and must be in descending bit order; ``scale_codes``
    [G, N] hold qs - 1 (0..15); ``scale_max`` [G]; ``invperm`` [K].
    """
    widths = [bits for bits, _ in groups]
    if widths != sorted(widths, reverse=True):
        raise ValueError(f"groups must be stored in descending bit order, got {widths}")
    if sum(rows for _, rows in groups) != codes.shape[0]:
        raise ValueError("the groups' rows do not add up to the codes' rows")
    packed: list[torch.Tensor] = []
    q_groups: list[int] = []
    row = packed_rows = 0
    for bits, rows in groups:
        q_groups += [bits, packed_rows]
        packed.append(pack_codes(codes[row : row + rows], bits))
        row += rows
        packed_rows += rows * bits // 32
    tensors = {
        "q_weight": torch.cat(packed),
        "q_scale": pack_scales(scale_codes),
        "q_scale_max": scale_max.to(torch.float16),
        "q_groups": torch.tensor(q_groups, dtype=torch.int16),
        "q_invperm": invperm.to(torch.int32),
    }
    if bias is not None:
        tensors["bias"] = bias.to(torch.float16)
    return tensors


def random_linear(
    in_features: int,
    out_features: int,
    bits: int,
    group_size: int,
    *,
    act_order: bool,
    has_bias: bool,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """One EXL2 linear layer of random codes, scales and (optionally) act-order."""
    groups = group_layout(in_features, [bits], group_size)
    codes = torch.randint(
        0, 2**bits, (in_features, out_features), generator=generator, dtype=torch.int64
    )
    scale_codes = torch.randint(
        0, 2**SCALE_BITS, (len(groups), out_features), generator=generator, dtype=torch.int64
    )
    invperm = (
        torch.randperm(in_features, generator=generator) if act_order else torch.arange(in_features)
    )
    bias = torch.randn(out_features, generator=generator) * BIAS_STD if has_bias else None
    scale_max = torch.full((len(groups),), SCALE_MAX)
    return exl2_linear(codes, groups, scale_codes, scale_max, invperm, bias)


# -- the model folder ---------------------------------------------------------------------


@dataclass(frozen=True)
class Quant:
    """How the linear layers are quantized."""

    bits: int = 4
    head_bits: int = 6
    group_size: int = 128
    act_order: bool = True
    seed: int = 0


def qwen2_config(shape: Shape, quant: Quant, bits_per_weight: float) -> dict[str, Any]:
    """config.json: Qwen2.5-7B-Instruct's keys with ``shape``'s dimensions."""
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "attention_dropout": 0.0,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "hidden_act": "silu",
        "hidden_size": shape.hidden_size,
        "initializer_range": EMBED_STD,
        "intermediate_size": shape.intermediate_size,
        "max_position_embeddings": shape.max_position_embeddings,
        "max_window_layers": shape.num_hidden_layers,
        "num_attention_heads": shape.num_attention_heads,
        "num_hidden_layers": shape.num_hidden_layers,
        "num_key_value_heads": shape.num_key_value_heads,
        "rms_norm_eps": shape.rms_norm_eps,
        "rope_theta": shape.rope_theta,
        "sliding_window": shape.max_position_embeddings,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": shape.vocab_size,
        "quantization_config": {
            "quant_method": "exl2",
            "version": EXL2_VERSION,
            "bits": float(quant.bits),
            "head_bits": quant.head_bits,
            "group_size": quant.group_size,
            "act_order": quant.act_order,
            "bits_per_weight_measured": round(bits_per_weight, 4),
            "calibration": {"dataset": "none: synthetic random weights", "seed": quant.seed},
        },
    }


def _model_tensors(
    shape: Shape, quant: Quant, generator: torch.Generator
) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    """(progress label, tensors) for the embedding, each layer, then the norm and head."""
    embed = torch.randn((shape.vocab_size, shape.hidden_size), generator=generator)
    yield "embed", {"model.embed_tokens.weight": (embed * EMBED_STD).to(torch.float16)}
    del embed
    ones = torch.ones(shape.hidden_size, dtype=torch.float16)
    for layer in range(shape.num_hidden_layers):
        prefix = f"model.layers.{layer}."
        tensors = {
            prefix + "input_layernorm.weight": ones.clone(),
            prefix + "post_attention_layernorm.weight": ones.clone(),
        }
        for name, k, n, has_bias in shape.linears():
            linear = random_linear(
                k,
                n,
                quant.bits,
                quant.group_size,
                act_order=quant.act_order,
                has_bias=has_bias,
                generator=generator,
            )
            tensors.update({f"{prefix}{name}.{key}": t for key, t in linear.items()})
        yield f"layer {layer}", tensors
    head = random_linear(
        shape.hidden_size,
        shape.vocab_size,
        quant.head_bits,
        quant.group_size,
        act_order=quant.act_order,
        has_bias=False,
        generator=generator,
    )
    yield (
        "head",
        {
            "model.norm.weight": ones.clone(),
            **{f"lm_head.{key}": t for key, t in head.items()},
        },
    )


def _nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


@dataclass(frozen=True)
class Built:
    """What ``build`` wrote."""

    path: str
    seconds: float
    bytes: int
    files: list[str]
    bits_per_weight: float  # q_weight + q_scale + q_invperm bits per quantized weight (head too)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build(
    out_dir: Path,
    shape: Shape = SHAPES["qwen2.5-7b"],
    quant: Quant = Quant(),
    *,
    tokenizer_cache: Path | None = None,
    shard_bytes: int = SHARD_BYTES,
    progress: bool = True,
) -> Built:
    """Write the model folder: safetensors shards and their index, config.json,
    generation_config.json, tokenizer.json and tokenizer_config.json.

    Raises ValueError for a shape or quantization exllamav2 cannot read and
    FileExistsError when ``out_dir`` already holds a config.json.
    """
    from tqdm import tqdm

    for width in (quant.bits, quant.head_bits):
        group_layout(ROWS_PER_BLOCK, [width], ROWS_PER_BLOCK)  # raises for unsupported widths
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "config.json").exists():
        raise FileExistsError(f"{out_dir} already holds a model (config.json)")
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(quant.seed)
    shards: list[dict[str, torch.Tensor]] = [{}]
    written: list[tuple[str, list[str], int]] = []
    linear_bits = linear_weights = 0

    def flush() -> None:
        name = f"model-{len(written) + 1:05d}.safetensors"
        save_file(shards[0], str(out_dir / name), metadata={"format": "pt"})
        written.append((name, list(shards[0]), _nbytes(shards[0])))
        shards[0] = {}

    parts = 2 + shape.num_hidden_layers
    for _label, tensors in tqdm(
        _model_tensors(shape, quant, generator), total=parts, disable=not progress, unit="part"
    ):
        for key, tensor in tensors.items():
            if key.endswith((".q_weight", ".q_scale", ".q_invperm")):
                linear_bits += tensor.numel() * tensor.element_size() * 8
            if key.endswith(".q_invperm"):
                linear_weights += tensor.numel() * _out_features(tensors, key)
        shards[0].update(tensors)
        if _nbytes(shards[0]) >= shard_bytes:
            flush()
    if shards[0]:
        flush()
    total = sum(size for _, _, size in written)
    if len(written) > 1:
        final = []
        for i, (name, keys, size) in enumerate(written, start=1):
            renamed = f"model-{i:05d}-of-{len(written):05d}.safetensors"
            (out_dir / name).rename(out_dir / renamed)
            final.append((renamed, keys, size))
        index = {
            "metadata": {"total_size": total},
            "weight_map": {key: name for name, keys, _ in final for key in keys},
        }
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
        files = [name for name, _, _ in final]
    else:
        (out_dir / written[0][0]).rename(out_dir / "model.safetensors")
        files = ["model.safetensors"]
    bpw = linear_bits / linear_weights
    (out_dir / "config.json").write_text(json.dumps(qwen2_config(shape, quant, bpw), indent=2))
    generation = {"bos_token_id": BOS_ID, "eos_token_id": [EOS_ID, BOS_ID], "do_sample": False}
    (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2))
    write_tokenizer_files(out_dir, tokenizer_cache or _default_cache())
    return Built(str(out_dir), time.perf_counter() - started, total, files, bpw)


def _out_features(tensors: dict[str, torch.Tensor], invperm_key: str) -> int:
    return int(tensors[invperm_key.replace(".q_invperm", ".q_weight")].shape[1])


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qwend" / "tokenizers"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qwend.bench.synthetic_exl2",
        description="Write a random-weight EXL2 model with Qwen2.5-7B's shapes.",
    )
    parser.add_argument("--out", type=Path, required=True, help="new model folder")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-7b")
    parser.add_argument("--bits", type=float, default=4.0, help="linear layers (whole bits)")
    parser.add_argument("--head-bits", type=int, default=6, help="lm_head bits")
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--no-act-order", action="store_true", help="identity permutation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer-cache", type=Path, help="where tokenizer.json is built once")
    args = parser.parse_args(argv)
    if args.bits != int(args.bits):
        parser.error("--bits: this builder writes one whole bit width for every group")
    quant = Quant(int(args.bits), args.head_bits, args.group_size, not args.no_act_order, args.seed)
    try:
        built = build(args.out, SHAPES[args.shape], quant, tokenizer_cache=args.tokenizer_cache)
    except (ValueError, FileExistsError) as exc:
        parser.error(str(exc))
    print(json.dumps(built.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
