"""Bad input, fuzzed: property-based tests (hypothesis) over every place where text or bytes
from outside come in. Each property is the same: a call either succeeds or raises a
StudioError whose message is a sentence (naming the bad value where there is one), never
another exception type, and it returns (a deadline catches the slow ones).

The examples are derandomized and no example database is kept, so a CI run is the same
every time; each test is bounded so the whole file runs in seconds. No network except the
loopback-free stubs below: the chat service gets a stream function that answers at once.
"""

from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from studio.chat.replies import ReplyManager
from studio.chat.router import Router
from studio.chat.service import ChatService
from studio.config import Settings
from studio.errors import StudioError
from studio.events import ChatDelta, ChatDone
from studio.images import plans, workflows
from studio.model_id import BACKENDS, ModelId
from studio.models.files import delete_model_file, model_path, plan_download
from studio.store.db import SearchHit, Store, fts_match_query, storable_text

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def fuzz(max_examples: int, deadline_ms: int = 2000):
    """Bounded and reproducible: the same examples on every run, none remembered."""
    return settings(max_examples=max_examples, deadline=deadline_ms, derandomize=True,
                    database=None, suppress_health_check=[HealthCheck.too_slow])


def attempt(call, *names: str, opening: tuple[str, ...] = ()):
    """``call()``'s result, or None when it raised a StudioError that reads as a sentence
    (and names one of ``names``, when given; it may open with a name in ``opening``, such
    as a file's). Any other exception fails the test."""
    try:
        return call()
    except StudioError as err:
        message = err.message.strip()
        assert message, f"{type(err).__name__} without a message"
        assert message[-1] in ".?!", f"not a sentence: {message!r}"
        first = message.split(" ", 1)[0]
        # A sentence may open with a name as written ("cfg must be a number", a file name).
        assert (not first[0].islower() or first in workflows.PARAM_TYPES or first in opening
                or any(c in first for c in "_.:/")), f"not a sentence: {message!r}"
        if names:
            assert any(name in str(err) for name in names), (names, str(err))
        return None


# -- strategies ----------------------------------------------------------------------------

surrogates = st.characters(categories=["Cs"])
# Text as a broken client can send it: any code point, lone surrogates included (a JSON
# body with "\ud800" decodes to one).
any_text = st.lists(st.characters() | surrogates, max_size=40).map("".join)
json_scalars = (st.none() | st.booleans() | st.integers() | st.just(10**400)
                | st.floats() | st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=4),
    max_leaves=16)
node_ids = st.sampled_from(["1", "2", "3", "10", "²", "٣", "a", ""]) | st.text(max_size=3)
links = st.tuples(node_ids, st.integers(-1, 3)).map(list)
input_names = (st.sampled_from(["positive", "negative", "seed", "noise_seed", "steps", "cfg",
                                "text", "latent_image", "width", "height", "batch_size",
                                "ckpt_name", "conditioning", "clip_l", "t5xxl"])
               | st.text(max_size=6))
class_types = (st.sampled_from(["KSampler", "CLIPTextEncode", "CLIPTextEncodeSDXL",
                                "EmptyLatentImage", "CheckpointLoaderSimple", "RandomNoise",
                                "ControlNetApplyAdvanced", "SaveImage", "UNETLoader"])
               | json_values)
nodes = st.fixed_dictionaries(
    {"class_type": class_types,
     "inputs": st.dictionaries(input_names, links | json_values, max_size=6) | json_values})
api_graphs = st.dictionaries(node_ids, nodes, min_size=1, max_size=6)
ui_graphs = st.fixed_dictionaries({"nodes": st.lists(json_values, max_size=3),
                                   "links": json_values})


def _dumps(obj) -> bytes:
    return json.dumps(obj).encode()


uploads = st.one_of(
    st.binary(max_size=300),
    json_values.map(_dumps),
    api_graphs.map(_dumps),
    api_graphs.map(lambda graph: _dumps({"prompt": graph})),
    ui_graphs.map(_dumps),
    st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n),  # nested past any stack
    st.integers(1, 100_000).map(lambda n: b'{"a":' * n),
)


# -- the custom-workflow importer and templating ---------------------------------------------


@fuzz(max_examples=250)
@given(data=uploads, filename=any_text)
def test_fuzz_custom_workflow_upload_is_kept_or_refused_in_a_sentence(data, filename):
    with tempfile.TemporaryDirectory() as folder:
        library = plans.WorkflowLibrary(Path(folder) / "builtin", Path(folder) / "custom")
        template = attempt(lambda: library.add_custom(filename, data))
        # Whatever was uploaded, the library still loads (a file it kept never breaks it).
        assert library.refresh() is not None
        if template is not None:
            assert template.name in library.templates()
            attempt(lambda: plans.form_defaults(template))


@fuzz(max_examples=150)
@given(graph=api_graphs, params=st.dictionaries(
    st.sampled_from(sorted(workflows.PARAM_TYPES)), json_values, max_size=5))
