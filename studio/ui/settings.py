"""The Settings tab: your account (who you are, sign out, a new password), and for admins
the backend hosts (every Ollama host, ComfyUI host and local server, with its state), the
people who may sign in, the audit log and the configuration in effect (secrets shown only
as set / not set).

What an admin sees is filled in by the server for admins only: a plain user's page never
receives it, whatever its buttons say.
"""

from __future__ import annotations

from dataclasses import fields
from html import escape
from types import SimpleNamespace

import gradio as gr

from ..access.web import SESSION_COOKIE
from ..backends.board import HostRow
from ..backends.hosts import mask_keys
from ..config import Settings
from ..errors import InvalidInput
from .common import page_user, ui_errors

AUDIT_HEADERS = ["When (UTC)", "Who", "What", "Detail", "From"]
KEY_HEADERS = ["Number", "Name", "Starts with", "Made", "Last used", "State"]
USER_HEADERS = ["Name", "Role"]
HOST_HEADERS = ["Kind", "Name", "Address", "State", "Latency", "Models", "Loaded", "Queue"]
# The hosts table follows the health checks: as often as they run, within these bounds.
HOSTS_TICK_MIN_S, HOSTS_TICK_MAX_S = 1.0, 30.0


def host_cells(rows: list[HostRow]) -> list[list[str]]:
    """The hosts table: one row per host, its state with the problem when it isn't up.

    >>> from studio.backends.board import HostRow
    >>> host_cells([HostRow("Ollama", "big", "http://b:11434", "down", "Can't reach it.",
    ...                     None, 3, (), 0, False)])
    [['Ollama', 'big', 'http://b:11434', "down: Can't reach it.", '', '3', '', '0']]
    """
    cells = []
    for r in rows:
        state = f"{r.state}: {r.problem}" if r.problem else r.state
        cells.append([r.kind, r.name, r.address + (" (this machine)" if r.local else ""), state,
                      f"{r.latency_ms:.0f} ms" if r.latency_ms is not None else "",
                      "" if r.models is None else str(r.models), ", ".join(r.loaded),
                      str(r.queue)])
    return cells


def hosts_tick_seconds(health_interval: float) -> float:
    return min(HOSTS_TICK_MAX_S, max(HOSTS_TICK_MIN_S, health_interval))


def settings_rows(settings: Settings) -> list[list[str]]:
    """[variable, value, help] per setting; a secret's value is never included."""
    rows = []
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if f.metadata.get("secret"):
            shown = "set" if value else "not set"
        elif f.name == "comfyui_url":
            # ComfyUI has no sign-in: its address never reaches the page (issue 3).
            shown = "set (not shown: ComfyUI has no sign-in)"
        elif f.metadata.get("holds_keys"):
            shown = mask_keys(str(value))
        else:
            shown = str(value) if value not in ("", None) else "(empty)"
        if f.name == "data_dir":
            shown = str(settings.data_path)
        rows.append([f.metadata["env"], shown, f.metadata["help"]])
    return rows


def account_markdown(name: str, role: str | None, sign_in: bool) -> str:
    if not sign_in:
        return ("Sign-in is off: this studio has no users yet, and it listens only on this "
                "machine. Add the first admin with `studio users add NAME --admin` to turn "
                "sign-in on.")
    what = "an admin" if role == "admin" else "a user"
    return f"Signed in as **{escape(name)}** ({what})."


