"""Unit tests for backends/exllamav2/attention.py: the flash-attn stand-in and the causal patch.

Every attention result is compared with the textbook formula computed here
per sequence in float64 (softmax(q kᵀ · scale + bottom-right causal mask) v,
K/V heads repeated for grouped-query attention), on CPU. Paged caches start
filled with NaN, so any read of a slot the function should not read, or any
write outside the new tokens' slots, shows up.

Tolerances: float64 cases agree to 1e-10; float32 cases (Qwen2.5-7B shapes,
exllamav2's own code) to 2e-5 absolute, which is float32 rounding over
head_dim 128 and a few hundred keys.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import math
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.fixtures.exllamav2_cpu import import_exllamav2

from qwend.backends.exllamav2 import attention as ea

ROOT = Path(__file__).resolve().parents[2]
F64_TOL = 1e-10
F32_TOL = 2e-5


def reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool = True
) -> torch.Tensor:
    """One sequence: q [Sq, Hq, D], k, v [Sk, Hkv, D] -> [Sq, Hq, D], in float64.

    A query row that may see no key gives zeros (flash-attn's convention).
    """
    q, k, v = q.double(), k.double(), v.double()
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) * scale
    if causal:
        q_len, kv_len = q.shape[0], k.shape[0]
        keep = torch.ones(q_len, kv_len, dtype=torch.bool).tril(diagonal=kv_len - q_len)
        scores = scores.masked_fill(~keep, float("-inf"))
    weights = torch.nan_to_num(scores.softmax(dim=-1), nan=0.0)
    return torch.einsum("hqk,khd->qhd", weights, v)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    torch.testing.assert_close(actual.double(), expected.double(), rtol=0, atol=tol)


@dataclass
class PagedCache:
    """A paged K/V cache holding each sequence's past, and what it should hold afterwards."""

    k_cache: torch.Tensor
    v_cache: torch.Tensor
    block_table: torch.Tensor  # int32 [B, W]; unused entries are 0, as exllamav2 pads them
    past_k: list[torch.Tensor]
    past_v: list[torch.Tensor]
    page_size: int

    def slot(self, batch: int, position: int) -> tuple[int, int]:
        return int(self.block_table[batch, position // self.page_size]), position % self.page_size

    def expected_after_append(
        self, k_new: torch.Tensor, v_new: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        k_expected, v_expected = self.k_cache.clone(), self.v_cache.clone()
        for b, past in enumerate(self.past_k):
            for t in range(k_new.shape[1]):
                page, offset = self.slot(b, past.shape[0] + t)
                k_expected[page, offset] = k_new[b, t]
                v_expected[page, offset] = v_new[b, t]
        return k_expected, v_expected


def build_paged(
    past_lens: list[int],
    new_len: int,
    page_size: int,
    kv_heads: int,
    head_dim: int,
    dtype: torch.dtype,
    generator: torch.Generator,
    spare_pages: int = 3,
) -> PagedCache:
    """Pages for each sequence taken from a shuffled pool; every unwritten slot is NaN."""
    needed = [max(1, math.ceil((length + new_len) / page_size)) for length in past_lens]
    num_pages = sum(needed) + spare_pages
    pool = torch.randperm(num_pages, generator=generator)
    shape = (num_pages, page_size, kv_heads, head_dim)
    cache = PagedCache(
        k_cache=torch.full(shape, float("nan"), dtype=dtype),
        v_cache=torch.full(shape, float("nan"), dtype=dtype),
        block_table=torch.zeros((len(past_lens), max(needed)), dtype=torch.int32),
        past_k=[],
        past_v=[],
        page_size=page_size,
    )
    cursor = 0
    for b, length in enumerate(past_lens):
        cache.block_table[b, : needed[b]] = pool[cursor : cursor + needed[b]]
        cursor += needed[b]
        past_k = torch.randn(length, kv_heads, head_dim, generator=generator, dtype=dtype)
        past_v = torch.randn(length, kv_heads, head_dim, generator=generator, dtype=dtype)
        for t in range(length):
            page, offset = cache.slot(b, t)
            cache.k_cache[page, offset] = past_k[t]
            cache.v_cache[page, offset] = past_v[t]
        cache.past_k.append(past_k)
        cache.past_v.append(past_v)
    return cache


def check_append(
    past_lens: list[int],
    new_len: int,
    page_size: int,
    q_heads: int,
    kv_heads: int,
    head_dim: int,
    dtype: torch.dtype,
    causal: bool = True,
    seed: int = 0,
) -> None:
    """Call the stand-in as exllamav2's paged attention does and check output and cache writes."""
    generator = torch.Generator().manual_seed(seed)
    cache = build_paged(past_lens, new_len, page_size, kv_heads, head_dim, dtype, generator)
    batch = len(past_lens)
    q = torch.randn(batch, new_len, q_heads, head_dim, generator=generator, dtype=dtype)
    k = torch.randn(batch, new_len, kv_heads, head_dim, generator=generator, dtype=dtype)
    v = torch.randn(batch, new_len, kv_heads, head_dim, generator=generator, dtype=dtype)
    scale = head_dim**-0.5
    k_expected, v_expected = cache.expected_after_append(k, v)

    out = ea.flash_attn_with_kvcache(
        q=q,
        k=k,
        v=v,
        k_cache=cache.k_cache,
        v_cache=cache.v_cache,
        cache_seqlens=torch.tensor(past_lens, dtype=torch.int32),
        block_table=cache.block_table,
        causal=causal,
        softmax_scale=scale,
    )

    assert out.shape == q.shape and out.dtype == dtype and out.is_contiguous()
    tol = F64_TOL if dtype == torch.float64 else F32_TOL
    for b in range(batch):
        keys = torch.cat([cache.past_k[b], k[b]])
        values = torch.cat([cache.past_v[b], v[b]])
        assert_close(out[b], reference(q[b], keys, values, scale, causal), tol)
    exact = {"rtol": 0, "atol": 0, "equal_nan": True}
    torch.testing.assert_close(cache.k_cache, k_expected, **exact)
    torch.testing.assert_close(cache.v_cache, v_expected, **exact)


# flash_attn_with_kvcache: the paged path of exllamav2's dynamic generator


def test_single_sequence_decode() -> None:
    check_append(
        [37], new_len=1, page_size=16, q_heads=8, kv_heads=2, head_dim=64, dtype=torch.float64
    )


def test_batched_decode_with_shuffled_pages_at_qwen_shapes() -> None:
    """Four sequences of different lengths (one empty), 28 query / 4 KV heads, head_dim 128."""
    check_append(
        [0, 5, 16, 300],
        new_len=1,
        page_size=16,
        q_heads=28,
        kv_heads=4,
        head_dim=128,
        dtype=torch.float32,
    )


def test_multi_token_append_crosses_page_boundaries() -> None:
    check_append(
        [3, 16, 30], new_len=5, page_size=8, q_heads=6, kv_heads=3, head_dim=32, dtype=torch.float64
    )


def test_block_table_is_really_shuffled() -> None:
    """The fixture's pages are non-contiguous, so the tests above exercise the page lookup."""
    cache = build_paged([40, 40], 1, 8, 1, 4, torch.float64, torch.Generator().manual_seed(0))
    steps = cache.block_table[:, 1:] - cache.block_table[:, :-1]
    assert (steps != 1).any()


def test_tokens_already_in_cache_k_none() -> None:
    """exllamav2's sequential prefill copies the new K/V itself and passes k=None with
    cache_seqlens counting them; the cache must then be read, not written."""
    generator = torch.Generator().manual_seed(1)
    new_len, past_len = 6, 11
    cache = build_paged([past_len + new_len], 0, 8, 2, 16, torch.float64, generator)
    before = cache.k_cache.clone(), cache.v_cache.clone()
    q = torch.randn(1, new_len, 4, 16, generator=generator, dtype=torch.float64)

    out = ea.flash_attn_with_kvcache(
        q=q,
        k=None,
        v=None,
        k_cache=cache.k_cache,
        v_cache=cache.v_cache,
        cache_seqlens=torch.tensor([past_len + new_len], dtype=torch.int32),
        block_table=cache.block_table,
        causal=True,
        softmax_scale=0.3,
    )

    assert_close(out[0], reference(q[0], cache.past_k[0], cache.past_v[0], 0.3), F64_TOL)
    exact = {"rtol": 0, "atol": 0, "equal_nan": True}
    torch.testing.assert_close(cache.k_cache, before[0], **exact)
    torch.testing.assert_close(cache.v_cache, before[1], **exact)


def test_sequence_with_nothing_cached_gets_zeros() -> None:
    """k=None and cache_seqlens 0: no key to see (flash-attn gives zeros), even over NaN slots."""
    generator = torch.Generator().manual_seed(11)
    cache = build_paged([0, 5], 0, 4, 1, 8, torch.float64, generator)
    q = torch.randn(2, 1, 2, 8, generator=generator, dtype=torch.float64)

    out = ea.flash_attn_with_kvcache(
        q,
        cache.k_cache,
        cache.v_cache,
        cache_seqlens=torch.tensor([0, 5], dtype=torch.int32),
        block_table=cache.block_table,
        causal=True,
    )

    assert torch.equal(out[0], torch.zeros(1, 2, 8, dtype=torch.float64))
    assert_close(out[1], reference(q[1], cache.past_k[1], cache.past_v[1], 8**-0.5), F64_TOL)


def test_unpaged_cache_rows_without_block_table() -> None:
    """Without a block table the caches are [B, S, Hkv, D], one row per sequence."""
    generator = torch.Generator().manual_seed(2)
    k_cache = torch.full((2, 12, 1, 8), float("nan"), dtype=torch.float64)
    v_cache = torch.full((2, 12, 1, 8), float("nan"), dtype=torch.float64)
    k_cache[0, :4], v_cache[0, :4] = torch.randn(
        2, 4, 1, 8, generator=generator, dtype=torch.float64
    )
    k_cache[1, :7], v_cache[1, :7] = torch.randn(
        2, 7, 1, 8, generator=generator, dtype=torch.float64
    )
    q = torch.randn(2, 2, 3, 8, generator=generator, dtype=torch.float64)
    k, v = torch.randn(2, 2, 2, 1, 8, generator=generator, dtype=torch.float64)
    past = [
        (k_cache[0, :4].clone(), v_cache[0, :4].clone()),
        (k_cache[1, :7].clone(), v_cache[1, :7].clone()),
    ]

    out = ea.flash_attn_with_kvcache(
        q, k_cache, v_cache, k, v, cache_seqlens=torch.tensor([4, 7]), causal=True
    )

    for b, (past_k, past_v) in enumerate(past):
        keys, values = torch.cat([past_k, k[b]]), torch.cat([past_v, v[b]])
        assert_close(out[b], reference(q[b], keys, values, 8**-0.5), F64_TOL)
    assert torch.equal(k_cache[0, 4:6], k[0]) and torch.equal(k_cache[1, 7:9], k[1])
    assert k_cache[0, 6:].isnan().all() and k_cache[1, 9:].isnan().all()


def test_int_cache_seqlens_applies_to_every_sequence() -> None:
    generator = torch.Generator().manual_seed(3)
    cache = build_paged([9, 9], 1, 4, 1, 8, torch.float64, generator)
    q = torch.randn(2, 1, 2, 8, generator=generator, dtype=torch.float64)
    k, v = torch.randn(2, 2, 1, 1, 8, generator=generator, dtype=torch.float64)

    out = ea.flash_attn_with_kvcache(
        q,
        cache.k_cache,
        cache.v_cache,
        k,
        v,
        cache_seqlens=9,
        block_table=cache.block_table,
        causal=True,
    )

    for b in range(2):
        keys, values = torch.cat([cache.past_k[b], k[b]]), torch.cat([cache.past_v[b], v[b]])
        assert_close(out[b], reference(q[b], keys, values, 8**-0.5), F64_TOL)


@settings(max_examples=40, deadline=None, database=None)
@given(
    past_lens=st.lists(st.integers(0, 40), min_size=1, max_size=4),
    new_len=st.integers(1, 4),
    page_size=st.sampled_from([4, 8, 16]),
    kv_heads=st.integers(1, 2),
    group=st.sampled_from([1, 3, 7]),
    head_dim=st.sampled_from([8, 16]),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_paged_attention_matches_reference(
    past_lens: list[int],
    new_len: int,
    page_size: int,
    kv_heads: int,
    group: int,
    head_dim: int,
    causal: bool,
    seed: int,
) -> None:
    check_append(
        past_lens,
        new_len,
        page_size,
        kv_heads * group,
        kv_heads,
        head_dim,
        torch.float64,
        causal=causal,
        seed=seed,
    )


@pytest.fixture
def sdpa_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, ...]]]:
    """Records the query shape of every scaled_dot_product_attention call."""
    calls: list[tuple[int, ...]] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def counting(query: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(tuple(query.shape))
        return real(query, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    yield calls


def test_batched_decode_is_one_attention_call(sdpa_calls: list[tuple[int, ...]]) -> None:
    """Sixteen sequences of different lengths decode in a single SDPA call."""
    check_append(list(range(1, 161, 10)), 1, 16, 8, 2, 16, torch.float64)
    assert sdpa_calls == [(16, 2, 4, 16)]  # [batch, kv_heads, group * q_len, head_dim]


def test_long_masks_are_cut_into_query_slabs(
    monkeypatch: pytest.MonkeyPatch, sdpa_calls: list[tuple[int, ...]]
) -> None:
    """Past MAX_MASK_ELEMENTS the query rows go in slabs; the result does not change."""
    monkeypatch.setattr(ea, "MAX_MASK_ELEMENTS", 2 * 2 * 16)  # 2 rows of 2 heads x 16 keys
    check_append(
        [7], new_len=9, page_size=16, q_heads=4, kv_heads=2, head_dim=8, dtype=torch.float64
    )
    assert len(sdpa_calls) == 5  # 9 query rows, 2 per slab


# flash_attn_func: exllamav2's unpaged path


def test_flash_attn_func_causal_chunk_after_past() -> None:
    """As exllamav2 calls it with paged=False: k, v are the cache up to the new tokens."""
    generator = torch.Generator().manual_seed(4)
    q = torch.randn(2, 3, 28, 128, generator=generator)
    k = torch.randn(2, 10, 4, 128, generator=generator)
    v = torch.randn(2, 10, 4, 128, generator=generator)

    out = ea.flash_attn_func(q, k, v, causal=True, softmax_scale=128**-0.5)

    assert out.shape == q.shape and out.dtype == q.dtype and out.is_contiguous()
    for b in range(2):
        assert_close(out[b], reference(q[b], k[b], v[b], 128**-0.5), F32_TOL)


def test_flash_attn_func_not_causal_and_default_scale() -> None:
    generator = torch.Generator().manual_seed(5)
    q = torch.randn(1, 4, 6, 16, generator=generator, dtype=torch.float64)
    k, v = torch.randn(2, 1, 5, 3, 16, generator=generator, dtype=torch.float64)

    out = ea.flash_attn_func(q, k, v)

    assert_close(out[0], reference(q[0], k[0], v[0], 16**-0.5, causal=False), F64_TOL)


def test_rows_that_see_no_key_are_zero() -> None:
    """More queries than keys: flash-attn's bottom-right mask leaves the first rows empty."""
    generator = torch.Generator().manual_seed(6)
    q = torch.randn(1, 5, 2, 8, generator=generator, dtype=torch.float64)
    k, v = torch.randn(2, 1, 2, 2, 8, generator=generator, dtype=torch.float64)

    out = ea.flash_attn_func(q, k, v, causal=True)

    assert torch.equal(out[0, :3], torch.zeros(3, 2, 8, dtype=torch.float64))
    assert_close(out[0], reference(q[0], k[0], v[0], 8**-0.5), F64_TOL)


def test_causal_attention_decode_row_sees_everything() -> None:
    generator = torch.Generator().manual_seed(7)
    q = torch.randn(3, 1, 4, 8, generator=generator, dtype=torch.float64)
    k, v = torch.randn(2, 3, 9, 2, 8, generator=generator, dtype=torch.float64)

    out = ea.causal_attention(q, k, v, 0.5)

    for b in range(3):
        assert_close(out[b], reference(q[b], k[b], v[b], 0.5), F64_TOL)


# flash_attn_varlen_func: packed sequences


def packed(
    lengths: list[int], heads: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows [sum(lengths), heads, 8] float64, cu_seqlens int32)."""
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return torch.randn(sum(lengths), heads, 8, generator=generator, dtype=torch.float64), cu


def test_varlen_as_exllamav2_calls_it() -> None:
    """Seven positional arguments (block-diagonal vision layers): not causal, default scale."""
    generator = torch.Generator().manual_seed(8)
    lengths = [3, 1, 7, 4]
    q, cu = packed(lengths, 4, generator)
    k, _ = packed(lengths, 2, generator)
    v, _ = packed(lengths, 2, generator)

    out = ea.flash_attn_varlen_func(q, k, v, cu, cu, max(lengths), max(lengths))

    assert out.shape == q.shape and out.is_contiguous()
    for start, end in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        expected = reference(q[start:end], k[start:end], v[start:end], 8**-0.5, causal=False)
        assert_close(out[start:end], expected, F64_TOL)


def test_varlen_causal_with_longer_keys() -> None:
    generator = torch.Generator().manual_seed(9)
    q_lens, k_lens = [2, 1, 5], [4, 1, 5]
    q, cu_q = packed(q_lens, 6, generator)
    k, cu_k = packed(k_lens, 3, generator)
    v, _ = packed(k_lens, 3, generator)

    out = ea.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 5, 5, softmax_scale=0.2, causal=True)

    bounds = zip(
        cu_q[:-1].tolist(), cu_q[1:].tolist(), cu_k[:-1].tolist(), cu_k[1:].tolist(), strict=True
    )
    for q0, q1, k0, k1 in bounds:
        assert_close(out[q0:q1], reference(q[q0:q1], k[k0:k1], v[k0:k1], 0.2), F64_TOL)


def test_varlen_rejects_a_max_seqlen_that_drops_rows() -> None:
    generator = torch.Generator().manual_seed(10)
    q, cu = packed([2, 5], 2, generator)
    with pytest.raises(ValueError, match="cover 4 of 7"):
        ea.flash_attn_varlen_func(q, q, q, cu, cu, 2, 5)


# Options exllamav2 never passes


def call_with(function: str, **options: Any) -> object:
    """Call one of the three stand-ins on tiny valid inputs plus ``options``."""
    x = torch.zeros(1, 2, 2, 8)
    if function == "varlen":
        cu = torch.tensor([0, 2])
        return ea.flash_attn_varlen_func(x[0], x[0], x[0], cu, cu, 2, 2, **options)
    if function == "kvcache":
        return ea.flash_attn_with_kvcache(x, x, x, **options)
    return ea.flash_attn_func(x, x, x, **options)


UNSUPPORTED: list[tuple[str, dict[str, Any], str]] = [
    ("func", {"window_size": (4, 4)}, "window_size"),
    ("func", {"softcap": 30.0}, "softcap"),
    ("func", {"dropout_p": 0.1}, "dropout_p"),
    ("varlen", {"block_table": torch.zeros(1, 1)}, "block_table"),
    ("kvcache", {"cache_seqlens": 0, "rotary_cos": torch.zeros(1)}, "rotary_cos"),
    ("kvcache", {"cache_seqlens": 0, "cache_batch_idx": torch.zeros(1)}, "cache_batch_idx"),
    ("kvcache", {"cache_seqlens": 0, "window_size": (8, 8)}, "window_size"),
    ("kvcache", {"cache_seqlens": 0, "return_softmax_lse": True}, "return_softmax_lse"),
    ("kvcache", {}, "cache_seqlens is required"),
]


@pytest.mark.parametrize(
    ("function", "options", "message"), UNSUPPORTED, ids=[f"{f}-{m}" for f, _, m in UNSUPPORTED]
)
def test_unsupported_options_raise(function: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(NotImplementedError, match=message):
        call_with(function, **options)


def test_signatures_follow_flash_attn() -> None:
    """exllamav2 calls by these names (attn.py) and reads flash_attn_func's parameter names:
    window_size or softcap there would claim support this stand-in does not have."""
    func = list(inspect.signature(ea.flash_attn_func).parameters)
    assert func[:6] == ["q", "k", "v", "dropout_p", "softmax_scale", "causal"]
    assert "window_size" not in func and "softcap" not in func
    varlen = list(inspect.signature(ea.flash_attn_varlen_func).parameters)
    assert varlen[:7] == [
        "q",
        "k",
        "v",
        "cu_seqlens_q",
        "cu_seqlens_k",
        "max_seqlen_q",
        "max_seqlen_k",
    ]
    kvcache = inspect.signature(ea.flash_attn_with_kvcache).parameters
    used_by_exllamav2 = "q k v k_cache v_cache cache_seqlens block_table causal softmax_scale"
    assert set(used_by_exllamav2.split()) <= set(kvcache)


# install_flash_attn_shim


PROBED_MODULES = ("flash_attn", "flash_attn_2_cuda", "exllamav2.attn")


@pytest.fixture
def clean_modules() -> Iterator[None]:
    """sys.modules as if neither flash-attn nor exllamav2.attn had been imported; restored after.

    Only these entries are swapped (mock.patch.dict would clear all of sys.modules on exit,
    under any thread an earlier test left running).
    """
    saved = {name: sys.modules[name] for name in PROBED_MODULES if name in sys.modules}
    for name in PROBED_MODULES:
        sys.modules.pop(name, None)
    sys.modules["flash_attn"] = None  # type: ignore[assignment]  # "not importable", even where it is
    try:
        yield
    finally:
        for name in PROBED_MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


@pytest.mark.usefixtures("clean_modules")
def test_install_registers_the_stand_in() -> None:
    assert ea.install_flash_attn_shim() is True

    shim = sys.modules["flash_attn"]
    assert shim.__version__ == ea.SHIM_FLASH_ATTN_VERSION
    assert shim.flash_attn_with_kvcache is ea.flash_attn_with_kvcache
    assert shim.flash_attn_varlen_func is ea.flash_attn_varlen_func
    assert shim.flash_attn_func is ea.flash_attn_func
    assert isinstance(sys.modules["flash_attn_2_cuda"], types.ModuleType)
    # Probes such as transformers' (find_spec, then distribution metadata) neither crash
    # nor mistake the stand-in for an installed flash-attn.
    assert importlib.util.find_spec("flash_attn") is not None
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("flash_attn")
    assert ea.install_flash_attn_shim() is True
    assert sys.modules["flash_attn"] is shim


@pytest.mark.usefixtures("clean_modules")
def test_install_leaves_a_real_flash_attn_alone() -> None:
    real, cuda = types.ModuleType("flash_attn"), types.ModuleType("flash_attn_2_cuda")
    real.__version__ = "2.7.4"  # type: ignore[attr-defined]
    sys.modules.update({"flash_attn": real, "flash_attn_2_cuda": cuda})

    assert ea.install_flash_attn_shim() is False
    assert sys.modules["flash_attn"] is real and sys.modules["flash_attn_2_cuda"] is cuda


@pytest.mark.usefixtures("clean_modules")
def test_install_after_exllamav2_probed_raises() -> None:
    sys.modules["exllamav2.attn"] = types.ModuleType("exllamav2.attn")
    with pytest.raises(RuntimeError, match="before the first `import exllamav2`"):
        ea.install_flash_attn_shim()
    assert sys.modules["flash_attn"] is None


EXLLAMAV2_WITH_SHIM = """
import sys, types, torch
from qwend.backends.exllamav2 import attention as ea
installed = ea.install_flash_attn_shim()
from tests.fixtures.exllamav2_cpu import import_exllamav2
import_exllamav2()
import exllamav2.attn as attn
from exllamav2.generator import ExLlamaV2DynamicGenerator
attn.assert_paged_attn()  # what ExLlamaV2DynamicGenerator(paged=True) checks

layer = object.__new__(attn.ExLlamaV2Attention)
layer.layer_idx, layer.device_idx, layer.sliding_window = 0, None, 0
layer.num_attention_heads, layer.head_dim, layer.scaling = 28, 64, 64 ** -0.5
cfg = types.SimpleNamespace(attn_logit_softcapping=None)
g = torch.Generator().manual_seed(0)
q = torch.randn(1, 6, 28, 64, generator=g)
k = torch.randn(1, 11, 4, 64, generator=g)
v = torch.randn(1, 11, 4, 64, generator=g)
unpaged = layer._attn_flash(1, 6, q, k, v, attn.ExLlamaV2Attention.Params(1, 6, 5), cfg)
diag = attn.ExLlamaV2Attention.Params(1, 6, 0, non_causal_attn=True)
diag.block_diag_layers = {0}
diag.cu_seqlens = torch.tensor([0, 2, 6], dtype=torch.int32)
block_diag = layer._attn_flash(1, 6, q, k[:, :6], v[:, :6], diag, cfg)
torch.save({
    "installed": installed,
    "flags": [attn.has_flash_attn, attn.has_flash_attn_with_paged,
              attn.has_flash_attn_with_window, attn.has_flash_attn_with_softcap],
    "same_function": attn.flash_attn_with_kvcache is ea.flash_attn_with_kvcache,
    "q": q, "k": k, "v": v, "unpaged": unpaged, "block_diag": block_diag,
}, sys.argv[1])
"""


def test_exllamav2_detects_the_stand_in_and_its_flash_path_is_right(tmp_path: Path) -> None:
    """In a fresh interpreter (exllamav2 probes once per process): shim first, then exllamav2.

    exllamav2 must report paged flash attention without window/softcap support,
    and its own `_attn_flash` (the paged=False path with the stand-in) must give
    causal attention for a chunk after a past, and block-diagonal attention for
    vision layers.
    """
    if importlib.util.find_spec("exllamav2") is None:
        pytest.skip("exllamav2 is not installed (it comes with the `test` extra)")
    result_path = tmp_path / "result.pt"
    run = subprocess.run(
        [sys.executable, "-c", EXLLAMAV2_WITH_SHIM, str(result_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    result = torch.load(result_path)

    assert result["installed"] is True
    assert result["flags"] == [True, True, False, False]
    assert result["same_function"] is True
    q, k, v = result["q"][0], result["k"][0], result["v"][0]
    expected = reference(q, k, v, 64**-0.5).reshape(6, 28 * 64)
    assert_close(result["unpaged"][0], expected, F32_TOL)
    blocks = [
        reference(q[a:b], k[a:b], v[a:b], 64**-0.5, causal=False) for a, b in [(0, 2), (2, 6)]
    ]
    assert_close(result["block_diag"][0], torch.cat(blocks).reshape(6, 28 * 64), F32_TOL)


# patch_causal_prefill against exllamav2's own _attn_torch


@pytest.fixture
def exl2_attn(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """exllamav2.attn imported on the CPU; `_attn_torch` is restored after the test."""
    import_exllamav2()
    attn = sys.modules["exllamav2.attn"]
    monkeypatch.setattr(attn.ExLlamaV2Attention, "_attn_torch", attn.ExLlamaV2Attention._attn_torch)
    return attn


def make_layer(attn: types.ModuleType, q_heads: int, kv_heads: int, head_dim: int) -> Any:
    """An ExLlamaV2Attention with only what `_attn_torch` reads (no model, no weights)."""
    layer = object.__new__(attn.ExLlamaV2Attention)
    layer.layer_idx, layer.sliding_window = 0, 0
    layer.num_key_value_groups = q_heads // kv_heads
    layer.scaling = head_dim**-0.5
    return layer


def text_cfg(**changes: object) -> types.SimpleNamespace:
    return types.SimpleNamespace(**({"no_sdpa": False, "attn_logit_softcapping": None} | changes))


def prefill_inputs(q_len: int, past_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Qwen2.5-7B attention shapes: q [1, q_len, 28, 128], k, v [1, past + q_len, 4, 128]."""
    generator = torch.Generator().manual_seed(q_len * 100 + past_len)
    q = torch.randn(1, q_len, 28, 128, generator=generator)
    k = torch.randn(1, past_len + q_len, 4, 128, generator=generator)
    v = torch.randn(1, past_len + q_len, 4, 128, generator=generator)
    return q, k, v


def test_unpatched_exllamav2_prefill_is_not_causal(exl2_attn: types.ModuleType) -> None:
    """The bug: 0.3.2's SDPA branch attends a 6-token chunk after 5 cached tokens with no mask."""
    layer = make_layer(exl2_attn, 28, 4, 128)
    q, k, v = prefill_inputs(q_len=6, past_len=5)
    params = exl2_attn.ExLlamaV2Attention.Params(batch_size=1, seq_len=6, past_len=5)

    out = layer._attn_torch(1, 6, q, k, v, params, text_cfg()).reshape(6, 28, 128)

    non_causal = reference(q[0], k[0], v[0], layer.scaling, causal=False)
    causal = reference(q[0], k[0], v[0], layer.scaling)
    assert_close(out, non_causal, F32_TOL)
    assert (out.double() - causal).abs().max() > 0.1


@pytest.mark.parametrize(("q_len", "past_len"), [(6, 5), (9, 0), (1, 12)])
def test_patched_exllamav2_prefill_is_causal(
    exl2_attn: types.ModuleType, q_len: int, past_len: int
) -> None:
    layer = make_layer(exl2_attn, 28, 4, 128)
    q, k, v = prefill_inputs(q_len, past_len)
    params = exl2_attn.ExLlamaV2Attention.Params(batch_size=1, seq_len=q_len, past_len=past_len)

    assert ea.patch_causal_prefill() is True
    out = layer._attn_torch(1, q_len, q, k, v, params, text_cfg())

    assert out.shape == (1, q_len, 28 * 128)
    expected = reference(q[0], k[0], v[0], layer.scaling).reshape(q_len, 28 * 128)
    assert_close(out[0], expected, F32_TOL)


def test_patch_is_idempotent(exl2_attn: types.ModuleType) -> None:
    assert ea.patch_causal_prefill() is True
    patched = exl2_attn.ExLlamaV2Attention._attn_torch
    assert ea.patch_causal_prefill() is False
    assert exl2_attn.ExLlamaV2Attention._attn_torch is patched


def test_patch_keeps_the_original_for_non_causal_attention(exl2_attn: types.ModuleType) -> None:
    layer = make_layer(exl2_attn, 28, 4, 128)
    q, k, v = prefill_inputs(q_len=6, past_len=5)
    params = exl2_attn.ExLlamaV2Attention.Params(batch_size=1, seq_len=6, past_len=5)
    before = layer._attn_torch(1, 6, q, k, v, params, text_cfg(), False)

    ea.patch_causal_prefill()
    after = layer._attn_torch(1, 6, q, k, v, params, text_cfg(), False)

    assert torch.equal(before, after)


DELEGATED: dict[str, Callable[[Any, Any, dict[str, Any]], None]] = {
    "not causal": lambda layer, params, call: call.update(causal=False),
    "softcap": lambda layer, params, call: call.update(cfg=text_cfg(attn_logit_softcapping=30.0)),
    "sdpa disabled": lambda layer, params, call: call.update(cfg=text_cfg(no_sdpa=True)),
    "sliding window": lambda layer, params, call: setattr(layer, "sliding_window", 4096),
    "block-diagonal layer": lambda layer, params, call: setattr(params, "block_diag_layers", {0}),
    "vision params": lambda layer, params, call: setattr(params, "non_causal_attn", True),
    "padding mask": lambda layer, params, call: setattr(params, "input_mask", torch.zeros(1, 11)),
}


@pytest.mark.parametrize("case", list(DELEGATED))
def test_patch_delegates_what_it_does_not_fix(
    exl2_attn: types.ModuleType, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    calls: list[bool] = []

    def original(self: Any, *args: Any) -> str:
        calls.append(True)
        return "original"

    monkeypatch.setattr(exl2_attn.ExLlamaV2Attention, "_attn_torch", original)
    ea.patch_causal_prefill()
    layer = make_layer(exl2_attn, 28, 4, 128)
    q, k, v = prefill_inputs(q_len=3, past_len=2)
    params = exl2_attn.ExLlamaV2Attention.Params(batch_size=1, seq_len=3, past_len=2)
    call: dict[str, Any] = {"cfg": text_cfg(), "causal": True}
    layer._attn_torch(1, 3, q, k, v, params, call["cfg"], call["causal"])
    assert calls == []  # the plain causal case is the patch's own

    DELEGATED[case](layer, params, call)
    assert layer._attn_torch(1, 3, q, k, v, params, call["cfg"], call["causal"]) == "original"
    assert calls == [True]


def test_patch_delegates_without_lower_right_sdpa(
    exl2_attn: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """exllamav2 then takes its matmul branch, which builds a correct causal mask."""
    monkeypatch.setattr(exl2_attn, "has_lower_right_sdpa", False)
    monkeypatch.setattr(exl2_attn.ExLlamaV2Attention, "_attn_torch", lambda *args: "original")
    ea.patch_causal_prefill()
    layer = make_layer(exl2_attn, 28, 4, 128)
    q, k, v = prefill_inputs(q_len=3, past_len=2)
    params = exl2_attn.ExLlamaV2Attention.Params(batch_size=1, seq_len=3, past_len=2)
    assert layer._attn_torch(1, 3, q, k, v, params, text_cfg()) == "original"
