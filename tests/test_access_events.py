"""Every event of the app, called straight through Gradio's queue (no page, no buttons) as a
visitor, as a plain user and as an admin: visitors reach none, plain users none of the
admin ones, and a refused call changes nothing. The list comes from the app itself, so an
event nobody classified in studio/ui/guard.py fails here (the app refuses to build)."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import httpx
import pytest

from studio.config import Settings
from studio.ui.guard import ADMIN, REFUSED, origin_of, role_needed
from tests.conftest import free_port
from tests.lazy_tabs import page_config, render_in_session

PASSWORDS = {"ann": "ann-password-1", "bob": "bob-password-1"}


@pytest.fixture(scope="module")
def signed_studio(tmp_path_factory):
    from studio.access.users import Users
    from studio.services import build_services
    from studio.store.db import Store
    from studio.ui.app import build_app, launch_kwargs
    from tests.conftest import running_fake_ollama
    from tests.fakes.comfyui_server import FakeComfyUI

    data = tmp_path_factory.mktemp("signed")
    store = Store.open(data / "studio.db")
    users = Users(store)
    users.add("ann", PASSWORDS["ann"], admin=True)
    users.add("bob", PASSWORDS["bob"])
    store.close()
    ollama, comfy = running_fake_ollama(), FakeComfyUI().__enter__()
    models = data / "comfy-models"
    (models / "checkpoints").mkdir(parents=True)
    (models / "checkpoints" / "keep.safetensors").write_bytes(b"x" * 10)
    settings = Settings.from_env({"STUDIO_DATA_DIR": str(data), "OLLAMA_HOST": ollama.url,
                                  "COMFYUI_URL": comfy.url, "COMFYUI_MODELS_DIR": str(models)},
                                 dotenv_path=None)
    services = build_services(settings)
    demo = build_app(services)
    demo.queue(default_concurrency_limit=4)
    kwargs = {**launch_kwargs(services), "server_port": free_port(), "share": False}
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **kwargs)
    yield SimpleNamespace(url=url.rstrip("/"), demo=demo, ollama=ollama, comfy=comfy,
                          models=models, services=services)
    demo.close()
    services.images.close(cancel=True)
    comfy.__exit__(None, None, None)
    ollama.stop()


def sign_in(url: str, name: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=10)
    response = client.post("/signin", data={"username": name, "password": PASSWORDS[name]})
    assert response.status_code == 303, response.text
    return client


def inputs_of(config: dict, dependency: dict) -> list:
    """Each input component's initial value, as a page would send it."""
    by_id = {c["id"]: c for c in config["components"]}
    return [by_id[i].get("props", {}).get("value") for i in dependency["inputs"]]


def first_answer(client: httpx.Client, config: dict, dependency: dict,
                 session: str | None = None) -> tuple[str, str]:
    """Call one event through the queue (in a new page session, or ``session``);
    ("refused"|"error"|"ran", error text) from the first message it sends back."""
    session = session or uuid.uuid4().hex
    joined = client.post("/gradio_api/queue/join", json={
        "data": inputs_of(config, dependency),
        "event_data": {"index": 0, "value": "", "selected": True, "previous_value": ""},
        "fn_index": dependency["id"], "trigger_id": None, "session_hash": session})
    if joined.status_code != 200:
        return "error", f"join answered {joined.status_code}"
    try:
        with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session},
                           timeout=8) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_generating":
                    return "ran", ""
                if msg.get("msg") == "process_completed":
                    if msg.get("success", True):
                        return "ran", ""
                    error = str((msg.get("output") or {}).get("error") or "")
                    return ("refused" if REFUSED in error else "error"), error
                if msg.get("msg") == "close_stream":
                    return "ran", ""
    except httpx.ReadTimeout:
        return "ran", "still running"  # a follower that waits: it was let in
    return "ran", ""


def events(demo) -> list[tuple[int, str]]:
    """(dependency id, role) of every event with a server function."""
    return [(i, role_needed(fn.fn)) for i, fn in demo.fns.items() if fn.fn is not None]


