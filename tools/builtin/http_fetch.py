"""`http_fetch`: GET a URL with httpx — only hosts on an allow-list, every redirect re-checked
against it, the body capped at `max_bytes` (streamed, never read whole) and the whole fetch
bounded in time. An empty allow-list refuses everything.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urljoin

import httpx

from tools.errors import ToolError
from tools.logs import tools_logger
from tools.spec import Tool, tool

log = tools_logger("tools.http")

_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml", "application/javascript")


@dataclass
class HttpFetchConfig:
    """Allow-list entries: "example.com", "*.example.com" (sub-domains) or "host:port"."""

    allow_hosts: tuple[str, ...] = ()
    max_bytes: int = 200_000
    timeout_s: float = 8.0
    max_redirects: int = 3
    schemes: tuple[str, ...] = ("http", "https")
    user_agent: str = "interplay-http-fetch/0.1"
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.allow_hosts = tuple(h.strip().lower() for h in self.allow_hosts if h.strip())


def host_allowed(url: httpx.URL, allow_hosts: Iterable[str]) -> bool:
    """Whether `url`'s host (or host:port) matches an allow-list entry."""
    host = (url.host or "").lower().rstrip(".")
    port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    for entry in allow_hosts:
        pattern, _, want_port = entry.partition(":") if entry.count(":") == 1 else (entry, "", "")
        if want_port and str(port) != want_port:
            continue
        if host == pattern or (pattern.startswith("*.") and fnmatch.fnmatch(host, pattern)):
            return True
    return False


class HttpFetcher:
    """Fetches under `HttpFetchConfig`; one shared AsyncClient per event loop use."""

    def __init__(self, config: HttpFetchConfig | None = None, *, transport: httpx.AsyncBaseTransport | None = None):
        self.config = config or HttpFetchConfig()
        self._transport = transport

    def check(self, url: httpx.URL) -> None:
        if url.scheme not in self.config.schemes:
            raise ToolError(f"scheme '{url.scheme}' is not allowed (use {' or '.join(self.config.schemes)})",
                            code="not_allowed")
        if not host_allowed(url, self.config.allow_hosts):
            allowed = ", ".join(self.config.allow_hosts) or "none configured"
            raise ToolError(f"host '{url.host}' is not on the allow-list (allowed: {allowed})", code="not_allowed")

    async def fetch(self, url: str) -> str:
        try:
            target = httpx.URL(url.strip())
        except (httpx.InvalidURL, TypeError) as exc:
            raise ToolError(f"not a valid URL: {exc}") from None
        self.check(target)
        cfg = self.config
        headers = {"user-agent": cfg.user_agent, **cfg.headers}
        try:
            async with asyncio.timeout(cfg.timeout_s), httpx.AsyncClient(
                follow_redirects=False, timeout=cfg.timeout_s, transport=self._transport, headers=headers,
                trust_env=False,
            ) as client:
                for _hop in range(cfg.max_redirects + 1):
                    async with client.stream("GET", target) as resp:
                        if resp.is_redirect and "location" in resp.headers:
                            nxt = httpx.URL(urljoin(str(target), resp.headers["location"]))
                            self.check(nxt)  # every hop must stay on the allow-list
                            log.info("http_fetch_redirect", src=str(target), dst=str(nxt))
                            target = nxt
                            continue
                        body, cut = await _read_capped(resp, cfg.max_bytes)
                        return _render(resp, body, cut, cfg.max_bytes)
                raise ToolError(f"too many redirects (max {cfg.max_redirects})")
        except TimeoutError:
            raise ToolError(f"the fetch took longer than {cfg.timeout_s:g} s", code="timeout") from None
        except httpx.TimeoutException:
            raise ToolError(f"the fetch took longer than {cfg.timeout_s:g} s", code="timeout") from None
        except httpx.HTTPError as exc:
            log.info("http_fetch_failed", url=str(target), error=repr(exc))
            raise ToolError(f"could not fetch {target.host}: {type(exc).__name__}") from None


async def _read_capped(resp: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    """At most `max_bytes` of the body, streamed; (body, whether more was there)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        room = max_bytes - size
        if len(chunk) > room:
            chunks.append(chunk[:room])
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False


def _render(resp: httpx.Response, body: bytes, cut: bool, max_bytes: int) -> str:
    ctype = resp.headers.get("content-type", "")
    head = f"HTTP {resp.status_code} {ctype or 'unknown type'} from {resp.url}"
    if ctype and not ctype.lower().startswith(_TEXT_TYPES):
        return f"{head}\n\n[binary content, {len(body)} bytes{'+' if cut else ''}; not shown]"
    text = body.decode(resp.encoding or "utf-8", errors="replace")
    note = f"\n[body cut at {max_bytes} bytes]" if cut else ""
    return f"{head}\n\n{text}{note}"


def make_http_fetch_tool(config: HttpFetchConfig | None = None, *,
                         transport: httpx.AsyncBaseTransport | None = None) -> Tool:
    """The `http_fetch` tool bound to a config (its allow-list, size and time limits)."""
    fetcher = HttpFetcher(config, transport=transport)
    cfg = fetcher.config

    @tool(timeout_s=cfg.timeout_s + 1.0, idempotent=True, max_concurrency=4, max_result_chars=8000)
    async def http_fetch(url: str) -> str:
        """Fetch a web page or API response over HTTP(S) GET and return its text.

        Args:
            url: Absolute http(s) URL; only hosts on the configured allow-list can be fetched.
        """
        return await fetcher.fetch(url)

    http_fetch.fetcher = fetcher  # type: ignore[attr-defined]
    return http_fetch
