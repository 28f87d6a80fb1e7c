"""Unit tests for the torch reference of exllamav2_ext (tests/fixtures/exllamav2_ext_ref).

Each op is checked against an independent statement of the C++ semantics
(exllamav2 0.3.2's exllamav2_ext sources): EXL2 GEMM against the numpy
dequantizer of tests/unit/test_synthetic_exl2.py, RoPE against Hugging Face's
formulas, norms against the textbook formula in float64, the KV-cache
Hadamard against an explicit Sylvester matrix, sampling against hand-worked
distributions. Tolerances: fp16 results agree to fp16 rounding (a relative
2e-3, or one fp16 step of the operands' size); the rest is exact.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from tests.fixtures.exllamav2_cpu import import_exllamav2
from tests.fixtures.exllamav2_ext_ref import OPS, handles, kv_cache, layers, loading, sampling
from tests.fixtures.exllamav2_ext_ref import new_module as new_ext_module
from tests.unit.test_synthetic_exl2 import dequantize_reference

from qwend.bench import synthetic_exl2 as syn

NONE = torch.empty((1, 1), device="meta")  # exllamav2's none_tensor
FP16_RTOL = 2e-3  # two fp16 roundings (the group scale, then the weight)
TRAINED_SCALE = 0.02  # q_scale_max giving weights of a trained model's size (std ~0.01)

# -- EXL2 matrices --------------------------------------------------------------------


def exl2_layer(
    widths: list[int],
    rows: int,
    columns: int,
    seed: int,
    group_size: int = 64,
    bias: bool = True,
    scale: float = 0.5,
) -> dict[str, torch.Tensor]:
    """EXL2 tensors as a model file holds them, from the project's packer."""
    generator = torch.Generator().manual_seed(seed)
    groups = syn.group_layout(rows, widths, group_size)
    codes = torch.cat(
        [torch.randint(0, 2**b, (r, columns), generator=generator) for b, r in groups]
    )
    scale_codes = torch.randint(0, 16, (len(groups), columns), generator=generator)
    scale_max = (torch.rand(len(groups), generator=generator) + 0.1) * scale
    invperm = torch.randperm(rows, generator=generator)
    added = torch.randn(columns, generator=generator) if bias else None
    return syn.exl2_linear(codes, groups, scale_codes, scale_max, invperm, added)


def make_handle(w: dict[str, torch.Tensor]) -> int:
    """What exllamav2's Python make_q_matrix passes to the extension (ext.py)."""
    invperm = w["q_invperm"]
    return loading.make_q_matrix(
        w["q_weight"],
        torch.argsort(invperm).to(torch.int16),
        invperm.to(torch.int16),
        w["q_scale"],
        w["q_scale_max"] * (1 / 256),
        w["q_groups"],
        loading.make_group_map(w["q_groups"], w["q_weight"].shape[0]),
        NONE,
        NONE,
        NONE,
        w.get("bias", NONE),
        NONE,
        0,
    )


WIDTHS = [[2], [3], [4], [5], [6], [8], [8, 6, 5, 4, 3, 2], [6, 4, 4, 3]]


@pytest.mark.parametrize("widths", WIDTHS, ids=lambda w: "-".join(map(str, w)))
def test_gemm_matches_the_independent_dequantizer(widths: list[int]) -> None:
    rows = 64 * len(widths) if len(widths) > 1 else 192
    w = exl2_layer(widths, rows, 24, seed=sum(widths))
    handle = make_handle(w)
    reference = dequantize_reference(w, rows)  # float64, input order
    rebuilt = torch.empty((rows, 24), dtype=torch.float16)
    loading.reconstruct(handle, rebuilt)
    np.testing.assert_allclose(rebuilt.double().numpy(), reference, rtol=FP16_RTOL, atol=1e-7)

    a = torch.randn((5, rows), generator=torch.Generator().manual_seed(1)).half()
    c = torch.empty((5, 24), dtype=torch.float16)
    loading.gemm_half_q_half(a, handle, c, False)
    expected = a.double().numpy() @ reference + w["bias"].double().numpy()
    scale = np.abs(a.double().numpy()) @ np.abs(reference) + 1.0
    assert np.abs(c.double().numpy() - expected).max() <= (FP16_RTOL * scale).max()
    loading.free_q_matrix(handle)


