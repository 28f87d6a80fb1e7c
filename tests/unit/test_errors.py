"""The error tree: stable codes, HTTP statuses and exit codes, as documented."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

from qwend import errors
from qwend.errors import (
    AlreadyRunning,
    BadRequest,
    ConfigError,
    DaemonError,
    DaemonUnavailable,
    ModelNotLoaded,
    QwendError,
    RequestError,
    SocketPathError,
)

# Categories in the docstring's tree carry no code of their own (they are not raised).
CATEGORIES = {"RequestError", "EngineError", "ModelError", "DaemonError"}
# The one documented alias: RequestError answers like its BadRequest child.
ALIASES = {frozenset({"RequestError", "BadRequest"})}


def all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *all_subclasses(sub)]
    return found


ERROR_CLASSES = [c for c in all_subclasses(QwendError) if c.__module__ == "qwend.errors"]


def documented_tree() -> dict[str, dict[str, str | int | None]]:
    """Parse the module docstring's tree: name -> code, http status, exit code, parent."""
    doc = errors.__doc__ or ""
    tree: dict[str, dict[str, str | int | None]] = {}
    parents: dict[int, str] = {}
    line_re = re.compile(r"^(?P<indent>.*?)(?:├── |└── )(?P<name>\w+)(?P<rest>.*)$")
    for line in doc.splitlines():
        match = line_re.match(line)
        if not match:
            continue
        depth = len(match["indent"]) // 4
        rest = match["rest"].strip()
        code = re.match(r"([a-z_]+)\b", rest)
        status = re.search(r"\b(\d{3})\b", rest) if code else None
        exit_code = re.search(r"exit (\d)", rest)
        parents[depth] = match["name"]
        tree[match["name"]] = {
            "code": code[1] if code else None,
            "http": int(status[1]) if status else None,
            "exit": int(exit_code[1]) if exit_code else None,
            "parent": parents.get(depth - 1, "QwendError"),
        }
    return tree


def test_docstring_tree_parses() -> None:
    tree = documented_tree()
    assert len(tree) == 37
    assert tree["BadRequest"] == {
        "code": "bad_request",
        "http": 400,
        "exit": None,
        "parent": "RequestError",
    }
    assert tree["AlreadyRunning"]["exit"] == 2


def test_every_error_class_is_documented_and_exported() -> None:
    tree = documented_tree()
    names = {c.__name__ for c in ERROR_CLASSES}
    assert names == set(tree)
    assert set(errors.__all__) == names | {"QwendError"}


@pytest.mark.parametrize("name", sorted(documented_tree()))
def test_class_matches_its_documentation(name: str) -> None:
    doc = documented_tree()[name]
    cls = getattr(errors, name)
    assert cls.__bases__ == (getattr(errors, str(doc["parent"])),)
    if doc["code"] is not None:
        assert cls.code == doc["code"]
    if doc["http"] is not None:
        assert cls.http_status == doc["http"]
    if doc["exit"] is not None:
        assert cls.exit_code == doc["exit"]


def test_codes_are_distinct_except_documented_aliases() -> None:
    by_code: dict[str, set[str]] = defaultdict(set)
    for cls in [QwendError, *ERROR_CLASSES]:
        by_code[cls.code].add(cls.__name__)
    shared = {frozenset(names) for names in by_code.values() if len(names) > 1}
    assert shared == ALIASES


def test_codes_are_snake_case() -> None:
    for cls in [QwendError, *ERROR_CLASSES]:
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", cls.code), cls


def test_http_status_by_branch() -> None:
    for cls in ERROR_CLASSES:
        if issubclass(cls, RequestError):
            assert 400 <= cls.http_status < 500, cls
        elif issubclass(cls, errors.EngineError):
            # 502: a remote profile's engine failed (the gateway's upstream, not qwend).
            assert cls.http_status in (429, 500, 502, 503), cls
        else:
            assert cls.http_status == 500, cls
    assert errors.QueueFull.http_status == 429
    assert errors.GenerationFailed.http_status == 500
    assert errors.RemoteUnreachable.http_status == 503
    assert errors.RemoteAuthFailed.http_status == 502
    assert errors.PayloadTooLarge.http_status == 413


