"""/v1/images of the running studio (in-process, 127.0.0.1), driven by the official `openai`
client, backed by the protocol-exact fake ComfyUI: generations as b64 and as signed links,
who may fetch a link, the user's gallery and Costs, and errors in the shapes the client
handles. Plus the pure parts: reading the body, sizes, signatures."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import socket
import stat
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import openai
import pytest
from PIL import Image

from studio.api.images import (MAX_N, SIGNING_KEY_FILE, UrlSigner, parse_generation,
                               with_stand_ins)
from studio.api.openai import ApiError
from studio.config import Settings
from studio.images.plans import DEFAULT_WORKFLOW, WorkflowLibrary
from tests.conftest import free_port
from tests.fakes.comfyui_server import FakeComfyUI

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = WorkflowLibrary(ROOT / "workflows")
WAIT = 20  # seconds; upper bound for event waits, never a sleep
FAST = {"steps": 2}  # few sampler steps: the fake sends one progress frame per step


@pytest.fixture(scope="module")
def comfyui():
    fake = FakeComfyUI().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def api(tmp_path_factory, comfyui):
    from studio.access.keys import ApiKeys
    from studio.access.users import Users
    from studio.services import build_services
    from studio.store.db import Store
    from studio.ui.app import build_app, launch_kwargs

    data = tmp_path_factory.mktemp("api-images")
    store = Store.open(data / "studio.db")
    Users(store).add("ann", "ann-password-1", admin=True)  # admins have no image limit
    Users(store).add("bob", "bob-password-1")
    _, ann_key = ApiKeys(store).create("ann", "laptop")
    _, bob_key = ApiKeys(store).create("bob", "phone")
    store.close()
    services = build_services(Settings.from_env(
        {"STUDIO_DATA_DIR": str(data), "COMFYUI_URL": comfyui.url,
         "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}",
         "STUDIO_LIMIT_IMAGES_PER_HOUR": "4"}, dotenv_path=None))
    demo = build_app(services)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True,
                            **{**launch_kwargs(services), "server_port": free_port()})
    yield {"base": url.rstrip("/") + "/v1", "ann": ann_key, "bob": bob_key,
           "services": services, "data": data}
    demo.close()
    services.images.close(cancel=True)


def client(api, who="ann") -> openai.OpenAI:
    return openai.OpenAI(base_url=api["base"], api_key=api[who], max_retries=0, timeout=WAIT)


def png_size(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.size


def gallery_ids(api, user: str) -> set[int]:
    page = api["services"].images.store.gallery(user=user, per_page=500)
    return {image.id for image in page.images}


def image_id(url: str) -> int:
    return int(urlsplit(url).path.rsplit("/", 1)[1])


def with_query(url: str, **changes) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return parts._replace(query=urlencode(query)).geturl()


# ------------------------------------------------------------------ pure: the request


def test_images_body_defaults_to_the_tabs_template():
    ask = parse_generation({"prompt": " a fox "}, LIBRARY)
    assert ask.template.name == DEFAULT_WORKFLOW
    assert (ask.n, ask.response_format, ask.size) == (1, "url", "512x512")
    assert ask.request.prompt == "a fox" and ask.request.seeds == 1
    assert (ask.request.width, ask.request.height, ask.request.seed) == (None, None, -1)


def test_images_body_extras_reach_the_request():
    ask = parse_generation({"prompt": "p", "model": "comfyui:sdxl_txt2img", "n": 3,
                            "size": "832x1216", "negative_prompt": "blur", "seed": 7,
                            "steps": 12, "response_format": "b64_json", "user": "x"}, LIBRARY)
    request = ask.request
    assert ask.template.name == "sdxl_txt2img" and ask.size == "832x1216"
    assert (request.width, request.height, request.negative, request.seed, request.steps,
            request.seeds) == (832, 1216, "blur", 7, 12, 3)


@pytest.mark.parametrize("body, param", [
    ({}, "prompt"),
    ({"prompt": "  "}, "prompt"),
    ({"prompt": "p", "n": 0}, "n"),
    ({"prompt": "p", "n": MAX_N + 1}, "n"),
    ({"prompt": "p", "n": 1.5}, "n"),
    ({"prompt": "p", "size": "big"}, "size"),
    ({"prompt": "p", "size": "500x512"}, "size"),
    ({"prompt": "p", "size": "8x8"}, "size"),
    ({"prompt": "p", "size": "8192x512"}, "size"),
    ({"prompt": "p", "model": "test_invert", "negative_prompt": "x"}, "negative_prompt"),
    ({"prompt": "p", "seed": -1}, "seed"),
    ({"prompt": "p", "steps": 0}, "steps"),
    ({"prompt": "p", "response_format": "jpeg"}, "response_format"),
    ({"prompt": "p", "model": "img2img"}, "model"),
])
def test_images_body_problems_name_the_field(body, param):
    with pytest.raises(ApiError) as failure:
        parse_generation(body, LIBRARY)
    assert failure.value.status == 400 and failure.value.param == param
    assert failure.value.message.rstrip().endswith((".", "?"))


def test_images_body_unknown_model_is_404_listing_the_templates():
    with pytest.raises(ApiError) as failure:
        parse_generation({"prompt": "p", "model": "dall-e-3"}, LIBRARY)
    assert failure.value.status == 404 and failure.value.param == "model"
    assert "sd15_txt2img" in failure.value.message


def test_images_body_takes_comfyuis_checkpoint_when_the_templates_is_missing():
    ask = parse_generation({"prompt": "p"}, LIBRARY)
    assert with_stand_ins(ask, {"checkpoints": ["v1-5-pruned-emaonly.safetensors"]}) is ask
    swapped = with_stand_ins(ask, {"checkpoints": ["dreamshaper.safetensors"]})
    assert swapped.request.checkpoint == "dreamshaper.safetensors"


def test_images_signer_checks_image_user_and_time(tmp_path):
    now = [1_000_000.0]
    signer = UrlSigner(tmp_path / "key", clock=lambda: now[0])
    query = parse_qs(signer.query(5, "ann"))
    expires, sig = query["expires"][0], query["sig"][0]
    assert int(expires) == 1_000_000 + 3600
    assert signer.valid(5, "ann", expires, sig)
    assert not signer.valid(6, "ann", expires, sig)
    assert not signer.valid(5, "bob", expires, sig)
    assert not signer.valid(5, "ann", str(int(expires) + 1), sig)
    now[0] += 3601
    assert not signer.valid(5, "ann", expires, sig)
    assert stat.S_IMODE(os.stat(tmp_path / "key").st_mode) == 0o600
    # The secret is made once: a new signer (a restarted studio) accepts old links.
    now[0] -= 3601
    assert UrlSigner(tmp_path / "key", clock=lambda: now[0]).valid(5, "ann", expires, sig)


# ------------------------------------------------------------------ the running studio


def test_api_images_b64_is_a_png_of_the_size_asked(api):
    answer = client(api).images.generate(prompt="a red fox", size="64x96",
                                         response_format="b64_json", extra_body=FAST)
    assert len(answer.data) == 1 and answer.data[0].url is None
    assert png_size(base64.b64decode(answer.data[0].b64_json)) == (64, 96)
    assert answer.created > 0


def test_api_images_url_works_for_the_owner_only(api):
    before_bob = gallery_ids(api, "bob")
    answer = client(api).images.generate(prompt="a blue jay", size="64x64", extra_body=FAST)
    url = answer.data[0].url
    assert url.startswith(api["base"] + "/images/files/")
    signed = httpx.get(url, timeout=WAIT)
    assert signed.status_code == 200 and png_size(signed.content) == (64, 64)
    bare = url.split("?")[0]
    assert httpx.get(bare, headers={"Authorization": f"Bearer {api['ann']}"},
                     timeout=WAIT).content == signed.content
    # The image is ann's: in her gallery, not in bob's.
    assert image_id(url) in gallery_ids(api, "ann")
    assert gallery_ids(api, "bob") == before_bob
    refusals = {
        "bob's key": httpx.get(bare, headers={"Authorization": f"Bearer {api['bob']}"},
                               timeout=WAIT),
        "no key": httpx.get(bare, timeout=WAIT),
        "tampered": httpx.get(with_query(url, sig="0" * 64), timeout=WAIT),
        "another image": httpx.get(url.replace(f"/files/{image_id(url)}?",
                                               f"/files/{image_id(url) - 1}?"), timeout=WAIT),
        "longer life": httpx.get(with_query(
            url, expires=int(parse_qs(urlsplit(url).query)["expires"][0]) + 60), timeout=WAIT),
    }
    assert {why: r.status_code for why, r in refusals.items()} == dict.fromkeys(refusals, 404)
    assert "Links last 60 minutes" in refusals["no key"].json()["error"]["message"]


def test_api_images_expired_link_is_404(api):
    answer = client(api).images.generate(prompt="a moth", size="64x64", extra_body=FAST)
    signer = UrlSigner(api["data"] / SIGNING_KEY_FILE, clock=lambda: time.time() - 7200)
    ident = image_id(answer.data[0].url)
    stale = f"{answer.data[0].url.split('?')[0]}?{signer.query(ident, 'ann')}"
    assert httpx.get(stale, timeout=WAIT).status_code == 404
    fresh = f"{answer.data[0].url.split('?')[0]}?{UrlSigner(signer.path).query(ident, 'ann')}"
    assert httpx.get(fresh, timeout=WAIT).status_code == 200


def test_api_images_n_makes_that_many_into_the_gallery_and_costs(api):
    before = gallery_ids(api, "ann")
    answer = client(api).images.generate(prompt="two owls", n=2, size="64x64",
                                         response_format="b64_json",
                                         extra_body={**FAST, "seed": 11})
    images = [base64.b64decode(item.b64_json) for item in answer.data]
    assert len(images) == 2 and all(png_size(data) == (64, 64) for data in images)
    added = gallery_ids(api, "ann") - before
    assert len(added) == 2
    stored = [api["services"].images.store.get_image(i) for i in sorted(added)]
    assert sorted(image.seed for image in stored) == [11, 12]
    assert {image.prompt for image in stored} == {"two owls"}
    usage = api["services"].accounting.ledger.usage_records(user="ann", limit=1)[0]
    assert (usage.kind, usage.via) == ("image", "api: laptop")


def test_api_images_async_client(api):
    async def make():
        async with openai.AsyncOpenAI(base_url=api["base"], api_key=api["ann"], max_retries=0,
                                      timeout=WAIT) as aclient:
            return await aclient.images.generate(prompt="a cat", model="comfyui:sd15_txt2img",
                                                 size="128x64", response_format="b64_json",
                                                 extra_body=FAST)

    answer = asyncio.run(make())
    assert png_size(base64.b64decode(answer.data[0].b64_json)) == (128, 64)


def test_api_images_need_a_key(api):
    response = httpx.post(api["base"] + "/images/generations", json={"prompt": "x"},
                          timeout=WAIT)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=api["base"], api_key="hs-not-a-key", max_retries=0
                      ).images.generate(prompt="x")


def test_api_images_unknown_model_is_404(api):
    with pytest.raises(openai.NotFoundError) as failure:
        client(api).images.generate(prompt="x", model="dall-e-3")
    assert failure.value.body["param"] == "model"


def test_api_images_bad_size_is_400_naming_it(api):
    with pytest.raises(openai.BadRequestError) as failure:
        client(api).images.generate(prompt="x", size="1000x1001")
    assert failure.value.body["param"] == "size"
    assert "multiple of 8" in failure.value.body["message"]


def test_api_images_limit_is_429_with_retry_after(api):
    before = gallery_ids(api, "bob")
    with pytest.raises(openai.RateLimitError) as failure:
        client(api, "bob").images.generate(prompt="x", n=5, size="64x64", extra_body=FAST)
    assert failure.value.response.headers["retry-after"]
    assert "STUDIO_LIMIT_IMAGES_PER_HOUR" in failure.value.body["message"]
    assert gallery_ids(api, "bob") == before


def test_api_images_failed_job_is_502_with_the_studios_sentence(api, comfyui):
    comfyui.fail_next("3", "CUDA out of memory")
    with pytest.raises(openai.InternalServerError) as failure:
        client(api).images.generate(prompt="x", size="64x64", extra_body=FAST)
    assert failure.value.status_code == 502
    assert "CUDA out of memory" in failure.value.body["message"]
    assert comfyui.url not in failure.value.body["message"]


def test_api_images_client_going_away_cancels_the_job(api, comfyui):
    jobs = api["services"].images
    comfyui.pause_after_step(1)
    body = b'{"prompt": "a slow snail", "size": "64x64", "steps": 3}'
    host, port = urlsplit(api["base"]).hostname, urlsplit(api["base"]).port
    try:
        with socket.create_connection((host, port), timeout=WAIT) as sock:
            sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\n"
                         b"Authorization: Bearer " + api["ann"].encode() + b"\r\n"
                         b"Content-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            assert comfyui.wait_paused(WAIT)
            live = jobs.latest_active("ann")
            assert live is not None and live.title == "a slow snail"
        assert live.wait_finished(WAIT)
        assert live.snapshot().status == "cancelled"
    finally:
        comfyui.resume()
    assert comfyui.wait_idle(WAIT)


def test_api_images_comfyui_stopped_is_503(api, comfyui):
    # Last in this module: the fake stays stopped.
    comfyui.stop()
    with pytest.raises(openai.APIStatusError) as failure:
        client(api).images.generate(prompt="x", size="64x64")
    assert failure.value.status_code == 503
    message = failure.value.body["message"]
    assert "ComfyUI isn't reachable" in message and comfyui.url not in message
