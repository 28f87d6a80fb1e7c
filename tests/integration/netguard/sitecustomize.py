"""Test-only network guard, loaded into the daemon under test via PYTHONPATH.

Any connect on a non-Unix socket, or any DNS lookup, is recorded in the file
named by QWEND_NETGUARD_LOG and refused. The integration tests assert that
the file stays empty: serving never reaches out to the network.

QWEND_NETGUARD_ALLOW lists "host:port" pairs (comma-separated) that may be
reached anyway: the remote backend's tests allow exactly their loopback engine.

Being the daemon's ``sitecustomize``, it shadows any other one; a test that
needs its own start-up hook in the daemon names a module in
QWEND_TEST_SITE_HOOK, imported here after the guard is in place (tests/gpu
does, to run exllamav2 on its emulated extension).
"""

import importlib
import os
import socket

_LOG = os.environ.get("QWEND_NETGUARD_LOG")

_ALLOW = {a for a in os.environ.get("QWEND_NETGUARD_ALLOW", "").split(",") if a}


def _allowed(host, port):  # type: ignore[no-untyped-def]
    return f"{host}:{port}" in _ALLOW


if _LOG:
    _connect = socket.socket.connect
    _connect_ex = socket.socket.connect_ex
    _getaddrinfo = socket.getaddrinfo

    def _refuse(what: str) -> OSError:
        with open(_LOG, "a") as log:
            log.write(what + "\n")
        return OSError(101, f"network blocked by the qwend test guard: {what}")

    def connect(self, address):  # type: ignore[no-untyped-def]
        if self.family != socket.AF_UNIX and not _allowed(*address[:2]):
            raise _refuse(f"connect {address!r}")
        return _connect(self, address)

    def connect_ex(self, address):  # type: ignore[no-untyped-def]
        if self.family != socket.AF_UNIX and not _allowed(*address[:2]):
            raise _refuse(f"connect_ex {address!r}")
        return _connect_ex(self, address)

    def getaddrinfo(host, port=None, *args, **kwargs):  # type: ignore[no-untyped-def]
        if _allowed(host, port):
            return _getaddrinfo(host, port, *args, **kwargs)
        raise _refuse(f"getaddrinfo {host!r}")

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo

_HOOK = os.environ.get("QWEND_TEST_SITE_HOOK")
if _HOOK:
    importlib.import_module(_HOOK)
