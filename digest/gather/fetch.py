"""HTTP for sources: conditional GET, timeouts, a streamed size cap, few redirects.

Local files (``file://`` URLs) are read with the same size cap, so a feed kept on
disk behaves like one on a server.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from .. import __version__
from ..errors import SourceError

USER_AGENT = f"digest/{__version__} (+https://github.com/digest-newsletter/digest; feed reader)"
DEFAULT_TIMEOUT = 20.0
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Fetched:
    """The outcome of one successful fetch."""

    url: str  # after redirects
    body: bytes | None  # None when the server answered 304 Not Modified
    etag: str | None = None
    last_modified: str | None = None
    content_type: str | None = None
    location: str | None = None  # a redirect not followed (follow_redirects=False)


def make_client(timeout: float = DEFAULT_TIMEOUT) -> httpx.AsyncClient:
    """The shared HTTP client for one gather run."""
    return httpx.AsyncClient(
        headers={"User-Agent": USER_AGENT, "Accept": _ACCEPT},
        timeout=httpx.Timeout(timeout),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
    )


_ACCEPT = (
    "application/feed+json, application/atom+xml, application/rss+xml, application/rdf+xml, "
    "application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, text/html;q=0.5, */*;q=0.1"
)


async def fetch(
    client: httpx.AsyncClient,
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    follow_redirects: bool = True,
) -> Fetched:
    """GET ``url`` with conditional headers; raise SourceError with a reason on any failure.
    With ``follow_redirects`` off, a redirect comes back as ``location``."""
    if urlsplit(url).scheme == "file":
        return _read_file(url, max_bytes)
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        # httpx's timeout bounds each read; the whole fetch gets one deadline too, so a
        # server trickling bytes cannot hold a source (and the run) for ever.
        async with asyncio.timeout(timeout), client.stream(
            "GET", url, headers=headers, timeout=httpx.Timeout(timeout),
            follow_redirects=follow_redirects,
        ) as response:
            if not follow_redirects and response.is_redirect:
                return Fetched(url=str(response.url), body=None,
                               location=response.headers.get("Location"))
            if response.status_code == 304:
                return Fetched(url=str(response.url), body=None, etag=etag,
                               last_modified=last_modified)
            if response.status_code >= 400:
                raise SourceError(f"HTTP {response.status_code} {response.reason_phrase}".strip())
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise SourceError(_too_large(max_bytes))
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise SourceError(_too_large(max_bytes))
                chunks.append(chunk)
            return Fetched(
                url=str(response.url),
                body=b"".join(chunks),
                etag=response.headers.get("ETag"),
                last_modified=response.headers.get("Last-Modified"),
                content_type=response.headers.get("Content-Type"),
            )
    except httpx.TooManyRedirects:
        raise SourceError(f"more than {MAX_REDIRECTS} redirects") from None
    except (httpx.TimeoutException, TimeoutError):
        raise SourceError(f"timed out after {timeout:g} s") from None
    except httpx.ConnectError as exc:
        cause = exc.__context__ or exc.__cause__
        if isinstance(cause, ssl.SSLError) or "SSL" in str(exc) or "certificate" in str(exc):
            raise SourceError(f"TLS error: {exc}") from None
        raise SourceError(f"cannot connect: {exc}") from None
    except httpx.HTTPError as exc:
        raise SourceError(f"{type(exc).__name__}: {exc}") from None


def _too_large(max_bytes: int) -> str:
    return f"body larger than {max_bytes // 1024} KB (the limit); not read further"


def _read_file(url: str, max_bytes: int) -> Fetched:
    path = Path(unquote(urlsplit(url).path))
    try:
        with path.open("rb") as handle:
            body = handle.read(max_bytes + 1)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(body) > max_bytes:
        raise SourceError(_too_large(max_bytes))
    return Fetched(url=url, body=body)
