"""Image jobs over several ComfyUI hosts (issue 15): two protocol-exact fake ComfyUI servers
on loopback, the real client, store and job service. Routing (the checkpoint on one host
only; the shorter queue), a batch spread over both, a host stopped mid-batch (its
unfinished prompts finish on the other, every image stored once), the host back up
rejoining, pick-up after a restart asking the host the prompt went to, the GPU policy per
machine, and a bad COMFYUI_URL entry as a sentence."""

from __future__ import annotations

import html
import time

import pytest

from studio.backends.comfyui_hosts import ComfyUIHosts, build_comfyui
from studio.backends.hosts import parse_hosts
from studio.clients.comfyui import ComfyUIClient
from studio.clients.ollama import OllamaClient
from studio.config import Settings
from studio.errors import BackendUnavailable, ConfigError, InvalidInput
from studio.events import ChatMessage
from studio.images.plans import ImageRequest, render_item
from studio.models.gpu import GpuMonitor
from studio.models.gpu_coordinator import GpuCoordinator
from studio.store.images import ImageStore
from studio.store.models import ModelsStore
from studio.ui.images_values import progress_html
from tests.fakes.comfyui_server import DEFAULT_MODELS, FakeComfyUI
from tests.test_gpu import RTX_3090, FakeNvml
from tests.test_images import finish, make_jobs  # noqa: F401 (make_jobs: a fixture)

WAIT = 20  # seconds; upper bound for event waits, never a sleep
SD15 = "v1-5-pruned-emaonly.safetensors"
GiB = 2**30


def batch(seeds: int = 1, workflow: str = "sd15_txt2img", **kwargs) -> ImageRequest:
    values = dict(prompt="a red fox", width=64, height=64, steps=3, seeds=seeds, seed=1)
    values.update(kwargs)
    return ImageRequest(workflow, **values)