def lazy_events(client: httpx.Client, demo) -> tuple[str, dict, list[tuple[int, str]]]:
    """Every lazy tab built in a new page session of ``client`` through the queue route
    (studio/ui/lazy.py), as opening each tab does: (session, the rendered configs,
    (dependency id, role) of every event the tabs made there)."""
    session = uuid.uuid4().hex
    config = client.get("/config").json()
    rendered = render_in_session(client, config, session)
    # A rendered event may read the page's own components too (the Chat tab's tools).
    rendered["components"] = [*config["components"], *rendered["components"]]
    fns = demo.state_holder[session].blocks_config.fns
    return session, rendered, [(i, role_needed(fn.fn)) for i, fn in fns.items()
                               if fn.fn is not None and fn.rendered_in is not None]


def test_access_events_every_event_is_classified(signed_studio):
    """The app's events and those its lazy tabs make when a page opens them (an
    unclassified one there would fail that tab's render)."""
    roles = events(signed_studio.demo)
    fns = page_config(signed_studio.demo).fns
    assert len(fns) > 100
    for fn in fns.values():
        if fn.fn is not None:
            assert fn.fn.studio_role == role_needed(fn.fn)
    assert {role_needed(fn.fn) for fn in fns.values() if fn.fn is not None} == {"user", "admin"}
    assert {role for _, role in roles} == {"user"}  # the tabs for admins are built later


def test_access_events_a_visitor_reaches_nothing(signed_studio):
    url, demo = signed_studio.url, signed_studio.demo
    visitor = httpx.Client(base_url=url, timeout=10)
    assert visitor.get("/config").status_code == 401
    assert visitor.get("/gradio_api/info").status_code == 401
    for fn_index, _role in events(demo):
        response = visitor.post("/gradio_api/queue/join", json={
            "data": [], "fn_index": fn_index, "session_hash": uuid.uuid4().hex})
        assert response.status_code == 401, fn_index


def test_access_events_a_plain_user_gets_no_admin_event(signed_studio):
    s = signed_studio
    url, demo, ollama, comfy, models = s.url, s.demo, s.ollama, s.comfy, s.models
    bob = sign_in(url, "bob")
    config = bob.get("/config").json()
    dependencies = {d["id"]: d for d in config["dependencies"]}
    outcomes = {}
    for fn_index, role in events(demo):
        outcomes[fn_index] = (role, *first_answer(bob, config, dependencies[fn_index]))
    # The tabs built when a page opens them: their events live in that page's session.
    session, rendered, roles = lazy_events(bob, demo)
    rendered_deps = {d["id"]: d for d in rendered["dependencies"]}
    for fn_index, role in roles:
        outcomes[fn_index] = (role, *first_answer(bob, rendered, rendered_deps[fn_index],
                                                  session=session))
    wrong = {i: o for i, o in outcomes.items()
             if (o[0] == ADMIN) != (o[1] == "refused")}
    assert not wrong, wrong
    assert sum(1 for o in outcomes.values() if o[0] == ADMIN) >= 20
    # Nothing an admin event does happened.
    for path in ("/api/delete", "/api/pull", "/api/copy"):
        assert ollama.requests_to(path) == [], path
    assert comfy.requests_to("/free") == []
    assert (models / "checkpoints" / "keep.safetensors").exists()


def test_access_events_an_admin_is_refused_nothing(signed_studio):
    url, demo = signed_studio.url, signed_studio.demo
    ann = sign_in(url, "ann")
    config = ann.get("/config").json()
    dependencies = {d["id"]: d for d in config["dependencies"]}
    admin_events = [i for i, role in events(demo) if role == ADMIN]
    refused = [i for i in admin_events
               if first_answer(ann, config, dependencies[i])[0] == "refused"]
    session, rendered, roles = lazy_events(ann, demo)
    rendered_deps = {d["id"]: d for d in rendered["dependencies"]}
    refused += [i for i, role in roles if role == ADMIN and first_answer(
        ann, rendered, rendered_deps[i], session=session)[0] == "refused"]
    assert refused == []


