"""Engine: flash-attn's attention calls in plain torch, and a causal fix, for exllamav2 0.3.2.

Why this exists. The project's GPU machines have no flash-attn (no wheel for
torch 2.11 + CUDA 13). exllamav2's dynamic generator pages its KV cache, and so
batches requests and shares prompt prefixes, only when ``import flash_attn``
gives version 2.5.7 or later and ``import flash_attn_2_cuda`` succeeds; without
it the generator must run ``paged=False``, one request at a time. And 0.3.2's
own non-flash path runs multi-token prefill without a causal mask.

What is here:

* ``flash_attn_with_kvcache``, ``flash_attn_varlen_func`` and ``flash_attn_func``:
  the three calls exllamav2 makes, with flash-attn 2.8's argument names and
  positions, layouts and return values, computed with
  ``F.scaled_dot_product_attention``. Options exllamav2 never passes raise
  NotImplementedError instead of being ignored.
* ``install_flash_attn_shim()`` registers them as a module ``flash_attn`` (plus
  an empty ``flash_attn_2_cuda``) when no real flash-attn imports. exllamav2
  probes once, when ``exllamav2.attn`` is first imported, so this must run
  before the first ``import exllamav2``.
* ``patch_causal_prefill()`` fixes ``ExLlamaV2Attention._attn_torch``;
  ``causal_attention()`` is its math, pure and testable without exllamav2.

Layout everywhere is flash-attn's: [batch, seqlen, heads, head_dim]. A paged
cache is [num_pages, page_size, kv_heads, head_dim], addressed through a block
table [batch, pages_per_sequence] of page ids. With grouped-query attention,
query head h reads key/value head h // (q_heads // kv_heads), as in flash-attn
and exllamav2. Causal masks are aligned bottom-right: the last query row sees
the last key, which is what a chunk of new tokens after a cached past needs.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import logging
import sys
import types
from typing import Any, Final

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

SHIM_FLASH_ATTN_VERSION: Final = "2.8.3"
"""The version the stand-in reports. exllamav2 turns on paged attention from
2.5.7; 2.8.3 is the flash-attn TabbyAPI last shipped beside exllamav2 0.3.x."""

MAX_MASK_ELEMENTS: Final = 1 << 27
"""Largest boolean mask handed to one SDPA call (128 MiB; a fused kernel turns
it into a bias of the query's dtype). Decode never comes near it; a 2,048-token
prefill chunk over a 32k context with 7 query heads per KV head would need 470M
elements, so longer calls are cut into slabs of query rows."""

SHIM_MARKER: Final = "__qwend_flash_attn_shim__"
"""Attribute set on the stand-in ``flash_attn`` module, so a second install and
tests can tell it from a real flash-attn."""

_PATCH_MARKER: Final = "__qwend_causal_prefill_patch__"


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None
) -> torch.Tensor:
    """Causal attention of q [B, Sq, Hq, D] over k, v [B, Sk, Hkv, D]; returns [B, Sq, Hq, D].

    The mask is bottom-right aligned: query row i sees keys j <= i + Sk - Sq,
    so a chunk of Sq new tokens sees the whole cached past and itself causally.
    A single query row sees every key, so decode needs no mask at all. Rows
    that see no key (only when Sq > Sk) come out as zeros, as in flash-attn.
    """
    q_len, kv_len = q.shape[1], k.shape[1]
    if q_len == 1:
        return _attend(q, k, v, None, scale)
    kv_lens = torch.full((1,), kv_len, dtype=torch.long, device=q.device)
    return _attend(q, k, v, _visible(q_len, kv_len, kv_lens, None, causal=True), scale)


def flash_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    **unsupported: object,
) -> torch.Tensor:
    """flash-attn's dense attention: q [B, Sq, Hq, D], k, v [B, Sk, Hkv, D] -> [B, Sq, Hq, D].

    exllamav2 calls it for unpaged attention (``paged=False``), with k and v
    being the cache up to and including the new tokens, ``causal=True`` and
    ``softmax_scale``. ``window_size`` and ``softcap`` are deliberately not
    named parameters: exllamav2 reads this function's parameter names to decide
    whether flash-attn handles sliding windows and logit softcapping; with
    them absent, ``ExLlamaV2Config.arch_compat_overrides()`` turns flash-attn
    off for such models instead of exllamav2 passing options this stand-in
    does not implement. They and every other flash-attn option raise
    NotImplementedError.
    """
    _refuse("flash_attn_func", unsupported, dropout_p=dropout_p or None)
    if causal:
        return causal_attention(q, k, v, softmax_scale)
    return _attend(q, k, v, None, softmax_scale)


def flash_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    **unsupported: object,
) -> torch.Tensor:
    """flash-attn's packed attention: q [Tq, Hq, D], k, v [Tk, Hkv, D] -> [Tq, Hq, D].

    Tq and Tk are the total tokens of all sequences; sequence b owns rows
    cu_seqlens[b]:cu_seqlens[b + 1] of each tensor and
    attends only within itself (bottom-right causal when ``causal``). exllamav2
    calls it positionally with the first seven arguments, for the
    block-diagonal layers of vision encoders (so not causal, default scale).
    All sequences run in one SDPA call, padded to the longest with a mask.

    Raises ValueError if cu_seqlens_q and max_seqlen_q do not cover q.
    """
    _refuse("flash_attn_varlen_func", unsupported, dropout_p=dropout_p or None)
    device = q.device
    starts_q, lens_q = _segments(cu_seqlens_q, device)
    starts_k, lens_k = _segments(cu_seqlens_k, device)
    rows_q = torch.arange(max_seqlen_q, device=device)
    rows_k = torch.arange(max_seqlen_k, device=device)
    # Padding rows read a clamped real row; the mask or the final selection drops them.
    index_q = (starts_q[:, None] + rows_q).clamp(max=max(q.shape[0] - 1, 0))
    index_k = (starts_k[:, None] + rows_k).clamp(max=max(k.shape[0] - 1, 0))
    allowed = _visible(max_seqlen_q, max_seqlen_k, lens_k, lens_q, causal)
    padded = _attend(q[index_q], k[index_k], v[index_k], allowed, softmax_scale)
    out = padded[rows_q[None, :] < lens_q[:, None]]
    if out.shape[0] != q.shape[0]:
        raise ValueError(
            f"cu_seqlens_q and max_seqlen_q={max_seqlen_q} cover {out.shape[0]} of "
            f"{q.shape[0]} query rows"
        )
    return out


def flash_attn_with_kvcache(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k: torch.Tensor | None = None,
    v: torch.Tensor | None = None,
    rotary_cos: torch.Tensor | None = None,
    rotary_sin: torch.Tensor | None = None,
    cache_seqlens: int | torch.Tensor | None = None,
    cache_batch_idx: torch.Tensor | None = None,
    cache_leftpad: torch.Tensor | None = None,
    block_table: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    causal: bool = False,
    **unsupported: object,
) -> torch.Tensor:
    """flash-attn's attention over a (paged) KV cache; q [B, Sq, Hq, D] -> [B, Sq, Hq, D].

    With ``block_table`` [B, W] the caches are [num_pages, page_size, Hkv, D]
    and sequence b's token t lives at page block_table[b, t // page_size], slot
    t % page_size; without it they are [B, S, Hkv, D], one row per sequence.
    ``cache_seqlens`` [B] (or an int for all) counts the tokens already cached.

    If k and v [B, Snew, Hkv, D] are given they are first written, in place,
    at positions cache_seqlens .. cache_seqlens + Snew - 1 of each sequence;
    nothing else in the caches changes. Each query then attends to its
    sequence's first cache_seqlens (+ Snew) tokens, bottom-right causal if
    ``causal``. exllamav2 passes k=None when it has already copied the new
    tokens into the cache, with cache_seqlens counting them.

    Every sequence's tokens are gathered into one padded batch, as wide as
    the block table, and attended in a single SDPA call, so a decode step
    costs one call whatever the batch. Positions past a sequence's length are
    masked, and gathered from the sequence's first slot rather than from
    where they point: flash-attn never reads those slots, so they may hold
    anything (an earlier job's values, inf from an overflowed step), and a
    masked NaN still poisons the softmax. A sequence with no tokens at all
    gets zeros.
    """
    _refuse(
        "flash_attn_with_kvcache",
        unsupported,
        rotary_cos=rotary_cos,
        rotary_sin=rotary_sin,
        cache_batch_idx=cache_batch_idx,
        cache_leftpad=cache_leftpad,
    )
    if cache_seqlens is None:
        raise NotImplementedError(
            "flash_attn_with_kvcache stand-in: cache_seqlens is required "
            "(exllamav2 always passes it)"
        )
    if (k is None) != (v is None):
        raise ValueError("flash_attn_with_kvcache: pass both k and v, or neither")
    batch, q_len = q.shape[0], q.shape[1]
    device = k_cache.device
    if isinstance(cache_seqlens, int):
        seqlens = torch.full((batch,), cache_seqlens, dtype=torch.long, device=device)
    else:
        seqlens = cache_seqlens.to(device=device, dtype=torch.long)
    if block_table is None:
        pages = torch.arange(batch, device=device)[:, None]  # a whole cache row is one "page"
    else:
        pages = block_table.to(device=device, dtype=torch.long)
    page_size = k_cache.shape[1]

    if k is not None and v is not None:
        positions = seqlens[:, None] + torch.arange(k.shape[1], device=device)
        slot = (
            pages.gather(1, positions // page_size).flatten(),
            (positions % page_size).flatten(),
        )
        k_cache.index_put_(slot, k.reshape(-1, *k.shape[2:]))
        v_cache.index_put_(slot, v.reshape(-1, *v.shape[2:]))
        seqlens = seqlens + k.shape[1]

    # One row index per (sequence, position) into the caches seen as [pages * page_size, Hkv, D].
    width = pages.shape[1] * page_size
    cols = torch.arange(width, device=device)
    rows = pages.gather(1, (cols // page_size).expand(batch, -1)) * page_size + cols % page_size
    rows = torch.where(cols < seqlens[:, None], rows, pages[:, :1] * page_size)
    keys, values = _gather(k_cache, rows), _gather(v_cache, rows)
    allowed = _visible(q_len, width, seqlens, None, causal)
    return _attend(q, keys, values, allowed, softmax_scale)


def install_flash_attn_shim() -> bool:
    """Make ``import flash_attn`` give this module's stand-ins, unless a real flash-attn imports.

    Returns True when the stand-in is what exllamav2 will find (installed now
    or by an earlier call), False when a real flash-attn and its
    ``flash_attn_2_cuda`` import and were left alone. A flash-attn that is
    installed but fails to import (a wheel built for another torch) counts as
    absent: exllamav2 would crash on it rather than fall back.

    exllamav2 probes when ``exllamav2.attn`` is first imported and copies the
    results into module globals (``has_flash_attn``,
    ``has_flash_attn_with_paged``, also imported by name into
    ``exllamav2.model``), so installing afterwards cannot take effect.

    Raises RuntimeError if ``exllamav2.attn`` was imported before this call and
    no flash-attn was there to find.
    """
    current = sys.modules.get("flash_attn")
    if current is not None and getattr(current, SHIM_MARKER, False):
        return True
    reason = _real_flash_attn_missing()
    if reason is None:
        return False
    if "exllamav2.attn" in sys.modules:
        raise RuntimeError(
            "install_flash_attn_shim() must run before the first `import exllamav2`: "
            "exllamav2.attn has already probed for flash-attn and found none"
        )
    sys.modules["flash_attn"] = _shim_module()
    sys.modules["flash_attn_2_cuda"] = _module("flash_attn_2_cuda")
    log.info("flash-attn not importable (%s); using the torch stand-in", reason)
    return True


def patch_causal_prefill() -> bool:
    """Give exllamav2's non-flash attention a causal mask for multi-token prefill.

    In exllamav2 0.3.2 the SDPA branch of ``ExLlamaV2Attention._attn_torch``
    tests ``layer_idx in block_diag_layers or causal`` and then uses the
    block-diagonal mask, which is None for text models: prefill runs with no
    mask at all (turboderp-org/exllamav2#793). The replacement takes the
    plain case (SDPA available and enabled, causal text layer, no softcap, no
    sliding window, no padding mask) with ``causal_attention`` and calls the
    original for everything else. A padding mask (``input_mask``, batched
    prompts of the older generators) is left as 0.3.2 has it, also ignored;
    the dynamic generator never sets one.

    Imports ``exllamav2.attn`` if needed, so call ``install_flash_attn_shim()``
    first. Returns True if it patched now, False if the patch was in place.
    """
    attention = importlib.import_module("exllamav2.attn")
    cls: Any = attention.ExLlamaV2Attention
    original = cls._attn_torch
    if getattr(original, _PATCH_MARKER, False):
        return False

    @functools.wraps(original)
    def _attn_torch(
        self: Any,
        batch_size: int,
        q_len: int,
        q_states: torch.Tensor,
        k_states: torch.Tensor,
        v_states: torch.Tensor,
        attn_params: Any,
        cfg: Any,
        causal: bool = True,
    ) -> Any:
        plain = (
            causal
            and attention.has_lower_right_sdpa
            and not cfg.no_sdpa
            and not cfg.attn_logit_softcapping
            and not self.sliding_window
            and self.layer_idx not in attn_params.block_diag_layers
            and not getattr(attn_params, "non_causal_attn", False)
            and getattr(attn_params, "input_mask", None) is None
        )
        if not plain:
            return original(
                self, batch_size, q_len, q_states, k_states, v_states, attn_params, cfg, causal
            )
        out = causal_attention(q_states, k_states, v_states, self.scaling)
        return out.reshape(batch_size, q_len, -1)

    setattr(_attn_torch, _PATCH_MARKER, True)
    cls._attn_torch = _attn_torch
    return True


def _attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    allowed: torch.Tensor | None,
    scale: float | None,
) -> torch.Tensor:
    """Attention of q [B, Sq, Hq, D] over k, v [B, Sk, Hkv, D] where ``allowed`` [B|1, Sq, Sk] says.

    None means every key is visible. Grouped-query attention runs without
    copying K/V: the Hq // Hkv query heads that share a KV head are folded into
    the query-row axis, so SDPA sees [B, Hkv, G * Sq, D] against
    [B, Hkv, Sk, D], with each mask row repeated G times. That works with every
    SDPA kernel that takes a mask, whether or not it supports ``enable_gqa``.
    Returns a contiguous [B, Sq, Hq, D] (exllamav2 calls ``.view`` on it).
    """
    batch, q_len, q_heads, head_dim = q.shape
    kv_len, kv_heads = k.shape[1], k.shape[2]
    if q_heads % kv_heads:
        raise ValueError(f"{q_heads} query heads do not divide into {kv_heads} KV heads")
    group = q_heads // kv_heads
    if allowed is not None:
        rows = max(1, MAX_MASK_ELEMENTS // max(1, batch * group * kv_len))
        if q_len > rows:
            slabs = [
                _attend(q[:, s : s + rows], k, v, allowed[:, s : s + rows], scale)
                for s in range(0, q_len, rows)
            ]
            return torch.cat(slabs, dim=1)

    folded = q.reshape(batch, q_len, kv_heads, group, head_dim).permute(0, 2, 3, 1, 4)
    folded = folded.reshape(batch, kv_heads, group * q_len, head_dim)
    mask = None
    if allowed is not None:
        mask_batch = allowed.shape[0]
        mask = allowed[:, None, None].expand(mask_batch, 1, group, q_len, kv_len)
        mask = mask.reshape(mask_batch, 1, group * q_len, kv_len)
    out = F.scaled_dot_product_attention(
        folded, k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=scale
    )
    out = out.reshape(batch, kv_heads, group, q_len, head_dim).permute(0, 3, 1, 2, 4)
    out = out.reshape(batch, q_len, q_heads, head_dim)
    if allowed is not None:
        out = out.masked_fill(~allowed.any(dim=-1)[:, :, None, None], 0)
    return out.contiguous()


def _visible(
    q_width: int,
    k_width: int,
    kv_lens: torch.Tensor,
    q_lens: torch.Tensor | None,
    causal: bool,
) -> torch.Tensor:
    """[B, q_width, k_width] bool: which keys each query row of each sequence sees.

    Key j is visible to query i of sequence b when j < kv_lens[b] and, if
    causal, j <= i + kv_lens[b] - q_lens[b] (bottom-right aligned; q_lens
    defaults to q_width for every sequence).
    """
    device = kv_lens.device
    rows = torch.arange(q_width, device=device)[None, :, None]
    cols = torch.arange(k_width, device=device)[None, None, :]
    lens = kv_lens[:, None, None]
    allowed = cols < lens
    if causal:
        offset = lens - (q_width if q_lens is None else q_lens[:, None, None])
        allowed = allowed & (cols <= rows + offset)
    return allowed


def _gather(cache: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """cache [pages, page_size, H, D] read at flat row indices rows [B, W]: [B, W, H, D].

    Flattening is a view for the contiguous caches exllamav2 allocates (and a
    read-only copy otherwise, still correct).
    """
    flat = cache.flatten(0, 1)
    return flat.index_select(0, rows.flatten()).view(*rows.shape, *cache.shape[2:])


def _segments(cu_seqlens: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(starts, lengths) of the sequences a cumulative-lengths tensor [B + 1] describes."""
    cu = cu_seqlens.to(device=device, dtype=torch.long)
    return cu[:-1], cu[1:] - cu[:-1]


def _refuse(function: str, unsupported: dict[str, object], **options: object) -> None:
    """Raise NotImplementedError naming every option given that the stand-in does not implement.

    ``options`` are named parameters that must be None; ``unsupported`` holds
    the other flash-attn options a caller passed by keyword.
    """
    named = [name for name, value in options.items() if value is not None]
    if named or unsupported:
        raise NotImplementedError(
            f"qwend's torch stand-in for flash-attn does not implement "
            f"{', '.join(named + sorted(unsupported))} in {function} "
            "(exllamav2 0.3.2 never passes them)"
        )


def _real_flash_attn_missing() -> str | None:
    """Why a real flash-attn cannot be used (import error text), or None if it imports."""
    try:
        importlib.import_module("flash_attn")
        importlib.import_module("flash_attn_2_cuda")
    except (ImportError, OSError) as error:
        return str(error) or type(error).__name__
    return None


def _module(name: str) -> types.ModuleType:
    """An empty module with a spec, so ``importlib.util.find_spec(name)`` works on it.

    Without a spec, find_spec raises ValueError for a module in sys.modules;
    transformers probes flash-attn that way. The spec has no loader and no
    distribution metadata exists, so such probes see no installed package.
    """
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
    return module


def _shim_module() -> types.ModuleType:
    module = _module("flash_attn")
    module.__doc__ = "qwend's torch stand-in for flash-attn (qwend.backends.exllamav2.attention)."
    attributes = {
        "__version__": SHIM_FLASH_ATTN_VERSION,
        "flash_attn_func": flash_attn_func,
        "flash_attn_varlen_func": flash_attn_varlen_func,
        "flash_attn_with_kvcache": flash_attn_with_kvcache,
        SHIM_MARKER: True,
    }
    for name, value in attributes.items():
        setattr(module, name, value)
    return module
