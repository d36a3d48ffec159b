"""Sign-in, other web sites and inert chat HTML, in headless chromium against `python app.py`
with users (sign-in on), all on 127.0.0.1."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import uuid

import pytest
import sqlite_utils

from tests.conftest import ROOT, free_port, running_fake_ollama, start_studio, stop_studio

pytestmark = pytest.mark.browser

PASSWORD = {"ann": "ann-password-1", "bob": "bob-password-1", "dee": "dee-password-1"}


def add_user(data_dir, name: str, admin: bool) -> None:
    """Through the real CLI, the password on stdin."""
    args = [sys.executable, "-m", "studio.cli", "users", "add", name, "--data-dir", str(data_dir)]
    done = subprocess.run(args + (["--admin"] if admin else []), input=PASSWORD[name] + "\n",
                          text=True, capture_output=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def locked_studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("locked")
    add_user(tmp / "data", "ann", True)
    add_user(tmp / "data", "bob", False)
    add_user(tmp / "data", "dee", False)
    ollama = running_fake_ollama()
    running = start_studio(tmp, ollama.url)
    running.ollama = ollama
    yield running
    stop_studio(running)
    ollama.stop()


@pytest.fixture
def fresh_page(browser_context):
    """A page in a context of its own: no cookies from other tests."""
    context = browser_context.browser.new_context() if browser_context.browser else None
    if context is None:  # a persistent context has no browser handle: clear its cookies
        browser_context.clear_cookies()
        page = browser_context.new_page()
    else:
        page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    page.close()


def sign_in(page, studio, name: str) -> None:
    page.goto(studio.url)
    page.wait_for_selector("#signin-form")
    page.fill("#username", name)
    page.fill("#password", PASSWORD[name])
    page.click("#signin-button")
    page.wait_for_selector("#chat-input textarea")


def wait_for_models(page) -> None:
    """The model list is filled once the page loaded for a signed-in user."""
    page.wait_for_function(
        "() => { const i = document.querySelector('#model-picker input');"
        " return i && i.value && i.value.length > 0; }")


def test_browser_access_sign_in_then_out(locked_studio, fresh_page):
    page = fresh_page
    page.goto(locked_studio.url)
    page.wait_for_selector("#signin-form")
    page.fill("#username", "bob")
    page.fill("#password", "wrong-password")
    page.click("#signin-button")
    page.wait_for_selector("text=Wrong name or password.")
    assert page.input_value("#username") == "bob"
    sign_in(page, locked_studio, "bob")
    page.get_by_role("tab", name="Settings").click()
    page.wait_for_selector("#settings-account:has-text('Signed in as bob')")
    # A plain user's page gets no admin part, and the Models tab says it isn't theirs.
    assert page.locator("#audit-table").count() == 0 or not page.is_visible("#audit-table")
    page.get_by_role("tab", name="Models").click()
    page.wait_for_selector("text=Only an admin can do this.")
    page.get_by_role("tab", name="Settings").click()
    page.click("#sign-out")
    page.wait_for_selector("#signin-form")
    page.wait_for_selector("text=You are signed out.")


def test_browser_access_another_site_can_neither_read_nor_act(locked_studio, fresh_page):
    page = fresh_page
    sign_in(page, locked_studio, "bob")
    db = sqlite_utils.Database(locked_studio.data_dir / "studio.db")
    before = db.execute("select count(*) from conversations").fetchone()[0]
    studio = locked_studio.url.rstrip("/")
    evil_html = f"""<!doctype html><title>evil</title><script>
      const out = {{}};
      async function attempt(name, fn) {{
        try {{ const r = await fn(); out[name] = 'status ' + r.status + ' ' + (await r.text()).slice(0, 80); }}
        catch (e) {{ out[name] = 'blocked'; }}
      }}
      (async () => {{
        await attempt('read', () => fetch('{studio}/config', {{credentials: 'include'}}));
        await attempt('act', () => fetch('{studio}/gradio_api/queue/join', {{method: 'POST',
          credentials: 'include', headers: {{'Content-Type': 'text/plain'}},
          body: JSON.stringify({{fn_index: 6, data: [{{text: 'from evil', files: []}}],
                                 session_hash: 'evil'}})}}));
        document.title = 'done ' + JSON.stringify(out);
      }})();
    </script>"""

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = evil_html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    # Same host, another port: the same site for cookies, another origin for the browser.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Evil)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        page.wait_for_function("() => document.title.startsWith('done')")
        title = page.title()
    finally:
        server.shutdown()
    assert "Signed" not in title and '"read":"status 200' not in title, title
    assert '"act":"status 200' not in title, title
    assert db.execute("select count(*) from conversations").fetchone()[0] == before


def test_browser_access_chat_html_stays_inert(locked_studio, fresh_page):
    page = fresh_page
    sign_in(page, locked_studio, "bob")
    wait_for_models(page)
    marker = uuid.uuid4().hex[:8]
    hostile = (f"{marker} <script>window.__pwned = 1</script>"
               f"<img src=x onerror=\"window.__pwned = 2\"> <b onmouseover=\"window.__pwned=3\">b</b>")
    locked_studio.ollama.queue_reply(f"echo <img src=x onerror=\"window.__pwned = 4\"> {marker}")
    page.fill("#chat-input textarea", hostile)
    page.press("#chat-input textarea", "Enter")
    page.wait_for_function("(t) => document.querySelector('#chatbot').innerText.split(t).length > 2",
                           arg=marker)
    page.hover("#chatbot")
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("#chatbot [onerror], #chatbot [onmouseover], #chatbot script").count() == 0


def test_browser_access_a_session_ending_under_an_open_page_says_so(locked_studio, fresh_page):
    page = fresh_page
    sign_in(page, locked_studio, "bob")
    wait_for_models(page)
    page.request.get(locked_studio.url + "signout")  # as if signed out on another tab
    page.fill("#chat-input textarea", "a question typed before noticing")
    page.press("#chat-input textarea", "Enter")
    page.wait_for_selector("#signed-out-banner:has-text('You are signed out')")
    page.wait_for_function(
        "() => document.querySelector('#chat-input textarea').value.includes('before noticing')")


def test_browser_access_an_admin_adds_a_person_in_settings(locked_studio, fresh_page):
    page = fresh_page
    sign_in(page, locked_studio, "ann")
    page.get_by_role("tab", name="Settings").click()
    page.wait_for_selector("#users-table:has-text('bob')")
    page.wait_for_selector("#audit-table:has-text('sign-in')")
    name = f"cy{uuid.uuid4().hex[:6]}"
    page.fill("#person-name input", name)
    page.fill("#person-password input", "cy-password-1")
    page.click("#person-add")
    page.wait_for_selector(f"#users-table:has-text('{name}')")
    assert page.input_value("#person-password input") == ""


def test_browser_access_a_new_password_keeps_this_device_signed_in(locked_studio, fresh_page):
    page = fresh_page
    sign_in(page, locked_studio, "dee")
    page.get_by_role("tab", name="Settings").click()
    page.click("#password-box")
    page.fill("#password-current input", PASSWORD["dee"])
    page.fill("#password-new input", "dee-password-2")
    page.fill("#password-repeat input", "dee-password-2")
    page.click("#password-change")
    page.wait_for_selector("text=Password changed.")
    page.reload()
    page.wait_for_selector("#chat-input textarea")  # still signed in here
    page.goto(locked_studio.url + "signout")
    page.fill("#username", "dee")
    page.fill("#password", "dee-password-2")
    page.click("#signin-button")
    page.wait_for_selector("#chat-input textarea")


def test_browser_access_a_user_makes_and_revokes_an_api_key(locked_studio, fresh_page):
    import httpx

    page = fresh_page
    sign_in(page, locked_studio, "bob")
    page.get_by_role("tab", name="Settings").click()
    page.click("#keys-box")
    page.fill("#key-name input", "home assistant")
    page.click("#key-make")
    box = "#key-secret textarea, #key-secret input"
    page.wait_for_function(
        "(s) => { const b = document.querySelector(s); return b && b.value.startsWith('hs-'); }",
        arg=box)
    secret = page.input_value(box)
    models = httpx.get(locked_studio.url + "v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert models.status_code == 200
    page.wait_for_selector("#keys-table:has-text('home assistant')")
    db = sqlite_utils.Database(locked_studio.data_dir / "studio.db")
    number = str(db.execute("select id from api_keys where name = 'home assistant'").fetchone()[0])
    page.fill("#key-id input", number)
    page.click("#key-revoke")
    page.wait_for_selector("#keys-table:has-text('revoked')")
    assert httpx.get(locked_studio.url + "v1/models",
                     headers={"Authorization": f"Bearer {secret}"}).status_code == 401