def test_a_seven_bit_group_is_refused_like_the_kernel_has_no_decoder() -> None:
    w = exl2_layer([4], 64, 8, seed=0)
    w["q_groups"] = torch.tensor([7, 0], dtype=torch.int16)
    w["q_weight"] = torch.zeros((14, 8), dtype=torch.int32)
    with pytest.raises(RuntimeError, match="no 7-bit decoder"):
        make_handle(w)


def test_groups_out_of_descending_order_are_refused() -> None:
    w = exl2_layer([8, 4], 128, 8, seed=0)
    w["q_groups"] = torch.tensor([4, 0, 8, 8], dtype=torch.int16)
    with pytest.raises(RuntimeError, match="descending"):
        make_handle(w)


def test_make_group_map_is_exllamav2s_python_version() -> None:
    import_exllamav2()
    from exllamav2.ext import make_group_map_py

    w = exl2_layer([8, 6, 5, 4, 3, 2], 384, 8, seed=3)
    ours = loading.make_group_map(w["q_groups"], w["q_weight"].shape[0])
    assert torch.equal(ours, make_group_map_py(w["q_groups"], w["q_weight"].shape[0]))


def test_tensor_remap_reorders_columns() -> None:
    generator = torch.Generator().manual_seed(0)
    tensor = torch.randint(-(2**31), 2**31 - 1, (3, 16), dtype=torch.int32, generator=generator)
    index = torch.randperm(16, generator=generator).to(torch.int32)
    expected = tensor.numpy()[:, index.numpy()]
    loading.tensor_remap(tensor, index)
    np.testing.assert_array_equal(tensor.numpy(), expected)


def test_tensor_remap_4bit_reorders_nibbles() -> None:
    generator = torch.Generator().manual_seed(1)
    tensor = torch.randint(-(2**31), 2**31 - 1, (2, 4), dtype=torch.int32, generator=generator)
    index = torch.randperm(32, generator=generator).to(torch.int32)
    bits = np.unpackbits(tensor.numpy().view(np.uint8), axis=1, bitorder="little")
    nibbles = bits.reshape(2, 32, 4)  # little-endian words: nibble i is bits 4i..4i+3
    expected = np.packbits(nibbles[:, index.numpy()].reshape(2, -1), axis=1, bitorder="little")
    loading.tensor_remap_4bit(tensor, index)
    np.testing.assert_array_equal(tensor.numpy().view(np.uint8), expected)


def test_stloader_read_copies_the_bytes(tmp_path: object) -> None:
    path = f"{tmp_path}/blob"
    data = torch.arange(40, dtype=torch.float16)
    with open(path, "wb") as f:
        f.write(b"header!!" + data.numpy().tobytes())
    target = torch.empty(40, dtype=torch.float16)
    loading.stloader_read(path, 8, 80, target)
    assert torch.equal(target, data)
    with pytest.raises(RuntimeError, match="80-byte"):
        loading.stloader_read(path, 8, 82, target)


# -- norms and rope -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("in_dtype", "out_dtype"),
    [(torch.half, torch.half), (torch.float, torch.half), (torch.half, torch.float)],
)
def test_rms_norm_is_the_formula(in_dtype: torch.dtype, out_dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn((6, 64), generator=generator) * 3).to(in_dtype)
    w = torch.rand(64, generator=generator).half() + 0.5
    y = torch.empty((6, 64), dtype=out_dtype)
    layers.rms_norm(x, w, y, 1e-6)
    xd = x.double()
    expected = xd / torch.sqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-6) * w.double()
    torch.testing.assert_close(y.double(), expected, rtol=FP16_RTOL, atol=1e-3)


