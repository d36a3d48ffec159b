"""The studio's front door: one ASGI middleware in front of everything Gradio serves.

For every request it answers, before Gradio sees it:
- **Other web sites.** A request whose ``Origin`` is not the studio's own (nor allowed in
  STUDIO_ALLOWED_ORIGINS) is refused: a page on another site, open in the same browser,
  can neither read the studio's answers nor trigger an action.
- **Sign-in.** ``/signin`` and ``/signout`` are served here. When sign-in is on, a request
  without a live session is sent to ``/signin`` (a page) or refused with 401 (anything else).
  The session cookie is HttpOnly, SameSite=Lax, and Secure when the request came over HTTPS
  (behind Caddy: X-Forwarded-Proto, believed only from STUDIO_TRUSTED_PROXIES, which the
  server applies before this runs).
- **Health and metrics.** ``/healthz`` and ``/readyz`` are open; ``/metrics`` and
  ``/status.json`` pass through to their own ``STUDIO_METRICS_TOKEN`` check.
- **Files.** Gradio's file route never serves the database, and serves a file of the data
  folder only to its owner; every answer carries ``X-Content-Type-Options: nosniff``.
- **ComfyUI behind Caddy.** ``/auth/admin`` answers Caddy's ``forward_auth`` for ComfyUI's
  own host: 200 for a signed-in admin, 403 for anyone else signed in, 401 for a visitor.
  Caddy sends it a copy of the browser's request (its Cookie, Origin and Host, plus
  X-Forwarded-Method/-Uri/-Host), so the other-origin check above guards ComfyUI too. The
  cookie reaches ComfyUI's host when STUDIO_COOKIE_DOMAIN names the domain both share.
The signed-in name is left in ``scope["state"]["studio_user"]`` for Gradio's
``auth_dependency`` (``request.username`` in handlers). No gradio imports here.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, quote, unquote, urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import (HTMLResponse, JSONResponse, PlainTextResponse,
                                 RedirectResponse, Response)


SESSION_COOKIE = "studio_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FILE_PREFIXES = ("/gradio_api/file=", "/file=")
# The Ollama-compatible routes (studio/api/ollama.py, embeddings.py), which check their own keys.
API_PATHS = frozenset({"/api/version", "/api/tags", "/api/show", "/api/chat", "/api/generate",
                       "/api/embed", "/api/embeddings"})
# Open without a session: the two pages, Gradio's own call to itself when it starts (it runs
# the app's start-up events once, then answers False), and the health checks for compose and
# Uptime Kuma (studio/ops/health.py: nothing secret in them).
OPEN_PATHS = frozenset({"/signin", "/signout", "/favicon.ico", "/gradio_api/startup-events",
                        "/healthz", "/readyz"})
# For Prometheus and dashboards, which check STUDIO_METRICS_TOKEN themselves (ops/metrics.py).
TOKEN_PATHS = frozenset({"/metrics", "/status.json"})
# Caddy's forward_auth asks here before it lets a request through to ComfyUI (deploy/Caddyfile).
ADMIN_CHECK_PATH = "/auth/admin"


class Authority(Protocol):
    """What the gate asks of the access service (``studio.access.service.Access``)."""

    def sign_in_required(self) -> bool: ...

    def sign_in(self, name: str, password: str, *, address: str,
                user_agent: str) -> str: ...  # a session token; raises SignInRefused

    def user_for(self, token: str | None) -> str | None: ...

    def sign_out(self, token: str | None, *, address: str) -> None: ...

    def may_read_file(self, user: str, path: Path) -> bool: ...

    def is_admin(self, name: str | None) -> bool: ...

    def session_seconds(self) -> int: ...

    def origin_allowed(self, netloc: str) -> bool: ...  # other sites the owner allowed


class SignInRefused(Exception):
    """A sign-in that failed; ``str()`` is the sentence the page shows."""


class AccessGate:
    """Pure ASGI middleware (streams pass through untouched). ``origins`` are extra allowed
    origins; ``brand`` names the studio on the sign-in page; ``cookie_domain`` (e.g.
    ``example.com``) is the session cookie's Domain when the studio is reached under it."""

    def __init__(self, app, *, authority: Authority, data_dir: str | Path, brand: str = "Studio",
                 accent: str = "#e8590c", owner: str = "owner", cookie_domain: str = "") -> None:
        self.app = app
        self.authority = authority
        self.data_dir = Path(data_dir).resolve()
        self.brand = brand
        self.accent = accent if re.fullmatch(r"#[0-9a-fA-F]{6}", accent) else "#e8590c"
        self.owner = owner  # the one user when sign-in is off
        self.cookie_domain = cookie_domain.strip().strip(".").lower()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not self._same_origin(headers):
            await _send(JSONResponse({"error": "Requests from other web sites are refused."},
                                     status_code=403), scope, receive, send)
            return
        path = scope.get("path", "")
        if scope["type"] == "http" and path in ("/signin", "/signout"):
            response = await (self._signin(scope, receive) if path == "/signin"
                              else self._signout(scope))
            await _send(response, scope, receive, send)
            return
        if path == ADMIN_CHECK_PATH:
            # Answered here, before the sign-in redirect below: that would send the browser
            # to /signin on ComfyUI's host, which asks here again.
            await _send(self._admin_check(headers), scope, receive, send)
            return
        if path == "/v1" or path.startswith("/v1/") or path in API_PATHS or path in TOKEN_PATHS:
            await self.app(scope, receive, send)  # the APIs check their own keys or tokens
            return
        token = _cookie(headers, SESSION_COOKIE)
        required = self.authority.sign_in_required()
        user = self.authority.user_for(token) if required else self.owner
        if user is None and path not in OPEN_PATHS:
            await _send(self._unauthenticated(scope, headers), scope, receive, send)
            return
        if path.startswith(FILE_PREFIXES) and not self._may_read(user, path):
            await _send(JSONResponse({"error": "Not found."}, status_code=404),
                        scope, receive, send)
            return
        scope.setdefault("state", {})["studio_user"] = user
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        async def send_nosniff(message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"].append((b"x-content-type-options", b"nosniff"))
            await send(message)

        await self.app(scope, receive, send_nosniff)

    # -- checks -----------------------------------------------------------------------

    def _same_origin(self, headers: Headers) -> bool:
        """No Origin (same-origin GETs, API clients) or the studio's own host, or allowed."""
        origin = headers.get("origin")
        if origin is None:
            return True
        if origin == "null":
            return False
        seen = netloc(origin)
        own = {headers.get("host", "").lower(), headers.get("x-forwarded-host", "").lower()}
        return seen in own or self.authority.origin_allowed(seen)

    def _may_read(self, user: str | None, path: str) -> bool:
        """The file route: never the database; inside the data folder, only the owner's."""
        raw = unquote(path.split("=", 1)[1])
        try:
            target = Path(os.path.realpath(raw))
        except (OSError, ValueError):
            return False
        if target.name.startswith("studio.db"):
            return False
        if target != self.data_dir and self.data_dir not in target.parents:
            return True  # Gradio's own cache and assets: Gradio decides
        return user is not None and self.authority.may_read_file(user, target)

    def _unauthenticated(self, scope, headers: Headers) -> Response:
        wants_page = (scope["type"] == "http" and scope.get("method") in ("GET", "HEAD")
                      and "text/html" in headers.get("accept", "")
                      and not scope.get("path", "").startswith("/gradio_api"))
        if wants_page:
            target = scope.get("path", "/") or "/"
            return RedirectResponse(f"/signin?next={quote(target)}", status_code=303)
        return JSONResponse({"error": "Sign in first: this studio needs a name and password.",
                             "signin": "/signin"}, status_code=401)

    def _admin_check(self, headers: Headers) -> Response:
        """Caddy's question for ComfyUI's host: may this browser in? Only an admin may."""
        no_store = {"Cache-Control": "no-store"}
        required = self.authority.sign_in_required()
        user = self.authority.user_for(_cookie(headers, SESSION_COOKIE)) if required else self.owner
        if user is None:
            return PlainTextResponse("Sign in to the studio as an admin to open ComfyUI.",
                                     status_code=401, headers=no_store)
        if required and not self.authority.is_admin(user):
            return PlainTextResponse("Only an admin can open ComfyUI. Ask whoever runs the "
                                     "studio, or sign in there as an admin.",
                                     status_code=403, headers=no_store)
        return Response(status_code=200, headers={**no_store, "X-Studio-User": user})

    def _domain_for(self, headers: Headers) -> str | None:
        """STUDIO_COOKIE_DOMAIN when this request's host lies under it, else None (a cookie
        for this host only): a browser drops a cookie whose Domain doesn't match the host,
        and the studio is also opened by its LAN address."""
        if not self.cookie_domain:
            return None
        return self.cookie_domain if self._under_domain(_host(headers)) else None

    def _under_domain(self, host: str) -> bool:
        domain = self.cookie_domain
        return bool(domain) and (host == domain or host.endswith("." + domain))

    def _next(self, target: str) -> str:
        """Where to go after signing in: a path on this site, or a page of another host under
        STUDIO_COOKIE_DOMAIN (ComfyUI's, which sent the visitor here); never another site."""
        parts = urlsplit(target)
        if (parts.scheme in ("http", "https") and parts.hostname
                and self._under_domain(parts.hostname.lower()) and "\\" not in target):
            return target
        return _local_path(target)

    # -- the two pages ----------------------------------------------------------------

    async def _signin(self, scope, receive) -> Response:
        request = Request(scope, receive)
        nxt = self._next(request.query_params.get("next", "/"))
        if not self.authority.sign_in_required():
            return RedirectResponse(nxt, status_code=303)
        if request.method != "POST":
            note = "You are signed out." if request.query_params.get("out") else ""
            return self._page(nxt, note=note)
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        name = (form.get("username") or [""])[0].strip()
        password = (form.get("password") or [""])[0]
        nxt = self._next((form.get("next") or [nxt])[0])
        try:
            token = self.authority.sign_in(name, password, address=_address(scope),
                                           user_agent=request.headers.get("user-agent", ""))
        except SignInRefused as refused:
            return self._page(nxt, error=str(refused), name=name, status=400)
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(SESSION_COOKIE, token, max_age=self.authority.session_seconds(),
                            httponly=True, samesite="lax", path="/",
                            secure=scope.get("scheme") == "https",
                            domain=self._domain_for(request.headers))
        return response

    async def _signout(self, scope) -> Response:
        headers = Headers(scope=scope)
        self.authority.sign_out(_cookie(headers, SESSION_COOKIE), address=_address(scope))
        response = RedirectResponse("/signin?out=1", status_code=303)
        # Both the host's own cookie and the domain's one, if the setting is on.
        for domain in {None, self._domain_for(headers)}:
            response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                                   secure=scope.get("scheme") == "https", domain=domain)
        return response

    def _page(self, nxt: str, *, error: str = "", note: str = "", name: str = "",
              status: int = 200) -> HTMLResponse:
        message = (f'<p class="error" role="alert">{html.escape(error)}</p>' if error
                   else f'<p class="note">{html.escape(note)}</p>' if note else "")
        body = SIGNIN_PAGE.format(brand=html.escape(self.brand), message=message,
                                  name=html.escape(name), next=html.escape(nxt),
                                  accent=self.accent)
        return HTMLResponse(body, status_code=status,
                            headers={"Cache-Control": "no-store",
                                     "X-Frame-Options": "DENY"})