def wait_for(condition, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def fakes():
    made: list[FakeComfyUI] = []

    def make(**kwargs) -> FakeComfyUI:
        fake = FakeComfyUI(**kwargs).start()
        made.append(fake)
        return fake

    yield make
    for fake in made:
        fake.stop()


@pytest.fixture
def make_hosts():
    made: list[ComfyUIHosts] = []

    def make(*fakes: FakeComfyUI, names=("a", "b")) -> ComfyUIHosts:
        setting = ", ".join(f"{n}={f.url}" for n, f in zip(names, fakes))
        hosts = build_comfyui(parse_hosts("COMFYUI_URL", setting), place="the address in "
                              "COMFYUI_URL", health_interval=0.1, timeout=5, move_after_s=0.3)
        for _spec, client in hosts.clients():
            client.poll_interval = 0.02
        hosts.health.check_now()
        made.append(hosts)
        return hosts

    yield make
    for hosts in made:
        hosts.close()


def prompts_to(fake: FakeComfyUI) -> int:
    return len(fake.requests_to("/prompt", "POST"))


def assert_stored_once(jobs, live, n: int) -> list:
    images = jobs.store.images_of_job(live.job_id)
    assert len(images) == n
    assert len({i.comfy_prompt_id for i in images}) == n  # no prompt stored twice
    assert len({i.item_id for i in images}) == n  # each image of the batch once
    assert all(i.status == "done" and i.images == 1 for i in jobs.store.job_items(live.job_id))
    return images


# ------------------------------------------------------------------ routing


def test_comfyui_hosts_prompt_goes_to_the_host_with_the_checkpoint(fakes, make_hosts, make_jobs):
    without = {**DEFAULT_MODELS, "checkpoints": ["sd_xl_base_1.0.safetensors"]}
    a, b = fakes(models=without), fakes()
    hosts = make_hosts(a, b)
    assert SD15 not in hosts.pool.view("a").models and SD15 in hosts.pool.view("b").models
    jobs = make_jobs(None, hosts=hosts, inflight=2)

    live = jobs.submit(batch(seeds=3))
    final = finish(jobs, live)[-1]

    assert final.status == "done" and final.done == 3
    assert (prompts_to(a), prompts_to(b)) == (0, 3)
    assert {i.comfy_host for i in jobs.store.job_items(live.job_id)} == {"b"}
    assert {i.comfy_host for i in jobs.store.images_of_job(live.job_id)} == {"b"}


def test_comfyui_hosts_room_is_made_on_the_host_that_has_the_checkpoint(fakes, make_hosts,
                                                                        make_jobs):
    """The GPU policy acts on the machine the job will run on: the host routing would
    pick for its first prompt, which has the graph's checkpoint, not the pool's first."""
    without = {**DEFAULT_MODELS, "checkpoints": ["sd_xl_base_1.0.safetensors"]}
    a, b = fakes(models=without), fakes()
    jobs = make_jobs(None, hosts=make_hosts(a, b))
    request = batch(seeds=2)
    assert jobs.hosts.pool.choose().name == "a"
    assert jobs.likely_host(request, jobs.prepare(request)) == "b"


def test_comfyui_hosts_a_graph_no_host_can_run_is_refused_with_a_sentence(fakes, make_hosts,
                                                                         make_jobs):
    without = {**DEFAULT_MODELS, "checkpoints": ["sd_xl_base_1.0.safetensors"]}
    jobs = make_jobs(None, hosts=make_hosts(fakes(models=without), fakes(models=without)))

    with pytest.raises(InvalidInput, match="can't run on any ComfyUI host in COMFYUI_URL"):
        jobs.submit(batch())


def test_comfyui_hosts_prompt_goes_to_the_shorter_queue(fakes, make_hosts, make_jobs):
    a, b = fakes(), fakes()
    hosts = make_hosts(a, b)
    jobs = make_jobs(None, hosts=hosts)
    # Someone else's prompt holds host a (running, paused after its first step).
    a.pause_after_step(1)
    _template, planned = jobs.prepare(batch())
    graph = render_item(jobs.library.get("sd15_txt2img"), planned[0])
    ComfyUIClient(a.url, timeout=5).queue_prompt(graph)
    assert a.wait_paused(WAIT)
    hosts.health.check_now()
    assert (hosts.pool.view("a").queue, hosts.pool.view("b").queue) == (1, 0)

    final = finish(jobs, jobs.submit(batch(seed=7)))[-1]
    a.resume()

    assert final.status == "done"
    assert (prompts_to(a), prompts_to(b)) == (1, 1)  # a: only the other client's prompt


def test_comfyui_hosts_route_prefers_room_and_waits_when_full(fakes, make_hosts):
    hosts = make_hosts(fakes(), fakes())
    assert hosts.route(["a", "b"], {}, 1).host == "a"  # a tie: the setting's order
    assert hosts.route(["a", "b"], {"a": 1}, 1).host == "b"
    assert hosts.route(["a", "b"], {"a": 1, "b": 1}, 1).wait
    assert hosts.route(["a", "b"], {"a": 1, "b": 1}, 2).host == "a"
    assert hosts.route([], {}, 1) .host is None and not hosts.route([], {}, 1).wait


# ------------------------------------------------------------------ a batch over both


def test_comfyui_hosts_batch_spreads_over_both_and_stores_each_image_once(fakes, make_hosts,
                                                                          make_jobs):
    a, b = fakes(step_delay=0.01), fakes(step_delay=0.01)
    hosts = make_hosts(a, b)
    jobs = make_jobs(None, hosts=hosts)

    live = jobs.submit(batch(seeds=8))
    final = finish(jobs, live)[-1]

    assert final.status == "done" and final.done == 8
    assert prompts_to(a) >= 1 and prompts_to(b) >= 1 and prompts_to(a) + prompts_to(b) == 8
    images = assert_stored_once(jobs, live, 8)
    assert {i.comfy_host for i in images} == {"a", "b"}


def test_comfyui_hosts_progress_says_which_host(fakes, make_hosts, make_jobs):
    a, b = fakes(), fakes()
    a.pause_after_step(1)
    jobs = make_jobs(None, hosts=make_hosts(a, b))
    live = jobs.submit(batch())
    assert a.wait_paused(WAIT)

    assert "on ComfyUI a" in progress_html(live.snapshot())
    a.resume()
    finish(jobs, live)


def test_comfyui_hosts_a_batch_asks_a_host_without_the_checkpoint_afresh_once(fakes, make_hosts,
                                                                              make_jobs):
    without = {**DEFAULT_MODELS, "checkpoints": ["sd_xl_base_1.0.safetensors"]}
    a, b = fakes(models=without), fakes()
    jobs = make_jobs(None, hosts=make_hosts(a, b))

    template, planned = jobs.prepare(batch(seeds=20))  # 20 graphs; host a can run none

    assert len(a.requests_to("/object_info", "GET")) == 2  # cached, then once afresh
    graph = render_item(template, planned[0])
    assert jobs.graph_problems(graph) == []  # an uploaded workflow's check: b can run it
    graph["4"]["inputs"]["ckpt_name"] = "nowhere.safetensors"
    assert "checkpoint 'nowhere.safetensors' isn't available" in " ".join(
        jobs.graph_problems(graph))


def test_comfyui_hosts_lists_offer_what_any_host_has(fakes, make_hosts, make_jobs):
    only_sdxl = {**DEFAULT_MODELS, "checkpoints": ["sd_xl_base_1.0.safetensors"]}
    only_sd15 = {**DEFAULT_MODELS, "checkpoints": [SD15], "loras": []}
    jobs = make_jobs(None, hosts=make_hosts(fakes(models=only_sdxl), fakes(models=only_sd15)))

    lists = jobs.comfyui_lists()

    assert lists["checkpoints"] == ["sd_xl_base_1.0.safetensors", SD15]
    assert lists["loras"] == ["my_style.safetensors"]


def test_comfyui_hosts_input_picture_goes_to_each_host_it_runs_on(fakes, make_hosts, make_jobs,
                                                                tmp_path):
    from tests.test_images import png_bytes

    source = tmp_path / "input.png"
    source.write_bytes(png_bytes((64, 48), colour=(0, 0, 255)))
    a, b = fakes(step_delay=0.01), fakes(step_delay=0.01)
    jobs = make_jobs(None, hosts=make_hosts(a, b))

    live = jobs.submit(batch(workflow="img2img", seeds=4, input_image=str(source), denoise=0.5))
    final = finish(jobs, live)[-1]

    assert final.status == "done" and final.done == 4
    for fake in (a, b):  # once per host, under the one name every graph uses
        assert prompts_to(fake) >= 1 and len(fake.requests_to("/upload/image", "POST")) == 1
    names = {i.graph["10"]["inputs"]["image"] for i in jobs.store.images_of_job(live.job_id)}
    assert len(names) == 1 and names.pop().startswith("studio_")


# ------------------------------------------------------------------ failover


def test_comfyui_hosts_refused_before_the_prompt_moves_on_and_says_where(fakes, make_hosts,
                                                                         make_jobs):
    a, b = fakes(), fakes()
    hosts = make_hosts(a, b)
    jobs = make_jobs(None, hosts=hosts)
    a.fail_http("/prompt", 500)
    b.pause_after_step(1)

    live = jobs.submit(batch())
    assert b.wait_paused(WAIT)
    shown = html.unescape(progress_html(live.snapshot()))
    b.resume()
    final = finish(jobs, live)[-1]

    assert final.status == "done" and prompts_to(b) == 1
    assert "on ComfyUI b" in shown and "Sent to ComfyUI b because a couldn't make it" in shown
    assert "failed on POST /prompt (500)" in shown and "127.0.0.1" not in shown
    assert prompts_to(a) == 1  # the refused one, not sent again
    assert [i.comfy_host for i in jobs.store.images_of_job(live.job_id)] == ["b"]


def test_comfyui_hosts_host_stopped_mid_batch_its_prompts_finish_elsewhere(fakes, make_hosts,
                                                                           make_jobs):
    a, b = fakes(step_delay=0.01), fakes(step_delay=0.01)
    hosts = make_hosts(a, b)
    jobs = make_jobs(None, hosts=hosts)
    a.pause_after_step(2, job=2)  # a's second prompt stops half way: then a dies

    live = jobs.submit(batch(seeds=8))
    assert a.wait_paused(WAIT)
    a.stop()
    final = finish(jobs, live)[-1]

    assert final.status == "done" and final.done == 8, final.error
    images = assert_stored_once(jobs, live, 8)
    made_on = [i.comfy_host for i in images]
    assert made_on.count("a") == 1 and made_on.count("b") == 7  # a's first one is kept
    hosts.health.check_now()
    assert hosts.pool.view("a").up is False


def test_comfyui_hosts_a_stopped_host_back_up_rejoins(fakes, make_hosts, make_jobs):
    a, b = fakes(step_delay=0.01), fakes(step_delay=0.01)
    hosts = make_hosts(a, b)
    jobs = make_jobs(None, hosts=hosts)
    port = a.port
    a.stop()
    hosts.health.check_now()
    assert hosts.pool.view("a").up is False

    live = jobs.submit(batch(seeds=3))
    assert finish(jobs, live)[-1].done == 3 and prompts_to(b) == 3

    back = fakes(port=port, step_delay=0.01)
    assert hosts.health.wait_rounds(hosts.health.rounds + 2, WAIT)
    assert hosts.pool.view("a").up is True
    live = jobs.submit(batch(seeds=6, seed=100))
    assert finish(jobs, live)[-1].done == 6
    assert prompts_to(back) >= 1
    assert_stored_once(jobs, live, 6)


def test_comfyui_hosts_every_host_down_refuses_the_job_with_a_sentence(fakes, make_hosts,
                                                                       make_jobs):
    a, b = fakes(), fakes()
    hosts = make_hosts(a, b)
    jobs = make_jobs(None, hosts=hosts)
    a.stop()
    b.stop()
    hosts.health.check_now()

    with pytest.raises(BackendUnavailable) as caught:
        jobs.submit(batch())

    assert "No ComfyUI host in COMFYUI_URL is reachable, so nothing was queued." in str(
        caught.value) and "Start it in ComfyUI's folder" in str(caught.value)
    assert jobs.store.list_jobs() == []


def test_comfyui_hosts_every_host_dying_mid_job_fails_it_with_a_sentence(fakes, make_hosts,
                                                                        make_jobs):
    a, b = fakes(), fakes()
    jobs = make_jobs(None, hosts=make_hosts(a, b))
    a.pause_after_step(1)
    b.pause_after_step(1)
    live = jobs.submit(batch(seeds=3))
    assert a.wait_paused(WAIT) and b.wait_paused(WAIT)
    a.stop()
    b.stop()

    final = finish(jobs, live)[-1]

    assert final.status == "failed" and final.failed == 3
    assert "ComfyUI" in final.error and "in COMFYUI_URL" in final.error
    assert "Start it in ComfyUI's folder" in final.error
    assert str(a.port) not in final.error and str(b.port) not in final.error  # no address
    assert jobs.store.images_of_job(live.job_id) == []


# ------------------------------------------------------------------ restart pick-up


def test_comfyui_hosts_pick_up_after_restart_asks_the_host_the_prompt_went_to(
        fakes, make_hosts, make_jobs, store, tmp_path):
    a, b = fakes(), fakes()
    hosts = make_hosts(a, b)
    first = make_jobs(None, hosts=hosts)
    template, planned = first.prepare(batch())
    first.close()
    graph = render_item(template, planned[0])
    image_store = ImageStore(store)
    job = image_store.create_job(user="ann", lane="ann", workflow=template.name, title="fox",
                                 spec={}, items=[(planned[0], graph)])
    [item] = image_store.job_items(job.id)
    queued = ComfyUIClient(b.url, timeout=5).queue_prompt(graph)
    image_store.update_item(item.id, status="queued", prompt_id=queued.prompt_id,
                            comfy_host="b")
    assert b.wait_idle(WAIT)

    jobs = make_jobs(None, hosts=hosts)  # the restarted studio
    live = jobs.get(job.id)
    final = finish(jobs, live)[-1]

    assert final.status == "done" and len(final.images) == 1
    assert b.requests_to(f"/history/{queued.prompt_id}") and not a.requests_to(
        f"/history/{queued.prompt_id}")
    assert jobs.store.images_of_job(job.id)[0].comfy_host == "b"


# ------------------------------------------------------------------ GPU policy per machine


def test_comfyui_hosts_gpu_policy_acts_on_the_jobs_machine_only(fakes, make_hosts,
                                                                fake_ollama, store):
    here, there = fakes(), fakes(listen="127.0.0.2")  # 127.0.0.2 plays another machine
    hosts = make_hosts(here, there)
    ollama = OllamaClient(fake_ollama.url, timeout=10)  # on 127.0.0.1: this machine
    list(ollama.chat_stream("llama3.2", [ChatMessage("user", "hi")]))  # loads it
    card = dict(RTX_3090, used=22 * GiB, total=24 * GiB, processes=[])  # 2 GiB free here
    coordinator = GpuCoordinator(policy="automatic", gpu=GpuMonitor(FakeNvml([card])),
                                 ollama=ollama, comfyui=hosts.first, log=ModelsStore(store),
                                 comfyui_hosts=hosts)

    elsewhere = coordinator.before_image_job("flux", host="b")
    assert fake_ollama.running_models() == ["llama3.2:latest"]  # another machine's Ollama
    assert elsewhere.outcome != "done"
    assert elsewhere.free_bytes != 2 * GiB  # not this machine's card: b's /system_stats

    same = coordinator.before_image_job("sdxl", host="a")
    assert (same.action, same.outcome) == ("unload_ollama", "done")
    assert fake_ollama.running_models() == []
    ollama.close()


def test_comfyui_hosts_gpu_policy_frees_only_the_comfyui_on_the_chats_machine(
        fakes, make_hosts, fake_ollama, store):
    there, here = fakes(listen="127.0.0.2"), fakes()  # the chat's Ollama is on 127.0.0.1
    hosts = make_hosts(there, here)
    ollama = OllamaClient(fake_ollama.url, timeout=10)
    card = dict(RTX_3090, used=int(23.5 * GiB), total=24 * GiB, processes=[])
    coordinator = GpuCoordinator(policy="automatic", gpu=GpuMonitor(FakeNvml([card])),
                                 ollama=ollama, comfyui=hosts.first, log=ModelsStore(store),
                                 comfyui_hosts=hosts)

    result = coordinator.before_chat("llama3.2")

    assert (result.action, result.outcome) == ("free_comfyui", "done")
    assert len(here.requests_to("/free")) == 1 and there.requests_to("/free") == []
    ollama.close()


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize("value, words", [
    ("http://a:8188, gpu2=ftp://b:8188", "COMFYUI_URL: the address in entry 'gpu2=ftp://b:8188' "
                                        "must start with http:// or https://"),
    ("a=http://x:8188, a=http://y:8188", "COMFYUI_URL: the name 'a' appears twice"),
    ("http://x:8188 weight=0", "COMFYUI_URL: weight in entry 'http://x:8188 weight=0' must be"),
])
def test_comfyui_hosts_a_bad_comfyui_url_entry_is_a_sentence(tmp_path, value, words):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"COMFYUI_URL": value, "STUDIO_DATA_DIR": str(tmp_path)},
                          dotenv_path=None)
    assert words in str(caught.value)


