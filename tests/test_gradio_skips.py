"""studio/ui/gradio_skips.py: a gr.skip() of one output reaches the page as Gradio sends it,
without Gradio constructing that component again."""

from __future__ import annotations

import gradio as gr
import httpx
import pytest

from studio.ui import gradio_skips
from tests.conftest import free_port
from tests.lazy_tabs import queue_call


class Built:
    """Counts the Dropdowns constructed (Gradio rebuilds a component per update)."""

    count = 0


@pytest.fixture
def counted(monkeypatch):
    init = gr.Dropdown.__init__

    def counting(self, *args, **kwargs):
        Built.count += 1
        init(self, *args, **kwargs)

    monkeypatch.setattr(gr.Dropdown, "__init__", counting)
    return Built


def small_app(*, skips: bool):
    def tick(n, choice):
        n = int(n or 0) + 1
        if n % 2:  # odd ticks: the choices change; even ones: skip the dropdown
            return n, gr.update(choices=[f"c{n}", "b"], value="b"), n
        return n, gr.skip(), gr.skip()

    with gr.Blocks() as demo:
        box = gr.Number(0)
        picker = gr.Dropdown(choices=["a", "b"], value="a")
        seen = gr.State(0)
        gr.Button("t").click(tick, [box, picker], [box, picker, seen], api_name="tick")
    if skips:
        assert gradio_skips.install(demo)
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1",
                server_port=free_port())
    return demo


@pytest.mark.parametrize("skips", [True, False])
def test_gradio_skips_send_the_same_and_rebuild_only_what_changed(skips, counted):
    demo = small_app(skips=skips)
    try:
        fn_index = next(i for i, fn in demo.fns.items() if fn.api_name == "tick")
        with httpx.Client(base_url=demo.local_url, timeout=10) as client:
            outputs, builds = [], []
            for n in range(4):
                before = counted.count
                done = queue_call(client, fn_index, [n, "b"], "page-one")
                assert done and done["success"], done
                outputs.append(done["output"]["data"])
                builds.append(counted.count - before)
        # What the page gets is Gradio's own: the update with the new choices, then a
        # skip (an empty update) that leaves the dropdown as it is.
        assert outputs[0][0] == 1 and outputs[0][1]["choices"] == [["c1", "c1"], ["b", "b"]]
        assert outputs[1][0] == 2 and outputs[1][1] == {"__type__": "update"}
        assert outputs[3][1] == {"__type__": "update"}
        # A change rebuilds the dropdown; with the skips installed, a skip rebuilds nothing.
        assert builds[0] >= 1 and builds[2] >= 1
        if skips:
            assert builds[1] == builds[3] == 0
        else:
            assert builds[1] >= 1 and builds[3] >= 1  # Gradio's own way: what this saves
    finally:
        demo.close()


def test_gradio_skips_leave_a_postprocess_of_another_shape_alone():
    with gr.Blocks() as demo:
        gr.Textbox()

    async def other(block_fn, data):
        return data

    demo.postprocess_data = other
    assert not gradio_skips.install(demo)
    assert demo.postprocess_data is other
