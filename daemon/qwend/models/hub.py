"""Engine: ``qwend pull`` from a Hugging Face hub, for ``hf:ORG/REPO@REVISION`` sources.

Its own module because the hub is its own contract: a revision resolved to one
commit, only the files a model needs, resume after an interruption, and every
hub failure turned into the error that says what to do. model_store owns the
cache and hands ``hf:`` profiles here.

EXL2 quants keep each bitrate on its own branch (``4.0bpw``, ``4_25``), so the
revision picks the quant. huggingface_hub's ``snapshot_download`` fetches only
the files a model needs, shows its progress bars, retries a dropped connection
with a Range request, and sends HF_TOKEN (or the ``hf auth login`` token) when
there is one; huggingface_hub is imported only once a hub pull starts.

GGUF repos (for the llama.cpp backend) keep every quant side by side on one
branch, so ``hf:ORG/REPO[@REVISION]:QUANT`` names the quant, and pull fetches
only that file (or the shards of that one split file): nothing else of the
repo is needed, the tokenizer is inside the GGUF.

A hub download fills a hidden staging folder beside the cache entry first, and
the entry appears atomically, only once it is complete. The staging folder
survives an interruption, so running the same pull again fetches only the
files that had not finished.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Final, TypeVar

from qwend import __version__
from qwend.backends.folder import GGUF_SHARD_RE, GGUF_SUFFIX, WEIGHTS_GLOB, missing_from_listing
from qwend.errors import (
    HubTokenInvalid,
    HubUnreachable,
    PullFailed,
    RepoGated,
    RepoNotFound,
    RevisionNotFound,
)
from qwend.models.cache import HF_PREFIX, replace_entry

# The hub files an EXL2 model is loaded from. Everything else in a quant repo
# (README, images, measurement.json from quantizing, the fp16 model's
# safetensors index that some quanters copy along) is left on the hub.
HF_ALLOW_PATTERNS: Final = (
    "config.json",
    "generation_config.json",
    WEIGHTS_GLOB,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
# A remote profile's model runs on its engine: only the tokenizer comes here (budgets).
TOKENIZER_PATTERNS: Final = tuple(
    p for p in HF_ALLOW_PATTERNS if p not in ("config.json", "generation_config.json", WEIGHTS_GLOB)
)
HF_DEFAULT_REVISION: Final = "main"
# Licenses are accepted on huggingface.co itself, even when HF_ENDPOINT names a mirror.
HUB_WEB_URL: Final = "https://huggingface.co"
HUB_TOKENS_URL: Final = f"{HUB_WEB_URL}/settings/tokens"
# huggingface_hub's own X-Error-Message for a token the hub does not know.
HUB_BAD_TOKEN_MESSAGE: Final = "Invalid credentials in Authorization header"
# Namespace and name: letters, digits, "-", "_" and "." (the hub's own rule, checked
# again by huggingface_hub); the revision is a branch, tag or commit.
# ``:QUANT`` (a GGUF repo's quant, e.g. q4_k_m) follows; a git ref never holds ":".
HF_SOURCE_RE: Final = re.compile(
    r"(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[^\s:]+))?(?::(?P<quant>[\w.-]+))?"
)
GGUF_HINT: Final = (
    "set the profile's source to hf:ORG/REPO:QUANT with one of those quants, "
    "e.g. hf:Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF:q4_k_m"
)
STAGING_SUFFIX: Final = ".partial"  # hidden beside the cache entry: .<profile>.partial
SOURCE_MARKER: Final = ".qwend-source"  # in the staging folder: which source it holds
HUB_STATE_DIR: Final = ".cache"  # huggingface_hub's metadata and partial files in staging

T = TypeVar("T")


@dataclass(frozen=True)
class HubSource:
    """An ``hf:`` source: the repository and the revision (branch, tag or commit)."""

    repo_id: str
    revision: str
    quant: str = ""  # a GGUF repo's quant: picks the file(s) to fetch

    def __str__(self) -> str:
        quant = f":{self.quant}" if self.quant else ""
        return f"{self.repo_id}@{self.revision}{quant}"


def parse_hf_source(source: str) -> HubSource:
    """``hf:ORG/REPO[@REVISION][:QUANT]`` (the revision defaults to main). Raises PullFailed."""
    match = HF_SOURCE_RE.fullmatch(source.removeprefix(HF_PREFIX))
    if match is None:
        raise PullFailed(
            f"'{source}' is not a hub source",
            hint="write it as hf:ORG/REPO@REVISION, e.g. "
            "hf:DrNicefellow/Qwen2.5-7B-Instruct-4.0bpw-exl2@main, or for a GGUF repo "
            "hf:ORG/REPO:QUANT, e.g. hf:Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF:q4_k_m "
            "(docs/config.md)",
        )
    return HubSource(match["repo"], match["revision"] or HF_DEFAULT_REVISION, match["quant"] or "")


def pick_gguf(files: list[str], quant: str) -> list[str]:
    """The repo files of one GGUF model: the one whose name carries ``quant`` as a
    whole part (``-q4_k_m.gguf``, ``-Q4_K_M-00001-of-00002.gguf``, ``Q4_K_M/``,
    in any case), with all shards of it.

    Without ``quant`` the repo must hold exactly one model. Raises PullFailed
    naming the quants there are.
    """
    gguf = sorted(f for f in files if f.endswith(GGUF_SUFFIX))
    models: dict[str, list[str]] = {}
    for path in gguf:
        shard = GGUF_SHARD_RE.fullmatch(path)
        models.setdefault(shard["stem"] if shard else path.removesuffix(GGUF_SUFFIX), []).append(
            path
        )
    if quant:
        # A whole name part: quants hold "_" themselves (q4_k vs q4_k_m), so only
        # "-", "." and "/" separate.
        word = re.compile(rf"(?:^|[-./]){re.escape(quant)}(?:$|[-./])", re.IGNORECASE)
        matching = [stem for stem in models if word.search(stem)]
    else:
        matching = list(models)
    if len(matching) == 1:
        return models[matching[0]]
    names = ", ".join(Path(stem).name for stem in models) or "none"
    if not models:
        why = "holds no .gguf file"
    elif not quant:
        why = f"holds {len(models)} GGUF models; name one with :QUANT"
    elif not matching:
        why = f"has no GGUF file of quant '{quant}'"
    else:
        why = f"has {len(matching)} GGUF models matching '{quant}'; name it more exactly"
    raise PullFailed(f"the repository {why} (it has: {names})", hint=GGUF_HINT)


def hub_endpoint() -> str:
    """The hub qwend talks to: HF_ENDPOINT (a mirror, or a test server) or huggingface.co.

    Read at every pull and passed to huggingface_hub explicitly, because the
    library reads the variable only once, when it is first imported.
    """
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or HUB_WEB_URL


@dataclass(frozen=True)
class _Plan:
    """What a hub pull will fetch: the commit the revision points at, and the files."""

    commit: str
    files: dict[str, int]  # path in the repo -> size in bytes


def pull_hub(
    source: HubSource,
    name: str,
    target: Path,
    *,
    force: bool,
    tokenizer_only: bool = False,
    gguf: bool = False,
) -> None:
    """Download into the staging folder, check it, then move it into place whole.

    ``tokenizer_only`` (a remote profile) fetches the tokenizer files alone;
    ``gguf`` (a llama.cpp profile) fetches only the GGUF file the quant picks.
    """
    if source.quant and not gguf:
        raise PullFailed(
            f"the source of model profile '{name}' names a quant (:{source.quant}), which "
            "only picks a GGUF file for the llama.cpp backend",
            hint=f'drop ":{source.quant}", or set models.{name}.backend = "llama.cpp"',
        )
    patterns = TOKENIZER_PATTERNS if tokenizer_only else HF_ALLOW_PATTERNS
    staging = target.parent / f".{target.name}{STAGING_SUFFIX}"
    marker = staging / SOURCE_MARKER
    if staging.exists():
        kept = marker.is_file() and marker.read_text() == str(source)
        if force or not kept:
            # Files of another revision must not mix with this one's.
            shutil.rmtree(staging)
    plan = _hub_call(source, name, staging, lambda: _plan(source, patterns, gguf=gguf))
    if tokenizer_only:
        missing = [] if "tokenizer.json" in plan.files else ["tokenizer.json"]
    else:
        missing = [] if gguf else _missing_in_plan(plan)
    if missing:
        raise PullFailed(
            f"{source} holds no {', '.join(missing)}, so it is not a model qwend can load",
            hint="check the profile's source: an EXL2 quant repo and the branch of one bitrate",
        )
    staging.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(source))
    done = [path for path, size in plan.files.items() if _has_file(staging / path, size)]
    resuming = f"; resuming, {len(done)} already here" if done else ""
    print(
        f"[1/2] downloading {len(plan.files)} files ({_size_text(sum(plan.files.values()))}) "
        f"of {source} from {hub_endpoint()}{resuming}"
    )
    _hub_call(source, name, staging, lambda: _snapshot(source, plan, staging, patterns, gguf=gguf))
    unfinished = [path for path, size in plan.files.items() if not _has_file(staging / path, size)]
    if unfinished:
        # huggingface_hub falls back to what is on disk when the hub stops answering.
        raise HubUnreachable(
            f"the download of {source} stopped before {', '.join(unfinished)} arrived",
            hint="run the same pull again to resume (finished files are kept)",
        )
    print("[2/2] moving the complete download into place")
    shutil.rmtree(staging / HUB_STATE_DIR, ignore_errors=True)
    marker.unlink()
    replace_entry(target, staging)


def _plan(source: HubSource, patterns: tuple[str, ...], *, gguf: bool) -> _Plan:
    """Resolve the revision to a commit and list the files to fetch.

    Asked before snapshot_download rather than left to it: snapshot_download
    quietly returns a non-empty ``local_dir`` as it is when the hub's first
    answer is an error, which would hide a gated, missing or unreachable repo
    behind a half-finished staging folder. Asked here, each error arrives as
    itself, and the listing gives sizes to check the result against.
    """
    from huggingface_hub import HfApi, RepoFile

    api = HfApi(endpoint=hub_endpoint(), library_name="qwend", library_version=__version__)
    commit = api.model_info(source.repo_id, revision=source.revision).sha
    if commit is None:
        raise PullFailed(f"the hub named no commit for {source}", hint="run the pull again")
    listing = [
        entry
        for entry in api.list_repo_tree(source.repo_id, revision=commit, recursive=True)
        if isinstance(entry, RepoFile)
    ]
    if gguf:
        chosen = set(pick_gguf([entry.path for entry in listing], source.quant))
        return _Plan(commit, {e.path: e.size for e in listing if e.path in chosen})
    # The same matching snapshot_download applies to allow_patterns.
    wanted = [e for e in listing if any(fnmatch(e.path, p) for p in patterns)]
    return _Plan(commit, {entry.path: entry.size for entry in wanted})


def _missing_in_plan(plan: _Plan) -> list[str]:
    return missing_from_listing(plan.files)


def _snapshot(
    source: HubSource, plan: _Plan, staging: Path, patterns: tuple[str, ...], *, gguf: bool
) -> None:
    """snapshot_download of one commit into ``staging``.

    ``local_dir`` writes plain files (no symlinks into a blob store) and keeps
    per-file metadata, so a second run skips what the first finished. The
    library's own cache (refs, tree listings) lives in staging as well: qwend
    neither reads nor writes ~/.cache/huggingface.
    """
    from huggingface_hub import snapshot_download

    snapshot_download(
        source.repo_id,
        revision=plan.commit,
        local_dir=staging,
        cache_dir=staging / HUB_STATE_DIR / "hub",
        # A GGUF pull names its file(s) exactly; a folder pull, the kinds of files.
        allow_patterns=sorted(plan.files) if gguf else list(patterns),
        endpoint=hub_endpoint(),
        library_name="qwend",
        library_version=__version__,
    )


def _has_file(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


def _size_text(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"


def _hub_call(source: HubSource, name: str, staging: Path, call: Callable[[], T]) -> T:
    """Run a hub call; every hub failure becomes the PullFailed that says what to do."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    network_errors = _network_errors()
    try:
        return _run_interruptibly(call)
    except Exception as exc:
        # huggingface_hub may wrap the hub's answer (LocalEntryNotFoundError,
        # IncompleteSnapshotError), so look for the first known one in the chain.
        for cause in _chain(exc):
            if isinstance(cause, GatedRepoError):  # before RepositoryNotFoundError, its parent
                raise _gated(source, _status(cause)) from None
            if isinstance(cause, RepositoryNotFoundError):
                raise RepoNotFound(
                    f"the hub has no repository {source.repo_id} (or it is private and your "
                    "token cannot see it)",
                    hint=f"check the source of models.{name} in your config; a private repo "
                    "needs `hf auth login` or HF_TOKEN",
                ) from None
            if isinstance(cause, RevisionNotFoundError):
                raise _revision_missing(source, name) from None
            if isinstance(cause, HfHubHTTPError):
                if _status(cause) == 401 and HUB_BAD_TOKEN_MESSAGE in str(cause):
                    raise _token_rejected() from None
                raise PullFailed(
                    f"the hub answered HTTP {_status(cause)} for {source}: {_first_line(cause)}",
                    hint="the hub may be having trouble: run the same pull again later to resume",
                ) from None
            if isinstance(cause, OfflineModeIsEnabled):
                raise HubUnreachable(
                    f"HF_HUB_OFFLINE is set, so {source} cannot be downloaded",
                    hint="unset HF_HUB_OFFLINE to download; without hub access, copy the model "
                    f"folder from another machine and set models.{name}.path to it",
                ) from None
            if isinstance(cause, network_errors):
                raise _unreachable(source, name, cause) from None
        if isinstance(exc, FileNotFoundError):  # the library's "hub unreachable, not on disk"
            raise _unreachable(source, name, exc) from None
        if isinstance(exc, OSError):  # disk full, a size mismatch, an unwritable folder
            raise PullFailed(
                f"downloading {source} failed: {_first_line(exc)}",
                hint=f"check the free space in {staging.parent}; run the same pull again to resume",
            ) from None
        raise


