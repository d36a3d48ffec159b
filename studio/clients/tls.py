"""One TLS context for the clients' connection pools. No gradio imports here.

Every ``httpx.Client`` builds its own ``ssl.SSLContext`` unless it is given one, and
loading the CA bundle into a context costs ~20 ms of CPU: the studio's start made four of
them (two pools per Ollama client, OpenRouter's, ComfyUI's) for addresses that are mostly
plain http. One context, made on first use and shared, costs that once. An SSLContext is
safe to share between pools and threads; none of ours carries a client certificate. (The
openai SDK, used only with a cloud key or an OpenAI-compatible server, keeps its own.)
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The context httpx would make for ``verify=True`` (certifi's bundle, or
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set), made once per process."""
    return httpx.create_ssl_context()
