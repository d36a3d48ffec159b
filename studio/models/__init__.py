"""Models and the GPU: Ollama pulls, ComfyUI model files and downloads, NVML readings,
the one-GPU sharing policy and its coordinator, output retention and unused-model reports.
No gradio imports."""