def test_fuzz_detected_inputs_render_or_refuse(graph, params):
    graph = attempt(lambda: workflows.parse_workflow_json(json.dumps(graph)))
    if graph is None:
        return
    template = workflows.template_from_graph("custom_x", graph)
    before = copy.deepcopy(template.graph)
    rendered = attempt(lambda: workflows.render(template, params))
    assert template.graph == before
    if rendered is not None:
        assert workflows.is_api_format(rendered)


TEMPLATES = workflows.load_templates(WORKFLOWS)
param_values = (json_values | st.sampled_from(["nan", "inf", "-inf", "1e400", " 7 ", "0x10"])
                | st.floats(allow_nan=True, allow_infinity=True))


@fuzz(max_examples=300)
@given(name=st.sampled_from(sorted(TEMPLATES)),
       params=st.dictionaries(st.sampled_from(sorted(workflows.PARAM_TYPES)) | st.text(max_size=6),
                              param_values, max_size=6))
@example(name="sd15_txt2img", params={"prompt": "x", "cfg": 10**400})
@example(name="sd15_txt2img", params={"prompt": "x", "seed": 2**63 + 1})
@example(name="sd15_txt2img", params={"prompt": "x", "seed": "18446744073709551615"})
def test_fuzz_render_fills_a_copy_or_names_the_parameter(name, params):
    template = TEMPLATES[name]
    before = copy.deepcopy(template.graph)
    rendered = attempt(lambda: workflows.render(template, params))
    assert template.graph == before  # never mutated, whatever happened
    if rendered is None:
        return
    json.dumps(rendered, allow_nan=False)  # what ComfyUI gets is plain JSON
    for param, value in params.items():
        if (param in template.mapping and workflows.PARAM_TYPES.get(param) is int
                and isinstance(value, int) and not isinstance(value, bool)):
            target = template.mapping[param][0]
            assert rendered[target.node]["inputs"][target.input] == value  # every digit kept


# -- settings and .env -----------------------------------------------------------------------

setting_values = (any_text.filter(lambda s: "\x00" not in s)
                  | st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e309", "1_000", " 12 ",
                                     "true", "off", "0x10", "١٢", "http://", "https://x",
                                     "#12345g", "ollama:a=openrouter:b", "a=b=c", ";;", "=x"])
                  | st.integers().map(str) | st.floats().map(str))
ENV_NAMES = [f.metadata["env"] for f in fields(Settings)]


@fuzz(max_examples=400)
@given(env=st.fixed_dictionaries({}, optional={name: setting_values for name in ENV_NAMES}))
def test_fuzz_settings_load_or_name_the_variable(env):
    loaded = attempt(lambda: Settings.from_env(env, dotenv_path=None), *env)
    if loaded is not None:
        loaded.fallback_chains, loaded.ollama_url, loaded.db_path  # noqa: B018 - none raise


dotenv_lines = st.lists(
    st.tuples(st.sampled_from(ENV_NAMES) | st.text(max_size=6),
              st.sampled_from(["=", " = ", "=\"", "='", ": "]), setting_values)
    .map("".join) | any_text.filter(lambda s: "\x00" not in s), max_size=6)


@fuzz(max_examples=200)
@given(text=dotenv_lines.map("\n".join), raw=st.binary(max_size=80), as_bytes=st.booleans())
def test_fuzz_dotenv_file_loads_or_names_the_file(text, raw, as_bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ".env"
        if as_bytes:
            path.write_bytes(raw)
        else:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        attempt(lambda: Settings.from_env({}, dotenv_path=str(path)), ".env", *ENV_NAMES)


# -- model ids -------------------------------------------------------------------------------

model_texts = (any_text | st.tuples(st.sampled_from([*BACKENDS, "", " ", "x"]),
                                     st.sampled_from([":", "", "::"]), any_text).map("".join))


@fuzz(max_examples=400)
@given(text=model_texts)
def test_fuzz_model_ids_parse_round_trip_or_refuse(text):
    model = attempt(lambda: ModelId.parse(text), repr(text))
    if model is not None:
        assert ModelId.parse(str(model)) == model
    known = attempt(lambda: ModelId.known(text), repr(text))
    if known is not None:
        assert known.backend in BACKENDS and known == model


# -- file names for model downloads ----------------------------------------------------------

FOLDERS = ["checkpoints", "loras"]
urls = (any_text
        | st.tuples(st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "http:/"]),
                    any_text, st.sampled_from(["/", "/x/", ""]), any_text).map("".join)
        | st.sampled_from(["http://[::1", "http://[x]/a.bin", "https://a\uff03b/c.bin",
                           "http://h/%2e%2e", "http://h/a%00b", "http://h/.bashrc",
                           "https://h/x.part", "http://h:99999/a", "http://h/" + "a" * 300]))
file_names = st.none() | any_text | st.sampled_from(
    ["..", ".", "a/b", "a\\b", ".hidden", "x.PART", "\x00", "a" * 256, "é" * 128, " ok.bin "])


