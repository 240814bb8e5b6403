"""Running an ASGI app (charwise serve's playground) with uvicorn: a listening socket bound
before anything is printed (a port in use or a bad host is a one-line error), uvicorn's
settings, the loopback-only Host check against DNS rebinding, and a server in a background
thread for tests and notebooks. uvicorn and starlette are the optional `serve` extra: imported
when used."""
from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time

from .errors import CharwiseError


def is_loopback(host: str) -> bool:
    """localhost, or an address of this machine's loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_only(host: str) -> list:
    """On a loopback address, answer only loopback Host names (no DNS rebinding)."""
    from starlette.middleware import Middleware  # lazy: starlette is an optional extra
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    if not is_loopback(host):
        return []
    return [Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]", "::1"])]


def uvicorn_config(app, host: str, port: int):
    """uvicorn's settings for `app` on host:port."""
    import uvicorn
    # limit_concurrency bounds open connections; request sizes are bounded by the app.
    return uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                          limit_concurrency=64, timeout_keep_alive=5,
                          timeout_graceful_shutdown=2)   # Ctrl-C does not wait out open streams


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (port 0: a free one), or a one-line error naming them.
    Bound here, before anything is printed, and handed to uvicorn: its own bind reports a port
    in use or an unknown host in its log and exits with its own code."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except (OSError, UnicodeError) as e:
        raise CharwiseError(f"--host {host!r}: not an address this machine can listen on "
                            f"({getattr(e, 'strerror', None) or e})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise CharwiseError(f"cannot listen on {host} port {port} ({e.strerror or e})") from None
    return sock


@contextlib.contextmanager
def background_server(app, host: str = "127.0.0.1", timeout: float = 20.0):
    """Serve `app` on a free loopback port in a thread; yields its base URL. For tests and
    notebooks. The server stops when the block ends."""
    import uvicorn
    sock = listen_socket(host, 0)
    server = uvicorn.Server(uvicorn_config(app, host, 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the playground server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = server.force_exit = True
        thread.join(timeout)
        sock.close()
