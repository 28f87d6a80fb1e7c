"""Engine: turn a stream of token ids into a stream of text, honouring stops.

Two small pieces, both pure so they are tested without a model:

- IncrementalDecoder emits text only once it is final (a token that ends in
  the middle of a UTF-8 character, or that merges with the next one, is held).
- StopMatcher cuts the text at the first stop string, holding back any tail
  that could still become one, so a client never sees half a stop string.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

REPLACEMENT_CHAR = "\ufffd"  # what a decoder prints for an incomplete UTF-8 sequence


class IncrementalDecoder:
    """Decode a growing id list with a sliding window, as TGI and vLLM do."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_id: int) -> str:
        """Add one token; return the text that became final (maybe empty)."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) > len(prefix) and not full.endswith(REPLACEMENT_CHAR):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return full[len(prefix) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held at the end of generation."""
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return full[len(prefix) :]


class StopMatcher:
    """Find the first stop string across chunk boundaries."""

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = tuple(s for s in dict.fromkeys(stops) if s)
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Feed new text; return what is safe to emit. Sets ``stopped`` on a hit.

        A stop found at ``cut`` is final only if no longer stop could still
        begin before it; otherwise the text from that earlier start is held,
        so the answer never depends on how the text was split into tokens.
        """
        if self.stopped:
            return ""
        pending = self._held + text
        cut = self._first_stop(pending)
        hold_from = self._earliest_partial_stop(pending, before=len(pending) if cut < 0 else cut)
        if cut >= 0 and hold_from is None:
            self.stopped = True
            self._held = ""
            return pending[:cut]
        keep = len(pending) if hold_from is None else hold_from
        self._held = pending[keep:]
        return pending[:keep]

    def flush(self) -> str:
        """Release held text when generation ends for another reason."""
        held, self._held = self._held, ""
        if self.stopped:
            return ""
        cut = self._first_stop(held)
        if cut >= 0:
            self.stopped = True
            return held[:cut]
        return held

    def _first_stop(self, text: str) -> int:
        return min((i for i in (text.find(s) for s in self._stops) if i >= 0), default=-1)

    def _earliest_partial_stop(self, text: str, before: int) -> int | None:
        """Earliest start < ``before`` whose remaining text is a proper prefix of a stop."""
        longest = max((len(s) for s in self._stops), default=0)
        for start in range(max(0, len(text) - longest + 1), min(before, len(text))):
            tail = text[start:]
            if any(len(s) > len(tail) and s.startswith(tail) for s in self._stops):
                return start
        return None


def trim_repeated_suffix(text: str, suffix: str) -> str:
    """Drop the end of a completion that repeats the start of the text after the cursor."""
    for size in range(min(len(text), len(suffix)), 0, -1):
        head = suffix[:size]
        if head.strip() and text.endswith(head):
            return text[: len(text) - size]
    return text
