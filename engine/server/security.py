"""Who may talk to the server: the token, loopback-only host names without one, and same-origin browsers.

Shared by HTTP requests (the guard middleware) and websocket handshakes (the session), which must refuse
exactly the same requests.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Mapping

from fastapi import Request
from fastapi.responses import Response
from starlette.websockets import WebSocket

from .responses import error
from .settings import Settings

TOKEN_COOKIE = "atelier_token"


def token_of(
    request_headers: Mapping[str, str], query: Mapping[str, str], cookies: Mapping[str, str] | None = None
) -> str | None:
    """The token a request carries: ``Authorization: Bearer``, ``?token=``, or the cookie the canvas page
    gets when it is opened with ``?token=`` (SameSite=Strict, so other sites cannot use it)."""
    auth = request_headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return query.get("token") or (cookies or {}).get(TOKEN_COOKIE)


def token_ok(given: str | None, settings: Settings) -> bool:
    if settings.token is None:
        return True
    return given is not None and hmac.compare_digest(given.encode(), settings.token.encode())


def host_allowed(headers: Mapping[str, str], settings: Settings) -> bool:
    """Without a token the server is for this machine only: the Host header must name a loopback address
    (or the address it is bound to), which defeats DNS-rebinding pages reaching it through a browser."""
    if settings.token is not None:
        return True
    host = headers.get("host", "")
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]", 1)[0]
    if name in ("localhost", settings.host):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


DEFAULT_PORTS = {"http": 80, "https": 443}
MIN_TOKEN_LENGTH = 16


def token_problem(token: str) -> str | None:
    """Why a token is too weak to protect a server reachable from other machines, or None."""
    if len(token) < MIN_TOKEN_LENGTH or any(ch.isspace() for ch in token):
        return (
            f"a token must be at least {MIN_TOKEN_LENGTH} characters with no whitespace "
            f"(this one has {len(token)}{' and whitespace' if any(c.isspace() for c in token) else ''})"
        )
    return None


def _origin_parts(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the scheme's default port filled in; None when unparsable."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    if parts.hostname is None or port is None:
        return None
    return (scheme, parts.hostname.lower(), port)


def origin_allowed(headers: Mapping[str, str], settings: Settings, scheme: str = "http") -> bool:
    """Same-origin by default: a browser request whose Origin differs from this server in scheme, host or
    port is refused unless that origin is in ``allow_origins``. ``scheme`` is the request's own (http or
    https; a websocket's ws/wss count as http/https)."""
    origin = headers.get("origin")
    if origin is None:
        return True
    if "*" in settings.allow_origins or origin in settings.allow_origins:
        return True
    o_scheme, sep, o_netloc = origin.partition("://")
    if not sep:
        return False
    own = _origin_parts({"ws": "http", "wss": "https"}.get(scheme, scheme), headers.get("host", ""))
    theirs = _origin_parts(o_scheme.lower(), o_netloc)
    return own is not None and own == theirs


def check_request(request: Request, settings: Settings) -> Response | None:
    """The refusal for an HTTP request that may not pass, or None."""
    if not host_allowed(request.headers, settings):
        return error(
            403, "this server answers only to loopback host names (start it with --token to share it)"
        )
    if not token_ok(token_of(request.headers, request.query_params, request.cookies), settings):
        return error(401, "missing or wrong token (Authorization: Bearer TOKEN, or ?token=TOKEN)")
    if not origin_allowed(request.headers, settings, request.url.scheme):
        return error(403, "cross-origin request refused")
    return None


def check_websocket(websocket: WebSocket, settings: Settings) -> tuple[int, str] | None:
    """The close code and reason for a websocket handshake that may not pass, or None."""
    if not host_allowed(websocket.headers, settings):
        return 4403, "loopback host names only"
    if not token_ok(token_of(websocket.headers, websocket.query_params, websocket.cookies), settings):
        return 4401, "missing or wrong token"
    if not origin_allowed(websocket.headers, settings, websocket.url.scheme):
        return 4403, "cross-origin websocket refused"
    return None


Guard = Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]


def guard(settings: Settings) -> Guard:
    """The HTTP middleware: refuse what ``check_request`` refuses and bodies over the limits (a chunked
    body without a Content-Length is refused rather than read without a limit); give a canvas page opened
    with ``?token=`` the token cookie."""

    async def middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        problem = check_request(request, settings)
        if problem is not None:
            return problem
        length = request.headers.get("content-length")
        limit = settings.max_upload_bytes if is_upload(request) else settings.max_body_bytes
        if length is not None:
            try:
                if int(length) > limit:
                    return error(413, f"request body is larger than {limit} bytes")
            except ValueError:
                return error(400, "invalid Content-Length")
        elif request.method in ("POST", "PUT", "PATCH") and request.headers.get("transfer-encoding"):
            return error(411, "a Content-Length is required")
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if settings.token is not None and request.url.path == "/" and request.query_params.get("token"):
            # the page was opened with ?token=: its assets, API calls and websocket carry it as a cookie
            response.set_cookie(TOKEN_COOKIE, settings.token, httponly=True, samesite="strict")
        return response

    return middleware


#: routes whose bodies are images: held to the upload limit, not the JSON body limit
UPLOAD_PATHS = (
    "/atelier/v1/upload",
    "/upload/image",
    "/api/upload/image",
    "/atelier/v1/upload/mask",
    "/upload/mask",
    "/api/upload/mask",
)


def is_upload(request: Request) -> bool:
    return request.url.path in UPLOAD_PATHS and request.method == "POST"
