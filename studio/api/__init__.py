"""The studio's HTTP APIs for scripts and tools (OpenAI-compatible /v1) over the same
services as the tabs. No gradio imports."""
