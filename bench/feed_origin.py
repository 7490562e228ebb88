"""A feed origin for the catalog benchmark: serves files with strong ETags and answers
If-None-Match with 304, as a well-behaved CDN would; under `/plain/…` the same files come
without validators (every fetch is a full download). Run as a separate process:

    python -m bench.feed_origin <port> <name>=<file> [<name>=<file> ...]
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import uvicorn


def app_for(files: dict[str, bytes]) -> Any:
    tags = {path: f'"{hashlib.sha256(body).hexdigest()[:32]}"' for path, body in files.items()}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        plain = scope["path"].startswith("/plain/")
        path = scope["path"].removeprefix("/plain")
        headers = dict(scope["headers"])
        if path not in files:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        etag = tags[path].encode()
        if not plain and headers.get(b"if-none-match") == etag:
            await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", etag)]})
            await send({"type": "http.response.body", "body": b""})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")]
                + ([] if plain else [(b"etag", etag)]),
            }
        )
        await send({"type": "http.response.body", "body": files[path]})

    return app


if __name__ == "__main__":
    port = int(sys.argv[1])
    served = {}
    for arg in sys.argv[2:]:
        name, _, file = arg.partition("=")
        served[f"/{name}"] = Path(file).read_bytes()
    uvicorn.run(app_for(served), host="127.0.0.1", port=port, log_level="warning")
