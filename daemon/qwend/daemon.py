"""Engine: the daemon's lifecycle, wiring the engine to the socket server.

Order matters and is the contract: everything that can fail fast (unknown
backend, model not downloaded, socket taken) fails before the socket exists;
the socket is bound before the model loads, so /health can say "loading";
SIGTERM stops accepting, lets in-flight requests finish for
``server.shutdown_timeout_s``, then cancels the rest and exits 0. A second
SIGTERM or Ctrl-C exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Final

from aiohttp import web

from qwend.config import Config
from qwend.engine.backend import Backend
from qwend.engine.backends import create_backend
from qwend.engine.engine import Engine
from qwend.engine.service import InferenceService
from qwend.metrics import Metrics
from qwend.model_store import require_model
from qwend.paths import check_socket_path, ensure_private_dir
from qwend.server.app import build_app
from qwend.server.unix_socket import InstanceLock, bind_private_socket

log = logging.getLogger(__name__)

ENGINE_STOP_TIMEOUT_S: Final = 5.0  # one generation step is far shorter
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def serve(config: Config, socket_path: Path) -> int:
    """Run the daemon in the foreground until SIGTERM; return the exit code.

    Raises BackendUnavailable, ModelMissing, SocketPathError or AlreadyRunning
    before anything is bound.
    """
    backend = create_backend(config)
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
        asyncio.run(_serve(config, backend, sock, socket_path))
    finally:
        if sock is not None:
            sock.close()
            socket_path.unlink(missing_ok=True)  # still ours: we hold the lock
        lock.release()
    log.info("stopped")
    return 0


async def _serve(config: Config, backend: Backend, sock: socket.socket, socket_path: Path) -> None:
    settings = config.settings
    metrics = Metrics()
    engine = Engine(
        backend,
        model_name=config.model_name,
        queue_size=settings.server.queue_size,
        metrics=metrics,
    )
    service = InferenceService(engine, config, socket_path)
    app = build_app(service, metrics, max_body_bytes=settings.server.max_body_bytes)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,  # a client that disconnects cancels its handler
        shutdown_timeout=settings.server.shutdown_timeout_s,
        access_log=None,
    )
    await runner.setup()
    await web.SockSite(runner, sock, shutdown_timeout=settings.server.shutdown_timeout_s).start()
    engine.start(preload=settings.daemon.preload)
    log.info("serving (preload %s)", "on" if settings.daemon.preload else "off")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_first_signal, loop, stop)
    await stop.wait()

    log.info("draining in-flight requests (at most %.0fs)", settings.server.shutdown_timeout_s)
    await runner.cleanup()
    await asyncio.to_thread(engine.close, ENGINE_STOP_TIMEOUT_S)


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