@fuzz(max_examples=400)
@given(url=urls, folder=st.sampled_from([*FOLDERS, "custom_nodes", "..", "", "."]) | any_text,
       filename=file_names)
def test_fuzz_download_target_stays_in_its_folder_or_is_refused(url, folder, filename):
    with tempfile.TemporaryDirectory() as models_dir:
        root = Path(models_dir).resolve()
        for name in FOLDERS:
            (root / name).mkdir()
        plan = attempt(lambda: plan_download(url, folder, filename, root, FOLDERS))
        if plan is not None:
            assert plan.target.parent == root / plan.folder and plan.folder in FOLDERS
            assert plan.part.parent == plan.target.parent
        if filename is not None:
            path = attempt(lambda: model_path(root, folder, filename, FOLDERS))
            if path is not None:
                assert path.parent.parent == root
            attempt(lambda: delete_model_file(root, folder, filename, FOLDERS))
        assert sorted(p.name for p in root.iterdir()) == FOLDERS  # nothing left outside


# -- history search --------------------------------------------------------------------------

fts_words = st.sampled_from(['"', "'", '""', "OR", "AND", "NOT", "NEAR(", "NEAR", "*", "^",
                             "-", ":", "(", ")", "{", "}", "content:", "title:", "+", "\x00",
                             "\ud800", "ǅ", "ß", "ﬁ", "İ", "e\u0301", "𝔘", "\u200b"])
queries = any_text | st.lists(fts_words | st.text(max_size=5), max_size=8).map(" ".join) | \
    st.lists(fts_words, max_size=8).map("".join)


@pytest.fixture(scope="module")
def search_store():
    store = Store.memory()
    conv = store.create_conversation("Python \"quotes\" OR NEAR( tricks", user="ada")
    for text in ["plain words", "naïve café", 'say "hi"', "NEAR(a b)", "x* OR y", "日本語の文"]:
        store.add_message(conv.id, "user", text)
    yield store, conv.id
    store.close()


@fuzz(max_examples=300)
@given(query=queries, content=any_text, user=st.sampled_from([None, "ada", "bob"]))
def test_fuzz_search_answers_any_text_and_finds_what_was_written(search_store, query, content,
                                                                 user):
    store, conv_id = search_store
    hits = attempt(lambda: store.search(query, user=user))
    assert hits is not None and all(isinstance(h, SearchHit) for h in hits)
    written = attempt(lambda: store.add_message(conv_id, "user", content))
    if written is not None and fts_match_query(content):
        found = store.search(content, user="ada", limit=10_000)
        assert written.id in {hit.message_id for hit in found}, content


# -- chat messages and attachments -----------------------------------------------------------

VISION = "ollama:llava:latest"
LOCAL = "ollama:llama3.2:latest"


def _answer(model_id, messages, options=None, **_):
    model = ModelId.parse(model_id)
    yield ChatDelta("ok")
    yield ChatDone(model.backend, model.name)


@pytest.fixture(scope="module")
def chat_service(tmp_path_factory):
    store = Store.memory()
    folder = tmp_path_factory.mktemp("fuzz-chat")
    router = Router({})
    service = ChatService(store, ReplyManager(_answer, store, flush_every=0.01), router,
                          uploads_dir=folder / "uploads", exports_dir=folder / "exports",
                          max_message_chars=500,
                          supports_images=lambda model: model.name.startswith("llava"))
    yield service, store, folder
    store.close()


attachments = st.lists(
    st.tuples(st.binary(max_size=64) | st.sampled_from([b"\x89PNG\r\n\x1a\n", b"GIF89a",
                                                        b"\xff\xd8\xff"]),
              st.sampled_from([".png", ".jpg", ".gif", ".webp", ".txt", ""])),
    max_size=2)


@fuzz(max_examples=150, deadline_ms=5000)
@given(text=any_text | st.text(min_size=490, max_size=520), files=attachments,
       model=st.sampled_from([LOCAL, VISION, "", "ollama:", "nope:x"]) | any_text,
       system_prompt=any_text, incognito=st.booleans())
def test_fuzz_chat_send_starts_a_reply_or_refuses_in_a_sentence(chat_service, text, files, model,
                                                                system_prompt, incognito):
    service, store, folder = chat_service
    paths = []
    for n, (data, suffix) in enumerate(files):
        path = folder / f"attachment{n}{suffix}"
        path.write_bytes(data)
        paths.append(path)
    started = attempt(lambda: service.send(None, text, paths, model=model, user="ada",
                                           system_prompt=system_prompt, incognito=incognito),
                      opening=tuple(p.name for p in paths))
    if started is None:
        return
    assert started.reply.settled.wait(5)
    turns = service.open(started.chat_id, user="ada").turns
    assert [t.role for t in turns] == ["user", "assistant"]
    assert turns[1].content == "ok"
    # What was stored reads back as what was sent, lone surrogates made into U+FFFD.
    assert turns[0].content == storable_text(text)
