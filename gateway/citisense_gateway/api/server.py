"""Serve the app with uvicorn on the running event loop, beside the gateway's tasks.

uvicorn's own `serve()` takes over SIGINT/SIGTERM; the gateway owns signals, so this
drives uvicorn's start, main loop and shutdown itself on a socket it binds first (which
also tells the caller the port when asked for port 0).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

log = logging.getLogger("citisense.api")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY on accepted connections only then, and
    # without it every small response waits for the client's delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


async def serve(app: FastAPI, host: str, port: int, *,
                ready: Callable[[int], None] | None = None) -> None:
    """Serve until cancelled; `ready(port)` is called once connections are accepted."""
    sock = bind(host, port)
    bound = int(sock.getsockname()[1])
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False,
                            server_header=False, timeout_graceful_shutdown=5)
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    try:
        await server.startup(sockets=[sock])
        log.info("HTTP API and dashboard on http://%s:%d/", host, bound)
        if ready is not None:
            ready(bound)
        await server.main_loop()
    finally:
        server.should_exit = True
        await asyncio.shield(server.shutdown(sockets=[sock]))
        sock.close()