@pytest.mark.parametrize("module, action", [
    ("models", "on_delete"), ("models", "on_pull"), ("models", "on_file_delete"),
    ("settings", "on_add_person"), ("settings", "on_remove_person")])
def test_access_events_lazy_tabs_admin_actions_refuse_a_plain_user(signed_studio, module,
                                                                  action):
    """The Models and Settings tabs are built in the page that opens them (their events
    are made there, after the app's were checked): a plain user calling their admin
    actions straight through the queue is refused, and nothing happens."""
    s = signed_studio
    bob = sign_in(s.url, "bob")
    session, rendered, _roles = lazy_events(bob, s.demo)
    fns = s.demo.state_holder[session].blocks_config.fns
    wanted = (f"studio.ui.{module}", f"render.<locals>.{action}")
    fn_index, *_others = [i for i, fn in fns.items() if fn.fn is not None
                          and fn.rendered_in is not None and origin_of(fn.fn) == wanted]
    dependency = next(d for d in rendered["dependencies"] if d["id"] == fn_index)
    outcome = first_answer(bob, rendered, dependency, session=session)
    assert outcome[0] == "refused", outcome
    assert s.ollama.requests_to("/api/delete") == []
    assert s.ollama.requests_to("/api/pull") == []
    assert (s.models / "checkpoints" / "keep.safetensors").exists()
    names = [u.name for u in s.services.access.users.list()]
    assert "mallory" not in names and "ann" in names


def test_access_events_lazy_tabs_get_the_apps_policy(signed_studio):
    """What a lazy tab's render makes gets what the app's events get at build time: the
    role check, the audit of admin changes, a concurrency limit and a group shared by
    every page (not one per page, which Gradio's queue would keep forever)."""
    s = signed_studio
    from studio.ui.app import QUICK_LIMIT
    from studio.ui.guard import AUDITED

    pages = []
    for _ in range(2):
        session, _rendered, _roles = lazy_events(sign_in(s.url, "bob"), s.demo)
        fns = s.demo.state_holder[session].blocks_config.fns
        pages.append({origin_of(fn.fn): fn for fn in fns.values()
                      if fn.fn is not None and fn.rendered_in is not None})
    first, second = pages
    assert len(first) > 60 and first.keys() == second.keys()
    for origin, fn in first.items():
        assert fn.fn.studio_role == role_needed(fn.fn), origin
        assert fn.concurrency_limit in (None, QUICK_LIMIT), origin
        assert fn.concurrency_id == second[origin].concurrency_id, origin
    audited = [o for o in first if o[1].rsplit(".", 1)[-1] in AUDITED]
    assert len(audited) >= 8


def sent_with_a_picture(services, tmp_path, name: str, text: str, user: str, color: str):
    """A chat of ``user``'s whose message has a picture; (its chat id, the stored upload)."""
    from PIL import Image

    picture = tmp_path / name
    Image.new("RGB", (8, 8), color).save(picture)
    started = services.chat.send(None, text, [str(picture)], model="ollama:llava:latest",
                                 user=user)
    assert started.reply.settled.wait(10)
    [turn] = [t for t in services.chat.turns(started.chat_id, user=user) if t.role == "user"]
    return started.chat_id, turn.images[0]