def rope_tables(
    positions: int, dim: int, theta: float, interleaved: bool
) -> tuple[torch.Tensor, ...]:
    """fp16 sin, cos [1, 1, positions, dim]: NEOX repeats the half-table (as HF's
    Llama does), GPT-J interleaves it (as HF's GPT-J does)."""
    inv = 1.0 / theta ** (torch.arange(0, dim, 2).double() / dim)
    freqs = torch.outer(torch.arange(positions).double(), inv)
    full = freqs.repeat_interleave(2, dim=-1) if interleaved else torch.cat([freqs, freqs], -1)
    return tuple(t.half().view(1, 1, positions, dim) for t in (full.sin(), full.cos()))


def hf_rope(
    x: torch.Tensor, positions: torch.Tensor, dim: int, theta: float, neox: bool
) -> torch.Tensor:
    """x [B, T, H, D] rotated at positions [B, T] by transformers' own functions."""
    from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb as gptj_rope
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as llama_rope

    inv = 1.0 / theta ** (torch.arange(0, dim, 2).double() / dim)
    freqs = positions.double().unsqueeze(-1) * inv  # [B, T, dim/2]
    rot, rest = x[..., :dim].double(), x[..., dim:].double()
    if neox:
        emb = torch.cat([freqs, freqs], -1)
        q = rot.transpose(1, 2)  # [B, H, T, D]
        out, _ = llama_rope(q, q, emb.cos().half().double(), emb.sin().half().double())
        rotated = out.transpose(1, 2)
    else:
        rotated = gptj_rope(rot, freqs.sin().half().double(), freqs.cos().half().double())
    return torch.cat([rotated, rest], -1)


