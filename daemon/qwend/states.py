"""Protocol: the model's states, the one list every part of qwend reads.

The engine sets them, the socket reports them (/health, /v1/status, /metrics),
`qwend status` maps them to exit codes, and the language server shows them.
Standard library only: `qwend status` imports this without pydantic or torch.
"""

from __future__ import annotations

import enum
from typing import Final


class ModelState(enum.Enum):
    UNLOADED = "unloaded"  # no model in memory (preload off, or after a failed swap's unload)
    LOADING = "loading"
    READY = "ready"
    SWAPPING = "swapping"  # the old model serves while the new one loads
    FAILED = "failed"


ALL_STATES: Final = tuple(state.value for state in ModelState)
# States in which requests are answered: /health says 200 and clients send work.
SERVING_STATES: Final = frozenset({ModelState.READY.value, ModelState.SWAPPING.value})
# States that end by themselves: a client waits instead of giving up.
TRANSIENT_STATES: Final = frozenset({ModelState.LOADING.value, ModelState.SWAPPING.value})
# `qwend status` exit codes: 0 serving, 1 failed, 3 not serving yet (2 is "unreachable").
STATUS_EXIT_CODES: Final = {
    ModelState.READY.value: 0,
    ModelState.SWAPPING.value: 0,
    ModelState.FAILED.value: 1,
    ModelState.LOADING.value: 3,
    ModelState.UNLOADED.value: 3,
}