def _gated(source: HubSource, status: int | None) -> RepoGated:
    license_url = f"{HUB_WEB_URL}/{source.repo_id}"
    if status == 403:
        why = "your account has not been granted access yet"
        step = f"request access at {license_url} (gated repos may need the author's approval)"
    else:
        why = "the download was not authenticated"
        step = f"accept the license at {license_url}"
    return RepoGated(
        f"{source.repo_id} is a gated repository and {why}",
        hint=f"{step}; then authenticate with `hf auth login` (or the older "
        f"`huggingface-cli login`), or set the HF_TOKEN environment variable to a read "
        f"token from {HUB_TOKENS_URL}; then run the same pull again",
    )


def _revision_missing(source: HubSource, name: str) -> RevisionNotFound:
    branches = _branches(source.repo_id)
    known = f"; {source.repo_id} has: {', '.join(branches)}" if branches else ""
    return RevisionNotFound(
        f"{source.repo_id} has no revision '{source.revision}'",
        hint="EXL2 quant repos keep each bitrate on its own branch, named like 4.0bpw "
        f"or 4_25{known}; set models.{name}.source to hf:{source.repo_id}@<branch>",
    )


def _branches(repo_id: str) -> list[str]:
    """The repo's branch names, for a hint; empty if the hub cannot say."""
    from huggingface_hub import HfApi

    expected: tuple[type[Exception], ...] = (OSError, ValueError, KeyError, *_network_errors())
    try:
        refs = HfApi(endpoint=hub_endpoint()).list_repo_refs(repo_id)
    except expected:
        return []
    return sorted(ref.name for ref in refs.branches)


