"""studio.access.web: the front door, in front of a small app, driven over real HTTP on
127.0.0.1 (uvicorn in a thread) with httpx: sign-in, cookies, other origins, the file route."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from studio.access.web import SESSION_COOKIE, AccessGate, SignInRefused
from tests.conftest import free_port


class FakeAuthority:
    """Two users, ann (admin) and bob; files named after their owner."""

    def __init__(self, required: bool = True):
        self.required = required
        self.sessions: dict[str, str] = {}
        self.ended: list[str] = []
        self.origins: set[str] = set()

    def sign_in_required(self):
        return self.required

    def sign_in(self, name, password, *, address, user_agent):
        if (name, password) not in {("ann", "ann-secret"), ("bob", "bob-secret")}:
            raise SignInRefused("Wrong name or password.")
        token = f"token-{name}-{len(self.sessions)}"
        self.sessions[token] = name
        return token

    def user_for(self, token):
        return self.sessions.get(token) if token else None

    def sign_out(self, token, *, address):
        if token in self.sessions:
            self.ended.append(self.sessions.pop(token))

    def may_read_file(self, user, path: Path):
        return path.name.startswith(user + "-")

    def session_seconds(self):
        return 3600

    def origin_allowed(self, seen):
        return seen in self.origins


OPS_PATHS = ("/healthz", "/readyz", "/metrics", "/status.json")


def whoami(request):
    return JSONResponse({"user": request.scope.get("state", {}).get("studio_user"),
                         "method": request.method})


@pytest.fixture
def door(tmp_path):
    data = tmp_path / "data"
    (data / "outputs").mkdir(parents=True)
    (data / "studio.db").write_bytes(b"SQLite format 3\x00 secret rows")
    (data / "outputs" / "ann-cat.png").write_bytes(b"\x89PNG ann")
    (data / "outputs" / "bob-dog.png").write_bytes(b"\x89PNG bob")

    def file_route(request):
        return FileResponse(request.path_params["path"])

    authority = FakeAuthority()
    app = Starlette(routes=[Route("/", whoami), Route("/gradio_api/queue/join", whoami,
                                                      methods=["POST"]),
                            Route("/gradio_api/file={path:path}", file_route),
                            *(Route(path, whoami) for path in OPS_PATHS)],
                    middleware=[Middleware(AccessGate, authority=authority, data_dir=data,
                                           brand="Test Studio")])
    with serving(app) as url:
        yield url, authority, data


@contextmanager
def serving(app):
    """``app`` under uvicorn on a free loopback port, in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)


def signed_in(url, name="bob"):
    client = httpx.Client(base_url=url)
    response = client.post("/signin", data={"username": name, "password": f"{name}-secret",
                                            "next": "/"})
    assert response.status_code == 303
    return client, response


def test_door_a_visitor_is_sent_to_sign_in_or_refused(door):
    url, _, _ = door
    page = httpx.get(url + "/?x=1", headers={"accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"].startswith("/signin?next=/")
    api = httpx.post(url + "/gradio_api/queue/join", json={})
    assert api.status_code == 401 and "Sign in first" in api.json()["error"]
    form = httpx.get(url + "/signin")
    assert form.status_code == 200 and "Test Studio" in form.text
    assert 'type="password"' in form.text


def test_door_sign_in_sets_a_strict_cookie_and_names_the_user(door):
    url, _, _ = door
    client, response = signed_in(url)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie
    assert "SameSite=lax" in cookie and "Secure" not in cookie  # plain http here
    assert client.get("/").json()["user"] == "bob"
    assert client.get("/").headers["x-content-type-options"] == "nosniff"


def test_door_https_behind_a_proxy_gets_a_secure_cookie(door):
    url, _, _ = door
    # uvicorn believes X-Forwarded-Proto from 127.0.0.1 (FORWARDED_ALLOW_IPS default).
    response = httpx.post(url + "/signin", data={"username": "ann", "password": "ann-secret"},
                          headers={"x-forwarded-proto": "https"})
    assert "Secure" in response.headers["set-cookie"]


def test_door_wrong_password_says_so_and_keeps_the_name(door):
    url, _, _ = door
    response = httpx.post(url + "/signin", data={"username": "bob", "password": "nope"})
    assert response.status_code == 400 and "Wrong name or password." in response.text
    assert 'value="bob"' in response.text and "set-cookie" not in response.headers


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/\\evil"])
def test_door_never_redirects_to_another_site(door, target):
    url, _, _ = door
    response = httpx.post(url + "/signin", data={"username": "bob", "password": "bob-secret",
                                                 "next": target})
    assert response.headers["location"] == "/"


def test_door_sign_out_ends_the_session(door):
    url, authority, _ = door
    client, _ = signed_in(url)
    out = client.get("/signout")
    assert out.status_code == 303 and authority.ended == ["bob"]
    assert client.post("/gradio_api/queue/join").status_code == 401


def test_door_refuses_other_origins_even_signed_in(door):
    url, authority, _ = door
    client, _ = signed_in(url)
    host = url.split("//", 1)[1]
    assert client.post("/gradio_api/queue/join", headers={"origin": url}).status_code == 200
    for origin in ("http://127.0.0.2:9999", "https://evil.example", "null",
                   f"http://{host}.evil.example"):
        refused = client.post("/gradio_api/queue/join", headers={"origin": origin})
        assert refused.status_code == 403, origin
        assert client.get("/", headers={"origin": origin}).status_code == 403
    authority.origins.add("ai.example.com")
    assert client.post("/gradio_api/queue/join",
                       headers={"origin": "https://ai.example.com"}).status_code == 200


def test_door_files_go_to_their_owner_only_and_never_the_database(door):
    url, _, data = door
    client, _ = signed_in(url, "bob")
    mine = client.get(f"/gradio_api/file={data}/outputs/bob-dog.png")
    assert mine.status_code == 200 and mine.content == b"\x89PNG bob"
    assert mine.headers["x-content-type-options"] == "nosniff"
    for path in (f"{data}/outputs/ann-cat.png", f"{data}/studio.db",
                 f"{data}/outputs/../studio.db", f"{data}/outputs/%2e%2e/studio.db",
                 f"{data}/studio.db-wal"):
        response = client.get(f"/gradio_api/file={path}")
        assert response.status_code == 404, path
        assert b"secret rows" not in response.content and b"ann" not in response.content


def test_door_without_sign_in_everyone_is_the_owner(door):
    url, authority, _ = door
    authority.required = False
    assert httpx.get(url + "/").json()["user"] == "owner"
    assert httpx.get(url + "/signin").status_code == 303


@pytest.mark.parametrize("path", OPS_PATHS)
def test_door_lets_health_and_metrics_through_without_a_session(door, path):
    url, _, _ = door
    response = httpx.get(url + path)
    assert response.status_code == 200 and response.json()["method"] == "GET"


def test_door_still_refuses_a_path_next_to_them(door):
    url, _, _ = door
    assert httpx.get(url + "/metrics/x").status_code == 401
    assert httpx.get(url + "/healthz2").status_code == 401