def test_access_files_reach_only_their_owner(signed_studio, tmp_path):
    """The file route: bob's attachment and export go to bob alone; the database to nobody."""
    url, services = signed_studio.url, signed_studio.services
    chat_id, upload = sent_with_a_picture(services, tmp_path, "cat.png", "look", "bob", "red")
    export = services.chat.export(chat_id, "md", user="bob")
    bob, ann = sign_in(url, "bob"), sign_in(url, "ann")
    visitor = httpx.Client(base_url=url, timeout=10)
    for path in (upload, str(export)):
        assert bob.get(f"/gradio_api/file={path}").status_code == 200, path
        assert ann.get(f"/gradio_api/file={path}").status_code == 404, path
        assert visitor.get(f"/gradio_api/file={path}").status_code == 401, path
    db = services.settings.db_path
    for path in (db, f"{db}-wal", f"{db.parent}/uploads/../studio.db",
                 f"{db.parent}/uploads/%2e%2e/studio.db", f"{db.parent}/outputs/../../etc/passwd"):
        for client in (bob, ann):
            response = client.get(f"/gradio_api/file={path}")
            assert response.status_code in (403, 404), (path, response.status_code)
            assert b"SQLite format" not in response.content


def test_access_the_page_never_learns_the_data_folder(signed_studio, tmp_path):
    """Pictures reach the page through Gradio's cache, never by their path in the data
    folder (whose parent holds the database)."""
    url, services = signed_studio.url, signed_studio.services
    data_dir = str(services.settings.data_path)
    chat_id, _ = sent_with_a_picture(services, tmp_path, "dog.png", "a dog", "bob", "blue")
    bob = sign_in(url, "bob")
    config = bob.get("/config")
    assert data_dir not in config.text
    dependency = next(d for d in config.json()["dependencies"]
                      if d.get("api_name") == "open_conversation")
    session = uuid.uuid4().hex
    by_id = {c["id"]: c for c in config.json()["components"]}
    data = [chat_id if i == dependency["inputs"][0]
            else by_id[i].get("props", {}).get("value") for i in dependency["inputs"]]
    bob.post("/gradio_api/queue/join", json={"data": data, "fn_index": dependency["id"],
                                            "session_hash": session}).raise_for_status()
    seen = ""
    with bob.stream("GET", "/gradio_api/queue/data", params={"session_hash": session},
                    timeout=10) as stream:
        for line in stream.iter_lines():
            seen += line
            if "process_completed" in line:
                break
    assert "a dog" in seen and "gradio_api/file=" in seen  # the picture went out, by cache
    assert data_dir not in seen


def test_access_send_takes_no_picture_by_a_path_on_the_server(signed_studio, tmp_path):
    """The message's pictures come through a hidden File (ui/chat.py): a caller naming a
    file on the server instead of one it uploaded (the database, another person's upload)
    is refused before anything is sent or stored, by Gradio's check of the upload folder."""
    url, services = signed_studio.url, signed_studio.services
    _, ann_upload = sent_with_a_picture(services, tmp_path, "ann.png", "ann's", "ann", "red")
    bob = sign_in(url, "bob")
    config = bob.get("/config").json()
    send = next(d for d in config["dependencies"] if d.get("api_name") == "send")
    before = len(signed_studio.ollama.requests_to("/api/chat"))
    for path in (str(services.settings.db_path), ann_upload):
        session = uuid.uuid4().hex
        by_elem = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
        given = {"outgoing-text": f"look {session}", "model-picker": "ollama:llava:latest",
                 "outgoing-files": [{"path": path, "orig_name": "x.png",
                                     "meta": {"_type": "gradio.FileData"}}]}
        data = [given.get(by_elem[i], value)
                for i, value in zip(send["inputs"], inputs_of(config, send))]
        bob.post("/gradio_api/queue/join", json={
            "data": data, "fn_index": send["id"], "trigger_id": None,
            "session_hash": session}).raise_for_status()
        done = None
        with bob.stream("GET", "/gradio_api/queue/data", params={"session_hash": session},
                        timeout=10) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:") and '"process_completed"' in line:
                    done = json.loads(line[5:])
                    break
        assert done is not None and done.get("success") is False, (path, done)
        assert path in str((done.get("output") or {}).get("error")), done  # refused for it
        assert not services.chat.conversations(user="bob", query=session)
    assert len(signed_studio.ollama.requests_to("/api/chat")) == before