def _token_rejected() -> HubTokenInvalid:
    where = "HF_TOKEN" if os.environ.get("HF_TOKEN") else "the token saved by `hf auth login`"
    return HubTokenInvalid(
        f"the hub rejected the access token ({where}): it is wrong, expired or revoked",
        hint=f"create a new read token at {HUB_TOKENS_URL} and use it with `hf auth login` "
        "or HF_TOKEN; public repos need no token at all",
    )


def _unreachable(source: HubSource, name: str, exc: BaseException) -> HubUnreachable:
    return HubUnreachable(
        f"could not reach the Hugging Face hub at {hub_endpoint()} to download {source} "
        f"({_first_line(_root_cause(exc))})",
        hint="check the network, a proxy (HTTPS_PROXY) or HF_ENDPOINT, then run the same "
        "pull again: finished files are kept. Without hub access, copy the model folder "
        f"from another machine, set models.{name}.path to it, and set HF_HUB_OFFLINE=1",
    )


def _network_errors() -> tuple[type[Exception], ...]:
    """Transport errors of the HTTP client under huggingface_hub: httpx2 (2.x) or
    httpx (1.x). The requests of 0.x raise OSErrors, which are handled already."""
    found: list[type[Exception]] = []
    for module in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it, outermost first."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _run_interruptibly(work: Callable[[], T]) -> T:
    """Run ``work`` on a helper thread and wait for it.

    snapshot_download waits for its download threads, which cannot be stopped
    mid-file, so Ctrl-C in its thread would only take effect once the largest
    file finished. Waiting here instead lets Ctrl-C reach the caller at once;
    ``qwend pull`` then leaves without joining them (the staging folder keeps
    every finished file).
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # handed to the waiting thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="qwend-pull", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
