"""Engine: the daemon's lifecycle, wiring the engine to the socket server.

Order matters and is the contract: everything that can fail fast (unknown
backend, model not downloaded, socket taken) fails before the socket exists;
the socket is bound before the model loads, so /health can say "loading";
SIGTERM stops accepting, lets in-flight requests finish for
``server.shutdown_timeout_s``, then cancels the rest and exits 0. A second
SIGTERM or Ctrl-C exits at once.

Cancelling past the drain ends the *jobs*, not the connections: the engine
stops every generation (and every queued one) with finish_reason
"cancelled", so a stream still gets its last chunk and ``data: [DONE]`` and a
whole answer its partial text, as clients are promised (docs/errors.md).
Only then are the connections closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from qwend import logsink
from qwend.backends import create_backend
from qwend.backends.base import Backend
from qwend.config import Config
from qwend.config.reload import Reloader
from qwend.config.watch import ConfigWatcher
from qwend.engine.engine import Engine
from qwend.engine.service import InferenceService, scheduling_policy
from qwend.logsink import LogHealth
from qwend.metrics import Metrics
from qwend.models.cache import require_model
from qwend.paths import check_socket_path, ensure_private_dir
from qwend.server.app import IN_FLIGHT, JsonErrorsAppRunner, build_app
from qwend.server.stalls import WriteWatchdog, runner_options
from qwend.server.unix_socket import InstanceLock, bind_private_socket

log = logging.getLogger(__name__)

ENGINE_STOP_TIMEOUT_S: Final = 5.0  # one generation step is far shorter
CANCEL_GRACE_S: Final = 2.0  # after the drain: how long cancelled handlers get to unwind


def configure_logging(log_file: Path | None = None) -> LogHealth:
    """Log to ``log_file`` (falling back to stderr) or to stderr; never fail on a write."""
    return logsink.install(log_file)


def serve(
    config: Config,
    socket_path: Path,
    *,
    user_path: Path | None = None,
    model_override: str | None = None,
    watch: bool = True,
    log_health: LogHealth | None = None,
) -> int:
    """Run the daemon in the foreground until SIGTERM; return the exit code.

    ``user_path`` and ``model_override`` are re-applied on every config
    reload; ``watch`` turns the file watcher on. Raises BackendUnavailable,
    ModelMissing, SocketPathError or AlreadyRunning before anything is bound.
    """
    backend = create_backend(config)
    backend.check()
    require_model(config)
    check_socket_path(socket_path)
    ensure_private_dir(socket_path.parent)
    lock = InstanceLock(socket_path)
    lock.acquire()
    sock = None
    try:
        sock = bind_private_socket(socket_path)
        log.info(
            "qwend %s: model '%s' (%s, %s), socket %s, config %s",
            _version(),
            config.model_name,
            config.profile.backend,
            config.profile.device,
            socket_path,
            ", ".join(str(p) for p in config.files),
        )
        options = _Options(user_path, model_override, watch, log_health)
        asyncio.run(_serve(config, backend, sock, socket_path, options))
    finally:
        if sock is not None:
            sock.close()
            socket_path.unlink(missing_ok=True)  # still ours: we hold the lock
        lock.release()
    log.info("stopped")
    return 0


@dataclass(frozen=True)
class _Options:
    user_path: Path | None
    model_override: str | None
    watch: bool
    log_health: LogHealth | None


async def _serve(
    config: Config, backend: Backend, sock: socket.socket, socket_path: Path, options: _Options
) -> None:
    settings = config.settings
    metrics = Metrics()
    engine = Engine(
        backend,
        model_name=config.model_name,
        queue_size=settings.server.queue_size,
        metrics=metrics,
        policy=scheduling_policy(config),
    )
    service = InferenceService(engine, config, socket_path)
    loop = asyncio.get_running_loop()
    reloader = Reloader(service, user_path=options.user_path, model_override=options.model_override)
    service.reload_status = reloader.status
    service.reload_now = lambda: _reload_dict(reloader, "api")
    if options.log_health is not None:
        service.log_status = options.log_health.snapshot

    def on_config_edit() -> None:  # on the watcher's thread
        loop.call_soon_threadsafe(_spawn_reload, reloader)

    watcher = ConfigWatcher(reloader.watched_files(), on_config_edit)
    app = build_app(service, metrics)
    runner = JsonErrorsAppRunner(
        app,
        shutdown_timeout=CANCEL_GRACE_S,  # draining happens before, under the live timeout
        access_log=None,
        **runner_options(settings.server.idle_timeout_s),  # stalled clients (server/stalls.py)
    )
    await runner.setup()
    assert runner.server is not None  # set by setup()
    stalls = WriteWatchdog(runner.server, lambda: service.config.settings.server.write_timeout_s)
    stalls.start()
    site = web.SockSite(runner, sock, shutdown_timeout=CANCEL_GRACE_S)
    await site.start()
    engine.start(preload=settings.daemon.preload)
    if options.watch:
        watcher.start()
    log.info("serving (preload %s)", "on" if settings.daemon.preload else "off")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_first_signal, loop, stop)
    await stop.wait()

    if options.watch:
        watcher.stop()
    drain_s = service.config.settings.server.shutdown_timeout_s
    log.info("draining in-flight requests (at most %.0fs)", drain_s)
    await site.stop()  # no new connections; the ones open finish their requests
    if not await app[IN_FLIGHT].wait_idle(drain_s):
        log.warning("drain timed out: cancelling %d requests", app[IN_FLIGHT].count)
    # Every job ends now as "cancelled"; the handlers send what they have and finish.
    await asyncio.to_thread(engine.close, ENGINE_STOP_TIMEOUT_S)
    if not await app[IN_FLIGHT].wait_idle(CANCEL_GRACE_S):
        log.warning("%d requests did not finish after cancelling", app[IN_FLIGHT].count)
    await stalls.stop()
    await runner.cleanup()


_reload_tasks: set[asyncio.Task[Any]] = set()  # strong references until each finishes


def _spawn_reload(reloader: Reloader) -> None:
    task = asyncio.create_task(reloader.reload("watch"))
    _reload_tasks.add(task)
    task.add_done_callback(_reload_tasks.discard)


async def _reload_dict(reloader: Reloader, trigger: str) -> dict[str, Any]:
    return (await reloader.reload(trigger)).to_dict()


def _on_first_signal(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    log.info("signal received: shutting down")
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _exit_now)
    stop.set()


def _exit_now() -> None:
    log.warning("second signal: exiting without draining")
    os._exit(1)


def _version() -> str:
    from qwend import __version__

    return __version__
