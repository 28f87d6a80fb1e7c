"""StopMatcher and IncrementalDecoder: pure text plumbing between model and client."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from qwend.engine.decoding import REPLACEMENT_CHAR, IncrementalDecoder, StopMatcher

PROPERTY = settings(database=None, deadline=None, max_examples=300)


def run_matcher(stops: list[str], chunks: list[str]) -> tuple[list[str], str, StopMatcher]:
    """Push every chunk, then flush; return the per-push outputs, the flush, the matcher."""
    matcher = StopMatcher(stops)
    outputs = [matcher.push(chunk) for chunk in chunks]
    return outputs, matcher.flush(), matcher


def cut_at_first_stop(text: str, stops: list[str]) -> str:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[: min(hits)] if hits else text


# -- StopMatcher -----------------------------------------------------------------


def test_stop_within_one_chunk() -> None:
    outputs, tail, matcher = run_matcher(["STOP"], ["hello STOP world"])
    assert outputs == ["hello "]
    assert matcher.stopped
    assert tail == ""


def test_stop_at_start_of_text_emits_nothing() -> None:
    outputs, tail, matcher = run_matcher(["<|im_end|>"], ["<|im_end|>trailing"])
    assert outputs == [""]
    assert matcher.stopped
    assert tail == ""


def test_stop_across_chunk_boundaries() -> None:
    outputs, tail, matcher = run_matcher(["<|im_end|>"], ["answer<|im", "_e", "nd|>junk"])
    assert outputs == ["answer", "", ""]
    assert matcher.stopped
    assert tail == ""


def test_stop_split_one_character_per_chunk() -> None:
    outputs, _, matcher = run_matcher(["END"], list("abENcEND"))
    # "EN" is held back until "c" proves it is not a stop, then released.
    assert outputs == ["a", "b", "", "", "ENc", "", "", ""]
    assert "".join(outputs) == "abENc"
    assert matcher.stopped


def test_partial_stop_is_held_back_then_released_on_flush() -> None:
    matcher = StopMatcher(["<|im_end|>"])
    assert matcher.push("done <|im") == "done "
    assert not matcher.stopped
    assert matcher.flush() == "<|im"
    assert matcher.flush() == ""  # flushed once only


def test_partial_stop_released_when_it_turns_out_not_to_be_one() -> None:
    matcher = StopMatcher(["<|im_end|>"])
    assert matcher.push("x <|im") == "x "
    assert matcher.push("perfect") == "<|imperfect"
    assert not matcher.stopped
    assert matcher.flush() == ""


def test_longest_partial_is_held_for_self_overlapping_stop() -> None:
    # "aab" starts with "aa": after "aaa" the last two could still begin it.
    outputs, _, matcher = run_matcher(["aab"], ["aa", "a", "b"])
    assert outputs == ["", "a", ""]
    assert matcher.stopped


def test_multiple_stops_earliest_wins_in_one_chunk() -> None:
    outputs, _, matcher = run_matcher(["world", "lo"], ["hello world"])
    assert outputs == ["hel"]
    assert matcher.stopped


def test_multiple_stops_earliest_wins_regardless_of_order() -> None:
    for stops in (["b", "a"], ["a", "b"]):
        assert run_matcher(stops, ["xxbxa"])[0] == ["xx"]
        assert run_matcher(stops, ["xxaxb"])[0] == ["xx"]


def test_multiple_stops_when_one_is_a_suffix_of_another() -> None:
    outputs, _, matcher = run_matcher(["abc", "bc"], ["xab", "c"])
    assert "".join(outputs) == "x"
    assert matcher.stopped


def test_empty_stops_are_ignored() -> None:
    outputs, tail, matcher = run_matcher(["", ""], ["some ", "text"])
    assert outputs == ["some ", "text"]
    assert tail == ""
    assert not matcher.stopped


def test_empty_stop_among_real_ones_is_ignored() -> None:
    outputs, _, matcher = run_matcher(["", "!"], ["hi", "! there"])
    assert outputs == ["hi", ""]
    assert matcher.stopped


def test_no_stops_passes_everything_through() -> None:
    outputs, tail, matcher = run_matcher([], ["a", "", "bc"])
    assert outputs == ["a", "", "bc"]
    assert tail == ""
    assert not matcher.stopped


def test_nothing_is_emitted_after_a_stop() -> None:
    matcher = StopMatcher(["#"])
    assert matcher.push("ok#") == "ok"
    assert matcher.stopped
    assert matcher.push("more text") == ""
    assert matcher.push("#") == ""
    assert matcher.flush() == ""
    assert matcher.stopped


def test_held_text_is_dropped_not_flushed_after_a_stop() -> None:
    matcher = StopMatcher(["<|im_end|>", "END"])
    assert matcher.push("a<|im") == "a"
    assert matcher.push("_end|>") == ""
    assert matcher.flush() == ""


def test_duplicate_stops_behave_like_one() -> None:
    outputs, _, matcher = run_matcher(["ab", "ab"], ["xa", "by"])
    assert outputs == ["x", ""]
    assert matcher.stopped


chunks_of = st.lists(st.text(alphabet="ab\n", max_size=6), max_size=12)
stop_lists = st.lists(st.text(alphabet="ab\n", min_size=0, max_size=4), max_size=4)


@PROPERTY
@given(chunks=chunks_of, stops=stop_lists)
def test_property_output_is_text_cut_at_first_stop(chunks: list[str], stops: list[str]) -> None:
    text = "".join(chunks)
    outputs, tail, matcher = run_matcher(stops, chunks)
    expected = cut_at_first_stop(text, stops)
    assert "".join(outputs) + tail == expected
    assert matcher.stopped == any(s and s in text for s in stops)


@PROPERTY
@given(
    text=st.text(alphabet="xy<|>e", max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=10),
    stops=st.lists(st.text(alphabet="xy<|>e", min_size=1, max_size=5), min_size=1, max_size=3),
)
def test_property_random_split_points(text: str, cuts: list[int], stops: list[str]) -> None:
    points = sorted({min(c, len(text)) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    assert "".join(chunks) == text
    outputs, tail, _ = run_matcher(stops, chunks)
    assert "".join(outputs) + tail == cut_at_first_stop(text, stops)
    # Nothing emitted before the end is ever part of a stop string.
    emitted = "".join(outputs)
    assert not any(s in emitted for s in stops)


def test_stop_inside_a_longer_stop_is_chunking_independent() -> None:
    stops = ["abcd", "c"]
    whole = "".join(run_matcher(stops, ["xabcd"])[0])
    chunked = "".join(run_matcher(stops, ["xabc", "d"])[0])
    assert whole == "x"  # the earliest stop, "abcd", starts at 1
    assert chunked == whole


# -- IncrementalDecoder ----------------------------------------------------------

# A byte-level vocabulary: some tokens are only part of a UTF-8 character.
VOCAB: dict[int, bytes] = {
    1: b"h",
    2: b"i",
    3: b" ",
    4: b"\xc3",  # é = c3 a9
    5: b"\xa9",
    6: b"\xe2",  # € = e2 82 ac
    7: b"\x82",
    8: b"\xac",
    9: b"\xf0\x9f",  # 😀 = f0 9f 98 80, split in two tokens
    10: b"\x98\x80",
    11: b"\xc3\xa9",  # a whole é in one token
    12: b"\xff",  # never valid UTF-8
    13: b"ab",
}


def byte_decode(token_ids: list[int]) -> str:
    return b"".join(VOCAB[i] for i in token_ids).decode("utf-8", errors="replace")


def push_all(token_ids: list[int]) -> tuple[list[str], str]:
    decoder = IncrementalDecoder(byte_decode)
    outputs = [decoder.push(t) for t in token_ids]
    return outputs, decoder.flush()


def test_decoder_emits_ascii_tokens_at_once() -> None:
    outputs, tail = push_all([1, 2, 3, 13])
    assert outputs == ["h", "i", " ", "ab"]
    assert tail == ""


def test_decoder_holds_a_two_byte_character_until_complete() -> None:
    outputs, tail = push_all([1, 4, 5, 2])
    assert outputs == ["h", "", "é", "i"]
    assert tail == ""


def test_decoder_holds_a_three_byte_character_until_complete() -> None:
    outputs, tail = push_all([6, 7, 8])
    assert outputs == ["", "", "€"]
    assert tail == ""


def test_decoder_holds_a_four_byte_character_split_in_two_tokens() -> None:
    outputs, tail = push_all([1, 9, 10, 3])
    assert outputs == ["h", "", "😀", " "]
    assert tail == ""


def test_decoder_never_emits_a_replacement_for_a_pending_character() -> None:
    outputs, _ = push_all([4, 5, 6, 7, 8, 9, 10, 11])
    assert "".join(outputs) == "é€😀é"
    assert all(REPLACEMENT_CHAR not in out for out in outputs)


def test_decoder_flush_releases_an_incomplete_tail() -> None:
    outputs, tail = push_all([1, 2, 6, 7])
    assert outputs == ["h", "i", "", ""]
    assert tail == REPLACEMENT_CHAR
    assert "".join(outputs) + tail == byte_decode([1, 2, 6, 7])


def test_decoder_invalid_byte_is_released_once_followed_by_text() -> None:
    outputs, tail = push_all([12, 1])
    assert outputs == ["", REPLACEMENT_CHAR + "h"]
    assert tail == ""


def test_decoder_flush_twice_and_empty() -> None:
    decoder = IncrementalDecoder(byte_decode)
    assert decoder.flush() == ""
    assert decoder.push(4) == ""
    assert decoder.flush() == REPLACEMENT_CHAR
    assert decoder.flush() == ""


def test_decoder_continues_after_flush() -> None:
    decoder = IncrementalDecoder(byte_decode)
    assert decoder.push(1) == "h"
    assert decoder.flush() == ""
    assert decoder.push(4) == ""
    assert decoder.push(5) == "é"


@PROPERTY
@given(st.lists(st.sampled_from(sorted(VOCAB)), max_size=30))
def test_property_decoder_output_equals_whole_decode(token_ids: list[int]) -> None:
    decoder = IncrementalDecoder(byte_decode)
    final = byte_decode(token_ids)
    emitted = ""
    for token in token_ids:
        piece = decoder.push(token)
        assert not piece.endswith(REPLACEMENT_CHAR)
        emitted += piece
        assert final.startswith(emitted)
    assert emitted + decoder.flush() == final
