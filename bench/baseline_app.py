"""Baseline for bench/: a bare Gradio chat app on the same fake Ollama, started the same way.

About 30 lines on purpose: what a minimal ChatInterface over Ollama costs, to put the
studio's figures beside. Reads OLLAMA_HOST and GRADIO_SERVER_PORT like the studio.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import ollama  # noqa: E402

client = ollama.Client(host=os.environ.get("OLLAMA_HOST", "http://127.0.0.1:11434"))
MODEL = os.environ.get("BASELINE_MODEL", "llama3.2:latest")


def chat(message, history):
    messages = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str)
                 else " ".join(b.get("text", "") for b in m["content"] if isinstance(b, dict))}
                for m in history]
    messages.append({"role": "user", "content": message})
    text = ""
    for chunk in client.chat(model=MODEL, messages=messages, stream=True):
        text += chunk.message.content or ""
        yield text


# BASELINE_UNLIMITED=1: no concurrency limit on the chat event (Gradio's default is 1, so
# twenty at once queue one behind another): what Gradio itself costs twenty at once.
demo = gr.ChatInterface(chat, api_name="chat", concurrency_limit=(
    None if os.environ.get("BASELINE_UNLIMITED") == "1" else "default"))

if __name__ == "__main__":
    demo.launch(server_name="127.0.0.1", run_history=False)
