"""studio.access.web's answer to Caddy's forward_auth for ComfyUI (``/auth/admin``) and the
cookie domain that lets the session reach ComfyUI's host, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from studio.access.web import ADMIN_CHECK_PATH, SESSION_COOKIE, AccessGate
from tests.test_access_web import FakeAuthority, serving, whoami


class RolesAuthority(FakeAuthority):
    """ann is the admin, bob is not."""

    def is_admin(self, name):
        return name == "ann"


@pytest.fixture
def gate(tmp_path):
    """The front door with STUDIO_COOKIE_DOMAIN=example.com, served on a free loopback port."""
    authority = RolesAuthority()
    app = Starlette(routes=[Route("/", whoami)],
                    middleware=[Middleware(AccessGate, authority=authority, data_dir=tmp_path,
                                           cookie_domain="example.com")])
    with serving(app) as url:
        yield url, authority


def session_of(url, name: str) -> str:
    response = httpx.post(url + "/signin", data={"username": name, "password": f"{name}-secret"})
    assert response.status_code == 303
    return response.cookies[SESSION_COOKIE]


def ask(url, token: str | None = None, **headers) -> httpx.Response:
    """What Caddy's forward_auth sends: a GET with the browser's headers and X-Forwarded-*."""
    cookie = {"cookie": f"theme=dark; {SESSION_COOKIE}={token}"} if token else {}
    return httpx.get(url + ADMIN_CHECK_PATH, headers={
        "host": "comfyui.example.com", "x-forwarded-host": "comfyui.example.com",
        "x-forwarded-method": "POST", "x-forwarded-uri": "/prompt", "accept": "text/html",
        **cookie, **headers})


def test_admin_check_lets_only_an_admin_through(gate):
    url, _ = gate
    ann = ask(url, session_of(url, "ann"))
    assert ann.status_code == 200 and ann.headers["x-studio-user"] == "ann"
    assert ann.headers["cache-control"] == "no-store"
    bob = ask(url, session_of(url, "bob"))
    assert bob.status_code == 403 and "Only an admin can open ComfyUI" in bob.text


@pytest.mark.parametrize("token", [None, "made-up-token"])
def test_admin_check_refuses_a_visitor_without_sending_them_to_comfyuis_own_signin(gate, token):
    url, _ = gate
    response = ask(url, token)
    # A 401 that Caddy turns into a redirect to the studio's sign-in; never a redirect to
    # /signin on ComfyUI's host, which would ask here again.
    assert response.status_code == 401 and "Sign in to the studio" in response.text
    assert "location" not in response.headers


def test_admin_check_refuses_a_page_of_another_site_driving_comfyui(gate):
    url, _ = gate
    token = session_of(url, "ann")
    assert ask(url, token, origin="https://comfyui.example.com").status_code == 200
    for origin in ("https://evil.example", "https://other.example.com", "null"):
        assert ask(url, token, origin=origin).status_code == 403, origin


def test_admin_check_without_sign_in_lets_the_owner_through(gate):
    url, authority = gate
    authority.required = False
    assert ask(url).status_code == 200


def test_cookie_domain_is_set_only_for_hosts_under_it(gate):
    url, _ = gate
    signin = {"username": "ann", "password": "ann-secret"}
    under = httpx.post(url + "/signin", data=signin, headers={"host": "ai.example.com"})
    assert "Domain=example.com" in under.headers["set-cookie"]
    # Opened by its LAN address, the cookie stays the host's own (a browser would drop it).
    lan = httpx.post(url + "/signin", data=signin, headers={"host": "192.168.1.5:8189"})
    assert "Domain=" not in lan.headers["set-cookie"]
    out = httpx.get(url + "/signout", headers={"host": "ai.example.com"})
    cleared = out.headers.get_list("set-cookie")
    assert len(cleared) == 2 and any("Domain=example.com" in c for c in cleared)


@pytest.mark.parametrize("target, expected", [
    ("https://comfyui.example.com/", "https://comfyui.example.com/"),
    ("http://comfyui.example.com:8080/queue", "http://comfyui.example.com:8080/queue"),
    ("https://evil.example/", "/"),
    ("https://comfyui.example.com.evil.example/", "/"),
    ("//comfyui.example.com/", "/"),
])
def test_cookie_domain_lets_sign_in_return_to_comfyui_only(gate, target, expected):
    url, _ = gate
    response = httpx.post(url + "/signin", data={"username": "ann", "password": "ann-secret",
                                                 "next": target})
    assert response.headers["location"] == expected