def test_exit_codes() -> None:
    assert QwendError.exit_code == 1
    assert ConfigError.exit_code == 1
    assert errors.ModelMissing.exit_code == 1
    assert DaemonError.exit_code == 2
    for cls in all_subclasses(DaemonError):
        assert cls.exit_code == 2
    for cls in (DaemonUnavailable, AlreadyRunning, SocketPathError):
        assert cls("x").exit_code == 2


def test_to_dict_shape() -> None:
    err = BadRequest("field 'n': bad", hint="use n=1", field="n")
    assert err.to_dict() == {
        "error": {
            "code": "bad_request",
            "message": "field 'n': bad",
            "hint": "use n=1",
            "field": "n",
        }
    }


def test_to_dict_without_hint_or_details() -> None:
    assert errors.QueueFull("full").to_dict() == {
        "error": {"code": "queue_full", "message": "full"}
    }


def test_message_hint_and_str() -> None:
    err = ConfigError("bad file", hint="fix it", file="/x", key="a.b")
    assert err.message == "bad file"
    assert err.hint == "fix it"
    assert err.details == {"file": "/x", "key": "a.b"}
    assert str(err) == "bad file\n  hint: fix it"
    assert str(ConfigError("bad file")) == "bad file"
    assert err.args == ("bad file",)


def test_errors_are_exceptions_and_catchable_by_branch() -> None:
    with pytest.raises(RequestError):
        raise errors.ContextLengthExceeded("too long")
    with pytest.raises(QwendError):
        raise errors.OutOfMemory("oom")
    assert not issubclass(errors.OutOfMemory, MemoryError)


# -- docs/errors.md ------------------------------------------------------------------

ERRORS_MD = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def documented_rows() -> list[tuple[str, int]]:
    """(code, number) from every table row that starts with a code: HTTP or exit status."""
    rows = []
    for line in ERRORS_MD.read_text().splitlines():
        match = re.match(r"\| `([a-z_]+)` \| (\d+) \|", line)
        if match:
            rows.append((match[1], int(match[2])))
    return rows


def class_for(code: str) -> type[QwendError]:
    matches = [c for c in ERROR_CLASSES if c.code == code and c.__name__ not in CATEGORIES]
    assert len(matches) == 1, code
    return matches[0]


def test_errors_md_lists_every_raised_code() -> None:
    documented = {code for code, _ in documented_rows()}
    leaves = {c.code for c in ERROR_CLASSES if c.__name__ not in CATEGORIES}
    assert leaves <= documented
    assert documented - leaves == {"internal_error"}


def test_errors_md_statuses_match_the_classes() -> None:
    for code, number in documented_rows():
        if code == "internal_error":
            assert QwendError.http_status == number
        elif number >= 100:
            assert class_for(code).http_status == number, code
        else:
            assert class_for(code).exit_code == number, code


# -- no absolute path in an error body --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        (
            "failed: /home/alice/.cache/qwend/models/x/config.json is bad",
            "failed: …/config.json is bad",
        ),
        ("Unable to load '/root/m/model.safetensors'", "Unable to load '…/model.safetensors'"),
        ("the directory /tmp/qwend-1000/ is open", "the directory …/qwend-1000 is open"),
        ("POST is not allowed on /v1/completions", "POST is not allowed on /v1/completions"),
        ("no endpoint /nope", "no endpoint /nope"),
        ("see https://huggingface.co/org/repo", "see https://huggingface.co/org/repo"),
        ("run: qwend pull smollm2-135m --force", "run: qwend pull smollm2-135m --force"),
    ],
)
def test_redact_paths(text: str, redacted: str) -> None:
    assert errors.redact_paths(text) == redacted


def test_error_bodies_never_carry_absolute_paths() -> None:
    error = ModelNotLoaded(
        "model 'x' failed to load: /home/alice/.cache/qwend/models/x/config.json is not JSON",
        hint="fetch it again: qwend pull x --force (into /home/alice/.cache/qwend/models/x)",
        file="/home/alice/.cache/qwend/models/x/config.json",
        tokens=3,
    )
    body = error.to_dict()["error"]
    assert "/home/alice" not in json.dumps(body)
    assert body["message"].endswith("…/config.json is not JSON")
    assert body["file"] == "…/config.json" and body["tokens"] == 3
    assert "/home/alice" in str(error)  # the CLI and the log keep the whole path
