"""Engine: exact token counts for a remote profile, so budgets stay exact.

The engine's model runs elsewhere, but qwend fits every prompt to the context
window before sending it. The profile names where the counts come from:

- a tokenizer.json (by default the one `qwend pull NAME` put in the profile's
  cache folder): counted here, in microseconds, with the same ``tokenizers``
  library the engines use;
- ``"engine"``: the engine's own tokenize endpoint, one round trip per count
  (exact by construction, slower when a long file must be cut line by line);
- ``"none"``: no exact counts; budgets then fail unless
  ``budget.estimate_without_tokenizer`` allows the estimate.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from qwend.backends.remote.limits import TOKENIZER_ENGINE, TOKENIZER_NONE
from qwend.errors import BackendUnavailable, ModelMissing

if TYPE_CHECKING:
    from qwend.backends.remote.client import EngineClient

TOKENIZER_FILE = "tokenizer.json"


class Counter(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids: list[int]) -> str: ...

    def describe(self) -> str: ...


def tokenizer_file(setting: str, profile_folder: Path) -> Path | None:
    """The local tokenizer.json a profile counts with; None for "engine" and "none"."""
    if setting in (TOKENIZER_ENGINE, TOKENIZER_NONE):
        return None
    path = Path(setting).expanduser() if setting else profile_folder
    return path / TOKENIZER_FILE if path.is_dir() or not setting else path


def require_tokenizer(setting: str, profile_folder: Path, profile_name: str) -> None:
    """Raise ModelMissing if the profile's local tokenizer.json is absent."""
    path = tokenizer_file(setting, profile_folder)
    if path is None or path.is_file():
        return
    hint = (
        f"run: qwend pull {profile_name}"
        if not setting
        else "point the profile's tokenizer at the model's tokenizer.json (docs/remote.md)"
    )
    raise ModelMissing(f"the tokenizer of model '{profile_name}' is not at {path}", hint=hint)


class LocalTokenizer:
    """A tokenizer.json read with the ``tokenizers`` library (thread-safe for reads)."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self.path = path
        try:
            self._tokenizer: Any = Tokenizer.from_file(str(path))
        except Exception as exc:  # the library raises its own exception type
            raise BackendUnavailable(f"cannot read the tokenizer {path}: {exc}") from None

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        encoded = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        return [list(item.ids) for item in encoded]

    def decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=False))

    def describe(self) -> str:
        return str(self.path)


class EngineTokenizer:
    """Counts from the engine's tokenize endpoint (one request per string)."""

    def __init__(self, client: EngineClient) -> None:
        self._client = client

    def encode(self, text: str) -> list[int]:
        return self._client.tokenize(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self._client.tokenize(text) for text in texts]

    def decode(self, ids: list[int]) -> str:
        raise BackendUnavailable("a remote profile counting with the engine decodes nothing here")

    def describe(self) -> str:
        return "engine"
