"""A real HTTP server on loopback that plays scripted feed responses (status, headers, body,
delay) and records the requests it got, for the catalog's fetch and sync tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import uvicorn

from tests.support.infra import free_port


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class FeedServer:
    base: str
    script: dict[str, list[Reply]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def play(self, path: str, *replies: Reply) -> None:
        """Queue replies for `path`; the last one repeats."""
        self.script[path] = list(replies)


class _App:
    def __init__(self, server: FeedServer) -> None:
        self.server = server

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.server.requests.append((path, headers))
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.server.bodies.append(body)
        queue = self.server.script.get(path) or [Reply(404, b"not found")]
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if reply.delay:
            await asyncio.sleep(reply.delay)
        raw = [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": raw})
        await send({"type": "http.response.body", "body": reply.body})


@asynccontextmanager
async def feed_server() -> AsyncIterator[FeedServer]:
    port = free_port()
    server = FeedServer(base=f"http://127.0.0.1:{port}")
    config = uvicorn.Config(
        _App(server), host="127.0.0.1", port=port, log_config=None, lifespan="off"
    )
    runner = uvicorn.Server(config)
    task = asyncio.create_task(runner.serve())
    while not runner.started:
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        runner.should_exit = True
        await task
