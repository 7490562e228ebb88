"""The baseline of `bench.ddm_sync`: a bare FastAPI app, no middleware, no database, no
signing, serving the exact bytes the device channel served for one device.

`python -m bench.bare_app PORT BODIES.json` runs it under uvicorn exactly as
`managed-os serve` runs a service (one worker, same options, same logging); BODIES.json maps
`tokens` and `declaration-items` to the captured response bodies.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request, Response

from managed_os.logs import configure_logging


def create_app(bodies: dict[str, bytes]) -> FastAPI:
    app = FastAPI()
    tokens, items = bodies["tokens"], bodies["declaration-items"]

    @app.get("/ddm/tokens")
    async def get_tokens() -> Response:
        return Response(tokens, media_type="application/json")

    @app.get("/ddm/declaration-items")
    async def get_items() -> Response:
        return Response(items, media_type="application/json")

    @app.put("/ddm/status")
    async def put_status(request: Request) -> Response:
        await request.body()
        return Response(b"")

    return app


def main() -> None:
    port, path = int(sys.argv[1]), Path(sys.argv[2])
    bodies = {k: v.encode() for k, v in json.loads(path.read_text()).items()}
    configure_logging("WARNING")
    uvicorn.run(
        create_app(bodies),
        host="127.0.0.1",
        port=port,
        log_config=None,
        timeout_graceful_shutdown=20,
    )


if __name__ == "__main__":
    main()
