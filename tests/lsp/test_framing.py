"""LSP: stdin framing (qwend_lsp/framing.py) resynchronises after garbage.

The sans-IO reader, fed the stdin garbage of issue 15 (item 14) whole and a
byte at a time; `test_stdin_garbage.py` runs the same cases against `qwend lsp`.
"""

from __future__ import annotations

import json

import pytest

from qwend_lsp.framing import BadFrame, FrameReader, Junk, Message


def frame(message: dict[str, object], length: int | None = None, header: bytes = b"") -> bytes:
    body = json.dumps(message, ensure_ascii=False).encode()
    size = len(body) if length is None else length
    return b"Content-Length: %d\r\n%s\r\n" % (size, header) + body


PING = {"jsonrpc": "2.0", "id": 7, "method": "qwend/status"}
UNICODE = {"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"text": "größe λ 中文"}}


def feed(data: bytes, *, bytewise: bool) -> list[object]:
    reader = FrameReader(max_frame=1 << 20)
    if not bytewise:
        return list(reader.feed(data))
    events: list[object] = []
    for i in range(len(data)):
        events += reader.feed(data[i : i + 1])
    return events


def messages(events: list[object]) -> list[dict[str, object]]:
    return [json.loads(e.body) for e in events if isinstance(e, Message)]


CHARS = json.dumps(UNICODE, ensure_ascii=False)
GARBAGE = {
    "chars-not-bytes": b"Content-Length: %d\r\n\r\n%s" % (len(CHARS), CHARS.encode()),
    "longer-than-body": frame(UNICODE, length=10_000),
    "non-numeric": b"Content-Length: twelve\r\n\r\n" + json.dumps(UNICODE).encode(),
    "negative": b"Content-Length: -5\r\n\r\n" + json.dumps(UNICODE).encode(),
    "terabyte": frame(UNICODE, length=1_000_000_000_000),
    "binary-junk": bytes(range(256)) * 3,
    "junk-then-half-header": b"\x00\xff garbage Content-Len",
    "no-blank-line": b"Content-Length: 12\r\n" + json.dumps(UNICODE).encode(),
}
RECOVERED = {"chars-not-bytes", "longer-than-body", "non-numeric", "negative", "terabyte"}


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("case", GARBAGE)
def test_garbage_then_a_valid_frame_is_answered(case: str, bytewise: bool) -> None:
    events = feed(GARBAGE[case] + frame(PING) + frame(PING), bytewise=bytewise)
    got = messages(events)
    assert got[-2:] == [PING, PING], events  # resynchronised: both later frames arrive
    if case in RECOVERED:
        assert got[0] == UNICODE  # what could be parsed was not thrown away
        assert len(got) == 3
    else:
        assert len(got) == 2


def test_well_formed_frames_pass_whole_and_in_pieces() -> None:
    data = frame(UNICODE) + frame(PING, header=b"Content-Type: application/vscode-jsonrpc\r\n")
    assert messages(feed(data, bytewise=False)) == [UNICODE, PING]
    assert messages(feed(data, bytewise=True)) == [UNICODE, PING]
    assert not [e for e in feed(data, bytewise=True) if not isinstance(e, Message)]


def test_header_text_inside_a_json_string_is_content() -> None:
    tricky = {"jsonrpc": "2.0", "id": 2, "method": "x",
              "params": {"text": "Content-Length: 5\r\n\r\n{}Content-Length: 9"}}  # fmt: skip
    assert messages(feed(frame(tricky) + frame(PING), bytewise=True)) == [tricky, PING]


def test_an_unparseable_frame_is_reported_and_skipped() -> None:
    events = feed(b"Content-Length: 5\r\n\r\n{oops" + frame(PING), bytewise=False)
    assert [type(e) for e in events] == [BadFrame, Message]
    assert messages(events) == [PING]


def test_junk_is_counted_not_kept() -> None:
    reader = FrameReader()
    events = reader.feed(b"x" * 100_000)
    assert sum(e.size for e in events if isinstance(e, Junk)) >= 100_000 - 20
    assert len(reader._buf) < 20  # a terabyte of junk never piles up in memory