def netloc(url: str) -> str:
    """``https://Ai.Example.com:443/x`` -> ``ai.example.com:443`` (what Origin and Host share)."""
    return (urlsplit(url).netloc or url).lower()


def _cookie(headers: Headers, name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value or None
    return None


def _host(headers: Headers) -> str:
    """The host the browser asked for, without the port ('' for an IPv6 literal)."""
    host = (headers.get("x-forwarded-host") or headers.get("host") or "").strip().lower()
    return "" if host.startswith("[") else host.split(",")[0].strip().rsplit(":", 1)[0]


def _address(scope) -> str:
    client = scope.get("client")
    return client[0] if client else ""


def _local_path(target: str) -> str:
    """Only a path on this site: never an open redirect to another one."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def _send(response: Response, scope, receive, send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4401 if response.status_code == 401
                    else 4403})
        return
    await response(scope, receive, send)


SIGNIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · {brand}</title>
<style>
  body {{ font-family: system-ui, sans-serif; background: #f6f6f7; margin: 0;
         display: grid; place-items: center; min-height: 100vh; color: #1f2328; }}
  form {{ background: #fff; padding: 2rem; border-radius: 12px; width: min(22rem, 90vw);
         box-shadow: 0 2px 12px rgba(0,0,0,.08); }}
  h1 {{ font-size: 1.3rem; margin: 0 0 1rem; }}
  label {{ display: block; margin: .8rem 0 .3rem; font-size: .9rem; }}
  input {{ width: 100%; box-sizing: border-box; padding: .6rem; font-size: 1rem;
          border: 1px solid #c9ccd1; border-radius: 8px; }}
  button {{ margin-top: 1.2rem; width: 100%; padding: .7rem; font-size: 1rem; border: 0;
           border-radius: 8px; background: {accent}; color: #fff; cursor: pointer; }}
  .error {{ color: #b42318; }} .note {{ color: #555; }}
</style></head>
<body><form method="post" action="/signin" id="signin-form">
<h1>{brand}</h1>
{message}
<input type="hidden" name="next" value="{next}">
<label for="username">Name</label>
<input id="username" name="username" autocomplete="username" value="{name}" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit" id="signin-button">Sign in</button>
</form></body></html>
"""