@pytest.mark.parametrize("neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("partial", [False, True], ids=["full", "partial"])
@pytest.mark.parametrize("past", ["past_len", "offsets", "both"])
def test_rope_matches_the_hf_formula(neox: bool, partial: bool, past: str) -> None:
    batch, tokens, heads, head_dim = 2, 5, 3, 32
    dim = 16 if partial else head_dim
    sin, cos = rope_tables(64, dim, 10000.0, interleaved=not neox)
    x = torch.randn((batch, tokens, heads, head_dim), generator=torch.Generator().manual_seed(2))
    x = x.half()
    offsets = torch.tensor([3, 11], dtype=torch.int32)
    past_len = {"past_len": 7, "offsets": -1, "both": 7}[past]
    passed = NONE if past == "past_len" else offsets
    base = {"past_len": torch.tensor([7, 7]), "offsets": offsets, "both": offsets + 7}[past]
    positions = base.long().unsqueeze(1) + torch.arange(tokens)
    expected = hf_rope(x, positions, dim, 10000.0, neox)
    layers.rope_(x, sin, cos, past_len, heads, head_dim, passed, neox)
    torch.testing.assert_close(x.double(), expected, rtol=FP16_RTOL, atol=2e-3)


# -- the fused attention and MLP -------------------------------------------------------


def test_fused_attention_and_mlp_are_the_decoder_layer_formula() -> None:
    """q_attn_forward_1/2 and q_mlp_forward_ against a float64 Qwen2-style layer on the
    same dequantized weights (attention itself is exllamav2's, in between)."""
    hidden, heads, kv_heads, head_dim, inter, tokens = 128, 4, 2, 32, 192, 3
    gen = torch.Generator().manual_seed(5)
    shapes = {"q": (hidden, hidden), "k": (hidden, kv_heads * head_dim)}
    shapes |= {"v": (hidden, kv_heads * head_dim), "o": (hidden, hidden)}
    shapes |= {"gate": (hidden, inter), "up": (hidden, inter), "down": (inter, hidden)}
    w = {
        name: exl2_layer([4], k, n, seed=i, bias=name in "qkv", scale=TRAINED_SCALE)
        for i, (name, (k, n)) in enumerate(shapes.items())
    }
    mats = {name: make_handle(t) for name, t in w.items()}
    dense = {
        name: torch.from_numpy(dequantize_reference(t, shapes[name][0])) for name, t in w.items()
    }
    norm = (torch.rand(hidden, generator=gen) + 0.5).half()
    sin, cos = rope_tables(32, head_dim, 10000.0, interleaved=False)
    attn = layers.make_q_attn(
        norm, NONE, True, True, 1e-6, mats["q"], mats["k"], mats["v"], mats["o"], NONE, NONE,
        tokens, hidden, heads, kv_heads, head_dim, 32, True, layers.ROPE_STYLE_NEOX, head_dim,
        NONE, NONE, NONE, NONE, False, False,
    )  # fmt: skip
    x = torch.randn((1, tokens, hidden), generator=gen).half()
    q = torch.empty((1, tokens, heads, head_dim), dtype=torch.half)
    k = torch.empty((1, tokens, kv_heads, head_dim), dtype=torch.half)
    v = torch.empty((1, tokens, kv_heads, head_dim), dtype=torch.half)
    layers.q_attn_forward_1(attn, x, 1, tokens, 4, NONE, q, k, v, sin, cos, [], NONE)

    xd = x.double().view(tokens, hidden)
    h = xd / torch.sqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.double()
    bias = {name: w[name]["bias"].double() for name in ("q", "k", "v")}
    positions = torch.arange(4, 4 + tokens).unsqueeze(0)
    q_ref = hf_rope(
        (h @ dense["q"] + bias["q"]).view(1, tokens, heads, head_dim),
        positions,
        head_dim,
        10000.0,
        True,
    )
    k_ref = hf_rope(
        (h @ dense["k"] + bias["k"]).view(1, tokens, kv_heads, head_dim),
        positions,
        head_dim,
        10000.0,
        True,
    )
    v_ref = (h @ dense["v"] + bias["v"]).view(1, tokens, kv_heads, head_dim)
    for got, want in ((q, q_ref), (k, k_ref), (v, v_ref)):
        torch.testing.assert_close(got.double(), want, rtol=1e-2, atol=2e-2)

    attn_out = torch.randn((1, tokens, hidden), generator=gen).half()
    before = x.clone()
    layers.q_attn_forward_2(attn, x, attn_out, 1, tokens, [], NONE)
    expected = (
        before.double().view(tokens, hidden) + attn_out.double().view(tokens, hidden) @ dense["o"]
    )
    torch.testing.assert_close(x.double().view(tokens, hidden), expected, rtol=1e-2, atol=2e-2)

    mlp = layers.make_q_mlp(
        norm, NONE, True, 1e-6, mats["gate"], mats["up"], mats["down"], NONE, NONE, NONE,
        NONE, tokens, False, True, NONE, NONE, False, False,
    )  # fmt: skip
    before = x.clone()
    layers.q_mlp_forward_(mlp, x, [], NONE)
    bd = before.double().view(tokens, hidden)
    hn = bd / torch.sqrt(bd.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.double()
    act = torch.nn.functional.silu(hn @ dense["gate"]) * (hn @ dense["up"])
    torch.testing.assert_close(
        x.double().view(tokens, hidden), bd + act @ dense["down"], rtol=1e-2, atol=3e-2
    )
    for handle in (attn, mlp, *mats.values()):
        handles.free(handle)


def test_what_qwen2_does_not_use_raises_naming_it() -> None:
    w = make_handle(exl2_layer([4], 64, 64, seed=0))
    with pytest.raises(NotImplementedError, match="q/k head norms"):
        layers.make_q_attn(
            NONE, NONE, True, True, 1e-6, w, w, w, w, NONE, NONE, 1, 64, 2, 2, 32, 32, True, 2,
            32, torch.ones(32).half(), NONE, NONE, NONE, False, False,
        )  # fmt: skip
    with pytest.raises(NotImplementedError, match="LoRA"):
        layers.q_mlp_forward_(0, torch.zeros(1, 64).half(), [1], NONE)
    module = new_ext_module()
    with pytest.raises(RuntimeError, match=r"exllamav2_ext\.make_q_matrix_split is not in"):
        module.make_q_matrix_split()
    assert set(OPS) <= set(dir(module))
    handles.free(w)


# -- the quantized KV cache ------------------------------------------------------------


def sylvester(n: int) -> np.ndarray:
    h = np.array([[1.0]])
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def test_the_cache_rotation_is_a_hadamard_transform_of_interleaved_halves() -> None:
    x = torch.randn(64, generator=torch.Generator().manual_seed(0)).half()
    rotated = kv_cache._hadamard(x.view(1, 64)).view(32, 2).double().numpy()
    pairs = x.double().numpy().reshape(32, 2)  # lane t holds values 2t and 2t + 1
    expected = sylvester(32) @ pairs
    np.testing.assert_allclose(rotated, expected, rtol=5e-3, atol=5e-3)


@pytest.mark.parametrize(("wbits", "bound"), [(8, 0.01), (6, 0.1), (4, 0.15)])
def test_q_cache_round_trip(wbits: int, bound: float) -> None:
    """Keys and values survive fp16 -> Q -> fp16 within the format's error; Q6 keeps keys
    at 8 bits and values at 4."""
    batch, seq, heads, dim = 1, 16, 4, 128  # 512 values per token: whole blocks
    gen = torch.Generator().manual_seed(wbits)
    k_bits, v_bits = kv_cache.KV_BITS[wbits]
    k16 = torch.randn((batch, seq, heads, dim), generator=gen).half()
    v16 = torch.randn((batch, seq, heads, dim), generator=gen).half()
    kq = torch.zeros((batch, seq, heads, dim * k_bits // 8), dtype=torch.uint8)
    vq = torch.zeros((batch, seq, heads, dim * v_bits // 8), dtype=torch.uint8)
    ks = torch.zeros((batch, seq, heads, dim // 32), dtype=torch.half)
    vs = torch.zeros_like(ks)
    kv_cache.fp16_to_q_kv(k16, kq, ks, v16, vq, vs, batch, 0, seq, 0, NONE, NONE, wbits)
    k_out, v_out = torch.zeros_like(k16), torch.zeros_like(v16)
    kv_cache.q_to_fp16_kv(kq, k_out, ks, vq, v_out, vs, batch, 0, seq, 0, NONE, NONE, wbits)
    k_err = ((k_out.float() - k16.float()).norm() / k16.float().norm()).item()
    v_err = ((v_out.float() - v16.float()).norm() / v16.float().norm()).item()
    assert k_err < (0.01 if k_bits == 8 else 0.15)
    assert v_err < (0.01 if v_bits == 8 else 0.15)
    assert max(k_err, v_err) < bound


def test_q_cache_writes_only_the_tokens_asked_for_unpaged_and_paged() -> None:
    heads, dim = 2, 256  # 512 values per token
    k16 = torch.randn((1, 8, heads, dim), generator=torch.Generator().manual_seed(0)).half()
    kq = torch.zeros((1, 8, heads, dim // 2), dtype=torch.uint8)
    ks = torch.zeros((1, 8, heads, dim // 32), dtype=torch.half)
    kv_cache.fp16_to_q_kv(k16, kq, ks, NONE, NONE, NONE, 1, 3, 2, 0, NONE, NONE, 4)
    written = (ks.view(8, -1) != 0).any(dim=1).tolist()
    assert written == [False, False, False, True, True, False, False, False]

    pages = torch.randn((4, 4, heads, dim), generator=torch.Generator().manual_seed(1)).half()
    pq = torch.zeros((4, 4, heads, dim // 2), dtype=torch.uint8)
    ps = torch.zeros((4, 4, heads, dim // 32), dtype=torch.half)
    table = torch.tensor([[2, 0]], dtype=torch.int32)  # sequence 0: page 2, then page 0
    seqlens = torch.tensor([3], dtype=torch.int32)  # 3 tokens cached; 2 new: slots 3 and 4
    kv_cache.fp16_to_q_kv(pages, pq, ps, NONE, NONE, NONE, 1, 0, 2, 4, seqlens, table, 4)
    written = (ps.view(16, -1) != 0).any(dim=1).view(4, 4).tolist()
    assert written[2] == [False, False, False, True]  # page 2, slot 3
    assert written[0] == [True, False, False, False]  # page 0, slot 0 (position 4)
    assert not any(written[1]) and not any(written[3])


# -- sampling ---------------------------------------------------------------------------


def sample(logits: list[float], random: float = 0.5, **settings: float) -> tuple[int, float]:
    row = torch.tensor([logits], dtype=torch.float32)
    tokens = torch.zeros((1, 1), dtype=torch.long)
    probs = torch.zeros((1, 1), dtype=torch.float32)
    filt = settings.pop("filter", None)
    options = {"temperature": 1.0, "top_k": 0, "top_p": 0.0, "min_p": 0.0} | settings
    sampling.sample_basic(
        row, options["temperature"], int(options["top_k"]), options["top_p"], 0.0,
        options["min_p"], 0.0, 0.0, random, tokens, probs, NONE, NONE,
        NONE if filt is None else filt, False, [], 0.0, 0.0, 1.0, NONE,
    )  # fmt: skip
    return int(tokens[0, 0]), float(probs[0, 0])


def logits_for(probs: list[float]) -> list[float]:
    return [math.log(p) for p in probs]


def test_greedy_picks_the_first_largest_logit_and_respects_the_filter() -> None:
    assert sample([0.1, 3.0, 3.0, -1.0], temperature=0.0) == (1, 1.0)
    allowed = torch.tensor([[True, False, True, True]])
    assert sample([0.1, 3.0, 2.0, -1.0], temperature=0.0, filter=allowed)[0] == 2


def test_plain_sampling_walks_the_vocabulary_in_order() -> None:
    probs = [0.1, 0.4, 0.2, 0.3]
    logits = logits_for(probs)
    # cumulative in vocabulary order: 0.1, 0.5, 0.7, 1.0 (the walk uses random * 0.9998)
    assert [sample(logits, r)[0] for r in (0.05, 0.3, 0.6, 0.9)] == [0, 1, 2, 3]
    assert sample(logits, 0.3)[1] == pytest.approx(0.4, rel=1e-6)
    assert sample([0.0, math.log(2.0)], 0.5, temperature=0.5)[1] == pytest.approx(0.8, rel=1e-6)


def test_top_k_keeps_the_k_likeliest_in_descending_order() -> None:
    logits = logits_for([0.1, 0.4, 0.2, 0.3])
    # top-3 renormalized: 0.4/0.9, 0.3/0.9, 0.2/0.9 in that order
    picks = [sample(logits, r, top_k=3)[0] for r in (0.4, 0.5, 0.7, 0.99)]
    assert picks == [1, 3, 3, 2]


def test_top_p_keeps_what_fits_within_p() -> None:
    """The C++ heap keeps the likeliest tokens whose sum stays within top_p (not the
    token that crosses it, as Hugging Face does)."""
    logits = logits_for([0.15, 0.5, 0.05, 0.3])
    picks = {sample(logits, r, top_p=0.85)[0] for r in (0.1, 0.5, 0.7, 0.99)}
    assert picks == {1, 3}
    assert sample(logits, 0.99, top_p=0.85)[1] == pytest.approx(0.3 / 0.8, rel=1e-5)


def test_min_p_drops_tokens_below_a_fraction_of_the_top() -> None:
    logits = logits_for([0.5, 0.3, 0.15, 0.05])  # threshold 0.5 * 0.25 = 0.125
    picks = {sample(logits, r / 20, min_p=0.25)[0] for r in range(20)}
    assert picks == {0, 1, 2}


def test_min_p_keeps_one_token_below_the_threshold_where_the_cpp_partition_does() -> None:
    """exllamav2 0.3.2's keep_threshold, traced by hand on [.05, .5, .15, .3]: the first
    swap gives [.3, .5, .15, .05]; the inner loop then runs i to 3, past j = 2, and the
    unguarded swap that follows moves .05 into the kept range: 4 candidates stay."""
    probs = np.array([0.05, 0.5, 0.15, 0.3], dtype=np.float32)
    kept, ids = sampling._min_p(probs, np.arange(4), 0.25)
    assert ids.tolist() == [3, 1, 0, 2]
    assert kept.tolist() == pytest.approx([0.3, 0.5, 0.05, 0.15])


def test_output_kprobs_are_sorted_and_padded_with_unused_ids() -> None:
    row = torch.tensor([logits_for([0.1, 0.4, 0.2, 0.3])], dtype=torch.float32)
    tokens, probs = torch.zeros((1, 1), dtype=torch.long), torch.zeros((1, 1))
    kprobs, ktokens = torch.zeros((1, 1, 4)), torch.zeros((1, 1, 4), dtype=torch.long)
    sampling.sample_basic(
        row, 1.0, 2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, tokens, probs, kprobs, ktokens, NONE,
        False, [], 0.0, 0.0, 1.0, NONE,
    )  # fmt: skip
    assert ktokens[0, 0].tolist() == [1, 3, 0, 2]
    assert kprobs[0, 0].tolist() == pytest.approx([4 / 7, 3 / 7, 0.0, 0.0], rel=1e-5)


def test_unsupported_sampler_options_raise_naming_them() -> None:
    with pytest.raises(NotImplementedError, match="mirostat"):
        sampling.sample_basic(
            torch.zeros((1, 4)), 1.0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5,
            torch.zeros((1, 1), dtype=torch.long), torch.zeros((1, 1)), NONE, NONE, NONE,
            True, [0.0], 5.0, 0.1, 1.0, NONE,
        )  # fmt: skip


def test_repetition_penalty_with_sustain_and_decay() -> None:
    logits = torch.tensor([[2.0, -2.0, 1.0, 4.0, 8.0]])
    sequence = torch.tensor([[4, 0, 1, 1, 2]])  # newest last
    sampling.apply_rep_penalty(sequence, 2.0, 2, 2, 0.5, 0.25, logits)
    # walking back from the newest: 2 and 1 at full strength (sustain 2); then 1 again
    # (frequency only) and the decay starts: 0 at penalty 1.5 / frequency 0.25 /
    # presence 0.125; token 4 is before the window (5 - sustain 2 - decay 2 = 1)
    expected = [
        2.0 / 1.5 - 0.125 - 0.25,
        -2.0 * 2.0 - 0.25 - 0.5 - 0.5,
        1.0 / 2.0 - 0.25 - 0.5,
        4.0,
        8.0,
    ]
    assert logits[0].tolist() == pytest.approx(expected)


def test_logit_filter_exclusive_clears_everything_not_listed() -> None:
    filt = torch.ones((2, 6), dtype=torch.bool)
    filt[1, 4] = False
    sampling.logit_filter_exclusive(filt, [[1, 3], [0, 4, 5]])
    assert filt.tolist() == [
        [False, True, False, True, False, False],
        [True, False, False, False, False, True],
    ]


def test_count_match_and_partial_strings_match() -> None:
    a = torch.tensor([[5, 6, 7, 8, 9]])
    assert sampling.count_match(a, torch.tensor([[5, 6, 0, 8]]), 10) == 2
    assert sampling.count_match(a, torch.tensor([[5, 6, 7]]), 10) == 3
    assert sampling.count_match(a, a, 4) == 4

    def utf32(text: str) -> bytes:
        return np.array([ord(c) for c in text], dtype=np.uint32).tobytes()

    stops = utf32("END") + utf32("</s>")
    offsets = np.array([0, 12, 28], dtype=np.uint32).tobytes()
    assert sampling.partial_strings_match(utf32("abc END x"), offsets, stops) == 4
    assert sampling.partial_strings_match(utf32("abc </"), offsets, stops) == -2
    assert sampling.partial_strings_match(utf32("abc"), offsets, stops) == -1


def test_importing_the_reference_installs_nothing() -> None:
    """Only tests/gpu's fixture installs the ops (and undoes it): here the stand-in, if
    any, is the import-only one."""
    ext = sys.modules.get("exllamav2_ext")
    assert ext is None or not hasattr(ext, "__qwend_ext_reference__")
