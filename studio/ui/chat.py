"""The Chat tab: model picker, streamed replies with Stop, a conversation sidebar (date
groups, pins, "More chats…", imports from Open WebUI and ChatGPT), presets.

Layout and wiring only. The handlers are ``ChatPage`` methods (``chat_handlers.py``) over
``services.chat``, which generates replies on server threads (they outlive the page) and
writes history; values are shaped in ``chat_values``. Per-page state is one small dict in
``gr.State``.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from .chat_handlers import (DEFAULT_PARAMS, EARLIER_LABEL, MODEL_INFO, NEWER_LABEL,
                            QUEUE_LABEL, STOP_LABEL, ChatPage)
from .chat_values import new_session
from .common import drawn_later
from .lazy import Policy, arrived, finish_render

# Browser-side steps around the send event (see where chat_input.submit is wired). The
# message is the box's text and the pictures attached under it.
TAKE_MESSAGE_JS = """(text, files) => {
  const none = !files || (Array.isArray(files) && !files.length);
  if (!(text || "").trim() && none) return [text, files, text, files];
  return [text, files, "", null];
}"""
GIVE_BACK_MESSAGE_JS = """async (text, files, now, attached) => {
  const quick = window.studioQuickFailed ? await window.studioQuickFailed(text) : null;
  if (quick !== null && quick !== text) [text, files] = [quick, null];
  const box = document.querySelector("#chat-input textarea");
  if (box) now = box.value;  // typed while the step above waited: kept
  const none = !attached || (Array.isArray(attached) && !attached.length);
  return !(now || "").length && none ? [text, files] : [now, attached];
}"""
# The send event's own js step: the page's script may send the message at once over
# /studio/send (chat_quick.py) and give the event the ticket of the reply it started.
QUICK_SEND_JS = """async (...values) => window.studioQuickSend ?
  await window.studioQuickSend(values) : values"""
# "+ Image" adds pictures to those already attached (in the page: no server step). A js
# step's one output is given as a list of one.
ATTACH_JS = """(added, have) => {
  const list = (v) => (Array.isArray(v) ? v : v ? [v] : []);
  const all = [...list(have), ...list(added)];
  return [all.length ? all : null];
}"""


def render(services, policy: Policy) -> SimpleNamespace:
    """Build the Chat tab inside the current Blocks context; returns components app.py wires.
    ``policy`` (``app.event_policy``: the role check, the concurrency) is applied to the
    events its renders make in a page."""
    page = ChatPage(services)

    session = gr.State(new_session())
    # The open chat's title as opening, starting or deleting a chat leaves it (not sending
    # or renaming): as it changes, "This chat" (when built) shows the title of the chat
    # now open.
    title = gr.State("")
    last_open = gr.BrowserState("", storage_key="studio-last-conversation")

    with gr.Row(equal_height=False, elem_id="chat-row"):
        # The chat list: a plain column, not a gr.Sidebar. Gradio's sidebar measures the
        # page as it mounts and restyles the whole document (~10 ms of every page load,
        # issue 16 item 4). The toggle that folds it away, and its overlay on a phone
        # (closed until asked for), are the page's own (assets/studio.js, studio.css).
        with gr.Column(scale=0, min_width=240, elem_id="conv-sidebar"):
            new_btn = gr.Button("+ New chat", variant="primary", elem_id="new-chat", size="sm")
            search_box = gr.Textbox(placeholder="Search all chats…", show_label=False,
                                    elem_id="conv-search", container=False)
            search_note = gr.Markdown("", visible=False, elem_id="conv-search-note")
            # Headings (Pinned, Today, …) and "More chats…" are choices too (chat_sidebar.py).
            conv_list = gr.Radio(choices=[], label="Chats", show_label=False, elem_id="conv-list",
                                 elem_classes=["conv-list"], container=False)
            # Drawn a frame after the message box, as the settings column (``drawn_later``).
            with drawn_later("conv-extras", "Incognito, this chat, import"):
                incognito = gr.Checkbox(label="Incognito (not saved)", value=False,
                                        elem_id="incognito")

                # "This chat" and "Import chats" are built each time they are opened (a render
                # each): their components are not in the page's config (each cost its load
                # ~0.5 ms; issue 16, item 4), nor in its session until then.
                later = dict(concurrency_limit=None, concurrency_id="chat-tools",
                             show_progress="hidden")
                with gr.Accordion("This chat", open=False, elem_id="conv-actions") as actions:
                    @gr.render(triggers=[actions.expand], **later)
                    def this_chat():
                        rename_box = gr.Textbox(label="Title", elem_id="rename-box", max_lines=1,
                                                key="rename-box")
                        with gr.Row(key="chat-actions"):
                            rename_btn = gr.Button("Rename", size="sm", elem_id="rename-btn",
                                                   key="rename-btn")
                            pin_btn = gr.Button("📌 Pin / unpin", size="sm", elem_id="pin-btn",
                                                key="pin-btn")
                            delete_btn = gr.Button("Delete…", size="sm", elem_id="delete-btn",
                                                   key="delete-btn")
                        # A second, explicit press confirms: works the same on phones, no JS
                        # dialogs.
                        confirm_delete_btn = gr.Button("Yes, delete this chat for good", size="sm",
                                                       variant="stop", visible=False,
                                                       elem_id="confirm-delete",
                                                       key="confirm-delete")
                        with gr.Row(key="chat-exports"):
                            export_md_btn = gr.Button("Export .md", size="sm", elem_id="export-md",
                                                      key="export-md")
                            export_json_btn = gr.Button("Export .json", size="sm",
                                                        elem_id="export-json", key="export-json")
                        export_file = gr.File(label="Export", visible=False, elem_id="export-file",
                                              key="export-file")
                        wire_this_chat(SimpleNamespace(**locals()))
                        finish_render(policy)
                with gr.Accordion("Import chats", open=False, elem_id="import-chats") as imports:
                    @gr.render(triggers=[imports.expand], **later)
                    def import_chats():
                        import_file = gr.File(label="Open WebUI export (.json), or ChatGPT's "
                                                    "conversations.json or its .zip",
                                              file_types=[".json", ".zip"], type="filepath",
                                              elem_id="import-file", key="import-file")
                        import_report = gr.Markdown("Each chat comes with the branch you last saw, "
                                                    "its dates and models. Importing a file again "
                                                    "adds nothing.", elem_id="import-report",
                                                    key="import-report")
                        import_file.upload(page.on_import, [import_file],
                                           [import_report, conv_list], api_visibility="private",
                                           concurrency_limit=None, concurrency_id="chat-import",
                                           show_progress_on=[import_report])
                        finish_render(policy)

        with gr.Column(scale=4, min_width=320):
            # A long chat opens on its newest messages; these bring the rest in pages.
            earlier_btn = gr.Button(EARLIER_LABEL, size="sm", visible=False,
                                    elem_id="load-earlier")
            chatbot = gr.Chatbot(elem_id="chatbot", height="62vh", editable="user",
                                 buttons=["copy", "copy_all"], feedback_options=None,
                                 placeholder="Pick a model and say hello.",
                                 layout="bubble", show_label=False,
                                 group_consecutive_messages=False)
            newer_btn = gr.Button(NEWER_LABEL, size="sm", visible=False, elem_id="load-newer")
            # A plain Textbox and an "+ Image" button, not Gradio's MultimodalTextbox: that one's
            # module brings Gradio's video and audio players, a recorder and hls.js (~165 KB)
            # into every page, for media the chat never shows in its box; the page was usable
            # ~250 ms later for it (issue 16, item 4). Pasting or dropping a picture into the
            # box attaches it too (assets/studio.js).
            with gr.Row(elem_id="composer"):
                attach_btn = gr.UploadButton("+ Image", file_types=["image"],
                                             file_count="multiple", elem_id="chat-attach",
                                             size="md", scale=0, min_width=60)
                chat_input = gr.Textbox(
                    placeholder="Message… (Enter to send, Shift+Enter for a new line)",
                    label="Message", show_label=False, lines=1, max_lines=12,
                    submit_btn=True, elem_id="chat-input", scale=8)
                stop_btn = gr.Button(STOP_LABEL, variant="stop", elem_id="stop-btn", scale=1,
                                     min_width=70, visible=False)
            # The pictures that go with the next message; shown only while there are some
            # (studio.css), with ✕ to clear them.
            with drawn_later("chat-attached-later", "Attached pictures"):
                attached = gr.File(file_count="multiple", file_types=["image"],
                                   type="filepath", show_label=False, elem_id="chat-attached",
                                   height=90)
            # Messages sent while this page's reply streams wait here, one chip each, and go
            # in order as each reply completes; a click takes one back into the box.
            queue_view = gr.Radio(choices=[], value=None, visible=False, elem_id="queued",
                                  elem_classes=["queued"], container=False, show_label=True,
                                  label=QUEUE_LABEL)
        with gr.Column(scale=1, min_width=260, elem_id="chat-settings"):
            # The column is drawn a frame after the message box (``drawn_later``): the page
            # is usable ~10-20 ms sooner with its cache warm, ~35 ms with a fresh browser.
            with drawn_later("chat-settings-later", "Model and settings"):
                # Custom values are allowed so API callers can name a model; page.on_send
                # checks it.
                model_dd = gr.Dropdown(choices=[], label="Model", elem_id="model-picker",
                                       allow_custom_value=True, filterable=True,
                                       info=MODEL_INFO)
                refresh_btn = gr.Button("⟳ Reload models", elem_id="refresh-models", size="sm")
                # What a cloud prompt will cost, and where the budget stands, before sending.
                cost_hint = gr.Markdown("", elem_id="cost-hint")
                preset_dd = gr.Dropdown(choices=[("(none)", "")] + [(p.name, p.key)
                                                                    for p in services.presets],
                                        value="", label="Preset", elem_id="preset-picker")
                system_box = gr.Textbox(label="System prompt", lines=3, max_lines=10,
                                        elem_id="system-prompt")
                with gr.Accordion("Parameters", open=False, elem_id="params"):
                    temperature = gr.Slider(0, 2, value=DEFAULT_PARAMS["temperature"],
                                            step=0.05, label="Temperature")
                    top_p = gr.Slider(0, 1, value=DEFAULT_PARAMS["top_p"], step=0.01,
                                      label="Top p")
                    num_ctx = gr.Number(value=0, precision=0, minimum=0,
                                        label="Context length (0 = model default)")
                    max_tokens = gr.Number(value=0, precision=0, minimum=0,
                                           label="Max reply tokens (0 = no limit)")
                    seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)")
                    think_mode = gr.Radio(["auto", "on", "off"], value="auto",
                                          label="Thinking (models that support it)")
                stats_md = gr.Markdown("", elem_id="reply-stats")

    params = [temperature, top_p, num_ctx, seed, max_tokens, think_mode]

    # -- wiring ---------------------------------------------------------------------------

    refresh_btn.click(page.on_refresh_models, [model_dd], [model_dd], api_visibility="private")
    attach_btn.upload(None, [attach_btn, attached], [attached], js=ATTACH_JS,
                      api_visibility="private", queue=False, show_progress="hidden")
    gr.on([chat_input.change, model_dd.change, max_tokens.change], page.on_cost_hint,
          [chat_input, session, model_dd, max_tokens], [cost_hint], api_name="cost_estimate",
          concurrency_limit=None, concurrency_id="chat-cost", show_progress="hidden",
          trigger_mode="always_last")
    preset_dd.change(page.on_preset, [preset_dd], [system_box, temperature, top_p, num_ctx, seed,
                                              max_tokens], api_visibility="private")

    window_out = [earlier_btn, newer_btn]
    open_out = [session, chatbot, stats_md, stop_btn, title, conv_list, model_dd, last_open,
                queue_view, *window_out]
    # Opening a chat is one update (on_open); a reply still streaming there is followed by
    # a second event, on_follow, which holds no worker while it waits (no limit: it only
    # follows a reply the server writes anyway).
    follow = dict(fn=page.on_follow, inputs=[session], outputs=[session, chatbot, stats_md,
                                                                 stop_btn],
                  api_visibility="private", concurrency_limit=None, concurrency_id="chat-follow",
                  show_progress="hidden")
    conv_list.input(page.on_open, [conv_list, session], open_out, api_visibility="private",
                    concurrency_limit=None, concurrency_id="chat-open").then(**follow)
    # The same action for API callers: a Radio only accepts ids its page was shown.
    open_id = gr.Textbox(visible=False, elem_id="open-id")
    open_id.submit(page.on_open, [open_id, session], open_out, api_name="open_conversation",
                   concurrency_limit=None, concurrency_id="chat-open").then(**follow)

    send_out = [session, chatbot, stats_md, stop_btn, conv_list, last_open, queue_view,
                *window_out]
    # The page hands its message over in the browser: a js-only step moves the text and the
    # pictures into hidden inputs and empties the ones on screen, then page.on_send reads
    # the hidden ones. The box on screen is neither an input nor an output of the long send
    # event; when it was, Gradio put the emptied value back when the reply ended, wiping a
    # question typed meanwhile. The send event's own js step may first start the reply over
    # /studio/send (chat_quick.py, a plain text message) and hand on its ticket. API
    # callers call `/send` with the text and files directly. A refused message goes back
    # into the box (if still empty). Sending while this page's reply streams must reach
    # on_send (trigger_mode="multiple"; Gradio's default "once" silently skipped it,
    # emptying the box): on_send queues it. The hidden File checks its pictures as the
    # one on screen would (uploaded here, image types only).
    outgoing = gr.Textbox(visible=False, elem_id="outgoing-text")
    # Set by the send event's js step when the page's script sent the message already.
    ticket = gr.Textbox(visible=False, elem_id="outgoing-ticket")
    # The buttons under each turn (↻ on older answers, ‹ n/m › between versions) are HTML
    # in the chatbot; assets/studio.js writes a press into this box ("prev 4 <nonce>").
    # (The hidden boxes side by side: Gradio puts them in one form, one block fewer.)
    turn_action = gr.Textbox(visible="hidden", elem_id="turn-action")
    outgoing_files = gr.File(file_count="multiple", file_types=["image"], type="filepath",
                             visible=False, elem_id="outgoing-files")
    page.quick.bind(session)
    chat_input.submit(
        None, [chat_input, attached], [outgoing, outgoing_files, chat_input, attached],
        js=TAKE_MESSAGE_JS, api_visibility="private", queue=False, show_progress="hidden").then(
        page.on_send, [outgoing, outgoing_files, session, model_dd, system_box, incognito,
                       *params, ticket], send_out, js=QUICK_SEND_JS,
        api_name="send", concurrency_limit=None, concurrency_id="chat-send",
        show_progress="hidden", trigger_mode="multiple", postprocess=False).failure(
        None, [outgoing, outgoing_files, chat_input, attached], [chat_input, attached],
        js=GIVE_BACK_MESSAGE_JS, api_visibility="private", queue=False, show_progress="hidden")
    queue_view.input(page.on_take_back, [queue_view, chat_input, attached],
                     [queue_view, chat_input, attached],
                     api_visibility="private", concurrency_limit=None,
                     concurrency_id="chat-queue", show_progress="hidden")
    stop_btn.click(page.on_stop, [session], None, api_name="stop", concurrency_limit=None,
                   concurrency_id="chat-stop", queue=False)
    reply_out = [session, chatbot, stats_md, stop_btn, conv_list, queue_view, *window_out]
    # The events that stream a reply (send, retry, edit, the turns' buttons) yield values
    # as Gradio sends them (chat_wire.py): postprocess=False spares each update a thread
    # hop per output and the rebuilding of every message (bench/profile_stream.py).
    chatbot.retry(page.on_retry, [session, model_dd, system_box, *params], reply_out,
                  api_visibility="private", concurrency_limit=None, concurrency_id="chat-retry",
                  show_progress="hidden", postprocess=False)
    chatbot.edit(page.on_edit, [session, model_dd, system_box, *params], reply_out,
                 api_visibility="private", concurrency_limit=None, concurrency_id="chat-edit",
                 show_progress="hidden", postprocess=False)
    turn_action.input(page.on_turn_action, [turn_action, session, model_dd, system_box, *params],
                      reply_out, api_visibility="private", concurrency_limit=None,
                      concurrency_id="chat-turn", show_progress="hidden", postprocess=False)
    new_out = [session, chatbot, stats_md, stop_btn, title, conv_list, last_open,
               queue_view, *window_out]
    new_btn.click(page.on_new, [incognito, session], new_out, api_visibility="private")
    # The Chatbot's own trash button starts a new chat too (nothing is deleted).
    chatbot.clear(page.on_new, [incognito, session], new_out, api_visibility="private")
    incognito.input(page.on_new, [incognito, session], new_out, api_visibility="private")
    search_box.change(page.on_search, [search_box], [conv_list, search_note], api_name="search",
                      concurrency_limit=None, concurrency_id="chat-search",
                      show_progress="hidden", trigger_mode="always_last")
    earlier_btn.click(page.on_earlier, [session], [session, chatbot, *window_out],
                      api_name="load_earlier", concurrency_limit=None,
                      concurrency_id="chat-window")
    newer_btn.click(page.on_newer, [session], [session, chatbot, *window_out],
                    api_name="load_newer", concurrency_limit=None, concurrency_id="chat-window")
    # The exports for API callers: events with no trigger on the page, whose file goes to
    # a hidden File (the page's own buttons are in "This chat", built as it opens).
    exported = gr.File(visible=False, elem_id="exported")
    gr.on([], page.on_export_markdown, [session], [exported], api_name="export_markdown")
    gr.on([], page.on_export_json, [session], [exported], api_name="export_json")

    def wire_this_chat(tools: SimpleNamespace) -> None:
        """The events of "This chat", made in its render."""
        private = dict(api_visibility="private")
        # The box shows the open chat's title as "This chat" opens (the render's arrival
        # in the page), and as the page opens another chat (a new chat's title is "", as
        # the one before may have been: its id moves too).
        gr.on([arrived(), title.change, last_open.change], page.on_title,
              [session], [tools.rename_box], show_progress="hidden",
              trigger_mode="always_last", concurrency_limit=None,
              concurrency_id="chat-title", **private)
        tools.rename_btn.click(page.on_rename, [session, tools.rename_box], [conv_list],
                               **private)
        tools.pin_btn.click(page.on_pin, [session], [conv_list], **private)
        tools.delete_btn.click(lambda: gr.update(visible=True), None,
                               [tools.confirm_delete_btn], queue=False, **private)
        deleted = tools.confirm_delete_btn.click(
            page.on_delete, [session], [session, chatbot, stats_md, conv_list, title,
                                        *window_out], **private)
        deleted.then(lambda: gr.update(visible=False), None, [tools.confirm_delete_btn],
                     queue=False, **private)
        # Emptied only once the chat is gone: a delete that failed keeps what is typed.
        deleted.success(lambda: "", None, [tools.rename_box], queue=False, **private)
        tools.export_md_btn.click(page.on_export_markdown, [session], [tools.export_file],
                                  **private)
        tools.export_json_btn.click(page.on_export_json, [session], [tools.export_file],
                                    **private)

    return SimpleNamespace(load_fn=page.on_page_load, load_inputs=[last_open, session],
                           load_outputs=open_out, follow=follow, chatbot=chatbot,
                           model_dd=model_dd, page=page)
