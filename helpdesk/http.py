"""All outbound HTTP goes through here: timeouts, an SSRF guard, and errors
that say whether they are permanent (see STYLE.md 7 and 8)."""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from django.conf import settings


class TransportError(Exception):
    """A failed outbound call. `permanent` errors are not retried."""

    def __init__(self, message: str, *, permanent: bool = False, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.status = status
        self.retry_after = retry_after


class BlockedAddress(TransportError):
    def __init__(self, message: str):
        super().__init__(message, permanent=True)


def _is_public(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return not (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_reserved
                or addr.is_multicast or addr.is_unspecified)


def check_url(url: str, *, allow_private: bool | None = None) -> None:
    """Refuse URLs that are not http(s) or that resolve to a non-public address."""
    allow = settings.OUTBOUND_ALLOW_PRIVATE if allow_private is None else allow_private
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BlockedAddress(f"Not an http(s) URL: {url!r}")
    if allow:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except socket.gaierror as exc:
        raise TransportError(f"Cannot resolve {parts.hostname}: {exc}") from exc
    for info in infos:
        if not _is_public(info[4][0]):
            raise BlockedAddress(f"{parts.hostname} resolves to a private or local address")


@dataclass
class Response:
    status: int
    headers: dict
    content: bytes

    def json(self):
        import json

        return json.loads(self.content or b"null")

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def request(method: str, url: str, *, timeout: float | None = None, allow_private: bool | None = None,
            raise_for_status: bool = True, **kwargs) -> Response:
    """Send one request. 4xx (but 408/429) are permanent errors, 5xx and
    network failures transient ones."""
    check_url(url, allow_private=allow_private)
    timeout = timeout or settings.OUTBOUND_HTTP_TIMEOUT
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            resp = client.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise TransportError(f"Timed out after {timeout}s: {exc}") from exc
    except httpx.HTTPError as exc:
        raise TransportError(f"Connection failed: {exc}") from exc
    result = Response(resp.status_code, dict(resp.headers), resp.content)
    if raise_for_status and resp.status_code >= 400:
        retry_after = None
        if resp.headers.get("retry-after", "").isdigit():
            retry_after = float(resp.headers["retry-after"])
        permanent = resp.status_code < 500 and resp.status_code not in (408, 429)
        raise TransportError(f"HTTP {resp.status_code}: {result.text[:500]}", permanent=permanent,
                             status=resp.status_code, retry_after=retry_after)
    return result


def post(url: str, **kwargs) -> Response:
    return request("POST", url, **kwargs)


def get(url: str, **kwargs) -> Response:
    return request("GET", url, **kwargs)
