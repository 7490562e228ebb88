"""Fetching a feed: `bundled:<file>` (the shipped snapshot), `file://`, or http(s) with
conditional GET (ETag / If-Modified-Since), a timeout, retries with exponential back-off that
honour `Retry-After`, and a configurable CA bundle (real GDMF needs Apple's root CA)."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

import httpx

from catalog.feeds.errors import FeedError

RETRY_STATUS = {429, 500, 502, 503, 504}
MAX_BODY = 32 * 1024 * 1024  # the real feeds are well under 1 MiB


@dataclass(frozen=True)
class Fetched:
    """`body` is None when the server answered 304 Not Modified."""

    body: bytes | None
    etag: str | None = None
    last_modified: str | None = None


@dataclass
class Fetcher:
    timeout: float = 30.0
    retries: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    ca_bundle: str | None = None
    user_agent: str = "managed-os-catalog/0.1"
    transport: httpx.AsyncBaseTransport | None = None
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    # One client for the fetcher's life: building one loads the CA store (most of the cost of
    # an unchanged re-sync) and a shared client keeps connections alive between syncs.
    _client: httpx.AsyncClient | None = field(default=None, init=False, repr=False)

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout,
                verify=self.ca_bundle or True,
                follow_redirects=True,
                transport=self.transport,
                headers={"User-Agent": self.user_agent, "Accept": "application/json"},
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def fetch(
        self, url: str, etag: str | None = None, last_modified: str | None = None
    ) -> Fetched:
        if url.startswith("bundled:"):
            name = url.removeprefix("bundled:")
            data = resources.files("catalog.data").joinpath(name)
            if not data.is_file():
                raise FeedError(f"no bundled snapshot named {name!r}")
            return Fetched(_non_empty(data.read_bytes(), url))
        parsed = urlparse(url)
        if parsed.scheme == "file":
            try:
                body = await asyncio.to_thread(Path(parsed.path).read_bytes)
            except OSError as exc:
                raise FeedError(f"cannot read {url}: {exc.strerror or exc}") from exc
            return Fetched(_non_empty(body, url))
        if parsed.scheme not in ("http", "https"):
            raise FeedError(f"unsupported feed URL {url!r}")
        return await self._http(url, etag, last_modified)

    async def _http(self, url: str, etag: str | None, last_modified: str | None) -> Fetched:
        headers: dict[str, str] = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        client = self.client()
        reason = ""
        for attempt in range(self.retries + 1):
            delay = min(self.backoff_max, self.backoff_base * 2**attempt)
            try:
                response = await client.get(url, headers=headers)
            except httpx.TimeoutException:
                reason = f"timed out after {self.timeout:g} s"
            except httpx.TransportError as exc:
                reason = f"connection failed: {exc.__class__.__name__}: {exc}"
            except (httpx.HTTPError, OSError, ValueError) as exc:
                # Not worth retrying: a redirect loop, an undecodable body, a bad CA file.
                raise FeedError(f"fetching {url} failed: {exc.__class__.__name__}: {exc}") from exc
            else:
                if response.status_code == 304:
                    return Fetched(None, etag, last_modified)
                if response.status_code == 200:
                    if len(response.content) > MAX_BODY:
                        raise FeedError(f"{url} returned more than {MAX_BODY} bytes")
                    return Fetched(
                        _non_empty(response.content, url),
                        response.headers.get("etag"),
                        response.headers.get("last-modified"),
                    )
                reason = f"HTTP {response.status_code}"
                if response.status_code not in RETRY_STATUS:
                    break
                delay = _retry_after(response, delay, self.backoff_max)
            if attempt < self.retries:
                await self.sleep(delay)
        raise FeedError(f"fetching {url} failed: {reason} (after {attempt + 1} attempt(s))")


def _non_empty(body: bytes, url: str) -> bytes:
    if not body.strip():
        raise FeedError(f"{url} returned an empty body")
    return body


def _retry_after(response: httpx.Response, default: float, cap: float) -> float:
    """Seconds from `Retry-After` (delta-seconds or an HTTP date), capped; else `default`."""
    raw = response.headers.get("retry-after")
    if not raw:
        return default
    try:
        return min(cap, max(0.0, float(raw)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return default
    return min(cap, max(0.0, (when - datetime.now(UTC)).total_seconds()))
