"""Engine: the limits exllamav2 puts on a model profile, checked when the config loads.

Kept here, beside the backend they come from, and read by the config
validator, so a profile that exllamav2 would reject at load time is refused
when the file is read instead, naming the key. Standard library only: the
config loads on machines without exllamav2 or torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from qwend.config.schema import ModelProfile

EXL2_PAGE_TOKENS: Final = (
    256  # exllamav2's dynamic generator allocates its cache in pages of this size
)
EXL2_QUERY_TOKENS: Final = 8  # tokens per job in one exllamav2 forward (its max_q_size)
# Profile keys only the exllamav2 backend reads (docs/gpu.md); another backend refuses them.
GPU_ONLY_KEYS: Final = (
    "cache_type",
    "cache_tokens",
    "max_batch_size",
    "paged_attention",
    "prefill_chunk_tokens",
)


def profile_problem(profile: ModelProfile) -> tuple[str, str] | None:
    """The first key of an exllamav2 profile that exllamav2 cannot run, and why."""
    for key in ("cache_tokens", "prefill_chunk_tokens"):
        value = getattr(profile, key)
        if value % EXL2_PAGE_TOKENS:
            return key, f"{value} is not a multiple of the cache page, {EXL2_PAGE_TOKENS}"
    if profile.max_batch_size * EXL2_QUERY_TOKENS > profile.prefill_chunk_tokens:
        return (
            "max_batch_size",
            f"{profile.max_batch_size} slots x {EXL2_QUERY_TOKENS} tokens is more than "
            f"prefill_chunk_tokens ({profile.prefill_chunk_tokens}), exllamav2's forward size",
        )
    if profile.cache_tokens and profile.cache_tokens < profile.context_length:
        return (
            "cache_tokens",
            f"{profile.cache_tokens} cannot hold one request of context_length "
            f"{profile.context_length}",
        )
    return None