def test_comfyui_hosts_services_wire_every_host(fakes, fake_ollama, tmp_path):
    from studio.services import build_services

    a, b = fakes(), fakes()
    services = build_services(Settings.from_env(
        {"STUDIO_DATA_DIR": str(tmp_path / "data"), "OLLAMA_HOST": fake_ollama.url,
         "COMFYUI_URL": f"a={a.url}, b={b.url} weight=2", "STUDIO_HEALTH_INTERVAL": "0.1"},
        dotenv_path=None))
    try:
        hosts = services.comfyui_hosts
        assert hosts.pool.names == ["a", "b"] and hosts.pool.spec("b").weight == 2
        assert services.comfyui is hosts.client_for("a") and services.images.hosts is hosts
        assert [spec.name for spec, _client in hosts.clients()] == ["a", "b"]
        assert hosts.health.wait_rounds(1, WAIT)
        assert hosts.pool.view("b").up is True and SD15 in hosts.pool.view("b").models
    finally:
        services.comfyui_hosts.close()
        services.store.close()


def test_comfyui_hosts_status_strip_has_a_pill_per_host_without_addresses(fakes, tmp_path):
    from studio.ops.status import StatusBoard, backend_key, status_html

    a, b = fakes(), fakes()
    settings = Settings.from_env({"STUDIO_DATA_DIR": str(tmp_path), "OPENROUTER_API_KEY": "",
                                  "COMFYUI_URL": f"{a.url}, big={b.url}"}, dotenv_path=None)
    b.stop()

    comfy = [s for s in StatusBoard(settings).statuses() if s.name == "ComfyUI"]

    assert [(s.label, s.state) for s in comfy] == [("ComfyUI host 1", "reachable"),
                                                   ("ComfyUI big", "unreachable")]
    assert [backend_key(s) for s in comfy] == ["comfyui:host_1", "comfyui:big"]
    strip = status_html(comfy)
    assert str(a.port) not in strip and str(b.port) not in strip
    assert "big in COMFYUI_URL" in strip


def test_comfyui_hosts_one_host_is_there_too(services):
    hosts = services.comfyui_hosts
    assert len(hosts.pool) == 1 and not hosts.several and services.comfyui is hosts.first
    assert hosts.health is not None and hosts.health.rounds == 0  # no thread for one host
