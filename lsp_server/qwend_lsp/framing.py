"""Editor: the language server's stdin framing, resynchronising after garbage.

pygls 2's stdio loop (``pygls.io_.run_async``) trusts every ``Content-Length``:
one that counts characters instead of bytes, one larger than the body, one
that is not a number, or junk bytes without a newline leave it reading bodies
as headers, gluing each next header onto junk, so the server stays alive but
never answers again; ``Content-Length: 1000000000000`` asks ``read`` for a
terabyte and kills it. ``FrameReader`` replaces that loop's framing:

- A frame starts at ``Content-Length:``; bytes before one are junk, dropped.
- A length that is not a decimal number, or above ``MAX_FRAME_BYTES``, is
  unknown: the body is what lies before the next frame header.
- A body is read as the bytes that arrive, never a blind ``read(n)``: if a
  frame header turns up inside a body that is still short (a length larger
  than the body), the body ends there.
- A body that is not JSON (a length that counted characters) is extended to
  the next frame header, or to what has arrived, and parsed again.

Valid JSON can never hold a raw ``Content-Length: 12\\r\\n`` (strings cannot
hold a raw CR, and the words are no JSON token), so a header found inside a
body is always a framing error, never content. What can be parsed is handled;
a frame that cannot is answered with a JSON-RPC parse error (id null).
``serve_stdio`` runs a pygls server on stdio with this reader; it is the one
place that knows pygls' ``start_io`` internals.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from typing import Any, Final

log = logging.getLogger(__name__)

MAX_FRAME_BYTES: Final = 64 * 2**20  # far above any editor message; a larger length is junk
MAX_HEADER_BYTES: Final = 4096  # a header block (Content-Length, Content-Type) is tiny
READ_CHUNK_BYTES: Final = 65536
PARSE_ERROR: Final = -32700  # JSON-RPC 2.0

_FRAME_START = re.compile(rb"content-length:", re.IGNORECASE)
# A header that proves a new frame begins here: digits, then a raw CRLF.
_STRICT_HEADER = re.compile(rb"content-length:[ \t]*\d+\r\n", re.IGNORECASE)
_LENGTH = re.compile(rb"[ \t]*(\d{1,15})[ \t]*")


@dataclass(frozen=True)
class Message:
    body: bytes  # a whole JSON text


@dataclass(frozen=True)
class BadFrame:
    reason: str  # a frame header came, but no JSON body could be found for it


@dataclass(frozen=True)
class Junk:
    size: int  # bytes dropped while looking for a frame header


Event = Message | BadFrame | Junk


class FrameReader:
    """Sans-IO framing: ``feed`` bytes, get the events they complete."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._in_body = False  # a header block was read; its body is next in the buffer
        self._length: int | None = None  # None: unknown (bad or missing Content-Length)
        self._scanned = 0  # body bytes already searched for a frame header

    def feed(self, data: bytes) -> list[Event]:
        self._buf += data
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    # -- the state machine -------------------------------------------------------

    def _step(self, events: list[Event]) -> bool:
        """Advance once; False when more bytes are needed."""
        if not self._in_body:
            return self._header(events)
        return self._body(events)

    def _header(self, events: list[Event]) -> bool:
        start = _FRAME_START.search(self._buf)
        if start is None:
            keep = len(b"content-length:") - 1  # a header split across reads
            self._drop(max(0, len(self._buf) - keep), events)
            return False
        self._drop(start.start(), events)
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEADER_BYTES:
                self._drop(1, events)  # not a header block: look for the next one
                return True
            return False
        lines = bytes(self._buf[:end]).split(b"\r\n")
        if any(b":" not in line for line in lines) or end > MAX_HEADER_BYTES:
            self._drop(1, events)
            return True
        length: int | None = None
        for line in lines:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                match = _LENGTH.fullmatch(value)
                length = int(match.group(1)) if match else None
        if length is not None and length > self.max_frame:
            log.warning("Content-Length %d is above %d bytes: reading to the next frame",
                        length, self.max_frame)  # fmt: skip
            length = None
        elif length is None:
            log.warning("bad Content-Length %r: reading to the next frame", bytes(lines[0]))
        del self._buf[: end + 4]
        self._in_body, self._length, self._scanned = True, length, 0
        return True

    def _body(self, events: list[Event]) -> bool:
        length = self._length
        if length is not None and len(self._buf) >= length:
            body = bytes(self._buf[:length])
            if _is_json(body):
                del self._buf[:length]
                self._done(Message(body), events)
                return True
            self._length = None  # the length was wrong (characters, not bytes): recover
            return True
        # A short body (or an unknown length): does a new frame begin inside it?
        header = _STRICT_HEADER.search(self._buf, max(0, self._scanned - 32))
        self._scanned = len(self._buf)
        if header is not None:
            body = bytes(self._buf[: header.start()])
            del self._buf[: header.start()]
            if _is_json(body):
                self._done(Message(body), events)
            else:
                self._done(BadFrame(_describe(body)), events)
            return True
        if length is None:
            candidate = bytes(self._buf)
            if candidate.rstrip().endswith(b"}") and _is_json(candidate):
                self._buf.clear()
                self._done(Message(candidate), events)
                return True
            if len(self._buf) > self.max_frame:
                self._buf.clear()
                self._done(BadFrame("a body larger than the frame limit"), events)
                return True
        return False

    def _done(self, event: Event, events: list[Event]) -> None:
        events.append(event)
        self._in_body, self._length, self._scanned = False, None, 0

    def _drop(self, size: int, events: list[Event]) -> None:
        if size <= 0:
            return
        del self._buf[:size]
        if events and isinstance(events[-1], Junk):
            events[-1] = Junk(events[-1].size + size)
        else:
            events.append(Junk(size))


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError
        return False
    return True