def render(services, timer: gr.Timer | None = None) -> SimpleNamespace:
    """Build the tab; returns what app.py calls when the tab opens (``open_fn``). ``timer``
    ticks the hosts table (one of its own, off, when not given)."""
    access = services.access
    keys = services.keys
    settings = services.settings

    with gr.Column():
        with gr.Row():
            account = gr.Markdown("", elem_id="settings-account")
            sign_out = gr.Button("Sign out", size="sm", scale=0, elem_id="sign-out")
        with gr.Accordion("Change your password", open=False, elem_id="password-box"):
            current = gr.Textbox(label="Current password", type="password",
                                 elem_id="password-current")
            new = gr.Textbox(label="New password (8 characters or more)", type="password",
                             elem_id="password-new")
            repeat = gr.Textbox(label="New password again", type="password",
                                elem_id="password-repeat")
            change = gr.Button("Change password", elem_id="password-change")
        with gr.Accordion("Your API keys (for /v1: scripts, editors, tools)", open=False,
                          elem_id="keys-box"):
            keys_table = gr.Dataframe(headers=KEY_HEADERS, interactive=False,
                                      elem_id="keys-table")
            with gr.Row():
                key_name = gr.Textbox(label="What uses it", placeholder="laptop",
                                      max_lines=1, elem_id="key-name")
                make_key = gr.Button("Make a key", size="sm", elem_id="key-make")
            new_key = gr.Textbox(label="Your new key: copy it now, it is shown only once",
                                 visible=False, interactive=False, buttons=["copy"],
                                 elem_id="key-secret")
            with gr.Row():
                key_id = gr.Number(label="Key number", precision=0, minimum=1,
                                   elem_id="key-id")
                revoke_key = gr.Button("Revoke", size="sm", variant="stop",
                                       elem_id="key-revoke")
        with gr.Group(visible=False) as admin_part:
            gr.Markdown("### Hosts\nEvery backend host and what the health checks last saw "
                        f"(every {settings.health_interval:g} s, STUDIO_HEALTH_INTERVAL). A "
                        "host that is down or cooling down after a failure gets no work until "
                        "it answers again.")
            hosts_table = gr.Dataframe(headers=HOST_HEADERS, interactive=False, wrap=True,
                                       elem_id="settings-hosts")
            gr.Markdown("### People who may sign in\n(Also on the server: `studio users add "
                        "NAME [--admin]`, `remove NAME`, `passwd NAME`.)")
            users_table = gr.Dataframe(headers=USER_HEADERS, interactive=False,
                                       elem_id="users-table")
            with gr.Row():
                person = gr.Textbox(label="Name", max_lines=1, elem_id="person-name")
                person_pw = gr.Textbox(label="Password (8 characters or more)", type="password",
                                       elem_id="person-password")
                person_admin = gr.Checkbox(label="Admin", value=False, elem_id="person-admin")
            with gr.Row():
                add_person = gr.Button("Add", size="sm", elem_id="person-add")
                reset_person = gr.Button("Set this password", size="sm", elem_id="person-reset")
                remove_person = gr.Button("Remove", size="sm", variant="stop",
                                          elem_id="person-remove")
            gr.Markdown("### Audit log\nSign-ins and admin actions, newest first "
                        f"(kept {settings.audit_days} days, STUDIO_AUDIT_DAYS).")
            audit_refresh = gr.Button("⟳ Refresh", size="sm", elem_id="audit-refresh")
            audit_table = gr.Dataframe(headers=AUDIT_HEADERS, interactive=False, wrap=True,
                                       elem_id="audit-table")
            gr.Markdown("### Configuration\nSettings come from environment variables or a "
                        "`.env` file next to `app.py` (see `.env.example`). Change them there "
                        "and restart the studio.")
            settings_table = gr.Dataframe(headers=["Variable", "Value", "What it does"],
                                          interactive=False, wrap=True, elem_id="settings-table")
    # Inside the tab, off until an admin's page opens it: only admins' pages tick, and only
    # while the tab is shown (ui/app.py switches it off on the other tabs).
    hosts_timer = timer if timer is not None else gr.Timer(
        hosts_tick_seconds(settings.health_interval), active=False)
    board = services.hosts

    def audit_rows() -> list[list[str]]:
        return [[e.at[:19].replace("T", " "), e.user, e.action, e.detail, e.address]
                for e in access.audit.recent(200)]

    def on_users(request: gr.Request = None):
        """The tab opens: your account, and for an admin the admin part."""
        name = page_user(request)
        role = access.role_of(name)
        text = account_markdown(name, role, access.sign_in_required())
        mine = key_rows(name) if access.users.get(name) is not None else []
        if role != "admin":
            return text, gr.update(visible=False), [], [], [], mine, [], gr.Timer(active=False)
        users = [[u.name, u.role] for u in access.users.list()]
        return (text, gr.update(visible=True), users, audit_rows(),
                settings_rows(settings), mine, host_cells(board.rows()), gr.Timer(active=True))

    def on_audit():
        return audit_rows()

    def on_hosts():
        """The timer's tick (admins only, guard.py): what the health checks know now."""
        return host_cells(board.rows())

    def key_rows(user: str) -> list[list]:
        return [[k.id, k.name, k.prefix + "…", k.created_at[:16].replace("T", " "),
                 (k.last_used or "never")[:16].replace("T", " "),
                 "revoked" if k.revoked else "live"] for k in keys.list(user)]

    @ui_errors
    def on_make_key(name, request: gr.Request = None):
        user = page_user(request)
        _key, secret = keys.create(user, name or "")
        access.audit.record(user, "make api key", (name or "").strip())
        return key_rows(user), "", gr.update(value=secret, visible=True)

    @ui_errors
    def on_revoke_key(number, request: gr.Request = None):
        user = page_user(request)
        if not number or not keys.revoke(user, int(number)):
            raise InvalidInput("You have no live key with that number.",
                               hint="The table above lists your keys.")
        access.audit.record(user, "revoke api key", str(int(number)))
        gr.Info("Key revoked: it no longer works.")
        return key_rows(user), None, gr.update(value="", visible=False)

    def people() -> list[list[str]]:
        return [[u.name, u.role] for u in access.users.list()]

    @ui_errors
    def on_add_person(name, password, admin, request: gr.Request = None):
        access.add_user(page_user(request), (name or "").strip(), password or "",
                        admin=bool(admin))
        gr.Info(f"Added {name.strip()}.")
        return people(), "", "", False

    @ui_errors
    def on_reset_person(name, password, admin, request: gr.Request = None):
        access.reset_password(page_user(request), (name or "").strip(), password or "")
        gr.Info(f"New password set for {name.strip()}; their sessions ended.")
        return people(), name, "", admin

    @ui_errors
    def on_remove_person(name, password, admin, request: gr.Request = None):
        access.remove_user(page_user(request), (name or "").strip())
        gr.Info(f"Removed {name.strip()}. What they made is kept.")
        return people(), "", password, False

    @ui_errors
    def on_password(current_pw, new_pw, repeat_pw, request: gr.Request = None):
        token = request.cookies.get(SESSION_COOKIE) if request is not None else None
        access.change_password(page_user(request), current_pw or "", new_pw or "",
                               repeat_pw or "", session=token)
        gr.Info("Password changed. Your other devices are signed out.")
        return "", "", ""

    # In the browser only: the front door (/signout) ends the session and the cookie.
    sign_out.click(None, js="() => { window.location.assign('/signout'); }",
                   api_visibility="private", queue=False)
    change.click(on_password, [current, new, repeat], [current, new, repeat],
                 api_visibility="private")
    audit_refresh.click(on_audit, None, [audit_table], api_visibility="private")
    hosts_timer.tick(on_hosts, None, [hosts_table], api_visibility="private",
                     concurrency_limit=None, concurrency_id="settings-hosts",
                     show_progress="hidden")
    person_in, person_out = [person, person_pw, person_admin], [users_table, person, person_pw,
                                                               person_admin]
    add_person.click(on_add_person, person_in, person_out, api_visibility="private")
    reset_person.click(on_reset_person, person_in, person_out, api_visibility="private")
    remove_person.click(on_remove_person, person_in, person_out, api_visibility="private")
    make_key.click(on_make_key, [key_name], [keys_table, key_name, new_key],
                   api_visibility="private")
    revoke_key.click(on_revoke_key, [key_id], [keys_table, key_id, new_key],
                     api_visibility="private")
    return SimpleNamespace(open_fn=on_users, on_hosts=on_hosts, timer=hosts_timer,
                           open_outputs=[account, admin_part, users_table, audit_table,
                                         settings_table, keys_table, hosts_table, hosts_timer])
