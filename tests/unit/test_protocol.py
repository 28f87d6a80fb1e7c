"""Request bodies: decoded and validated, or a BadRequest that names the field."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest
from pydantic import BaseModel

from qwend.errors import BadRequest
from qwend.protocol import (
    MAX_EMBEDDING_INPUTS,
    MAX_PATH_CHARS,
    MAX_SNIPPETS,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    ChatInput,
    ChatRequest,
    CodeInput,
    CommitMessageInput,
    CompleteInput,
    CompletionRequest,
    EmbeddingsRequest,
    TokenizeRequest,
    parse_body,
)
from qwend.responses import chat_body, completion_body, encode_embedding
from qwend.tasks.registry import TASK_INPUTS


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def bad(model: type[BaseModel], raw: bytes) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        parse_body(model, raw)
    err = info.value
    assert err.code == "bad_request"
    assert err.http_status == 400
    return err


def bad_field(model: type[BaseModel], raw: bytes, field: str) -> BadRequest:
    err = bad(model, raw)
    assert err.details == {"field": field}
    assert err.message.startswith(f"field '{field}': ")
    assert err.to_dict()["error"]["field"] == field
    return err


# -- valid bodies ----------------------------------------------------------------


def test_valid_completion_minimal() -> None:
    req = parse_body(CompletionRequest, body(prompt="def f():"))
    assert isinstance(req, CompletionRequest)
    assert req.prompt == "def f():"
    assert req.suffix is None
    assert req.max_tokens is None
    assert req.temperature is None
    assert req.stream is False
    assert req.stop_list() == []


def test_valid_completion_full() -> None:
    req = parse_body(
        CompletionRequest,
        body(
            model="qwen",
            prompt="a",
            suffix="b",
            max_tokens=10,
            temperature=0,
            top_p=1,
            stop=["\n\n", "```"],
            seed=7,
            stream=True,
            stream_options={"include_usage": True},
            n=1,
            presence_penalty=0,
            frequency_penalty=0.0,
            logprobs=None,
            echo=False,
            best_of=1,
            user="me",
        ),
    )
    assert (req.model, req.suffix, req.max_tokens, req.seed) == ("qwen", "b", 10, 7)
    assert req.temperature == 0.0
    assert req.top_p == 1.0
    assert req.stop_list() == ["\n\n", "```"]
    assert req.stream_options is not None
    assert req.stream_options.include_usage is True


def test_single_stop_string_becomes_a_list() -> None:
    assert parse_body(CompletionRequest, body(prompt="", stop="END")).stop_list() == ["END"]


def test_valid_chat() -> None:
    req = parse_body(
        ChatRequest,
        body(
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi", "name": "ann"},
                {"role": "assistant", "content": "Hello"},
            ],
            max_tokens=5,
        ),
    )
    assert isinstance(req, ChatRequest)
    assert [m.role for m in req.messages] == ["system", "user", "assistant"]
    assert req.messages[1].name == "ann"
    assert req.token_limit() == 5


def test_chat_max_completion_tokens_wins_over_max_tokens() -> None:
    msgs = [{"role": "user", "content": "x"}]
    req = parse_body(ChatRequest, body(messages=msgs, max_tokens=5, max_completion_tokens=9))
    assert req.token_limit() == 9
    assert parse_body(ChatRequest, body(messages=msgs)).token_limit() is None


def test_valid_tokenize() -> None:
    req = parse_body(TokenizeRequest, body(text="héllo", model="m"))
    assert isinstance(req, TokenizeRequest)
    assert (req.text, req.model) == ("héllo", "m")


def test_body_may_be_utf8_with_non_ascii() -> None:
    raw = '{"prompt": "naïve — ☃"}'.encode()
    assert parse_body(CompletionRequest, raw).prompt == "naïve — ☃"


# -- not JSON, not an object -----------------------------------------------------


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"{'prompt': 'x'}", b'{"prompt": "x",}', b"prompt=x", b'{"prompt": "\xc3"}']
)
def test_bad_json(raw: bytes) -> None:
    err = bad(CompletionRequest, raw)
    assert err.message.startswith("the body is not valid JSON")
    assert err.details == {}


@pytest.mark.parametrize(
    "raw", [b"[]", b'[{"prompt": "x"}]', b"null", b"1", b"2.5", b'"x"', b"true"]
)
def test_json_that_is_not_an_object(raw: bytes) -> None:
    assert bad(CompletionRequest, raw).message == "the body must be a JSON object"


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"prompt": "x", "stop": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["open-arrays", "closed-arrays", "objects", "inside-a-field"],
)
def test_deeply_nested_json_is_a_bad_request_not_a_crash(raw: bytes) -> None:
    bad(CompletionRequest, raw)


def test_moderately_nested_value_is_a_field_error() -> None:
    raw = b'{"prompt": "x", "stop": ' + b"[" * 500 + b"]" * 500 + b"}"
    err = bad(CompletionRequest, raw)
    assert err.details["field"].split(".")[0] == "stop"


# -- fields ----------------------------------------------------------------------


def test_unknown_field_is_named() -> None:
    err = bad_field(CompletionRequest, body(prompt="x", best_off=2), "best_off")
    assert err.message == "field 'best_off': unknown field"


def test_unknown_nested_field_is_named() -> None:
    raw = body(messages=[{"role": "user", "content": "x", "tool_calls": []}])
    bad_field(ChatRequest, raw, "messages.0.tool_calls")


def test_missing_required_field() -> None:
    bad_field(CompletionRequest, body(max_tokens=3), "prompt")
    bad_field(ChatRequest, body(), "messages")
    bad_field(TokenizeRequest, body(), "text")


@pytest.mark.parametrize("value", ["10", True, 1.5, 10.0, None, [10]])
def test_max_tokens_wrong_type(value: Any) -> None:
    if value is None:  # null means "use the default"
        assert parse_body(CompletionRequest, body(prompt="x", max_tokens=None)).max_tokens is None
        return
    bad_field(CompletionRequest, body(prompt="x", max_tokens=value), "max_tokens")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prompt": 5}, "prompt"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": "x", "temperature": "0.5"}, "temperature"),
        ({"prompt": "x", "temperature": True}, "temperature"),
        ({"prompt": "x", "stream": "true"}, "stream"),
        ({"prompt": "x", "stream": 1}, "stream"),
        ({"prompt": "x", "seed": 1.0}, "seed"),
        ({"prompt": "x", "suffix": 3}, "suffix"),
        (
            {"prompt": "x", "stream_options": {"include_usage": "yes"}},
            "stream_options.include_usage",
        ),
    ],
)
def test_wrong_types(fields: dict[str, Any], field: str) -> None:
    err = bad(CompletionRequest, body(**fields))
    assert err.details["field"].split(".")[: field.count(".") + 1] == field.split(".")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
@pytest.mark.parametrize("field", ["temperature", "top_p"])
def test_non_finite_numbers_rejected(literal: bytes, field: str) -> None:
    raw = b'{"prompt": "x", "' + field.encode() + b'": ' + literal + b"}"
    assert json.loads(raw)[field] != 0.5  # json.loads accepts these literals
    bad_field(CompletionRequest, raw, field)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"temperature": 3}, "temperature"),
        ({"temperature": 2.0001}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.01}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**63}, "seed"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": -1}, "frequency_penalty"),
    ],
)
def test_out_of_range(fields: dict[str, Any], field: str) -> None:
    bad_field(CompletionRequest, body(prompt="x", **fields), field)


@pytest.mark.parametrize(
    ("fields", "value"), [({"temperature": 2}, 2.0), ({"top_p": 1e-9}, 1e-9), ({"seed": 0}, 0)]
)
def test_range_edges_accepted(fields: dict[str, Any], value: Any) -> None:
    req = parse_body(CompletionRequest, body(prompt="x", **fields))
    assert getattr(req, next(iter(fields))) == value


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"n": 2}, "n"),
        ({"n": 0}, "n"),
        ({"best_of": 3}, "best_of"),
        ({"echo": True}, "echo"),
        ({"logprobs": True}, "logprobs"),
    ],
)
def test_unsupported_openai_options_accept_only_their_default(
    fields: dict[str, Any], field: str
) -> None:
    bad_field(CompletionRequest, body(prompt="x", **fields), field)


def test_chat_n2_rejected() -> None:
    bad_field(ChatRequest, body(messages=[{"role": "user", "content": "x"}], n=2), "n")


def test_stop_string_count_and_length_limits() -> None:
    ok = ["s"] * MAX_STOP_STRINGS
    assert parse_body(CompletionRequest, body(prompt="x", stop=ok)).stop_list() == ok
    err = bad_field(
        CompletionRequest, body(prompt="x", stop=["s"] * (MAX_STOP_STRINGS + 1)), "stop"
    )
    assert f"at most {MAX_STOP_STRINGS}" in err.message
    longest = "x" * MAX_STOP_CHARS
    assert parse_body(CompletionRequest, body(prompt="x", stop=longest)).stop == longest
    bad_field(CompletionRequest, body(prompt="x", stop=longest + "x"), "stop")
    bad_field(CompletionRequest, body(prompt="x", stop=""), "stop")
    bad_field(CompletionRequest, body(prompt="x", stop=["ok", ""]), "stop")


def test_empty_messages_list() -> None:
    bad_field(ChatRequest, body(messages=[]), "messages")


@pytest.mark.parametrize("role", ["tool", "function", "developer", "User", ""])
def test_bad_role(role: str) -> None:
    bad_field(ChatRequest, body(messages=[{"role": role, "content": "x"}]), "messages.0.role")


def test_message_content_must_be_a_string() -> None:
    raw = body(messages=[{"role": "user", "content": [{"type": "text", "text": "x"}]}])
    bad_field(ChatRequest, raw, "messages.0.content")


def test_several_errors_are_counted_first_one_named() -> None:
    err = bad(CompletionRequest, body(prompt=1, max_tokens="x", bogus=True))
    assert "(and 2 more)" in err.message


# -- response bodies -------------------------------------------------------------


def test_completion_body_shape() -> None:
    use = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    out = completion_body("cmpl-1", "m", "text", "stop", use)
    assert out["object"] == "text_completion"
    assert out["choices"] == [
        {"index": 0, "text": "text", "finish_reason": "stop", "logprobs": None}
    ]
    assert out["usage"] == use
    assert "usage" not in completion_body("cmpl-1", "m", "t", None, None)


def test_chat_body_shape() -> None:
    use = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    out = chat_body("chatcmpl-1", "m", "hi", "length", use)
    assert out["object"] == "chat.completion"
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "hi"}
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"] == use


# -- routed task inputs ----------------------------------------------------------

MINIMAL_TASK_BODIES: dict[str, dict[str, Any]] = {
    "complete": {"prefix": "x = "},
    "explain": {"code": "x"},
    "refactor": {"code": "x"},
    "docstring": {"code": "x"},
    "tests": {"code": "x"},
    "fix": {"code": "x"},
    "commit_message": {"diff": "+x"},
    "chat": {"messages": [{"role": "user", "content": "hi"}]},
    "reasoning": {"messages": [{"role": "user", "content": "why?"}]},
}


def test_every_task_has_an_input_model() -> None:
    assert set(TASK_INPUTS) == set(MINIMAL_TASK_BODIES)
    assert TASK_INPUTS["complete"] is CompleteInput
    assert {TASK_INPUTS[n] for n in ("explain", "refactor", "docstring", "tests", "fix")} == {
        CodeInput
    }
    assert TASK_INPUTS["commit_message"] is CommitMessageInput
    assert TASK_INPUTS["chat"] is TASK_INPUTS["reasoning"] is ChatInput


@pytest.mark.parametrize("task", list(MINIMAL_TASK_BODIES))
def test_minimal_task_bodies(task: str) -> None:
    parsed = parse_body(TASK_INPUTS[task], body(**MINIMAL_TASK_BODIES[task]))
    assert isinstance(parsed, TASK_INPUTS[task])
    # The common fields default to "use the task's settings".
    assert parsed.max_tokens is None
    assert parsed.temperature is None
    assert parsed.top_p is None
    assert parsed.seed is None
    assert parsed.stop == []
    assert parsed.stream is False


@pytest.mark.parametrize("task", list(MINIMAL_TASK_BODIES))
def test_unknown_task_field_is_named(task: str) -> None:
    err = bad_field(
        TASK_INPUTS[task], body(**MINIMAL_TASK_BODIES[task], temprature=0.5), "temprature"
    )
    assert err.message == "field 'temprature': unknown field"


@pytest.mark.parametrize(
    ("task", "field"),
    [
        # Fields of other tasks, and OpenAI fields tasks do not take, are unknown here.
        ("explain", "prefix"),
        ("complete", "code"),
        ("commit_message", "messages"),
        ("chat", "model"),
        ("complete", "suffix_stop"),
    ],
)
def test_fields_of_other_requests_are_unknown(task: str, field: str) -> None:
    bad_field(TASK_INPUTS[task], body(**MINIMAL_TASK_BODIES[task], **{field: "x"}), field)


def test_complete_input_full() -> None:
    req = parse_body(
        CompleteInput,
        body(
            prefix="def f():\n    ",
            suffix="\n",
            language="python",
            path="pkg/a.py",
            repo="demo",
            snippets=[
                {"path": "b.py", "text": "B = 1\n", "score": 0.5},
                {"path": "c.py", "text": ""},
            ],
            max_tokens=32,
            temperature=0,
            top_p=0.9,
            seed=3,
            stop=["\n\n"],
            stream=True,
        ),
    )
    assert req.snippets[0].score == 0.5
    assert req.snippets[1].score == 0.0  # the default
    assert (req.max_tokens, req.temperature, req.top_p, req.seed) == (32, 0.0, 0.9, 3)
    assert req.stop == ["\n\n"]
    assert req.stream is True


def test_snippet_limits() -> None:
    snippet = {"path": "a.py", "text": "x"}
    ok = parse_body(CompleteInput, body(prefix="", snippets=[snippet] * MAX_SNIPPETS))
    assert len(ok.snippets) == MAX_SNIPPETS
    err = bad_field(
        CompleteInput, body(prefix="", snippets=[snippet] * (MAX_SNIPPETS + 1)), "snippets"
    )
    assert str(MAX_SNIPPETS) in err.message
    bad_field(CompleteInput, body(prefix="", snippets=[{"path": "a.py"}]), "snippets.0.text")
    bad_field(CompleteInput, body(prefix="", snippets=[{**snippet, "line": 3}]), "snippets.0.line")
    bad_field(
        CompleteInput, body(prefix="", snippets=[{**snippet, "score": "high"}]), "snippets.0.score"
    )
    long_path = {"path": "p" * (MAX_PATH_CHARS + 1), "text": "x"}
    bad_field(CompleteInput, body(prefix="", snippets=[long_path]), "snippets.0.path")
    raw = b'{"prefix": "", "snippets": [{"path": "a", "text": "x", "score": NaN}]}'
    bad_field(CompleteInput, raw, "snippets.0.score")


@pytest.mark.parametrize(
    ("model", "fields", "field"),
    [
        (CodeInput, {"code": ""}, "code"),
        (CodeInput, {}, "code"),
        (CodeInput, {"code": 5}, "code"),
        (CommitMessageInput, {"diff": ""}, "diff"),
        (CommitMessageInput, {}, "diff"),
        (ChatInput, {"messages": []}, "messages"),
        (ChatInput, {"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        (CompleteInput, {}, "prefix"),
        (CompleteInput, {"prefix": "", "language": "x" * 65}, "language"),
        (CompleteInput, {"prefix": "", "repo": "r" * 257}, "repo"),
        (CompleteInput, {"prefix": "", "path": "p" * (MAX_PATH_CHARS + 1)}, "path"),
        (CodeInput, {"code": "x", "max_tokens": 0}, "max_tokens"),
        (CodeInput, {"code": "x", "temperature": 2.5}, "temperature"),
        (CodeInput, {"code": "x", "top_p": 0}, "top_p"),
        (CodeInput, {"code": "x", "seed": -1}, "seed"),
        (CodeInput, {"code": "x", "stop": "END"}, "stop"),  # tasks take a list only
        (CodeInput, {"code": "x", "stop": ["s"] * (MAX_STOP_STRINGS + 1)}, "stop"),
        (CodeInput, {"code": "x", "stream": "yes"}, "stream"),
    ],
)
def test_task_input_errors_name_the_field(
    model: type[BaseModel], fields: dict[str, Any], field: str
) -> None:
    bad_field(model, body(**fields), field)


def test_empty_prefix_and_code_whitespace() -> None:
    # An empty prefix is a cursor at the start of a file; whitespace is code too.
    assert parse_body(CompleteInput, body(prefix="")).prefix == ""
    assert parse_body(CodeInput, body(code=" ")).code == " "


def test_embeddings_request() -> None:
    assert parse_body(EmbeddingsRequest, body(input="a")).texts() == ["a"]
    assert parse_body(EmbeddingsRequest, body(input=["a", "b"])).texts() == ["a", "b"]
    assert parse_body(EmbeddingsRequest, body(input="a")).encoding_format == "float"
    assert parse_body(EmbeddingsRequest, body(input="a", encoding_format="base64"))
    bad_field(EmbeddingsRequest, body(input=[]), "input")
    bad_field(EmbeddingsRequest, body(input=""), "input")
    bad_field(EmbeddingsRequest, body(input="a", encoding_format="int8"), "encoding_format")
    bad_field(EmbeddingsRequest, body(input="a", dimensions=8), "dimensions")
    too_many = parse_body(EmbeddingsRequest, body(input=["a"] * (MAX_EMBEDDING_INPUTS + 1)))
    with pytest.raises(BadRequest, match=f"at most {MAX_EMBEDDING_INPUTS}") as info:
        too_many.texts()
    assert info.value.details == {"field": "input"}
    with_empty = parse_body(EmbeddingsRequest, body(input=["a", ""]))
    with pytest.raises(BadRequest, match="must not be empty") as info:
        with_empty.texts()
    assert info.value.details == {"field": "input"}


def test_encode_embedding() -> None:
    vector = [0.5, -1.0, 0.25]
    assert encode_embedding(vector, "float") == vector
    packed = encode_embedding(vector, "base64")
    assert isinstance(packed, str)
    assert list(struct.unpack("<3f", base64.b64decode(packed))) == vector


# -- what JSON allows but is not a request (issue 15, item 5) -----------------------------


@pytest.mark.parametrize(
    ("model", "raw", "field"),
    [
        (TokenizeRequest, b'{"text": "\\ud800"}', "text"),
        (CompletionRequest, b'{"prompt": "ok", "suffix": "a\\udc00\\ud800b"}', "suffix"),
        (ChatRequest, b'{"messages": [{"role": "user", "content": "\\udfff"}]}',
         "messages.0.content"),
        (TASK_INPUTS["complete"], b'{"prefix": "", "snippets": [{"path": "\\ud83d"}]}',
         "snippets.0.path"),
        (EmbeddingsRequest, b'{"input": ["ok", "\\ud800"]}', "input.1"),
        (CompletionRequest, b'{"prompt": "ok", "\\ud800": 1}', "body"),
    ],
)  # fmt: skip
def test_lone_surrogates_are_named_not_crashes(
    model: type[BaseModel], raw: bytes, field: str
) -> None:
    err = bad_field(model, raw, field)
    assert "surrogate" in err.message
    json.dumps(err.to_dict()).encode()  # the answer itself is clean UTF-8


def test_a_paired_surrogate_escape_is_one_character() -> None:
    req = parse_body(TokenizeRequest, b'{"text": "\\ud83d\\ude00"}')
    assert req.text == "\U0001f600"


@pytest.mark.parametrize("digits", [4001, 4301, 5000])
def test_integers_too_long_to_read_are_a_bad_request(digits: int) -> None:
    err = bad(CompletionRequest, b'{"prompt": "x", "max_tokens": ' + b"9" * digits + b"}")
    assert f"{digits} digits" in err.message
    assert "set_int_max_str_digits" not in err.message


@pytest.mark.parametrize(
    ("field", "literal"),
    [
        ("temperature", b"1" + b"0" * 400),
        ("temperature", b"1e999"),
        ("top_p", b"-1e999"),
        ("temperature", b"NaN"),
        ("seed", b"9" * 100),
        ("max_tokens", b"1e999"),
    ],
)
def test_huge_numbers_are_named(field: str, literal: bytes) -> None:
    bad_field(
        CompletionRequest, b'{"prompt": "x", "' + field.encode() + b'": ' + literal + b"}", field
    )