def _describe(body: bytes) -> str:
    return f"a body of {len(body)} bytes that is not JSON"


# -- running a pygls server on stdio with this framing -----------------------------------


async def _serve(server: Any, stop: threading.Event, fd: int) -> None:
    loop = asyncio.get_running_loop()
    reader = FrameReader()
    protocol = server.protocol
    while not stop.is_set():
        data = await loop.run_in_executor(server.thread_pool, os.read, fd, READ_CHUNK_BYTES)
        if not data:
            return  # the editor closed our stdin
        for event in reader.feed(data):
            if isinstance(event, Message):
                try:
                    message = json.loads(event.body, object_hook=protocol.structure_message)
                    protocol.handle_message(message)
                except Exception as exc:  # what pygls' own loop does with a bad message
                    log.exception("Unable to handle message")
                    server._report_server_error(exc, _json_rpc_exception())
            elif isinstance(event, BadFrame):
                log.warning("dropped a frame: %s", event.reason)
                protocol._send_data(
                    {
                        "jsonrpc": "2.0",
                        "id": None,
                        "error": {"code": PARSE_ERROR, "message": f"Parse error: {event.reason}"},
                    }
                )
            else:
                log.warning("skipped %d bytes of stdin that are not a frame", event.size)


def _json_rpc_exception() -> type[Exception]:
    from pygls.exceptions import JsonRpcException

    return JsonRpcException


def serve_stdio(server: Any) -> None:
    """``server.start_io()`` with FrameReader: pygls 2's async stdio set-up
    (stop event, stdout writer, shutdown), reading stdin as it arrives."""
    from pygls.io_ import StdoutWriter

    server._stop_event = stop = threading.Event()
    server.protocol.set_writer(StdoutWriter(sys.stdout.buffer))
    try:
        asyncio.run(_serve(server, stop, sys.stdin.fileno()))
    except BrokenPipeError:
        log.error("the editor closed our stdout; shutting down")
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.shutdown()
