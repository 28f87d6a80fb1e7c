"""Unit tests for the synthetic EXL2 builder (daemon/qwend/bench/synthetic_exl2.py).

The packer is checked against an independent reference unpacker written here
(numpy bit arrays, not shifts), for every width from 2 to 8 bits. The model
folder is read back with exllamav2 0.3.2's own loader classes on the CPU:
``ExLlamaV2Config`` parses it, ``ExLlamaV2`` builds its modules, each module's
``load_weight`` reads its tensors through exllamav2's ``STFile``, and
exllamav2's ``make_q_matrix`` prepares every quantized layer, with a CPU
stand-in for the CUDA extension that checks what the C++ side checks.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from tests.fixtures.exllamav2_cpu import import_exllamav2, is_stand_in
from tests.fixtures.fake_backend import QWEN_TOKENIZER_CACHE

from qwend.bench import synthetic_exl2 as syn

# -- an independent reference unpacker -----------------------------------------------


def unpack_reference(q_weight: torch.Tensor, bits: int, rows: int) -> np.ndarray:
    """Codes [rows, N] from packed words: each column's words as one LSB-first bit array."""
    assert sys.byteorder == "little"
    words = q_weight.numpy().view(np.uint32).T.copy()  # [N, words]
    stream = np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")
    stream = stream[:, : rows * bits].reshape(words.shape[0], rows, bits).astype(np.int64)
    return (stream * (1 << np.arange(bits))).sum(axis=-1).T


def dequantize_reference(w: dict[str, torch.Tensor], rows: int) -> np.ndarray:
    """The fp32 weight [K, N] in the model's input order, from EXL2 tensors."""
    q_groups = w["q_groups"].numpy().astype(np.int64).reshape(-1, 2)
    columns = w["q_weight"].shape[1]
    nibbles = np.unpackbits(
        w["q_scale"].numpy().view(np.uint32).copy().view(np.uint8), axis=1, bitorder="little"
    ).reshape(len(q_groups), columns, 4)
    scale_codes = (nibbles * (1 << np.arange(4))).sum(-1)
    out = np.zeros((rows, columns))
    row = 0
    for g, (bits, first) in enumerate(q_groups):
        last = q_groups[g + 1][1] if g + 1 < len(q_groups) else w["q_weight"].shape[0]
        group_rows = (last - first) * 32 // bits
        codes = unpack_reference(w["q_weight"][first:last], int(bits), group_rows)
        scale = (scale_codes[g] + 1) ** 2 * float(w["q_scale_max"][g]) / 256
        out[row : row + group_rows] = (codes - 2 ** (bits - 1)) * scale
        row += group_rows
    assert row == rows
    perm = np.argsort(w["q_invperm"].numpy())  # exllamav2: q_perm = argsort(q_invperm)
    original = np.zeros_like(out)
    original[perm] = out  # stored row i multiplies input feature q_perm[i]
    return original


