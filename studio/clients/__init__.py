"""Backend clients (Ollama, ComfyUI, OpenRouter). None of them import gradio."""
