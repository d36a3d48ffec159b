"""Who may call each event: one check every handler goes through, on the server.

``secure_functions(block_fns, role_of)`` wraps every event function of the app (and of each
render a page runs: a lazy tab, the Chat tab's "This chat") in a check of the caller's role
before it runs. Hiding a button protects nothing (any event can be called through Gradio's
queue by whoever reaches the port), so the check lives here, and the classification is one
explicit table: an event whose function nobody classified stops the app from being built
(and ``tests/test_access_events.py`` fails), so a new handler can't slip in unchecked.

Roles: ``user`` (any signed-in person, admins included) and ``admin``. Visitors who are
not signed in never reach an event: the front door (``studio.access.web``) refuses them.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable, Iterable

import gradio as gr
from gradio.block_function import BlockFunction
from gradio.context import LocalContext
from gradio.renderable import Renderable

from .common import refusal

USER, ADMIN = "user", "admin"
REFUSED = "Only an admin can do this. Ask whoever runs this studio."
SIGNED_OUT = "You are signed out. Reload the page and sign in again."

LAMBDA = "<lambda>"  # layout-only steps (show a confirm button, switch a timer)

# module -> {function qualname -> role}. Every event function of the app is listed.
EVENTS: dict[str, dict[str, str]] = {
    "studio.ui.app": {
        "build_app.<locals>.on_tab_switch": USER, "build_app.<locals>.on_status": USER,
        "build_app.<locals>.on_models_filled": USER,
        "build_app.<locals>.on_tick": USER, "build_app.<locals>.on_models": USER,
        "build_app.<locals>.build_arena.<locals>.on_arena_models": USER,
    },
    "studio.ui.lazy": {"LazyTab.__init__.<locals>.contents": USER},
    "studio.ui.chat": {"render.<locals>.this_chat": USER,
                       "render.<locals>.import_chats": USER,
                       f"render.<locals>.wire_this_chat.<locals>.{LAMBDA}": USER},
    "studio.ui.chat_handlers": {f"ChatPage.{name}": USER for name in (
        "on_refresh_models", "on_cost_hint", "on_preset", "on_open", "on_send", "on_stop",
        "on_retry", "on_edit", "on_new", "on_search", "on_rename", "on_delete",
        "on_export_markdown", "on_export_json", "on_page_load", "on_follow", "on_take_back",
        "on_pin", "on_import", "on_turn_action", "on_title", "on_earlier", "on_newer")},
    "studio.ui.images": {f"render.<locals>.{name}": USER for name in (
        LAMBDA, "on_load", "on_load_jobs", "on_refresh", "on_generate",
        "on_gallery", "on_cancel", "on_follow", "on_jobs_refresh", "on_input_upload",
        "on_workflow_upload", "on_gallery_open", "on_filters", "on_favourite", "on_select",
        "on_delete", "on_reuse", "on_prev", "on_next", "on_inputs_panel", "on_map_inputs")},
    "studio.ui.storage": {f"render.<locals>.{name}": ADMIN for name in (
        "on_retention_check", "on_retention_delete", "on_unused", "on_unused_delete_ask",
        "on_unused_delete", "on_delete_keep")},
    "studio.ui.models": {f"render.<locals>.{name}": ADMIN for name in (
        LAMBDA, "on_open", "on_gpu_tick", "on_pull", "on_cancel", "on_table_select",
        "on_details", "on_delete_ask", "on_delete", "on_delete_keep", "on_copy", "on_unload",
        "on_unload_idle", "on_free_comfyui", "on_folder", "on_comfy_hosts", "on_download",
        "on_file_delete_ask",
        "on_file_delete")},
    "studio.ui.costs": {f"render.<locals>.{name}": USER for name in (
        "on_refresh", "on_credit", "on_catalog", "on_compare", "on_filter", "on_export")},
    "studio.ui.arena": {f"render.<locals>.{name}": USER for name in (
        "on_load", "on_refresh", "on_run", "on_stop", "make_vote.<locals>.on_vote", "on_open")},
    "studio.ui.settings": {
        "render.<locals>.on_password": USER, "render.<locals>.on_audit": ADMIN,
        "render.<locals>.on_hosts": ADMIN,
        "render.<locals>.on_add_person": ADMIN, "render.<locals>.on_reset_person": ADMIN,
        "render.<locals>.on_remove_person": ADMIN,
        "render.<locals>.on_make_key": USER, "render.<locals>.on_revoke_key": USER,
        # on_users fills the admin part for admins only (it checks the role itself).
        "render.<locals>.on_users": USER},
}


# Admin events that change something: each call goes into the audit log (reading ones,
# like the GPU panel's tick, would drown it).
AUDITED = frozenset({
    "on_pull", "on_cancel", "on_delete", "on_copy", "on_unload", "on_unload_idle",
    "on_free_comfyui", "on_download", "on_file_delete", "on_retention_delete",
    "on_unused_delete"})


class Unclassified(RuntimeError):
    """An event function that ``EVENTS`` doesn't list."""