# -- the packer ------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_pack_codes_round_trips_through_the_reference_unpacker(bits: int) -> None:
    generator = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2**bits, (96, 40), generator=generator)
    packed = syn.pack_codes(codes, bits)
    assert packed.dtype == torch.int32
    assert packed.shape == (96 * bits // 32, 40)
    np.testing.assert_array_equal(unpack_reference(packed, bits, 96), codes.numpy())


def test_pack_codes_puts_row_zero_in_the_lowest_bits() -> None:
    codes = torch.zeros((32, 1), dtype=torch.int64)
    codes[0, 0], codes[1, 0], codes[10, 0] = 0b101, 0b011, 0b111  # 3 bits: row 10 straddles
    packed = syn.pack_codes(codes, 3)
    words = [int(x) & 0xFFFFFFFF for x in packed[:, 0]]
    assert words[0] == 0b101 | 0b011 << 3 | (0b11 << 30)
    assert words[1] == 0b1  # the third bit of row 10
    assert words[2] == 0


def test_pack_codes_rejects_rows_that_do_not_fill_whole_words() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        syn.pack_codes(torch.zeros((48, 4), dtype=torch.int64), 4)


def test_pack_scales_is_eight_nibbles_per_word_low_first() -> None:
    codes = torch.arange(16).reshape(1, 16) % 16
    packed = syn.pack_scales(codes)
    assert packed.shape == (1, 2)
    assert int(packed[0, 0]) & 0xFFFFFFFF == 0x76543210
    assert int(packed[0, 1]) & 0xFFFFFFFF == 0xFEDCBA98


def test_group_layout_sorts_widths_descending_and_keeps_the_last_group_short() -> None:
    assert syn.group_layout(320, [4, 8, 2], 128) == [(8, 128), (4, 128), (2, 64)]
    assert syn.group_layout(256, [4], 128) == [(4, 128), (4, 128)]
    with pytest.raises(ValueError, match="7 bits"):
        syn.group_layout(128, [7], 128)
    with pytest.raises(ValueError, match="multiple of 32"):
        syn.group_layout(128, [4], 100)


def test_exl2_linear_with_mixed_groups_dequantizes_like_the_formula() -> None:
    """Groups of 8, 6, 5, 4, 3 and 2 bits: q_groups' packed rows, scales and the
    act-order permutation all come back through the reference dequantizer."""
    generator = torch.Generator().manual_seed(7)
    groups = syn.group_layout(6 * 64, [8, 6, 5, 4, 3, 2], 64)
    rows, columns = 6 * 64, 16
    codes = torch.cat(
        [torch.randint(0, 2**b, (r, columns), generator=generator) for b, r in groups]
    )
    scale_codes = torch.randint(0, 16, (len(groups), columns), generator=generator)
    scale_max = torch.tensor([0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625])
    invperm = torch.randperm(rows, generator=generator)
    w = syn.exl2_linear(codes, groups, scale_codes, scale_max, invperm)

    first_rows = w["q_groups"].reshape(-1, 2)[:, 1].tolist()
    assert first_rows == [0, 16, 28, 38, 46, 52]  # 64 rows * bits / 32, accumulated
    assert w["q_weight"].shape == (52 + 4, columns)
    stored = np.zeros((rows, columns))
    row = 0
    for g, (bits, r) in enumerate(groups):
        scale = (scale_codes[g].numpy() + 1) ** 2 * float(scale_max[g]) / 256
        stored[row : row + r] = (codes[row : row + r].numpy() - 2 ** (bits - 1)) * scale
        row += r
    expected = np.zeros_like(stored)
    expected[torch.argsort(invperm).numpy()] = stored
    np.testing.assert_allclose(dequantize_reference(w, rows), expected, rtol=1e-3)


def test_exl2_linear_refuses_groups_out_of_descending_order() -> None:
    codes = torch.zeros((64, 8), dtype=torch.int64)
    with pytest.raises(ValueError, match="descending"):
        syn.exl2_linear(
            codes, [(4, 32), (8, 32)], torch.zeros((2, 8)), torch.ones(2), torch.arange(64)
        )


# -- the model folder, read by exllamav2's own classes -------------------------------------


class _QMatrixChecks:
    """The checks exllamav2_ext's C++ make_q_matrix and QMatrix make, in Python."""

    def __init__(self) -> None:
        self.made: list[dict[str, Any]] = []

    def make_q_matrix(self, *args: Any) -> int:
        q_weight, q_perm, q_invperm, q_scale, q_scale_max, q_groups, q_group_map = args[:7]
        bias = args[10]
        assert q_weight.dtype == torch.int32
        assert q_perm.dtype == q_invperm.dtype == torch.int16
        assert q_scale.dtype == torch.int32 and q_scale_max.dtype == torch.float16
        assert q_groups.dtype == q_group_map.dtype == torch.int16
        assert q_perm.shape == q_invperm.shape
        assert q_scale.shape[1] * 8 == q_weight.shape[1]
        assert q_scale_max.shape[0] == q_scale.shape[0] == q_groups.shape[0] // 2
        if bias.device.type != "meta":
            assert bias.dtype == torch.float16 and bias.shape[0] == q_weight.shape[1]
        widths = q_groups[0::2].tolist()
        assert widths == sorted(widths, reverse=True)  # QMatrix's row ranges assume it
        self.made.append(
            {"height": q_group_map.shape[0] // 2, "width": q_weight.shape[1], "perm": q_perm}
        )
        return len(self.made)


def _stloader_read(filename: str, offset: int, size: int, tensor: torch.Tensor) -> None:
    data = np.fromfile(filename, dtype=np.uint8, count=size, offset=offset)
    tensor.view(-1).view(torch.uint8).copy_(torch.from_numpy(data))


@pytest.fixture
def exllamav2_cpu(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, _QMatrixChecks]:
    """exllamav2 on the CPU (tests/fixtures/exllamav2_cpu.py), with three of its
    extension's functions made real for this test: reading safetensors bytes,
    the group map (exllamav2's own Python version) and the q-matrix checks.
    torch.cuda.synchronize, which STFile calls after each read, becomes a no-op."""
    exllamav2 = import_exllamav2()
    if not is_stand_in():
        pytest.skip("exllamav2 has its real CUDA extension here; tests/gpu covers that")
    from exllamav2.ext import make_group_map_py

    checks = _QMatrixChecks()
    ext = sys.modules["exllamav2_ext"]
    monkeypatch.setattr(ext, "stloader_read", _stloader_read, raising=False)
    monkeypatch.setattr(ext, "make_group_map", make_group_map_py, raising=False)
    monkeypatch.setattr(ext, "make_q_matrix", checks.make_q_matrix, raising=False)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    return exllamav2, checks


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "tiny"
    syn.build(out, syn.SHAPES["tiny"], tokenizer_cache=QWEN_TOKENIZER_CACHE, progress=False)
    return out


def _leaves(module: Any) -> Iterator[Any]:
    subs = getattr(module, "submodules", None) or []
    if not subs:
        yield module
    for sub in subs:
        yield from _leaves(sub)


def test_exllamav2_config_parses_the_tiny_model_as_qwen2(
    exllamav2_cpu: tuple[Any, _QMatrixChecks], tiny_model: Path
) -> None:
    exl, _ = exllamav2_cpu
    cfg = exl.ExLlamaV2Config(str(tiny_model))
    shape = syn.SHAPES["tiny"]
    assert cfg.architecture == "Qwen2ForCausalLM"
    assert (cfg.hidden_size, cfg.num_hidden_layers) == (shape.hidden_size, shape.num_hidden_layers)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (4, 2)
    assert (cfg.intermediate_size, cfg.vocab_size, cfg.head_dim) == (512, 152064, 64)
    assert cfg.arch.lm.attention_bias_qkv


def test_every_exllamav2_module_loads_its_tensors_with_the_expected_shapes(
    exllamav2_cpu: tuple[Any, _QMatrixChecks], tiny_model: Path
) -> None:
    exl, checks = exllamav2_cpu
    from exllamav2.ext import make_q_matrix, none_tensor
    from exllamav2.linear import ExLlamaV2Linear

    cfg = exl.ExLlamaV2Config(str(tiny_model))
    model = exl.ExLlamaV2(cfg)
    shape = syn.SHAPES["tiny"]
    leaves = [leaf for module in model.modules for leaf in _leaves(module)]
    linears = [leaf for leaf in leaves if isinstance(leaf, ExLlamaV2Linear)]
    # embedding, 2 norms per layer, 7 linears per layer, final norm, head
    assert len(linears) == 7 * shape.num_hidden_layers + 1
    assert len(leaves) == 1 + 9 * shape.num_hidden_layers + 2
    for leaf in leaves:
        w = leaf.load_weight(cpu=True)
        assert w is not None, f"{leaf.key}: no tensors found"
        if not isinstance(leaf, ExLlamaV2Linear):
            assert isinstance(w, torch.nn.Parameter) and w.dtype == torch.float16
            expected = (shape.vocab_size, shape.hidden_size) if "embed" in leaf.key else None
            assert tuple(w.shape) == (expected or (shape.hidden_size,)), leaf.key
            continue
        assert isinstance(w, dict), f"{leaf.key}: not loaded as EXL2"
        assert ("bias" in w) == leaf.has_bias, leaf.key
        expected_bits = 6 if leaf.key == "lm_head" else 4
        assert set(w["q_groups"][0::2].tolist()) == {expected_bits}, leaf.key
        make_q_matrix(w, none_tensor)
        made = checks.made[-1]
        assert made["height"] == leaf.in_features, leaf.key
        assert made["width"] == leaf.out_features, leaf.key
        assert sorted(made["perm"].tolist()) == list(range(leaf.in_features))
    assert len(checks.made) == len(linears)
    assert model.modules[-1].weight_footprint() > 0  # exllamav2 measures it from the headers


def test_exllamav2_tokenizer_encodes_hello_world_to_qwen_ids(
    exllamav2_cpu: tuple[Any, _QMatrixChecks], tiny_model: Path
) -> None:
    exl, _ = exllamav2_cpu
    tokenizer = exl.ExLlamaV2Tokenizer(exl.ExLlamaV2Config(str(tiny_model)))
    assert tokenizer.encode("Hello world").tolist() == [[9707, 1879]]
    assert tokenizer.eos_token_id == syn.EOS_ID
    fim = tokenizer.encode("<|fim_prefix|>x<|fim_middle|>").tolist()[0]
    assert fim[0] == 151659 and fim[-1] == 151660


def test_the_written_codes_decode_back_from_the_file(tiny_model: Path) -> None:
    """The file holds what random_linear made for the same seed (a full rebuild of
    layer 0's q_proj), and its scales and codes decode to finite, bounded weights."""
    shape = syn.SHAPES["tiny"]
    generator = torch.Generator().manual_seed(syn.Quant().seed)
    torch.randn((shape.vocab_size, shape.hidden_size), generator=generator)  # the embedding
    expected = syn.random_linear(
        shape.hidden_size, shape.hidden_size, 4, 128, act_order=True, has_bias=True,
        generator=generator,
    )  # fmt: skip
    with safe_open(str(tiny_model / "model.safetensors"), "pt") as f:
        stored = {k: f.get_tensor(f"model.layers.0.self_attn.q_proj.{k}") for k in expected}
    for key, tensor in expected.items():
        assert torch.equal(stored[key], tensor), key
    weights = dequantize_reference(stored, shape.hidden_size)
    assert np.isfinite(weights).all()
    assert 0 < np.abs(weights).max() <= 8 * float(np.float16(syn.SCALE_MAX))  # code 0: -8


def test_config_and_tokenizer_files(tiny_model: Path) -> None:
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert config["quantization_config"]["quant_method"] == "exl2"
    assert config["quantization_config"]["head_bits"] == 6
    tok_config = json.loads((tiny_model / "tokenizer_config.json").read_text())
    assert tok_config["eos_token"] == "<|im_end|>"
    assert tok_config["added_tokens_decoder"]["151659"]["content"] == "<|fim_prefix|>"


def test_build_refuses_an_existing_model_folder(tiny_model: Path) -> None:
    with pytest.raises(FileExistsError):
        syn.build(tiny_model, syn.SHAPES["tiny"], progress=False)


def test_build_shards_with_an_index_when_asked_for_small_shards(tmp_path: Path) -> None:
    shape = syn.Shape(64, 2, 2, 1, 128, vocab_size=256)
    built = syn.build(
        tmp_path / "m", shape, tokenizer_cache=QWEN_TOKENIZER_CACHE, shard_bytes=1, progress=False
    )
    assert len(built.files) == 4  # embedding, two layers, head
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(built.files)
    assert index["metadata"]["total_size"] == built.bytes
    assert "lm_head.q_weight" in index["weight_map"]