def origin_of(fn: Callable) -> tuple[str, str]:
    """(module, qualname) of the function under any wrappers and bound methods; for a
    ``@gr.render`` (a lazy tab's, the Chat tab's tools), of the function it renders."""
    target = fn
    while True:
        if isinstance(getattr(target, "__self__", None), Renderable):
            target = target.__self__.fn
        target = getattr(target, "__func__", target)
        inner = getattr(target, "__wrapped__", None)
        if inner is None:
            break
        target = inner
    return target.__module__, target.__qualname__


def role_needed(fn: Callable) -> str:
    """The role an event function needs; raises ``Unclassified`` when nobody said."""
    module, qualname = origin_of(fn)
    if LAMBDA in qualname:
        qualname = qualname[:qualname.index(LAMBDA) + len(LAMBDA)]
    role = EVENTS.get(module, {}).get(qualname)
    if role is None:
        raise Unclassified(f"The event function {module}.{qualname} has no role: add it to "
                           "studio/ui/guard.py EVENTS (user or admin).")
    return role


def current_user() -> str | None:
    """The signed-in name of the request this handler runs for (None outside an event)."""
    request = LocalContext.request.get(None)
    return getattr(request, "username", None) if request is not None else None


Audit = Callable[..., None]  # audit(user, action, detail, address)


def secure_functions(block_fns: Iterable[BlockFunction],
                     role_of: Callable[[str | None], str | None],
                     audit: Audit | None = None) -> None:
    """Wrap each event function in the role check: the app's at build time, and those a
    render creates in a page's session (``ui/lazy.py``, ``finish_render``). ``role_of(name)`` gives
    "admin", "user", or None for nobody (a user removed since the page opened). Admin
    events that change something are recorded with ``audit``. One already checked is left
    as it is."""
    for block_fn in block_fns:
        fn = block_fn.fn
        if fn is None or hasattr(fn, "studio_role"):
            continue
        action = origin_of(fn)[1].rsplit(".", 1)[-1]
        block_fn.fn = checked(fn, role_needed(fn), role_of,
                              audit if action in AUDITED else None)


def checked(fn: Callable, needed: str, role_of: Callable[[str | None], str | None],
            audit: Audit | None = None) -> Callable:
    """``fn`` refusing (before it runs, so nothing changes) callers without ``needed``."""
    action = origin_of(fn)[1].rsplit(".", 1)[-1].removeprefix("on_").replace("_", " ")

    def check(args: tuple) -> None:
        user = current_user()
        role = role_of(user)
        if role is None:
            raise refusal(SIGNED_OUT, action)
        if needed == ADMIN and role != ADMIN:
            raise refusal(REFUSED, action)
        if audit is not None:
            request = LocalContext.request.get(None)
            client = getattr(request, "client", None)
            words = [a for a in args if isinstance(a, str) and a.strip()]
            audit(user or "", action, ", ".join(words)[:200],
                  getattr(client, "host", "") or "")

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            check(args)
            yield from fn(*args, **kwargs)
        wrapper = gen
    elif inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def coro(*args, **kwargs):
            check(args)
            return await fn(*args, **kwargs)
        wrapper = coro
    else:
        @functools.wraps(fn)
        def plain(*args, **kwargs):
            check(args)
            return fn(*args, **kwargs)
        wrapper = plain
    wrapper.studio_role = needed  # type: ignore[attr-defined]
    return wrapper
